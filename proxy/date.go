package proxy

import (
	"bufio"
	"bytes"
	"sync"
	"time"

	"github.com/valyala/fasthttp"
)

// The Date of answers. fasthttp's server writes its own Date on every
// answer (and drops the one in the header) unless told not to, and its
// header setters ignore Date. The gateway's server is told not to
// (Server.NoDefaultDate, see newServer), so that an answer keeps the Date
// its origin gave it and a cache hit the Date stored with it; finish adds
// the gateway's own Date to an answer that has none (RFC 9110 section
// 6.6.1). Response.Reset turns fasthttp's own Date back on for that one
// answer: the gateway's own answers (problems) get the current time that
// way.

var (
	strDate = []byte("Date")
	// datePlaceholder is added under a name of the same length as Date and
	// renamed in place (SetDate): fasthttp offers no setter for Date.
	datePlaceholder = []byte("Xdat")
	strEmptyHead    = []byte("HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n")
)

// SetDate sets the Date of h to v (an HTTP-date, without CR or LF; others
// are ignored), replacing any Date h had. It does not allocate once h has
// room.
func SetDate(h *fasthttp.ResponseHeader, v []byte) {
	if bytes.ContainsAny(v, "\r\n") {
		return
	}
	h.DelBytes(strDate)
	h.AddBytesKV(datePlaceholder, v)
	var last []byte
	for k := range h.All() {
		if bytes.Equal(k, datePlaceholder) {
			last = k // ours is the last one added
		}
	}
	copy(last, strDate)
}

// hasDate reports whether h carries a Date.
func hasDate(h *fasthttp.ResponseHeader) bool { return len(h.PeekBytes(strDate)) > 0 }

// ensureDate gives an answer without Date the gateway's current time.
func ensureDate(h *fasthttp.ResponseHeader) {
	if hasDate(h) {
		return
	}
	var buf [32]byte
	SetDate(h, AppendHTTPDate(buf[:0], time.Now()))
}

// AppendHTTPDate appends t as an IMF-fixdate (RFC 9110 section 5.6.7).
func AppendHTTPDate(dst []byte, t time.Time) []byte {
	return t.UTC().AppendFormat(dst, "Mon, 02 Jan 2006 15:04:05 GMT")
}

// ClearResponse empties resp (status 200, no headers, no body) as
// Response.Reset does, but keeps the settings the gateway's server gives
// every answer: no invented Content-Type, and no Date but the answer's own.
// Use it to replace an answer with another that carries its own Date (a
// stored one).
func ClearResponse(resp *fasthttp.Response) {
	resp.ResetBody()
	r := headReaders.Get().(*headReader)
	r.src.Reset(strEmptyHead)
	r.br.Reset(&r.src)
	if err := resp.Header.Read(&r.br); err != nil {
		// Unreachable (the head above is valid); never leave a half answer.
		resp.Reset()
		resp.Header.SetNoDefaultContentType(true)
	}
	resp.SkipBody = false
	headReaders.Put(r)
}

// headReader parses the empty head of ClearResponse: Read resets a header
// without touching those settings, Reset does not.
type headReader struct {
	src bytes.Reader
	br  bufio.Reader
}

var headReaders = sync.Pool{New: func() any {
	r := new(headReader)
	r.br = *bufio.NewReaderSize(&r.src, 64)
	return r
}}
