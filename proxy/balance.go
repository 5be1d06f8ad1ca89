package proxy

import (
	"sync/atomic"
	"time"
)

// Load balancing and target health.
//
// Every target has a health record, shared (see Share) by the configs that
// have the target and keyed by upstream name and target URL: a reload that
// keeps a target keeps its ejection, its failure count and its in-flight
// count. Two things take a
// target out of the rotation:
//
//   - passive health (outlier ejection): ConsecutiveFailures failed attempts
//     in a row (5xx, timeout, connection error) eject it for EjectFor,
//     doubled for each ejection that follows right after it came back, up to
//     MaxEjectFor;
//   - active health checks (health_check): failed probes mark it down until
//     probes pass again.
//
// Pick never fails: when every target is out, it picks among all of them, so
// that a pool that is wrongly all ejected still serves rather than failing
// everything. Retries go to a different target than the attempt before
// (PickExcept). Ejection needs several targets: with one, a failing target
// is the circuit breaker's business.

// targetHealth is the shared, lock-free health record of one target.
type targetHealth struct {
	inflight     atomic.Int64 // attempts in progress (all configs)
	failures     atomic.Int64 // consecutive failed attempts
	ejectedUntil atomic.Int64 // nanotime the passive ejection ends; 0 when none
	ejections    atomic.Int64 // ejections in a row (the eject time doubles)
	down         atomic.Bool  // failed active health checks
	checkFails   atomic.Int64 // consecutive failed health checks
	checkPasses  atomic.Int64 // consecutive passed health checks
	owner        atomic.Pointer[healthChecker]
}

// healthKey names a target's health record among the shared resources: a
// reload that keeps the target keeps its record; it is released with the
// last config that has the target.
type healthKey struct{ upstream, url string }

// available reports whether t takes traffic: not ejected, not down.
func (t *Target) available(now *int64) bool {
	h := t.health
	if h.down.Load() {
		return false
	}
	until := h.ejectedUntil.Load()
	if until == 0 {
		return true
	}
	if *now == 0 {
		*now = nanotime()
	}
	if *now < until {
		return false
	}
	h.ejectedUntil.CompareAndSwap(until, 0) // the ejection is over
	return true
}

// Available reports whether the target takes traffic (not ejected by
// passive health, not down by active health checks).
func (t *Target) Available() bool {
	var now int64
	return t.available(&now)
}

// Index is the target's position in its upstream's Targets (the order of
// the config), stable for the life of a compiled config.
func (t *Target) Index() int { return t.index }

// PickExcept returns a target for an attempt, avoiding prev (the target of
// the attempt before, nil for none) when another one is available. Targets
// that are ejected or down are skipped; when every target is, one is picked
// anyway. It allocates nothing.
func (u *Upstream) PickExcept(prev *Target) *Target {
	n := len(u.Targets)
	if n == 1 {
		return u.Targets[0]
	}
	start := int((u.next.Add(1) - 1) % uint32(n))
	var now int64
	if u.leastInflight {
		var best *Target
		var bestLoad int64
		for i := range n {
			t := u.Targets[(start+i)%n]
			if t == prev || !t.available(&now) {
				continue
			}
			if l := t.health.inflight.Load(); best == nil || l < bestLoad {
				best, bestLoad = t, l
			}
		}
		if best != nil {
			return best
		}
	} else {
		for i := range n {
			if t := u.Targets[(start+i)%n]; t != prev && t.available(&now) {
				return t
			}
		}
	}
	// Only prev is available, or none is: prefer prev if it is available,
	// else any target other than prev.
	if prev != nil && prev.available(&now) {
		return prev
	}
	for i := range n {
		if t := u.Targets[(start+i)%n]; t != prev {
			return t
		}
	}
	return u.Targets[start]
}

// observe records the outcome of one attempt for passive health.
func (u *Upstream) observe(t *Target, failed bool) {
	h := t.health
	if !failed {
		if h.failures.Load() != 0 {
			h.failures.Store(0)
		}
		if h.ejections.Load() != 0 && h.ejectedUntil.Load() == 0 {
			h.ejections.Store(0) // it came back and works
		}
		return
	}
	n := h.failures.Add(1) // counted always: /admin/upstreams shows it
	if !u.outlier.on || len(u.Targets) < 2 || n < int64(u.outlier.consecutive) {
		return
	}
	h.failures.Store(0)
	k := h.ejections.Add(1)
	d := u.outlier.ejectFor
	for i := int64(1); i < k && d < u.outlier.maxEjectFor; i++ {
		d *= 2
	}
	d = min(d, u.outlier.maxEjectFor)
	h.ejectedUntil.Store(nanotime() + int64(d))
	u.log().Warn("target ejected", "upstream", u.Name, "target", t.URL, "for", d.String(),
		"after_failures", u.outlier.consecutive)
}

// outlierSettings are the compiled outlier settings of an upstream.
type outlierSettings struct {
	on                    bool
	consecutive           int
	ejectFor, maxEjectFor time.Duration
}

// TargetHealth is a target's health as shown in /admin/upstreams.
type TargetHealth struct {
	// State is "healthy", "ejected" (passive health) or "down" (health checks).
	State string `json:"state"`
	// Failures counts failed attempts in a row.
	Failures int64 `json:"consecutive_failures"`
	// Ejections counts ejections in a row.
	Ejections int64 `json:"ejections,omitempty"`
	// EjectedFor is the time left in the ejection, in seconds.
	EjectedFor float64 `json:"ejected_for_seconds,omitempty"`
	// Inflight counts attempts in progress.
	Inflight int64 `json:"inflight"`
}

// Health returns the target's health.
func (t *Target) Health() TargetHealth {
	h := t.health
	th := TargetHealth{State: "healthy", Failures: h.failures.Load(), Ejections: h.ejections.Load(), Inflight: h.inflight.Load()}
	if until := h.ejectedUntil.Load(); until != 0 {
		if left := time.Duration(until - nanotime()); left > 0 {
			th.State, th.EjectedFor = "ejected", left.Seconds()
		}
	}
	if h.down.Load() {
		th.State = "down"
	}
	return th
}
