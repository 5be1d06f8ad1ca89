package proxy

import (
	"bytes"
	"io"
	"net"
	"strings"
	"sync/atomic"
	"time"

	"github.com/sluice-gw/sluice/proxy/httpx"
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
	hdrDate = httpx.NewName("Date")
	strDate = hdrDate.Bytes()
	// datePlaceholder is added under a name of the same length as Date and
	// renamed in place (SetDate): fasthttp offers no setter for Date.
	hdrDatePlaceholder = httpx.NewName("Xdat")
	datePlaceholder    = hdrDatePlaceholder.Bytes()
	strEmptyHead       = []byte("HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n")
)

// SetDate sets the Date of h to v (an HTTP-date, without CR or LF; others
// are ignored), replacing any Date h had. It does not allocate once h has
// room.
func SetDate(h *fasthttp.ResponseHeader, v []byte) {
	if bytes.IndexByte(v, '\r') >= 0 || bytes.IndexByte(v, '\n') >= 0 {
		return
	}
	hdrDate.Del(h)
	AddDate(h, v)
}

// AddDate is SetDate for a header known to carry no Date yet (one
// ClearResponse just emptied): v is a valid HTTP-date from a parsed header
// or from the gateway's clock, so it is neither checked nor is a Date
// looked for to replace.
func AddDate(h *fasthttp.ResponseHeader, v []byte) {
	hdrDatePlaceholder.Add(h, v)
	var last []byte
	for k := range h.All() {
		if bytes.Equal(k, datePlaceholder) {
			last = k // ours is the last one added
		}
	}
	copy(last, strDate)
}

// hasDate reports whether h carries a Date.
func hasDate(h *fasthttp.ResponseHeader) bool { return len(hdrDate.Peek(h)) > 0 }

// ensureDate gives an answer without Date the gateway's current time.
// mono is a nanotime reading taken just before (finish's own), so that a
// Date costs no clock read of its own.
func ensureDate(h *fasthttp.ResponseHeader, mono int64) {
	if hasDate(h) {
		return
	}
	AddDate(h, currentDate(mono))
}

// currentDate returns the current time as an IMF-fixdate, given a nanotime
// reading taken just before: the date is formatted at most once a second
// (as fasthttp's server does for its own Date line), and the wall clock is
// read only when mono has passed the end of the second last formatted. (An
// answer without Date would otherwise pay for a wall-clock read per
// request; a wall clock that is stepped shows in Dates within a second.)
// The slice is shared: read it, never write it.
func currentDate(mono int64) []byte {
	if d := dateNow.Load(); d != nil && mono >= d.from && mono < d.until {
		return d.b
	}
	from := nanotime() // before the wall clock: until errs early, never late
	now := time.Now()
	d := &stampedDate{from: from, until: from + int64(time.Second) - int64(now.Nanosecond()),
		b: AppendHTTPDate(make([]byte, 0, 29), now)}
	dateNow.Store(d)
	return d.b
}

// stampedDate is a formatted Date and the nanotime span in which it is the
// current second.
type stampedDate struct {
	from, until int64
	b           []byte
}

var dateNow atomic.Pointer[stampedDate]

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
	blankHeader.CopyTo(&resp.Header) // resets resp.Header, then takes the blank's settings
	resp.SkipBody = false
}

// blankHeader is an empty response header as the gateway's server hands one
// to a request: no default Date, Content-Type or Server. fasthttp has no
// setter for "no default Date" (Response.Reset turns it back on), so the
// header is captured once from a server with those settings serving one
// request over an in-memory connection; ClearResponse copies it, which costs
// far less than parsing an empty head into the header would.
var blankHeader = captureBlankHeader()

func captureBlankHeader() *fasthttp.ResponseHeader {
	h := new(fasthttp.ResponseHeader)
	srv := &fasthttp.Server{
		NoDefaultServerHeader: true,
		NoDefaultContentType:  true,
		NoDefaultDate:         true,
		Handler:               func(ctx *fasthttp.RequestCtx) { ctx.Response.Header.CopyTo(h) },
	}
	_ = srv.ServeConn(&oneRequestConn{in: strings.NewReader("GET / HTTP/1.1\r\nHost: blank\r\n\r\n")})
	h.SetNoDefaultContentType(true)
	return h
}

// oneRequestConn is a net.Conn that reads one request and discards what is
// written to it: enough for captureBlankHeader's single request.
type oneRequestConn struct{ in io.Reader }

func (c *oneRequestConn) Read(b []byte) (int, error)       { return c.in.Read(b) }
func (c *oneRequestConn) Write(b []byte) (int, error)      { return len(b), nil }
func (c *oneRequestConn) Close() error                     { return nil }
func (c *oneRequestConn) LocalAddr() net.Addr              { return &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1)} }
func (c *oneRequestConn) RemoteAddr() net.Addr             { return &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1)} }
func (c *oneRequestConn) SetDeadline(time.Time) error      { return nil }
func (c *oneRequestConn) SetReadDeadline(time.Time) error  { return nil }
func (c *oneRequestConn) SetWriteDeadline(time.Time) error { return nil }
