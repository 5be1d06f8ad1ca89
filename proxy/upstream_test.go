package proxy_test

import (
	"bufio"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"math/big"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/sluice-gw/sluice/internal/testkit"
	"github.com/valyala/fasthttp"
)

// rawServer accepts connections and hands each to fn, until the test ends.
func rawServer(t *testing.T, fn func(net.Conn)) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	t.Cleanup(func() { ln.Close(); wg.Wait() })
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			wg.Add(1)
			go func() {
				defer wg.Done()
				defer c.Close()
				_ = c.SetDeadline(time.Now().Add(5 * time.Second))
				fn(c)
			}()
		}
	}()
	return ln.Addr().String()
}

// readHead consumes one request head from c.
func readHead(c net.Conn) {
	buf := make([]byte, 0, 4096)
	tmp := make([]byte, 1024)
	for !strings.Contains(string(buf), "\r\n\r\n") {
		n, err := c.Read(tmp)
		if err != nil {
			return
		}
		buf = append(buf, tmp[:n]...)
	}
}

func TestUpstreamFailures(t *testing.T) {
	t.Parallel()
	garbage := rawServer(t, func(c net.Conn) {
		readHead(c)
		_, _ = c.Write([]byte("THIS IS NOT HTTP\r\n\r\n"))
	})
	halfBody := rawServer(t, func(c net.Conn) {
		readHead(c)
		_, _ = c.Write([]byte("HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\nonly part"))
	})
	reset := rawServer(t, func(c net.Conn) {
		readHead(c)
		if tc, ok := c.(*net.TCPConn); ok {
			_ = tc.SetLinger(0) // RST instead of FIN
		}
	})
	slow := testkit.NewUpstream(t, func(ctx *fasthttp.RequestCtx) {
		time.Sleep(300 * time.Millisecond)
	})
	bigBody := testkit.NewUpstream(t, func(ctx *fasthttp.RequestCtx) {
		ctx.SetBody(make([]byte, 64<<10))
	})
	gw := testkit.StartGateway(t, fmt.Sprintf(`
log: {access_log: false}
upstreams:
  closed:  {url: "http://%s"}
  garbage: {url: "http://%s"}
  half:    {url: "http://%s", timeout: 2s}
  reset:   {url: "http://%s"}
  slow:    {url: "%s", timeout: 100ms}
  big:     {url: "%s", max_response_body: 1KiB}
routes:
  closed:  {path: "/closed/{p:*}", upstream: closed}
  garbage: {path: "/garbage/{p:*}", upstream: garbage}
  half:    {path: "/half/{p:*}", upstream: half}
  reset:   {path: "/reset/{p:*}", upstream: reset}
  slow:    {path: "/slow/{p:*}", upstream: slow}
  big:     {path: "/big/{p:*}", upstream: big}
`, testkit.ClosedAddr(t), garbage, halfBody, reset, slow.URL, bigBody.URL))

	cases := []struct {
		name, method, path string
		status             int
		code               string
		retryable          bool
	}{
		{"connection refused", "POST", "/closed/x", 502, "upstream_unreachable", true}, // nothing was sent: safe even for POST
		{"garbage answer", "GET", "/garbage/x", 502, "upstream_error", true},
		{"half-written body", "GET", "/half/x", 502, "upstream_unreachable", true},
		{"connection reset", "GET", "/reset/x", 502, "upstream_unreachable", true},
		{"reset on POST", "POST", "/reset/x", 502, "upstream_unreachable", false}, // the provider may have acted
		{"timeout", "GET", "/slow/x", 504, "upstream_timeout", true},
		{"timeout on POST", "POST", "/slow/x", 504, "upstream_timeout", false},
		{"response too large", "GET", "/big/x", 502, "upstream_error", false},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			t.Parallel()
			resp := testkit.Do(t, c.method, gw.URL+c.path, "")
			p := testkit.WantProblem(t, resp, c.status, c.code)
			if p["retryable"] != c.retryable {
				t.Errorf("retryable = %v, want %v", p["retryable"], c.retryable)
			}
			if p["upstream"] == nil || p["upstream"] == "" {
				t.Errorf("upstream member missing: %s", resp.Body)
			}
			if d, _ := p["detail"].(string); d == "" || strings.Contains(d, "127.0.0.1") {
				t.Errorf("detail %q: want a description that does not leak addresses", d)
			}
		})
	}
	t.Run("gateway keeps serving", func(t *testing.T) {
		if resp := testkit.Do(t, "GET", gw.URL+"/nowhere", ""); resp.Status != 404 {
			t.Errorf("status %d", resp.Status)
		}
	})
}

