//go:build !race

package ratelimit_test

import (
	"bytes"
	"testing"

	"github.com/sluice-gw/sluice/internal/testkit"
	"github.com/valyala/fasthttp"
)

// TestLocalDecisionAllocs: a call through four local limits (one bucket per
// upstream and route, keyed tables for a header and the caller address)
// allocates nothing once its keys are known, counted over the whole process.
func TestLocalDecisionAllocs(t *testing.T) {
	im := testkit.NewInMemory(t, allocYAML, func(ctx *fasthttp.RequestCtx) { ctx.Response.SetBodyRaw(testkit.Body1K) })
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

// TestProviderWatchAllocs: with respect_upstream, reading a provider answer
// that carries a RateLimit list (several items, none out of quota)
// allocates nothing.
func TestProviderWatchAllocs(t *testing.T) {
	const yaml = `
log: {access_log: false}
upstreams:
  up:
    url: "http://upstream.test"
    plugins:
      rate_limit:
        respect_upstream: true
        limits:
          - {rate: 100000000, per: 1s, key: upstream, name: gw}
routes:
  r: {path: "/json", upstream: up}
`
	im := testkit.NewInMemory(t, yaml, func(ctx *fasthttp.RequestCtx) {
		ctx.Response.Header.Set("RateLimit", `"min";r=50;t=30, "day";r=5000;t=3600`)
		ctx.Response.SetBodyRaw(testkit.Body1K)
	})
	req := fasthttp.AcquireRequest()
	resp := fasthttp.AcquireResponse()
	req.SetRequestURI("http://gateway/json")
	do := func() {
		if err := im.Client.Do(req, resp); err != nil {
			t.Fatal(err)
		}
		if resp.StatusCode() != 200 || !bytes.Contains(resp.Header.Peek("RateLimit"), []byte(`"min";r=50`)) {
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
