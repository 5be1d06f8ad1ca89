package proxy

import (
	"bytes"
	"sync"
	"time"

	"github.com/sluice-gw/sluice/proxy/httpx"
	"github.com/valyala/fasthttp"
)

// Exchange is the per-request state passed explicitly through the pipeline.
// It is pooled: the gateway acquires one per request and releases it when the
// response is complete. Plugins must not keep an Exchange (or slices of its
// buffers) after their Handle returns.
type Exchange struct {
	// Route is the matched route; nil when no route matched.
	Route *Route
	// Upstream is the route's upstream; nil when no route matched.
	Upstream *Upstream
	// Target is the upstream target of the latest attempt; nil before the first.
	Target     *Target
	nextTarget *Target // chosen by UseTarget for the next attempt
	upgrade    bool    // a tunnel request on a route with upgrade: true (tunnel.go)
	tunnel     *tunnel // the provider's connection after its 101, until Route.serve takes it
	// Consumer is the authenticated caller; "" when none.
	Consumer string
	// Attempts counts upstream calls made so far.
	Attempts int
	// FromUpstream is true when ctx.Response holds an upstream's answer (as
	// opposed to an error rendered by the gateway).
	FromUpstream bool
	// Err is the gateway error rendered for this request, if any.
	Err *Error

	internal bool // made by the gateway itself (Route.Internal), no caller

	// freshResponse: ctx.Response is still as the gateway's server handed
	// it to the handler (blank, with the server's settings), so the first
	// attempt need not clear it (ClearResponse was ~440 instructions). Set
	// by Route.serve for a route without plugins, the one case where that
	// is known: any plugin may write the response before calling next.
	// The first attempt clears the flag.
	freshResponse bool

	quotaFrom quotaState // what quota holds

	problem Code // 1 + the code of the problem+json answer written, 0 if none

	startNano int64 // nanotime when the gateway began serving the request
	deadline  int64 // nanotime by which the whole call must end; 0 for none

	requestID []byte        // X-Request-Id, taken from the request or generated
	rawURI    []byte        // the caller's request URI (path and query) as sent
	pathLen   int           // rawURI[:pathLen] is the path
	uri       []byte        // outbound request URI, built per attempt
	query     []byte        // query parameters added for the upstream only (AddUpstreamQuery)
	upQuery   []byte        // SetUpstreamQuery: the query sent instead of the caller's
	queryRepl bool          // SetUpstreamQuery was called
	scratch   []byte        // short-lived scratch space (header values, problem bodies)
	added     []addedHeader // AddResponseHeader: the names, in order
	addedVals []byte        // AddResponseHeader: the values, one after another
	joinBuf   []byte        // applyResponseHeaders: the values of one name, joined
	idBuf     [32]byte

	budget   *bodyBudget // where respHeld and reqHeld are reserved; nil when nothing is
	respHeld int64       // bytes reserved for the answer in ctx.Response
	reqHeld  int64       // bytes reserved for the request body

	trace traceState // W3C trace context and spans (trace.go); zero when tracing is off

	tee     StreamTee           // TeeStream: told of a streamed answer's body and end; nil for none
	reqBody streamedRequestBody // the request body when it is streamed (reqstream.go); zero otherwise

	// Last, with the fields most requests do not touch: an answer's quota
	// headers, read when rate_limit or the usage gauges ask (UpstreamQuota).
	quota    httpx.Quota // copies of the values
	quotaBuf []byte      // the copies' bytes
}

var exchangePool = sync.Pool{New: func() any { return new(Exchange) }}

func acquireExchange() *Exchange { return exchangePool.Get().(*Exchange) }

