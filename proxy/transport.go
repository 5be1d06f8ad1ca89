package proxy

import (
	"bufio"
	"crypto/tls"
	"errors"
	"io"
	"net"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/valyala/fasthttp"
)

// The upstream side of one attempt, written on fasthttp's public connection
// API (HostClient.AcquireConn and friends) instead of HostClient.Do, because
// the gateway must decide things Do decides for it:
//
//   - a pooled connection is used only if nothing is waiting on it: bytes a
//     provider sent after its last answer's end would otherwise be read as the
//     next caller's answer, and a connection the provider closed while idle
//     would lose a request that was never sent (pooledConnClean);
//   - a connection whose answer was followed by more bytes than its framing
//     says is never pooled again;
//   - a body is read only up to max_response_body, whatever its framing (a
//     chunked one included), and only while the process-wide body budget
//     (server.max_body_memory) allows;
//   - a caller that hangs up while the provider is still thinking ends the
//     attempt, so that it gives back its max_inflight slot and connection.
//
// The cost on the common path is one non-blocking peek (a recv syscall) per
// reused connection; the rest is what Do did.

var (
	errCallerGone = &Error{Code: CodeBadRequest, Status: 499, Detail: "the caller closed the connection before the upstream answered"}

	// errBodyTooLarge is fasthttp's error, marked as an upstream answer that
	// must not be read again by a resend.
	errBodyTooLarge = fasthttp.ErrBodyTooLarge

	errTooManyInterim = errors.New("more than 8 interim (1xx) responses")

	// errNothingSent: writing the request to a reused connection failed
	// before one byte of it left the gateway (the provider closed the
	// connection between the check before reuse and the write). It is the
	// only failure that proves a non-idempotent request never reached the
	// provider, so the only one after which such a request is sent again.
	// (A write that succeeded followed by EOF or a reset with no answer byte
	// is no such proof: the provider may have acted and then crashed.)
	errNothingSent = errors.New("the upstream closed the reused connection before the request was written")
)

// callerCheckEvery is how often an attempt that is still waiting for the
// provider's answer checks whether its caller is still there.
const callerCheckEvery = 500 * time.Millisecond

// maxStaleSkips bounds the pooled connections one attempt may find unusable
// and close before it dials (or waits for) a fresh one.
const maxStaleSkips = 16

// roundTrip sends ctx.Request to t and reads the answer into ctx.Response
// within timeout. An idempotent request whose reused connection failed is
// sent once more on another connection, as HostClient.Do would.
func (u *Upstream) roundTrip(t *Target, ctx *fasthttp.RequestCtx, ex *Exchange, timeout time.Duration) error {
	start := time.Now()
	deadline := start.Add(timeout)
	reused, err := u.attemptOnce(t, ctx, ex, start, deadline, timeout)
	if err != nil && reused && !ex.reqBody.on && resendable(err) && (err == errNothingSent || IsIdempotent(&ctx.Request)) && time.Now().Before(deadline) {
		_, err = u.attemptOnce(t, ctx, ex, start, deadline, timeout)
	}
	return err
}

// resendable: the error says the pooled connection broke, not that the
// provider was slow, answered something unreadable or too large.
func resendable(err error) bool {
	var e *Error
	return !errors.As(err, &e) && !isTimeout(err) && !errors.Is(err, errBodyTooLarge)
}

func isTimeout(err error) bool {
	var te interface{ Timeout() bool }
	return errors.As(err, &te) && te.Timeout()
}

