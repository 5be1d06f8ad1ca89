package proxy

import (
	"context"
	"encoding/hex"
	"math/rand/v2"

	"github.com/valyala/fasthttp"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/trace"
)

// W3C Trace Context (https://www.w3.org/TR/trace-context/) on the hot path.
//
// With tracing off (no `tracing:` section, or enabled: false) none of this
// runs: the caller's traceparent and tracestate pass through untouched, as
// any other header, and an exchange carries no trace.
//
// With tracing on, every routed call has a trace: the caller's (a valid
// traceparent continues it) or a new one. Only sampled calls make spans; the
// others pay for parsing or generating the ids and, for a new trace, one
// traceparent header for the provider.

var (
	strTraceparent = []byte("Traceparent") // canonical: SetCanonical takes it as is
	strTracestate  = []byte("Tracestate")
)

// traceparent is a parsed traceparent header.
type traceparent struct {
	traceID trace.TraceID
	spanID  trace.SpanID
	flags   trace.TraceFlags
}

// parseTraceparent parses a traceparent header value (W3C Trace Context,
// §3.2). It is written by hand because the OpenTelemetry propagator
// (propagation.TraceContext.Extract) allocates on every call: it reads
// through a TextMapCarrier (an http.Header map for fasthttp's headers) and
// returns a context.Context holding the span context, so continuing a trace
// would cost allocations on every traced request. This parser allocates
// nothing and accepts exactly what the propagator accepts (the fuzz test
// compares them):
//
//   - version: two lower-case hex digits, not "ff"; version 00 is exactly
//     55 bytes; a later version may carry more fields after a '-'.
//   - trace-id: 32 lower-case hex digits, not all zero.
//   - parent-id: 16 lower-case hex digits, not all zero.
//   - trace-flags: two lower-case hex digits; version 00 allows only the
//     sampled (01) and random (02) bits. Other bits are dropped.
//
// Anything else is malformed: ok is false and the caller starts a new trace.
func parseTraceparent(v []byte) (traceparent, bool) {
	var tp traceparent
	if len(v) < 55 || v[2] != '-' || v[35] != '-' || v[52] != '-' {
		return traceparent{}, false
	}
	ver, okv := hexByte(v[0], v[1])
	if !okv || ver == 0xff {
		return traceparent{}, false
	}
	if len(v) > 55 && (ver == 0 || v[55] != '-') {
		return traceparent{}, false
	}
	var nonzero byte
	for i := range tp.traceID {
		b, okb := hexByte(v[3+2*i], v[4+2*i])
		if !okb {
			return traceparent{}, false
		}
		tp.traceID[i] = b
		nonzero |= b
	}
	if nonzero == 0 {
		return traceparent{}, false
	}
	nonzero = 0
	for i := range tp.spanID {
		b, okb := hexByte(v[36+2*i], v[37+2*i])
		if !okb {
			return traceparent{}, false
		}
		tp.spanID[i] = b
		nonzero |= b
	}
	if nonzero == 0 {
		return traceparent{}, false
	}
	f, okf := hexByte(v[53], v[54])
	if !okf || ver == 0 && f > 3 {
		return traceparent{}, false
	}
	tp.flags = trace.TraceFlags(f) & (trace.FlagsSampled | trace.FlagsRandom)
	return tp, true
}

// hexByte decodes two lower-case hex digits.
func hexByte(a, b byte) (byte, bool) {
	x, okx := fromHex(a)
	y, oky := fromHex(b)
	return x<<4 | y, okx && oky
}

func fromHex(c byte) (byte, bool) {
	switch {
	case '0' <= c && c <= '9':
		return c - '0', true
	case 'a' <= c && c <= 'f':
		return c - 'a' + 10, true
	}
	return 0, false
}

// appendTraceparent appends a version-00 traceparent value.
func appendTraceparent(dst []byte, tid trace.TraceID, sid trace.SpanID, flags trace.TraceFlags) []byte {
	dst = append(dst, "00-"...)
	dst = hex.AppendEncode(dst, tid[:])
	dst = append(dst, '-')
	dst = hex.AppendEncode(dst, sid[:])
	dst = append(dst, '-')
	return append(dst, hexDigits[flags>>4], hexDigits[flags&0xf])
}