func releaseExchange(ex *Exchange) {
	if ex.budget != nil { // not settled (a detached exchange, a panic)
		ex.budget.used.Add(-(ex.respHeld + ex.reqHeld))
		ex.budget, ex.respHeld, ex.reqHeld = nil, 0, 0
	}
	ex.Route, ex.Upstream, ex.Target, ex.nextTarget, ex.Err = nil, nil, nil, nil, nil
	ex.Consumer = ""
	ex.Attempts = 0
	ex.FromUpstream = false
	ex.quotaFrom = quotaNone
	ex.internal = false
	ex.freshResponse = false
	ex.upgrade = false
	if ex.tunnel != nil { // not taken (a panic)
		ex.tunnel.end(tunnelClosed)
		ex.tunnel = nil
	}
	ex.problem = 0
	ex.deadline = 0
	ex.requestID = ex.requestID[:0]
	ex.rawURI = ex.rawURI[:0]
	ex.pathLen = 0
	ex.uri = ex.uri[:0]
	ex.query = ex.query[:0]
	ex.upQuery, ex.queryRepl = ex.upQuery[:0], false
	if cap(ex.scratch) > 64<<10 { // don't pin a huge problem body in the pool
		ex.scratch = nil
	}
	ex.scratch = ex.scratch[:0]
	if cap(ex.quotaBuf) > 16<<10 { // a provider's outsized quota header: not kept in the pool
		ex.quotaBuf = nil
	}
	ex.added, ex.addedVals = ex.added[:0], ex.addedVals[:0]
	ex.tee = nil
	if ex.reqBody.on {
		ex.reqBody = streamedRequestBody{}
	}
	if ex.trace.on {
		ex.trace.reset()
	}
	exchangePool.Put(ex)
}

// StreamTee observes the body of a streamed answer (see TeeStream) as it
// is passed on to the caller, and how the stream ended. Its methods are
// called by the goroutine that writes the answer, after the handler has
// returned (the Exchange is gone by then: a tee keeps what it needs).
type StreamTee interface {
	// StreamBody is given the body's bytes in order as they go to the
	// caller; p is valid only during the call (copy what you keep).
	StreamBody(p []byte)
	// StreamEnd is called once when the stream ends: complete is true
	// when the provider ended the body and the caller got all of it
	// (outcome "complete" of sluice_upstream_streams_total), false for
	// any other outcome (upstream_cut, idle_timeout, caller_gone,
	// discarded, ...). Nothing is called after it.
	StreamEnd(complete bool)
}

// TeeStream registers t to observe the answer's body if it is streamed:
// call it before calling next (the upstream). Every stream started for
// this exchange afterwards (one per attempt: a stream a retry discards ends
// with complete false before the next starts) reports to t. An answer read
// whole never calls t: its body is in ctx.Response when next returns. One
// tee per exchange: a later call replaces an earlier one.
func (ex *Exchange) TeeStream(t StreamTee) { ex.tee = t }

// RequestID returns the request's X-Request-Id. Valid until the exchange ends.
func (ex *Exchange) RequestID() []byte { return ex.requestID }

// Path returns the request path as the caller sent it (raw, without query).
// Valid until the exchange ends.
func (ex *Exchange) Path() []byte { return ex.rawURI[:ex.pathLen] }

// RawURI returns the request URI (path and query) as the caller sent it.
// Valid until the exchange ends.
func (ex *Exchange) RawURI() []byte { return ex.rawURI }

var strXRequestID = []byte("X-Request-Id")

// Elapsed is the time since the gateway began serving the request.
func (ex *Exchange) Elapsed() time.Duration { return since(ex.startNano) }

// Remaining is the time left before the route's deadline (it may be
// negative), or a very large value when the route has none. Plugins that wait
// (retry backoff, rate-limit queueing, collapsed cache fills) never wait past it.
func (ex *Exchange) Remaining() time.Duration {
	if ex.deadline == 0 {
		return time.Duration(1<<63 - 1)
	}
	return time.Duration(ex.deadline - nanotime())
}

// UseTarget makes the next attempt go to t (one of ex.Upstream's targets)
// instead of the upstream's own pick. Load-balancing and circuit-breaking
// plugins use it.
func (ex *Exchange) UseTarget(t *Target) { ex.nextTarget = t }

// AddUpstreamQuery adds name=value (both already URL-encoded) to the query of
// every attempt's request URI, without changing what the caller sent (logs,
// cache keys and problem bodies never see it). inject_auth's query
// credentials use it.
func (ex *Exchange) AddUpstreamQuery(name, value []byte) {
	if len(ex.query) > 0 {
		ex.query = append(ex.query, '&')
	}
	ex.query = append(append(append(ex.query, name...), '='), value...)
}

