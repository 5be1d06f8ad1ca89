package cache

import (
	"bytes"
	"fmt"
	"math/rand/v2"
	"net"
	"slices"
	"strings"
	"sync/atomic"
	"time"
	"unsafe"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/sluice-gw/sluice/proxy"
	"github.com/sluice-gw/sluice/proxy/config"
	"github.com/sluice-gw/sluice/proxy/httpx"
	"github.com/valyala/fasthttp"
	"go.opentelemetry.io/otel/attribute"
)

// Factory registers the plugin.
var Factory = proxy.Define("cache", build, proxy.WithSection[Section]("cache"))

// Results of a request, the result label of sluice_cache_requests_total.
const (
	resHit = iota
	resMiss
	resStale
	resBypass
	resRevalidated
	resCollapsed
	numResults
)

var resultNames = [numResults]string{"hit", "miss", "stale", "bypass", "revalidated", "collapsed"}

// Cache-Status values (RFC 9211).
var (
	csHit           = []byte("sluice; hit")
	csMissStored    = []byte("sluice; fwd=miss; stored")
	csMiss          = []byte("sluice; fwd=miss")
	csVaryMiss      = []byte("sluice; fwd=vary-miss")
	csVaryMissStore = []byte("sluice; fwd=vary-miss; stored")
	csBypass        = []byte("sluice; fwd=bypass")
	csSWR           = []byte("sluice; hit; detail=stale-while-revalidate")
	csSIE           = []byte("sluice; fwd=stale; detail=stale-if-error")
	csRevalidated   = []byte("sluice; fwd=stale; fwd-status=304")
	csStaleStored   = []byte("sluice; fwd=stale; stored")
	csStale         = []byte("sluice; fwd=stale")
	csCollapsed     = []byte("sluice; hit; detail=collapsed")
	csMaxStale      = []byte("sluice; hit; detail=max-stale")

	// Names the cache reads and writes on every call, normalized once (see
	// httpx.Name); the str forms are for comparisons that ignore case.
	hdrCacheStatus     = httpx.NewName("Cache-Status")
	hdrAge             = httpx.NewName("Age")
	hdrAuthorization   = httpx.NewName("Authorization")
	hdrIfNoneMatch     = httpx.NewName("If-None-Match")
	hdrIfModifiedSince = httpx.NewName("If-Modified-Since")
	hdrETag            = httpx.NewName("ETag")
	hdrLastModified    = httpx.NewName("Last-Modified")
	hdrContentRange    = httpx.NewName("Content-Range")
	strCacheStatus     = hdrCacheStatus.Bytes()
	strIfNoneMatch     = hdrIfNoneMatch.Bytes()
	strIfModifiedSince = hdrIfModifiedSince.Bytes()
	strETag            = hdrETag.Bytes()
	strLastModified    = hdrLastModified.Bytes()
	strDate            = []byte("Date")
	strRange           = []byte("Range")
	strIfRange         = []byte("If-Range")
)

var errNotCached = proxy.NewError(proxy.CodeNotCached, "the request says only-if-cached and no stored answer it accepts is in the cache")

// Plugin is the plugin built for one route.
type Plugin struct {
	store   *Store
	route   string
	results [numResults]prometheus.Counter

	scope        []byte // "upstream\x00route\x00policy\x00": keys are per route, see New
	upstream     string
	credHeaders  []httpx.Name // request headers that carry credentials
	stripPrefix  string
	stripPrefixB []byte
	queryAll     bool
	queryKeep    [][]byte
	sorted       bool
	byConsumer   bool
	byCredential bool

	ttl, swr, sie int64
	override      bool
	maxEntry      int
	tags          []string // templates from path parameters
	pattern       pattern  // the route's path, to fill tags
	rules         []rule
	webhook       *webhook
	targets       []string // targeted cache-control fields, in order (RFC 9213)
	honorRequest  bool     // request_directives: honor

	// The shared tier (l2.go): nil without cluster.redis or with
	// cache.shared false.
	l2        *l2
	l2Max     int           // cache.shared_max_entry_size
	l2Timeout time.Duration // cache.shared_timeout
	l2Wait    time.Duration // cache.shared_wait
	warm      *warmer       // nil unless the route declares warm paths
}

var _ proxy.Plugin = (*Plugin)(nil)

