//go:build !race

package retry_test

import (
	"testing"

	"github.com/sluice-gw/sluice/internal/testkit"
	"github.com/valyala/fasthttp"
)

// TestRetryPassThroughAllocs: when the first attempt succeeds, retry (alone
// and with circuit_breaker) adds no allocation to the proxied request, for a
// retryable GET and for a POST that is not retried.
func TestRetryPassThroughAllocs(t *testing.T) {
	im := testkit.NewInMemory(t, `
log: {access_log: false}
upstreams:
  up: {url: "http://upstream.test"}
  pool: {targets: ["http://upstream.test", "http://upstream.test/"]}
routes:
  retry: {path: "/retry", upstream: up, plugins: {retry: {}}}
  both: {path: "/both", upstream: pool, plugins: {retry: {}, circuit_breaker: {}}}
`, func(ctx *fasthttp.RequestCtx) { ctx.Response.SetBodyRaw(testkit.Body1K) })
	for _, c := range []struct{ method, uri string }{
		{"GET", "http://gateway/retry"}, {"POST", "http://gateway/retry"}, {"GET", "http://gateway/both"},
	} {
		req := fasthttp.AcquireRequest()
		resp := fasthttp.AcquireResponse()
		req.Header.SetMethod(c.method)
		req.SetRequestURI(c.uri)
		do := func() {
			if err := im.Client.Do(req, resp); err != nil {
				t.Fatal(err)
			}
			if resp.StatusCode() != 200 {
				t.Fatalf("%s %s: status %d", c.method, c.uri, resp.StatusCode())
			}
		}
		for range 100 {
			do()
		}
		if n := testing.AllocsPerRun(1000, do); n != 0 {
			t.Errorf("%s %s: %v allocs per request, want 0", c.method, c.uri, n)
		}
	}
}
