//go:build !race

package injectauth_test

import (
	"testing"

	"github.com/sluice-gw/sluice/internal/testkit"
	"github.com/valyala/fasthttp"
)

// TestStaticInjectAllocs: attaching a static credential (each type, a pool,
// a per-consumer override) behind API-key authentication costs no
// allocation, counted over the whole process.
//
// An OAuth2 route is measured too, once its token is cached: attaching the
// shared token costs nothing either.
func TestStaticInjectAllocs(t *testing.T) {
	te := newTokenEndpoint(t, 0)
	im := testkit.NewInMemory(t, benchYAML+`
  oauth:
    path: "/oauth/{p:*}"
    upstream: up
    strip_prefix: "/oauth"
    plugins: {inject_auth: {type: oauth2_client_credentials, token_url: "`+te.URL+`", client_id: app, client_secret: s}}
`, upstream1K)
	for _, path := range []string{"/bearer/v1/x", "/header/v1/x", "/query/v1/x?limit=5", "/basic/v1/x", "/pool/v1/x", "/pc/v1/x", "/hmac/v1/x?a=1", "/oauth/v1/x"} {
		req := fasthttp.AcquireRequest()
		resp := fasthttp.AcquireResponse()
		req.SetRequestURI("http://gateway" + path)
		req.Header.SetMethod("POST")
		req.SetBodyString(`{"amount":100}`)
		do := func() {
			req.Header.Set("X-Api-Key", billingKey)
			if err := im.Client.Do(req, resp); err != nil {
				t.Fatal(err)
			}
			if resp.StatusCode() != 200 || len(resp.Body()) != 1024 {
				t.Fatalf("%s: status %d: %s", path, resp.StatusCode(), resp.Body())
			}
		}
		for range 100 {
			do()
		}
		if n := testing.AllocsPerRun(1000, do); n != 0 {
			t.Errorf("%s: %v allocs per request, want 0", path, n)
		}
	}
}