// build builds the plugin for one route.
func build(c *Config, b *proxy.Build) (proxy.Plugin, error) {
	cc := b.Section().(*Section)
	if err := checkTags(c.Tags, b.Route.Path); err != nil {
		return nil, err
	}
	var store *Store
	m := proxy.Share(b, struct{}{}, func() *metrics {
		return newMetrics(b.Registerer, func() *Store { return store })
	})
	// One store per process, made with the first config's section: a reload
	// that changes max_size or shards applies at the next start.
	store = proxy.Share(b, struct{}{}, func() *Store { return newStore(cc, m) })
	store.log.Store(b.Logger)

	keep, all, _ := c.queryMode()
	p := &Plugin{
		store: store, route: b.Route.Name, upstream: b.Upstream.Name,
		scope:       routeScope(b),
		credHeaders: credentialNames(c.CredentialHeaders),
		queryAll:    all, sorted: c.Sorted,
		ttl: int64(c.TTL), swr: int64(c.StaleWhileRevalidate), sie: int64(c.StaleIfError),
		override: c.Override, maxEntry: int(cc.MaxEntrySize),
		tags: c.Tags, targets: c.Targets, honorRequest: c.RequestDirectives == "honor",
	}
	for _, k := range keep {
		p.queryKeep = append(p.queryKeep, []byte(k))
	}
	p.stripPrefix = b.Route.StripPrefix
	p.stripPrefixB = []byte(b.Route.StripPrefix)
	p.pattern = compilePattern(b.Route.Path)
	switch c.Partition {
	case "consumer":
		p.byConsumer, p.byCredential = true, true
	case "auto":
		p.byCredential = true
		for _, cs := range proxy.Peers[proxy.ConsumerScoped](b) {
			p.byConsumer = p.byConsumer || cs.VariesByConsumer()
		}
	}
	for i, r := range c.Invalidate {
		cr, err := compileRule(r)
		if err != nil {
			return nil, fmt.Errorf("invalidate[%d]: %w", i, err)
		}
		p.rules = append(p.rules, cr)
	}
	if c.Webhook != nil {
		seen := proxy.Share(b, b.Route.Name, func() *seenSet { return newSeenSet(maxSeen) })
		w, err := newWebhook(c.Webhook, seen)
		if err != nil {
			return nil, err
		}
		if b.Cluster != nil {
			w.cluster, w.clusterKey = b.Cluster, b.Cluster.Key("cache:webhook:"+b.Route.Name+":")
		}
		w.logger = store.logger
		p.webhook = w
	}
	for i := range p.results {
		p.results[i] = m.requests.WithLabelValues(b.Route.Name, resultNames[i])
	}
	if b.Cluster != nil && cc.Shared {
		lm := proxy.Share(b, struct{}{}, func() *l2Metrics { return newL2Metrics(b.Registerer) })
		type l2Link struct {
			cluster *proxy.Cluster
			store   *Store
		}
		p.l2 = proxy.Share(b, l2Link{b.Cluster, store}, func() *l2 { return newL2(b.Cluster, store, lm) })
		p.l2Max, p.l2Timeout, p.l2Wait = cc.sharedMaxEntry(), cc.SharedTimeout.D(), cc.SharedWait.D()
	}
	if b.Cluster != nil {
		type link struct {
			cluster *proxy.Cluster
			store   *Store
		}
		proxy.Share(b, link{b.Cluster, store}, func() *subscriber { return newSubscriber(b.Cluster, store) })
	}
	if c.Warm != nil {
		w, err := newWarmer(c.Warm, p, b)
		if err != nil {
			return nil, err
		}
		p.warm = w
	}
	b.HandleAdmin("POST /admin/cache/purge", proxy.AdminEndpoint{Mutating: true, Handler: store.purgeHandler})
	b.ReportStatus("cache", func() any {
		return map[string]any{"entries": store.Len(), "bytes": store.Bytes(), "capacity_bytes": store.Capacity(), "shards": store.shards}
	})
	return p, nil
}

// checkTags reports tag templates naming a parameter the route's path does
// not have (it would be filled with nothing).
func checkTags(tags []string, path string) error {
	var p config.Problems
	params := paramNames(path)
	for i, t := range tags {
		for _, m := range paramRE.FindAllStringSubmatch(t, -1) {
			if !slices.Contains(params, m[1]) {
				p.Addf(fmt.Sprintf("tags[%d]", i), "{%s} is not a parameter of the route's path %q", m[1], path)
			}
		}
	}
	return p.Err()
}

