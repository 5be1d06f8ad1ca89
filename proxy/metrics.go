package proxy

import (
	"strconv"
	"sync"
	"sync/atomic"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
)

// UnmatchedRoute is the route label of requests that matched no route (and of
// requests rejected before routing: malformed, too large, overloaded).
const UnmatchedRoute = "_unmatched"

// Metrics holds the gateway's Prometheus registry and metric vectors. One per
// process: vectors outlive reloads, and each compiled route resolves its label
// children once, so that a request never looks a child up by name.
type Metrics struct {
	Registry *prometheus.Registry

	requests    *prometheus.CounterVec   // route, upstream, method, status
	duration    *prometheus.HistogramVec // route, upstream
	upstreamDur *prometheus.HistogramVec // upstream, outcome
	discarded   *prometheus.CounterVec   // upstream, reason
	errors      *prometheus.CounterVec   // route, code
	reloads     *prometheus.CounterVec   // result
	streams     *prometheus.CounterVec   // upstream, outcome
	firstByte   *prometheus.HistogramVec // route, upstream
	streamBytes *prometheus.CounterVec   // route, upstream
	tunnels     *prometheus.CounterVec   // route, outcome
	inflight    atomic.Int64
	bodies      bodyBudget // server.max_body_memory, process-wide
	tracing     tracingStats
	usage       usageVecs
	open        streamSet // streams and tunnels open now
}

// Upstream attempt outcomes (label values of sluice_upstream_duration_seconds).
const (
	OutcomeOK          = 0 // an answer below 500
	OutcomeErrorStatus = 1 // a 5xx answer
	OutcomeTimeout     = 2
	OutcomeConnError   = 3 // refused, reset, closed, malformed answer
	numOutcomes        = 4
)

var outcomeNames = [numOutcomes]string{"ok", "error_status", "timeout", "conn_error"}

// NewMetrics creates the registry with the Go and process collectors and the
// gateway's own series.
func NewMetrics() *Metrics {
	reg := prometheus.NewRegistry()
	m := &Metrics{Registry: reg}
	m.requests = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "sluice_requests_total",
		Help: "Requests served, by route, upstream, method and response status.",
	}, []string{"route", "upstream", "method", "status"})
	m.duration = prometheus.NewHistogramVec(prometheus.HistogramOpts{
		Name:    "sluice_request_duration_seconds",
		Help:    "Time from reading a request to having its response ready, by route.",
		Buckets: []float64{.0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30},
	}, []string{"route", "upstream"})
	m.upstreamDur = prometheus.NewHistogramVec(prometheus.HistogramOpts{
		Name:    "sluice_upstream_duration_seconds",
		Help:    "Duration of each upstream attempt, by upstream and outcome (ok, error_status, timeout, conn_error).",
		Buckets: []float64{.0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30},
	}, []string{"upstream", "outcome"})
	m.discarded = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "sluice_upstream_connections_discarded_total",
		Help: "Pooled upstream connections closed instead of used, by upstream and reason (stale: closed by the provider or with stray bytes waiting before reuse; framing: more bytes followed an answer than its framing said).",
	}, []string{"upstream", "reason"})
	m.errors = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "sluice_errors_total",
		Help: "Errors answered as problem+json, by route and code (gateway errors and normalized upstream errors).",
	}, []string{"route", "code"})
	m.reloads = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "sluice_config_reloads_total",
		Help: "Configuration reloads, by result (success, failure).",
	}, []string{"result"})
	inflight := prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Name: "sluice_inflight_requests",
		Help: "Requests being served right now.",
	}, func() float64 { return float64(m.inflight.Load()) })
	bodyBytes := prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Name: "sluice_body_memory_bytes",
		Help: "Bytes of request and response bodies held in memory right now (budget: server.max_body_memory).",
	}, func() float64 { return float64(m.bodies.used.Load()) })
	bodyRefusals := prometheus.NewCounterFunc(prometheus.CounterOpts{
		Name: "sluice_body_memory_refusals_total",
		Help: "Calls answered 503 overloaded because their body would have exceeded server.max_body_memory.",
	}, func() float64 { return float64(m.bodies.refusals.Load()) })
	m.streams = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "sluice_upstream_streams_total",
		Help: "Streamed responses, by upstream and how they ended (complete, upstream_cut, idle_timeout, max_duration, caller_gone, drained).",
	}, []string{"upstream", "outcome"})
	m.firstByte = prometheus.NewHistogramVec(prometheus.HistogramOpts{
		Name:    "sluice_stream_first_byte_seconds",
		Help:    "Time from reading a request to having the head of its streamed response (time to first byte), by route.",
		Buckets: []float64{.0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30},
	}, []string{"route", "upstream"})
	m.streamBytes = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "sluice_streamed_bytes_total",
		Help: "Body bytes of streamed responses passed from the upstream to the caller, by route (counted when each stream ends).",
	}, []string{"route", "upstream"})
	m.tunnels = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "sluice_tunnels_total",
		Help: "Upgrade tunnels (WebSocket and the like) that ended, by route and how (closed, idle_timeout, drained).",
	}, []string{"route", "outcome"})
	openStreams := prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Name: "sluice_open_streams",
		Help: "Streamed responses being passed on and upgrade tunnels open right now.",
	}, func() float64 { return float64(m.open.count()) })
	reg.MustRegister(m.requests, m.duration, m.upstreamDur, m.discarded, m.errors, m.reloads, inflight, bodyBytes, bodyRefusals,
		m.streams, m.firstByte, m.streamBytes, m.tunnels, openStreams,
		collectors.NewGoCollector(),
		collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	m.registerTracing(reg)
	m.registerUsage(reg)
	// Show both reload results from the start, so that alerts on failures work
	// before the first failure.
	m.reloads.WithLabelValues("success")
	m.reloads.WithLabelValues("failure")
	return m
}

