package proxy

import (
	"bytes"
	"net"
	"unsafe"

	"github.com/sluice-gw/sluice/proxy/httpx"
	"github.com/valyala/fasthttp"
)

// Hop-by-hop headers (RFC 9110 §7.6.1) concern one connection and are never
// forwarded. They are removed from the request before any plugin runs and
// from the upstream's response before any plugin sees it, so that a plugin's
// own headers survive. Both directions are found in one pass over the head;
// the common head, which has none of them, costs no deletion at all.
const (
	hopConnection hopSet = 1 << iota
	hopKeepAlive
	hopProxyConnection
	hopProxyAuthorization // request only
	hopProxyAuthenticate  // response only
	hopTE
	hopTrailer
	hopTransferEncoding
	hopUpgrade
	// Not hop-by-hop, but never forwarded either (request only): a method
	// override would make the provider run another method than the one the
	// gateway routed, cached, retried and rate-limited. A request carrying
	// one is refused (Route.serve); the bits find them in the same scan.
	hopXHTTPMethodOverride
	hopXHTTPMethod
	hopXMethodOverride

	methodOverrides = hopXHTTPMethodOverride | hopXHTTPMethod | hopXMethodOverride
	requestOnly     = hopProxyAuthorization | methodOverrides
)

// hopSet is a set of hop-by-hop header names present in a head.
type hopSet uint16

var hopNames = [...][]byte{
	[]byte("Connection"), []byte("Keep-Alive"), []byte("Proxy-Connection"), []byte("Proxy-Authorization"),
	[]byte("Proxy-Authenticate"), []byte("TE"), []byte("Trailer"), []byte("Transfer-Encoding"), []byte("Upgrade"),
	[]byte("X-HTTP-Method-Override"), []byte("X-HTTP-Method"), []byte("X-Method-Override"),
}

// hopOf returns the hop-by-hop bit of a header name (any case), or 0. It
// runs for every header of every request and answer: the names are looked
// up by length first (hopByLen), so that a name of another length costs one
// comparison and one of the same length at most two folded compares.
func hopOf(name []byte) hopSet {
	if len(name) >= len(hopByLen) {
		return 0
	}
	for _, i := range hopByLen[len(name)] {
		if asciiEqualFold(hopNames[i], name) {
			return 1 << i
		}
	}
	return 0
}

// hopByLen lists, by name length, the indexes of hopNames of that length.
var hopByLen = func() (t [23][]uint8) {
	for i, n := range hopNames {
		t[len(n)] = append(t[len(n)], uint8(i))
	}
	return t
}()

// asciiEqualFold compares equal-length ASCII names, ignoring case.
func asciiEqualFold(a, b []byte) bool {
	for i := range a {
		x, y := a[i], b[i]
		if 'A' <= x && x <= 'Z' {
			x += 'a' - 'A'
		}
		if 'A' <= y && y <= 'Z' {
			y += 'a' - 'A'
		}
		if x != y {
			return false
		}
	}
	return true
}

var (
	hdrXForwardedFor   = httpx.NewName("X-Forwarded-For")
	hdrXForwardedProto = httpx.NewName("X-Forwarded-Proto")
	hdrXForwardedHost  = httpx.NewName("X-Forwarded-Host")
	hdrXRequestID      = httpx.NewName("X-Request-Id")
	strXForwardedFor   = hdrXForwardedFor.Bytes()
	strXForwardedProto = hdrXForwardedProto.Bytes()
	strXForwardedHost  = hdrXForwardedHost.Bytes()
	strHTTP            = []byte("http")
	strHTTP11          = []byte("HTTP/1.1")
	strCommaSpace      = []byte(", ")
	strClose           = []byte("close")
	strKeepAliveToken  = []byte("keep-alive")
	strHost            = []byte("Host")
)

type header interface {
	PeekBytes(key []byte) []byte
	DelBytes(key []byte)
}