// Handle answers from the cache or calls next and stores its answer.
func (c *Plugin) Handle(ctx *fasthttp.RequestCtx, ex *proxy.Exchange, next proxy.Handler) error {
	if c.webhook != nil {
		return c.webhook.handle(ctx, ex, c.store)
	}
	req := &ctx.Request.Header
	isGet, isHead := req.IsGet(), req.IsHead()
	if !isGet && !isHead {
		return c.passUnsafe(ctx, ex, next, ctx.Method())
	}
	kb := keyPool.Get().(*keyBuf)
	defer keyPool.Put(kb)
	c.exchangeKey(ctx, ex, kb)
	key := kb.key

	var stale []byte // a stale entry, for revalidation and stale serving
	varied := false
	var rd reqDirectives // the caller's directives, with request_directives: honor
	if c.honorRequest {
		rd = parseRequestDirectives(req)
	} else {
		rd.maxAge, rd.minFresh, rd.maxStale = -1, -1, -1
	}
	if b := c.store.get(key); b != nil {
		if b[0] == kindVary {
			var v varyMarker
			if decodeVary(b, &v) == nil {
				variantKey(ctx, kb, &v)
				key, varied = kb.vkey, true
				b = c.store.get(key)
			} else {
				b = nil
			}
		}
		var e entry
		if b != nil && decodeEntry(b, &e) == nil {
			now := time.Now().UnixNano()
			age := e.initialAge + now - e.storedAt
			use := requestUse(&rd, &e, age)
			if use == useFresh || use == useAsUsual && age < e.lifetime && e.flags&flagNoCache == 0 {
				c.results[resHit].Inc()
				traceLookup(ex, "hit")
				serveHit(ctx, ex, &e, age, csHit)
				return nil
			}
			if use == useStale {
				c.results[resStale].Inc()
				traceLookup(ex, "stale")
				serveHit(ctx, ex, &e, age, csMaxStale)
				return nil
			}
			if w := max(c.swr, e.swr); use == useAsUsual && e.flags&(flagMustRevalidate|flagNoCache) == 0 && age-e.lifetime < w && isGet {
				if c.store.startRefresh(key) {
					c.refresh(ctx, ex, next, key, b)
				}
				c.results[resStale].Inc()
				traceLookup(ex, "stale_while_revalidate")
				serveHit(ctx, ex, &e, age, csSWR)
				return nil
			}
			stale = b
		}
	}
	if rd.onlyIfCached {
		// RFC 9111 section 5.2.1.7: no stored answer the request accepts,
		// and the caller forbids asking the provider.
		c.results[resMiss].Inc()
		traceLookup(ex, "miss")
		return errNotCached
	}
	if isHead && stale == nil {
		// HEAD is answered from a GET entry; a miss goes upstream unstored.
		c.results[resMiss].Inc()
		traceLookup(ex, "miss")
		c.forwardQuery(ex, kb)
		err := next.Handle(ctx, ex)
		if err == nil {
			hdrCacheStatus.Add(&ctx.Response.Header, csMiss)
		}
		return err
	}
	if stale == nil {
		traceLookup(ex, "miss")
		return c.fill(ctx, ex, next, kb, key, varied)
	}
	traceLookup(ex, "revalidate")
	return c.revalidate(ctx, ex, next, kb, key, stale, false, nil)
}

// traceLookup records the lookup's result on the request's span (sampled
// requests only).
func traceLookup(ex *proxy.Exchange, result string) {
	if ex.Traced() {
		ex.TraceEvent("cache.lookup", attribute.String("cache.result", result))
	}
}

