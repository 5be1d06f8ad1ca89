package ratelimit

import (
	"regexp"
	"testing"
	"time"
)

// The table keeps at most maxKeys keys; beyond, new keys share the overflow
// bucket until idle keys (idle and refilled) are swept.
func TestTableBoundAndIdleExpiry(t *testing.T) {
	tb := newTable(newPace(1000, 1), 2, 10*time.Millisecond)
	t0 := clock()
	a, b := tb.get([]byte("a"), t0), tb.get([]byte("b"), t0)
	if a == b || a == &tb.overflow.tokenBucket || b == &tb.overflow.tokenBucket {
		t.Fatal("the first two keys must get buckets of their own")
	}
	if c := tb.get([]byte("c"), t0); c != &tb.overflow.tokenBucket {
		t.Fatal("a third key beyond max_keys must share the overflow bucket")
	}
	if tb.get([]byte("a"), t0) != a {
		t.Fatal("a known key must keep its bucket at the cap")
	}
	if n := tb.size.Load(); n != 2 {
		t.Fatalf("size %d, want 2", n)
	}
	// Later than idle: "a" and "b" are dropped when a new key needs room.
	later := t0 + int64(2*time.Second)
	c := tb.get([]byte("c"), later)
	if c == &tb.overflow.tokenBucket {
		t.Fatal("idle keys were not swept to make room")
	}
	if n := tb.size.Load(); n != 1 {
		t.Errorf("size %d after the sweep, want 1", n)
	}
	if got := tb.get([]byte("a"), later); got == a {
		t.Error("an expired key kept its old bucket")
	}
}

// A bucket is never forgotten before it has refilled, whatever idle_timeout says.
func TestTableKeepsKeysUntilRefilled(t *testing.T) {
	tb := newTable(newPace(1, 10), 1, time.Millisecond) // refills in 10s
	t0 := clock()
	a := tb.get([]byte("a"), t0)
	if tb.get([]byte("b"), t0+int64(5*time.Second)) != &tb.overflow.tokenBucket {
		t.Error("a half-refilled bucket was dropped")
	}
	if tb.get([]byte("a"), t0+int64(5*time.Second)) != a {
		t.Error("key a lost its bucket")
	}
}

func TestParseRateLimit(t *testing.T) {
	for _, tc := range []struct {
		in   string
		r, t int64
		ok   bool
	}{
		{`"default";r=0;t=30`, 0, 30, true},
		// every item is read: the least r, the longest t among r=0 items
		{`"a";r=5;t=2, "b";r=0;t=60`, 0, 60, true},
		{`"min";r=5;t=30, "day";r=0;t=3600, "hour";r=0;t=600`, 0, 3600, true},
		{`"min";r=5;t=30, "day";r=9;t=3600`, 5, 0, true}, // t only counts where r=0
		{`"a;b,c";r=0;t=7, x;r=3`, 0, 7, true},           // separators inside a quoted name
		{`"a";r=-1;t=5, "b";r=2;t=1`, 2, 0, true},
		{`"a";r=1x;t=5`, -1, 0, false},
		{`"x";t=3`, -1, 0, false},
		{`garbage`, -1, 0, false},
	} {
		r, tt, ok := parseRateLimit([]byte(tc.in))
		if r != tc.r || tt != tc.t || ok != tc.ok {
			t.Errorf("%q: got %d %d %v, want %d %d %v", tc.in, r, tt, ok, tc.r, tc.t, tc.ok)
		}
	}
}

// An upstream limit's Redis key names the upstream and the limit and tells
// settings apart: two routes' limits of one name with different rate, per or
// burst must not share one GCRA key.
func TestUpstreamKeyTellsSettingsApart(t *testing.T) {
	base := upstreamKey("api", "upstream", 10, time.Second, 20)
	if !regexp.MustCompile(`^rl:u:api:upstream:[0-9a-f]{8}$`).MatchString(base) {
		t.Fatalf("key %q, want rl:u:api:upstream:<8 hex digits>", base)
	}
	if again := upstreamKey("api", "upstream", 10, time.Second, 20); again != base {
		t.Errorf("same settings, different keys: %q %q", base, again)
	}
	for _, k := range []string{
		upstreamKey("api", "upstream", 5, time.Second, 20),
		upstreamKey("api", "upstream", 10, time.Minute, 20),
		upstreamKey("api", "upstream", 10, time.Second, 21),
	} {
		if k == base {
			t.Errorf("different settings share the key %q", k)
		}
	}
}
