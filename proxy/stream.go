package proxy

import (
	"bufio"
	"context"
	"errors"
	"io"
	"log/slog"
	"net"
	"sync"
	"sync/atomic"
	"time"

	"github.com/valyala/fasthttp"
)

// Response streaming. Whether an answer is read whole or streamed to the
// caller as it arrives is decided once per answer, right after its head
// (upstream.stream_threshold):
//
//   - a Content-Length at or below the threshold: read whole, as always
//     (the common path pays one comparison);
//   - a Content-Length above it, or an event media type (text/event-stream
//     and the other eventTypes): streamed from the first byte;
//   - chunked or close-delimited: read up to the threshold; an answer that
//     ends by then is an ordinary one (plugins see its whole body), a longer
//     one is streamed, the bytes read so far first.
//
// A streamed answer is an upstreamStream set as the response's body stream:
// fasthttp's server reads it after the handler has returned, writes each
// read as one chunk and flushes it, so that memory per stream is the
// upstream connection's read buffer and fasthttp's copy buffer, whatever the
// body's size, and a caller that reads slowly slows the reads from the
// provider (TCP backpressure) instead of growing a buffer. The stream owns
// the upstream connection until it ends, and its own state (the exchange is
// released when the handler returns); it goes back to a pool when it ends.

// eventTypes are the media types streamed from the first byte whatever
// their framing: answers made of events that the caller must see as they
// come.
var eventTypes = [][]byte{[]byte("text/event-stream"), []byte("application/x-ndjson"), []byte("application/stream+json"), []byte("application/jsonl")}

// isEventType reports whether the Content-Type value ct names one of
// eventTypes (parameters and case aside). The media type ends at the first
// ';' or ASCII white space, as mime.ParseMediaType trims it.
func isEventType(ct []byte) bool {
	for i, c := range ct {
		if c == ';' || c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\v' || c == '\f' {
			ct = ct[:i]
			break
		}
	}
	for _, t := range eventTypes {
		if len(ct) == len(t) && asciiEqualFold(ct, t) {
			return true
		}
	}
	return false
}

// IsEventType reports whether a Content-Type value names a media type the
// gateway streams as events from the first byte (text/event-stream,
// application/x-ndjson, application/stream+json, application/jsonl).
func IsEventType(ct []byte) bool { return isEventType(ct) }

// How an answer's body is read.
const (
	bodyWhole  = iota // read whole into the response
	bodyStream        // streamed from its first byte
	bodyMaybe         // read up to the threshold, streamed if longer
)

// bodyMode decides how the body of the answer whose head is in resp is read.
// An HTTP/1.0 caller cannot read chunked framing, the only one fasthttp's
// server streams a body of unknown length with: it gets such answers read
// whole (up to max_response_body), as before streaming.
func (u *Upstream) bodyMode(ex *Exchange, resp *fasthttp.Response, http10 bool) int {
	cl := resp.Header.ContentLength()
	if cl >= 0 && (cl <= u.streamThreshold || cl > u.maxBody) || cl < 0 && http10 || u.streamThreshold <= 0 || ex.internal {
		return bodyWhole // (one above max_response_body is refused from its head)
	}
	if isEventType(resp.Header.ContentType()) || cl >= 0 {
		return bodyStream
	}
	return bodyMaybe
}

// Stream outcomes (label values of sluice_upstream_streams_total).
const (
	streamComplete    = 0 // the provider ended the body and the caller got it all
	streamUpstreamCut = 1 // the provider closed or broke the body before its end
	streamIdle        = 2 // stream_idle_timeout: the provider sent nothing for that long
	streamMaxDuration = 3 // max_stream_duration
	streamCallerGone  = 4 // the caller closed its connection (or could not keep up within write_timeout)
	streamDrained     = 5 // the gateway shut down
	streamDiscarded   = 6 // the gateway dropped the rest (a retry, or a plugin that replaced the answer)
	streamTooLarge    = 7 // the body went over max_response_body and was cut there
	numStreamOutcomes = 8
)

var streamOutcomeNames = [numStreamOutcomes]string{"complete", "upstream_cut", "idle_timeout", "max_duration", "caller_gone", "drained", "discarded", "too_large"}

