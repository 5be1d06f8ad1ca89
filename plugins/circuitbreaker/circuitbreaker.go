// Package circuitbreaker is the circuit_breaker plugin: it stops sending
// traffic to a provider that keeps failing, answers callers at once with 503
// circuit_open (Retry-After: the time until the next probe) without touching
// the network, lets a few probes through after open_for, and closes again
// when they succeed.
//
// It runs inside retry and once per attempt (stage 800), so every attempt is
// counted and a retry never goes to an open circuit.
//
// One breaker per target: an upstream with one target has one breaker; an
// upstream with several has one per target, and the plugin chooses the
// attempt's target itself (Exchange.UseTarget), skipping targets whose
// breaker is open. Callers get circuit_open only when no target's breaker
// lets the attempt through. sluice_circuit_state{upstream} reports the
// upstream as a whole: open when every target's breaker is open, half-open
// when some are not closed, closed when all are.
//
// Breakers live across reloads (proxy.Share), keyed by upstream, settings
// and target URL: a reload that changes neither keeps an open circuit open.
//
// The implementation is our own rather than sony/gobreaker: gobreaker takes
// a mutex on every request and its Execute takes a closure, while here the
// closed-state check and record are a few atomic operations with no lock and
// no allocation (see BenchmarkBreakerClosed and TestBreakerAllocs).
package circuitbreaker

import (
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/sluice-gw/sluice/proxy"
	"github.com/sluice-gw/sluice/proxy/config"
	"github.com/sluice-gw/sluice/proxy/httpx"
	"github.com/valyala/fasthttp"
	"go.opentelemetry.io/otel/attribute"
)

// Config of circuit_breaker. The breaker trips on consecutive_failures, on
// failure_ratio, or on either when both are set.
type Config struct {
	// ConsecutiveFailures opens the circuit after that many failed attempts
	// in a row. Default 5 when failure_ratio is not set; 0 with
	// failure_ratio set means only the ratio counts.
	ConsecutiveFailures int `koanf:"consecutive_failures" json:"consecutive_failures"`
	// FailureRatio opens the circuit when at least that share (0 to 1] of
	// the attempts in the last Window failed, once MinRequests attempts were
	// seen in it. Default 0: off.
	FailureRatio float64 `koanf:"failure_ratio" json:"failure_ratio,omitempty"`
	// MinRequests is the number of attempts in the window below which
	// failure_ratio does not trip. Default 20.
	MinRequests int `koanf:"min_requests" json:"min_requests"`
	// Window is the rolling window of failure_ratio. Default 10s.
	Window config.Duration `koanf:"window" json:"window"`
	// OpenFor is how long the circuit stays open the first time. Each time it
	// opens again right after half-open, it stays open twice as long, up to
	// MaxOpenFor. Default 30s.
	OpenFor config.Duration `koanf:"open_for" json:"open_for"`
	// MaxOpenFor caps the growth of OpenFor. Default 5m (at least OpenFor).
	MaxOpenFor config.Duration `koanf:"max_open_for" json:"max_open_for"`
	// HalfOpenRequests is the number of probes let through after OpenFor;
	// the circuit closes when all of them succeed and opens again on the
	// first failure. Default 1.
	HalfOpenRequests int `koanf:"half_open_requests" json:"half_open_requests"`
	// FailureStatuses are the answers that count as failures, as codes (503)
	// or classes ("5xx"). Timeouts and connection errors always count; 429
	// never does (the provider is rate limiting, not failing). Default ["5xx"].
	FailureStatuses []string `koanf:"failure_statuses" json:"failure_statuses"`
}

// Defaults sets the defaults above; consecutive_failures and max_open_for
// depend on other settings and are settled after decoding.
func (c *Config) Defaults() {
	*c = Config{
		MinRequests:      20,
		Window:           config.Duration(10 * time.Second),
		OpenFor:          config.Duration(30 * time.Second),
		HalfOpenRequests: 1,
		FailureStatuses:  []string{"5xx"},
	}
}

