package ratelimit

import (
	"fmt"
	"math"
	"net"
	"strconv"
	"time"
	"unsafe"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/sluice-gw/sluice/proxy"
	"github.com/sluice-gw/sluice/proxy/config"
	"github.com/sluice-gw/sluice/proxy/httpx"
	"github.com/valyala/fasthttp"
)

// limit is one compiled limit of one route.
type limit struct {
	name   string
	kind   keyKind
	header httpx.Name // keyHeader: the header's name
	rate   float64
	per    time.Duration
	burst  int
	limit  float64 // tokens per second

	local  buckets      // this gateway's buckets
	dist   *distributed // nil unless distributed through Redis
	fbAuto *autoShare   // dist != nil: this gateway's share while Redis is away or just back

	policy  []byte // `"name";q=Q;w=W`
	detail  string
	rejects [maxPrebuilt + 1]*proxy.Error // by Retry-After in whole seconds

	allowed, rejected, queued, fellBack prometheus.Counter
	wait                                prometheus.Observer
}

// maxPrebuilt is the longest Retry-After (seconds) whose 429 is prebuilt:
// rejecting a call allocates nothing in the common case.
const maxPrebuilt = 60

// buckets is a single bucket (upstream, route) or a table of keyed ones,
// all with the same pace.
type buckets struct {
	single *tokenBucket
	table  *table
	pace   pace
}

func (bs *buckets) get(key []byte, now int64) *tokenBucket {
	if bs.single != nil {
		return bs.single
	}
	return bs.table.get(key, now)
}

// decision is the outcome of one limit for one call.
type decision struct {
	ok         bool
	remaining  int           // tokens left after this call
	reset      time.Duration // until the bucket is full again
	retryAfter time.Duration // !ok: until a token is there
	wait       time.Duration // ok in queue mode: how long the call must wait
}

// key returns the value the limit counts apart for this call; empty for
// upstream and route limits, and for calls with no consumer or header (they
// share one bucket). It does not allocate.
func (l *limit) key(ctx *fasthttp.RequestCtx, ex *proxy.Exchange) []byte {
	switch l.kind {
	case keyConsumer:
		return unsafe.Slice(unsafe.StringData(ex.Consumer), len(ex.Consumer))
	case keyIP:
		if a, ok := ctx.RemoteAddr().(*net.TCPAddr); ok {
			return a.IP
		}
		return ctx.RemoteIP()
	case keyHeader:
		return l.header.Peek(&ctx.Request.Header)
	}
	return nil
}

// take decides for one call: through Redis when the limit is distributed
// and Redis answers, else locally.
//
// A distributed limit must not hand out more than the limit when Redis goes
// or comes back. While Redis is away each gateway keeps to its share, in
// buckets that start empty at each outage (the shared bucket may have been
// spent just before). When Redis answers again, for recoverGrace a call must
// pass both this gateway's share and Redis (other gateways may still be on
// their shares until their next probe), and every Redis decision treats the
// shared bucket as spent (at most one token: the script's floor), since the
// calls admitted during the outage never reached it.
func (l *limit) take(ctx *fasthttp.RequestCtx, ex *proxy.Exchange, now int64, maxWait time.Duration) decision {
	key := l.key(ctx, ex)
	if l.dist == nil {
		return l.local.pace.take(l.local.get(key, now), now, maxWait)
	}
	h := l.dist.health
	if !h.recovering(now) {
		if d, ok := l.dist.take(l, key, maxWait, false); ok {
			return d
		}
	}
	share := l.fbAuto.get(now)
	local := share.pace.take(share.get(key, now), now, maxWait)
	// Redis is asked when the share admits the call, or to probe it while
	// it is away (dist.take lets one call through per retryRedis).
	if local.ok || h.down.Load() {
		if d, ok := l.dist.take(l, key, maxWait, true); ok {
			if !local.ok {
				return local
			}
			if d.ok {
				d.wait = max(d.wait, local.wait)
			}
			return d
		}
	}
	l.fellBack.Inc()
	return local
}

// reject returns the 429 for a call refused by this limit.
func (l *limit) reject(retryAfter time.Duration) *proxy.Error {
	s := int((retryAfter + time.Second - 1) / time.Second)
	s = max(s, 1)
	if s <= maxPrebuilt {
		return l.rejects[s]
	}
	e := proxy.NewError(proxy.CodeRateLimited, l.detail)
	e.RetryAfter = time.Duration(s) * time.Second
	return e
}

// bucketKey names the state of one limit that outlives a config: buckets
// are shared by the routes (or, for upstream limits, the upstream) with the
// same settings, and kept by a reload that keeps them.
type bucketKey struct {
	kind       keyKind
	scope, key string
	name       string
	rate       float64
	per        config.Duration
	burst      int
	maxKeys    int
	idle       config.Duration
	nodes      int // fallback shares only
}