// attemptOnce is one request on one connection. reused says whether the
// connection had served an earlier request.
func (u *Upstream) attemptOnce(t *Target, ctx *fasthttp.RequestCtx, ex *Exchange, start, deadline time.Time, timeout time.Duration) (reused bool, err error) {
	hc := t.client
	req, resp := &ctx.Request, &ctx.Response
	if ex.freshResponse {
		ex.freshResponse = false // blank already; a resend clears what this attempt read
	} else {
		ResetResponse(ctx, ex)
	}
	if req.Header.IsHead() {
		resp.SkipBody = true
	}
	http10 := !req.Header.IsHTTP11()
	if http10 { // an HTTP/1.0 (or 1.x) caller: the provider gets our version
		var proto [8]byte
		n := copy(proto[:], req.Header.Protocol())
		req.Header.SetProtocolBytes(strHTTP11)
		defer req.Header.SetProtocolBytes(proto[:n])
	}

	cc, err := hc.AcquireConn(timeout, req.ConnectionClose())
	for skips := 0; err == nil && !cc.LastUseTime().IsZero(); skips++ {
		if skips == maxStaleSkips || pooledConnClean(cc.Conn()) {
			reused = true
			break
		}
		u.metrics.discarded[discardStale].Inc()
		hc.CloseConn(cc)
		cc, err = hc.AcquireConn(timeout, req.ConnectionClose())
	}
	if err != nil {
		return false, err
	}
	conn := cc.Conn()

	sent := bytesWritten(conn)
	if err = conn.SetWriteDeadline(deadline); err == nil {
		bw := hc.AcquireWriter(conn)
		err = req.Write(bw)
		if err == nil {
			err = bw.Flush()
		}
		hc.ReleaseWriter(bw)
	}
	if err != nil {
		hc.CloseConn(cc)
		// (A streamed body may have been read into the write buffer even
		// when no byte reached the socket: it is never "nothing sent".)
		if sent >= 0 && bytesWritten(conn) == sent && !ex.reqBody.on {
			err = errNothingSent
		}
		return reused, err
	}

	br := hc.AcquireReader(conn)
	err = readHead(ctx, conn, br, resp, start, deadline)
	closeConn := true
	if err == nil {
		status := resp.StatusCode()
		untilClose := resp.Header.ContentLength() == -2
		if !resp.SkipBody && status >= 200 && status != 204 && status != 304 {
			mode := bodyWhole
			if cl := resp.Header.ContentLength(); cl < 0 || cl > u.streamThreshold { // not the common short answer
				mode = u.bodyMode(ex, resp, http10)
			}
			switch mode {
			case bodyWhole:
				err = u.readBody(ex, br, resp, hc.MaxResponseBodySize)
			case bodyStream:
				acquireStream(br, resp).start(u, ctx, ex, conn, releaser(hc, cc, br, req.ConnectionClose(), hc.ReleaseConn, hc.CloseConn), nil)
				return reused, nil
			default: // bodyMaybe
				s := acquireStream(br, resp)
				var buf []byte
				var long bool
				if buf, long, err = u.readPrefix(ex, s, resp); err == nil && long {
					s.start(u, ctx, ex, conn, releaser(hc, cc, br, req.ConnectionClose(), hc.ReleaseConn, hc.CloseConn), buf)
					return reused, nil
				}
				putStream(s)
				if err == nil {
					resp.SwapBody(buf)
					resp.Header.SetContentLength(len(buf))
				}
			}
		}
		// Bytes beyond the answer's end mean the provider and the gateway
		// disagree on where answers end: never use the connection again.
		closeConn = err != nil || br.Buffered() > 0 || req.ConnectionClose() || resp.ConnectionClose() || untilClose
		if err == nil && br.Buffered() > 0 {
			u.metrics.discarded[discardFraming].Inc()
		}
	}
	hc.ReleaseReader(br)
	if closeConn {
		hc.CloseConn(cc)
	} else {
		hc.ReleaseConn(cc)
	}
	return reused, err
}

// releaser is how a stream gives its connection back when it ends: to the
// pool after a clean end (reuse), closed otherwise.
// (Generic because fasthttp does not export its connection type.)
func releaser[C any](hc *fasthttp.HostClient, cc C, br *bufio.Reader, reqClose bool, keep, drop func(C)) func(bool) {
	return func(reuse bool) {
		hc.ReleaseReader(br)
		if reuse && !reqClose {
			keep(cc)
		} else {
			drop(cc)
		}
	}
}

