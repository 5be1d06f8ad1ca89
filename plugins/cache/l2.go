package cache

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/redis/go-redis/v9"
	"github.com/sluice-gw/sluice/proxy"
	"github.com/valyala/fasthttp"
)

// The shared tier (L2): with cluster.redis and cache.shared (default), every
// gateway of the cluster looks in Redis after a miss in its own store (L1)
// and before calling the provider, and writes what it stores there too.
//
// Redis keys, all under cluster.redis.key_prefix + "cache:":
//
//	e:<d>   an entry: version byte, SHA-256 of the full store key, then the
//	        entry bytes as the store holds them (entry.go; vary markers too)
//	x:<d>   the entry's tombstone: set (to a unique value) by every purge of
//	        the entry, kept tombTTL; a write is refused when it changed since
//	        the writer's lookup, so a fetch that began before a purge cannot
//	        bring the purged answer back
//	l:<d>   the fill lock: the gateway fetching the entry from the provider
//	t:<h>   a tag's members (digests), also for the internal resource and
//	        URI tags; expires with the longest-lived member
//	epoch   changed by a purge of everything; writes check it as they
//	        check the tombstone
//
// <d> is the hex of the first 16 bytes of SHA-256(store key) (the store's
// own digest is seeded per process, so it cannot name a key for other
// gateways); <h> likewise of the tag. Values read from Redis are hostile
// input: an entry that does not carry the hash of the key asked for, or
// does not decode, is a miss (counted as corrupt).
//
// Redis slow or away: every call made for a request is bounded by
// cache.shared_timeout; an error or timeout marks the tier down for
// retryShared (calls skip it, and each skipped call is counted as a
// fallback), the outage is logged once, and so is the recovery. The L1 and
// the provider answer meanwhile: nothing becomes a 5xx.

const (
	l2Version = 1
	// retryShared is how long Redis is left alone after an error.
	retryShared = time.Second
	// tombTTL is how long a purge refuses writes of what it purged: longer
	// than any fetch in flight can last (a route's deadline).
	tombTTL = 10 * time.Minute
	// purgeTimeout bounds an invalidation's Redis calls (they run on the
	// request, admin or webhook goroutine that invalidates).
	purgeTimeout = time.Second
	// scanBudget bounds the walks of purges by prefix and of everything.
	scanBudget = 10 * time.Second
	// maxLockTTL caps the fill lock when the route has no deadline.
	maxLockTTL = 30 * time.Second
)

var errBadReply = errors.New("unexpected reply from Redis")

// lookupScript reads an entry, its tombstone, the primary key's tombstone
// and the epoch, and takes the fill lock when there is no entry and
// ARGV[1] (lock TTL, ms) is positive. A key of another type reads as none.
// KEYS: e, x, epoch, l, x(primary). ARGV: lock ms, lock token.
// Returns {entry or "", x, epoch, x(primary), lock}: lock is 1 when taken,
// 0 when another holds it, -1 when not tried.
var lookupScript = redis.NewScript(`
local function get(k)
  local v = redis.pcall('GET', k)
  if type(v) ~= 'string' then return '' end
  return v
end
local v = get(KEYS[1])
local got = -1
if v == '' and tonumber(ARGV[1]) > 0 then
  got = 0
  if redis.call('SET', KEYS[4], ARGV[2], 'NX', 'PX', ARGV[1]) then got = 1 end
end
return {v, get(KEYS[2]), get(KEYS[3]), get(KEYS[5]), got}
`)

// pollScript is a waiter's look: {entry or "", lock exists 0/1}.
// KEYS: e, l (the lock may be another key's: a vary marker's primary).
var pollScript = redis.NewScript(`
local v = redis.pcall('GET', KEYS[1])
if type(v) ~= 'string' then v = '' end
return {v, redis.call('EXISTS', KEYS[2])}
`)

// writeScript stores an entry unless a purge came since the writer's
// lookup (tombstones or epoch changed), adds it to its tag sets (which
// live at least as long), and releases the writer's lock. It also drops up
// to two members of each tag set whose entries are gone (expired or
// evicted), so that a tag written for ever does not grow for ever.
// KEYS: e, x, x(primary), epoch, l, tag sets... ARGV: value, ttl ms, seen
// x, seen x(primary), seen epoch, digest, lock token ("" for none), key
// prefix ("<prefix>cache:"). Returns 1 when stored, 0 when refused.
var writeScript = redis.NewScript(`
local function get(k)
  local v = redis.pcall('GET', k)
  if type(v) ~= 'string' then return '' end
  return v
end
local function unlock()
  if ARGV[7] ~= '' and get(KEYS[5]) == ARGV[7] then redis.call('DEL', KEYS[5]) end
end
if get(KEYS[2]) ~= ARGV[3] or get(KEYS[3]) ~= ARGV[4] or get(KEYS[4]) ~= ARGV[5] then
  unlock()
  return 0
end
local ttl = tonumber(ARGV[2])
redis.call('SET', KEYS[1], ARGV[1], 'PX', ttl)
for i = 6, #KEYS do
  if type(redis.pcall('SADD', KEYS[i], ARGV[6])) == 'number' then
    if redis.call('PTTL', KEYS[i]) < ttl then redis.call('PEXPIRE', KEYS[i], ttl) end
    for _, m in ipairs(redis.call('SRANDMEMBER', KEYS[i], 2)) do
      if redis.call('EXISTS', ARGV[8] .. 'e:' .. m) == 0 then redis.call('SREM', KEYS[i], m) end
    end
  end
end
unlock()
return 1
`)