var (
	errStreamIdle        = errors.New("the upstream sent nothing for upstream.stream_idle_timeout")
	errStreamMaxDuration = errors.New("the stream reached upstream.max_stream_duration")
	errStreamCallerGone  = errors.New("the caller closed the connection")
	errStreamTooLarge    = errors.New("the streamed body went over upstream.max_response_body")
)

// upstreamStream is one streamed answer body: the upstream connection it
// is read from, with fasthttp's decoder of its framing.
type upstreamStream struct {
	u       *Upstream
	rm      *routeMetrics
	conn    net.Conn
	br      *bufio.Reader
	release func(reuse bool) // gives the connection back (reuse) or closes it
	dec     fasthttp.Response
	body    io.Reader
	caller  net.Conn

	prefix []byte // bytes read before the answer was found long (bodyMaybe)
	off    int
	held   int64 // prefix's reservation in the body budget

	idle     time.Duration
	end      time.Time // max_stream_duration's end; zero for none
	last     time.Time // when the last byte came
	writeFor time.Duration
	sent     int64
	limit    int64 // max_response_body
	direct   bool  // framed by length or by close: WriteTo passes bytes from br's buffer
	left     int64 // bytes of a length-framed body not yet passed on; -1 when framed by close
	done     bool  // the body ended (EOF)
	failed   error
	closed   atomic.Bool // drained
	reqID    string
	tee      StreamTee        // Exchange.TeeStream's observer; nil for none
	lr       io.LimitedReader // one slice of a spliced download
}

var streamPool = sync.Pool{New: func() any { return new(upstreamStream) }}

// acquireStream prepares the stream state of an answer whose body is read
// from br, framed as its head (resp) says.
func acquireStream(br *bufio.Reader, resp *fasthttp.Response) *upstreamStream {
	s := streamPool.Get().(*upstreamStream)
	s.br = br
	s.dec.Header.SetContentLength(resp.Header.ContentLength())
	s.dec.StreamBody = true
	_ = s.dec.ReadBody(br, 0)
	s.body = s.dec.BodyStream()
	return s
}

// putStream gives back the state of a stream that was not started (its
// answer turned out short).
func putStream(s *upstreamStream) {
	_ = s.dec.CloseBodyStream()
	s.dec.Reset()
	s.br, s.body = nil, nil
	streamPool.Put(s)
}

// start makes resp's body the stream s (prefix, if any, first). The stream
// takes the connection over: release is called when it ends.
func (s *upstreamStream) start(u *Upstream, ctx *fasthttp.RequestCtx, ex *Exchange, conn net.Conn, release func(bool), prefix []byte) {
	s.u, s.conn, s.release = u, conn, release
	if ex.Route != nil {
		s.rm = ex.Route.metrics
	}
	s.prefix = prefix
	if len(prefix) > 0 { // its reservation in the body budget goes with it
		s.held, ex.respHeld = ex.respHeld, 0
	}
	s.caller = ctx.Conn()
	s.idle = u.streamIdle
	now := time.Now()
	s.last = now
	if u.streamMax > 0 {
		s.end = now.Add(u.streamMax)
	}
	s.writeFor = u.writeTimeout
	s.limit = int64(u.maxBody)
	s.reqID = string(ex.requestID)
	s.tee = ex.tee
	resp := &ctx.Response
	cl := resp.Header.ContentLength()
	s.direct, s.left = cl >= 0 || cl == -2, int64(cl)
	if cl < 0 {
		s.left = -1
	}
	if cl < 0 || len(prefix) > 0 {
		cl = -1 // chunked to the caller
	}
	resp.ImmediateHeaderFlush = true // the caller sees the head at once
	resp.SetBodyStream(s, cl)
	u.streams.open(s)
	if s.rm != nil {
		s.rm.firstByte.Observe(ex.Elapsed().Seconds())
	}
}

