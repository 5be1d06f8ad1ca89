//go:build !race

package circuitbreaker

import "testing"

// TestBreakerAllocs: checking and recording an attempt on a closed circuit
// allocates nothing, with either trip rule, for successes and for failures
// below the threshold.
func TestBreakerAllocs(t *testing.T) {
	for _, ratio := range []float64{0, 0.5} {
		br := testBreaker(ratio)
		i := 0
		n := testing.AllocsPerRun(10000, func() {
			tok, ok, _ := br.allow()
			if !ok {
				t.Fatal("closed circuit refused")
			}
			o := success
			if i%4 == 0 {
				o = failure // one in four fails: never 5 in a row, never half
			}
			i++
			br.record(tok, o)
		})
		if n != 0 {
			t.Errorf("ratio %v: %v allocs per check+record, want 0", ratio, n)
		}
		if br.State() != Closed {
			t.Errorf("ratio %v: state %v, want closed", ratio, br.State())
		}
	}
}