// unlockScript releases a lock its holder still holds. KEYS: l. ARGV: token.
var unlockScript = redis.NewScript(`
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
`)

// purgeScript removes entries by digest (ARGV[4...]) and every member of
// the tag sets in KEYS (and the sets), setting each one's tombstone to
// ARGV[3] for ARGV[2] ms. ARGV[1] is the key prefix ("<prefix>cache:").
// Returns the number of entries removed.
var purgeScript = redis.NewScript(`
local n = 0
local function kill(d)
  n = n + redis.call('DEL', ARGV[1] .. 'e:' .. d)
  redis.call('SET', ARGV[1] .. 'x:' .. d, ARGV[3], 'PX', ARGV[2])
end
for i = 4, #ARGV do kill(ARGV[i]) end
for _, k in ipairs(KEYS) do
  local ms = redis.pcall('SMEMBERS', k)
  if type(ms) == 'table' and not ms.err then
    for _, d in ipairs(ms) do kill(d) end
  end
  redis.call('DEL', k)
end
return n
`)

// l2 is the shared tier of one gateway: the cluster's Redis client, the
// tier's health, and what it counts. One per cluster client and store.
type l2 struct {
	rdb    *redis.Client
	prefix string // cluster prefix + "cache:"
	store  *Store
	m      *l2Metrics
	token  string // this gateway's lock and purge tokens start with it
	seq    atomic.Uint64

	down      atomic.Bool
	downUntil atomic.Int64 // unix nanoseconds
	probing   atomic.Bool
	dirty     atomic.Bool // an invalidation did not reach Redis: flush it once back

	mu     sync.Mutex
	ctx    context.Context // ends at Close: background flushes stop
	cancel context.CancelFunc
	wg     sync.WaitGroup
}

func newL2(c *proxy.Cluster, s *Store, m *l2Metrics) *l2 {
	ctx, cancel := context.WithCancel(context.Background())
	return &l2{rdb: c.Redis, prefix: c.Key("cache:"), store: s, m: m,
		token: fmt.Sprintf("%s/%p/", c.NodeID, s), ctx: ctx, cancel: cancel}
}

// Start links the tier to the store (invalidations reach Redis), when the
// first config that uses it starts serving.
func (l *l2) Start() error {
	l.store.l2.Store(l)
	// Load the scripts (and open a connection) now rather than on the first
	// miss, whose shared_timeout a dial and EVALSHA, NOSCRIPT, EVAL could
	// exceed. Redis away at start is the ordinary fallback case.
	l.wg.Add(1)
	go func() {
		defer l.wg.Done()
		ctx, cancel := context.WithTimeout(l.ctx, 2*time.Second)
		defer cancel()
		for _, s := range []*redis.Script{lookupScript, pollScript, writeScript, unlockScript, purgeScript} {
			if s.Load(ctx, l.rdb).Err() != nil {
				return
			}
		}
	}()
	return nil
}

// Close unlinks it and waits for a flush in progress, once the last config
// that used it is retired.
func (l *l2) Close() error {
	l.store.l2.CompareAndSwap(l, nil)
	l.mu.Lock() // no flush starts after this
	l.cancel()
	l.mu.Unlock()
	l.wg.Wait()
	return nil
}

// l2Key names one store key in Redis.
type l2Key struct {
	sum [sha256.Size]byte
	hex string // hex of sum[:16]
}

func (l *l2) key(storeKey []byte) l2Key {
	k := l2Key{sum: sha256.Sum256(storeKey)}
	k.hex = hex.EncodeToString(k.sum[:16])
	return k
}

func (l *l2) entryKey(k *l2Key) string { return l.prefix + "e:" + k.hex }
func (l *l2) tombKey(k *l2Key) string  { return l.prefix + "x:" + k.hex }
func (l *l2) lockKey(k *l2Key) string  { return l.prefix + "l:" + k.hex }
func (l *l2) epochKey() string         { return l.prefix + "epoch" }
func (l *l2) tagKey(tag string) string {
	sum := sha256.Sum256([]byte(tag))
	return l.prefix + "t:" + hex.EncodeToString(sum[:16])
}

