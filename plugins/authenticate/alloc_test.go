//go:build !race

package authenticate_test

import (
	"testing"

	"github.com/sluice-gw/sluice/internal/testkit"
	"github.com/valyala/fasthttp"
)

// TestAuthenticateAllocs: identifying a caller by API key (X-Api-Key and
// Bearer) costs no allocation, counted over the whole process (client,
// gateway, upstream), like the pass-through budget.
func TestAuthenticateAllocs(t *testing.T) {
	im := testkit.NewInMemory(t, allocYAML, upstream1K)
	for _, hdr := range [][2]string{{"X-Api-Key", crmKey}, {"Authorization", "Bearer " + billingKey}} {
		req := fasthttp.AcquireRequest()
		resp := fasthttp.AcquireResponse()
		req.SetRequestURI("http://gateway/api/v1/items?limit=10")
		do := func() {
			req.Header.Set(hdr[0], hdr[1])
			if err := im.Client.Do(req, resp); err != nil {
				t.Fatal(err)
			}
			if resp.StatusCode() != 200 || len(resp.Body()) != 1024 {
				t.Fatalf("%s: status %d: %s", hdr[0], resp.StatusCode(), resp.Body())
			}
		}
		for range 100 {
			do()
		}
		if n := testing.AllocsPerRun(1000, do); n != 0 {
			t.Errorf("%s: %v allocs per request, want 0", hdr[0], n)
		}
	}
}
