package cache

import (
	"bytes"
	"context"
	"encoding/binary"
	"hash/maphash"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"
	"weak"

	"github.com/allegro/bigcache/v3"
	"github.com/prometheus/client_golang/prometheus"
)

// Store is the process-wide cache: one bigcache sized by cache.max_size,
// shared by the cache plugin of every route and kept across reloads. Besides
// the entries it holds the tag index, the in-flight fills (request
// collapsing) and the invalidation fan-out.
type Store struct {
	bc     *bigcache.BigCache
	log    atomic.Pointer[slog.Logger]
	m      *metrics
	shards int

	tagMu sync.Mutex
	tags  map[string]map[string]struct{} // tag -> store keys

	flightMu   sync.Mutex
	flights    map[string]*flight
	refreshing map[string]struct{} // keys with a background refresh running

	pubMu sync.Mutex
	pub   *subscriber // the cluster link in use, nil in single-node mode

	gate fillGate // invalidations vs. warm fills in flight (gate.go)
}

// newStore makes the store for cc. It starts no goroutine.
func newStore(cc *Section, m *metrics) *Store {
	s := &Store{m: m, tags: map[string]map[string]struct{}{}, flights: map[string]*flight{},
		refreshing: map[string]struct{}{}}
	s.shards = cc.StoreShards()
	if s.shards < 1 || s.shards > 1024 || s.shards&(s.shards-1) != 0 {
		s.shards = 1 // an invalid setting is reported by the config check
	}
	mb := int(cc.MaxSize >> 20)
	bc, err := bigcache.New(context.Background(), bigcache.Config{
		Shards:             s.shards,
		LifeWindow:         100 * 365 * 24 * time.Hour, // freshness is ours; bigcache only evicts for space
		CleanWindow:        0,                          // no cleanup goroutine
		MaxEntriesInWindow: s.shards * 16,
		MaxEntrySize:       4096,
		HardMaxCacheSize:   max(mb, 1),
		Verbose:            false,
		OnRemoveWithReason: s.onRemove,
	})
	if err != nil {
		panic("cache: " + err.Error()) // unreachable: every input is sanitized above
	}
	s.bc = bc
	live.add(s)
	return s
}

// onRemove keeps the tag index and the eviction count in step with
// bigcache. It runs under a shard lock: it takes only tagMu.
func (s *Store) onRemove(key string, e []byte, reason bigcache.RemoveReason) {
	if reason == bigcache.NoSpace {
		s.m.evictions.Inc()
	}
	e = unwrap(e)
	if len(e) > 0 && e[0] == kindResponse {
		var ent entry
		if decodeEntry(e, &ent) == nil && len(ent.tags) > 2 {
			s.tagMu.Lock()
			forEachTag(ent.tags, func(t []byte) {
				if set := s.tags[string(t)]; set != nil {
					delete(set, key)
					if len(set) == 0 {
						delete(s.tags, string(t))
					}
				}
			})
			s.tagMu.Unlock()
		}
	}
}

// Keys in bigcache are 16-byte digests of the full key (bigcache copies a
// key longer than 32 bytes to compare it); the full key is stored at the
// start of the value and compared on every get, so that a digest collision
// is a miss, never a wrong answer.
var seed1, seed2 = maphash.MakeSeed(), maphash.MakeSeed()

func digest(key []byte, d *[16]byte) string {
	binary.LittleEndian.PutUint64(d[:8], maphash.Bytes(seed1, key))
	binary.LittleEndian.PutUint64(d[8:], maphash.Bytes(seed2, key))
	return b2s(d[:])
}

// get returns a copy of the entry under key (bigcache copies it, and the
// key it compares). d is scratch space that may escape (a pooled buffer).
func (s *Store) get(key []byte, d *[16]byte) []byte {
	b, err := s.bc.Get(digest(key, d))
	if err != nil {
		return nil
	}
	full, val, ok := read16(b, 0)
	if !ok || !bytes.Equal(full, key) {
		return nil
	}
	return b[val:]
}

// unwrap returns the entry of a stored value (without its full key).
func unwrap(b []byte) []byte {
	if _, p, ok := read16(b, 0); ok {
		return b[p:]
	}
	return nil
}

func (s *Store) del(key string) bool {
	var d [16]byte
	return s.bc.Delete(digest([]byte(key), &d)) == nil
}

// set stores val under key and reports whether bigcache took it (it
// refuses an entry that does not fit in a shard).
func (s *Store) set(key string, val []byte, tags []string) bool {
	var d [16]byte
	dk := string(digest([]byte(key), &d))
	wrapped := make([]byte, 0, 2+len(key)+len(val))
	wrapped = appendBytes16(wrapped, []byte(key))
	if err := s.bc.Set(dk, append(wrapped, val...)); err != nil {
		return false
	}
	if len(tags) == 0 {
		return true
	}
	s.tagMu.Lock()
	for _, t := range tags {
		set := s.tags[t]
		if set == nil {
			set = map[string]struct{}{}
			s.tags[t] = set
		}
		set[dk] = struct{}{}
	}
	s.tagMu.Unlock()
	return true
}