// uriTag is the internal tag of every entry recorded under a request URI
// (purges by keys use it in Redis; the store walks itself instead).
func uriTag(uri []byte) string { return "\x00uri\x00" + string(uri) }

// newToken returns a value no other lock or purge of the cluster uses.
func (l *l2) newToken() string { return l.token + strconv.FormatUint(l.seq.Add(1), 10) }

// wrap is the value stored in Redis for an entry of store key k.
func wrapShared(k *l2Key, entry []byte) []byte {
	v := make([]byte, 0, 1+len(k.sum)+len(entry))
	v = append(v, l2Version)
	v = append(v, k.sum[:]...)
	return append(v, entry...)
}

// unwrapShared returns the entry in a value read for k, or nil when the
// value is not one (garbage, another version, another key's entry).
func unwrapShared(k *l2Key, v []byte) []byte {
	if len(v) < 1+len(k.sum)+1 || v[0] != l2Version || !bytes.Equal(v[1:1+len(k.sum)], k.sum[:]) {
		return nil
	}
	return v[1+len(k.sum):]
}

// usable reports whether Redis may be called now: it is up, or it has been
// down for retryShared and this caller is the one that probes it.
func (l *l2) usable() bool {
	if !l.down.Load() {
		return true
	}
	if time.Now().UnixNano() < l.downUntil.Load() {
		return false
	}
	return l.probing.CompareAndSwap(false, true)
}

// failed records an error of a call for op (the caller falls back).
func (l *l2) failed(op string, err error) {
	l.m.fallback(op)
	l.downUntil.Store(time.Now().Add(retryShared).UnixNano())
	if !l.down.Swap(true) {
		l.store.logger().Warn("cache: the shared tier (Redis) does not answer; each gateway serves from its own store and the provider until it does",
			"op", op, "error", err.Error(), "retry_every", retryShared.String())
	}
	l.probing.Store(false)
}

// skipped counts a call for op not made because the tier is down.
func (l *l2) skipped(op string) { l.m.fallback(op) }

// ok records a call that Redis answered.
func (l *l2) ok() {
	if l.down.Load() && l.down.Swap(false) {
		l.store.logger().Info("cache: the shared tier (Redis) answers again")
	}
	l.probing.Store(false)
	if l.dirty.Load() {
		l.startFlush()
	}
}

// done reports the outcome of a call for op: ok, or failed.
func (l *l2) done(op string, err error) bool {
	if err != nil {
		l.failed(op, err)
		return false
	}
	l.ok()
	return true
}

// lookup is what a lookup found.
type lookup struct {
	entry []byte // the entry (or vary marker), checked; nil on a miss
	x, xp string // tombstones of the key and of the primary key, as seen
	epoch string
	// locked: this gateway now holds the fill lock; busy: another one
	// holds it (only on a miss, when the lookup asked for it).
	locked, busy bool
}

// get looks k up (with the tombstone of primary) within timeout, taking
// the fill lock for lockTTL on a miss when lockTTL > 0 (token in *token).
// ok is false when Redis did not answer (counted and logged).
func (l *l2) get(k, primary *l2Key, lockTTL, timeout time.Duration, token *string) (r lookup, ok bool) {
	if !l.usable() {
		l.skipped("get")
		return r, false
	}
	lockMS := int64(0)
	if lockTTL > 0 {
		lockMS = max(lockTTL.Milliseconds(), 1)
		*token = l.newToken()
	}
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	res, err := lookupScript.Run(ctx, l.rdb,
		[]string{l.entryKey(k), l.tombKey(k), l.epochKey(), l.lockKey(k), l.tombKey(primary)},
		lockMS, *token).Slice()
	cancel()
	if err == nil && len(res) != 5 {
		err = errBadReply
	}
	var v string
	var locked int64
	if err == nil {
		var ok1, ok2, ok3, ok4, ok5 bool
		v, ok1 = res[0].(string)
		r.x, ok2 = res[1].(string)
		r.epoch, ok3 = res[2].(string)
		r.xp, ok4 = res[3].(string)
		locked, ok5 = res[4].(int64)
		if !ok1 || !ok2 || !ok3 || !ok4 || !ok5 {
			err = errBadReply
		}
	}
	if !l.done("get", err) {
		return lookup{}, false
	}
	r.locked, r.busy = locked == 1, locked == 0
	if !r.locked {
		*token = ""
	}
	if v != "" {
		if r.entry = unwrapShared(k, []byte(v)); r.entry == nil || !validStored(r.entry) {
			r.entry = nil
			l.m.lookups[lkCorrupt].Inc()
		}
	}
	return r, true
}

// validStored reports whether b decodes as an entry or a vary marker.
func validStored(b []byte) bool {
	switch b[0] {
	case kindResponse:
		var e entry
		return decodeEntry(b, &e) == nil
	case kindVary:
		var v varyMarker
		return decodeVary(b, &v) == nil && validNames(v.names)
	}
	return false
}