// readPrefix reads the body of a chunked or close-delimited answer up to
// the stream threshold into a buffer reserved in the body budget. long
// reports that the body goes on beyond it: buf is then the stream's
// prefix.
func (u *Upstream) readPrefix(ex *Exchange, s *upstreamStream, resp *fasthttp.Response) (buf []byte, long bool, err error) {
	b := u.bodies
	buf = resp.SwapBody(nil)[:0]
	held := int64(cap(buf))
	if !b.reserve(ex, held) {
		return nil, false, b.exhausted()
	}
	at := u.streamThreshold
	for {
		if len(buf) == cap(buf) {
			n := max(2*cap(buf), 16<<10)
			if n >= at {
				n = at + 1 // one byte over is enough to know
			}
			if !b.reserve(ex, int64(n)-held) {
				return nil, false, b.exhausted()
			}
			held = int64(n)
			nb := make([]byte, len(buf), n)
			copy(nb, buf)
			buf = nb
		}
		var n int
		n, err = s.body.Read(buf[len(buf):cap(buf)])
		buf = buf[:len(buf)+n]
		switch {
		case len(buf) > u.maxBody:
			return nil, false, errBodyTooLarge // (the threshold is max_response_body)
		case len(buf) > at:
			return buf, true, nil
		case err == io.EOF:
			return buf, false, nil
		case err != nil:
			return nil, false, err
		}
	}
}

// Read gives the server the next bytes of the answer as they arrive.
func (s *upstreamStream) Read(p []byte) (int, error) {
	if s.closed.Load() {
		s.failed = errStreamDrainedErr
		return 0, s.failed
	}
	if s.off < len(s.prefix) {
		n := copy(p, s.prefix[s.off:])
		s.off += n
		s.count(n)
		if s.tee != nil {
			s.tee.StreamBody(p[:n])
		}
		return n, nil
	}
	if s.done {
		return 0, io.EOF
	}
	if s.failed != nil {
		return 0, s.failed
	}
	if s.br.Buffered() == 0 {
		if err := s.wait(); err != nil {
			s.failed = err
			return 0, err
		}
	}
	until := time.Now().Add(s.idle)
	if !s.end.IsZero() && s.end.Before(until) {
		until = s.end
	}
	_ = s.conn.SetReadDeadline(until)
	if s.limit > 0 && int64(len(p)) > s.limit-s.sent+1 {
		p = p[:s.limit-s.sent+1] // one byte over is enough to know
	}
	n, err := s.body.Read(p)
	if n > 0 {
		s.last = time.Now()
		if s.limit > 0 && s.sent+int64(n) > s.limit {
			s.failed = errStreamTooLarge
			return 0, s.failed
		}
		s.count(n)
		if s.tee != nil {
			s.tee.StreamBody(p[:n])
		}
	}
	switch {
	case err == io.EOF:
		s.done = true
		s.count(0) // the last chunk still has to be written
	case err != nil:
		if isTimeout(err) {
			if !s.end.IsZero() && !time.Now().Before(s.end) {
				err = errStreamMaxDuration
			} else {
				err = errStreamIdle
			}
		} else {
			err = &streamCut{err}
		}
		s.failed = err
	}
	return n, err
}

// SupportsBodyWriteTo tells fasthttp to use WriteTo for a body framed by
// its length or by the provider's close (a download): no decoder stands
// between the provider connection's buffer and the caller.
func (s *upstreamStream) SupportsBodyWriteTo() bool { return s.direct }

// WriteTo passes the body on straight from the provider connection's read
// buffer: each read from the provider (up to 32 KiB) is one write to the
// caller, with no copy in between. Same waits, limits and outcomes as Read.
func (s *upstreamStream) WriteTo(w io.Writer) (int64, error) {
	var total int64
	for s.off < len(s.prefix) {
		n, err := w.Write(s.prefix[s.off:])
		if s.tee != nil {
			s.tee.StreamBody(s.prefix[s.off : s.off+n])
		}
		s.off += n
		total += int64(n)
		if err != nil {
			return total, err
		}
	}
	for {
		if s.br.Buffered() == 0 && s.tee == nil {
			if up, rf := s.spliceable(w); up != nil {
				n, err := s.splice(rf, up)
				return total + n, err
			}
		}
		b, err := s.next()
		if len(b) > 0 {
			n, werr := w.Write(b)
			if s.tee != nil {
				s.tee.StreamBody(b[:n])
			}
			_, _ = s.br.Discard(n)
			total += int64(n)
			if werr != nil {
				return total, werr
			}
		}
		if err == io.EOF {
			return total, nil
		}
		if err != nil {
			return total, err
		}
	}
}