// SetUpstreamQuery replaces the caller's query (q is without '?', already
// URL-encoded; empty sends none) in every attempt's request URI, without
// changing what the caller sent (logs and problem bodies keep it).
// Parameters added with AddUpstreamQuery still follow. q is copied. The
// cache uses it so that parameters its key drops never reach the provider.
func (ex *Exchange) SetUpstreamQuery(q []byte) {
	ex.upQuery = append(ex.upQuery[:0], q...)
	ex.queryRepl = true
}

// AppendUpstreamURI appends the request URI (path and query) the next attempt
// will send: the upstream's base path, the caller's path minus strip_prefix,
// the caller's query (or SetUpstreamQuery's) and the parameters added by
// AddUpstreamQuery. It assumes the upstream's targets share one base path.
// Request signers (inject_auth hmac) sign it.
func (ex *Exchange) AppendUpstreamURI(dst []byte) []byte {
	if ex.Route == nil || ex.Upstream == nil || len(ex.Upstream.Targets) == 0 {
		return append(dst, ex.rawURI...)
	}
	return ex.appendOutboundURI(dst, ex.Upstream.Targets[0], ex.Route.StripPrefix)
}

// appendOutboundURI appends the request URI an attempt to t sends.
func (ex *Exchange) appendOutboundURI(dst []byte, t *Target, stripPrefix string) []byte {
	start := len(dst)
	if !ex.queryRepl {
		dst = t.appendRequestURI(dst, ex.rawURI, stripPrefix)
	} else {
		dst = t.appendRequestURI(dst, ex.rawURI[:ex.pathLen], stripPrefix)
		dst = appendQuery(dst, start, ex.upQuery)
	}
	return appendQuery(dst, start, ex.query)
}

// appendQuery appends q to the URI in dst[start:], after '?' or '&'.
func appendQuery(dst []byte, start int, q []byte) []byte {
	if len(q) == 0 {
		return dst
	}
	if bytes.IndexByte(dst[start:], '?') >= 0 {
		dst = append(dst, '&')
	} else {
		dst = append(dst, '?')
	}
	return append(dst, q...)
}

// AddResponseHeader adds a header to the answer the caller gets, whatever it
// turns out to be: an upstream answer, a cache hit or a problem+json error
// (rendering an error resets the response, these headers are added after it).
// Rate limiting uses it for the RateLimit fields. name and value are copied;
// values added under one name are sent as one comma-separated line, so use
// it for list-valued fields only (not Set-Cookie). It does not allocate once the
// pooled exchange's buffer has grown.
func (ex *Exchange) AddResponseHeader(name httpx.Name, value []byte) {
	start := len(ex.addedVals)
	ex.addedVals = append(ex.addedVals, value...)
	ex.added = append(ex.added, addedHeader{name.Bytes(), start, len(ex.addedVals)})
}

// addedHeader is one AddResponseHeader call: the name (a Name's bytes,
// config memory) and where its value is in Exchange.addedVals.
type addedHeader struct {
	name       []byte
	start, end int
}

// applyResponseHeaders adds the headers of AddResponseHeader to resp. The
// values of one name go out as one comma-separated field line (RFC 9110
// §5.3): the fields added this way are lists, and one line per name costs
// half the header work of one per value when several limits each add theirs.
func (ex *Exchange) applyResponseHeaders(resp *fasthttp.Response) {
	var joined uint64 // bit m: ex.added[m] went out with an earlier one of its name
	for k, a := range ex.added {
		if k < 64 && joined&(1<<k) != 0 {
			continue
		}
		v := ex.addedVals[a.start:a.end]
		if k < 63 { // beyond 64 headers, more than any plugin adds: one line each
			for m := k + 1; m < min(len(ex.added), 64); m++ {
				if b := ex.added[m]; joined&(1<<m) == 0 && bytes.Equal(b.name, a.name) {
					if joined&(1<<k) == 0 { // the first value of the line
						ex.joinBuf = append(ex.joinBuf[:0], v...)
						joined |= 1 << k
					}
					ex.joinBuf = append(append(ex.joinBuf, ", "...), ex.addedVals[b.start:b.end]...)
					joined |= 1 << m
				}
			}
			if joined&(1<<k) != 0 {
				v = ex.joinBuf
			}
		}
		httpx.AddCanonical(&resp.Header, a.name, v)
	}
}

