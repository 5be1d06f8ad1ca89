package testkit

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"net"
	"strings"
	"sync"
	"testing"
	"time"
)

// RawRequest is one request exactly as a Recorder read it off the wire.
type RawRequest struct {
	Conn   int    // which accepted connection it came on (0, 1, ...)
	Raw    []byte // every byte of the request: line, head and framed body
	Method string
	Target string // request-target as sent
	Proto  string
	Header []HeaderLine // in wire order, names as sent
	Body   []byte       // the body after framing (chunks joined)
	// Chunked is true when the body came with Transfer-Encoding: chunked.
	Chunked bool
}

// HeaderLine is one header field line.
type HeaderLine struct{ Name, Value string }

// Values returns every value of the header named name (case-insensitive).
func (r *RawRequest) Values(name string) []string {
	var out []string
	for _, h := range r.Header {
		if strings.EqualFold(h.Name, name) {
			out = append(out, h.Value)
		}
	}
	return out
}

// Recorder is an HTTP/1.1 upstream on a raw net.Listener that reads requests
// strictly by the RFC 9112 framing rules (CRLF lines only, field names that
// are tokens, no obs-fold, no control bytes, one valid Content-Length or
// Transfer-Encoding: chunked but never both) and records the exact bytes of
// each. It answers every well-framed request with a fixed
// "200, Content-Length: 2, ok" and keeps the connection. Anything it cannot
// frame is recorded as a framing error (see Errors), answered 400 and the
// connection closed: a test asserts there are none, because a request the
// gateway forwards must never be one a strict reader frames differently.
type Recorder struct {
	URL  string // http://127.0.0.1:PORT
	Addr string

	mu    sync.Mutex
	reqs  []RawRequest
	errs  []string
	conns int
}

// recorderMaxHead bounds one request head (10,000 header lines fit).
const recorderMaxHead = 1 << 20

// recorderIdle closes a connection that sends nothing for this long, so
// that nothing a test forgets outlives it for long.
const recorderIdle = 10 * time.Second

// NewRecorder starts a Recorder; it stops, closing every connection, at the
// end of the test.
func NewRecorder(t testing.TB) *Recorder {
	t.Helper()
	r := &Recorder{}
	r.Addr = serveRaw(t, func(c net.Conn, id int) {
		r.mu.Lock()
		r.conns++
		r.mu.Unlock()
		r.serveConn(c, id)
	})
	r.URL = "http://" + r.Addr
	return r
}

// Requests returns a copy of every well-framed request received so far.
func (r *Recorder) Requests() []RawRequest {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]RawRequest(nil), r.reqs...)
}

// Count is the number of well-framed requests received.
func (r *Recorder) Count() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return len(r.reqs)
}

// Errors returns every framing error seen: each names what was wrong and
// quotes the bytes read.
func (r *Recorder) Errors() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]string(nil), r.errs...)
}

// Conns is the number of connections accepted.
func (r *Recorder) Conns() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.conns
}

// tee keeps a copy of the bytes a bufio.Reader hands out.
type tee struct {
	br  *bufio.Reader
	buf []byte
}

func (t *tee) ReadByte() (byte, error) {
	b, err := t.br.ReadByte()
	if err == nil {
		t.buf = append(t.buf, b)
	}
	return b, err
}

func (t *tee) full(n int) ([]byte, error) {
	start := len(t.buf)
	t.buf = append(t.buf, make([]byte, n)...)
	m, err := io.ReadFull(t.br, t.buf[start:])
	t.buf = t.buf[:start+m]
	return t.buf[start:], err
}

// line reads one line that must end in CRLF; a bare LF, a bare CR or a
// control byte other than HTAB is a framing error.
func (t *tee) line(max int) (string, error) {
	var b []byte
	for {
		c, err := t.ReadByte()
		if err != nil {
			return string(b), err
		}
		switch {
		case c == '\r':
			n, err := t.ReadByte()
			if err != nil {
				return string(b), err
			}
			if n != '\n' {
				return string(b), errors.New("bare CR")
			}
			return string(b), nil
		case c == '\n':
			return string(b), errors.New("bare LF")
		case c == '\t':
		case c < 0x20 || c == 0x7f:
			return string(b), fmt.Errorf("control byte %#x", c)
		}
		b = append(b, c)
		if len(b) > max {
			return string(b), errors.New("line too long")
		}
	}
}

func isToken(s string) bool {
	if s == "" {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || strings.IndexByte("!#$%&'*+-.^_`|~", c) >= 0 {
			continue
		}
		return false
	}
	return true
}

