//go:build !race

package ratelimit_test

import (
	"testing"

	"github.com/sluice-gw/sluice/proxy/proxytest"
	"github.com/valyala/fasthttp"
)

// TestLocalDecisionAllocs: a call through four local limits (one bucket per
// upstream and route, keyed tables for a header and the caller address)
// allocates nothing once its keys are known, counted over the whole process.
func TestLocalDecisionAllocs(t *testing.T) {
	im := proxytest.NewInMemory(t, allocYAML, func(ctx *fasthttp.RequestCtx) { ctx.Response.SetBodyRaw(proxytest.Body1K) })
	req := fasthttp.AcquireRequest()
	resp := fasthttp.AcquireResponse()
	req.SetRequestURI("http://gateway/json")
	req.Header.Set("X-Tenant", "acme")
	do := func() {
		if err := im.Client.Do(req, resp); err != nil {
			t.Fatal(err)
		}
		if resp.StatusCode() != 200 || len(resp.Header.Peek("RateLimit")) == 0 {
			t.Fatalf("status %d, RateLimit %q", resp.StatusCode(), resp.Header.Peek("RateLimit"))
		}
	}
	for range 100 {
		do()
	}
	if n := testing.AllocsPerRun(1000, do); n != 0 {
		t.Errorf("%v allocs per request, want 0", n)
	}
}
