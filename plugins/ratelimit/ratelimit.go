// Package ratelimit is the rate_limit plugin: token buckets that keep the
// calls of a route within a rate, per upstream, route, consumer, caller
// address or header value; optionally shared by all gateways through Redis
// (GCRA); optionally obeying the provider's own "slow down" (429/503 with
// Retry-After, RateLimit or X-RateLimit-* headers).
//
// One YAML block acts at two places in the pipeline (proxy.DefineParts):
// limits that guard a caller's fair share (route, consumer, ip, header)
// count every call before the cache (the main part); limits keyed by
// upstream guard the provider's quota and count each attempt that really
// leaves for it, after the cache and inside retries (the upstream_quota
// part), where the provider's answers are watched as well.
//
// Limiter state is shared (proxy.Share): an upstream limit is one bucket per
// upstream shared by all its routes, and buckets survive reloads that keep
// their settings. It must not write error bodies itself: rejections are
// returned as *proxy.Error.
package ratelimit

import (
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/sluice-gw/sluice/proxy"
	"github.com/sluice-gw/sluice/proxy/httpx"
	"github.com/valyala/fasthttp"
	"go.opentelemetry.io/otel/attribute"
)

// Factory registers the plugin. Its main part holds the caller limits; its
// "upstream_quota" part the upstream limits and the provider watch.
var Factory = proxy.DefineParts("rate_limit", []string{PartUpstreamQuota}, build)

// PartUpstreamQuota is the part that counts each attempt that leaves for
// the provider, inside retries and after the cache.
const PartUpstreamQuota = "upstream_quota"

func build(c *Config, b *proxy.Build) (proxy.Parts, error) {
	m := sharedMetrics(b)
	caller := &part{}
	quota := &part{perAttempt: true}
	for _, lc := range c.limits() {
		l := newLimit(lc, c, b, m)
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
		quota.rules = newQuotaRules(c)
		if b.Cluster != nil {
			watchPauses(b, quota.pause)
		}
	}
	if b.Cluster != nil {
		health, logger := sharedHealth(b), b.Logger
		b.OnStart(func() { health.log.Store(logger) })
	}
	for _, p := range []*part{caller, quota} {
		for i, l := range p.limits {
			if i > 0 {
				p.policy = append(p.policy, ", "...)
			}
			p.policy = append(p.policy, l.policy...)
		}
	}
	parts := proxy.Parts{}
	if len(caller.limits) > 0 {
		parts[""] = caller
	}
	if len(quota.limits) > 0 || quota.pause != nil {
		parts[PartUpstreamQuota] = quota
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
		b.ReportStatus("rate_limit/route:"+b.Route.Name, func() any {
			now := clock()
			ls := make([]any, len(routeLimits))
			for i, l := range routeLimits {
				ls[i] = l.status(now)
			}
			return map[string]any{"limits": ls}
		})
	}
	return parts, nil
}

// part is the plugin at one stage: the limits counted there and, at the
// upstream stage, the provider watch.
type part struct {
	limits     []*limit
	policy     []byte        // RateLimit-Policy value
	maxWait    time.Duration // queue mode; 0 rejects at once
	perAttempt bool          // upstream stage: headers from the first attempt only
	pause      *pause        // respect_upstream
	rules      *quotaRules   // quota_headers, throttle_statuses; nil for none
}

var (
	hdrPolicy    = httpx.NewName("RateLimit-Policy")
	hdrRateLimit = httpx.NewName("RateLimit")
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
			p.pause.observe(&ctx.Response, ex.UpstreamQuota(&ctx.Response), p.rules)
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
			if ex.Traced() {
				ex.TraceEvent("rate_limit.rejected", attribute.String("rate_limit.limit", l.name),
					attribute.Float64("rate_limit.retry_after_seconds", d.retryAfter.Seconds()))
			}
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
		if ex.Traced() {
			ex.TraceEvent("rate_limit.wait", attribute.Float64("rate_limit.wait_seconds", wait.Seconds()))
		}
		t := time.NewTimer(wait)
		<-t.C
	}
	err := next.Handle(ctx, ex)
	if p.pause != nil && err == nil && ex.FromUpstream {
		p.pause.observe(&ctx.Response, ex.UpstreamQuota(&ctx.Response), p.rules)
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
	return proxy.Share(b, struct{}{}, func() *metrics {
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
	})
}