// forgetRoute deletes the series of a route that a reload removed.
func (m *Metrics) forgetRoute(route string) {
	m.requests.DeletePartialMatch(prometheus.Labels{"route": route})
	m.duration.DeletePartialMatch(prometheus.Labels{"route": route})
	m.errors.DeletePartialMatch(prometheus.Labels{"route": route})
	m.firstByte.DeletePartialMatch(prometheus.Labels{"route": route})
	m.streamBytes.DeletePartialMatch(prometheus.Labels{"route": route})
	m.tunnels.DeletePartialMatch(prometheus.Labels{"route": route})
}

// forgetRouteUpstream deletes a route's series for an upstream it no longer uses.
func (m *Metrics) forgetRouteUpstream(route, upstream string) {
	m.requests.DeletePartialMatch(prometheus.Labels{"route": route, "upstream": upstream})
	m.duration.DeletePartialMatch(prometheus.Labels{"route": route, "upstream": upstream})
	m.firstByte.DeletePartialMatch(prometheus.Labels{"route": route, "upstream": upstream})
	m.streamBytes.DeletePartialMatch(prometheus.Labels{"route": route, "upstream": upstream})
}

// routeMetrics are one route's resolved children. Children whose labels depend
// on the request (method, status, code) are resolved on first use and cached
// in fixed arrays, so a request pays two array indexes and an atomic load.
type routeMetrics struct {
	m               *Metrics
	route, upstream string
	duration        prometheus.Observer
	firstByte       prometheus.Observer // streamed responses only
	streamBytes     prometheus.Counter
	byMethod        [numMethods]atomic.Pointer[statusTable]
	errors          [numCodes]atomic.Pointer[counterCell]
	mu              sync.Mutex // serializes first-use resolution
}

type counterCell struct{ c prometheus.Counter }

const minStatus, maxStatus = 100, 599

type statusTable [maxStatus - minStatus + 1]atomic.Pointer[counterCell]

func newRouteMetrics(m *Metrics, route, upstream string) *routeMetrics {
	return &routeMetrics{m: m, route: route, upstream: upstream,
		duration:    m.duration.WithLabelValues(route, upstream),
		firstByte:   m.firstByte.WithLabelValues(route, upstream),
		streamBytes: m.streamBytes.WithLabelValues(route, upstream)}
}

// countRequest increments sluice_requests_total for one request.
func (rm *routeMetrics) countRequest(method []byte, status int) {
	mi := methodIndex(method)
	if status < minStatus || status > maxStatus {
		status = 500
	}
	tab := rm.byMethod[mi].Load()
	if tab == nil {
		rm.mu.Lock()
		if tab = rm.byMethod[mi].Load(); tab == nil {
			tab = new(statusTable)
			rm.byMethod[mi].Store(tab)
		}
		rm.mu.Unlock()
	}
	cell := tab[status-minStatus].Load()
	if cell == nil {
		cell = &counterCell{rm.m.requests.WithLabelValues(rm.route, rm.upstream, methodNames[mi], strconv.Itoa(status))}
		tab[status-minStatus].Store(cell)
	}
	cell.c.Inc()
}

// countError increments sluice_errors_total for one problem+json answer.
func (rm *routeMetrics) countError(code Code) {
	if code >= numCodes {
		code = CodeInternalError
	}
	cell := rm.errors[code].Load()
	if cell == nil {
		cell = &counterCell{rm.m.errors.WithLabelValues(rm.route, code.String())}
		rm.errors[code].Store(cell)
	}
	cell.c.Inc()
}

// Method label values. Unusual methods share "OTHER" so that a caller cannot
// create series at will.
const numMethods = 10

var methodNames = [numMethods]string{"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS", "CONNECT", "TRACE", "OTHER"}

func methodIndex(m []byte) int {
	switch string(m) {
	case "GET":
		return 0
	case "HEAD":
		return 1
	case "POST":
		return 2
	case "PUT":
		return 3
	case "PATCH":
		return 4
	case "DELETE":
		return 5
	case "OPTIONS":
		return 6
	case "CONNECT":
		return 7
	case "TRACE":
		return 8
	}
	return 9
}

// upstreamMetrics are one upstream's resolved attempt histograms and
// connection counters.
type upstreamMetrics struct {
	byOutcome [numOutcomes]prometheus.Observer
	discarded [numDiscards]prometheus.Counter
	streams   [numStreamOutcomes]prometheus.Counter
}

// Why a pooled upstream connection was closed instead of used (again).
const (
	discardStale   = 0 // found closed, or with bytes waiting, before reuse
	discardFraming = 1 // more bytes followed an answer than its framing said
	numDiscards    = 2
)

var discardNames = [numDiscards]string{"stale", "framing"}

func newUpstreamMetrics(m *Metrics, upstream string) upstreamMetrics {
	var um upstreamMetrics
	for i := range um.byOutcome {
		um.byOutcome[i] = m.upstreamDur.WithLabelValues(upstream, outcomeNames[i])
	}
	for i := range um.discarded {
		um.discarded[i] = m.discarded.WithLabelValues(upstream, discardNames[i])
	}
	for i := range um.streams {
		um.streams[i] = m.streams.WithLabelValues(upstream, streamOutcomeNames[i])
	}
	return um
}