func TestRoundRobinTargets(t *testing.T) {
	t.Parallel()
	var ups []*testkit.Upstream
	var urls []string
	for i := range 3 {
		name := fmt.Sprint(i)
		up := testkit.NewUpstream(t, func(ctx *fasthttp.RequestCtx) { ctx.SetBodyString(name) })
		ups = append(ups, up)
		urls = append(urls, `"`+up.URL+`"`)
	}
	gw := testkit.StartGateway(t, fmt.Sprintf(`
log: {access_log: false}
upstreams: {pool: {targets: [%s]}}
routes: {r: {path: "/{p:*}", upstream: pool}}
`, strings.Join(urls, ", ")))
	for range 30 {
		if resp := testkit.Do(t, "GET", gw.URL+"/x", ""); resp.Status != 200 {
			t.Fatalf("status %d", resp.Status)
		}
	}
	for i, up := range ups {
		if n := up.Count(); n != 10 {
			t.Errorf("target %d got %d of 30 requests, want 10", i, n)
		}
	}
}

func TestKeepAlivePoolToUpstream(t *testing.T) {
	t.Parallel()
	gw, up := gatewayFor(t, nil, `
log: {access_log: false}
upstreams: {up: {url: "%[1]s"}}
routes: {r: {path: "/{p:*}", upstream: up}}
`)
	for range 20 {
		if resp := testkit.Do(t, "GET", gw.URL+"/x", ""); resp.Status != 200 {
			t.Fatalf("status %d", resp.Status)
		}
	}
	remotes := map[string]bool{}
	for _, r := range up.Requests() {
		remotes[r.Remote] = true
	}
	if len(remotes) != 1 {
		t.Errorf("20 sequential requests used %d upstream connections, want 1 (keep-alive)", len(remotes))
	}
}

// A provider that closes idle keep-alive connections must not cost a GET a 502.
func TestStaleUpstreamConnectionRetriedForGET(t *testing.T) {
	t.Parallel()
	var mu sync.Mutex
	served := 0
	addr := rawServer(t, func(c net.Conn) {
		readHead(c)
		mu.Lock()
		served++
		mu.Unlock()
		// answer as keep-alive, then close without saying so
		_, _ = c.Write([]byte("HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"))
		time.Sleep(20 * time.Millisecond)
	})
	gw := testkit.StartGateway(t, fmt.Sprintf(`
log: {access_log: false}
upstreams: {up: {url: "http://%s"}}
routes: {r: {path: "/{p:*}", upstream: up}}
`, addr))
	for i := range 3 {
		time.Sleep(60 * time.Millisecond) // let the provider drop the pooled connection
		if resp := testkit.Do(t, "GET", gw.URL+"/x", ""); resp.Status != 200 {
			t.Fatalf("request %d: status %d %s", i, resp.Status, resp.Body)
		}
	}
}