func (r *Recorder) serveConn(c net.Conn, id int) {
	br := bufio.NewReaderSize(c, 64<<10)
	for {
		_ = c.SetReadDeadline(time.Now().Add(recorderIdle))
		if _, err := br.Peek(1); err != nil {
			return // closed between requests: fine
		}
		t := &tee{br: br}
		req, err := readStrict(t)
		if err != nil {
			r.mu.Lock()
			r.errs = append(r.errs, fmt.Sprintf("conn %d: %v; bytes read: %q", id, err, t.buf))
			r.mu.Unlock()
			_, _ = io.WriteString(c, "HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
			return
		}
		req.Conn, req.Raw = id, t.buf
		r.mu.Lock()
		r.reqs = append(r.reqs, *req)
		r.mu.Unlock()
		if _, err := io.WriteString(c, "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"); err != nil {
			return
		}
	}
}

// readStrict reads one request by the strict rules of Recorder.
func readStrict(t *tee) (*RawRequest, error) {
	line, err := t.line(recorderMaxHead)
	if err != nil {
		return nil, fmt.Errorf("request line: %w", err)
	}
	parts := strings.Split(line, " ")
	if len(parts) != 3 || parts[0] == "" || parts[1] == "" || !isToken(parts[0]) {
		return nil, fmt.Errorf("request line %q is not METHOD SP TARGET SP VERSION", line)
	}
	if parts[2] != "HTTP/1.1" && parts[2] != "HTTP/1.0" {
		return nil, fmt.Errorf("request line: version %q", parts[2])
	}
	req := &RawRequest{Method: parts[0], Target: parts[1], Proto: parts[2]}
	size := len(line)
	for {
		l, err := t.line(recorderMaxHead)
		if err != nil {
			return nil, fmt.Errorf("header line: %w", err)
		}
		if size += len(l) + 2; size > recorderMaxHead {
			return nil, errors.New("head too large")
		}
		if l == "" {
			break
		}
		if l[0] == ' ' || l[0] == '\t' {
			return nil, fmt.Errorf("obs-fold line %q", l)
		}
		name, value, ok := strings.Cut(l, ":")
		if !ok || !isToken(name) {
			return nil, fmt.Errorf("header line %q has no token name before ':'", l)
		}
		req.Header = append(req.Header, HeaderLine{name, strings.Trim(value, " \t")})
	}
	cls, tes := req.Values("Content-Length"), req.Values("Transfer-Encoding")
	switch {
	case len(cls) > 0 && len(tes) > 0:
		return nil, errors.New("both Content-Length and Transfer-Encoding")
	case len(cls) > 1:
		return nil, fmt.Errorf("%d Content-Length lines", len(cls))
	case len(tes) > 1 || len(tes) == 1 && !strings.EqualFold(tes[0], "chunked"):
		return nil, fmt.Errorf("Transfer-Encoding %q (only a single 'chunked' is read)", tes)
	case len(tes) == 1:
		req.Chunked = true
		req.Body, err = readChunked(t)
		return req, err
	case len(cls) == 1:
		n, ok := parseDigits(cls[0])
		if !ok {
			return nil, fmt.Errorf("Content-Length %q", cls[0])
		}
		b, err := t.full(n)
		if err != nil {
			return nil, fmt.Errorf("body: %d of %d bytes: %w", len(b), n, err)
		}
		req.Body = bytes.Clone(b)
	}
	return req, nil
}

// parseDigits reads 1*DIGIT up to 1 GiB.
func parseDigits(s string) (int, bool) {
	if s == "" || len(s) > 10 {
		return 0, false
	}
	n := 0
	for i := 0; i < len(s); i++ {
		if s[i] < '0' || s[i] > '9' {
			return 0, false
		}
		n = n*10 + int(s[i]-'0')
	}
	return n, n <= 1<<30
}

func readChunked(t *tee) ([]byte, error) {
	var body []byte
	for {
		l, err := t.line(1024)
		if err != nil {
			return nil, fmt.Errorf("chunk size line: %w", err)
		}
		hex, _, _ := strings.Cut(l, ";")
		hex = strings.TrimRight(hex, " \t")
		if hex == "" || len(hex) > 8 {
			return nil, fmt.Errorf("chunk size %q", l)
		}
		n := 0
		for i := 0; i < len(hex); i++ {
			c := hex[i]
			switch {
			case c >= '0' && c <= '9':
				n = n<<4 | int(c-'0')
			case c >= 'a' && c <= 'f':
				n = n<<4 | int(c-'a'+10)
			case c >= 'A' && c <= 'F':
				n = n<<4 | int(c-'A'+10)
			default:
				return nil, fmt.Errorf("chunk size %q", l)
			}
		}
		if n == 0 {
			break
		}
		b, err := t.full(n)
		if err != nil {
			return nil, fmt.Errorf("chunk data: %w", err)
		}
		body = append(body, b...)
		if l, err := t.line(0); err != nil || l != "" {
			return nil, fmt.Errorf("chunk data not followed by CRLF (%q, %v)", l, err)
		}
	}
	for { // trailer section
		l, err := t.line(recorderMaxHead)
		if err != nil {
			return nil, fmt.Errorf("trailer: %w", err)
		}
		if l == "" {
			return body, nil
		}
		if name, _, ok := strings.Cut(l, ":"); !ok || !isToken(name) {
			return nil, fmt.Errorf("trailer line %q", l)
		}
	}
}
