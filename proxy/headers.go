package proxy

import (
	"bytes"
	"net"

	"github.com/valyala/fasthttp"
)

// Hop-by-hop headers (RFC 9110 §7.6.1) concern one connection and are never
// forwarded. They are removed from the request before any plugin runs and
// from the upstream's response before any plugin sees it, so that a plugin's
// own headers survive.
var (
	hopRequest = []string{"Connection", "Keep-Alive", "Proxy-Connection", "Proxy-Authorization",
		"TE", "Trailer", "Transfer-Encoding", "Upgrade"}
	hopResponse = []string{"Connection", "Keep-Alive", "Proxy-Connection", "Proxy-Authenticate",
		"TE", "Trailer", "Transfer-Encoding", "Upgrade"}
)

var (
	strConnection      = []byte("Connection")
	strXForwardedFor   = []byte("X-Forwarded-For")
	strXForwardedProto = []byte("X-Forwarded-Proto")
	strXForwardedHost  = []byte("X-Forwarded-Host")
	strHTTP            = []byte("http")
	strCommaSpace      = []byte(", ")
)

type header interface {
	PeekBytes(key []byte) []byte
	Del(key string)
	DelBytes(key []byte)
}

// stripHopByHop removes the fixed hop-by-hop headers and every header named
// in Connection. The Connection value is copied first: deleting headers may
// reuse its memory.
func stripHopByHop(h header, fixed []string, ex *Exchange) {
	if conn := h.PeekBytes(strConnection); len(conn) > 0 {
		ex.scratch = append(ex.scratch[:0], conn...)
		for tok := range bytes.SplitSeq(ex.scratch, []byte{','}) {
			if tok = bytes.TrimSpace(tok); len(tok) > 0 {
				h.DelBytes(tok)
			}
		}
	}
	for _, k := range fixed {
		h.Del(k)
	}
}

// tchar marks the bytes allowed in a header name (RFC 9110 token).
var tchar = func() (t [256]bool) {
	for _, c := range []byte("!#$%&'*+-.^_`|~") {
		t[c] = true
	}
	for c := '0'; c <= '9'; c++ {
		t[c] = true
	}
	for c := 'a'; c <= 'z'; c++ {
		t[c] = true
		t[c-'a'+'A'] = true
	}
	return t
}()

// validHeaderNames scans the raw request head as received. fasthttp accepts
// names with spaces ("Bad Name: x"); forwarding them would hand the provider
// a request that no longer parses the same way everywhere.
func validHeaderNames(raw []byte) bool {
	for len(raw) > 0 {
		line := raw
		if i := bytes.IndexByte(raw, '\n'); i >= 0 {
			line, raw = raw[:i], raw[i+1:]
		} else {
			raw = nil
		}
		colon := bytes.IndexByte(line, ':')
		if colon < 0 {
			continue // the final empty line
		}
		for _, c := range line[:colon] {
			if !tchar[c] {
				return false
			}
		}
	}
	return true
}

// prepareRequest readies the caller's request for forwarding: hop-by-hop
// headers go, X-Forwarded-For/-Proto/-Host are added. Host is replaced per
// attempt by the upstream call.
func prepareRequest(ctx *fasthttp.RequestCtx, ex *Exchange) {
	h := &ctx.Request.Header
	h.SetNoDefaultContentType(true) // forward no Content-Type the caller did not send
	stripHopByHop(h, hopRequest, ex)

	// X-Forwarded-For: the caller's chain, then the caller's address.
	ex.scratch = append(ex.scratch[:0], h.PeekBytes(strXForwardedFor)...)
	if len(ex.scratch) > 0 {
		ex.scratch = append(ex.scratch, strCommaSpace...)
	}
	ex.scratch = appendRemoteIP(ex.scratch, ctx.RemoteAddr())
	h.SetBytesKV(strXForwardedFor, ex.scratch)
	if ctx.IsTLS() {
		h.SetBytesKV(strXForwardedProto, strHTTPS)
	} else {
		h.SetBytesKV(strXForwardedProto, strHTTP)
	}
	if host := h.Host(); len(host) > 0 {
		ex.scratch = append(ex.scratch[:0], host...)
		h.SetBytesKV(strXForwardedHost, ex.scratch)
	}
}

// stripHopByHopResponse cleans an upstream's response head. The upstream's
// "Connection: close" concerns the upstream connection only; it must not close
// the caller's.
func stripHopByHopResponse(h *fasthttp.ResponseHeader, ex *Exchange) {
	stripHopByHop(h, hopResponse, ex)
	h.ResetConnectionClose()
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