func TestTLSUpstream(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	caFile, cert := selfSigned(t, dir, "api.provider.test")
	ln, err := tls.Listen("tcp", "127.0.0.1:0", &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12})
	if err != nil {
		t.Fatal(err)
	}
	srv := &fasthttp.Server{Handler: func(ctx *fasthttp.RequestCtx) {
		ctx.SetBodyString("secure " + string(ctx.Host()))
	}, Logger: quietLogger{}}
	go func() { _ = srv.Serve(ln) }()
	t.Cleanup(func() { _ = srv.Shutdown() })
	port := ln.Addr().(*net.TCPAddr).Port

	gw := testkit.StartGateway(t, fmt.Sprintf(`
log: {access_log: false}
upstreams:
  trusted:   {url: "https://127.0.0.1:%[1]d", tls: {ca_file: %[2]q, server_name: api.provider.test}}
  untrusted: {url: "https://127.0.0.1:%[1]d", tls: {server_name: api.provider.test}}
  wrongname: {url: "https://127.0.0.1:%[1]d", tls: {ca_file: %[2]q}}
  insecure:  {url: "https://127.0.0.1:%[1]d", tls: {insecure_skip_verify: true}}
routes:
  trusted:   {path: "/t/{p:*}", upstream: trusted}
  untrusted: {path: "/u/{p:*}", upstream: untrusted}
  wrongname: {path: "/w/{p:*}", upstream: wrongname}
  insecure:  {path: "/i/{p:*}", upstream: insecure}
`, port, caFile))
	if resp := testkit.Do(t, "GET", gw.URL+"/t/x", ""); resp.Status != 200 || string(resp.Body) != fmt.Sprintf("secure 127.0.0.1:%d", port) {
		t.Errorf("trusted CA: %d %s", resp.Status, resp.Body)
	}
	p := testkit.WantProblem(t, testkit.Do(t, "GET", gw.URL+"/u/x", ""), 502, "upstream_unreachable")
	if !strings.Contains(p["detail"].(string), "trusted CA") || p["retryable"] != false {
		t.Errorf("untrusted certificate: detail %q retryable %v", p["detail"], p["retryable"])
	}
	p = testkit.WantProblem(t, testkit.Do(t, "GET", gw.URL+"/w/x", ""), 502, "upstream_unreachable")
	if !strings.Contains(p["detail"].(string), "host name") {
		t.Errorf("wrong host name: detail %q", p["detail"])
	}
	if resp := testkit.Do(t, "GET", gw.URL+"/i/x", ""); resp.Status != 200 {
		t.Errorf("insecure_skip_verify: %d %s", resp.Status, resp.Body)
	}
}

// selfSigned writes a CA-signed-by-itself certificate for host and returns the
// PEM file path and the key pair.
func selfSigned(t *testing.T, dir, host string) (string, tls.Certificate) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(1),
		Subject:               pkix.Name{CommonName: host},
		DNSNames:              []string{host},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(time.Hour),
		IsCA:                  true,
		BasicConstraintsValid: true,
		KeyUsage:              x509.KeyUsageDigitalSignature | x509.KeyUsageCertSign,
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	certPEM := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})
	keyDER, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	keyPEM := pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: keyDER})
	path := filepath.Join(dir, "ca.pem")
	if err := os.WriteFile(path, certPEM, 0o600); err != nil {
		t.Fatal(err)
	}
	pair, err := tls.X509KeyPair(certPEM, keyPEM)
	if err != nil {
		t.Fatal(err)
	}
	return path, pair
}

type quietLogger struct{}

func (quietLogger) Printf(string, ...any) {}

