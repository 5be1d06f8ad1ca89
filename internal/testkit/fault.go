package testkit

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/textproto"
	"os"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

// Fault is how a FaultUpstream answers one request.
type Fault struct {
	// Status is the answer's status; 0 means 200.
	Status int
	// Header holds extra header lines, e.g. "Retry-After: 1".
	Header []string
	// Delay waits before answering (a slow provider).
	Delay time.Duration
	// Reset closes the connection with a TCP RST instead of answering.
	Reset bool
	// Garbage answers with bytes that are not HTTP, then closes.
	Garbage bool
	// HalfBody announces a body and closes after writing part of it.
	HalfBody bool
	// Trailing is written on the connection TrailingAfter after the answer,
	// as if the provider got its framing wrong (more bytes than its
	// Content-Length): a gateway that pools the connection reads them as the
	// next answer.
	Trailing      string
	TrailingAfter time.Duration
	// Chunked answers 200 with a chunked body of this many bytes of 'x' in
	// 32 KiB chunks; ChunkedForever never ends it (until the gateway closes).
	Chunked        int
	ChunkedForever bool
	// ChunkEvery waits this long before each chunk (a slow body).
	ChunkEvery time.Duration
	// Hang never answers: it waits until the gateway closes the connection,
	// then counts it in Abandoned.
	Hang bool
}

// Common faults.
var (
	OK        = Fault{}
	Err500    = Fault{Status: 500}
	Err503    = Fault{Status: 503}
	ResetConn = Fault{Reset: true}
	Garbage   = Fault{Garbage: true}
	HalfBody  = Fault{HalfBody: true}
)

// Delayed answers 200 after d.
func Delayed(d time.Duration) Fault { return Fault{Delay: d} }

// FaultUpstream is an HTTP/1.1 upstream written on a raw net.Listener, so
// that it can misbehave the way real providers do: 5xx in sequences, slow
// answers, connection resets, garbage, half-written bodies. It answers
// requests with the faults set by Script, then with the default fault,
// and records every request it reads.
type FaultUpstream struct {
	URL  string // http://127.0.0.1:PORT
	Addr string

	mu        sync.Mutex
	idleClose time.Duration
	script    []Fault
	def       Fault
	reqs      []FaultRequest
	conns     int // connections accepted
	abandoned int // Hang requests whose connection the gateway closed
}

// FaultRequest is one request as a FaultUpstream read it.
type FaultRequest struct {
	Method, URI string
	Header      http.Header
	Body        string
}

// NewFaultUpstream starts a fault-injecting upstream that answers 200 "ok"
// until told otherwise. It stops at the end of the test.
func NewFaultUpstream(t testing.TB) *FaultUpstream {
	t.Helper()
	f := &FaultUpstream{}
	f.Addr = serveRaw(t, func(c net.Conn, _ int) { f.serveConn(c) })
	f.URL = "http://" + f.Addr
	return f
}

// serveRaw accepts TCP connections on a loopback port and serves each with
// serve (given the connection's number, from 0) in its own goroutine. At the
// end of the test it stops accepting, closes every open connection and
// waits for the goroutines. It returns host:port.
func serveRaw(t testing.TB, serve func(c net.Conn, id int)) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	var mu sync.Mutex
	open := map[net.Conn]bool{}
	t.Cleanup(func() {
		_ = ln.Close()
		mu.Lock()
		for c := range open {
			_ = c.Close()
		}
		mu.Unlock()
		wg.Wait()
	})
	wg.Go(func() {
		for id := 0; ; id++ {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			mu.Lock()
			open[c] = true
			mu.Unlock()
			wg.Go(func() {
				serve(c, id)
				mu.Lock()
				delete(open, c)
				mu.Unlock()
				_ = c.Close()
			})
		}
	})
	return ln.Addr().String()
}

// Script sets the faults for the next requests, in order, replacing what is
// left of the previous script (Script() clears it).
func (f *FaultUpstream) Script(faults ...Fault) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.script = append([]Fault(nil), faults...)
}

// SetDefault sets the answer once the script is used up.
func (f *FaultUpstream) SetDefault(d Fault) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.def = d
}

// Hits is the number of requests read.
func (f *FaultUpstream) Hits() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return len(f.reqs)
}

// SetIdleClose makes the upstream close a connection that stays idle for d
// between requests, as Node servers (5 s) and load balancers do, without a
// Connection: close on the last answer. It applies to new connections.
func (f *FaultUpstream) SetIdleClose(d time.Duration) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.idleClose = d
}

