package ratelimit

import (
	"bytes"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/sluice-gw/sluice/proxy"
	"github.com/sluice-gw/sluice/proxy/httpx"
	"github.com/valyala/fasthttp"
)

// pause is an upstream's "slow down" state (respect_upstream): one per
// upstream, shared by its routes and across reloads.
type pause struct {
	upstream  string
	until     atomic.Int64 // unix nanoseconds; calls before it are answered by Sluice
	remaining atomic.Int64 // the provider's last word on its quota; -1 unknown
	gauge     prometheus.Gauge
	hub       atomic.Pointer[pauseHub] // cluster mode: pauses are published to the other gateways
	hubsMu    sync.Mutex
	hubs      []*pauseHub // the hubs linked to it (one per Redis client in use); the latest publishes
	errs      [maxPrebuilt + 1]*proxy.Error
	detail    string
}

// maxPause caps a pause: a provider's bogus reset must not stop an upstream
// for days.
const maxPause = time.Hour

func sharedPause(b *proxy.Build, m *metrics) *pause {
	return proxy.Share(b, b.Upstream.Name, func() *pause {
		p := &pause{upstream: b.Upstream.Name, gauge: m.quota.WithLabelValues(b.Upstream.Name)}
		p.remaining.Store(-1)
		p.gauge.Set(-1)
		p.detail = "upstream " + b.Upstream.Name + " asked to slow down; calls are held back until its reset"
		for s := 1; s <= maxPrebuilt; s++ {
			e := proxy.NewError(proxy.CodeUpstreamRateLimited, p.detail)
			e.RetryAfter = time.Duration(s) * time.Second
			p.errs[s] = e
		}
		return p
	})
}

// attach makes the pause publish through hub (hubLink.Start: a config with
// respect_upstream in cluster mode started). While a reload that changes
// cluster.redis is under way, two hubs are linked: the latest is used.
func (p *pause) attach(hub *pauseHub) {
	p.hubsMu.Lock()
	defer p.hubsMu.Unlock()
	p.hubs = append(p.hubs, hub)
	p.hub.Store(hub)
}

// detach undoes attach (hubLink.Close: no config uses that hub with this
// pause any more): the pause publishes through the latest hub still linked,
// or not at all.
func (p *pause) detach(hub *pauseHub) {
	p.hubsMu.Lock()
	defer p.hubsMu.Unlock()
	for i := len(p.hubs) - 1; i >= 0; i-- {
		if p.hubs[i] == hub {
			p.hubs = append(p.hubs[:i], p.hubs[i+1:]...)
			break
		}
	}
	var cur *pauseHub
	if n := len(p.hubs); n > 0 {
		cur = p.hubs[n-1]
	}
	p.hub.Store(cur)
}

// check answers 429 upstream_rate_limited while the upstream is paused.
// Unpaused, it reads no clock.
func (p *pause) check() error {
	until := p.until.Load()
	if until == 0 {
		return nil
	}
	now := time.Now()
	if until <= now.UnixNano() {
		p.until.CompareAndSwap(until, 0)
		return nil
	}
	s := int((time.Duration(until-now.UnixNano()) + time.Second - 1) / time.Second)
	if s <= maxPrebuilt {
		return p.errs[max(s, 1)]
	}
	e := proxy.NewError(proxy.CodeUpstreamRateLimited, p.detail)
	e.RetryAfter = time.Duration(s) * time.Second
	return e
}

// extend pauses the upstream until the given time, unless it already is for
// longer. It reports whether the pause grew.
func (p *pause) extend(until int64) bool {
	for {
		cur := p.until.Load()
		if until <= cur {
			return false
		}
		if p.until.CompareAndSwap(cur, until) {
			return true
		}
	}
}

// quotaRules are a block's own additions to what observe reads
// (quota_headers, throttle_statuses); nil when it has none. The header
// names are normalized here, once (see httpx.Name).
type quotaRules struct {
	headers  []quotaPair
	statuses []int
}

// quotaPair is one quota_headers entry; reset is the zero Name when unset.
type quotaPair struct{ remaining, reset httpx.Name }

func newQuotaRules(c *Config) *quotaRules {
	if len(c.QuotaHeaders) == 0 && len(c.ThrottleStatuses) == 0 {
		return nil
	}
	q := &quotaRules{statuses: c.ThrottleStatuses}
	for _, h := range c.QuotaHeaders {
		pair := quotaPair{remaining: httpx.NewName(h.Remaining)}
		if h.Reset != "" {
			pair.reset = httpx.NewName(h.Reset)
		}
		q.headers = append(q.headers, pair)
	}
	return q
}