// fill fetches a missing entry; concurrent misses for one key wait for the
// first (request collapsing) and share its answer through the store.
func (c *Plugin) fill(ctx *fasthttp.RequestCtx, ex *proxy.Exchange, next proxy.Handler, kb *keyBuf, key []byte, varied bool) error {
	f, leader := c.store.join(key)
	if !leader {
		if !f.wait(ex.Remaining()) {
			return proxy.NewError(proxy.CodeUpstreamTimeout, "the route's deadline passed while waiting for a concurrent fetch of the same resource")
		}
		if b := c.lookup(ctx, kb); b != nil {
			var e entry
			if decodeEntry(b, &e) == nil {
				now := time.Now().UnixNano()
				if age := e.initialAge + now - e.storedAt; age < e.lifetime && e.flags&flagNoCache == 0 {
					c.results[resCollapsed].Inc()
					serveHit(ctx, ex, &e, age, csCollapsed)
					return nil
				}
			}
		}
		// The first fetch stored nothing we may use: fetch alone.
	} else {
		defer c.store.leave(key, f)
	}
	var st fillState
	if c.l2 != nil && leader {
		if done, err := c.fillShared(ctx, ex, next, kb, &key, &varied, &st); done {
			return err
		}
		defer c.unlockFill(&st)
	}
	c.results[resMiss].Inc()
	c.forwardQuery(ex, kb)
	gen := c.store.gen.Load()
	tee := &streamFill{c: c} // stores a streamed answer as it passes (tee.go)
	ex.TeeStream(tee)
	if err := next.Handle(ctx, ex); err != nil {
		return err
	}
	if ctx.Response.IsBodyStream() && tee.arm(ctx, ex, kb, gen, &st) {
		// Stored (or not) when the stream ends; the head goes now.
		tee.ownCS = c.sharedStatus(&st, csMiss, false)
		hdrCacheStatus.Add(&ctx.Response.Header, tee.ownCS)
		return nil
	}
	// The shared tier's write is guarded on its own (tombstones): made
	// before the store checks for an invalidation since the fetch began.
	stored := c.storeResponse(ctx, ex, kb)
	shared := stored && c.publishShared(ctx, kb, &st)
	stored = stored && c.keepStored(kb, gen)
	cs := csMiss
	switch {
	case varied && stored:
		cs = csVaryMissStore
	case varied:
		cs = csVaryMiss
	case stored:
		cs = csMissStored
	}
	hdrCacheStatus.Add(&ctx.Response.Header, c.sharedStatus(&st, cs, shared))
	return nil
}

// lookup finds the entry for the request (following a vary marker).
func (c *Plugin) lookup(ctx *fasthttp.RequestCtx, kb *keyBuf) []byte {
	b := c.store.get(kb.key)
	if b != nil && b[0] == kindVary {
		var v varyMarker
		if decodeVary(b, &v) != nil {
			return nil
		}
		variantKey(ctx, kb, &v)
		b = c.store.get(kb.vkey)
	}
	return b
}

// revalidate asks the upstream whether a stale entry is still good
// (conditional request) and serves the entry stale when the upstream fails
// within the stale-if-error window.
// background is true for a stale-while-revalidate refresh: its caller was
// already answered (and counted as stale), so it is not counted again.
// st is what the fill learned from the shared tier when the stale entry
// came from there; nil: the entry is the store's, and the shared tier is
// asked first whether another gateway has a fresh one.
func (c *Plugin) revalidate(ctx *fasthttp.RequestCtx, ex *proxy.Exchange, next proxy.Handler, kb *keyBuf, key, stale []byte, background bool, st *fillState) error {
	count := func(r int) {
		if !background {
			c.results[r].Inc()
		}
	}
	if st == nil {
		st = &fillState{}
		if c.l2 != nil && c.revalidateShared(ctx, ex, kb, key, background, st) {
			return nil
		}
	}
	var e entry
	_ = decodeEntry(stale, &e)
	req := &ctx.Request.Header
	conditional := false
	it := newHeaderIter(e.headers)
	for k, v, ok := it.next(); ok; k, v, ok = it.next() {
		switch {
		case bytes.EqualFold(k, strETag):
			hdrIfNoneMatch.Del(req)
			hdrIfNoneMatch.Set(req, v)
			conditional = true
		case bytes.EqualFold(k, strLastModified):
			hdrIfModifiedSince.Del(req)
			hdrIfModifiedSince.Set(req, v)
			conditional = true
		}
	}
	c.forwardQuery(ex, kb)
	gen := c.store.gen.Load()
	err := next.Handle(ctx, ex)
	now := time.Now().UnixNano()
	age := e.initialAge + now - e.storedAt
	if c.staleOnError(err, ex, ctx) && e.flags&flagMustRevalidate == 0 && age-e.lifetime < max(c.sie, e.sie) {
		count(resStale)
		serveEntry(ctx, ex, &e, age, c.sharedStatus(st, csSIE, false))
		return nil
	}
	if err != nil {
		return err
	}
	if conditional && ex.FromUpstream && ctx.Response.StatusCode() == fasthttp.StatusNotModified {
		count(resRevalidated)
		fresh := c.refreshed(ctx, &e, key, stale)
		shared := c.publishShared(ctx, kb, st)
		c.keepStored(kb, gen)
		serveEntry(ctx, ex, fresh, fresh.initialAge, c.sharedStatus(st, csRevalidated, shared))
		return nil
	}
	count(resMiss)
	cs := csStale
	shared := false
	if ctx.Request.Header.IsGet() && c.storeResponse(ctx, ex, kb) {
		shared = c.publishShared(ctx, kb, st)
		if c.keepStored(kb, gen) {
			cs = csStaleStored
		}
	}
	hdrCacheStatus.Add(&ctx.Response.Header, c.sharedStatus(st, cs, shared))
	return nil
}