// Len is the number of entries (answers, variants and vary markers).
func (s *Store) Len() int { return s.bc.Len() }

// Capacity is the memory the store's queues hold, in bytes.
func (s *Store) Capacity() int { return s.bc.Capacity() }

// Invalidation describes one invalidation, as applied by every gateway of a
// cluster and reported to OnInvalidate hooks. Several fields may be set;
// the entries matching any of them are removed.
type Invalidation struct {
	// Source is what caused it: "method" (an unsafe request passed through),
	// "rule" (an invalidate rule), "admin" (POST /admin/cache/purge),
	// "webhook", "hook" (Invalidate called from Go), "resync" (a cluster
	// subscription came back after a loss: everything was dropped).
	Source string `json:"source"`
	// StoreKeys are exact store keys (see README: upstream, path and query,
	// partition), as unsafe methods compute them.
	StoreKeys []string `json:"store_keys,omitempty"`
	// URIs are request URIs as entries record them: the path as callers
	// send it to Sluice and the query as the route keys it (query, sorted).
	// Every entry recorded under one of them is removed, whatever its
	// partition or variant.
	URIs []string `json:"uris,omitempty"`
	// Resources removes every entry of an upstream resource, whichever
	// route stored it, whatever its query, partition or variant (unsafe
	// methods use it: routes never share entries, but one route's POST
	// changes what every route to that upstream would answer).
	Resources []Resource `json:"resources,omitempty"`
	// Prefix removes every entry whose request URI starts with it.
	Prefix string `json:"prefix,omitempty"`
	// Tags removes every entry carrying one of them.
	Tags []string `json:"tags,omitempty"`
	// All removes everything.
	All bool `json:"all,omitempty"`
	// Remote is true when the invalidation came from another gateway.
	Remote bool `json:"-"`
}

// Resource names an upstream resource: the upstream and the path relative
// to its base URL (after the route's strip_prefix), without the query.
type Resource struct {
	Upstream string `json:"upstream"`
	Path     string `json:"path"`
}

// tag is the internal tag of the resource's entries in the tag index (the
// NUL keeps it apart from every tag a config, a provider or an admin names).
func (r Resource) tag() string { return resourceTag(r.Upstream, r.Path) }

func resourceTag(upstream, path string) string { return "\x00res\x00" + upstream + "\x00" + path }

func (inv *Invalidation) empty() bool {
	return len(inv.StoreKeys) == 0 && len(inv.Resources) == 0 && len(inv.URIs) == 0 && inv.Prefix == "" && len(inv.Tags) == 0 && !inv.All
}

// remove removes what inv names and returns how many entries went. Use
// apply (gate.go), which also tells the fills in flight.
func (s *Store) remove(inv *Invalidation) int {
	if inv.All {
		n := s.bc.Len()
		_ = s.bc.Reset()
		s.tagMu.Lock()
		clear(s.tags)
		s.tagMu.Unlock()
		return n
	}
	n := 0
	for _, k := range inv.StoreKeys {
		if s.del(k) {
			n++
		}
	}
	if len(inv.Tags) > 0 || len(inv.Resources) > 0 {
		var keys []string
		s.tagMu.Lock()
		for _, t := range inv.Tags {
			for k := range s.tags[t] {
				keys = append(keys, k)
			}
		}
		for _, r := range inv.Resources {
			for k := range s.tags[r.tag()] {
				keys = append(keys, k)
			}
		}
		s.tagMu.Unlock()
		for _, k := range keys {
			if s.bc.Delete(k) == nil {
				n++
			}
		}
	}
	if len(inv.URIs) > 0 || inv.Prefix != "" {
		n += s.deleteMatching(func(uri []byte) bool {
			if inv.Prefix != "" && bytes.HasPrefix(uri, []byte(inv.Prefix)) {
				return true
			}
			for _, u := range inv.URIs {
				if string(uri) == u {
					return true
				}
			}
			return false
		})
	}
	return n
}

// deleteMatching walks the whole store (admin and webhook paths only).
func (s *Store) deleteMatching(match func(uri []byte) bool) int {
	var keys []string
	it := s.bc.Iterator()
	for it.SetNext() {
		ei, err := it.Value()
		if err != nil {
			continue
		}
		if uri := entryURI(unwrap(ei.Value())); uri != nil && match(uri) {
			keys = append(keys, ei.Key())
		}
	}
	n := 0
	for _, k := range keys {
		if s.bc.Delete(k) == nil {
			n++
		}
	}
	return n
}

