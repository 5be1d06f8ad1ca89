package proxy

import (
	"context"
	"log/slog"
	"math"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/sluice-gw/sluice/proxy/config"
	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/exporters/otlp/otlptrace/otlptracehttp"
	"go.opentelemetry.io/otel/sdk/resource"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/trace"
)

// Span export with the OpenTelemetry SDK: one TracerProvider per served
// configuration (a reload that changes `tracing:` gets a new one; the old
// one is flushed and shut down with its configuration).
//
// Export never holds up a call: finished spans go to the SDK's
// BatchSpanProcessor (non-blocking) behind a gate that counts what is
// queued or being exported. When the collector is down or slow the gate
// fills up to tracing.queue_size and further spans are dropped and counted;
// a failed export drops its batch and counts it too (the OTLP exporter's own
// retries are off, so that a dead collector costs one timeout per batch).

// tracingStats are the process-wide span counters (sluice_tracing_spans_*).
type tracingStats struct {
	exported atomic.Uint64
	dropped  atomic.Uint64
	failing  atomic.Bool // the latest export failed (logs a change once)
}

func (m *Metrics) registerTracing(reg prometheus.Registerer) {
	reg.MustRegister(
		prometheus.NewCounterFunc(prometheus.CounterOpts{
			Name: "sluice_tracing_spans_exported_total",
			Help: "Spans the collector accepted (tracing.endpoint).",
		}, func() float64 { return float64(m.tracing.exported.Load()) }),
		prometheus.NewCounterFunc(prometheus.CounterOpts{
			Name: "sluice_tracing_spans_dropped_total",
			Help: "Spans dropped because the export queue was full (collector slow or down) or their export failed.",
		}, func() float64 { return float64(m.tracing.dropped.Load()) }),
	)
}

// tracer is the tracing of one served configuration.
type tracer struct {
	tp          *sdktrace.TracerProvider
	tr          trace.Tracer
	bound       uint64 // sample ratio as OpenTelemetry's TraceIDRatioBased bound
	parentBased bool
	timeout     time.Duration
}

// newTracer builds the tracing of cfg, or returns nil when tracing is off.
// Nothing is sent until a span ends.
func newTracer(cfg *config.TracingConfig, stats *tracingStats, log *slog.Logger) (*tracer, error) {
	if !cfg.Enabled {
		return nil, nil
	}
	headers := make(map[string]string, len(cfg.Headers))
	for k, v := range cfg.Headers {
		headers[k] = v.Reveal()
	}
	exp, err := otlptracehttp.New(context.Background(),
		otlptracehttp.WithEndpointURL(cfg.Endpoint),
		otlptracehttp.WithHeaders(headers),
		otlptracehttp.WithTimeout(cfg.Timeout.D()),
		otlptracehttp.WithRetry(otlptracehttp.RetryConfig{Enabled: false}),
	)
	if err != nil {
		return nil, err
	}
	gate := &exportGate{stats: stats, limit: int64(cfg.QueueSize), log: log, endpoint: cfg.Endpoint}
	gate.exporter = &countingExporter{SpanExporter: exp, gate: gate}
	gate.SpanProcessor = sdktrace.NewBatchSpanProcessor(gate.exporter,
		sdktrace.WithMaxQueueSize(cfg.QueueSize),
		sdktrace.WithMaxExportBatchSize(cfg.BatchSize),
		sdktrace.WithBatchTimeout(time.Second),
		sdktrace.WithExportTimeout(cfg.Timeout.D()))
	res := resource.NewSchemaless(attribute.String("service.name", cfg.ServiceName))
	tp := sdktrace.NewTracerProvider(
		// The gateway decides what is sampled (tracer.begin) and only then
		// starts spans: every span it starts is recorded.
		sdktrace.WithSampler(sdktrace.AlwaysSample()),
		sdktrace.WithSpanProcessor(gate),
		sdktrace.WithResource(res))
	t := &tracer{tp: tp, tr: tp.Tracer("github.com/sluice-gw/sluice/proxy"), parentBased: cfg.ParentBased, timeout: cfg.Timeout.D()}
	t.bound = ratioBound(cfg.Sample)
	return t, nil
}

