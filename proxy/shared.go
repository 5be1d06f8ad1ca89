package proxy

import (
	"errors"
	"fmt"
	"log/slog"
	"reflect"
	"slices"
	"sync"
	"sync/atomic"

	"github.com/prometheus/client_golang/prometheus"
)

// Share returns the resource of type T under key, made by create the first
// time a configuration asks for it. It is how plugins keep state that
// outlives one configuration (breaker state, a token source, a Redis
// subscription, metric vectors) and share it between routes: every
// configuration that asks for it holds it, and it is released when the last
// one that holds it retires (a reload that no longer uses it, or shutdown).
//
// key is any comparable value: a struct of the settings that make two
// resources different, or struct{}{} for one per process. Resources of
// different types never collide, whatever their keys.
//
// The gateway runs the resource's lifecycle, so that plugins count nothing
// themselves: if T has Start() error, it is called once, when the first
// configuration that holds it starts serving (never for a configuration
// that is only checked); if T has Close() error, it is called once, when the
// resource is released (after Start, if it has one). Collectors registered
// through Build.Registerer inside create are unregistered on release.
func Share[T any](b *Build, key any, create func() T) T { return share(b.st, key, create) }

// share is Share for a state being compiled: the core keeps its own state
// that outlives a config (target health) the same way.
func share[T any](st *state, key any, create func() T) T {
	return st.shared.acquire(st, sharedKey{reflect.TypeFor[T](), key}, func() any { return create() }).(T)
}

// sharedKey names one shared resource: its type and its key.
type sharedKey struct {
	typ reflect.Type
	key any
}

// sharedEntry is one shared resource with the count of configurations
// (states) holding it.
type sharedEntry struct {
	key        sharedKey
	value      any
	holders    int         // guarded by sharedStore.mu
	started    atomic.Bool // a retiring state may release while a new one starts
	collectors []prometheus.Collector
}

// sharedStore holds the gateway's shared resources.
type sharedStore struct {
	mu       sync.Mutex
	m        map[sharedKey]*sharedEntry
	registry prometheus.Registerer
	creating *sharedEntry // the entry whose create runs (registrations go to it)
}

func (s *sharedStore) acquire(st *state, k sharedKey, create func() any) any {
	s.mu.Lock()
	e, ok := s.m[k]
	if !ok {
		if s.m == nil {
			s.m = map[sharedKey]*sharedEntry{}
		}
		e = &sharedEntry{key: k}
		s.m[k] = e
		outer := s.creating // create may itself share something
		s.creating = e
		s.mu.Unlock()
		e.value = create() // builds are serialized: no other acquire runs meanwhile
		s.mu.Lock()
		s.creating = outer
	}
	if !st.holds[e] {
		if st.holds == nil {
			st.holds = map[*sharedEntry]bool{}
		}
		st.holds[e] = true
		e.holders++
		st.held = append(st.held, e)
	}
	s.mu.Unlock()
	return e.value
}

// start starts the resources of a state that are not running yet, in the
// order the state took them. It stops at the first error: the caller then
// releases the state, which closes what this call started (and not the one
// that failed).
func (s *sharedStore) start(held []*sharedEntry) error {
	for _, e := range held {
		if e.started.Load() {
			continue
		}
		if st, ok := e.value.(Starter); ok {
			if err := st.Start(); err != nil {
				return fmt.Errorf("starting %s: %w", e.key.typ, err)
			}
		}
		e.started.Store(true)
	}
	return nil
}

// release lets go of a state's resources, closing those no other state holds.
func (s *sharedStore) release(held []*sharedEntry) error {
	var errs []error
	for _, e := range slices.Backward(held) {
		s.mu.Lock()
		e.holders--
		last := e.holders == 0
		if last {
			// Gone from the store and the registry at once: a config that
			// asks for the key from now on makes (and registers) a new one,
			// even while this one is still closing.
			delete(s.m, e.key)
			for _, c := range e.collectors {
				s.registry.Unregister(c)
			}
		}
		s.mu.Unlock()
		if !last {
			continue
		}
		if _, needsStart := e.value.(Starter); e.started.Load() || !needsStart {
			if err := closeValue(e.value); err != nil {
				errs = append(errs, fmt.Errorf("closing %s: %w", e.key.typ, err))
			}
		}
	}
	return errors.Join(errs...)
}

func closeValue(v any) error {
	if c, ok := v.(Closer); ok {
		return c.Close()
	}
	return nil
}

// Lifecycle of shared resources (see Share).
type (
	// Starter is a resource that runs something in the background (a token
	// refresher, a subscription).
	Starter interface{ Start() error }
	// Closer is a resource that holds something (connections, goroutines).
	Closer interface{ Close() error }
)

// sharedRegisterer is the Registerer plugins get: collectors registered
// while a shared resource is created belong to it.
type sharedRegisterer struct{ s *sharedStore }

func (r sharedRegisterer) Register(c prometheus.Collector) error {
	r.s.mu.Lock()
	e := r.s.creating
	r.s.mu.Unlock()
	if e == nil {
		return errors.New("proxy: register plugin collectors inside proxy.Share, so that they are released with it")
	}
	if err := r.s.registry.Register(c); err != nil {
		return err
	}
	e.collectors = append(e.collectors, c)
	return nil
}

func (r sharedRegisterer) MustRegister(cs ...prometheus.Collector) {
	for _, c := range cs {
		if err := r.Register(c); err != nil {
			panic(err)
		}
	}
}

func (r sharedRegisterer) Unregister(c prometheus.Collector) bool {
	return r.s.registry.Unregister(c)
}

// NewBuild returns a Build for a route of the given names outside any
// gateway, to test a plugin's parts on their own. release lets go of what
// the build shared, closing it (started resources are started by start).
func NewBuild(route, upstream string) (b *Build, start func() error, release func()) {
	g := &Gateway{metrics: NewMetrics()}
	g.shared.registry = g.metrics.Registry
	st := &state{shared: &g.shared, admin: map[string]AdminEndpoint{}, log: slog.New(slog.DiscardHandler)}
	u := &Upstream{Name: upstream}
	b = &Build{Route: &Route{Name: route, Upstream: u}, Upstream: u, Logger: st.log,
		Registerer: sharedRegisterer{&g.shared}, st: st}
	return b, func() error { return g.shared.start(st.held) }, func() { _ = g.shared.release(st.held) }
}
