package bench

import (
	"fmt"
	"io"
	"net"
	"net/http"
	"testing"
	"time"

	"github.com/sluice-gw/sluice/internal/testkit"
)

// collector is an OTLP/HTTP sink on 127.0.0.1 that accepts every export.
func collector(b *testing.B) string {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	srv := &http.Server{ReadHeaderTimeout: 5 * time.Second, Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.Copy(io.Discard, r.Body)
		w.Header().Set("Content-Type", "application/x-protobuf")
	})}
	go func() { _ = srv.Serve(ln) }()
	b.Cleanup(func() { _ = srv.Close() })
	return "http://" + ln.Addr().String() + "/v1/traces"
}

// tracedYAML is the pass-through route of benchYAML with tracing on.
func tracedYAML(endpoint string, sample float64) string {
	return fmt.Sprintf(`
log: {access_log: false}
tracing: {enabled: true, endpoint: %q, sample: %v}
upstreams:
  up: {url: "http://upstream.test"}
routes:
  static: {path: "/json", upstream: up}
`, endpoint, sample)
}

// BenchmarkPassThroughTraced1 is BenchmarkPassThrough with tracing on and
// 1% of the calls (which bring no traceparent) sampled: every call gets a
// trace id and a traceparent for the provider; one in a hundred makes spans
// that are exported to a collector on loopback.
func BenchmarkPassThroughTraced1(b *testing.B) {
	im := testkit.NewInMemory(b, tracedYAML(collector(b), 0.01), origin)
	run(b, im.Client, "http://gateway/json", 200)
}

// BenchmarkPassThroughTraced100 samples every call: a server and an attempt
// span each, exported in batches.
func BenchmarkPassThroughTraced100(b *testing.B) {
	im := testkit.NewInMemory(b, tracedYAML(collector(b), 1), origin)
	run(b, im.Client, "http://gateway/json", 200)
}
