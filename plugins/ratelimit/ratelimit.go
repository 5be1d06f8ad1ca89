// Package ratelimit is the rate_limit plugin: token buckets that keep the
// calls of a route within a rate, per upstream, route, consumer, caller
// address or header value; optionally shared by all gateways through Redis
// (GCRA); optionally obeying the provider's own "slow down" (429/503 with
// Retry-After, RateLimit or X-RateLimit-* headers).
//
// One YAML block acts at two stages (proxy.MultiStage): limits that guard a
// caller's fair share (route, consumer, ip, header) count every call before
// the cache (proxy.StageRateLimit); limits keyed by upstream guard the
// provider's quota and count each attempt that really leaves for it, after
// the cache and inside retries (proxy.StageUpstreamQuota), where the
// provider's answers are watched as well.
//
// Limiter state lives in Build.Shared: an upstream limit is one bucket per
// upstream shared by all its routes, and buckets survive reloads that keep
// their settings. It must not write error bodies itself: rejections are
// returned as *proxy.Error.
package ratelimit

import (
	"log/slog"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/sluice-gw/sluice/proxy"
	"github.com/valyala/fasthttp"
)

// Factory registers the plugin.
var Factory = &proxy.Factory{
	Name:      "rate_limit",
	Stage:     proxy.StageRateLimit,
	NewConfig: newConfig,
	New:       newPlugin,
}

// RateLimit is the compiled plugin of one route.
type RateLimit struct {
	caller, quota *part
	hub           *pauseHub    // cluster mode with respect_upstream: pauses shared through Redis
	presence      *presence    // cluster mode with nodes: 0: the heartbeat that counts gateways
	health        *redisHealth // cluster mode: Redis's state, shared by the gateway's limits
	logger        *slog.Logger // the config's logger, for health's messages
	started       atomic.Bool  // Close undoes only what Start did
}

var (
	_ proxy.Plugin     = (*RateLimit)(nil)
	_ proxy.MultiStage = (*RateLimit)(nil)
	_ proxy.Starter    = (*RateLimit)(nil)
	_ proxy.Closer     = (*RateLimit)(nil)
)

// Handle is not used: the parts run at their own stages.
func (r *RateLimit) Handle(ctx *fasthttp.RequestCtx, ex *proxy.Exchange, next proxy.Handler) error {
	return next.Handle(ctx, ex)
}

// Parts places caller limits before the cache and upstream limits (and the
// provider watch) per attempt.
func (r *RateLimit) Parts() []proxy.Part {
	parts := make([]proxy.Part, 0, 2)
	if r.caller != nil {
		parts = append(parts, proxy.Part{Stage: proxy.StageRateLimit, Plugin: r.caller})
	}
	if r.quota != nil {
		parts = append(parts, proxy.Part{Stage: proxy.StageUpstreamQuota, Plugin: r.quota})
	}
	return parts
}

// Start subscribes to the cluster's provider pauses and starts the heartbeat
// that counts the gateways. Everything that changes state shared with other
// configs happens here, not in New: a config that is only built (sluice
// validate, a rejected reload) leaves the serving one alone.
func (r *RateLimit) Start() error {
	if !r.started.CompareAndSwap(false, true) {
		return nil
	}
	if r.health != nil {
		r.health.log.Store(r.logger)
	}
	if p := r.quota.pauseOf(); p != nil && r.hub != nil {
		r.hub.watch(p)
		p.attach(r.hub)
		r.hub.acquire()
	}
	if r.presence != nil {
		r.presence.acquire()
	}
	return nil
}

// Close ends the subscription and the heartbeat when no other config uses
// them. A plugin that was never started (another plugin's Start failed)
// has nothing to undo.
func (r *RateLimit) Close() error {
	if !r.started.CompareAndSwap(true, false) {
		return nil
	}
	if p := r.quota.pauseOf(); p != nil && r.hub != nil {
		r.hub.release()
		p.detach(r.hub)
		r.hub.unwatch(p)
	}
	if r.presence != nil {
		r.presence.release()
	}
	return nil
}

func newPlugin(cfg any, b *proxy.Build) (proxy.Plugin, error) {
	c := cfg.(*Config)
	m := sharedMetrics(b)
	r := &RateLimit{}
	caller := &part{}
	quota := &part{perAttempt: true}
	for _, lc := range c.limits() {
		l := newLimit(lc, c, b, m)
		if l.fbAuto != nil && l.fbAuto.presence != nil {
			r.presence = l.fbAuto.presence
		}
		if l.kind == keyUpstream {
			quota.limits = append(quota.limits, l)
		} else {
			caller.limits = append(caller.limits, l)
		}
	}
	if c.Mode == modeQueue {
		caller.maxWait, quota.maxWait = c.MaxWait.D(), c.MaxWait.D()
	}
	if c.RespectUpstream {
		quota.pause = sharedPause(b, m)
		if b.Cluster != nil {
			r.hub = sharedHub(b)
		}
	}
	if b.Cluster != nil {
		r.health, r.logger = sharedHealth(b), b.Logger
	}
	for _, p := range []*part{caller, quota} {
		for i, l := range p.limits {
			if i > 0 {
				p.policy = append(p.policy, ", "...)
			}
			p.policy = append(p.policy, l.policy...)
		}
	}
	if len(caller.limits) > 0 {
		r.caller = caller
	}
	if len(quota.limits) > 0 || quota.pause != nil {
		r.quota = quota
	}
	var upstreamLimits, routeLimits []*limit
	upstreamLimits = quota.limits
	routeLimits = caller.limits
	pause := quota.pause
	// Only with something to show: the first section per upstream wins, and
	// an empty one from a route with caller limits alone would hide a
	// sibling route's upstream limits.
	if len(upstreamLimits) > 0 || pause != nil {
		b.ReportStatus("rate_limit", func() any {
			now := clock()
			s := map[string]any{}
			if len(upstreamLimits) > 0 {
				ls := make([]any, len(upstreamLimits))
				for i, l := range upstreamLimits {
					ls[i] = l.status(now)
				}
				s["limits"] = ls
			}
			if pause != nil {
				s["provider"] = pause.status(time.Now())
			}
			return s
		})
	}
	if len(routeLimits) > 0 {
		b.ReportStatus("rate_limit/route:"+b.Route, func() any {
			now := clock()
			ls := make([]any, len(routeLimits))
			for i, l := range routeLimits {
				ls[i] = l.status(now)
			}
			return map[string]any{"limits": ls}
		})
	}
	return r, nil
}

