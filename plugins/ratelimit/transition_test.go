package ratelimit_test

import (
	"fmt"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/sluice-gw/sluice/internal/testkit"
)

// call is one request of the transition test: when it was sent, when its
// answer came, and whether the limit admitted it.
type call struct {
	start, end time.Time
	admitted   bool
}

// recorder runs the test's load against the gateways and keeps every call.
type recorder struct {
	t     *testing.T
	gws   []*testkit.Gateway
	mu    sync.Mutex
	calls []call
	other map[int]int // statuses other than 200 and 429
}

// round sends n calls to every gateway at once (n in a row per gateway,
// the gateways in parallel), pausing gap between a gateway's calls.
func (r *recorder) round(n int, gap time.Duration) {
	var wg sync.WaitGroup
	for _, gw := range r.gws {
		wg.Go(func() {
			for range n {
				start := time.Now()
				resp, err := testkit.TryDo("GET", gw.URL+"/r/x", "")
				c := call{start: start, end: time.Now()}
				r.mu.Lock()
				switch {
				case err != nil:
					r.other[-1]++
				case resp.Status == 200:
					c.admitted = true
				case resp.Status != 429:
					r.other[resp.Status]++
				}
				r.calls = append(r.calls, c)
				r.mu.Unlock()
				if gap > 0 {
					time.Sleep(gap)
				}
			}
		})
	}
	wg.Wait()
}

// worstWindow checks the token-bucket bound on the admitted calls: in any
// stretch of time [a, b], a limit of rate per second with burst decides yes
// at most burst + rate*(b-a) times. A call's decision lies between its start
// and its end, so for any two admitted calls i and j, the admitted calls that
// started at or after i's start and ended by j's end are within
// [start_i, end_j] and number at most burst + rate*(end_j - start_i) (+slack).
// Scheduling delays only widen the measured stretch, never narrow it.
// It returns the largest excess over the bound and a description of it.
func worstWindow(calls []call, rate float64, burst, slack int) (int, string) {
	var adm []call
	for _, c := range calls {
		if c.admitted {
			adm = append(adm, c)
		}
	}
	sort.Slice(adm, func(i, j int) bool { return adm[i].start.Before(adm[j].start) })
	worst, what := -1<<31, ""
	for i := range adm {
		for j := range adm {
			if adm[j].end.Before(adm[i].start) {
				continue
			}
			n := 0
			for k := i; k < len(adm); k++ { // sorted by start: k >= i started at or after i
				if !adm[k].end.After(adm[j].end) {
					n++
				}
			}
			w := adm[j].end.Sub(adm[i].start)
			bound := burst + slack + int(rate*w.Seconds())
			if n-bound > worst {
				worst, what = n-bound, fmt.Sprintf("%d admitted within %v, bound %d", n, w, bound)
			}
		}
	}
	return worst, what
}

// A Redis outage and its end must not hand out more than the limit: two
// gateways share a limit of 20/s with burst 10 (nodes: 2: a share of 10/s,
// burst 5 each while Redis is away). Redis is killed right after the shared
// bucket was spent and restarted right after the gateways spent their local
// shares: before the fix, the fallback buckets started full (a second burst
// on top of the one just spent) and Redis came back with a full bucket while
// the local shares had just been spent. The check is a count per window (see
// worstWindow), for every window of the whole run.
func TestRedisTransitionsKeepTheLimit(t *testing.T) {
	t.Parallel()
	const (
		rate  = 20.0
		burst = 10
		// The floor leaves at most one token in a shared bucket that a
		// gateway still in its grace has just floored, when another
		// gateway, past its grace, takes it.
		slack = 1
	)
	rd := testkit.StartRedis(t)
	up := testkit.NewUpstream(t, nil)
	gws := cluster(t, 2, rd, up, `{rate_limit: {rate: 20, per: 1s, burst: 10, key: upstream, nodes: 2}}`)
	r := &recorder{t: t, gws: gws, other: map[int]int{}}
	refill := time.Duration(float64(burst) / rate * float64(time.Second))

	// Redis up; a steady load drains the shared bucket, then the bucket
	// refills while nobody calls.
	r.round(20, 5*time.Millisecond)
	time.Sleep(refill + 100*time.Millisecond)

	// Outage: a demand surge spends the full shared bucket, Redis dies,
	// the surge goes on.
	r.round(10, 0)
	rd.Stop()
	r.round(10, 0)
	// Steady load through the outage, then quiet until the local shares
	// are full again.
	r.round(50, 10*time.Millisecond)
	time.Sleep(refill + 100*time.Millisecond)

	// Recovery: a surge spends the local shares, Redis comes back, the
	// load goes on until both gateways have found it again (each probes
	// once a second), and a little after.
	r.round(10, 0)
	rd.Start()
	back := func() bool {
		for _, gw := range gws {
			if !strings.Contains(gw.Logs.String(), "Redis answers again") {
				return false
			}
		}
		return true
	}
	for i := 0; i < 60 && !back(); i++ { // at most ~60 rounds of 2 calls 20ms apart
		r.round(2, 20*time.Millisecond)
	}
	if !back() {
		t.Fatalf("the gateways did not find Redis again:\n%s\n%s", gws[0].Logs.String(), gws[1].Logs.String())
	}
	r.round(20, 5*time.Millisecond)

	if len(r.other) > 0 {
		t.Errorf("statuses other than 200 and 429 (-1: transport error): %v", r.other)
	}
	for g, gw := range gws {
		if v := metric(t, gw, "sluice_ratelimit_fallback_total", "route", "r", "scope", "upstream"); v == 0 {
			t.Errorf("gateway %d never decided locally: the outage was not exercised", g)
		}
	}
	admitted := 0
	for _, c := range r.calls {
		if c.admitted {
			admitted++
		}
	}
	if up.Count() != admitted {
		t.Errorf("upstream got %d calls, the gateways admitted %d", up.Count(), admitted)
	}
	if excess, what := worstWindow(r.calls, rate, burst, slack); excess > 0 {
		t.Errorf("the limit (rate %v/s, burst %d, +%d) was exceeded by %d: %s (%d calls, %d admitted)",
			rate, burst, slack, excess, what, len(r.calls), admitted)
	} else {
		t.Logf("worst window: %s (%d calls, %d admitted)", what, len(r.calls), admitted)
	}
}
