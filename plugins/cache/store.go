package cache

import (
	"bytes"
	"hash/maphash"
	"log/slog"
	"math"
	"sync"
	"sync/atomic"
	"weak"

	"github.com/maypok86/otter/v2"
	"github.com/prometheus/client_golang/prometheus"
)

// Store is the process-wide cache: cache.shards otter caches bounded
// together by cache.max_size, shared by the cache plugin of every route and
// kept across reloads. Besides the entries it holds the tag index, the
// in-flight fills (request collapsing) and the invalidation fan-out.
//
// Entries are keyed by the full store key and their values are shared with
// readers without a copy: a value is never written after set stored it
// (set copies what it is given; get's callers only read), and one that is
// replaced or removed stays valid for the readers that hold it (the GC keeps
// it).
type Store struct {
	sh     []*otter.Cache[string, []byte]
	perSh  uint64 // each shard's bound, in weight (see entryWeight)
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

	stored atomic.Int64       // bytes of the entries stored (keys and values), see Bytes
	l2     atomic.Pointer[l2] // the shared tier invalidations reach, nil without one
	gen    atomic.Uint64      // counts invalidations applied: a fill that saw it change does not keep what it stored
}

// entryOverhead is what each entry is charged beyond its key and value
// toward cache.max_size: what otter keeps per entry besides them (its
// node, its hash table slot, its share of the frequency sketch). Measured
// with BenchmarkStoreGC: a full 256MiB store of values of exactly 4096
// bytes (a Go size class, so no rounding) holds 183 bytes of live heap per
// entry beyond key and value. The plugin charges an answer the same when
// it checks max_entry_size (storeAnswer, putL1), so an entry within
// max_entry_size always fits in a shard. Not counted: the rounding of each
// value's allocation up to its size class (up to an eighth of it).
const entryOverhead = 192

// entryWeight is what an entry counts toward its shard's bound.
func entryWeight(key string, val []byte) uint32 {
	return uint32(min(len(key)+len(val)+entryOverhead, math.MaxUint32))
}

// newStore makes the store for cc. It starts no goroutine: otter's
// maintenance (eviction) runs on the goroutine of the read or write that
// triggers it.
func newStore(cc *Section, m *metrics) *Store {
	s := &Store{m: m, tags: map[string]map[string]struct{}{}, flights: map[string]*flight{},
		refreshing: map[string]struct{}{}}
	s.shards = cc.StoreShards()
	if s.shards < 1 || s.shards > 1024 || s.shards&(s.shards-1) != 0 {
		s.shards = 1 // an invalid setting is reported by the config check
	}
	s.perSh = max(uint64(cc.MaxSize)/uint64(s.shards), 1)
	s.sh = make([]*otter.Cache[string, []byte], s.shards)
	for i := range s.sh {
		s.sh[i] = otter.Must(&otter.Options[string, []byte]{
			MaximumWeight: s.perSh,
			Weigher:       entryWeight,
			// Under the key's bucket lock, as part of the removal: the tag
			// index and Bytes never disagree with what the shard holds, and
			// no goroutine or executor is involved.
			OnAtomicDeletion: s.onRemove,
			// Maintenance (draining the read and write buffers, evicting)
			// runs on the calling goroutine: no goroutine per pass, and the
			// write that goes over the bound evicts before it returns (unless
			// another goroutine's pass holds the policy lock: then that pass
			// or the next read or write does).
			Executor: func(fn func()) { fn() },
		})
	}
	live.add(s)
	return s
}

// onRemove keeps the tag index, Bytes and the eviction count in step with
// the shards. It runs under the key's bucket lock: it takes only tagMu and
// calls no cache. A replacement's tags are handled by set, which knows the
// new value's tags too.
func (s *Store) onRemove(ev otter.DeletionEvent[string, []byte]) {
	if ev.Cause == otter.CauseOverflow {
		s.m.evictions.Inc()
	}
	s.stored.Add(-int64(len(ev.Key) + len(ev.Value)))
	if ev.Cause != otter.CauseReplacement {
		s.untag(ev.Key, ev.Value)
	}
}