// part is the plugin at one stage: the limits counted there and, at the
// upstream stage, the provider watch.
type part struct {
	limits     []*limit
	policy     []byte        // RateLimit-Policy value
	maxWait    time.Duration // queue mode; 0 rejects at once
	perAttempt bool          // upstream stage: headers from the first attempt only
	pause      *pause        // respect_upstream
}

func (p *part) pauseOf() *pause {
	if p == nil {
		return nil
	}
	return p.pause
}

const (
	hdrPolicy    = "RateLimit-Policy"
	hdrRateLimit = "RateLimit"
)

// Handle decides, waits in queue mode, adds the RateLimit fields and calls
// next; at the upstream stage it then reads the provider's answer.
func (p *part) Handle(ctx *fasthttp.RequestCtx, ex *proxy.Exchange, next proxy.Handler) error {
	if p.pause != nil {
		if err := p.pause.check(); err != nil {
			return err
		}
	}
	if len(p.limits) == 0 { // respect_upstream alone
		err := next.Handle(ctx, ex)
		if err == nil && ex.FromUpstream {
			p.pause.observe(&ctx.Response)
		}
		return err
	}
	now := clock()
	headers := !p.perAttempt || ex.Attempts == 0
	maxWait := p.maxWait
	if maxWait > 0 {
		maxWait = min(maxWait, ex.Remaining())
	}
	var buf [256]byte
	items := buf[:0]
	var wait time.Duration
	for _, l := range p.limits {
		d := l.take(ctx, ex, now, maxWait)
		if headers {
			items = l.appendItem(items, &d)
		}
		if !d.ok {
			l.rejected.Inc()
			if headers {
				ex.AddResponseHeader(hdrPolicy, p.policy)
				ex.AddResponseHeader(hdrRateLimit, items)
			}
			return l.reject(d.retryAfter)
		}
		if d.wait > 0 {
			l.queued.Inc()
			l.wait.Observe(d.wait.Seconds())
			wait = max(wait, d.wait)
		} else {
			l.allowed.Inc()
		}
	}
	if headers {
		ex.AddResponseHeader(hdrPolicy, p.policy)
		ex.AddResponseHeader(hdrRateLimit, items)
	}
	if wait > 0 {
		t := time.NewTimer(wait)
		<-t.C
	}
	err := next.Handle(ctx, ex)
	if p.pause != nil && err == nil && ex.FromUpstream {
		p.pause.observe(&ctx.Response)
	}
	return err
}

// metrics are the plugin's collectors, registered once per process.
type metrics struct {
	decisions *prometheus.CounterVec
	wait      *prometheus.HistogramVec
	fallback  *prometheus.CounterVec
	quota     *prometheus.GaugeVec
}

func sharedMetrics(b *proxy.Build) *metrics {
	return b.Shared("ratelimit.metrics", func() any {
		m := &metrics{
			decisions: prometheus.NewCounterVec(prometheus.CounterOpts{
				Name: "sluice_ratelimit_decisions_total",
				Help: "Rate-limit decisions by route, limit (scope) and decision (allowed, rejected, queued).",
			}, []string{"route", "scope", "decision"}),
			wait: prometheus.NewHistogramVec(prometheus.HistogramOpts{
				Name:    "sluice_ratelimit_queue_wait_seconds",
				Help:    "Time calls waited for a token in queue mode.",
				Buckets: []float64{.001, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10},
			}, []string{"route", "scope"}),
			fallback: prometheus.NewCounterVec(prometheus.CounterOpts{
				Name: "sluice_ratelimit_fallback_total",
				Help: "Distributed rate-limit decisions taken locally because Redis was unreachable.",
			}, []string{"route", "scope"}),
			quota: prometheus.NewGaugeVec(prometheus.GaugeOpts{
				Name: "sluice_upstream_quota_remaining",
				Help: "Calls left in the provider's own quota, as its last answer said (-1: not told yet).",
			}, []string{"upstream"}),
		}
		b.Registerer.MustRegister(m.decisions, m.wait, m.fallback, m.quota)
		return m
	}).(*metrics)
}