// validNames checks an encoded list of names (a vary marker's).
func validNames(b []byte) bool {
	if len(b) < 2 {
		return false
	}
	n := int(b[0]) | int(b[1])<<8
	p := 2
	for range n {
		var ok bool
		if _, p, ok = read16(b, p); !ok {
			return false
		}
	}
	return p == len(b)
}

// poll is a waiter's look at k: the entry if it is there now, and whether
// lock's fill lock is still held. ok false: Redis did not answer.
func (l *l2) poll(k, lock *l2Key, timeout time.Duration) (entry []byte, held, ok bool) {
	if !l.usable() {
		l.skipped("wait")
		return nil, false, false
	}
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	res, err := pollScript.Run(ctx, l.rdb, []string{l.entryKey(k), l.lockKey(lock)}).Slice()
	cancel()
	var v string
	var n int64
	if err == nil {
		var ok1, ok2 bool
		if len(res) == 2 {
			v, ok1 = res[0].(string)
			n, ok2 = res[1].(int64)
		}
		if !ok1 || !ok2 {
			err = errBadReply
		}
	}
	if !l.done("wait", err) {
		return nil, false, false
	}
	if v != "" {
		if entry = unwrapShared(k, []byte(v)); entry == nil || !validStored(entry) {
			entry = nil
			l.m.lookups[lkCorrupt].Inc()
		}
	}
	return entry, n == 1, true
}

// write stores entry under k for ttl unless a purge came since the
// tombstones of k and primary and the epoch were read as seen* (see
// writeScript), with its tags, releasing token's lock. It reports
// whether Redis took it.
// lock names the fill lock token releases.
func (l *l2) write(k, primary *l2Key, seenX, seenXP, seenEpoch string, entry []byte, ttl time.Duration, tags []string, lock *l2Key, token string, timeout time.Duration) bool {
	if !l.usable() {
		l.skipped("set")
		return false
	}
	keys := make([]string, 0, 5+len(tags))
	keys = append(keys, l.entryKey(k), l.tombKey(k), l.tombKey(primary), l.epochKey(), l.lockKey(lock))
	for _, t := range tags {
		keys = append(keys, l.tagKey(t))
	}
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	n, err := writeScript.Run(ctx, l.rdb, keys, wrapShared(k, entry), max(ttl.Milliseconds(), 1000),
		seenX, seenXP, seenEpoch, k.hex, token, l.prefix).Int64()
	cancel()
	if !l.done("set", err) {
		return false
	}
	if n != 1 {
		l.m.writes[wrRefused].Inc()
		return false
	}
	l.m.writes[wrStored].Inc()
	return true
}