// staleOnError reports whether the outcome of next is a failure that a
// stale entry may bridge: the upstream unreachable, timing out, its circuit
// open, or answering 500, 502, 503, 504 or 429.
func (c *Plugin) staleOnError(err error, ex *proxy.Exchange, ctx *fasthttp.RequestCtx) bool {
	if err != nil {
		pe := proxy.Classify(err)
		switch pe.Code {
		case proxy.CodeUpstreamTimeout, proxy.CodeUpstreamUnreachable, proxy.CodeCircuitOpen,
			proxy.CodeUpstreamError, proxy.CodeUpstreamRateLimited, proxy.CodeOverloaded:
			return true
		}
		return false
	}
	if !ex.FromUpstream {
		return false
	}
	switch ctx.Response.StatusCode() {
	case 500, 502, 503, 504, 429:
		return true
	}
	return false
}

// refreshed stores e again after a 304: stored now, with the freshness the
// 304 carries (or the entry's own lifetime when it carries none), and its
// updated header values (RFC 9111 section 4.3.4).
func (c *Plugin) refreshed(ctx *fasthttp.RequestCtx, e *entry, key, old []byte) *entry {
	h := &ctx.Response.Header
	now := time.Now()
	d := c.responseDirectives(h)
	lifetime, age, explicit := freshness(h, &d, now)
	ne := *e
	ne.storedAt = now.UnixNano()
	ne.initialAge = int64(age)
	if explicit && !c.override {
		ne.lifetime = int64(lifetime)
	}
	// Headers: the stored ones, with values of the same names from the 304.
	var hdrs [][2][]byte
	it := newHeaderIter(e.headers)
	for k, v, ok := it.next(); ok; k, v, ok = it.next() {
		if nv := h.PeekBytes(k); len(nv) > 0 && !skipStored(k) {
			v = append([]byte(nil), nv...)
		}
		hdrs = append(hdrs, [2][]byte{k, v})
	}
	var tags []string
	forEachTag(e.tags, func(t []byte) { tags = append(tags, string(t)) })
	buf := encodeEntry(nil, &ne, hdrs, tags)
	c.store.set(string(key), buf, tags)
	var out entry
	if decodeEntry(buf, &out) != nil {
		return e
	}
	return &out
}

// serveEntry writes a stored answer to the caller.
func serveEntry(ctx *fasthttp.RequestCtx, ex *proxy.Exchange, e *entry, age int64, status []byte) {
	serve(ctx, ex, e, age, status, false)
}

// serveHit writes a stored answer to a GET or HEAD, evaluating the
// caller's conditions and Range against it: 304 Not Modified, 206 Partial
// Content or 416 Range Not Satisfiable where they apply.
func serveHit(ctx *fasthttp.RequestCtx, ex *proxy.Exchange, e *entry, age int64, status []byte) {
	serve(ctx, ex, e, age, status, true)
}

