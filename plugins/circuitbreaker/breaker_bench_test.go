package circuitbreaker

import (
	"testing"
	"time"
)

func testBreaker(ratio float64) *breaker {
	s := &settings{consecutive: 5, ratio: ratio, minRequests: 20, openFor: time.Second, maxOpenFor: time.Minute, probes: 1}
	g := &group{upstream: "bench"}
	return newBreaker(s, g, "", 10*time.Second)
}

// BenchmarkBreakerClosed is the hot path: check and record one successful
// attempt on a closed circuit.
func BenchmarkBreakerClosed(b *testing.B) {
	for _, c := range []struct {
		name  string
		ratio float64
	}{{"consecutive", 0}, {"ratio", 0.5}} {
		b.Run(c.name, func(b *testing.B) {
			br := testBreaker(c.ratio)
			b.ReportAllocs()
			b.RunParallel(func(pb *testing.PB) {
				for pb.Next() {
					tok, ok, _ := br.allow()
					if !ok {
						b.Fatal("closed circuit refused")
					}
					br.record(tok, success)
				}
			})
		})
	}
}