// unlock releases a fill lock still held (the holder stored nothing).
func (l *l2) unlock(k *l2Key, token string, timeout time.Duration) {
	if token == "" || !l.usable() {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	err := unlockScript.Run(ctx, l.rdb, []string{l.lockKey(k)}, token).Err()
	cancel()
	l.done("set", err)
}

// invalidate applies a local invalidation to Redis. One that cannot reach
// it (down, error) is counted and makes the tier dirty: the whole shared
// tier is flushed once Redis answers again, since it may hold what was
// purged meanwhile.
func (l *l2) invalidate(inv *Invalidation) {
	if !l.usable() {
		l.skipped("purge")
		l.dirty.Store(true)
		return
	}
	var err error
	if inv.All {
		err = l.flush(l.ctx)
	} else {
		err = l.purge(inv)
	}
	if err != nil && l.ctx.Err() == nil {
		l.dirty.Store(true)
	}
	l.done("purge", err)
}

// purge removes what inv names from Redis (everything but All).
func (l *l2) purge(inv *Invalidation) error {
	var tags []string
	args := []any{l.prefix, tombTTL.Milliseconds(), l.newToken()}
	for _, k := range inv.StoreKeys {
		d := l.key([]byte(k))
		args = append(args, d.hex)
	}
	for _, t := range inv.Tags {
		tags = append(tags, l.tagKey(t))
	}
	for _, r := range inv.Resources {
		tags = append(tags, l.tagKey(r.tag()))
	}
	for _, u := range inv.URIs {
		tags = append(tags, l.tagKey(uriTag([]byte(u))))
	}
	if len(args) > 3 || len(tags) > 0 {
		ctx, cancel := context.WithTimeout(l.ctx, purgeTimeout)
		err := purgeScript.Run(ctx, l.rdb, tags, args...).Err()
		cancel()
		if err != nil {
			return err
		}
	}
	if inv.Prefix != "" {
		return l.purgePrefix(inv.Prefix)
	}
	return nil
}

// purgePrefix walks the entries (SCAN) and purges those whose URI starts
// with prefix, reading only the start of each value. Bounded by scanBudget.
func (l *l2) purgePrefix(prefix string) error {
	ctx, cancel := context.WithTimeout(l.ctx, scanBudget)
	defer cancel()
	return l.scan(ctx, l.prefix+"e:*", func(keys []string) error {
		cmds := make([]*redis.StringCmd, len(keys))
		_, err := l.rdb.Pipelined(ctx, func(p redis.Pipeliner) error {
			for i, k := range keys {
				cmds[i] = p.GetRange(ctx, k, 0, uriRead)
			}
			return nil
		})
		if err != nil && !errors.Is(err, redis.Nil) {
			return err
		}
		args := []any{l.prefix, tombTTL.Milliseconds(), l.newToken()}
		for i, c := range cmds {
			v, _ := c.Bytes()
			if len(v) < 1+sha256.Size || v[0] != l2Version {
				continue
			}
			if uri := entryURI(v[1+sha256.Size:]); uri != nil && bytes.HasPrefix(uri, []byte(prefix)) {
				args = append(args, keys[i][len(l.prefix)+2:])
			}
		}
		if len(args) > 3 {
			return purgeScript.Run(ctx, l.rdb, nil, args...).Err()
		}
		return nil
	})
}

// How much of each entry purgePrefix reads (a GETRANGE end, inclusive):
// the version and key hash, the entry's head and a URI of up to 4 KiB. An
// entry with a longer URI is not matched by a prefix purge of the shared
// tier (docs/plugins.md says so).
const uriRead = 1 + sha256.Size + responseURIAt + 2 + 4096 - 1

// scan calls fn with each non-empty batch of the keys matching pattern
// (SCAN), until the walk ends, fn fails or ctx is done.
func (l *l2) scan(ctx context.Context, pattern string, fn func(keys []string) error) error {
	var cursor uint64
	for {
		keys, next, err := l.rdb.Scan(ctx, cursor, pattern, 1000).Result()
		if err != nil {
			return err
		}
		if len(keys) > 0 {
			if err := fn(keys); err != nil {
				return err
			}
		}
		if cursor = next; cursor == 0 {
			return nil
		}
	}
}

// flush removes every entry and tag set: the epoch changes first (a write
// begun before it is refused), then the keys go, bounded by scanBudget.
func (l *l2) flush(parent context.Context) error {
	ctx, cancel := context.WithTimeout(parent, scanBudget)
	defer cancel()
	if err := l.rdb.Set(ctx, l.epochKey(), l.newToken(), 0).Err(); err != nil {
		return err
	}
	for _, pattern := range []string{l.prefix + "e:*", l.prefix + "t:*"} {
		if err := l.scan(ctx, pattern, func(keys []string) error { return l.rdb.Unlink(ctx, keys...).Err() }); err != nil {
			return err
		}
	}
	return nil
}

// startFlush flushes the tier in the background after an outage during
// which invalidations were lost (once at a time).
func (l *l2) startFlush() {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.ctx.Err() != nil || !l.dirty.CompareAndSwap(true, false) {
		return
	}
	l.wg.Add(1)
	go func() {
		defer l.wg.Done()
		if err := l.flush(l.ctx); err != nil {
			if l.ctx.Err() == nil {
				l.dirty.Store(true)
				l.failed("purge", err)
			}
			return
		}
		l.store.logger().Warn("cache: flushed the shared tier (Redis): invalidations were lost while it did not answer")
	}()
}

// ttlFor is how long Redis keeps an entry: what is left of its freshness
// plus the longest stale window (the route's or the entry's), at least 1s.
func (c *Plugin) ttlFor(e *entry, now int64) time.Duration {
	left := e.lifetime - (e.initialAge + now - e.storedAt)
	return time.Duration(max(max(left, 0)+max(c.swr, e.swr, c.sie, e.sie), int64(time.Second)))
}

// Lookup results, the result label of sluice_cache_shared_lookups_total.
const (
	lkHit = iota
	lkStale
	lkMiss
	lkCorrupt
	numLookups
)

// Write results, the result label of sluice_cache_shared_writes_total.
const (
	wrStored = iota
	wrTooLarge
	wrRefused
	numWrites
)

// l2Metrics are the shared tier's collectors, once per process.
type l2Metrics struct {
	lookups     [numLookups]prometheus.Counter
	writes      [numWrites]prometheus.Counter
	waits       [2]prometheus.Counter // collapsed, through
	fallbacks   *prometheus.CounterVec
	fallbackOps sync.Map
}

func (m *l2Metrics) fallback(op string) {
	c, ok := m.fallbackOps.Load(op)
	if !ok {
		c, _ = m.fallbackOps.LoadOrStore(op, m.fallbacks.WithLabelValues(op))
	}
	c.(prometheus.Counter).Inc()
}

func newL2Metrics(reg prometheus.Registerer) *l2Metrics {
	lookups := prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "sluice_cache_shared_lookups_total",
		Help: "Lookups in the shared tier (Redis) after a miss in the gateway's own store, by result (hit, stale, miss, corrupt).",
	}, []string{"result"})
	writes := prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "sluice_cache_shared_writes_total",
		Help: "Entries offered to the shared tier, by result (stored, too_large: over cache.shared_max_entry_size, refused: purged while it was fetched).",
	}, []string{"result"})
	waits := prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "sluice_cache_shared_waits_total",
		Help: "Misses that waited for another gateway's fetch of the same entry, by outcome (collapsed: answered from it, through: called the provider).",
	}, []string{"result"})
	m := &l2Metrics{fallbacks: prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "sluice_cache_shared_fallback_total",
		Help: "Calls to the shared tier that Redis did not answer in time (or skipped while it is down), by operation (get, set, wait, purge).",
	}, []string{"op"})}
	for i, n := range []string{"hit", "stale", "miss", "corrupt"} {
		m.lookups[i] = lookups.WithLabelValues(n)
	}
	for i, n := range []string{"stored", "too_large", "refused"} {
		m.writes[i] = writes.WithLabelValues(n)
	}
	for i, n := range []string{"collapsed", "through"} {
		m.waits[i] = waits.WithLabelValues(n)
	}
	for _, op := range []string{"get", "set", "wait", "purge"} {
		m.fallbacks.WithLabelValues(op)
	}
	for _, c := range []prometheus.Collector{lookups, writes, waits, m.fallbacks} {
		_ = reg.Register(c)
	}
	return m
}