// serve writes e with its stored headers, its stored Date among them (the
// origin's, or the time it was received: the answer's Date, not the hit's).
func serve(ctx *fasthttp.RequestCtx, ex *proxy.Exchange, e *entry, age int64, status []byte, conditional bool) {
	resp := &ctx.Response
	proxy.ClearResponse(resp) // keeps the server's no-default-Date: Date is the stored one
	var etag, lastMod, date []byte
	it := newHeaderIter(e.headers)
	for k, v, ok := it.next(); ok; k, v, ok = it.next() {
		switch {
		case len(k) == 4 && bytes.EqualFold(k, strETag):
			etag = v
		case len(k) == 4 && bytes.EqualFold(k, strDate):
			date = v
		case len(k) == 13 && bytes.EqualFold(k, strLastModified):
			lastMod = v
		}
	}
	code := e.status
	var first, last int64
	if conditional && e.status >= 200 && e.status < 300 {
		req := &ctx.Request.Header
		var cond conditions
		cond.scan(req)
		if cond.notModified(etag, lastMod, date, e.storedAt) {
			code = fasthttp.StatusNotModified
		} else if rng := cond.rng; len(rng) > 0 && e.status == fasthttp.StatusOK && req.IsGet() &&
			ifRangeHolds(cond.ifRange, etag, lastMod, date) {
			var out int
			first, last, out = parseRange(rng, int64(len(e.body)))
			switch out {
			case rangeSatisfiable:
				code = fasthttp.StatusPartialContent
			case rangeUnsatisfiable:
				code = fasthttp.StatusRequestedRangeNotSatisfiable
			}
		}
	}
	it = newHeaderIter(e.headers)
	for k, v, ok := it.next(); ok; k, v, ok = it.next() {
		if code == fasthttp.StatusNotModified && !keptOn304(k) {
			continue
		}
		// Stored names are as fasthttp parsed them: in stored form.
		httpx.AddCanonical(&resp.Header, k, v) // Date is dropped here by fasthttp: set below
	}
	if len(date) > 0 {
		proxy.AddDate(&resp.Header, date) // ClearResponse left none
	}
	var buf [64]byte
	hdrAge.Set(&resp.Header, fasthttp.AppendUint(buf[:0], int(max(age, 0)/int64(time.Second))))
	hdrCacheStatus.Add(&resp.Header, status)
	ex.FromUpstream = true
	resp.SetStatusCode(code)
	switch code {
	case fasthttp.StatusNotModified:
	case fasthttp.StatusPartialContent:
		hdrContentRange.Set(&resp.Header, appendContentRange(buf[:0], first, last, int64(len(e.body))))
		resp.SetBodyRaw(e.body[first : last+1])
	case fasthttp.StatusRequestedRangeNotSatisfiable:
		hdrContentRange.Set(&resp.Header, appendInt(append(buf[:0], "bytes */"...), int64(len(e.body))))
	default:
		resp.SetBodyRaw(e.body)
	}
}

// keptOn304 lists the stored headers a 304 carries (RFC 9110 section
// 15.4.5): those a 200 would have that guide caches, no representation
// metadata.
func keptOn304(k []byte) bool {
	for _, n := range [...]string{"Cache-Control", "Content-Location", "Date", "ETag", "Expires", "Vary"} {
		if len(k) == len(n) && bytes.EqualFold(k, []byte(n)) {
			return true
		}
	}
	return false
}

// conditions are the request headers a hit is evaluated against, found
// in one pass over the request's headers: on a hit path that would
// otherwise look each of them up in turn (a copy, a normalization and a
// scan apiece), whether or not the caller sent any.
type conditions struct {
	ifNoneMatch, ifModifiedSince, rng, ifRange []byte
}

// scan takes the first value of each condition header of req.
func (c *conditions) scan(req *fasthttp.RequestHeader) {
	for k, v := range req.All() {
		var dst *[]byte
		switch {
		case len(k) == len(strRange) && bytes.EqualFold(k, strRange):
			dst = &c.rng
		case len(k) == len(strIfRange) && bytes.EqualFold(k, strIfRange):
			dst = &c.ifRange
		case len(k) == len(strIfNoneMatch) && bytes.EqualFold(k, strIfNoneMatch):
			dst = &c.ifNoneMatch
		case len(k) == len(strIfModifiedSince) && bytes.EqualFold(k, strIfModifiedSince):
			dst = &c.ifModifiedSince
		default:
			continue
		}
		if len(*dst) == 0 {
			*dst = v
		}
	}
}

// notModified evaluates If-None-Match, else If-Modified-Since, against a
// stored answer (RFC 9110 section 13.2.2, steps 3 and 4; the caller checked
// the method is GET or HEAD). If-Modified-Since is compared with the stored
// Last-Modified, else its Date, else the time it was stored (RFC 9111
// section 4.3.2); an invalid date, or one in the future, is ignored (RFC
// 9110 section 13.1.3).
func (c *conditions) notModified(etag, lastMod, date []byte, storedAt int64) bool {
	if len(c.ifNoneMatch) > 0 {
		return etagListMatches(c.ifNoneMatch, etag)
	}
	ims := c.ifModifiedSince
	if len(ims) == 0 {
		return false
	}
	since, ok := httpDate(ims)
	if !ok || since.After(time.Now()) {
		return false
	}
	modified, ok := httpDate(lastMod)
	if !ok {
		if modified, ok = httpDate(date); !ok {
			modified = time.Unix(0, storedAt)
		}
	}
	return !modified.After(since)
}

