package proxy_test

import (
	"bufio"
	"crypto/tls"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/gorilla/websocket"
	"github.com/sluice-gw/sluice/internal/testkit"
)

// wsEcho is a real WebSocket echo server on 127.0.0.1 (gorilla/websocket).
// GET /plain answers 200 "plain" without upgrading; /refuse answers 400.
type wsEcho struct {
	URL   string
	hits  atomic.Int32
	mu    sync.Mutex
	heads []http.Header
}

func newWSEcho(t *testing.T) *wsEcho { t.Helper(); return startWSEcho(t, nil) }

// startWSEcho starts the echo server, over TLS when tc is not nil.
func startWSEcho(t *testing.T, tc *tls.Config) *wsEcho {
	t.Helper()
	e := &wsEcho{}
	up := websocket.Upgrader{}
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		e.hits.Add(1)
		e.mu.Lock()
		e.heads = append(e.heads, r.Header.Clone())
		e.mu.Unlock()
		switch r.URL.Path {
		case "/plain":
			_, _ = io.WriteString(w, "plain")
			return
		case "/refuse":
			http.Error(w, "no websocket here", http.StatusBadRequest)
			return
		}
		c, err := up.Upgrade(w, r, nil)
		if err != nil {
			return
		}
		defer c.Close()
		for {
			mt, msg, err := c.ReadMessage()
			if err != nil {
				return
			}
			if err := c.WriteMessage(mt, append([]byte("echo: "), msg...)); err != nil {
				return
			}
		}
	})}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	e.URL = "http://" + ln.Addr().String()
	if tc != nil {
		ln = tls.NewListener(ln, tc)
		e.URL = "https://" + ln.Addr().String()
	}
	go func() { _ = srv.Serve(ln) }()
	t.Cleanup(func() { _ = srv.Close() })
	return e
}

func (e *wsEcho) head(i int) http.Header {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.heads[i]
}

func wsURL(gw *testkit.Gateway, path string) string {
	return "ws" + strings.TrimPrefix(gw.URL, "http") + path
}

// tunnelMetric reads a counter or gauge straight from the gateway's registry
// (usable after the admin listener closed).
func tunnelMetric(t *testing.T, gw *testkit.Gateway, name string, labels ...string) float64 {
	t.Helper()
	mfs, err := gw.Gateway.Metrics().Registry.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
	metric:
		for _, m := range mf.GetMetric() {
			for i := 0; i+1 < len(labels); i += 2 {
				found := false
				for _, lp := range m.GetLabel() {
					if lp.GetName() == labels[i] && lp.GetValue() == labels[i+1] {
						found = true
					}
				}
				if !found {
					continue metric
				}
			}
			if m.Counter != nil {
				return m.Counter.GetValue()
			}
			return m.Gauge.GetValue()
		}
	}
	return 0
}

func tunnelGateway(t *testing.T, upURL, routeExtra string) *testkit.Gateway {
	return testkit.StartGateway(t, fmt.Sprintf(`
log: {access_log: false}
upstreams: {up: {url: %q}}
routes:
  ws:
    path: "/ws/{p:*}"
    upstream: up
    strip_prefix: /ws
    upgrade: true
    %s
    plugins:
      inject_auth: {type: bearer, token: "tunnel-secret"}
  plain: {path: "/{p:*}", upstream: up}
`, upURL, routeExtra))
}

