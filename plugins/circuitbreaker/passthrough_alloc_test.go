//go:build !race

package circuitbreaker_test

import (
	"testing"

	"github.com/sluice-gw/sluice/internal/testkit"
	"github.com/valyala/fasthttp"
)

// TestBreakerPassThroughAllocs: a route with circuit_breaker proxies a
// request that succeeds without allocating, for one target and several.
func TestBreakerPassThroughAllocs(t *testing.T) {
	im := testkit.NewInMemory(t, `
log: {access_log: false}
upstreams:
  one: {url: "http://upstream.test"}
  pool: {targets: ["http://upstream.test", "http://upstream.test/"]}
routes:
  one: {path: "/one", upstream: one, plugins: {circuit_breaker: {}}}
  pool: {path: "/pool", upstream: pool, plugins: {circuit_breaker: {failure_ratio: 0.5}}}
`, func(ctx *fasthttp.RequestCtx) { ctx.Response.SetBodyRaw(testkit.Body1K) })
	for _, uri := range []string{"http://gateway/one", "http://gateway/pool"} {
		req := fasthttp.AcquireRequest()
		resp := fasthttp.AcquireResponse()
		req.SetRequestURI(uri)
		do := func() {
			if err := im.Client.Do(req, resp); err != nil {
				t.Fatal(err)
			}
			if resp.StatusCode() != 200 {
				t.Fatalf("%s: status %d", uri, resp.StatusCode())
			}
		}
		for range 100 {
			do()
		}
		if n := testing.AllocsPerRun(1000, do); n != 0 {
			t.Errorf("%s: %v allocs per request, want 0", uri, n)
		}
	}
}