// ifRangeHolds evaluates If-Range (RFC 9110 section 13.1.5): absent, or an
// entity tag equal to the stored ETag by strong comparison, or a date equal
// to the stored Last-Modified when that is a strong validator (the Date is
// at least a second later, RFC 9110 section 8.8.2.2). Otherwise the Range
// is ignored and the whole answer sent.
func ifRangeHolds(v, etag, lastMod, date []byte) bool {
	if len(v) == 0 {
		return true
	}
	if v[0] == '"' || bytes.HasPrefix(v, []byte("W/")) {
		return v[0] == '"' && len(etag) > 0 && etag[0] == '"' && bytes.Equal(v, etag)
	}
	t, ok := httpDate(v)
	lm, ok2 := httpDate(lastMod)
	d, ok3 := httpDate(date)
	return ok && ok2 && ok3 && t.Equal(lm) && !d.Before(lm.Add(time.Second))
}

// etagListMatches reports whether an If-None-Match list ("*" or
// comma-separated entity tags) matches etag by weak comparison.
func etagListMatches(list, etag []byte) bool {
	etag = bytes.TrimPrefix(etag, []byte("W/"))
	for len(list) > 0 {
		var item []byte
		if i := bytes.IndexByte(list, ','); i >= 0 {
			item, list = list[:i], list[i+1:]
		} else {
			item, list = list, nil
		}
		item = bytes.TrimSpace(item)
		if len(item) == 1 && item[0] == '*' {
			return true // any current representation: this one
		}
		if len(item) > 0 && len(etag) > 0 && bytes.Equal(bytes.TrimPrefix(item, []byte("W/")), etag) {
			return true
		}
	}
	return false
}

// passUnsafe forwards a request the cache does not answer and, for unsafe
// methods the upstream accepted, invalidates what it changed. (Requests
// with a method-override header never get here: the gateway refuses them.)
func (c *Plugin) passUnsafe(ctx *fasthttp.RequestCtx, ex *proxy.Exchange, next proxy.Handler, method []byte) error {
	c.results[resBypass].Inc()
	err := next.Handle(ctx, ex)
	if err != nil || !ex.FromUpstream {
		return err
	}
	hdrCacheStatus.Add(&ctx.Response.Header, csBypass)
	status := ctx.Response.StatusCode()
	if status >= 400 || !isUnsafe(method) {
		return nil
	}
	c.invalidateFor(ctx, ex, method)
	return nil
}

// forwardQuery makes the request forwarded upstream carry only the query
// parameters the key keeps, when it drops some: an answer is stored only
// under what the provider saw.
func (c *Plugin) forwardQuery(ex *proxy.Exchange, kb *keyBuf) {
	if kb.narrowed {
		ex.SetUpstreamQuery(kb.query)
	}
}

func isUnsafe(m []byte) bool {
	switch string(m) {
	case "GET", "HEAD", "OPTIONS", "TRACE":
		return false
	}
	return true
}

// invalidateFor removes the request URI and the Location/Content-Location
// of the answer (RFC 9111 section 4.4), in the caller's partition and the
// shared one, and runs the route's invalidate rules.
func (c *Plugin) invalidateFor(ctx *fasthttp.RequestCtx, ex *proxy.Exchange, method []byte) {
	kb := keyPool.Get().(*keyBuf)
	defer keyPool.Put(kb)
	var keys []string
	var resources []Resource
	add := func(uri []byte, stripped bool) {
		path, query := uri, []byte(nil)
		if i := bytes.IndexByte(uri, '?'); i >= 0 {
			path, query = uri[:i], uri[i+1:]
		}
		rel := c.appendQuery(append([]byte(nil), path...), query, kb)
		if !stripped && c.stripPrefix != "" && bytes.HasPrefix(rel, c.stripPrefixB) {
			rel = rel[len(c.stripPrefixB):]
		}
		base := append(append([]byte(nil), c.scope...), rel...)
		keys = append(keys, string(c.appendPartition(bytes.Clone(base), ctx, ex.Consumer, kb)))
		keys = append(keys, string(append(base, 0)))
		// Every route of the upstream, every partition and variant.
		relPath := rel
		if i := bytes.IndexByte(relPath, '?'); i >= 0 {
			relPath = relPath[:i]
		}
		resources = append(resources, Resource{Upstream: c.upstream, Path: string(relPath)})
	}
	add(ex.RawURI(), false)
	for _, h := range [][]byte{[]byte(fasthttp.HeaderLocation), []byte(fasthttp.HeaderContentLocation)} {
		if loc := ctx.Response.Header.PeekBytes(h); len(loc) > 0 {
			if p := upstreamPath(loc, ex); p != nil {
				add(p, true)
			}
		}
	}
	slices.Sort(keys)
	keys = slices.Compact(keys)
	c.store.invalidate(Invalidation{Source: "method", StoreKeys: keys, Resources: resources})
	var tags []string
	for i := range c.rules {
		tags = c.rules[i].match(method, ex.Path(), tags)
	}
	if len(tags) > 0 {
		c.store.invalidate(Invalidation{Source: "rule", Tags: tags})
	}
}