// ratioBound is TraceIDRatioBased's bound: a trace is sampled when the low
// 63 bits of its id's last 8 bytes are below it.
func ratioBound(r float64) uint64 {
	if r >= 1 {
		return math.MaxUint64
	}
	return uint64(r * (1 << 63))
}

// shutdown flushes the queued spans (within tracing.timeout) and stops.
func (t *tracer) shutdown() {
	if t == nil {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), t.timeout)
	defer cancel()
	_ = t.tp.Shutdown(ctx)
}

// exportGate bounds the spans queued or being exported to limit; the
// BatchSpanProcessor's own queue is as large, so it never drops one
// uncounted.
type exportGate struct {
	sdktrace.SpanProcessor
	exporter *countingExporter
	stats    *tracingStats
	pending  atomic.Int64
	limit    int64
	log      *slog.Logger
	endpoint string
}

func (g *exportGate) OnEnd(s sdktrace.ReadOnlySpan) {
	if g.pending.Add(1) > g.limit {
		g.pending.Add(-1)
		g.stats.dropped.Add(1)
		return
	}
	g.SpanProcessor.OnEnd(s)
}

// countingExporter counts the spans of each export as exported or dropped.
type countingExporter struct {
	sdktrace.SpanExporter
	gate *exportGate
}

func (e *countingExporter) ExportSpans(ctx context.Context, spans []sdktrace.ReadOnlySpan) error {
	err := e.SpanExporter.ExportSpans(ctx, spans)
	g := e.gate
	g.pending.Add(-int64(len(spans)))
	if err != nil {
		g.stats.dropped.Add(uint64(len(spans)))
		if !g.stats.failing.Swap(true) {
			g.log.Warn("tracing: export to the collector failed; spans are dropped until it answers",
				"endpoint", g.endpoint, "error", err.Error())
		}
		return nil // counted and logged here; the SDK's global handler would log every batch
	}
	g.stats.exported.Add(uint64(len(spans)))
	if g.stats.failing.Swap(false) {
		g.log.Info("tracing: the collector accepts spans again", "endpoint", g.endpoint)
	}
	return nil
}

func init() {
	// The SDK reports export and processor errors to a process-wide handler
	// that writes to stderr by default; the gateway counts and logs them
	// itself (countingExporter).
	otel.SetErrorHandler(otel.ErrorHandlerFunc(func(error) {}))
}

// exemplar is the exemplar of a sampled exchange's observations.
func (ex *Exchange) exemplar() prometheus.Labels {
	return prometheus.Labels{"trace_id": string(ex.trace.idHex[:])}
}

// observeDuration records the request's duration, with the trace id as an
// exemplar when the request is sampled.
func (rm *routeMetrics) observeDuration(ex *Exchange, seconds float64) {
	if ex.trace.server != nil {
		if eo, ok := rm.duration.(prometheus.ExemplarObserver); ok {
			eo.ObserveWithExemplar(seconds, ex.exemplar())
			return
		}
	}
	rm.duration.Observe(seconds)
}

// observeAttempt records an attempt's duration by outcome (with the trace
// id as an exemplar when sampled) and ends the attempt's span.
func (u *Upstream) observeAttempt(ex *Exchange, outcome int, seconds float64, status int, err error) {
	obs := u.metrics.byOutcome[outcome]
	if ex.trace.attempt == nil {
		obs.Observe(seconds)
		return
	}
	if eo, ok := obs.(prometheus.ExemplarObserver); ok {
		eo.ObserveWithExemplar(seconds, ex.exemplar())
	} else {
		obs.Observe(seconds)
	}
	ex.endAttempt(outcomeNames[outcome], status, err)
}
