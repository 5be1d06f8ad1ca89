package proxy

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"runtime/debug"
	"strings"
	"time"

	"github.com/valyala/fasthttp"
)

// serve is the fasthttp handler: limits, routing, then the route's pipeline.
func (g *Gateway) serve(ctx *fasthttp.RequestCtx) {
	st := g.state.Load()
	st.active.Add(1)
	n := g.metrics.inflight.Add(1)
	switch {
	case st.maxInflight > 0 && n > st.maxInflight:
		st.reject(ctx, errOverloaded)
	case hasDotSegment(ctx.Request.URI().PathOriginal()):
		st.reject(ctx, errDotSegment)
	case !isHTTP1(ctx.Request.Header.Protocol()):
		st.reject(ctx, errHTTPVersion)
	case !validHost(ctx.Request.Header.Host(), ctx.Request.Header.IsHTTP11()):
		st.reject(ctx, errHost)
	default:
		if h := st.table.lookup(ctx); h != nil {
			h(ctx)
		} else {
			st.reject(ctx, st.notFound(ctx))
		}
	}
	g.metrics.inflight.Add(-1)
	st.active.Add(-1)
}

// serveError answers requests that fasthttp could not read: they never reach
// a route or an upstream.
func (g *Gateway) serveError(ctx *fasthttp.RequestCtx, err error) {
	st := g.state.Load()
	var e *Error
	var small *fasthttp.ErrSmallBuffer
	var netErr net.Error
	switch {
	case errors.Is(err, fasthttp.ErrBodyTooLarge):
		e = Errorf(CodeRequestTooLarge, "the request body is larger than %s (server.max_request_body)", st.cfg.Server.MaxRequestBody)
	case errors.As(err, &small):
		e = Errorf(CodeRequestTooLarge, "the request head is larger than %s (server.max_header_size)", st.cfg.Server.MaxHeaderSize)
		e.Status = fasthttp.StatusRequestHeaderFieldsTooLarge
	case errors.As(err, &netErr) && netErr.Timeout():
		e = NewError(CodeBadRequest, "the request was not received within server.read_timeout")
		e.Status = fasthttp.StatusRequestTimeout
	default:
		e = NewError(CodeBadRequest, "malformed HTTP request")
	}
	e.Err = err
	st.reject(ctx, e)
}

// reject answers a request that no route serves.
func (st *state) reject(ctx *fasthttp.RequestCtx, err *Error) {
	ex := acquireExchange()
	ex.begin(ctx, nil)
	if st.tracer != nil {
		st.tracer.begin(ctx, ex, nil)
	}
	st.writeError(ctx, ex, err)
	st.finish(ctx, ex, st.unmatched)
	ex.endTrace(ctx.Response.StatusCode())
	releaseExchange(ex)
}

func (st *state) notFound(ctx *fasthttp.RequestCtx) *Error {
	if allow := st.table.allowed(ctx); len(allow) > 0 {
		e := Errorf(CodeMethodNotAllowed, "%s is not allowed here; allowed: %s", ctx.Method(), strings.Join(allow, ", "))
		return e.WithHeader("Allow", strings.Join(allow, ", "))
	}
	return Errorf(CodeRouteNotFound, "no route matches %s %s", ctx.Method(), ctx.Request.URI().PathOriginal())
}