// spliceSlice bounds one splice call: the deadlines are renewed, and the
// drain flag looked at, between two. (Small enough that a caller reading at
// spliceSlice per server.write_timeout is not cut off.)
const spliceSlice = 256 << 10

// spliceable returns the socket under the provider connection when the
// rest of a download can move from it to the caller's inside the kernel:
// splice(2), which Go's TCPConn.ReadFrom uses for a TCP source. It needs a
// plain TCP provider connection with nothing left in its read buffer, no
// cache tee wanting the bytes, and fasthttp's body writer w taking a
// reader (it passes one on to the caller's connection when its own buffer
// is empty; edgeConn.ReadFrom then reaches the caller's socket). Over TLS on
// either side the bytes are copied as before.
func (s *upstreamStream) spliceable(w io.Writer) (*net.TCPConn, io.ReaderFrom) {
	rf, ok := w.(io.ReaderFrom)
	if !ok {
		return nil, nil
	}
	return tcpUnder(s.conn), rf
}

// tcpUnder is the TCP socket under the gateway's own connection wrapper,
// or nil (TLS, or another kind of connection).
func tcpUnder(c net.Conn) *net.TCPConn {
	if uc, ok := c.(*upstreamConn); ok {
		c = uc.Conn
	}
	tc, _ := c.(*net.TCPConn)
	return tc
}

// splice passes the rest of a download from the provider's socket to the
// caller's inside the kernel: the bytes never come up into the process,
// which cut the gateway's CPU time for a 1 GiB download by about 40 %
// (bench/stream). Hand-written rather than io.Copy because every slice
// renews the idle and write deadlines and tells an idle provider, a gone
// caller and a drain apart, as next and wait do for the buffered path.
func (s *upstreamStream) splice(w io.ReaderFrom, up *net.TCPConn) (int64, error) {
	var total int64
	for {
		want := int64(spliceSlice)
		if s.left >= 0 {
			if s.left == 0 {
				s.done = true
				return total, nil
			}
			want = min(want, s.left)
		}
		if s.limit > 0 {
			want = min(want, s.limit-s.sent+1) // one byte over is enough to know
		}
		now := time.Now()
		until := now.Add(callerCheckEvery)
		if idleAt := s.last.Add(s.idle); idleAt.Before(until) {
			until = idleAt
		}
		if !s.end.IsZero() && s.end.Before(until) {
			until = s.end
		}
		// Through the wrapper, which owns the socket's deadlines (deadline.go).
		_ = s.conn.SetReadDeadline(until)
		s.count(0) // the write deadline
		s.lr = io.LimitedReader{R: up, N: want}
		n, err := w.ReadFrom(&s.lr)
		total += n
		if n > 0 {
			s.last = time.Now()
			s.sent += n
			if s.left > 0 {
				s.left -= n
			}
			if s.limit > 0 && s.sent > s.limit {
				s.failed = errStreamTooLarge
				return total, s.failed
			}
		}
		switch {
		case s.closed.Load():
			s.failed = errStreamDrainedErr
		case err != nil && isTimeout(err):
			now = time.Now()
			switch {
			case !s.end.IsZero() && !now.Before(s.end):
				s.failed = errStreamMaxDuration
			case !now.Before(s.last.Add(s.idle)):
				s.failed = errStreamIdle
			case connGone(s.caller):
				s.failed = errStreamCallerGone
			case !now.Before(until): // the provider's slice ran out: go on
				continue
			default: // the caller did not take the bytes within write_timeout
				s.failed = errStreamCallerGone
			}
		case err != nil:
			if connGone(s.caller) {
				s.failed = errStreamCallerGone
			} else {
				s.failed = &streamCut{err}
			}
		case n < want && s.left < 0: // framed by close: the provider's EOF is the end
			s.done = true
			return total, nil
		case n < want: // EOF before the Content-Length
			s.failed = &streamCut{io.ErrUnexpectedEOF}
		default:
			continue
		}
		return total, s.failed
	}
}