// stripHops deletes the hop-by-hop headers in present and every header named
// in Connection, except Host (which no connection option can remove). The
// Connection value is copied to *buf first: deleting headers may reuse its
// memory. The gateway's own request headers (X-Forwarded-*, X-Request-Id) are
// set after this, so Connection cannot name them away.
func stripHops(h header, present hopSet, buf *[]byte) {
	if present&hopConnection != 0 {
		*buf = append((*buf)[:0], h.PeekBytes(hopNames[0])...)
		for tok := range bytes.SplitSeq(*buf, []byte{','}) {
			tok = bytes.TrimSpace(tok)
			if len(tok) > 0 && !bytes.EqualFold(tok, strClose) && !bytes.EqualFold(tok, strKeepAliveToken) &&
				!bytes.EqualFold(tok, strHost) {
				h.DelBytes(tok)
			}
		}
	}
	for i, n := range hopNames {
		if present&(1<<i) != 0 {
			h.DelBytes(n)
		}
	}
}

// requestHead is what one pass over the raw request head finds.
type requestHead struct {
	hops         hopSet // hop-by-hop and method-override headers present
	requestID    []byte // first X-Request-Id value as received (trimmed), nil if absent or empty
	forwardedFor []byte // first X-Forwarded-For value as received, nil if absent
	own          ownSet // the gateway's own headers the caller sent
	dup          ownSet // those it sent more than once
	badName      bool   // a header name with a byte RFC 9110 forbids
	expect       []byte // Expect value, nil if absent
}

// ownSet is a set of the headers the gateway sets on every forwarded request.
type ownSet uint8

const (
	ownXRequestID ownSet = 1 << iota
	ownXForwardedFor
	ownXForwardedProto
	ownXForwardedHost
)

var (
	strXRequestIDLower      = []byte("x-request-id")
	strXForwardedForLower   = []byte("x-forwarded-for")
	strXForwardedProtoLower = []byte("x-forwarded-proto")
	strXForwardedHostLower  = []byte("x-forwarded-host")
)

// scanRequestHead walks the raw request head as received, once: it checks
// every header name (fasthttp accepts names with spaces, "Bad Name: x", which
// the provider might parse differently), notes the hop-by-hop headers present
// and picks the two values the gateway reads, so that no lookup by name is
// needed afterwards. The slices point into the request and are valid while it is.
func scanRequestHead(raw []byte, h *requestHead) {
	for len(raw) > 0 {
		line := raw
		if i := bytes.IndexByte(raw, '\n'); i >= 0 {
			line, raw = raw[:i], raw[i+1:]
		} else {
			raw = nil
		}
		colon := bytes.IndexByte(line, ':')
		if colon < 0 {
			continue // the request line's end, or the final empty line
		}
		name := line[:colon]
		for _, c := range name {
			if !httpx.TokenByte[c] {
				h.badName = true
				return
			}
		}
		var own ownSet
		switch len(name) {
		case len(strXRequestIDLower):
			if asciiEqualFold(name, strXRequestIDLower) {
				own = ownXRequestID
				if h.own&ownXRequestID == 0 { // the first, even if empty
					h.requestID = bytes.TrimSpace(line[colon+1:])
				}
			}
		case len(strXForwardedForLower):
			if asciiEqualFold(name, strXForwardedForLower) {
				own = ownXForwardedFor
				if h.own&ownXForwardedFor == 0 {
					h.forwardedFor = bytes.TrimSpace(line[colon+1:])
				}
			}
		case len(strXForwardedHostLower):
			if asciiEqualFold(name, strXForwardedHostLower) {
				own = ownXForwardedHost
			}
		case len(strXForwardedProtoLower):
			if asciiEqualFold(name, strXForwardedProtoLower) {
				own = ownXForwardedProto
			}
		case len(strExpectLower):
			if asciiEqualFold(name, strExpectLower) {
				h.expect = bytes.TrimSpace(line[colon+1:])
				continue
			}
		}
		if own != 0 {
			h.dup |= h.own & own
			h.own |= own
			continue
		}
		h.hops |= hopOf(name)
	}
	h.hops &^= hopProxyAuthenticate
}

var (
	strExpectLower = []byte("expect")
	str100Continue = []byte("100-continue")
)

// asciiEqualFold100Continue reports whether an Expect value is 100-continue,
// the one expectation the gateway meets (fasthttp answers it, after
// Gateway.expectContinue checked the announced length).
func asciiEqualFold100Continue(v []byte) bool {
	return len(v) == len(str100Continue) && asciiEqualFold(v, str100Continue)
}