// traceState is an exchange's part in a trace; the zero value is "no trace".
type traceState struct {
	t       *tracer
	on      bool // the exchange has a trace (tracing is on)
	traceID trace.TraceID
	idHex   [32]byte // traceID in hex, for logs, problem+json and exemplars
	tp      [55]byte // the traceparent sent to the provider
	ctx     context.Context
	server  trace.Span // the gateway request's span; nil when not sampled
	attempt trace.Span // the attempt in progress; nil between attempts
}

func (ts *traceState) reset() { *ts = traceState{} }

// begin gives ex a trace: the caller's, when its traceparent is valid, or a
// new one. A sampled call gets a server span, named "METHOD route-path"
// (rt is nil for calls no route serves); an unsampled one that starts a
// trace sends the provider a traceparent naming it.
func (t *tracer) begin(ctx *fasthttp.RequestCtx, ex *Exchange, rt *Route) {
	ts := &ex.trace
	ts.t, ts.on = t, true
	h := &ctx.Request.Header
	parent, fromCaller := parseTraceparent(h.PeekBytes(strTraceparent))
	var sampled bool
	switch {
	case fromCaller && t.parentBased:
		sampled = parent.flags.IsSampled()
	case fromCaller:
		sampled = t.sampleID(parent.traceID)
	default:
		sampled = t.sampleNew()
	}
	if !sampled {
		if fromCaller {
			ts.traceID = parent.traceID // the caller's traceparent goes on as sent
		} else {
			ts.traceID = randomTraceID()
			sid := randomSpanID()
			b := appendTraceparent(ts.tp[:0], ts.traceID, sid, 0)
			h.SetCanonical(strTraceparent, b)
			h.DelBytes(strTracestate) // it belonged to the malformed traceparent, if any
		}
		hex.Encode(ts.idHex[:], ts.traceID[:])
		return
	}
	c := context.Background()
	if fromCaller {
		cfg := trace.SpanContextConfig{TraceID: parent.traceID, SpanID: parent.spanID, TraceFlags: parent.flags, Remote: true}
		if st := h.PeekBytes(strTracestate); len(st) > 0 {
			if state, err := trace.ParseTraceState(string(st)); err == nil {
				cfg.TraceState = state
			}
		}
		c = trace.ContextWithRemoteSpanContext(c, trace.NewSpanContext(cfg))
	} else {
		h.DelBytes(strTracestate)
	}
	name := string(ctx.Method()) + " " + UnmatchedRoute
	if rt != nil {
		name = string(ctx.Method()) + " " + rt.Path
	}
	c, ts.server = t.tr.Start(c, name, trace.WithSpanKind(trace.SpanKindServer),
		trace.WithAttributes(
			attribute.String("http.request.method", string(ctx.Method())),
			attribute.String("url.path", string(ex.Path())),
			attribute.String("sluice.request_id", string(ex.requestID)),
		))
	ts.ctx = c
	ts.traceID = ts.server.SpanContext().TraceID()
	hex.Encode(ts.idHex[:], ts.traceID[:])
}

// sampleID is OpenTelemetry's TraceIDRatioBased decision for a trace id.
func (t *tracer) sampleID(id trace.TraceID) bool {
	x := uint64(id[8])<<56 | uint64(id[9])<<48 | uint64(id[10])<<40 | uint64(id[11])<<32 |
		uint64(id[12])<<24 | uint64(id[13])<<16 | uint64(id[14])<<8 | uint64(id[15])
	return x>>1 < t.bound
}

// sampleNew decides for a trace that starts here (same odds as sampleID).
func (t *tracer) sampleNew() bool { return rand.Uint64()>>1 < t.bound }

func randomTraceID() (id trace.TraceID) {
	for id == (trace.TraceID{}) {
		a, b := rand.Uint64(), rand.Uint64()
		for i := range 8 {
			id[i], id[8+i] = byte(a>>(56-8*i)), byte(b>>(56-8*i))
		}
	}
	return id
}

func randomSpanID() (id trace.SpanID) {
	for id == (trace.SpanID{}) {
		a := rand.Uint64()
		for i := range 8 {
			id[i] = byte(a >> (56 - 8*i))
		}
	}
	return id
}

// TraceID returns the request's trace id in hex (32 characters), or nil
// when the request has no trace (tracing is off). Valid until the exchange ends.
func (ex *Exchange) TraceID() []byte {
	if !ex.trace.on {
		return nil
	}
	return ex.trace.idHex[:]
}