// Messages go through the tunnel both ways, the handshake carries the
// injected credential, and the tunnel is counted when the caller closes.
func TestWebSocketTunnelEchoes(t *testing.T) {
	t.Parallel()
	up := newWSEcho(t)
	gw := tunnelGateway(t, up.URL, "")
	c, resp, err := websocket.DefaultDialer.Dial(wsURL(gw, "/ws/echo"), nil)
	if err != nil {
		t.Fatalf("dial: %v (resp %v)", err, resp)
	}
	if resp.StatusCode != 101 {
		t.Fatalf("status %d", resp.StatusCode)
	}
	if v := tunnelMetric(t, gw, "sluice_open_streams"); v != 1 {
		t.Fatalf("sluice_open_streams with a tunnel open = %v", v)
	}
	big := strings.Repeat("x", 100<<10) // larger than one tunnel buffer
	for i, msg := range []string{"hello", "안녕하세요", big} {
		if err := c.WriteMessage(websocket.TextMessage, []byte(msg)); err != nil {
			t.Fatal(err)
		}
		_ = c.SetReadDeadline(time.Now().Add(5 * time.Second))
		_, got, err := c.ReadMessage()
		if err != nil {
			t.Fatalf("message %d: %v", i, err)
		}
		if string(got) != "echo: "+msg {
			t.Fatalf("message %d: got %d bytes %.40q", i, len(got), got)
		}
	}
	if got := up.head(0).Get("Authorization"); got != "Bearer tunnel-secret" {
		t.Fatalf("handshake Authorization at the provider = %q", got)
	}
	if got := up.head(0).Get("Upgrade"); !strings.EqualFold(got, "websocket") {
		t.Fatalf("handshake Upgrade at the provider = %q", got)
	}
	_ = c.Close()
	testkit.Eventually(t, 5*time.Second, func() bool {
		return tunnelMetric(t, gw, "sluice_tunnels_total", "route", "ws", "outcome", "closed") == 1
	}, "the tunnel is counted closed")
	if v := tunnelMetric(t, gw, "sluice_open_streams"); v != 0 {
		t.Fatalf("sluice_open_streams after the close = %v", v)
	}
	if v, _ := gw.Metrics(t).Value("sluice_requests_total", "route", "ws", "status", "101"); v != 1 {
		t.Fatalf("sluice_requests_total{status=101} = %v", v)
	}
}

// A tunnel with no traffic for tunnel_idle_timeout is closed; traffic keeps
// it open.
func TestWebSocketTunnelIdleTimeout(t *testing.T) {
	t.Parallel()
	up := newWSEcho(t)
	gw := tunnelGateway(t, up.URL, "tunnel_idle_timeout: 400ms")
	c, _, err := websocket.DefaultDialer.Dial(wsURL(gw, "/ws/echo"), nil)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	// Busy for 1.2 s, a message every 200 ms: longer than the idle timeout.
	for i := range 6 {
		if err := c.WriteMessage(websocket.TextMessage, []byte(fmt.Sprint(i))); err != nil {
			t.Fatalf("message %d: %v", i, err)
		}
		_ = c.SetReadDeadline(time.Now().Add(2 * time.Second))
		if _, _, err := c.ReadMessage(); err != nil {
			t.Fatalf("message %d while busy: %v", i, err)
		}
		time.Sleep(200 * time.Millisecond)
	}
	start := time.Now()
	_ = c.SetReadDeadline(time.Now().Add(5 * time.Second))
	_, _, err = c.ReadMessage()
	if err == nil {
		t.Fatal("read on an idle tunnel succeeded")
	}
	if ne, ok := err.(net.Error); ok && ne.Timeout() {
		t.Fatalf("the gateway did not close the idle tunnel within 5s: %v", err)
	}
	if d := time.Since(start); d > 2*time.Second {
		t.Fatalf("idle tunnel closed after %v", d)
	}
	testkit.Eventually(t, 5*time.Second, func() bool {
		return tunnelMetric(t, gw, "sluice_tunnels_total", "route", "ws", "outcome", "idle_timeout") == 1
	}, "the tunnel is counted idle_timeout")
}