// serve runs one request through the route's pipeline and writes the answer.
func (rt *Route) serve(ctx *fasthttp.RequestCtx) {
	st := rt.st
	ex := acquireExchange()
	var head requestHead
	var bodyErr *Error
	scanRequestHead(ctx.Request.Header.RawHeaders(), &head)
	ex.begin(ctx, &head)
	ex.Route, ex.Upstream = rt, rt.Upstream
	if rt.Deadline > 0 {
		ex.deadline = ex.startNano + int64(rt.Deadline)
	}
	if st.tracer != nil {
		st.tracer.begin(ctx, ex, rt)
	}
	switch {
	case head.badName:
		st.writeError(ctx, ex, errHeaderName)
	case head.expect != nil && !asciiEqualFold100Continue(head.expect):
		st.writeError(ctx, ex, errExpect)
	case head.hops&methodOverrides != 0:
		st.writeError(ctx, ex, errMethodOverride)
	case head.hops&hopUpgrade != 0 && !rt.Upgrade && wantsTunnel(&ctx.Request.Header):
		st.writeError(ctx, ex, errUpgradeNotAllowed)
	case ctx.Request.IsBodyStream() && !rt.takeRequestBody(ctx, ex, &bodyErr):
		st.writeError(ctx, ex, bodyErr)
	case !rt.reserveRequestBody(ctx, ex):
		st.writeError(ctx, ex, errRequestBodyBudget)
	case head.hops&hopUpgrade != 0 && rt.Upgrade && wantsTunnel(&ctx.Request.Header):
		rt.serveUpgrade(ctx, ex, &head)
	default:
		prepareRequest(ctx, ex, &head)
		// Nothing has written ctx.Response since the server handed it over
		// (see Exchange.freshResponse): only plugins could have, and a
		// direct route has none.
		ex.freshResponse = rt.direct
		if err := rt.run(ctx, ex); err != nil {
			st.writeError(ctx, ex, err)
		}
	}
	st.finish(ctx, ex, rt.metrics)
	if ex.trace.server != nil {
		ex.endTrace(ctx.Response.StatusCode())
	}
	ex.settleBodies(&ctx.Response)
	releaseExchange(ex)
}

// reserveRequestBody takes the request body's share of the body budget; a
// request without a body, or with a streamed one, costs nothing.
func (rt *Route) reserveRequestBody(ctx *fasthttp.RequestCtx, ex *Exchange) bool {
	if ex.reqBody.on {
		return true
	}
	n := int64(len(ctx.Request.Body()))
	if n == 0 {
		return true
	}
	b := rt.Upstream.bodies
	if !b.take(n) {
		return false
	}
	ex.reqHeld, ex.budget = n, b
	return true
}

// run calls the pipeline; a panic in any stage becomes an internal_error.
func (rt *Route) run(ctx *fasthttp.RequestCtx, ex *Exchange) (err error) {
	defer func() {
		if r := recover(); r != nil {
			rt.st.log.Error("panic in pipeline", "route", rt.Name, "request_id", string(ex.requestID),
				"panic", fmt.Sprint(r), "stack", string(debug.Stack()))
			err = NewError(CodeInternalError, "internal error")
		}
	}()
	return rt.handler.Handle(ctx, ex)
}

// writeError renders err as problem+json: the one place gateway errors are written.
func (st *state) writeError(ctx *fasthttp.RequestCtx, ex *Exchange, err error) {
	e := Classify(err)
	ex.Err = e
	p := ProblemFor(e, ctx, ex)
	p.Write(ctx, ex)
	for _, h := range e.Header {
		ctx.Response.Header.SetBytesKV(h.Name, h.Value)
	}
	if e.Code == CodeInternalError {
		st.log.Error("request failed", "code", e.Code.String(), "request_id", string(ex.requestID), "error", e.Error())
	} else if e.Err != nil && st.log.Enabled(context.Background(), slog.LevelDebug) {
		st.log.Debug("request failed", "code", e.Code.String(), "request_id", string(ex.requestID), "error", e.Error())
	}
}

// finish completes every response: X-Request-Id, Date, metrics, access log.
func (st *state) finish(ctx *fasthttp.RequestCtx, ex *Exchange, rm *routeMetrics) {
	if len(ex.added) > 0 {
		ex.applyResponseHeaders(&ctx.Response)
	}
	ctx.Response.Header.SetCanonical(strXRequestID, ex.requestID)
	now := nanotime()
	ensureDate(&ctx.Response.Header, now)
	status := ctx.Response.StatusCode()
	elapsed := time.Duration(now - ex.startNano)
	rm.countRequest(ctx.Method(), status)
	if ex.trace.server == nil {
		rm.duration.Observe(elapsed.Seconds())
	} else {
		rm.observeDuration(ex, elapsed.Seconds())
	}
	if ex.problem != 0 {
		rm.countError(ex.problem - 1)
	}
	if ex.Consumer != "" {
		st.usage.count(ctx, ex, status)
	}
	if st.accessLog {
		st.logAccess(ctx, ex, rm, status, elapsed)
	}
}