// readHead reads the answer's status line and headers, skipping interim 1xx
// answers. While it waits it checks every callerCheckEvery that the caller is
// still connected; one who left ends the wait with errCallerGone.
// (fasthttp's header reader only peeks until a head is complete, so a read
// cut short by the check's deadline loses nothing.)
func readHead(ctx *fasthttp.RequestCtx, conn net.Conn, r *bufio.Reader, resp *fasthttp.Response, start, deadline time.Time) error {
	check := start.Add(callerCheckEvery)
	for interim := 0; ; {
		until := deadline
		if check.Before(deadline) {
			until = check
		}
		if err := conn.SetReadDeadline(until); err != nil {
			return err
		}
		err := resp.Header.Read(r)
		if err != nil {
			if until.Equal(deadline) || !isTimeout(err) {
				return err
			}
			if callerGone(ctx) {
				return errCallerGone
			}
			check = time.Now().Add(callerCheckEvery)
			continue
		}
		if s := resp.StatusCode(); s >= 200 || s < 100 || s == fasthttp.StatusSwitchingProtocols {
			// The body may take the attempt's whole time, unless it is
			// already buffered whole (the common small answer): then no
			// read is left for a deadline to bound. (A pooled connection's
			// stale deadline is reset before its next use.)
			if until.Equal(deadline) || bodyBuffered(r, resp) {
				return nil
			}
			return conn.SetReadDeadline(deadline)
		}
		if interim++; interim > 8 {
			return errTooManyInterim
		}
	}
}

// bodyBuffered reports whether the answer's whole body (by Content-Length)
// is already in r's buffer.
func bodyBuffered(r *bufio.Reader, resp *fasthttp.Response) bool {
	cl := resp.Header.ContentLength()
	return cl >= 0 && r.Buffered() >= cl
}

// readBody reads the body of an answer whose head is in resp, at most limit
// bytes (0: no limit), reserving memory for it in the body budget first.
func (u *Upstream) readBody(ex *Exchange, br *bufio.Reader, resp *fasthttp.Response, limit int) error {
	b := u.bodies
	if cl := resp.Header.ContentLength(); cl >= 0 {
		if limit > 0 && cl > limit {
			return errBodyTooLarge // refused from the head: not one byte read
		}
		if !b.reserve(ex, int64(cl)) {
			return b.exhausted()
		}
		return resp.ReadBody(br, limit)
	}
	// Chunked, or until the provider closes: read it as a stream into the
	// response's own buffer, growing it (and the reservation) by doubling up
	// to limit+1, so that an endless body stops at the limit.
	buf := resp.SwapBody(nil)[:0]
	held := int64(cap(buf))
	if !b.reserve(ex, held) {
		return b.exhausted()
	}
	resp.StreamBody = true
	err := resp.ReadBody(br, 0)
	if err == nil {
		stream := resp.BodyStream()
		for {
			if len(buf) == cap(buf) {
				n := max(2*cap(buf), 16<<10)
				if limit > 0 && n >= limit {
					n = limit + 1 // one byte over is enough to know
				}
				if !b.reserve(ex, int64(n)-held) {
					err = b.exhausted()
					break
				}
				held = int64(n)
				nb := make([]byte, len(buf), n)
				copy(nb, buf)
				buf = nb
			}
			var n int
			n, err = stream.Read(buf[len(buf):cap(buf)])
			buf = buf[:len(buf)+n]
			if limit > 0 && len(buf) > limit {
				err = errBodyTooLarge
				break
			}
			if err != nil {
				if err == io.EOF {
					err = nil
				}
				break
			}
		}
		_ = resp.CloseBodyStream()
	}
	resp.StreamBody = false
	if err != nil {
		return err // buf goes to the garbage collector, not back to a pool
	}
	resp.SwapBody(buf)
	resp.Header.SetContentLength(len(buf))
	return nil
}

