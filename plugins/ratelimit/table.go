package ratelimit

import (
	"sync"
	"sync/atomic"
	"time"
)

// bucket is one key's token bucket and when it was last used.
type bucket struct {
	tokenBucket
	last atomic.Int64 // clock() of the latest decision
}

// table holds the buckets of a keyed limit (consumer, ip, header). It is
// sharded to keep lock contention low; a lookup of an existing key takes a
// read lock and allocates nothing (the map index converts the key without
// copying). It is bounded: keys idle longer than idle are dropped when their
// shard next grows, and once the table holds maxKeys keys, new keys share one
// overflow bucket (existing keys keep theirs) until idle keys go.
type table struct {
	pace     pace
	idle     int64 // nanoseconds
	maxKeys  int64
	overflow bucket
	empty    bool // new buckets start without tokens (a fallback share)
	size     atomic.Int64
	lastFull atomic.Int64 // when sweepAll last ran
	shards   [numShards]shard
}

const numShards = 64

type shard struct {
	mu        sync.RWMutex
	m         map[string]*bucket
	lastSweep int64
	_         [40]byte // keep shards on their own cache lines
}

func newTable(p pace, maxKeys int, idle time.Duration) *table {
	// A bucket must not be forgotten before it has refilled (tolerance):
	// that would hand a fresh burst to a key that has just used its own.
	t := &table{pace: p, idle: max(int64(idle), p.tolerance), maxKeys: int64(maxKeys)}
	for i := range t.shards {
		t.shards[i].m = map[string]*bucket{}
	}
	return t
}

// startEmpty makes the table's buckets, the overflow one and those made
// later, start without tokens: they fill at the rate from when they are made.
func (t *table) startEmpty(now int64) {
	t.empty = true
	t.pace.drain(&t.overflow.tokenBucket, now)
}

// get returns the bucket of key, creating it when needed.
func (t *table) get(key []byte, now int64) *tokenBucket {
	return &t.entry(key, now).tokenBucket
}

// entry is get's bucket with its last use.
func (t *table) entry(key []byte, ns int64) *bucket {
	s := &t.shards[fnv(key)%numShards]
	s.mu.RLock()
	b := s.m[string(key)]
	s.mu.RUnlock()
	if b != nil {
		b.last.Store(ns)
		return b
	}
	s.mu.Lock()
	if b = s.m[string(key)]; b != nil {
		s.mu.Unlock()
		b.last.Store(ns)
		return b
	}
	if ns-s.lastSweep > t.idle/2 {
		t.sweep(s, ns)
	}
	if t.size.Load() >= t.maxKeys {
		// Full: idle keys may sit in other shards. Sweep them all, at
		// most once per fullSweepEvery so that a flood of new keys does
		// not turn every miss into a walk over the whole table.
		s.mu.Unlock()
		t.sweepAll(ns)
		s.mu.Lock()
		if b = s.m[string(key)]; b == nil && t.size.Load() >= t.maxKeys {
			b = &t.overflow
		}
	}
	if b == nil {
		b = &bucket{}
		if t.empty {
			t.pace.drain(&b.tokenBucket, ns)
		}
		s.m[string(key)] = b
		t.size.Add(1)
	}
	s.mu.Unlock()
	b.last.Store(ns)
	return b
}

// fullSweepEvery bounds how often a full table sweeps all its shards.
const fullSweepEvery = int64(time.Second)

func (t *table) sweepAll(now int64) {
	last := t.lastFull.Load()
	if now-last < fullSweepEvery || !t.lastFull.CompareAndSwap(last, now) {
		return
	}
	for i := range t.shards {
		s := &t.shards[i]
		s.mu.Lock()
		t.sweep(s, now)
		s.mu.Unlock()
	}
}

// sweep drops the shard's idle keys; s.mu is held.
func (t *table) sweep(s *shard, now int64) {
	s.lastSweep = now
	for k, b := range s.m {
		if now-b.last.Load() > t.idle {
			delete(s.m, k)
			t.size.Add(-1)
		}
	}
}

// fnv is FNV-1a, inline so that hashing a key allocates nothing.
func fnv(b []byte) uint32 {
	h := uint32(2166136261)
	for _, c := range b {
		h ^= uint32(c)
		h *= 16777619
	}
	return h
}
