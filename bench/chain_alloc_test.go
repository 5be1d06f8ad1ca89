//go:build !race

package bench

import (
	"testing"

	"github.com/sluice-gw/sluice/internal/testkit"
	"github.com/valyala/fasthttp"
)

// TestFullChainAllocs asserts that a request through every plugin but the
// cache (a consumer key checked, two rate limits, header edits, a provider
// credential injected, retry and circuit breaker, error normalization) allocates
// nothing, counted over the whole process: client, gateway and origin.
func TestFullChainAllocs(t *testing.T) {
	im := testkit.NewInMemory(t, benchYAML, origin)
	req := fasthttp.AcquireRequest()
	resp := fasthttp.AcquireResponse()
	defer fasthttp.ReleaseRequest(req)
	defer fasthttp.ReleaseResponse(resp)
	req.SetRequestURI("http://gateway/full/json")
	req.Header.Set("X-Api-Key", "bench-key-0123456789")
	do := func() {
		if err := im.Client.Do(req, resp); err != nil {
			t.Fatal(err)
		}
		if resp.StatusCode() != 200 || len(resp.Body()) != 1024 || len(resp.Header.Peek("RateLimit")) == 0 {
			t.Fatalf("status %d, %d bytes, RateLimit %q", resp.StatusCode(), len(resp.Body()), resp.Header.Peek("RateLimit"))
		}
	}
	for range 100 {
		do()
	}
	if n := testing.AllocsPerRun(1000, do); n != 0 {
		t.Errorf("%v allocs per request through the full chain, want 0", n)
	}
}