// bodyBudget is the process-wide memory budget for bodies in flight
// (server.max_body_memory). An exchange's reservations are recorded in it
// and given back when its answer has been written (or discarded by a retry).
type bodyBudget struct {
	limit    atomic.Int64
	used     atomic.Int64
	refusals atomic.Uint64
}

func (b *bodyBudget) setLimit(n int64) { b.limit.Store(n) }

// reserve takes n bytes for ex's answer, or reports false when that would
// go over the budget. A budget without limit (not configured) always gives.
func (b *bodyBudget) reserve(ex *Exchange, n int64) bool {
	if !b.take(n) {
		return false
	}
	ex.respHeld += n
	ex.budget = b
	return true
}

// take adds n bytes to the budget's use if they fit.
func (b *bodyBudget) take(n int64) bool {
	if n <= 0 {
		return true
	}
	limit := b.limit.Load()
	for {
		used := b.used.Load()
		if limit > 0 && used+n > limit {
			b.refusals.Add(1)
			return false
		}
		if b.used.CompareAndSwap(used, used+n) {
			return true
		}
	}
}

// exhausted is the error of a refused reservation for an answer: the
// provider has acted on the request already.
func (b *bodyBudget) exhausted() *Error {
	return &Error{Code: CodeOverloaded, Detail: "the gateway's memory for bodies in flight is in use (server.max_body_memory); try again",
		RetryAfter: time.Second, retry: retryIdempotent}
}

// errRequestBodyBudget refuses a request whose body does not fit in the
// body budget; nothing was sent.
var errRequestBodyBudget = &Error{Code: CodeOverloaded, Detail: "the gateway's memory for bodies in flight is in use (server.max_body_memory); try again",
	RetryAfter: time.Second, retry: retryAlways}

// releaseResponseBody gives back what ex holds in the body budget for the
// answer in ctx.Response (a retry discards it).
func (ex *Exchange) releaseResponseBody() {
	if ex.respHeld != 0 {
		ex.budget.used.Add(-ex.respHeld)
		ex.respHeld = 0
	}
}

// bigBody is the body size from which an answer's share of the budget is
// kept until the answer has been written to the caller rather than given
// back when the handler returns: a slow caller then holds it, as it holds
// the memory.
const bigBody = 64 << 10

// settleBodies gives back ex's share of the body budget when its answer is
// ready to be written. A big answer body goes to fasthttp as a stream that
// gives its share back once written (or dropped).
func (ex *Exchange) settleBodies(resp *fasthttp.Response) {
	b := ex.budget
	if b == nil {
		return
	}
	held := ex.respHeld + ex.reqHeld
	ex.respHeld, ex.reqHeld, ex.budget = 0, 0, nil
	if resp.IsBodyStream() || resp.SkipBody {
		b.used.Add(-held)
		return
	}
	if body := resp.Body(); len(body) >= bigBody {
		// Take the response's buffer over (SetBodyStream would recycle it).
		// A raw body (SetBodyRaw: a cache entry's own bytes) is not in that
		// buffer and SwapBody drops it: then the bytes seen are the body.
		if owned := resp.SwapBody(nil); len(owned) > 0 {
			body = owned
		}
		resp.SetBodyStream(&budgetedBody{b: b, held: held, body: body}, len(body))
		return
	}
	b.used.Add(-held)
}

// budgetedBody is an answer body that holds its share of the body budget
// until fasthttp has written it and closes it.
type budgetedBody struct {
	b    *bodyBudget
	held int64
	body []byte
	off  int
}

func (r *budgetedBody) Read(p []byte) (int, error) {
	if r.off >= len(r.body) {
		return 0, io.EOF
	}
	n := copy(p, r.body[r.off:])
	r.off += n
	return n, nil
}