// Cache-Status with the shared tier (RFC 9211: the cache nearest the
// origin first): its member, then the store's.
var (
	csSharedHit          = []byte("sluice-shared; hit, sluice; fwd=miss; stored")
	csSharedHitNotStored = []byte("sluice-shared; hit, sluice; fwd=miss")
	csSharedCollapsed    = []byte("sluice-shared; hit; detail=collapsed, sluice; fwd=miss; stored")
	csSharedCollapsedNS  = []byte("sluice-shared; hit; detail=collapsed, sluice; fwd=miss")
	csSharedOverStale    = []byte("sluice-shared; hit, sluice; fwd=stale; stored")
	csSharedOverStaleNS  = []byte("sluice-shared; hit, sluice; fwd=stale")
	csSharedMiss         = []byte("sluice-shared; fwd=miss, ")
	csSharedMissStored   = []byte("sluice-shared; fwd=miss; stored, ")
	csSharedStale        = []byte("sluice-shared; fwd=stale, ")
	csSharedStaleStored  = []byte("sluice-shared; fwd=stale; stored, ")
	csSharedUnavailable  = []byte("sluice-shared; detail=unavailable, ")
)

// fillState is what a fill or revalidation learned from the shared tier.
type fillState struct {
	asked     bool   // Redis answered the lookup: the answer may be written
	down      bool   // it did not (Cache-Status says so)
	fromStale bool   // it held a stale entry
	k, p      l2Key  // the entry's key and the primary key
	r         lookup // guards seen
	token     string // the fill lock held, until a write releases it
}

// sharedStatus returns the Cache-Status for an answer the store's member l1
// describes, with the shared tier's member first.
func (c *Plugin) sharedStatus(st *fillState, l1 []byte, stored bool) []byte {
	var pre []byte
	switch {
	case c.l2 == nil || st == nil:
		return l1
	case st.down:
		pre = csSharedUnavailable
	case !st.asked:
		return l1
	case st.fromStale && stored:
		pre = csSharedStaleStored
	case st.fromStale:
		pre = csSharedStale
	case stored:
		pre = csSharedMissStored
	default:
		pre = csSharedMiss
	}
	return append(append(make([]byte, 0, len(pre)+len(l1)), pre...), l1...)
}

// lockTTL is how long a fill lock may be held: the route's deadline (the
// fetch cannot last longer), at most maxLockTTL; 0 when this gateway does
// not collapse across gateways.
func (c *Plugin) lockTTL(ex *proxy.Exchange) time.Duration {
	if c.l2Wait <= 0 {
		return 0
	}
	return max(min(ex.Remaining(), maxLockTTL), 0)
}

