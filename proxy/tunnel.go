package proxy

import (
	"bufio"
	"crypto/tls"
	"errors"
	"io"
	"net"
	"sync"
	"sync/atomic"
	"time"

	"github.com/valyala/fasthttp"
)

// Upgrade tunnels (routes with upgrade: true). A request whose Connection
// header lists "upgrade" and whose Upgrade header names a protocol other than
// h2c runs the route's pipeline like any request; the upstream call sends it
// on a fresh connection (never a pooled one) with Connection and Upgrade
// kept. A 101 from the provider goes to the caller, then both connections
// become one byte tunnel until either side closes, tunnel_idle_timeout
// passes without a byte either way, or the gateway drains. Any other answer
// is an ordinary answer. On a route without upgrade: true the request is
// refused (upgrade_not_allowed) and nothing is forwarded. "Upgrade: h2c"
// alone is not a tunnel request: the gateway ignores it, as RFC 9110 §7.8
// allows, and serves the request over HTTP/1.1 as before.

// defaultTunnelIdleTimeout is the route's tunnel_idle_timeout when unset.
const defaultTunnelIdleTimeout = 5 * time.Minute

// tunnelBufSize bounds what one direction of a tunnel holds at a time.
const tunnelBufSize = 32 << 10

// Tunnel outcomes (label values of sluice_tunnels_total).
const (
	tunnelClosed  = "closed"       // a side closed its connection (or failed)
	tunnelIdle    = "idle_timeout" // no byte either way for tunnel_idle_timeout
	tunnelDrained = "drained"      // the gateway shut down
)

var (
	strUpgrade    = []byte("Upgrade")
	strConnection = []byte("Connection")
	strUpgradeTok = []byte("upgrade")
	strH2C        = []byte("h2c")

	errUpgradeNotAllowed = &Error{Code: CodeUpgradeNotAllowed,
		Detail: "this route does not accept Connection: Upgrade requests (routes.<name>.upgrade is not true); nothing was forwarded"}
)

// nextToken returns the first comma-separated element of a header list value,
// trimmed of spaces and tabs, and the rest. Empty elements are returned as
// empty tokens (RFC 9110 §5.6.1 lets a recipient ignore them).
func nextToken(v []byte) (tok, rest []byte) {
	i := 0
	for i < len(v) && v[i] != ',' {
		i++
	}
	tok, rest = v[:i], v[i:]
	if len(rest) > 0 {
		rest = rest[1:]
	}
	for len(tok) > 0 && (tok[0] == ' ' || tok[0] == '\t') {
		tok = tok[1:]
	}
	for len(tok) > 0 && (tok[len(tok)-1] == ' ' || tok[len(tok)-1] == '\t') {
		tok = tok[:len(tok)-1]
	}
	return tok, rest
}

// tokenEqualFold compares two tokens, ASCII case-insensitively, of any lengths.
func tokenEqualFold(a, b []byte) bool { return len(a) == len(b) && asciiEqualFold(a, b) }

// listHas reports whether a header list value has the token tok (any case).
func listHas(v, tok []byte) bool {
	for len(v) > 0 {
		var t []byte
		t, v = nextToken(v)
		if tokenEqualFold(t, tok) {
			return true
		}
	}
	return false
}

// upgradesBeyondH2C reports whether an Upgrade value names a protocol other
// than h2c ("websocket", "foo/2"; the version after '/' is not looked at).
func upgradesBeyondH2C(v []byte) bool {
	for len(v) > 0 {
		var t []byte
		t, v = nextToken(v)
		name := t
		for i, c := range t {
			if c == '/' {
				name = t[:i]
				break
			}
		}
		if len(name) > 0 && !tokenEqualFold(name, strH2C) {
			return true
		}
	}
	return false
}

// wantsTunnel reports whether a request asks for a protocol upgrade the
// gateway tunnels: some Connection header lists "upgrade" and some Upgrade
// header names a protocol other than h2c, in an HTTP/1.1 request (RFC 9110
// §7.8: a server must ignore Upgrade in an HTTP/1.0 one, which is then
// served as an ordinary request). Called only when the head scan saw an
// Upgrade header, so ordinary requests pay nothing.
func wantsTunnel(h *fasthttp.RequestHeader) bool {
	if !h.IsHTTP11() {
		return false
	}
	conn, up := false, false
	for k, v := range h.All() {
		switch {
		case tokenEqualFold(k, strConnection):
			conn = conn || listHas(v, strUpgradeTok)
		case tokenEqualFold(k, strUpgrade):
			up = up || upgradesBeyondH2C(v)
		}
	}
	return conn && up
}

// tunnel is one upgraded connection pair.
type tunnel struct {
	up     net.Conn
	upR    *bufio.Reader // up's reader: may hold bytes the provider sent right after its 101
	caller net.Conn
	idle   time.Duration
	last   atomic.Int64 // nanotime of the latest byte either way
	mu     sync.Mutex
	ended  string // the first reason the tunnel ended
	closed bool
	done   atomic.Bool // set before the deadlines that stop the copy loops
}

// end records why the tunnel ended (the first reason wins), closes the
// provider's connection and stops both copy loops. It does not block. (The
// caller's connection is fasthttp's to close once the hijack handler
// returns: its Close does nothing, so a past deadline stops the reads.)
func (tn *tunnel) end(reason string) {
	tn.mu.Lock()
	defer tn.mu.Unlock()
	if tn.ended == "" {
		tn.ended = reason
	}
	if tn.closed {
		return
	}
	tn.closed = true
	tn.done.Store(true)
	_ = tn.up.Close()
	if tn.caller != nil {
		_ = tn.caller.SetDeadline(time.Unix(1, 0))
	}
}