// quotaState says what Exchange.quota holds.
type quotaState uint8

const (
	quotaNone   quotaState = iota // no answer the upstream just gave: nothing to read
	quotaUnread                   // the upstream's answer is in, not read yet
	quotaRead                     // quota holds its headers
)

// UpstreamQuota returns the headers in which the provider reported its
// quota (see httpx.Quota) on the answer it gave this call, read once per
// answer: the rate limiter's provider pause and the consumer usage gauges
// both use them, and a second pass over the header cost as much as the
// first. The values are copies, valid until the exchange is released.
//
// It is nil when resp is not an answer the provider just gave (a gateway
// error, an answer the cache or the idempotency store replays): what such
// an answer says of the quota is old news, and would set the gauges back.
func (ex *Exchange) UpstreamQuota(resp *fasthttp.Response) *httpx.Quota {
	switch ex.quotaFrom {
	case quotaNone:
		return nil
	case quotaUnread:
		httpx.ScanQuota(&resp.Header, &ex.quota)
		ex.quotaBuf = ex.quota.CopyTo(ex.quotaBuf[:0])
		ex.quotaFrom = quotaRead
	}
	return &ex.quota
}

// HasDeadline reports whether the route bounds the whole call.
func (ex *Exchange) HasDeadline() bool { return ex.deadline != 0 }

// begin records the start time, the caller's path and the request id. head
// is the scanned request head, or nil to look the id up.
func (ex *Exchange) begin(ctx *fasthttp.RequestCtx, head *requestHead) {
	ex.startNano = nanotime()
	ex.rawURI = append(ex.rawURI[:0], ctx.Request.Header.RequestURI()...)
	if len(ex.rawURI) > 0 && ex.rawURI[0] != '/' {
		// absolute-form ("http://host/path?q"): keep the origin-form part
		u := ctx.Request.URI()
		ex.rawURI = append(ex.rawURI[:0], u.PathOriginal()...)
		if q := u.QueryString(); len(q) > 0 {
			ex.rawURI = append(append(ex.rawURI, '?'), q...)
		}
	}
	ex.pathLen = len(ex.rawURI)
	if i := bytes.IndexByte(ex.rawURI, '?'); i >= 0 {
		ex.pathLen = i
	}
	var id []byte
	if head != nil {
		id = head.requestID
	} else {
		id = ctx.Request.Header.PeekBytes(strXRequestID)
	}
	if validRequestID(id) {
		ex.requestID = append(ex.requestID[:0], id...)
	} else {
		ex.requestID = newRequestID(ex.idBuf[:0])
		ctx.Request.Header.SetCanonical(strXRequestID, ex.requestID)
	}
}

// Detach returns a new exchange for a request the gateway makes on its own
// behalf after ex's caller has been answered (a background cache refresh):
// it has ex's route, upstream, consumer, request URI and a fresh request id,
// and the route's deadline counted from now. The caller of Detach owns it
// and must call Release when the request is done.
func (ex *Exchange) Detach() *Exchange {
	d := acquireExchange()
	d.Route, d.Upstream, d.Consumer = ex.Route, ex.Upstream, ex.Consumer
	d.startNano = nanotime()
	if ex.Route != nil && ex.Route.Deadline > 0 {
		d.deadline = d.startNano + int64(ex.Route.Deadline)
	}
	d.rawURI = append(d.rawURI[:0], ex.rawURI...)
	d.pathLen = ex.pathLen
	d.requestID = newRequestID(d.idBuf[:0])
	return d
}

// Release returns an exchange obtained from Detach to the pool.
func (ex *Exchange) Release() { releaseExchange(ex) }

// ResetResponse clears ctx.Response before another attempt (retries): the
// failed attempt's status, headers and body go, and the settings the
// gateway's server gives every response stay (no Content-Type is invented
// for an answer that has none; see Gateway.newServer). ex.FromUpstream is
// cleared with it, and the answer's share of the body budget given back.
// (The next attempt's answer keeps its own Date: see ClearResponse.)
func ResetResponse(ctx *fasthttp.RequestCtx, ex *Exchange) {
	ex.releaseResponseBody()
	ClearResponse(&ctx.Response)
	ex.FromUpstream = false
	ex.quotaFrom = quotaNone
}
