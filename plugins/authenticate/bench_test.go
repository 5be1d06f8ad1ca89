package authenticate_test

import (
	"testing"

	"github.com/sluice-gw/sluice/internal/testkit"
	"github.com/valyala/fasthttp"
)

func upstream1K(ctx *fasthttp.RequestCtx) {
	ctx.Response.Header.SetContentType("application/json")
	ctx.Response.SetBodyRaw(testkit.Body1K)
}

// Many consumers: the key lookup must not grow with them.
var allocYAML = func() string {
	s := `
log: {access_log: false}
consumers:
  billing: {keys: ["` + billingKey + `"]}
  crm: {keys: ["` + crmKey + `"]}
`
	for i := range 500 {
		s += "  svc-" + itoa(i) + ": {keys: [\"service-key-0123456789-" + itoa(i) + "\"]}\n"
	}
	return s + `
upstreams:
  up: {url: "http://upstream.test"}
routes:
  plain: {path: "/plain/{path:*}", upstream: up, strip_prefix: "/plain"}
  catchall:
    path: "/api/{path:*}"
    upstream: up
    strip_prefix: "/api"
    plugins: {authenticate: {}}
`
}()

func itoa(i int) string {
	if i < 10 {
		return string(rune('0' + i))
	}
	return itoa(i/10) + string(rune('0'+i%10))
}

func BenchmarkAuthenticate(b *testing.B) {
	im := testkit.NewInMemory(b, allocYAML, upstream1K)
	for _, bc := range []struct{ name, uri, header, value string }{
		{"pass-through", "http://gateway/plain/v1/items", "X-Other", "x"},
		{"api-key", "http://gateway/api/v1/items", "X-Api-Key", crmKey},
		{"bearer", "http://gateway/api/v1/items", "Authorization", "Bearer " + billingKey},
		{"refused", "http://gateway/api/v1/items", "X-Api-Key", "wrong-key-0123456789abcdef"},
	} {
		b.Run(bc.name, func(b *testing.B) {
			req := fasthttp.AcquireRequest()
			resp := fasthttp.AcquireResponse()
			req.SetRequestURI(bc.uri)
			want := 200
			if bc.name == "refused" {
				want = 401
			}
			b.ReportAllocs()
			for b.Loop() {
				req.Header.Set(bc.header, bc.value)
				if err := im.Client.Do(req, resp); err != nil {
					b.Fatal(err)
				}
				if resp.StatusCode() != want {
					b.Fatalf("status %d", resp.StatusCode())
				}
			}
		})
	}
}
