package ratelimit

import (
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

const ms = int64(time.Millisecond)

// A full bucket admits burst calls, counting down; the next is refused with
// the time to its token and takes nothing; tokens come back at the rate.
func TestBucketBurstAndRefill(t *testing.T) {
	p, b := newPace(10, 5), new(tokenBucket) // one token per 100 ms
	t0 := int64(1000 * time.Second)
	for i := range 5 {
		d := p.take(b, t0, 0)
		if !d.ok || d.remaining != 4-i || d.reset != time.Duration(i+1)*100*time.Millisecond || d.wait != 0 {
			t.Fatalf("call %d on a full bucket: %+v; want ok, remaining %d, reset %dms", i, d, 4-i, (i+1)*100)
		}
	}
	for range 2 { // a refused call takes nothing: the second sees the same
		d := p.take(b, t0, 0)
		if d.ok || d.retryAfter != 100*time.Millisecond || d.reset != 500*time.Millisecond {
			t.Fatalf("call on an empty bucket: %+v; want refused, retry after 100ms, reset 500ms", d)
		}
	}
	if d := p.take(b, t0+99*ms, 0); d.ok || d.retryAfter != time.Millisecond {
		t.Fatalf("1 ms before the token: %+v", d)
	}
	if d := p.take(b, t0+100*ms, 0); !d.ok || d.remaining != 0 {
		t.Fatalf("at the token: %+v", d)
	}
	if got := p.tokens(b, t0+2000*ms); got != 5 {
		t.Errorf("long after: %v tokens, want the burst, 5", got)
	}
	for i := range 5 {
		if d := p.take(b, t0+2000*ms, 0); !d.ok {
			t.Fatalf("call %d after a full refill refused", i)
		}
	}
}

// Queue mode: a call is admitted when its token is due within maxWait, and
// told how long to wait; beyond, it is refused and takes nothing.
func TestBucketQueue(t *testing.T) {
	p, b := newPace(10, 1), new(tokenBucket)
	t0 := int64(time.Hour)
	if d := p.take(b, t0, 250*time.Millisecond); !d.ok || d.wait != 0 {
		t.Fatalf("first call: %+v", d)
	}
	for i := 1; i <= 2; i++ {
		d := p.take(b, t0, 250*time.Millisecond)
		if !d.ok || d.wait != time.Duration(i)*100*time.Millisecond || d.remaining != 0 {
			t.Fatalf("queued call %d: %+v; want ok, wait %dms", i, d, i*100)
		}
	}
	d := p.take(b, t0, 250*time.Millisecond)
	if d.ok || d.retryAfter != 300*time.Millisecond {
		t.Fatalf("a call past max_wait: %+v; want refused, retry after 300ms", d)
	}
	if got := p.tokens(b, t0); got != -2 {
		t.Errorf("tokens with two calls queued: %v, want -2", got)
	}
}

// A drained bucket starts empty and fills at the rate.
func TestBucketDrain(t *testing.T) {
	p, b := newPace(2, 4), new(tokenBucket)
	t0 := int64(time.Minute)
	p.drain(b, t0)
	if d := p.take(b, t0, 0); d.ok || d.retryAfter != 500*time.Millisecond {
		t.Fatalf("drained bucket: %+v", d)
	}
	if got := p.tokens(b, t0+1000*ms); got != 2 {
		t.Errorf("a second after draining: %v tokens, want 2", got)
	}
}

// Paces at the config's bounds stay in range: 1e9 a second is one token a
// nanosecond; a limit that refills over centuries is capped, not wrapped.
func TestPaceBounds(t *testing.T) {
	if p := newPace(1e9, 1); p.interval != 1 || p.tolerance != 1 {
		t.Errorf("1e9/s: %+v", p)
	}
	day := 24 * time.Hour
	p := newPace(1/day.Seconds(), 1<<40)
	if p.interval != int64(day) || p.tolerance != maxSpan {
		t.Fatalf("one a day, burst 2^40: %+v; want tolerance capped at %d", p, maxSpan)
	}
	b := new(tokenBucket)
	now := int64(1) << 50
	for range 3 {
		if d := p.take(b, now, 0); !d.ok || d.remaining <= 0 || d.reset <= 0 {
			t.Fatalf("one a day, burst 2^40: %+v", d)
		}
	}
	century := 100 * 365 * day
	p = newPace(1/century.Seconds(), 1)
	if p.interval != maxSpan || p.tolerance != maxSpan {
		t.Fatalf("one a century: %+v; want interval and tolerance capped at %d", p, maxSpan)
	}
	b = new(tokenBucket)
	if d := p.take(b, now, 0); !d.ok {
		t.Fatalf("one a century, first call: %+v", d)
	}
	if d := p.take(b, now, 0); d.ok || d.retryAfter != time.Duration(maxSpan) {
		t.Fatalf("one a century, second call: %+v; want refused, retry after the capped interval", d)
	}
}

// Calls from many goroutines at one instant share the burst exactly.
func TestBucketConcurrentTakes(t *testing.T) {
	p, b := newPace(0.001, 500), new(tokenBucket)
	now := clock()
	var admitted atomic.Int64
	var wg sync.WaitGroup
	for range 8 {
		wg.Go(func() {
			for range 200 {
				if p.take(b, now, 0).ok {
					admitted.Add(1)
				}
			}
		})
	}
	wg.Wait()
	if n := admitted.Load(); n != 500 {
		t.Errorf("1,600 calls at once on a burst of 500: %d admitted", n)
	}
}

// A token in the bucket is taken even when the call's wait budget is
// already spent (maxWait below zero: its deadline has passed).
func TestBucketTokenTakenWithSpentWaitBudget(t *testing.T) {
	p, b := newPace(10, 2), new(tokenBucket)
	t0 := int64(time.Hour)
	p.take(b, t0, 0) // one token left
	if d := p.take(b, t0, -time.Second); !d.ok || d.wait != 0 {
		t.Fatalf("last token with maxWait -1s: %+v; want admitted without waiting", d)
	}
	if d := p.take(b, t0, -time.Second); d.ok {
		t.Fatalf("empty bucket with maxWait -1s: %+v; want refused", d)
	}
}