func (st *state) logAccess(ctx *fasthttp.RequestCtx, ex *Exchange, rm *routeMetrics, status int, elapsed time.Duration) {
	attrs := make([]slog.Attr, 0, 16)
	attrs = append(attrs,
		slog.String("route", rm.route),
		slog.String("upstream", rm.upstream),
		slog.String("method", string(ctx.Method())),
		slog.String("path", string(ex.Path())),
		slog.Int("status", status),
		slog.Float64("duration_ms", float64(elapsed.Microseconds())/1000),
		bytesIn(ctx, ex),
		bytesOut(&ctx.Response),
		slog.String("request_id", string(ex.requestID)),
		slog.String("remote", string(appendRemoteIP(nil, ctx.RemoteAddr()))),
	)
	if ex.Attempts > 0 {
		attrs = append(attrs, slog.Int("attempts", ex.Attempts), slog.String("target", ex.Target.URL))
	}
	if ex.Consumer != "" {
		attrs = append(attrs, slog.String("consumer", ex.Consumer))
	}
	if ex.problem != 0 {
		attrs = append(attrs, slog.String("code", (ex.problem-1).String()))
	}
	if ex.trace.on {
		attrs = append(attrs, slog.String("trace_id", string(ex.trace.idHex[:])))
	}
	st.log.LogAttrs(context.Background(), slog.LevelInfo, "access", attrs...)
}

// bytesIn is the access log's size of the request body; a streamed one is
// counted as it was read (and marked streamed_in=true).
func bytesIn(ctx *fasthttp.RequestCtx, ex *Exchange) slog.Attr {
	if ex.reqBody.on {
		return slog.Group("", slog.Int64("bytes_in", ex.reqBody.n), slog.Bool("streamed_in", true))
	}
	return slog.Int("bytes_in", len(ctx.Request.Body()))
}

// bytesOut is the access log's size of the answer: its body's length, or
// streamed=true for a streamed answer (still being passed on when the line
// is written; reading its body here would read the whole stream).
func bytesOut(resp *fasthttp.Response) slog.Attr {
	if resp.IsBodyStream() {
		return slog.Bool("streamed", true)
	}
	return slog.Int("bytes_out", len(resp.Body()))
}

// upstreamCall is the terminal handler of one route: it sends the request to
// a target of the route's upstream and reads the answer into ctx.Response.
type upstreamCall struct {
	u           *Upstream
	stripPrefix string
}

var (
	strHTTPS = []byte("https")
)

// sentAsIs reports whether uri, an outbound request target, is one that
// fasthttp would send unchanged if it parsed it and wrote it back with path
// normalization off: origin-form, without fragment, control byte or empty
// query. Such a target is not parsed into the request's URI at all: with an
// unparsed URI and a Host, Request.Write sends the header's request target
// as set, and the parse (which also decodes and normalizes a path nobody
// reads) was ~1,000 instructions per attempt. Hand-written because fasthttp
// exports no such check; any other target takes the parsing path.
func sentAsIs(uri []byte) bool {
	if len(uri) == 0 || uri[0] != '/' || len(uri) > 1 && uri[1] == '/' || uri[len(uri)-1] == '?' {
		return false
	}
	for _, c := range uri {
		if c < ' ' || c == 0x7f || c == '#' {
			return false
		}
	}
	return true
}

// cutByDeadline reports whether a failed attempt timed out because the
// call's deadline, not the upstream, ran out: its timeout was what was left
// of the deadline, and that is gone. A connect that timed out then says
// nothing of whether the upstream is reachable: the caller gets the
// deadline's 504, as when no time was left for an attempt at all, not 502.
func cutByDeadline(ex *Exchange, err error) bool {
	return ex.HasDeadline() && ex.Remaining() <= 0 && (isTimeout(err) || errors.Is(err, fasthttp.ErrDialTimeout))
}