// untag removes key from the tag index under the tags of its entry e.
func (s *Store) untag(key string, e []byte) {
	if len(e) == 0 || e[0] != kindResponse {
		return
	}
	var ent entry
	if decodeEntry(e, &ent) != nil || len(ent.tags) <= 2 {
		return
	}
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

// Keys are the full store keys: no digest, so no collision to guard
// against. The shard is chosen by a hash of the key (otter hashes it again
// for its own table).
var shardSeed = maphash.MakeSeed()

func (s *Store) shardOf(key []byte) *otter.Cache[string, []byte] {
	return s.sh[maphash.Bytes(shardSeed, key)&uint64(s.shards-1)]
}

func (s *Store) shardOfString(key string) *otter.Cache[string, []byte] {
	return s.sh[maphash.String(shardSeed, key)&uint64(s.shards-1)]
}

// get returns the entry under key, or nil. It allocates nothing: the
// lookup key is a view of key's bytes (otter keeps no lookup key), and the
// entry is returned without a copy. Callers must not write into it.
func (s *Store) get(key []byte) []byte {
	b, _ := s.shardOf(key).GetIfPresent(b2s(key))
	return b
}

func (s *Store) del(key string) bool {
	_, ok := s.shardOfString(key).Invalidate(key)
	return ok
}

// set stores a copy of val under key (callers may reuse val: some pass
// pooled buffers) and reports whether the store took it: it refuses an
// entry that does not fit in a shard. An entry taken may still be evicted
// by the shard's next maintenance (W-TinyLFU admission, see docs/plugins.md).
//
// The tag index is updated in the same atomic step as the entry, under
// the key's bucket lock, as onRemove does for removals: the old value's
// tags go and the new value's come, so that an eviction or a concurrent
// set of the key cannot leave the key indexed under tags it lacks, or its
// entry stored without its tags in the index (a purge by tag would miss it).
func (s *Store) set(key string, val []byte, tags []string) bool {
	if uint64(entryWeight(key, val)) > s.perSh {
		return false
	}
	own := make([]byte, len(val))
	copy(own, val)
	s.shardOfString(key).Compute(key, func(old []byte, found bool) ([]byte, otter.ComputeOp) {
		if found {
			s.untag(key, old) // onRemove (CauseReplacement) counts its bytes
		}
		s.stored.Add(int64(len(key) + len(own)))
		if len(tags) > 0 {
			s.tagMu.Lock()
			for _, t := range tags {
				set := s.tags[t]
				if set == nil {
					set = map[string]struct{}{}
					s.tags[t] = set
				}
				set[key] = struct{}{}
			}
			s.tagMu.Unlock()
		}
		return own, otter.WriteOp
	})
	return true
}

// Len is the number of entries (answers, variants and vary markers).
func (s *Store) Len() int {
	n := 0
	for _, c := range s.sh {
		n += c.EstimatedSize()
	}
	return n
}

// Capacity is the store's bound in bytes: cache.max_size (rounded down to
// a multiple of cache.shards). Entries count toward it with their key,
// their value and entryOverhead bytes each; it is not memory reserved in
// advance.
func (s *Store) Capacity() int { return int(s.perSh) * s.shards }

// Bytes is the size of the entries stored (keys, headers, bodies, tags).
func (s *Store) Bytes() int64 { return max(s.stored.Load(), 0) }

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

// apply removes what inv names and returns how many entries went. It does
// not publish: see invalidate.
func (s *Store) apply(inv *Invalidation) int {
	s.gen.Add(1)
	if inv.All {
		// Each entry goes through onRemove (CauseInvalidation): Bytes and
		// the tag index follow.
		n := s.Len()
		for _, c := range s.sh {
			c.InvalidateAll()
		}
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
			if s.del(k) {
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
// otter's iteration is weakly consistent: an entry stored during the walk
// may be missed, as one stored just after it would be.
func (s *Store) deleteMatching(match func(uri []byte) bool) int {
	var keys []string
	for _, c := range s.sh {
		for k, v := range c.All() {
			if uri := entryURI(v); uri != nil && match(uri) {
				keys = append(keys, k)
			}
		}
	}
	n := 0
	for _, k := range keys {
		if s.del(k) {
			n++
		}
	}
	return n
}

// invalidate applies inv to the shared tier (when it is local: the gateway
// it came from did that) and then locally, counts it, tells the hooks and
// publishes it to the other gateways of the cluster. The shared tier goes
// first: a miss here or on another gateway must not find there what was
// just removed from the store.
func (s *Store) invalidate(inv Invalidation) int {
	if inv.empty() {
		return 0
	}
	if l := s.l2.Load(); l != nil && !inv.Remote {
		l.invalidate(&inv)
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
			Help: "Entries evicted to stay within cache.max_size (W-TinyLFU: the least likely to be used again, or a new entry not admitted).",
		}),
	}
	for _, src := range invalidationSources {
		m.invalidations.WithLabelValues(src)
	}
	entries := prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Name: "sluice_cache_entries", Help: "Entries in the cache store (answers, variants and vary markers).",
	}, func() float64 { return float64(store().Len()) })
	bytes := prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Name: "sluice_cache_bytes", Help: "Size of the entries in the cache store, in bytes (keys, headers, bodies).",
	}, func() float64 { return float64(store().Bytes()) })
	capacity := prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Name: "sluice_cache_capacity_bytes", Help: "The cache store's size bound, in bytes (cache.max_size): entries count toward it with their key, value and 192 bytes each.",
	}, func() float64 { return float64(store().Capacity()) })
	for _, c := range []prometheus.Collector{m.requests, m.invalidations, m.evictions, entries, bytes, capacity} {
		_ = reg.Register(c)
	}
	return m
}
