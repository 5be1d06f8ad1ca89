package ratelimit

import (
	"bytes"
	"strconv"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/sluice-gw/sluice/proxy"
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
	errs      [maxPrebuilt + 1]*proxy.Error
	detail    string
}

// maxPause caps a pause: a provider's bogus reset must not stop an upstream
// for days.
const maxPause = time.Hour

func sharedPause(b *proxy.Build, m *metrics) *pause {
	return b.Shared("ratelimit.pause|"+b.Upstream, func() any {
		p := &pause{upstream: b.Upstream, gauge: m.quota.WithLabelValues(b.Upstream)}
		p.remaining.Store(-1)
		p.gauge.Set(-1)
		p.detail = "upstream " + b.Upstream + " asked to slow down; calls are held back until its reset"
		for s := 1; s <= maxPrebuilt; s++ {
			e := proxy.NewError(proxy.CodeUpstreamRateLimited, p.detail)
			e.RetryAfter = time.Duration(s) * time.Second
			p.errs[s] = e
		}
		return p
	}).(*pause)
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

var (
	strRetryAfter     = "Retry-After"
	strRateLimit      = "RateLimit"
	strXRemaining     = "X-RateLimit-Remaining"
	strXReset         = "X-RateLimit-Reset"
	strDraftRemaining = "RateLimit-Remaining" // drafts up to -06
	strDraftReset     = "RateLimit-Reset"
)

// observe reads the provider's answer: 429/503 with Retry-After (a 429
// without one pauses 1s), the draft RateLimit field (r=0 pauses for t
// seconds), or X-RateLimit-Remaining: 0 with X-RateLimit-Reset (delta seconds
// or a Unix time, in seconds or milliseconds: told apart by size).
func (p *pause) observe(resp *fasthttp.Response) {
	var pauseFor time.Duration
	status := resp.StatusCode()
	rl, xrem, drem := resp.Header.Peek(strRateLimit), resp.Header.Peek(strXRemaining), resp.Header.Peek(strDraftRemaining)
	throttled := status == fasthttp.StatusTooManyRequests || status == fasthttp.StatusServiceUnavailable
	if !throttled && len(rl) == 0 && len(xrem) == 0 && len(drem) == 0 {
		return // nothing said: no clock read
	}
	now := time.Now()
	if throttled {
		pauseFor = proxy.ParseRetryAfter(resp.Header.Peek(strRetryAfter), now)
		if pauseFor == 0 && status == fasthttp.StatusTooManyRequests {
			pauseFor = time.Second
		}
	}
	remaining := int64(-1)
	if len(rl) > 0 {
		if r, t, ok := parseRateLimit(rl); ok {
			remaining = r
			if r == 0 {
				pauseFor = max(pauseFor, time.Duration(t)*time.Second)
			}
		}
	} else if len(xrem) > 0 {
		remaining, pauseFor = remainingReset(xrem, resp.Header.Peek(strXReset), now, pauseFor)
	} else if len(drem) > 0 {
		remaining, pauseFor = remainingReset(drem, resp.Header.Peek(strDraftReset), now, pauseFor)
	}
	if remaining >= 0 && p.remaining.Swap(remaining) != remaining {
		p.gauge.Set(float64(remaining))
	}
	if pauseFor <= 0 {
		return
	}
	until := now.Add(min(pauseFor, maxPause)).UnixNano()
	if p.extend(until) {
		if hub := p.hub.Load(); hub != nil {
			hub.publish(p.upstream, until)
		}
	}
}

func remainingReset(rem, reset []byte, now time.Time, pauseFor time.Duration) (int64, time.Duration) {
	r, err := strconv.ParseInt(string(bytes.TrimSpace(rem)), 10, 64)
	if err != nil || r < 0 {
		return -1, pauseFor
	}
	if r > 0 {
		return r, pauseFor
	}
	f, err := strconv.ParseFloat(string(bytes.TrimSpace(reset)), 64)
	if err != nil || f <= 0 {
		return 0, max(pauseFor, time.Second)
	}
	var d time.Duration
	switch {
	case f > 1e12: // Unix time in milliseconds
		d = time.UnixMilli(int64(f)).Sub(now)
	case f > 1e9: // Unix time in seconds
		d = time.Unix(int64(f), 0).Sub(now)
	default: // seconds from now
		d = time.Duration(f * float64(time.Second))
	}
	return 0, max(pauseFor, d)
}

// parseRateLimit reads the first item of a RateLimit field in the
// structured form of the current draft: `"name";r=R;t=T`. It reports the
// remaining quota r and the seconds t until it resets.
func parseRateLimit(v []byte) (r, t int64, ok bool) {
	item, _, _ := bytes.Cut(v, []byte(","))
	r, t = -1, 0
	params := bytes.Split(item, []byte(";"))
	for _, prm := range params[1:] {
		k, val, found := bytes.Cut(bytes.TrimSpace(prm), []byte("="))
		if !found {
			continue
		}
		n, err := strconv.ParseInt(string(val), 10, 64)
		if err != nil || n < 0 {
			continue
		}
		switch string(k) {
		case "r":
			r = n
		case "t":
			t = n
		}
	}
	return r, t, r >= 0
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
