package proxy

import (
	"errors"
	"io"
	"net"
	"strconv"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/valyala/fasthttp"
)

// The connection edge: what happens to a caller's connection before fasthttp
// reads a request from it (the connection limit), and to requests fasthttp
// would answer on its own (Expect: 100-continue; other Expect values are
// refused in Route.serve, found by the head scan).

// defaultMaxConnections is server.max_connections when 0.
const defaultMaxConnections = 262144

// edgeListener enforces server.max_connections. A connection over the limit
// gets a small problem+json 503 overloaded with Retry-After and is closed,
// instead of fasthttp's plain-text answer. Connections within the limit pass
// unchanged but for a wrapper that counts their Close: per connection, not per
// request.
type edgeListener struct {
	net.Listener
	max       int64
	open      atomic.Int64
	closeOnce sync.Once
	closeErr  error
}

func newEdgeListener(ln net.Listener, maxConns int) *edgeListener {
	if maxConns <= 0 {
		maxConns = defaultMaxConnections
	}
	return &edgeListener{Listener: ln, max: int64(maxConns)}
}

func (l *edgeListener) Accept() (net.Conn, error) {
	for {
		c, err := l.Listener.Accept()
		if err != nil {
			return nil, err
		}
		if tc, ok := c.(*net.TCPConn); ok {
			_ = tc.SetKeepAlive(true) // fasthttp's TCPKeepalive sees the wrapper, not the *net.TCPConn
		}
		if l.open.Add(1) > l.max {
			l.open.Add(-1)
			if refusing.Add(1) > maxRefusing { // a flood: no answer, just close
				refusing.Add(-1)
				_ = c.Close()
				continue
			}
			go func() {
				refuseConn(c)
				refusing.Add(-1)
			}()
			continue
		}
		ec := &edgeConn{Conn: c, l: l}
		ec.dl.watch(c)
		return ec, nil
	}
}

// Close closes the listener once; later calls (Shutdown, then fasthttp's own
// shutdown) return nil.
func (l *edgeListener) Close() error {
	l.closeOnce.Do(func() { l.closeErr = l.Listener.Close() })
	return l.closeErr
}

type edgeConn struct {
	net.Conn
	l      *edgeListener
	closed atomic.Bool
	dl     lazyDeadlines // see deadline.go
}

func (c *edgeConn) SetDeadline(t time.Time) error      { return c.dl.setBoth(t) }
func (c *edgeConn) SetReadDeadline(t time.Time) error  { return c.dl.setRead(t) }
func (c *edgeConn) SetWriteDeadline(t time.Time) error { return c.dl.setWrite(t) }

// SyscallConn exposes the socket under the wrapper (the gateway peeks at it
// to notice a caller that hung up, see callerGone).
func (c *edgeConn) SyscallConn() (syscall.RawConn, error) {
	if sc, ok := c.Conn.(syscall.Conn); ok {
		return sc.SyscallConn()
	}
	return nil, errors.ErrUnsupported
}

// ReadFrom is what lets a download go from the provider's socket to the
// caller's inside the kernel (stream.go, splice): fasthttp's writer hands a
// reader to the connection's ReadFrom, and net.TCPConn's splices from a TCP
// source. The embedded net.Conn alone would hide it.
func (c *edgeConn) ReadFrom(r io.Reader) (int64, error) {
	if rf, ok := c.Conn.(io.ReaderFrom); ok {
		return rf.ReadFrom(r)
	}
	return io.Copy(struct{ io.Writer }{c.Conn}, r)
}

func (c *edgeConn) Close() error {
	if c.closed.CompareAndSwap(false, true) {
		c.l.open.Add(-1)
		c.dl.unwatch()
	}
	return c.Conn.Close()
}

// refusing counts connections being answered 503 at once (each for at most
// a second); past maxRefusing, a connection over the limit is just closed,
// so that a flood of connections cannot pile up goroutines.
var refusing atomic.Int64

const maxRefusing = 256

// The refusal: a complete HTTP/1.1 response, built once but for its id.
var (
	refuseHead = []byte("HTTP/1.1 503 Service Unavailable\r\nContent-Type: application/problem+json\r\n" +
		"Cache-Control: no-store\r\nRetry-After: 1\r\nConnection: close\r\nX-Request-Id: ")
	refuseBody1 = []byte(`{"type":"about:blank","title":"Service Unavailable","status":503,"code":"overloaded",` +
		`"detail":"the gateway is serving its maximum number of connections (server.max_connections)","request_id":"`)
	refuseBody2 = []byte(`","retryable":true,"retry_after":1}`)
)

// refuseConn answers a connection over the limit and closes it. The caller's
// request is not read; after the answer the connection is half-closed and
// what the caller sent is drained for a moment, so that closing does not
// reset the connection before the caller has read the answer.
func refuseConn(c net.Conn) {
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(time.Second))
	var idBuf [32]byte
	id := newRequestID(idBuf[:0])
	msg := make([]byte, 0, 512)
	msg = append(msg, refuseHead...)
	msg = append(msg, id...)
	msg = append(msg, "\r\nContent-Length: "...)
	msg = strconv.AppendInt(msg, int64(len(refuseBody1)+len(id)+len(refuseBody2)), 10)
	msg = append(msg, "\r\n\r\n"...)
	msg = append(append(append(msg, refuseBody1...), id...), refuseBody2...)
	if _, err := c.Write(msg); err != nil {
		return
	}
	if cw, ok := c.(interface{ CloseWrite() error }); ok {
		_ = cw.CloseWrite()
	}
	_, _ = io.Copy(io.Discard, io.LimitReader(c, 64<<10))
}

// trackListener registers l for g and marks g ready, unless g is draining.
func (g *Gateway) trackListener(l *edgeListener) bool {
	g.serveMu.Lock()
	defer g.serveMu.Unlock()
	if g.draining.Load() {
		return false
	}
	g.listeners = append(g.listeners, l)
	g.ready.Store(true)
	return true
}

func (g *Gateway) untrackListener(l *edgeListener) {
	g.serveMu.Lock()
	defer g.serveMu.Unlock()
	for i, x := range g.listeners {
		if x == l {
			g.listeners = append(g.listeners[:i], g.listeners[i+1:]...)
			break
		}
	}
}

// stopServing marks g draining and not ready and closes its listeners: a
// Serve that has not reached its accept loop yet returns at once.
func (g *Gateway) stopServing() {
	g.serveMu.Lock()
	defer g.serveMu.Unlock()
	g.draining.Store(true)
	g.ready.Store(false)
	for _, l := range g.listeners {
		_ = l.Close()
	}
}

func isClosedErr(err error) bool { return errors.Is(err, net.ErrClosed) }

// expectContinue decides an "Expect: 100-continue" request before fasthttp
// sends 100 Continue: a body announced larger than server.max_request_body
// is refused with 413 problem+json at once (the connection closes, the body
// is never read).
func (g *Gateway) expectContinue(ctx *fasthttp.RequestCtx) int {
	st := g.state.Load()
	if max := int(st.cfg.Server.MaxRequestBody); max > 0 && ctx.Request.Header.ContentLength() > max {
		st.reject(ctx, Errorf(CodeRequestTooLarge, "the request body is larger than %s (server.max_request_body)", st.cfg.Server.MaxRequestBody))
		return fasthttp.StatusRequestEntityTooLarge
	}
	return fasthttp.StatusContinue
}
