package cache

import "sync"

// A warm fetch (warm.go) runs in the background while callers and admins
// may purge. An answer fetched before a purge must not be stored after it
// as if the purge had never happened. The fill gate orders the two: every
// invalidation is applied under its write lock and noted, and a fill stores
// under its read lock, then applies again the invalidations that ran while
// it was in flight, so that what they name is gone whichever came first.

// gateRing is how many invalidations a fill in flight can catch up on;
// after more, its answer is dropped instead of stored.
const gateRing = 64

// fillGate orders invalidations with background fills.
type fillGate struct {
	mu      sync.RWMutex
	seq     uint64                 // invalidations applied so far
	pending int                    // fills in flight
	ring    [gateRing]Invalidation // the latest, by seq % gateRing, while fills are pending
}

// apply removes what inv names and returns how many entries went, noting
// it for the fills in flight. It does not publish: see invalidate.
func (s *Store) apply(inv *Invalidation) int {
	g := &s.gate
	g.mu.Lock()
	defer g.mu.Unlock()
	g.seq++
	if g.pending > 0 {
		g.ring[g.seq%gateRing] = *inv
	}
	return s.remove(inv)
}

// beginFill registers a fill going upstream and returns its mark for
// endFill.
func (s *Store) beginFill() uint64 {
	g := &s.gate
	g.mu.Lock()
	defer g.mu.Unlock()
	g.pending++
	return g.seq
}

// endFill ends the fill begun at mark. With store non-nil, it stores the
// answer (store reports whether it did) unless more invalidations ran
// meanwhile than the gate keeps, and applies again those that ran since
// mark. overlapped reports that some did: what was stored may be gone.
func (s *Store) endFill(mark uint64, store func() bool) (stored, overlapped bool) {
	g := &s.gate
	g.mu.RLock()
	n := g.seq - mark
	if store != nil && n <= gateRing {
		stored = store()
		for i := mark + 1; i <= g.seq; i++ {
			inv := g.ring[i%gateRing]
			s.remove(&inv)
		}
	}
	g.mu.RUnlock()
	g.mu.Lock()
	if g.pending--; g.pending == 0 {
		clear(g.ring[:]) // hold no invalidation's slices longer than needed
	}
	g.mu.Unlock()
	return stored, n > 0
}
