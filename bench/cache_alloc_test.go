//go:build !race

package bench

import (
	"testing"

	"github.com/sluice-gw/sluice/internal/testkit"
	"github.com/valyala/fasthttp"
)

// TestCacheHitAllocs asserts the cache-hit budget: a cache hit allocates
// nothing beyond what bigcache's Get does itself, counted over the whole
// process (client and gateway). bigcache v3.1.0 allocates twice per Get: a
// copy of the value and a copy of the stored key it compares (measured
// below, so that the budget follows the library).
func TestCacheHitAllocs(t *testing.T) {
	getAllocs := testkit.BigcacheGetAllocs(t)
	t.Logf("bigcache.Get: %v allocs", getAllocs)

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
		if n := testing.AllocsPerRun(1000, do); n > getAllocs {
			t.Errorf("%s: %v allocs per hit, want at most bigcache.Get's %v", uri, n, getAllocs)
		} else {
			t.Logf("%s: %v allocs per hit", uri, n)
		}
		fasthttp.ReleaseRequest(req)
		fasthttp.ReleaseResponse(resp)
	}
}
