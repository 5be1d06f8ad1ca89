package circuitbreaker

import (
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"github.com/sluice-gw/sluice/proxy"
)

// State is a breaker's state. The values are those of sluice_circuit_state.
type State uint8

const (
	Closed   State = 0 // requests pass; failures are counted
	HalfOpen State = 1 // a few probes pass; the rest fail fast
	Open     State = 2 // every request fails fast until open_for has passed
)

var stateNames = [3]string{"closed", "half_open", "open"}

func (s State) String() string { return stateNames[s&3] }

// outcome is what one attempt tells the breaker.
type outcome uint8

const (
	success outcome = iota // the provider answered, not with a failure status
	failure                // a failure status, a timeout or a connection error
	ignored                // nothing to learn: the attempt never reached the provider
)

// settings are a breaker's compiled config.
type settings struct {
	consecutive int64   // trip after that many failures in a row; 0: off
	ratio       float64 // trip when failures/total >= ratio over the window; 0: off
	minRequests int64
	openFor     time.Duration
	maxOpenFor  time.Duration
	probes      int64
}

// breaker is one circuit (of an upstream, or of one target of it). Its state
// and generation share one atomic word: allow returns it as a token and
// record ignores outcomes whose token is stale (an attempt that started
// before the last transition). In the closed state, allow is one atomic
// load and record one or two atomic operations: no lock, no allocation.
// Transitions take the mutex.
type breaker struct {
	word      atomic.Uint64 // generation<<2 | State
	consec    atomic.Int64  // failures in a row (closed)
	openUntil atomic.Int64  // nanotime the open state ends
	trips     atomic.Int64  // opens in a row (open_for doubles)
	admitted  atomic.Int64  // probes let through (half-open)
	passed    atomic.Int64  // probes that succeeded (half-open)
	win       *window       // nil unless failure_ratio is set

	s      *settings
	g      *group
	target string // the target's URL
	mu     sync.Mutex
}

func newBreaker(s *settings, g *group, target string, window time.Duration) *breaker {
	b := &breaker{s: s, g: g, target: target}
	if s.ratio > 0 {
		b.win = newWindow(window)
	}
	return b
}

// State returns the breaker's state.
func (b *breaker) State() State { return State(b.word.Load() & 3) }

// allow says whether an attempt may go out. When it may not, wait is how
// long until the breaker lets a probe through.
func (b *breaker) allow() (token uint64, ok bool, wait time.Duration) {
	w := b.word.Load()
	switch State(w & 3) {
	case Closed:
		return w, true, 0
	case Open:
		now := proxy.Nanotime()
		until := b.openUntil.Load()
		if now < until {
			return w, false, time.Duration(until - now)
		}
		b.transition(w, HalfOpen, "")
		w = b.word.Load()
		if State(w&3) != HalfOpen {
			return b.allow()
		}
	}
	// half-open
	if b.admitted.Add(1) <= b.s.probes {
		return w, true, 0
	}
	b.admitted.Add(-1)
	return w, false, time.Second // probes are out: ask again shortly
}

// record takes the outcome of an attempt that allow let through.
func (b *breaker) record(token uint64, o outcome) {
	if b.word.Load() != token {
		return // a transition happened meanwhile: this outcome belongs to the past
	}
	switch State(token & 3) {
	case Closed:
		if o == ignored {
			return
		}
		var n int64
		if o == success {
			if b.consec.Load() != 0 {
				b.consec.Store(0)
			}
		} else {
			n = b.consec.Add(1)
		}
		if b.win != nil {
			total, fails := b.win.add(proxy.Nanotime(), o == failure)
			if o == failure && total >= b.s.minRequests && float64(fails) >= b.s.ratio*float64(total) {
				b.transition(token, Open, fmt.Sprintf("%d of the last %d attempts failed", fails, total))
				return
			}
		}
		if o == failure && b.s.consecutive > 0 && n >= b.s.consecutive {
			b.transition(token, Open, fmt.Sprintf("%d failures in a row", n))
		}
	case HalfOpen:
		switch o {
		case ignored:
			b.admitted.Add(-1) // the probe did not probe: let another one through
		case failure:
			b.transition(token, Open, "a half-open probe failed")
		case success:
			if b.passed.Add(1) >= b.s.probes {
				b.transition(token, Closed, "")
			}
		}
	}
}

// transition moves the breaker from the state of token to `to`, unless
// another goroutine moved it first.
func (b *breaker) transition(token uint64, to State, why string) {
	b.mu.Lock()
	if b.word.Load() != token {
		b.mu.Unlock()
		return
	}
	var openFor time.Duration
	switch to {
	case Open:
		k := b.trips.Add(1)
		openFor = b.s.openFor
		for i := int64(1); i < k && openFor < b.s.maxOpenFor; i++ {
			openFor *= 2
		}
		openFor = min(openFor, b.s.maxOpenFor)
		b.openUntil.Store(proxy.Nanotime() + int64(openFor))
	case HalfOpen:
		b.admitted.Store(0)
		b.passed.Store(0)
	case Closed:
		b.trips.Store(0)
	}
	b.consec.Store(0)
	if b.win != nil {
		b.win.reset()
	}
	b.word.Store((token>>2+1)<<2 | uint64(to))
	b.mu.Unlock()
	b.g.changed(b, to, why, openFor)
}

// halfOpenIn is the time until an open breaker lets a probe through; 0 otherwise.
func (b *breaker) halfOpenIn() time.Duration {
	if b.State() != Open {
		return 0
	}
	return max(0, time.Duration(b.openUntil.Load()-proxy.Nanotime()))
}

// window counts attempts and failures over a rolling window, in ten
// buckets. A bucket is recycled by the first attempt of its new period; an
// attempt racing with the recycling may be lost, which a ratio over many
// attempts does not notice.
type window struct {
	width   int64 // nanoseconds per bucket
	buckets [10]bucket
}

type bucket struct {
	epoch        atomic.Int64
	total, fails atomic.Int64
}

func newWindow(d time.Duration) *window {
	return &window{width: max(int64(d)/10, 1)}
}

// add counts one attempt; for a failure it returns the window's totals.
func (w *window) add(now int64, fail bool) (total, fails int64) {
	e := now / w.width
	b := &w.buckets[e%int64(len(w.buckets))]
	if old := b.epoch.Load(); old != e && b.epoch.CompareAndSwap(old, e) {
		b.total.Store(0)
		b.fails.Store(0)
	}
	b.total.Add(1)
	if !fail {
		return 0, 0
	}
	b.fails.Add(1)
	for i := range w.buckets {
		c := &w.buckets[i]
		if ep := c.epoch.Load(); ep > e-int64(len(w.buckets)) && ep <= e {
			total += c.total.Load()
			fails += c.fails.Load()
		}
	}
	return total, fails
}

func (w *window) reset() {
	for i := range w.buckets {
		w.buckets[i].epoch.Store(0)
		w.buckets[i].total.Store(0)
		w.buckets[i].fails.Store(0)
	}
}
