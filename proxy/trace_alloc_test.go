//go:build !race

package proxy_test

import (
	"testing"

	"github.com/sluice-gw/sluice/internal/testkit"
	"github.com/valyala/fasthttp"
)

// TestTraceAllocs: with tracing off a caller's traceparent costs nothing
// (it is not parsed); with tracing on, an unsampled call (continued or new
// trace) allocates nothing either: only sampled calls pay for spans.
func TestTraceAllocs(t *testing.T) {
	for _, c := range []struct {
		name, yaml, traceparent string
	}{
		{"off, caller's traceparent", allocYAML, "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"},
		{"on, unsampled, new trace", allocYAML + `
tracing: {enabled: true, endpoint: "http://127.0.0.1:1/v1/traces", sample: 0}
`, ""},
		{"on, unsampled caller", allocYAML + `
tracing: {enabled: true, endpoint: "http://127.0.0.1:1/v1/traces", sample: 0}
`, "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00"},
		{"on, malformed traceparent, unsampled", allocYAML + `
tracing: {enabled: true, endpoint: "http://127.0.0.1:1/v1/traces", sample: 0}
`, "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01"},
	} {
		t.Run(c.name, func(t *testing.T) {
			im := testkit.NewInMemory(t, c.yaml, upstreamJSON)
			req := fasthttp.AcquireRequest()
			resp := fasthttp.AcquireResponse()
			do := func() {
				req.SetRequestURI("http://gateway/json")
				if c.traceparent != "" {
					req.Header.Set("traceparent", c.traceparent)
				} else {
					req.Header.Del("traceparent")
				}
				if err := im.Client.Do(req, resp); err != nil {
					t.Fatal(err)
				}
				if resp.StatusCode() != 200 {
					t.Fatalf("status %d", resp.StatusCode())
				}
			}
			for range 100 {
				do()
			}
			if n := testing.AllocsPerRun(1000, do); n != 0 {
				t.Errorf("%v allocs per request, want 0", n)
			}
		})
	}
}