// Shutdown (drain) closes open tunnels at once.
func TestWebSocketTunnelClosedOnDrain(t *testing.T) {
	t.Parallel()
	up := newWSEcho(t)
	gw := tunnelGateway(t, up.URL, "")
	c, _, err := websocket.DefaultDialer.Dial(wsURL(gw, "/ws/echo"), nil)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if err := c.WriteMessage(websocket.TextMessage, []byte("x")); err != nil {
		t.Fatal(err)
	}
	if _, _, err := c.ReadMessage(); err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	if err := gw.Stop(); err != nil {
		t.Fatalf("shutdown: %v", err)
	}
	if d := time.Since(start); d > 3*time.Second {
		t.Fatalf("shutdown took %v with a tunnel open", d)
	}
	_ = c.SetReadDeadline(time.Now().Add(3 * time.Second))
	if _, _, err := c.ReadMessage(); err == nil {
		t.Fatal("the tunnel still works after the drain")
	} else if ne, ok := err.(net.Error); ok && ne.Timeout() {
		t.Fatalf("the tunnel was not closed by the drain: %v", err)
	}
	testkit.Eventually(t, 5*time.Second, func() bool {
		return tunnelMetric(t, gw, "sluice_tunnels_total", "route", "ws", "outcome", "drained") == 1
	}, "the tunnel is counted drained")
}