// Traced reports whether the request is sampled: its spans are recorded
// and TraceEvent records events. Guard TraceEvent calls with it, so that
// an unsampled request does not even build the attributes.
func (ex *Exchange) Traced() bool { return ex.trace.server != nil }

// TraceEvent adds an event to the request's span: to the attempt's span
// while an upstream attempt is in progress, to the gateway request's span
// otherwise. It does nothing when the request is not sampled. Plugins call
// it for their decisions (cache lookups, rate-limit waits, token fetches,
// breaker decisions):
//
//	if ex.Traced() {
//		ex.TraceEvent("cache.lookup", attribute.String("cache.result", "hit"))
//	}
func (ex *Exchange) TraceEvent(name string, attrs ...attribute.KeyValue) {
	span := ex.trace.attempt
	if span == nil {
		span = ex.trace.server
	}
	if span == nil {
		return
	}
	span.AddEvent(name, trace.WithAttributes(attrs...))
}

// beginAttempt starts the client span of one upstream attempt and sends
// the provider a traceparent naming it. Only for sampled exchanges.
func (ex *Exchange) beginAttempt(req *fasthttp.Request, u *Upstream, t *Target) {
	ts := &ex.trace
	_, span := ts.t.tr.Start(ts.ctx, string(req.Header.Method())+" "+u.Name, trace.WithSpanKind(trace.SpanKindClient),
		trace.WithAttributes(
			attribute.String("sluice.upstream", u.Name),
			attribute.String("sluice.target", t.URL),
			attribute.Int("sluice.attempt", ex.Attempts),
			attribute.Int("sluice.retry", ex.Attempts-1),
		))
	ts.attempt = span
	sc := span.SpanContext()
	b := appendTraceparent(ts.tp[:0], sc.TraceID(), sc.SpanID(), sc.TraceFlags())
	req.Header.SetCanonical(strTraceparent, b)
}

// endAttempt ends the attempt's span with its outcome.
func (ex *Exchange) endAttempt(outcome string, status int, err error) {
	span := ex.trace.attempt
	if span == nil {
		return
	}
	ex.trace.attempt = nil
	span.SetAttributes(attribute.String("sluice.outcome", outcome))
	if status > 0 {
		span.SetAttributes(attribute.Int("http.response.status_code", status))
	}
	if err != nil {
		span.SetStatus(codes.Error, err.Error())
	} else if status >= 500 {
		span.SetStatus(codes.Error, "")
	}
	span.End()
}

// endTrace ends the gateway request's span once the answer is ready.
func (ex *Exchange) endTrace(status int) {
	span := ex.trace.server
	if span == nil {
		return
	}
	ex.endAttempt("abandoned", 0, nil) // a panic mid-attempt
	attrs := make([]attribute.KeyValue, 0, 6)
	attrs = append(attrs, attribute.Int("http.response.status_code", status), attribute.Int("sluice.attempts", ex.Attempts))
	if ex.Route != nil {
		attrs = append(attrs, attribute.String("http.route", ex.Route.Path), attribute.String("sluice.route", ex.Route.Name))
	}
	if ex.Upstream != nil {
		attrs = append(attrs, attribute.String("sluice.upstream", ex.Upstream.Name))
	}
	if ex.Consumer != "" {
		attrs = append(attrs, attribute.String("sluice.consumer", ex.Consumer))
	}
	span.SetAttributes(attrs...)
	if ex.problem != 0 {
		code := (ex.problem - 1).String()
		span.SetAttributes(attribute.String("error.type", code))
		if status >= 500 {
			span.SetStatus(codes.Error, code)
		}
	} else if status >= 500 {
		span.SetStatus(codes.Error, "")
	}
	span.End()
}

// appendTraceID adds the "trace_id" member to a problem+json body (the
// object in dst, ending with '}') when the request has a trace.
func (ex *Exchange) appendTraceID(dst []byte) []byte {
	if ex == nil || !ex.trace.on || len(dst) == 0 || dst[len(dst)-1] != '}' {
		return dst
	}
	dst = append(dst[:len(dst)-1], `,"trace_id":"`...)
	dst = append(dst, ex.trace.idHex[:]...)
	return append(dst, `"}`...)
}
