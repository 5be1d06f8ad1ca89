package cache

import "time"

// flight is one fetch in progress for a key: concurrent misses wait on it
// instead of calling the upstream themselves (request collapsing).
type flight struct {
	done chan struct{}
}

// wait blocks until the fetch is done or d has passed; false on timeout.
func (f *flight) wait(d time.Duration) bool {
	if d <= 0 {
		return false
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-f.done:
		return true
	case <-t.C:
		return false
	}
}

// join returns the fetch in progress for key, or registers a new one led by
// the caller (leader true), who must call leave when done.
func (s *Store) join(key []byte) (f *flight, leader bool) {
	s.flightMu.Lock()
	defer s.flightMu.Unlock()
	if f := s.flights[string(key)]; f != nil {
		return f, false
	}
	f = &flight{done: make(chan struct{})}
	s.flights[string(key)] = f
	return f, true
}

func (s *Store) leave(key []byte, f *flight) {
	s.flightMu.Lock()
	if s.flights[string(key)] == f {
		delete(s.flights, string(key))
	}
	s.flightMu.Unlock()
	close(f.done)
}

// startRefresh claims the background refresh of key; false when one is
// already running (stale-while-revalidate refreshes once). The running
// case does not allocate.
func (s *Store) startRefresh(key []byte) bool {
	s.flightMu.Lock()
	defer s.flightMu.Unlock()
	if _, running := s.refreshing[string(key)]; running {
		return false
	}
	s.refreshing[string(key)] = struct{}{}
	return true
}

func (s *Store) endRefresh(key string) {
	s.flightMu.Lock()
	delete(s.refreshing, key)
	s.flightMu.Unlock()
}