// fillShared looks a store miss up in the shared tier. done: the request
// was answered (a hit, or a stale entry revalidated), with err. Otherwise
// st says what the provider's answer may be written under, and *key and
// *varied follow a vary marker found there.
func (c *Plugin) fillShared(ctx *fasthttp.RequestCtx, ex *proxy.Exchange, next proxy.Handler, kb *keyBuf, key *[]byte, varied *bool, st *fillState) (done bool, err error) {
	gen := c.store.gen.Load()
	st.p = c.l2.key(kb.key)
	st.k = st.p
	if *varied {
		st.k = c.l2.key(*key)
	}
	lockTTL := c.lockTTL(ex)
	r, ok := c.l2.get(&st.k, &st.p, lockTTL, c.l2Timeout, &st.token)
	if !ok {
		st.down = true
		return false, nil
	}
	if !*varied && r.entry != nil && r.entry[0] == kindVary {
		var v varyMarker
		_ = decodeVary(r.entry, &v) // checked by get
		c.putL1(kb.key, r.entry, nil, gen)
		variantKey(ctx, kb, &v)
		*key, *varied = kb.vkey, true
		st.k = c.l2.key(kb.vkey)
		if r, ok = c.l2.get(&st.k, &st.p, lockTTL, c.l2Timeout, &st.token); !ok {
			st.down = true
			return false, nil
		}
	}
	st.r, st.asked = r, true
	if r.entry != nil && r.entry[0] == kindResponse {
		return c.sharedAnswer(ctx, ex, next, kb, *key, r.entry, st, gen, false)
	}
	c.l2.m.lookups[lkMiss].Inc()
	if r.busy {
		// Another gateway holds the lock: it is fetching this entry.
		if b := c.waitShared(ctx, ex, kb, st, key, varied, gen); b != nil {
			return c.sharedAnswer(ctx, ex, next, kb, *key, b, st, gen, true)
		}
	}
	return false, nil
}

// sharedAnswer answers from an entry the shared tier held: it goes into the
// store, and is served when fresh or revalidated when stale.
func (c *Plugin) sharedAnswer(ctx *fasthttp.RequestCtx, ex *proxy.Exchange, next proxy.Handler, kb *keyBuf, key, b []byte, st *fillState, gen uint64, collapsed bool) (bool, error) {
	var e entry
	if decodeEntry(b, &e) != nil {
		return false, nil // checked by get and poll
	}
	inL1 := c.putL1(key, b, entryTagList(&e), gen)
	age := e.initialAge + time.Now().UnixNano() - e.storedAt
	if age < e.lifetime && e.flags&flagNoCache == 0 {
		cs := csSharedHit
		switch {
		case collapsed && inL1:
			c.results[resCollapsed].Inc()
			cs = csSharedCollapsed
		case collapsed:
			c.results[resCollapsed].Inc()
			cs = csSharedCollapsedNS
		case inL1:
			c.results[resHit].Inc()
		default:
			c.results[resHit].Inc()
			cs = csSharedHitNotStored
		}
		if !collapsed {
			c.l2.m.lookups[lkHit].Inc()
		}
		serveHit(ctx, ex, &e, age, cs)
		return true, nil
	}
	c.l2.m.lookups[lkStale].Inc()
	st.fromStale = true
	return true, c.revalidate(ctx, ex, next, kb, key, b, false, st)
}

// entryTagList returns the tags of a decoded entry.
func entryTagList(e *entry) []string {
	var tags []string
	forEachTag(e.tags, func(t []byte) { tags = append(tags, string(t)) })
	return tags
}

// waitShared waits (at most cache.shared_wait, never past the route's
// deadline) for the gateway holding st.k's fill lock to store the entry,
// and returns it; nil when it stored nothing, let the lock go, or took too
// long. When it stores a vary marker, the wait goes on for this request's
// variant (*key and *varied follow).
func (c *Plugin) waitShared(ctx *fasthttp.RequestCtx, ex *proxy.Exchange, kb *keyBuf, st *fillState, key *[]byte, varied *bool, gen uint64) []byte {
	k := st.k
	deadline := time.Now().Add(min(c.l2Wait, ex.Remaining()))
	pause := 5 * time.Millisecond
	for {
		d := time.Until(deadline)
		if d <= 0 {
			break
		}
		if pause > 0 {
			time.Sleep(min(pause, d))
		}
		pause = min(max(pause*2, 5*time.Millisecond), 50*time.Millisecond)
		b, held, ok := c.l2.poll(&k, &st.k, c.l2Timeout)
		if !ok {
			break
		}
		if b != nil && b[0] == kindResponse {
			c.l2.m.waits[0].Inc()
			return b
		}
		if b != nil && b[0] == kindVary && !*varied {
			var v varyMarker
			_ = decodeVary(b, &v) // checked by poll
			c.putL1(kb.key, b, nil, gen)
			variantKey(ctx, kb, &v)
			*key, *varied = kb.vkey, true
			k = c.l2.key(kb.vkey)
			pause = 0 // the variant may be there already
			continue
		}
		if !held {
			break
		}
	}
	c.l2.m.waits[1].Inc()
	return nil
}

