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

// prepareRequest readies the caller's request for forwarding: hop-by-hop
// headers go, X-Forwarded-For/-Proto/-Host are added. Host is replaced per
// attempt by the upstream call.
func prepareRequest(ctx *fasthttp.RequestCtx, ex *Exchange) {
	h := &ctx.Request.Header
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