// Conns is the number of connections accepted.
func (f *FaultUpstream) Conns() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.conns
}

// Abandoned is the number of Hang requests whose connection the gateway closed.
func (f *FaultUpstream) Abandoned() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.abandoned
}

// Requests returns a copy of the requests read.
func (f *FaultUpstream) Requests() []FaultRequest {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]FaultRequest(nil), f.reqs...)
}

func (f *FaultUpstream) next(r FaultRequest) Fault {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.reqs = append(f.reqs, r)
	if len(f.script) > 0 {
		x := f.script[0]
		f.script = f.script[1:]
		return x
	}
	return f.def
}

func (f *FaultUpstream) serveConn(c net.Conn) {
	defer c.Close()
	f.mu.Lock()
	f.conns++
	idle := 30 * time.Second
	if f.idleClose > 0 {
		idle = f.idleClose
	}
	f.mu.Unlock()
	br := bufio.NewReader(c)
	tp := textproto.NewReader(br)
	for {
		_ = c.SetReadDeadline(time.Now().Add(idle))
		line, err := tp.ReadLine()
		if err != nil {
			return
		}
		parts := strings.SplitN(line, " ", 3)
		if len(parts) != 3 {
			return
		}
		mh, err := tp.ReadMIMEHeader()
		if err != nil {
			return
		}
		r := FaultRequest{Method: parts[0], URI: parts[1], Header: http.Header(mh)}
		if n, _ := strconv.Atoi(mh.Get("Content-Length")); n > 0 {
			body := make([]byte, n)
			if _, err := io.ReadFull(br, body); err != nil {
				return
			}
			r.Body = string(body)
		}
		x := f.next(r)
		if x.Delay > 0 {
			time.Sleep(x.Delay)
		}
		switch {
		case x.Reset:
			if tc, ok := c.(*net.TCPConn); ok {
				_ = tc.SetLinger(0)
			}
			return
		case x.Garbage:
			_, _ = io.WriteString(c, "SURPRISE, THIS IS NOT HTTP\r\n\r\n")
			return
		case x.HalfBody:
			_, _ = io.WriteString(c, "HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\nonly part of it")
			return
		case x.Hang:
			_ = c.SetReadDeadline(time.Now().Add(time.Minute))
			if _, err := br.ReadByte(); err != nil && !errors.Is(err, os.ErrDeadlineExceeded) {
				f.mu.Lock()
				f.abandoned++
				f.mu.Unlock()
			}
			return
		case x.Chunked > 0 || x.ChunkedForever:
			writeChunked(c, x.Chunked, x.ChunkedForever, x.ChunkEvery)
			return
		}
		status := x.Status
		if status == 0 {
			status = 200
		}
		body := "ok"
		if status >= 400 {
			body = fmt.Sprintf(`{"error":"status %d"}`, status)
		}
		head := fmt.Sprintf("HTTP/1.1 %d %s\r\nContent-Type: application/json\r\nContent-Length: %d\r\n", status, http.StatusText(status), len(body))
		for _, h := range x.Header {
			head += h + "\r\n"
		}
		if _, err := io.WriteString(c, head+"\r\n"+body); err != nil {
			return
		}
		if x.Trailing != "" {
			time.Sleep(x.TrailingAfter)
			if _, err := io.WriteString(c, x.Trailing); err != nil {
				return
			}
		}
	}
}

// writeChunked writes a 200 with a chunked body of n bytes (or an endless
// one) and returns when done or when the gateway stops reading (bounded by a
// write deadline). Frames are built once: the upstream allocates nothing per
// chunk, so that tests can count the gateway's allocations.
func writeChunked(c net.Conn, n int, forever bool, every time.Duration) {
	const size = 32 << 10
	frame := []byte(fmt.Sprintf("%x\r\n%s\r\n", size, strings.Repeat("x", size)))
	if _, err := io.WriteString(c, "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nTransfer-Encoding: chunked\r\n\r\n"); err != nil {
		return
	}
	for sent := 0; forever || sent < n; sent += size {
		part := frame
		if !forever && n-sent < size {
			part = []byte(fmt.Sprintf("%x\r\n%s\r\n", n-sent, strings.Repeat("x", n-sent)))
		}
		time.Sleep(every)
		_ = c.SetWriteDeadline(time.Now().Add(10 * time.Second))
		if _, err := c.Write(part); err != nil {
			return
		}
	}
	_, _ = io.WriteString(c, "0\r\n\r\n")
}