func (r *budgetedBody) Close() error {
	if r.b != nil {
		r.b.used.Add(-r.held)
		r.b, r.body = nil, nil
	}
	return nil
}

// pooledConnClean reports whether a pooled connection can carry a request:
// nothing is waiting to be read on it (no stray bytes after the last answer)
// and the provider has not closed it. A connection that cannot be checked
// (not a socket) is taken as clean.
func pooledConnClean(c net.Conn) bool {

	if tc, ok := c.(interface{ NetConn() net.Conn }); ok { // TLS: look at the socket under it
		c = tc.NetConn()
	}
	pc, ok := c.(*upstreamConn)
	if !ok || pc.raw == nil {
		return true
	}
	return pc.peeker.peek(pc.raw, pc.look) == peekNothing
}

// callerGone reports whether the caller closed its connection (an orderly
// close or a reset). A caller that sent more (a pipelined request) is there.
func callerGone(ctx *fasthttp.RequestCtx) bool { return connGone(ctx.Conn()) }

// connGone reports whether the peer closed c (see callerGone).
func connGone(c net.Conn) bool {
	sc, ok := c.(syscall.Conn)
	if !ok {
		return false
	}
	raw, err := sc.SyscallConn()
	if err != nil {
		return false
	}
	return peek(raw) == peekClosed
}

// upstreamConn is a dialed upstream connection with its raw socket looked
// up once, so that checking it before reuse does not allocate. It counts
// the bytes written to it, so that a failed write is known to have sent
// nothing (errNothingSent).
type upstreamConn struct {
	net.Conn
	raw     syscall.RawConn // nil when the connection is not a socket
	peeker  peeker
	look    func(uintptr) // peeker.look, bound once
	written int64
	dl      lazyDeadlines // see deadline.go
	closed  atomic.Bool
}

func (c *upstreamConn) SetDeadline(t time.Time) error      { return c.dl.setBoth(t) }
func (c *upstreamConn) SetReadDeadline(t time.Time) error  { return c.dl.setRead(t) }
func (c *upstreamConn) SetWriteDeadline(t time.Time) error { return c.dl.setWrite(t) }

func (c *upstreamConn) Close() error {
	if c.closed.CompareAndSwap(false, true) {
		c.dl.unwatch()
	}
	return c.Conn.Close()
}

func (c *upstreamConn) Write(p []byte) (int, error) {
	n, err := c.Conn.Write(p)
	c.written += int64(n)
	return n, err
}

// bytesWritten is how many bytes were written to c so far, or -1 when c
// does not count them. (Only one attempt uses a connection at a time.)
// (A type switch on concrete types: it runs once per attempt.)
func bytesWritten(c net.Conn) int64 {
	switch c := c.(type) {
	case *upstreamConn:
		return c.written
	case *tls.Conn: // the socket under it
		if pc, ok := c.NetConn().(*upstreamConn); ok {
			return pc.written
		}
	}
	return -1
}

// wrapUpstreamConn wraps every upstream connection: for its lazy deadlines,
// for the count of bytes written and, on a socket, for pooledConnClean.
func wrapUpstreamConn(c net.Conn, err error) (net.Conn, error) {
	if err != nil {
		return nil, err
	}
	if pc, ok := c.(*upstreamConn); ok {
		return pc, nil // a dial hook that wrapped it already
	}
	pc := &upstreamConn{Conn: c}
	if sc, ok := c.(syscall.Conn); ok {
		if raw, rerr := sc.SyscallConn(); rerr == nil {
			pc.raw = raw
			pc.look = pc.peeker.look
		}
	}
	pc.dl.watch(c)
	return pc, nil
}

type peekResult uint8

const (
	peekNothing peekResult = iota // no byte waiting, still open
	peekData                      // bytes are waiting
	peekClosed                    // the peer closed (or reset) the connection
)