// Settle sets consecutive_failures to 5 when neither it nor failure_ratio is
// set, and max_open_for to 5m (at least open_for) when unset.
func (c *Config) Settle() {
	if c.ConsecutiveFailures == 0 && c.FailureRatio == 0 {
		c.ConsecutiveFailures = 5
	}
	if c.MaxOpenFor == 0 {
		c.MaxOpenFor = max(config.Duration(5*time.Minute), c.OpenFor)
	}
}

// Validate checks the settings.
func (c *Config) Validate() error {
	var p config.Problems
	if c.ConsecutiveFailures < 0 {
		p.Add("consecutive_failures", "must not be negative")
	}
	if c.FailureRatio < 0 || c.FailureRatio > 1 {
		p.Addf("failure_ratio", "must be between 0 and 1 (a share of attempts), got %v", c.FailureRatio)
	}
	if c.MinRequests < 1 {
		p.Add("min_requests", "must be at least 1")
	}
	if c.Window < config.Duration(100*time.Millisecond) {
		p.Addf("window", "must be at least 100ms, got %s", c.Window)
	}
	if c.OpenFor <= 0 {
		p.Add("open_for", "must be a positive duration")
	}
	if c.MaxOpenFor < c.OpenFor {
		p.Addf("max_open_for", "%s is shorter than open_for %s", c.MaxOpenFor, c.OpenFor)
	}
	if c.HalfOpenRequests < 1 || c.HalfOpenRequests > 1000 {
		p.Addf("half_open_requests", "must be between 1 and 1000, got %d", c.HalfOpenRequests)
	}
	if len(c.FailureStatuses) == 0 {
		p.Add("failure_statuses", "must list at least one status (timeouts and connection errors always count)")
	}
	for i, s := range c.FailureStatuses {
		key := fmt.Sprintf("failure_statuses[%d]", i)
		lo, hi, err := httpx.ParseStatusSpec(s)
		switch {
		case err != nil:
			p.Add(key, err.Error())
		case lo <= 429 && 429 <= hi:
			p.Addf(key, "%q includes 429, which is not a failure: the provider is rate limiting (rate_limit handles it); list the other codes", s)
		case hi < 400:
			p.Addf(key, "%q is not an error status", s)
		}
	}
	return p.Err()
}

// Factory registers the plugin.
var Factory = proxy.Define("circuit_breaker", build)

// metrics are registered once per process.
type metrics struct {
	state       *prometheus.GaugeVec
	transitions *prometheus.CounterVec
}

// groupKey names the breakers of an upstream: routes with the same settings
// share them; a reload that keeps the settings keeps their state.
type groupKey struct {
	upstream string
	s        settings
	window   time.Duration
	failing  string
}

func build(c *Config, b *proxy.Build) (proxy.Plugin, error) {
	m := proxy.Share(b, struct{}{}, func() *metrics {
		m := &metrics{
			state: prometheus.NewGaugeVec(prometheus.GaugeOpts{
				Name: "sluice_circuit_state",
				Help: "Circuit breaker state by upstream: 0 closed, 1 half-open, 2 open (open: every target's circuit is open).",
			}, []string{"upstream"}),
			transitions: prometheus.NewCounterVec(prometheus.CounterOpts{
				Name: "sluice_circuit_transitions_total",
				Help: "Circuit breaker state changes by upstream and new state (closed, half_open, open), targets included.",
			}, []string{"upstream", "to"}),
		}
		b.Registerer.MustRegister(m.state, m.transitions)
		return m
	})

	s := settings{
		consecutive: int64(c.ConsecutiveFailures),
		ratio:       c.FailureRatio,
		minRequests: int64(c.MinRequests),
		openFor:     c.OpenFor.D(),
		maxOpenFor:  c.MaxOpenFor.D(),
		probes:      int64(c.HalfOpenRequests),
	}
	key := groupKey{b.Upstream.Name, s, c.Window.D(), strings.Join(c.FailureStatuses, ",")}
	g := proxy.Share(b, key, func() *group {
		g := &group{upstream: b.Upstream.Name, s: &s, window: c.Window.D(), byURL: map[string]*breaker{},
			gauge: m.state.WithLabelValues(b.Upstream.Name)}
		for st := Closed; st <= Open; st++ {
			g.to[st] = m.transitions.WithLabelValues(b.Upstream.Name, st.String())
		}
		return g
	})
	g.log.Store(b.Logger)

	p := &Plugin{group: g, detail: "upstream " + b.Upstream.Name + " is failing: its circuit breaker is open"}
	for _, t := range b.Upstream.Targets {
		p.targets = append(p.targets, g.breaker(t.URL))
	}
	g.current.Store(&p.targets)
	g.changed(nil, Closed, "", 0) // publish the state of a group that a reload kept
	for _, s := range c.FailureStatuses {
		lo, hi, _ := httpx.ParseStatusSpec(s)
		for i := lo; i <= hi; i++ {
			p.failing[i] = true
		}
	}
	b.ReportStatus("circuit_breaker", g.status)
	return p, nil
}