// upstreamPath returns the path and query of a Location value relative to
// the upstream (the form keys use), or nil when it points elsewhere.
func upstreamPath(loc []byte, ex *proxy.Exchange) []byte {
	if len(loc) > 0 && loc[0] == '/' && (len(loc) == 1 || loc[1] != '/') {
		return stripBase(loc, ex)
	}
	var u fasthttp.URI
	if err := u.Parse(nil, loc); err != nil {
		return nil
	}
	if t := ex.Target; t != nil && !sameHost(string(u.Host()), t.Host()) {
		return nil
	}
	p := append([]byte(nil), u.PathOriginal()...)
	if q := u.QueryString(); len(q) > 0 {
		p = append(append(p, '?'), q...)
	}
	return stripBase(p, ex)
}

// sameHost reports whether a Location's host names the target: the same
// host and port, or the same host where the Location names no port.
func sameHost(loc, target string) bool {
	if strings.EqualFold(loc, target) {
		return true
	}
	if _, _, err := net.SplitHostPort(loc); err == nil {
		return false // a port, and not the target's
	}
	host, _, err := net.SplitHostPort(target)
	return err == nil && strings.EqualFold(strings.Trim(loc, "[]"), host)
}

// stripBase removes the target's base path (keys are relative to it).
func stripBase(p []byte, ex *proxy.Exchange) []byte {
	if t := ex.Target; t != nil {
		base := t.BasePath()
		if base != "" && strings.HasPrefix(b2s(p), base) && (len(p) == len(base) || p[len(base)] == '/' || p[len(base)] == '?') {
			return p[len(base):]
		}
	}
	return p
}

// refresh re-fetches an entry in the background for stale-while-revalidate:
// a detached copy of the request goes through the rest of the pipeline
// after the caller has been answered.
func (c *Plugin) refresh(ctx *fasthttp.RequestCtx, ex *proxy.Exchange, next proxy.Handler, key, stale []byte) {
	bctx := new(fasthttp.RequestCtx)
	bctx.Init(&ctx.Request, ctx.RemoteAddr(), nil)
	bex := ex.Detach()
	k := string(key)
	staleCopy := stale // the store's values are never written (see Store): no copy needed
	go func() {
		defer c.store.endRefresh(k)
		defer bex.Release()
		defer func() { // a refresh never takes the process down
			if r := recover(); r != nil {
				c.store.logger().Error("panic in background cache refresh", "route", c.route, "panic", fmt.Sprint(r))
			}
		}()
		kb := keyPool.Get().(*keyBuf)
		defer keyPool.Put(kb)
		raw := bex.RawURI()
		path, query := raw, []byte(nil)
		if i := bytes.IndexByte(raw, '?'); i >= 0 {
			path, query = raw[:i], raw[i+1:]
		}
		c.buildKey(bctx, path, query, bex.Consumer, kb)
		if err := c.revalidate(bctx, bex, next, kb, []byte(k), staleCopy, true, nil); err != nil {
			c.store.logger().Debug("background cache refresh failed", "route", c.route, "error", err.Error())
		}
	}()
}

// nonces make vary markers unique, so that variants stored under a removed
// marker are never found again.
var nonceSeed = rand.Uint64()
var nonceCounter atomic.Uint64

func newNonce() uint64 { return nonceSeed ^ nonceCounter.Add(1)*0x9e3779b97f4a7c15 }

// b2s converts without copying; b must not change while the string is used.
func b2s(b []byte) string { return unsafe.String(unsafe.SliceData(b), len(b)) }

// exchangeKey builds in kb the key of the exchange's request: its path and
// query as sent (RawURI), its consumer.
func (c *Plugin) exchangeKey(ctx *fasthttp.RequestCtx, ex *proxy.Exchange, kb *keyBuf) {
	path, query, _ := bytes.Cut(ex.RawURI(), []byte{'?'})
	c.buildKey(ctx, path, query, ex.Consumer, kb)
}