// next returns the body bytes waiting in the provider connection's buffer
// (filling it once if empty), counted as passed on; the caller of next
// discards them from the buffer once written.
func (s *upstreamStream) next() ([]byte, error) {
	switch {
	case s.closed.Load():
		s.failed = errStreamDrainedErr
	case s.failed != nil:
	case s.done || s.left == 0:
		s.done = true
		return nil, io.EOF
	}
	if s.failed != nil {
		return nil, s.failed
	}
	if s.br.Buffered() == 0 {
		if err := s.wait(); err != nil {
			s.failed = err
			return nil, err
		}
		until := time.Now().Add(s.idle)
		if !s.end.IsZero() && s.end.Before(until) {
			until = s.end
		}
		_ = s.conn.SetReadDeadline(until)
		if _, err := s.br.Peek(1); err != nil {
			switch {
			case err == io.EOF && s.left < 0: // framed by close: the end
				s.done = true
				s.count(0) // the last chunk still has to be written
				return nil, io.EOF
			case isTimeout(err) && !s.end.IsZero() && !time.Now().Before(s.end):
				err = errStreamMaxDuration
			case isTimeout(err):
				err = errStreamIdle
			case err == io.EOF:
				err = &streamCut{io.ErrUnexpectedEOF}
			default:
				err = &streamCut{err}
			}
			s.failed = err
			return nil, err
		}
	}
	n := int64(s.br.Buffered())
	if s.left >= 0 && n > s.left {
		n = s.left
	}
	if s.limit > 0 && s.sent+n > s.limit {
		s.failed = errStreamTooLarge
		return nil, s.failed
	}
	b, _ := s.br.Peek(int(n))
	if s.left > 0 {
		s.left -= n
	}
	s.last = time.Now()
	s.count(int(n))
	return b, nil
}

type streamCut struct{ err error }

func (e *streamCut) Error() string { return "the upstream broke off the stream: " + e.err.Error() }

var errStreamDrainedErr = errors.New("the gateway is shutting down")

// count records n bytes passed on, and gives the next write to the caller
// server.write_timeout (a stream outlives the server's one deadline for
// writing a whole response).
func (s *upstreamStream) count(n int) {
	s.sent += int64(n)
	if s.writeFor > 0 && s.caller != nil {
		_ = s.caller.SetWriteDeadline(time.Now().Add(s.writeFor))
	}
}

// wait waits for the provider's next byte, checking every callerCheckEvery
// that the caller is still there, within the idle timeout and the maximum
// duration. It reads nothing: a timeout leaves the decoder's state as it was.
func (s *upstreamStream) wait() error {
	for {
		now := time.Now()
		idleAt := s.last.Add(s.idle)
		until := now.Add(callerCheckEvery)
		if idleAt.Before(until) {
			until = idleAt
		}
		if !s.end.IsZero() && s.end.Before(until) {
			until = s.end
		}
		_ = s.conn.SetReadDeadline(until)
		_, err := s.br.Peek(1)
		if err == nil || !isTimeout(err) {
			return nil // bytes, or an end the decoder will report
		}
		now = time.Now()
		switch {
		case s.closed.Load():
			return errStreamDrainedErr
		case !s.end.IsZero() && !now.Before(s.end):
			return errStreamMaxDuration
		case !now.Before(idleAt):
			return errStreamIdle
		case s.caller != nil && connGone(s.caller):
			return errStreamCallerGone
		}
	}
}

// CloseWithError is called by the server when the body is done with: err
// is the error that stopped writing it (nil when it was written whole).
func (s *upstreamStream) CloseWithError(werr error) error {
	s.finish(werr)
	return nil
}

// upstreamStream has no Close method on purpose: fasthttp's
// closeBodyStreamReader calls Close and then CloseWithError on a body stream
// that has both. With a Close, the stream was finished twice: first without
// the write error, and again after it had gone back to the pool, where
// another request's stream may already have taken it.