// Handle makes one attempt. The request URI is rebuilt from the caller's raw
// path and query on every attempt (a retry may go to another target). Unless
// an outer stage chose the target (Exchange.UseTarget), a retry goes to
// another target than the attempt before when there are several.
func (c *upstreamCall) Handle(ctx *fasthttp.RequestCtx, ex *Exchange) error {
	u := c.u
	timeout := u.Timeout
	if left := ex.Remaining(); left < timeout {
		if left <= 0 {
			return errDeadline
		}
		timeout = left // the attempt may not outlive the call's deadline
	}
	t := ex.nextTarget
	if t == nil {
		t = u.PickExcept(ex.Target)
	}
	if ex.reqBody.on && ex.Attempts > 0 {
		return errStreamedResend // the body went with the first attempt
	}
	ex.Target, ex.nextTarget = t, nil
	ex.Attempts++

	req := &ctx.Request
	ex.uri = ex.appendOutboundURI(ex.uri[:0], t, c.stripPrefix)
	req.SetRequestURIBytes(ex.uri)
	req.Header.SetHostBytes(t.host)
	if t.scheme[len(t.scheme)-1] == 's' || !sentAsIs(ex.uri) {
		// Request.Write rebuilds the target from the parsed URI, the path
		// as sent (not normalized).
		uri := req.URI()
		uri.DisablePathNormalizing = true
		if t.scheme[len(t.scheme)-1] == 's' {
			uri.SetSchemeBytes(strHTTPS)
		}
	}

	if ex.trace.server != nil {
		ex.beginAttempt(req, u, t)
	}
	t.health.inflight.Add(1)
	start := nanotime()
	var err error
	if ex.upgrade {
		err = u.handshake(t, ctx, ex, timeout)
	} else {
		err = u.roundTrip(t, ctx, ex, timeout)
	}
	elapsed := since(start).Seconds()
	t.health.inflight.Add(-1)
	if err != nil {
		// The caller hung up, or its streamed body failed: that says nothing
		// about the target, so it is no attempt outcome (counted as
		// conn_error, callers giving up on a slow provider made
		// SluiceUpstreamFailing blame the provider for them).
		if err == errCallerGone {
			ex.endAttempt("caller_gone", 0, err)
			return err
		}
		if be := ex.streamedBodyError(ctx, err); be != nil {
			ex.endAttempt("caller_gone", 0, be)
			return be
		}
		ce := Classify(&transportError{err})
		if cutByDeadline(ex, err) {
			ce = errDeadline
		}
		switch ce.Code {
		case CodeUpstreamTimeout:
			u.observeAttempt(ex, OutcomeTimeout, elapsed, 0, ce)
		case CodeOverloaded:
			// Our own max_conns: nothing was sent and nothing is known about
			// the target, so it is no attempt outcome (counted as conn_error,
			// it made SluiceUpstreamFailing blame a healthy provider for a
			// full pool); sluice_errors_total{code="overloaded"} counts it.
			ex.endAttempt("overloaded", 0, ce)
			return ce
		default:
			u.observeAttempt(ex, OutcomeConnError, elapsed, 0, ce)
		}
		u.observe(t, true)
		return ce
	}
	if status := ctx.Response.StatusCode(); status >= 500 {
		u.observeAttempt(ex, OutcomeErrorStatus, elapsed, status, nil)
		u.observe(t, true)
	} else {
		u.observeAttempt(ex, OutcomeOK, elapsed, status, nil)
		u.observe(t, false)
	}
	if ex.tunnel == nil {
		stripHopByHopResponse(&ctx.Response.Header, ex)
	} else {
		ctx.Response.Header.ResetConnectionClose()
	}
	ex.FromUpstream = true
	ex.quotaFrom = quotaUnread
	return nil
}
