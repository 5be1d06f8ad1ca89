//go:build !race

package idempotency_test

import (
	"testing"

	"github.com/sluice-gw/sluice/internal/testkit"
	"github.com/valyala/fasthttp"
)

// TestIdempotencyAllocs: a route with the plugin adds no allocation to a GET
// or to a POST without a key; a replay from the in-process store allocates
// once (the store key).
func TestIdempotencyAllocs(t *testing.T) {
	im := testkit.NewInMemory(t, `
log: {access_log: false}
upstreams:
  up: {url: "http://upstream.test"}
routes:
  r: {path: "/r", upstream: up, plugins: {idempotency: {}}}
`, func(ctx *fasthttp.RequestCtx) { ctx.Response.SetBodyRaw(testkit.Body1K) })
	for _, c := range []struct {
		method, key string
		max         float64
	}{{"GET", "", 0}, {"POST", "", 0}, {"POST", "replayed-key", 1}} {
		req := fasthttp.AcquireRequest()
		resp := fasthttp.AcquireResponse()
		req.Header.SetMethod(c.method)
		req.SetRequestURI("http://gateway/r")
		req.SetBodyString(`{"amount":100}`)
		if c.key != "" {
			req.Header.Set("Idempotency-Key", c.key)
		}
		do := func() {
			if err := im.Client.Do(req, resp); err != nil {
				t.Fatal(err)
			}
			if resp.StatusCode() != 200 {
				t.Fatalf("%s key %q: status %d", c.method, c.key, resp.StatusCode())
			}
		}
		for range 100 {
			do()
		}
		n := testing.AllocsPerRun(1000, do)
		t.Logf("%s key %q: %v allocs per request", c.method, c.key, n)
		if n > c.max {
			t.Errorf("%s key %q: %v allocs per request, want at most %v", c.method, c.key, n, c.max)
		}
	}
}

// BenchmarkReplayInMemory: a replay through the gateway with an in-memory
// listener, without the loopback network of BenchmarkReplay.
func BenchmarkReplayInMemory(b *testing.B) {
	im := testkit.NewInMemory(b, `
log: {access_log: false}
upstreams:
  up: {url: "http://upstream.test"}
routes:
  r: {path: "/r", upstream: up, plugins: {idempotency: {}}}
`, func(ctx *fasthttp.RequestCtx) { ctx.Response.SetBodyRaw(testkit.Body1K) })
	req, resp := fasthttp.AcquireRequest(), fasthttp.AcquireResponse()
	req.Header.SetMethod("POST")
	req.SetRequestURI("http://gateway/r")
	req.Header.Set("Idempotency-Key", "bench")
	req.SetBodyString(`{"amount":100}`)
	if err := im.Client.Do(req, resp); err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	for b.Loop() {
		if err := im.Client.Do(req, resp); err != nil {
			b.Fatal(err)
		}
	}
	if string(resp.Header.Peek("Idempotent-Replayed")) != "true" {
		b.Fatal("not a replay")
	}
}