var hdrRetryAfter = httpx.NewName("Retry-After")

// read applies the rules to an answer: the least remaining value of the
// pairs present (-1 when none is), and how long to pause.
func (q *quotaRules) read(resp *fasthttp.Response, now time.Time) (remaining int64, pauseFor time.Duration) {
	remaining = -1
	if slices.Contains(q.statuses, resp.StatusCode()) {
		pauseFor = httpx.ParseRetryAfter(hdrRetryAfter.Peek(&resp.Header), now)
	}
	for i := range q.headers {
		h := &q.headers[i]
		rem := h.remaining.Peek(&resp.Header)
		if len(rem) == 0 {
			continue
		}
		var reset []byte
		if len(h.reset.Bytes()) > 0 {
			reset = h.reset.Peek(&resp.Header)
		}
		r, d := remainingReset(rem, reset, now, 0)
		if r >= 0 && (remaining < 0 || r < remaining) {
			remaining = r
		}
		pauseFor = max(pauseFor, d)
	}
	return remaining, min(max(pauseFor, 0), maxPause)
}

// observe reads the provider's answer: 429/503 with Retry-After (a 429
// without one pauses 1s), the draft RateLimit field (every item is read:
// the longest t among the items with r=0 pauses), the older drafts'
// RateLimit-Remaining: 0 with RateLimit-Reset, or X-RateLimit-Remaining: 0 with X-RateLimit-Reset (delta seconds
// or a Unix time, in seconds or milliseconds: told apart by size).
// A block's quota rules (q, may be nil) are read besides. h is the
// answer's quota headers (Exchange.UpstreamQuota): nil for an answer the
// provider did not just give (a replayed one), which says nothing now.
func (p *pause) observe(resp *fasthttp.Response, h *httpx.Quota, q *quotaRules) {
	if h == nil {
		return
	}
	status := resp.StatusCode()
	throttled := status == fasthttp.StatusTooManyRequests || status == fasthttp.StatusServiceUnavailable
	if !throttled && len(h.RateLimit) == 0 && len(h.XRemaining) == 0 && len(h.Remaining) == 0 && q == nil {
		return // nothing said: no clock read
	}
	now := time.Now()
	remaining, pauseFor := providerPause(status, h.RetryAfter, h.RateLimit, h.XRemaining, h.XReset,
		h.Remaining, h.Reset, now)
	if q != nil {
		r, d := q.read(resp, now)
		if r >= 0 && (remaining < 0 || r < remaining) {
			remaining = r
		}
		pauseFor = max(pauseFor, d)
	}
	if remaining >= 0 && p.remaining.Swap(remaining) != remaining {
		p.gauge.Set(float64(remaining))
	}
	if pauseFor <= 0 {
		return
	}
	until := now.Add(pauseFor).UnixNano()
	if p.extend(until) {
		if hub := p.hub.Load(); hub != nil {
			hub.publish(p.upstream, until)
		}
	}
}

// providerPause reads a provider's answer (see observe): the quota it
// reports (-1 when it says none) and how long to pause, from 0 to maxPause
// whatever the headers say.
func providerPause(status int, retryAfter, rl, xrem, xreset, drem, dreset []byte, now time.Time) (remaining int64, pauseFor time.Duration) {
	if status == fasthttp.StatusTooManyRequests || status == fasthttp.StatusServiceUnavailable {
		pauseFor = httpx.ParseRetryAfter(retryAfter, now)
		if pauseFor == 0 && status == fasthttp.StatusTooManyRequests {
			pauseFor = time.Second
		}
	}
	remaining = -1
	if len(rl) > 0 {
		if r, t, ok := parseRateLimit(rl); ok {
			remaining = r
			if r == 0 {
				// t has up to 15 digits: capped before it is made a
				// Duration, which it would overflow.
				pauseFor = max(pauseFor, time.Duration(min(t, int64(maxPause/time.Second)))*time.Second)
			}
		}
	} else if len(xrem) > 0 {
		remaining, pauseFor = remainingReset(xrem, xreset, now, pauseFor)
	} else if len(drem) > 0 {
		remaining, pauseFor = remainingReset(drem, dreset, now, pauseFor)
	}
	return remaining, min(max(pauseFor, 0), maxPause)
}