// Plugin is the compiled circuit_breaker of one route.
type Plugin struct {
	group   *group
	targets []*breaker // by target index
	failing [600]bool
	detail  string
}

var _ proxy.Plugin = (*Plugin)(nil)

// Handle lets the attempt through if its target's circuit allows it, and
// records how it went.
func (p *Plugin) Handle(ctx *fasthttp.RequestCtx, ex *proxy.Exchange, next proxy.Handler) error {
	var br *breaker
	var token uint64
	if len(p.targets) == 1 {
		tok, ok, wait := p.targets[0].allow()
		if !ok {
			traceDecision(ex, "open", p.targets[0].target)
			return p.open(wait)
		}
		br, token = p.targets[0], tok
	} else {
		u := ex.Upstream
		t := u.PickExcept(ex.Target)
		tok, ok, wait := p.targets[t.Index()].allow()
		if !ok {
			// Another target whose circuit lets the attempt through: a healthy
			// one first, else an ejected one (when every target is out,
			// requests are still sent rather than all refused).
			n := len(u.Targets)
			for pass := 0; pass < 2 && !ok; pass++ {
				for i := 1; i < n && !ok; i++ {
					c := u.Targets[(t.Index()+i)%n]
					if c.Available() != (pass == 0) {
						continue
					}
					var w time.Duration
					if tok, ok, w = p.targets[c.Index()].allow(); ok {
						t = c
					} else {
						wait = min(wait, w)
					}
				}
			}
			if !ok {
				traceDecision(ex, "open", p.targets[t.Index()].target)
				return p.open(wait)
			}
		}
		ex.UseTarget(t)
		br, token = p.targets[t.Index()], tok
	}
	traceDecision(ex, "allowed", br.target)
	// A panic further in must not leave a half-open probe slot taken for good.
	recorded := false
	defer func() {
		if !recorded {
			br.record(token, ignored)
		}
	}()
	sent := ex.Attempts
	err := next.Handle(ctx, ex)
	recorded = true
	if ex.Attempts == sent {
		// Nothing left for the provider (a stage further in refused the
		// attempt, or the deadline passed first): nothing learnt about it.
		br.record(token, ignored)
	} else {
		br.record(token, p.outcome(ctx, ex, err))
	}
	return err
}

// outcome classifies an attempt: timeouts, connection errors and malformed
// answers fail; failure statuses fail; 429 and other answers succeed; errors
// raised inside the gateway (overloaded, a rate limit) teach nothing.
func (p *Plugin) outcome(ctx *fasthttp.RequestCtx, ex *proxy.Exchange, err error) outcome {
	if err != nil {
		switch proxy.Classify(err).Code {
		case proxy.CodeUpstreamTimeout, proxy.CodeUpstreamUnreachable, proxy.CodeUpstreamError:
			return failure
		}
		return ignored
	}
	if !ex.FromUpstream {
		return ignored
	}
	if s := ctx.Response.StatusCode(); s >= 0 && s < len(p.failing) && p.failing[s] {
		return failure
	}
	return success
}