// finish ends the stream once: the connection goes back to the pool only
// after a clean end with nothing after it; the outcome is counted (and a
// cut logged); the state goes back to the pool once nothing can reach it.
func (s *upstreamStream) finish(werr error) {
	if s.release == nil {
		return
	}
	outcome := streamComplete
	switch {
	case s.closed.Load() || s.failed == errStreamDrainedErr:
		outcome = streamDrained
	case s.failed == errStreamIdle:
		outcome = streamIdle
	case s.failed == errStreamMaxDuration:
		outcome = streamMaxDuration
	case s.failed == errStreamCallerGone:
		outcome = streamCallerGone
	case s.failed == errStreamTooLarge:
		outcome = streamTooLarge
	case s.failed != nil:
		outcome = streamUpstreamCut
	case werr != nil:
		outcome = streamCallerGone
	case !s.done:
		outcome = streamDiscarded
	}
	reuse := outcome == streamComplete && s.br.Buffered() == 0 && !s.dec.Header.ConnectionClose()
	rel := s.release
	s.release = nil
	_ = s.dec.CloseBodyStream()
	rel(reuse)
	if t := s.tee; t != nil { // before the outcome is counted: a tee's work is part of the end
		s.tee = nil
		t.StreamEnd(outcome == streamComplete)
	}
	u := s.u
	u.streams.close(s)
	u.metrics.streams[outcome].Inc()
	if s.rm != nil {
		s.rm.streamBytes.Add(float64(s.sent))
	}
	if s.held != 0 {
		u.bodies.used.Add(-s.held)
	}
	if outcome == streamUpstreamCut || outcome == streamIdle || outcome == streamTooLarge {
		u.log().LogAttrs(context.Background(), slog.LevelWarn, "stream ended early",
			slog.String("upstream", u.Name), slog.String("request_id", s.reqID),
			slog.String("outcome", streamOutcomeNames[outcome]), slog.Int64("bytes", s.sent),
			slog.String("error", s.failed.Error()))
	}
	s.dec.Reset()
	s.u, s.rm, s.conn, s.br, s.body, s.caller, s.prefix = nil, nil, nil, nil, nil, nil, nil
	s.direct, s.left, s.lr = false, 0, io.LimitedReader{}
	s.off, s.held, s.sent, s.limit, s.done, s.failed, s.reqID = 0, 0, 0, 0, false, nil, ""
	s.end = time.Time{}
	s.closed.Store(false)
	streamPool.Put(s)
}

// drain ends the stream from outside (the gateway shuts down): the
// upstream connection is closed, which ends a read in progress, and the
// next read fails, so that the server closes the caller's connection.
func (s *upstreamStream) drain() {
	s.closed.Store(true)
	if c := s.conn; c != nil {
		_ = c.SetReadDeadline(time.Now())
	}
}

// streamSet is the streams (and upgraded connections) open right now, so
// that a drain can end them.
type streamSet struct {
	mu  sync.Mutex
	all map[any]func()
}

func (ss *streamSet) open(s *upstreamStream) { ss.add(s, s.drain) }

func (ss *streamSet) close(s *upstreamStream) { ss.remove(s) }

func (ss *streamSet) add(k any, drain func()) {
	ss.mu.Lock()
	if ss.all == nil {
		ss.all = map[any]func(){}
	}
	ss.all[k] = drain
	ss.mu.Unlock()
}

func (ss *streamSet) remove(k any) {
	ss.mu.Lock()
	delete(ss.all, k)
	ss.mu.Unlock()
}

// drainAll ends every open stream and tunnel. (Under the lock: a stream
// leaves the set before its state is reused, so none is drained twice or
// after it ended. The drain functions do not block.)
func (ss *streamSet) drainAll() {
	ss.mu.Lock()
	defer ss.mu.Unlock()
	for _, f := range ss.all {
		f()
	}
}

// count is how many streams and tunnels are open.
func (ss *streamSet) count() int {
	ss.mu.Lock()
	defer ss.mu.Unlock()
	return len(ss.all)
}
