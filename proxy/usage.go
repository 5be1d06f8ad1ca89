package proxy

import (
	"slices"
	"sync"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/sluice-gw/sluice/proxy/config"
	"github.com/valyala/fasthttp"
)

// Per-consumer usage: calls, errors and the provider's quota figures by
// consumer and upstream. The consumer label takes only the names of the
// configured consumers, "anonymous" (authenticate's anonymous callers) and
// "_other" (a name the config does not list, such as a JWT subject), so the
// series are bounded by the config; they are all made when the config loads.
// Calls without a consumer (no authenticate plugin) are not counted here.

// OtherConsumer is the consumer label of callers whose name the config does
// not list.
const OtherConsumer = "_other"

// usageVecs are the process-wide vectors.
type usageVecs struct {
	calls, errors    *prometheus.CounterVec
	remaining, limit *prometheus.GaugeVec
	mu               sync.Mutex
	bound            map[[2]string]bool // (consumer, upstream) series that exist
}

func (m *Metrics) registerUsage(reg prometheus.Registerer) {
	labels := []string{"consumer", "upstream"}
	v := &m.usage
	v.calls = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "sluice_consumer_requests_total",
		Help: "Calls by consumer and upstream (calls whose caller authenticated as a consumer).",
	}, labels)
	v.errors = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "sluice_consumer_errors_total",
		Help: "Calls by consumer and upstream answered with a status of 400 or more (gateway or provider).",
	}, labels)
	v.remaining = prometheus.NewGaugeVec(prometheus.GaugeOpts{
		Name: "sluice_consumer_quota_remaining",
		Help: "Quota the provider reported left (X-RateLimit-Remaining or RateLimit-Remaining) on its latest answer to the consumer.",
	}, labels)
	v.limit = prometheus.NewGaugeVec(prometheus.GaugeOpts{
		Name: "sluice_consumer_quota_limit",
		Help: "Quota the provider reported in all (X-RateLimit-Limit or RateLimit-Limit) on its latest answer to the consumer.",
	}, labels)
	reg.MustRegister(v.calls, v.errors, v.remaining, v.limit)
}

// usageCells are the series of one (consumer, upstream).
type usageCells struct {
	calls, errors    prometheus.Counter
	remaining, limit prometheus.Gauge
}

// usageTable resolves a call's series: consumer index, then its upstream's cells.
type usageTable struct {
	index      map[string]int // consumer name -> index in labels
	other      int            // index of OtherConsumer
	byUpstream map[*Upstream][]usageCells
}

// bindUsage makes the usage series of the state's consumers and upstreams
// and deletes those of consumers or upstreams no longer configured.
func (st *state) bindUsage(m *Metrics) {
	names := slices.Sorted(func(yield func(string) bool) {
		for name := range st.cfg.Consumers {
			if !yield(name) {
				return
			}
		}
	})
	if !slices.Contains(names, config.AnonymousConsumer) {
		names = append(names, config.AnonymousConsumer)
	}
	names = append(names, OtherConsumer)
	t := &usageTable{index: make(map[string]int, len(names)), other: len(names) - 1,
		byUpstream: make(map[*Upstream][]usageCells, len(st.upstreams))}
	for i, n := range names {
		t.index[n] = i
	}
	v := &m.usage
	v.mu.Lock()
	defer v.mu.Unlock()
	bound := map[[2]string]bool{}
	for _, u := range st.upstreams {
		cells := make([]usageCells, len(names))
		for i, c := range names {
			cells[i] = usageCells{
				calls: v.calls.WithLabelValues(c, u.Name), errors: v.errors.WithLabelValues(c, u.Name),
				remaining: v.remaining.WithLabelValues(c, u.Name), limit: v.limit.WithLabelValues(c, u.Name),
			}
			bound[[2]string{c, u.Name}] = true
		}
		t.byUpstream[u] = cells
	}
	for key := range v.bound {
		if !bound[key] {
			l := prometheus.Labels{"consumer": key[0], "upstream": key[1]}
			v.calls.Delete(l)
			v.errors.Delete(l)
			v.remaining.Delete(l)
			v.limit.Delete(l)
		}
	}
	v.bound = bound
	st.usage = t
}

// count records one call of ex.Consumer (not empty) to ex.Upstream.
func (t *usageTable) count(ctx *fasthttp.RequestCtx, ex *Exchange, status int) {
	if t == nil {
		return
	}
	cells := t.byUpstream[ex.Upstream]
	if cells == nil {
		return
	}
	i, ok := t.index[ex.Consumer]
	if !ok {
		i = t.other
	}
	c := &cells[i]
	c.calls.Inc()
	if status >= 400 {
		c.errors.Inc()
	}
	q := ex.UpstreamQuota(&ctx.Response)
	if q == nil {
		return
	}
	if v, ok := quotaHeader(q.XRemaining, q.Remaining); ok {
		c.remaining.Set(v)
	}
	if v, ok := quotaHeader(q.XLimit, q.Limit); ok {
		c.limit.Set(v)
	}
}

// quotaHeader reads the first present of two header values holding a plain
// non-negative integer (the common X-RateLimit-* form, and RateLimit-* with
// a bare number).
func quotaHeader(a, b []byte) (float64, bool) {
	v := a
	if len(v) == 0 {
		v = b
	}
	if len(v) == 0 {
		return 0, false
	}
	n, err := fasthttp.ParseUint(v)
	if err != nil {
		return 0, false
	}
	return float64(n), true
}