// An HTTP/1.0 provider (closing after each answer) is answered to the caller
// as HTTP/1.1, on a connection that stays open.
func TestHTTP10Upstream(t *testing.T) {
	t.Parallel()
	addr := rawServer(t, func(c net.Conn) {
		readHead(c)
		_, _ = c.Write([]byte("HTTP/1.0 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 2\r\n\r\nok"))
	})
	gw := testkit.StartGateway(t, fmt.Sprintf(`
log: {access_log: false}
upstreams: {up: {url: "http://%s"}}
routes: {r: {path: "/{p:*}", upstream: up}}
`, addr))
	conn := dial(t, gw.URL, 3*time.Second)
	br := bufio.NewReader(conn)
	for i := range 2 {
		if _, err := conn.Write([]byte("GET /x HTTP/1.1\r\nHost: gw\r\n\r\n")); err != nil {
			t.Fatal(err)
		}
		resp, err := http.ReadResponse(br, nil)
		if err != nil {
			t.Fatalf("request %d: %v", i, err)
		}
		resp.Body.Close()
		if resp.Proto != "HTTP/1.1" || resp.StatusCode != 200 || resp.Close {
			t.Fatalf("request %d: %s %d close=%v", i, resp.Proto, resp.StatusCode, resp.Close)
		}
	}
}

// A chunked answer with a trailer reaches the caller whole, with a length.
func TestChunkedUpstream(t *testing.T) {
	t.Parallel()
	addr := rawServer(t, func(c net.Conn) {
		readHead(c)
		_, _ = c.Write([]byte("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nTrailer: X-Sum\r\n\r\n" +
			"5\r\nhello\r\n6\r\n world\r\n0\r\nX-Sum: 42\r\n\r\n"))
	})
	gw := testkit.StartGateway(t, fmt.Sprintf(`
log: {access_log: false}
upstreams: {up: {url: "http://%s"}}
routes: {r: {path: "/{p:*}", upstream: up}}
`, addr))
	out := rawRequest(t, gw.URL, "GET /x HTTP/1.1\r\nHost: gw\r\nConnection: close\r\n\r\n")
	if !strings.HasPrefix(out, "200\n") || !strings.HasSuffix(out, "hello world") {
		t.Fatalf("answer:\n%s", out)
	}
	if strings.Contains(out, "Trailer:") || strings.Contains(out, "Transfer-Encoding") {
		t.Errorf("framing headers of the upstream leaked:\n%s", out)
	}
}

// With every connection of a target busy (max_conns), a request is refused at
// once with 503 overloaded rather than queued without bound.
func TestMaxConnsOverloaded(t *testing.T) {
	t.Parallel()
	release := make(chan struct{})
	entered := make(chan struct{}, 4)
	gw, _ := gatewayFor(t, func(ctx *fasthttp.RequestCtx) {
		entered <- struct{}{}
		<-release
	}, `
log: {access_log: false}
upstreams: {up: {url: "%[1]s", max_conns: 1}}
routes: {r: {path: "/{p:*}", upstream: up}}
`)
	done := make(chan int, 1)
	go func() {
		resp, err := testkit.TryDo("GET", gw.URL+"/held", "")
		if err != nil {
			done <- -1
			return
		}
		done <- resp.Status
	}()
	<-entered
	p := testkit.WantProblem(t, testkit.Do(t, "GET", gw.URL+"/second", ""), 503, "overloaded")
	if !strings.Contains(p["detail"].(string), "max_conns") || p["retryable"] != true {
		t.Errorf("detail %q retryable %v", p["detail"], p["retryable"])
	}
	close(release)
	if s := <-done; s != 200 {
		t.Errorf("the request holding the connection got %d", s)
	}
	// The refusal is the gateway's own: no attempt outcome (a conn_error
	// would blame the provider), one overloaded error on the route.
	m := gw.Metrics(t)
	if v, _ := m.Value("sluice_upstream_duration_seconds", "upstream", "up", "outcome", "conn_error"); v != 0 {
		t.Errorf("max_conns refusal observed as %v conn_error attempt(s)", v)
	}
	if v, _ := m.Value("sluice_upstream_duration_seconds", "upstream", "up", "outcome", "ok"); v != 1 {
		t.Errorf("ok attempts = %v, want 1", v)
	}
	if v, _ := m.Value("sluice_errors_total", "route", "r", "code", "overloaded"); v != 1 {
		t.Errorf("sluice_errors_total{code=overloaded} = %v, want 1", v)
	}
}
