package ratelimit_test

import (
	"testing"

	"github.com/sluice-gw/sluice/internal/testkit"
	"github.com/valyala/fasthttp"
)

// allocYAML is a route behind four local limits, each generous enough to
// admit everything.
const allocYAML = `
log: {access_log: false}
upstreams:
  up:
    url: "http://upstream.test"
    plugins:
      rate_limit:
        limits:
          - {rate: 100000000, per: 1s, key: upstream}
          - {rate: 100000000, per: 1s, key: route}
          - {rate: 100000000, per: 1s, key: "header:X-Tenant", name: tenant}
          - {rate: 100000000, per: 1s, key: ip}
routes:
  r: {path: "/json", upstream: up}
`

// BenchmarkRequest compares a whole call through the gateway (in-memory
// listeners, real pipeline) without limits and with the four local limits
// of TestLocalDecisionAllocs.
func BenchmarkRequest(b *testing.B) {
	const bare = `
log: {access_log: false}
upstreams: {up: {url: "http://upstream.test"}}
routes: {r: {path: "/json", upstream: up}}
`
	for _, bc := range []struct{ name, yaml string }{{"bare", bare}, {"four-limits", allocYAML}} {
		b.Run(bc.name, func(b *testing.B) {
			im := testkit.NewInMemory(b, bc.yaml, func(ctx *fasthttp.RequestCtx) { ctx.Response.SetBodyRaw(testkit.Body1K) })
			req := fasthttp.AcquireRequest()
			resp := fasthttp.AcquireResponse()
			req.SetRequestURI("http://gateway/json")
			req.Header.Set("X-Tenant", "acme")
			b.ReportAllocs()
			for b.Loop() {
				if err := im.Client.Do(req, resp); err != nil || resp.StatusCode() != 200 {
					b.Fatalf("%v %d", err, resp.StatusCode())
				}
			}
		})
	}
}
