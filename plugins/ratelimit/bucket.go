package ratelimit

import (
	"math"
	"sync/atomic"
	"time"
)

// tokenBucket is one local token bucket, kept as a single word: the time
// at which it is full again (GCRA's "theoretical arrival time", the same
// algorithm as the Redis script in cluster.go). At or before now the bucket
// is full; each call moves the time one token's interval later; a call
// that would move it more than the burst's worth of intervals past now
// finds the bucket empty.
//
// Written here rather than taken from golang.org/x/time/rate because this
// is on every rate-limited call, often on a bucket that every core serving
// the upstream shares: rate.Limiter takes a mutex per call (two with the
// token count the RateLimit field needs) and does time.Time arithmetic;
// this is one load, one compare-and-swap and integer arithmetic, lock-free.
// The times are proxy.Nanotime readings (clock()).
type tokenBucket struct {
	tat atomic.Int64
}

// pace is the rate and burst of a limit's buckets, in the buckets' units.
type pace struct {
	interval  int64 // nanoseconds per token, at least 1
	tolerance int64 // burst * interval: how far past now a bucket's time may be
}

// maxSpan bounds interval and tolerance so that a time plus both stays
// inside an int64. It is over 73 years: a limit that refills slower
// refills in 73 years.
const maxSpan = int64(1) << 61

// newPace is the pace of perSecond tokens a second, burst at once. The
// config keeps perSecond within (0, 1e9].
func newPace(perSecond float64, burst int) pace {
	span := func(ns float64) int64 {
		if ns >= float64(maxSpan) || math.IsNaN(ns) {
			return maxSpan
		}
		return max(1, int64(math.Round(ns)))
	}
	iv := span(1e9 / perSecond)
	return pace{interval: iv, tolerance: min(maxSpan, span(float64(burst)*float64(iv)))}
}

// take decides one call at now. The call is admitted when a token is there,
// or, in queue mode (maxWait > 0), when one will be within maxWait; then
// d.wait says how long it must wait. A refused call takes nothing.
func (p *pace) take(b *tokenBucket, now int64, maxWait time.Duration) decision {
	for {
		tat := b.tat.Load()
		base := max(tat, now)
		next := base + p.interval
		wait := next - p.tolerance - now   // > 0: the token is that far away
		if wait > max(int64(maxWait), 0) { // a token there is taken whatever maxWait says
			return decision{reset: time.Duration(base - now), retryAfter: time.Duration(wait)}
		}
		if b.tat.CompareAndSwap(tat, next) {
			return decision{ok: true, remaining: int(max(0, (now+p.tolerance-next)/p.interval)),
				reset: time.Duration(next - now), wait: time.Duration(max(0, wait))}
		}
	}
}

// tokens is how many tokens the bucket holds at now (negative while calls
// queue for tokens not there yet).
func (p *pace) tokens(b *tokenBucket, now int64) float64 {
	return float64(now+p.tolerance-max(b.tat.Load(), now)) / float64(p.interval)
}

// drain empties the bucket at now: it fills at the rate from then.
func (p *pace) drain(b *tokenBucket, now int64) {
	b.tat.Store(now + p.tolerance)
}
