//go:build !race

package bench

import (
	"testing"

	"github.com/sluice-gw/sluice/internal/testkit"
	"github.com/valyala/fasthttp"
)

// TestCacheHitAllocs asserts the cache-hit budget: a cache hit allocates
// nothing, counted over the whole process (client and gateway). The store
// (otter) is looked up with a view of the pooled key and returns the stored
// value without a copy (issue 17; bigcache's Get allocated twice).
func TestCacheHitAllocs(t *testing.T) {
	const budget = 0
	im := testkit.NewInMemory(t, cacheYAML, cacheOrigin)
	for _, uri := range []string{"http://gateway/c/json", "http://gateway/c/json?page=2&per_page=50"} {
		req := fasthttp.AcquireRequest()
		resp := fasthttp.AcquireResponse()
		req.SetRequestURI(uri)
		do := func() {
			if err := im.Client.Do(req, resp); err != nil {
				t.Fatal(err)
			}
			if resp.StatusCode() != 200 || len(resp.Body()) != 1024 {
				t.Fatalf("%s: status %d, %d bytes", uri, resp.StatusCode(), len(resp.Body()))
			}
		}
		for range 100 {
			do()
		}
		if string(resp.Header.Peek("Cache-Status")) != "sluice; hit" {
			t.Fatalf("%s: Cache-Status %q, want a hit", uri, resp.Header.Peek("Cache-Status"))
		}
		if n := testing.AllocsPerRun(1000, do); n > budget {
			t.Errorf("%s: %v allocs per hit, want at most %v", uri, n, budget)
		} else {
			t.Logf("%s: %v allocs per hit", uri, n)
		}
		fasthttp.ReleaseRequest(req)
		fasthttp.ReleaseResponse(resp)
	}
}