// prepareRequest readies the caller's request for forwarding: hop-by-hop
// headers go, then the gateway's own headers are set: exactly one
// X-Request-Id, the one logged, and, for an upstream with
// forwarded_headers, X-Forwarded-For/-Proto/-Host. Being set after the
// stripping, a caller's "Connection: X-Forwarded-For" cannot remove them;
// duplicates the caller sent are dropped. Without forwarded_headers the
// gateway adds no X-Forwarded-* header (a third-party provider has no use for
// the internal addresses and host names of the callers) and passes on those
// a caller sent as it sent them. Host is replaced per attempt by the
// upstream call.
func prepareRequest(ctx *fasthttp.RequestCtx, ex *Exchange, head *requestHead) {
	h := &ctx.Request.Header
	h.SetNoDefaultContentType(true) // forward no Content-Type the caller did not send
	forwarded := ex.Upstream.forwarded

	if forwarded {
		// X-Forwarded-For: the caller's chain, then the caller's address.
		// Built before deleting anything (head's slices point into the
		// request).
		ex.scratch = append(ex.scratch[:0], head.forwardedFor...)
		if len(ex.scratch) > 0 {
			ex.scratch = append(ex.scratch, strCommaSpace...)
		}
		ex.scratch = appendRemoteIP(ex.scratch, ctx.RemoteAddr())
	}
	if head.hops != 0 {
		stripHops(h, head.hops, &ex.joinBuf) // joinBuf is free until the response
	}
	if head.dup&ownXRequestID != 0 {
		hdrXRequestID.Del(h)
	}
	if forwarded {
		if head.dup&^ownXRequestID != 0 {
			hdrXForwardedFor.Del(h)
			hdrXForwardedProto.Del(h)
			hdrXForwardedHost.Del(h)
		}
		h.SetCanonical(strXForwardedFor, ex.scratch)
		if ctx.IsTLS() {
			h.SetCanonical(strXForwardedProto, strHTTPS)
		} else {
			h.SetCanonical(strXForwardedProto, strHTTP)
		}
		if host := h.Host(); len(host) > 0 {
			ex.scratch = append(ex.scratch[:0], host...)
			h.SetCanonical(strXForwardedHost, ex.scratch)
		} else if head.own&ownXForwardedHost != 0 {
			hdrXForwardedHost.Del(h) // not the caller's claim when there is no Host
		}
	}
	if head.dup&ownXRequestID != 0 || head.hops&hopConnection != 0 {
		// Connection may have named it, or begin kept the first of several.
		h.SetCanonical(strXRequestID, ex.requestID)
	}
}

// stripHopByHopResponse cleans an upstream's response head. The upstream's
// "Connection: close" concerns the upstream connection only; it must not close
// the caller's.
func stripHopByHopResponse(h *fasthttp.ResponseHeader, ex *Exchange) {
	var hops hopSet
	for k := range h.All() {
		hops |= hopOf(k)
	}
	if hops &^= requestOnly; hops != 0 {
		stripHops(h, hops, &ex.scratch)
	}
	h.ResetConnectionClose()
	// The protocol version is hop-by-hop too: an HTTP/1.0 provider's answer
	// goes to the caller as the gateway's HTTP/1.1.
	if p := h.Protocol(); len(p) > 0 && !bytes.Equal(p, strHTTP11) {
		h.SetProtocol(strHTTP11)
	}
}

func appendRemoteIP(dst []byte, addr net.Addr) []byte {
	switch a := addr.(type) {
	case *net.TCPAddr:
		ap := a.AddrPort()
		return ap.Addr().Unmap().AppendTo(dst)
	case nil:
		return append(dst, "unknown"...)
	}
	host, _, err := net.SplitHostPort(addr.String())
	if err != nil {
		return append(dst, "unknown"...)
	}
	return append(dst, host...)
}

// b2s converts without copying; the bytes must not change while the string is used.
func b2s(b []byte) string { return unsafe.String(unsafe.SliceData(b), len(b)) }