// revalidateShared asks the shared tier, before revalidating a stale entry
// of the store with the provider, whether another gateway has a fresh one;
// if so it takes it (and answers with it, unless background). true: done.
func (c *Plugin) revalidateShared(ctx *fasthttp.RequestCtx, ex *proxy.Exchange, kb *keyBuf, key []byte, background bool, st *fillState) bool {
	gen := c.store.gen.Load()
	st.p = c.l2.key(kb.key)
	st.k = c.l2.key(key)
	r, ok := c.l2.get(&st.k, &st.p, 0, c.l2Timeout, &st.token)
	if !ok {
		st.down = true
		return false
	}
	st.r, st.asked = r, true
	var e entry
	if r.entry == nil || r.entry[0] != kindResponse || decodeEntry(r.entry, &e) != nil {
		c.l2.m.lookups[lkMiss].Inc()
		return false
	}
	age := e.initialAge + time.Now().UnixNano() - e.storedAt
	if age >= e.lifetime || e.flags&flagNoCache != 0 {
		c.l2.m.lookups[lkStale].Inc()
		st.fromStale = true
		return false
	}
	c.l2.m.lookups[lkHit].Inc()
	inL1 := c.putL1(key, r.entry, entryTagList(&e), gen)
	if background {
		return true
	}
	c.results[resHit].Inc()
	cs := csSharedOverStale
	if !inL1 {
		cs = csSharedOverStaleNS
	}
	serveHit(ctx, ex, &e, age, cs)
	return true
}

// putL1 stores an entry read from the shared tier in the store, unless it
// is over max_entry_size or an invalidation was applied since gen (it may
// have been read before the shared tier was purged).
func (c *Plugin) putL1(key, b []byte, tags []string, gen uint64) bool {
	if len(b)+len(key)+entryOverhead > c.maxEntry || !c.store.set(string(key), b, tags) {
		return false
	}
	return c.keepStoredKey(key, gen)
}

// keepStored reports whether what storeResponse just stored under kb may
// stay: not when an invalidation was applied since gen, when the fetch
// began (the answer may predate what the invalidation announced). It
// removes it then.
func (c *Plugin) keepStored(kb *keyBuf, gen uint64) bool {
	return c.keepStoredKey(kb.key, gen)
}

func (c *Plugin) keepStoredKey(key []byte, gen uint64) bool {
	if c.store.gen.Load() == gen {
		return true
	}
	c.store.del(string(key)) // the entry, or the vary marker (its variants go with it)
	return false
}

// publishShared writes what the store now holds for kb (a vary marker and
// its variant, or an entry) to the shared tier, guarded by what st's lookup
// saw. It reports whether the entry was stored there.
func (c *Plugin) publishShared(ctx *fasthttp.RequestCtx, kb *keyBuf, st *fillState) bool {
	if c.l2 == nil || st == nil || !st.asked {
		return false
	}
	b := c.store.get(kb.key)
	if b == nil {
		return false
	}
	now := time.Now().UnixNano()
	if b[0] == kindVary {
		var v varyMarker
		if decodeVary(b, &v) != nil {
			return false
		}
		marker := b
		variantKey(ctx, kb, &v)
		eb := c.store.get(kb.vkey)
		var e entry
		if eb == nil || decodeEntry(eb, &e) != nil || !c.fitsShared(eb) {
			return false
		}
		ttl := c.ttlFor(&e, now)
		vk := c.l2.key(kb.vkey)
		// The marker is guarded by the primary key's tombstone; the variant
		// by its own when it was looked up (a new variant has none yet).
		seenX := ""
		if vk.hex == st.k.hex {
			seenX = st.r.x
		}
		// The lock (the primary's or the variant's) goes with the last
		// write: a waiter that sees the marker polls the variant until then.
		if !c.l2.write(&st.p, &st.p, st.r.xp, st.r.xp, st.r.epoch, marker, ttl, []string{uriTag(v.uri)}, &st.k, "", c.l2Timeout) {
			return false
		}
		return c.l2.write(&vk, &st.p, seenX, st.r.xp, st.r.epoch, eb, ttl, append(entryTagList(&e), uriTag(e.uri)), &st.k, c.takeToken(st), c.l2Timeout)
	}
	var e entry
	if decodeEntry(b, &e) != nil || !c.fitsShared(b) {
		return false
	}
	return c.l2.write(&st.p, &st.p, st.r.xp, st.r.xp, st.r.epoch, b, c.ttlFor(&e, now), append(entryTagList(&e), uriTag(e.uri)), &st.k, c.takeToken(st), c.l2Timeout)
}

// unlockFill releases the fill lock if no write released it.
func (c *Plugin) unlockFill(st *fillState) {
	if st.token != "" {
		c.l2.unlock(&st.k, st.token, c.l2Timeout)
	}
}

// takeToken hands the fill lock to a write (which releases it, stored or
// refused).
func (c *Plugin) takeToken(st *fillState) string {
	t := st.token
	st.token = ""
	return t
}

// fitsShared reports whether an entry is small enough for the shared tier
// (counted when not).
func (c *Plugin) fitsShared(b []byte) bool {
	if 1+sha256.Size+len(b) > c.l2Max {
		c.l2.m.writes[wrTooLarge].Inc()
		return false
	}
	return true
}
