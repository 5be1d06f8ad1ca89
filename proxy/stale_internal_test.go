package proxy

import (
	"bufio"
	"context"
	"io"
	"net"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/sluice-gw/sluice/proxy/config"
)

// The window the check before reuse cannot close: the provider's close
// lands between the check and the write. When the write then fails with
// not one byte sent, a POST (no Idempotency-Key) goes out once more on a
// fresh connection; nothing reached the provider, so nothing is repeated.
// The failed write is made real by shutting the pooled socket's sending side
// after its first answer: the kernel then refuses the next write (EPIPE)
// while a peek still sees nothing wrong, as in the window.
func TestWriteFailingWithNothingSentIsResent(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	var mu sync.Mutex
	var methods []string
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				br := bufio.NewReader(c)
				for {
					req, err := http.ReadRequest(br)
					if err != nil {
						// Hold the connection open after the gateway's
						// half-close, as a provider whose own close has
						// not arrived yet.
						_ = c.SetReadDeadline(time.Now().Add(5 * time.Second))
						_, _ = io.Copy(io.Discard, c)
						return
					}
					_, _ = io.Copy(io.Discard, req.Body)
					mu.Lock()
					methods = append(methods, req.Method)
					mu.Unlock()
					_, _ = io.WriteString(c, "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
				}
			}()
		}
	}()

	cfg, err := config.LoadBytes([]byte("log: {access_log: false}\nupstreams: {up: {url: \"http://" + ln.Addr().String() + "\"}}\nroutes: {r: {path: \"/{p:*}\", upstream: up}}\n"))
	if err != nil {
		t.Fatal(err)
	}
	var cmu sync.Mutex
	var conns []*net.TCPConn
	g, err := New(cfg, Options{Plugins: NewRegistry(), LogOutput: io.Discard, Dial: func(addr string) (net.Conn, error) {
		c, err := net.Dial("tcp", addr)
		if err == nil {
			cmu.Lock()
			conns = append(conns, c.(*net.TCPConn))
			cmu.Unlock()
		}
		return wrapUpstreamConn(c, err)
	}})
	if err != nil {
		t.Fatal(err)
	}
	gln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go func() { _ = g.Serve(gln) }()
	defer func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = g.Shutdown(ctx)
	}()
	url := "http://" + gln.Addr().String()

	do := func(method string) (int, string) {
		req, _ := http.NewRequest(method, url+"/x", strings.NewReader(`{"a":1}`))
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b)
	}
	if s, b := do("GET"); s != 200 {
		t.Fatalf("GET: %d %s", s, b)
	}
	cmu.Lock()
	if len(conns) != 1 {
		t.Fatalf("%d upstream connections after one call, want 1", len(conns))
	}
	_ = conns[0].CloseWrite() // the pooled connection can send no more
	cmu.Unlock()
	if s, b := do("POST"); s != 200 {
		t.Fatalf("POST on a connection that can send nothing: %d %s", s, b)
	}
	mu.Lock()
	defer mu.Unlock()
	if len(methods) != 2 || methods[1] != "POST" {
		t.Fatalf("provider saw %v, want [GET POST]", methods)
	}
	cmu.Lock()
	defer cmu.Unlock()
	if len(conns) != 2 {
		t.Fatalf("%d upstream connections, want 2 (the POST resent on a fresh one)", len(conns))
	}
}