// An upgrade on a route without upgrade: true is refused with problem+json
// and never reaches the provider.
func TestUpgradeRefusedOnPlainRoute(t *testing.T) {
	t.Parallel()
	up := newWSEcho(t)
	gw := tunnelGateway(t, up.URL, "")
	_, resp, err := websocket.DefaultDialer.Dial(wsURL(gw, "/echo"), nil)
	if err == nil || resp == nil {
		t.Fatalf("dial succeeded or gave no answer: %v", err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != 403 || resp.Header.Get("Content-Type") != "application/problem+json" {
		t.Fatalf("answer %d %q %s", resp.StatusCode, resp.Header.Get("Content-Type"), body)
	}
	var p struct{ Code string }
	if err := json.Unmarshal(body, &p); err != nil || p.Code != "upgrade_not_allowed" {
		t.Fatalf("body %s (%v)", body, err)
	}
	// A longer Connection list, the upgrade token last.
	resp2, body2 := rawGet(t, gw, "/echo", "Connection: keep-alive, Upgrade", "Upgrade: websocket",
		"Sec-WebSocket-Version: 13", "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==")
	if resp2.StatusCode != 403 || !strings.Contains(body2, `"upgrade_not_allowed"`) {
		t.Fatalf("keep-alive, Upgrade: %s %s", resp2.Status, body2)
	}
	if n := up.hits.Load(); n != 0 {
		t.Fatalf("the provider got %d requests", n)
	}
}

// rawGet sends one hand-written request and reads the answer.
func rawGet(t *testing.T, gw *testkit.Gateway, path string, header ...string) (*http.Response, string) {
	t.Helper()
	c := gw.Dial(t, 5*time.Second)
	req := "GET " + path + " HTTP/1.1\r\nHost: example.test\r\n" + strings.Join(header, "\r\n") + "\r\n\r\n"
	if _, err := io.WriteString(c, req); err != nil {
		t.Fatal(err)
	}
	resp, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	return resp, string(body)
}

// An h2c upgrade attempt (RFC 9113 §3.1 is gone, RFC 7540 §3.2 clients still
// send it) is ignored: served over HTTP/1.1 on any route, Upgrade not forwarded.
func TestH2CUpgradeServedAsHTTP11(t *testing.T) {
	t.Parallel()
	up := newWSEcho(t)
	gw := tunnelGateway(t, up.URL, "")
	h2c := []string{"Connection: Upgrade, HTTP2-Settings", "Upgrade: h2c", "HTTP2-Settings: AAMAAABkAAQAoAAAAAIAAAAA"}
	for i, path := range []string{"/plain", "/ws/plain"} {
		resp, body := rawGet(t, gw, path, h2c...)
		if resp.StatusCode != 200 || body != "plain" || resp.ProtoMinor != 1 {
			t.Fatalf("%s: %s %q", path, resp.Status, body)
		}
		h := up.head(i)
		if h.Get("Upgrade") != "" || h.Get("HTTP2-Settings") != "" {
			t.Fatalf("%s: forwarded Upgrade %q HTTP2-Settings %q", path, h.Get("Upgrade"), h.Get("HTTP2-Settings"))
		}
	}
	// Upgrade without Connection: upgrade is not an upgrade request either.
	resp, body := rawGet(t, gw, "/plain", "Upgrade: websocket")
	if resp.StatusCode != 200 || body != "plain" {
		t.Fatalf("Upgrade without Connection: %s %q", resp.Status, body)
	}
}

// A provider that does not answer 101 gives an ordinary answer.
func TestUpgradeNon101IsOrdinary(t *testing.T) {
	t.Parallel()
	up := newWSEcho(t)
	gw := tunnelGateway(t, up.URL, "")
	_, resp, err := websocket.DefaultDialer.Dial(wsURL(gw, "/ws/refuse"), nil)
	if err == nil || resp == nil {
		t.Fatalf("dial: %v", err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != 400 || !strings.Contains(string(body), "no websocket here") {
		t.Fatalf("answer %d %s", resp.StatusCode, body)
	}
	if v := tunnelMetric(t, gw, "sluice_open_streams"); v != 0 {
		t.Fatalf("open after a refused handshake = %v", v)
	}
}

// An HTTP/1.0 request's Upgrade header is ignored (RFC 9110 §7.8: a server
// must): on any route it is an ordinary request, served without Upgrade or
// Connection forwarded, never refused or tunnelled.
func TestUpgradeFromHTTP10IsIgnored(t *testing.T) {
	t.Parallel()
	up := newWSEcho(t)
	gw := tunnelGateway(t, up.URL, "")
	for i, path := range []string{"/plain", "/ws/plain"} {
		c := gw.Dial(t, 5*time.Second)
		req := "GET " + path + " HTTP/1.0\r\nHost: example.test\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n" +
			"Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n"
		if _, err := io.WriteString(c, req); err != nil {
			t.Fatal(err)
		}
		resp, err := http.ReadResponse(bufio.NewReader(c), nil)
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		c.Close()
		if resp.StatusCode != 200 || string(body) != "plain" {
			t.Fatalf("%s over HTTP/1.0: %s %q", path, resp.Status, body)
		}
		if h := up.head(i); h.Get("Upgrade") != "" {
			t.Fatalf("%s: forwarded Upgrade %q", path, h.Get("Upgrade"))
		}
	}
}

// A tunnel to an https provider: the gateway's handshake to the provider
// runs over TLS (verified against the route's CA), then messages go both
// ways through the encrypted connection.
func TestWebSocketTunnelOverTLS(t *testing.T) {
	t.Parallel()
	caFile, cert := selfSigned(t, t.TempDir(), "ws.provider.test")
	up := startWSEcho(t, &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12})
	gw := testkit.StartGateway(t, fmt.Sprintf(`
log: {access_log: false}
upstreams: {up: {url: %q, tls: {ca_file: %q, server_name: ws.provider.test}}}
routes: {ws: {path: "/ws/{p:*}", upstream: up, strip_prefix: /ws, upgrade: true}}
`, up.URL, caFile))
	c, resp, err := websocket.DefaultDialer.Dial(wsURL(gw, "/ws/echo"), nil)
	if err != nil {
		t.Fatalf("dial: %v (resp %v)", err, resp)
	}
	defer c.Close()
	for i, msg := range []string{"hello", strings.Repeat("y", 100<<10)} {
		if err := c.WriteMessage(websocket.TextMessage, []byte(msg)); err != nil {
			t.Fatal(err)
		}
		_ = c.SetReadDeadline(time.Now().Add(5 * time.Second))
		_, got, err := c.ReadMessage()
		if err != nil || string(got) != "echo: "+msg {
			t.Fatalf("message %d: %d bytes %.40q, %v", i, len(got), got, err)
		}
	}
	if n := up.hits.Load(); n != 1 {
		t.Fatalf("the provider saw %d handshakes", n)
	}
}