// traceDecision records the breaker's decision on the request's span
// (sampled requests only).
func traceDecision(ex *proxy.Exchange, decision, target string) {
	if ex.Traced() {
		ex.TraceEvent("circuit_breaker.decision", attribute.String("circuit_breaker.decision", decision),
			attribute.String("circuit_breaker.target", target))
	}
}

func (p *Plugin) open(wait time.Duration) error {
	e := proxy.NewError(proxy.CodeCircuitOpen, p.detail)
	e.RetryAfter = max(wait, time.Second)
	return e
}

// group holds the breakers of one upstream (one per target URL) and
// publishes the upstream's state.
type group struct {
	upstream string
	s        *settings
	window   time.Duration
	log      atomic.Pointer[slog.Logger]
	current  atomic.Pointer[[]*breaker] // the targets of the latest config
	gauge    prometheus.Gauge
	to       [3]prometheus.Counter

	mu    sync.Mutex
	byURL map[string]*breaker
}

func (g *group) breaker(url string) *breaker {
	g.mu.Lock()
	defer g.mu.Unlock()
	if b, ok := g.byURL[url]; ok {
		return b
	}
	b := newBreaker(g.s, g, url, g.window)
	g.byURL[url] = b
	return b
}

// changed logs a transition (once, by the goroutine that made it), counts
// it and publishes the upstream's state.
func (g *group) changed(b *breaker, to State, why string, openFor time.Duration) {
	if b != nil {
		g.to[to].Inc()
		attrs := []any{"upstream", g.upstream}
		if cur := g.current.Load(); cur != nil && len(*cur) > 1 {
			attrs = append(attrs, "target", b.target)
		}
		switch to {
		case Open:
			attrs = append(attrs, "reason", why, "open_for", openFor.String())
			g.log.Load().Warn("circuit opened", attrs...)
		case HalfOpen:
			g.log.Load().Info("circuit half-open: letting probes through", attrs...)
		case Closed:
			g.log.Load().Info("circuit closed: the upstream answers again", attrs...)
		}
	}
	g.gauge.Set(float64(g.state()))
}

// state is the upstream's state: open when every target's circuit is open,
// half-open when some circuit is not closed, else closed.
func (g *group) state() State {
	cur := g.current.Load()
	if cur == nil {
		return Closed
	}
	open, closed := 0, 0
	for _, b := range *cur {
		switch b.State() {
		case Open:
			open++
		case Closed:
			closed++
		}
	}
	switch {
	case open == len(*cur):
		return Open
	case closed == len(*cur):
		return Closed
	}
	return HalfOpen
}

// breakerStatus is one circuit in /admin/upstreams.
type breakerStatus struct {
	Target     string  `json:"target,omitempty"`
	State      string  `json:"state"`
	Failures   int64   `json:"consecutive_failures"`
	HalfOpenIn float64 `json:"half_open_in_seconds,omitempty"`
	Trips      int64   `json:"trips,omitempty"`
}

func (g *group) status() any {
	cur := g.current.Load()
	out := struct {
		State   string          `json:"state"`
		Targets []breakerStatus `json:"targets,omitempty"`
		breakerStatus
	}{State: g.state().String()}
	if cur == nil {
		return out
	}
	var list []breakerStatus
	for _, b := range *cur {
		list = append(list, breakerStatus{Target: b.target, State: b.State().String(), Failures: b.consec.Load(),
			HalfOpenIn: b.halfOpenIn().Seconds(), Trips: b.trips.Load()})
	}
	if len(list) == 1 {
		out.breakerStatus = list[0]
		out.breakerStatus.State = ""
		out.breakerStatus.Target = ""
	} else {
		out.Targets = list
	}
	return out
}
