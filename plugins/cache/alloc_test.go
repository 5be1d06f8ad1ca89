//go:build !race

package cache_test

import (
	"testing"

	"github.com/sluice-gw/sluice/internal/testkit"
	"github.com/valyala/fasthttp"
)

// TestCredentialHitAllocs: a hit on a request carrying credentials (each
// hashed into the partition, every line) and a Vary'd header with two
// lines allocates nothing, counted over the whole process, as
// bench/TestCacheHitAllocs does for a plain hit. It is two lookups of the
// store (the vary marker, then the variant), neither of which copies.
func TestCredentialHitAllocs(t *testing.T) {
	const budget = 0

	im := testkit.NewInMemory(t, `
log: {access_log: false}
upstreams: {up: {url: "http://upstream.test"}}
routes:
  c: {path: "/c/{path:*}", upstream: up, strip_prefix: /c, plugins: {cache: {credential_headers: [Api-Key], query: [page]}}}
`, func(ctx *fasthttp.RequestCtx) {
		ctx.Response.Header.Set("Cache-Control", "max-age=600")
		ctx.Response.Header.Set("Vary", "Accept-Language")
		ctx.Response.SetBodyRaw(testkit.Body1K)
	})
	req := fasthttp.AcquireRequest()
	resp := fasthttp.AcquireResponse()
	defer fasthttp.ReleaseRequest(req)
	defer fasthttp.ReleaseResponse(resp)
	req.SetRequestURI("http://gateway/c/items?page=2&utm=x")
	req.Header.Set("Authorization", "Bearer caller-token")
	req.Header.Set("Cookie", "session=abc")
	req.Header.Add("Api-Key", "k1")
	req.Header.Add("Api-Key", "k2")
	req.Header.Add("Accept-Language", "en")
	req.Header.Add("Accept-Language", "de")
	do := func() {
		if err := im.Client.Do(req, resp); err != nil {
			t.Fatal(err)
		}
		if resp.StatusCode() != 200 || len(resp.Body()) != 1024 {
			t.Fatalf("status %d, %d bytes", resp.StatusCode(), len(resp.Body()))
		}
	}
	for range 100 {
		do()
	}
	if cs := string(resp.Header.Peek("Cache-Status")); cs != "sluice; hit" {
		t.Fatalf("Cache-Status %q, want a hit", cs)
	}
	if n := testing.AllocsPerRun(1000, do); n > budget {
		t.Errorf("%v allocs per hit, want at most %v", n, budget)
	} else {
		t.Logf("%v allocs per hit (budget %v)", n, budget)
	}
}