func (tn *tunnel) drain() { tn.end(tunnelDrained) }

var tunnelBufs = sync.Pool{New: func() any { b := make([]byte, tunnelBufSize); return &b }}

// pipe copies src to dst until either fails or the tunnel has been idle for
// tn.idle. Bytes going the other way count as activity: a read that times out
// while the other direction was busy waits again.
func (tn *tunnel) pipe(dst net.Conn, srcConn net.Conn, src io.Reader) {
	bp := tunnelBufs.Get().(*[]byte)
	defer tunnelBufs.Put(bp)
	buf := *bp
	for {
		_ = srcConn.SetReadDeadline(time.Now().Add(tn.idle))
		if tn.done.Load() { // end's deadline may have been replaced just now
			return
		}
		n, err := src.Read(buf)
		if n > 0 {
			tn.last.Store(nanotime())
			_ = dst.SetWriteDeadline(time.Now().Add(tn.idle))
			if tn.done.Load() {
				return
			}
			if _, werr := dst.Write(buf[:n]); werr != nil {
				tn.end(tunnelClosed)
				return
			}
		}
		if err != nil {
			if tn.done.Load() {
				return
			}
			if isTimeout(err) && time.Duration(nanotime()-tn.last.Load()) < tn.idle {
				continue // the other direction is active
			}
			if isTimeout(err) {
				tn.end(tunnelIdle)
			} else {
				tn.end(tunnelClosed)
			}
			return
		}
	}
}

// run tunnels between the hijacked caller connection and the provider's
// until the tunnel ends, then counts it.
func (tn *tunnel) run(caller net.Conn, m *Metrics, route string) {
	tn.mu.Lock()
	tn.caller = caller
	closed := tn.closed // drained between the 101 and the hijack
	tn.mu.Unlock()
	if !closed {
		_ = caller.SetDeadline(time.Time{})
		_ = tn.up.SetDeadline(time.Time{})
		tn.last.Store(nanotime())
		done := make(chan struct{})
		go func() {
			tn.pipe(tn.up, caller, caller)
			close(done)
		}()
		tn.pipe(caller, tn.up, tn.upR)
		<-done
	}
	m.open.remove(tn)
	m.tunnels.WithLabelValues(route, tn.ended).Inc()
}

// handshake sends an upgrade request to t on a new connection and reads the
// answer into ctx.Response. On a 101 the connection is kept in ex.tunnel for
// Route.serve to tunnel; otherwise it is closed and the answer is an ordinary one.
func (u *Upstream) handshake(t *Target, ctx *fasthttp.RequestCtx, ex *Exchange, timeout time.Duration) error {
	hc := t.client
	ResetResponse(ctx, ex)
	ctx.Request.URI().DisablePathNormalizing = true
	conn, err := hc.Dial(hc.Addr)
	if err != nil {
		return err
	}
	_ = conn.SetDeadline(time.Now().Add(timeout))
	if hc.IsTLS {
		tc := hc.TLSConfig.Clone()
		tc.NextProtos = nil // HTTP/1.1: an upgrade has no meaning in HTTP/2
		tlsConn := tls.Client(conn, tc)
		if err := tlsConn.Handshake(); err != nil {
			_ = conn.Close()
			return err
		}
		conn = tlsConn
	}
	bw := bufio.NewWriterSize(conn, 4<<10)
	if err := ctx.Request.Write(bw); err != nil {
		_ = conn.Close()
		return err
	}
	if err := bw.Flush(); err != nil {
		_ = conn.Close()
		return err
	}
	br := bufio.NewReaderSize(conn, 32<<10)
	resp := &ctx.Response
	if err := resp.ReadLimitBody(br, hc.MaxResponseBodySize); err != nil {
		_ = conn.Close()
		if errors.Is(err, fasthttp.ErrBodyTooLarge) {
			return errBodyTooLarge
		}
		return err
	}
	if resp.StatusCode() != fasthttp.StatusSwitchingProtocols {
		_ = conn.Close()
		return nil
	}
	if ex.tunnel != nil { // an earlier attempt's 101 that a plugin replaced
		ex.tunnel.end(tunnelClosed)
	}
	ex.tunnel = &tunnel{up: conn, upR: br}
	return nil
}

// startTunnel hands the caller's connection to the tunnel once the 101 is
// written; any other final answer closes the provider's connection.
func (rt *Route) startTunnel(ctx *fasthttp.RequestCtx, ex *Exchange) {
	tn := ex.tunnel
	ex.tunnel = nil
	if ctx.Response.StatusCode() != fasthttp.StatusSwitchingProtocols {
		tn.end(tunnelClosed)
		return
	}
	tn.idle = rt.TunnelIdleTimeout
	m, route := rt.metrics.m, rt.Name
	m.open.add(tn, tn.drain)
	ctx.Hijack(func(c net.Conn) { tn.run(c, m, route) })
}

// serveUpgrade runs a tunnel request through the pipeline: hop-by-hop headers
// go as usual, then Connection: Upgrade and the caller's Upgrade value are
// put back for the provider's handshake.
func (rt *Route) serveUpgrade(ctx *fasthttp.RequestCtx, ex *Exchange, head *requestHead) {
	h := &ctx.Request.Header
	upgrade := append([]byte(nil), h.PeekBytes(strUpgrade)...)
	prepareRequest(ctx, ex, head)
	h.SetCanonical(strConnection, strUpgrade)
	h.SetCanonical(strUpgrade, upgrade)
	ex.upgrade = true
	if err := rt.run(ctx, ex); err != nil {
		rt.st.writeError(ctx, ex, err)
	}
	if ex.tunnel != nil {
		rt.startTunnel(ctx, ex)
	}
}