func remainingReset(rem, reset []byte, now time.Time, pauseFor time.Duration) (int64, time.Duration) {
	r, err := strconv.ParseInt(string(bytes.TrimSpace(rem)), 10, 64)
	if err != nil || r < 0 {
		return -1, pauseFor
	}
	if r > 0 {
		return r, pauseFor
	}
	reset = bytes.TrimSpace(reset)
	f, err := strconv.ParseFloat(string(reset), 64)
	if err != nil {
		// A duration, as OpenAI writes its resets ("6m0s", "20ms").
		if d, derr := time.ParseDuration(string(reset)); derr == nil && d > 0 {
			return 0, max(pauseFor, min(d, maxPause))
		}
	}
	if err != nil || !(f > 0) { // NaN is unreadable too
		return 0, max(pauseFor, time.Second)
	}
	nowSec := float64(now.UnixNano()) / 1e9
	var d time.Duration
	switch {
	case f > 1e12: // Unix time in milliseconds
		d = seconds(f/1e3 - nowSec)
	case f > 1e9: // Unix time in seconds
		d = seconds(f - nowSec)
	default: // seconds from now
		d = seconds(f)
	}
	return 0, max(pauseFor, d)
}

// seconds converts a count of seconds from a provider into a Duration in
// [0, maxPause]: a float far beyond int64 (1e300, +Inf) must not wrap around
// into a negative or small pause.
func seconds(f float64) time.Duration {
	switch {
	case !(f > 0):
		return 0
	case f >= maxPause.Seconds():
		return maxPause
	}
	return time.Duration(f * float64(time.Second))
}

// parseRateLimit reads a RateLimit field in the structured form of the
// current draft: a list of items `"name";r=R;t=T`. It reports the least
// remaining quota r among the items and, for the items with r=0, the longest
// t (seconds until the reset): the provider is out of quota until then. It
// does not allocate.
func parseRateLimit(v []byte) (r, t int64, ok bool) {
	r = -1
	for len(v) > 0 {
		var item []byte
		item, v = cutItem(v)
		ir, it := int64(-1), int64(0)
		// The item's name (a string or a token) may hold ';': skip it.
		_, params := cutOutsideQuotes(item, ';')
		for len(params) > 0 {
			var prm []byte
			prm, params = cutOutsideQuotes(params, ';')
			k, val, found := bytes.Cut(bytes.TrimSpace(prm), []byte("="))
			if !found {
				continue
			}
			n, good := parseUint(val)
			if !good {
				continue
			}
			switch string(k) {
			case "r":
				ir = n
			case "t":
				it = n
			}
		}
		if ir < 0 {
			continue
		}
		if r < 0 || ir < r {
			r = ir
		}
		if ir == 0 {
			t = max(t, it)
		}
	}
	return r, t, r >= 0
}

// cutItem cuts the first item off a structured-field list.
func cutItem(v []byte) (item, rest []byte) { return cutOutsideQuotes(v, ',') }

// cutOutsideQuotes cuts v at the first sep that is not inside a quoted
// string (with backslash escapes).
func cutOutsideQuotes(v []byte, sep byte) (before, after []byte) {
	quoted := false
	for i := 0; i < len(v); i++ {
		switch c := v[i]; {
		case quoted && c == '\\':
			i++
		case c == '"':
			quoted = !quoted
		case !quoted && c == sep:
			return v[:i], v[i+1:]
		}
	}
	return v, nil
}

// parseUint reads a non-negative decimal integer (at most 15 digits, as in
// structured fields) without allocating.
func parseUint(b []byte) (int64, bool) {
	if len(b) == 0 || len(b) > 15 {
		return 0, false
	}
	var n int64
	for _, c := range b {
		if c < '0' || c > '9' {
			return 0, false
		}
		n = n*10 + int64(c-'0')
	}
	return n, true
}

// status describes the upstream's pause for /admin/upstreams.
func (p *pause) status(now time.Time) map[string]any {
	s := map[string]any{"quota_remaining": p.remaining.Load(), "paused": false}
	if until := p.until.Load(); until > now.UnixNano() {
		s["paused"] = true
		s["paused_until"] = time.Unix(0, until).UTC().Format(time.RFC3339Nano)
	}
	return s
}