// invalidate applies inv locally, counts it, tells the hooks and publishes
// it to the other gateways of the cluster.
func (s *Store) invalidate(inv Invalidation) int {
	if inv.empty() {
		return 0
	}
	n := s.apply(&inv)
	if inv.Remote {
		s.m.invalidation("cluster")
	} else {
		s.m.invalidation(inv.Source)
	}
	runHooks(inv)
	if !inv.Remote {
		s.pubMu.Lock()
		sub := s.pub
		s.pubMu.Unlock()
		if sub != nil {
			sub.publish(&inv)
		}
	}
	return n
}

// logger returns the logger of the config that last built a cache plugin.
func (s *Store) logger() *slog.Logger {
	if l := s.log.Load(); l != nil {
		return l
	}
	return slog.Default()
}

// Hooks for embedders.
var (
	hookMu sync.RWMutex
	hooks  []*func(Invalidation)
)

// OnInvalidate registers fn to be called after every invalidation a
// gateway of this process applies (local, from the admin API, webhooks,
// unsafe methods, rules, or from other gateways of the cluster). fn runs on
// the goroutine that invalidates (a request's, the admin API's, or the
// cluster subscriber's): keep it short. The returned func unregisters it.
func OnInvalidate(fn func(Invalidation)) (cancel func()) {
	p := &fn
	hookMu.Lock()
	hooks = append(hooks, p)
	hookMu.Unlock()
	return func() {
		hookMu.Lock()
		defer hookMu.Unlock()
		for i, h := range hooks {
			if h == p {
				hooks = append(hooks[:i:i], hooks[i+1:]...)
				return
			}
		}
	}
}

func runHooks(inv Invalidation) {
	hookMu.RLock()
	hs := hooks
	hookMu.RUnlock()
	for _, h := range hs {
		(*h)(inv)
	}
}

// Invalidate applies inv (Source defaults to "hook") to the cache of every
// gateway in this process, and publishes it to their clusters. It returns
// the number of entries removed.
func Invalidate(inv Invalidation) int {
	if inv.Source == "" {
		inv.Source = "hook"
	}
	inv.Remote = false
	n := 0
	for _, s := range live.all() {
		n += s.invalidate(inv)
	}
	return n
}

// live lists the stores of this process (one per gateway) for Invalidate.
var live storeList

type storeList struct {
	mu sync.Mutex
	l  []weak.Pointer[Store] // weak: a gateway that is gone takes its store along
}

func (l *storeList) add(s *Store) {
	l.mu.Lock()
	l.l = append(l.l, weak.Make(s))
	l.mu.Unlock()
}

func (l *storeList) all() []*Store {
	l.mu.Lock()
	defer l.mu.Unlock()
	var out []*Store
	kept := l.l[:0]
	for _, w := range l.l {
		if s := w.Value(); s != nil {
			out = append(out, s)
			kept = append(kept, w)
		}
	}
	l.l = kept
	return out
}

// metrics are the cache's collectors, registered once per process.
type metrics struct {
	requests      *prometheus.CounterVec
	invalidations *prometheus.CounterVec
	evictions     prometheus.Counter
	byInv         sync.Map // source -> prometheus.Counter
}

func (m *metrics) invalidation(source string) {
	c, ok := m.byInv.Load(source)
	if !ok {
		c, _ = m.byInv.LoadOrStore(source, m.invalidations.WithLabelValues(source))
	}
	c.(prometheus.Counter).Inc()
}

var invalidationSources = []string{"method", "rule", "admin", "webhook", "hook", "resync", "cluster"}

func newMetrics(reg prometheus.Registerer, store func() *Store) *metrics {
	m := &metrics{
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "sluice_cache_requests_total",
			Help: "Requests seen by the cache, by route and result (hit, miss, stale, bypass, revalidated, collapsed).",
		}, []string{"route", "result"}),
		invalidations: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "sluice_cache_invalidations_total",
			Help: "Invalidations applied, by source (method, rule, admin, webhook, hook, cluster, resync).",
		}, []string{"source"}),
		evictions: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "sluice_cache_evictions_total",
			Help: "Entries evicted to make room (cache.max_size reached).",
		}),
	}
	for _, src := range invalidationSources {
		m.invalidations.WithLabelValues(src)
	}
	entries := prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Name: "sluice_cache_entries", Help: "Entries in the cache store (answers, variants and vary markers).",
	}, func() float64 { return float64(store().Len()) })
	bytes := prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Name: "sluice_cache_bytes", Help: "Memory held by the cache store's queues, in bytes (bounded by cache.max_size).",
	}, func() float64 { return float64(store().Capacity()) })
	for _, c := range []prometheus.Collector{m.requests, m.invalidations, m.evictions, entries, bytes} {
		_ = reg.Register(c)
	}
	return m
}