func newLimit(lc Limit, c *Config, b *proxy.Build, m *metrics) *limit {
	kind, header, _ := parseKey(lc.Key)
	l := &limit{name: lc.Name, kind: kind, header: httpx.NewName(header), rate: lc.Rate, per: lc.Per.D(), burst: lc.Burst}
	l.limit = lc.Rate / lc.Per.D().Seconds()
	scope := b.Route.Name
	if kind == keyUpstream {
		scope = b.Upstream.Name // one bucket for every route of the upstream
	}
	key := bucketKey{kind: kind, scope: scope, key: lc.Key, name: lc.Name, rate: lc.Rate, per: lc.Per, burst: lc.Burst}
	l.local.pace = newPace(l.limit, l.burst)
	switch kind {
	case keyUpstream, keyRoute:
		l.local.single = proxy.Share(b, key, func() *tokenBucket { return new(tokenBucket) })
	default:
		key.maxKeys, key.idle = c.MaxKeys, c.IdleTimeout
		l.local.table = proxy.Share(b, key, func() *table {
			return newTable(l.local.pace, c.MaxKeys, c.IdleTimeout.D())
		})
	}
	if b.Cluster != nil && (lc.Distributed == nil || *lc.Distributed) {
		l.dist = newDistributed(l, b)
		// While Redis is away, this gateway enforces its share: rate and
		// burst divided by the number of gateways (nodes, or counted). The
		// share's buckets start empty at each outage (see limit.take).
		share := func(n int, now int64) buckets {
			p := newPace(l.limit/float64(n), max(1, l.burst/n))
			if kind == keyUpstream || kind == keyRoute {
				b := new(tokenBucket)
				p.drain(b, now)
				return buckets{single: b, pace: p}
			}
			t := newTable(p, c.MaxKeys, c.IdleTimeout.D())
			t.startEmpty(now)
			return buckets{table: t, pace: p}
		}
		var pr *presence
		if c.Nodes == 0 {
			pr = sharedPresence(b)
		}
		health := l.dist.health
		key.nodes = c.Nodes
		l.fbAuto = proxy.Share(b, key, func() *autoShare {
			return &autoShare{presence: pr, nodes: c.Nodes, health: health, make: share}
		})
	}

	// RateLimit-Policy: the bucket as "burst calls per the time it takes to
	// refill": q = burst, w = that time in whole seconds (at least 1).
	w := max(1, int64(math.Ceil(float64(l.burst)/l.limit)))
	l.policy = fmt.Appendf(nil, "%q;q=%d;w=%d", l.name, l.burst, w)

	what := ""
	switch kind {
	case keyUpstream:
		what = "for upstream " + b.Upstream.Name
	case keyRoute:
		what = "for route " + b.Route.Name
	case keyConsumer:
		what = "per consumer"
	case keyIP:
		what = "per caller address"
	case keyHeader:
		what = "per " + header
	}
	l.detail = fmt.Sprintf("rate limit of %s per %s %s exceeded", strconv.FormatFloat(lc.Rate, 'f', -1, 64), lc.Per, what)
	for s := 1; s <= maxPrebuilt; s++ {
		e := proxy.NewError(proxy.CodeRateLimited, l.detail)
		e.RetryAfter = time.Duration(s) * time.Second
		l.rejects[s] = e
	}

	l.allowed = m.decisions.WithLabelValues(b.Route.Name, l.name, "allowed")
	l.rejected = m.decisions.WithLabelValues(b.Route.Name, l.name, "rejected")
	l.queued = m.decisions.WithLabelValues(b.Route.Name, l.name, "queued")
	l.wait = m.wait.WithLabelValues(b.Route.Name, l.name)
	if l.dist != nil {
		l.fellBack = m.fallback.WithLabelValues(b.Route.Name, l.name)
	}
	return l
}

// appendItem appends this limit's RateLimit item: `"name";r=R;t=T`.
func (l *limit) appendItem(dst []byte, d *decision) []byte {
	if len(dst) > 0 {
		dst = append(dst, ", "...)
	}
	dst = append(dst, '"')
	dst = append(dst, l.name...)
	dst = append(dst, `";r=`...)
	dst = strconv.AppendInt(dst, int64(max(d.remaining, 0)), 10)
	dst = append(dst, ";t="...)
	return strconv.AppendInt(dst, int64((d.reset+time.Second-1)/time.Second), 10)
}

// status describes the limit for /admin/upstreams.
func (l *limit) status(now int64) map[string]any {
	s := map[string]any{"name": l.name, "rate": l.rate, "per": l.per.String(), "burst": l.burst,
		"distributed": l.dist != nil}
	if l.local.single != nil {
		s["tokens"] = math.Floor(l.local.pace.tokens(l.local.single, now)*100) / 100
	} else {
		s["keys"] = l.local.table.size.Load()
	}
	if l.dist != nil {
		s["redis"] = l.dist.health.state()
		if l.fbAuto.presence != nil {
			s["gateways"] = l.fbAuto.presence.live.Load()
		}
	}
	return s
}
