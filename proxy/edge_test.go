package proxy_test

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"runtime"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/sluice-gw/sluice/internal/testkit"
	"github.com/sluice-gw/sluice/plugins"
	"github.com/sluice-gw/sluice/proxy"
	"github.com/sluice-gw/sluice/proxy/config"
)

const edgeConfig = `
log: {access_log: true}
upstreams: {up: {url: "%[1]s", forwarded_headers: true}}
routes: {r: {path: "/{p:*}", upstream: up}}
`

// loggedRequestIDs returns the request_id of every access line for path.
func loggedRequestIDs(t *testing.T, logs, path string) []string {
	t.Helper()
	var ids []string
	for _, line := range strings.Split(logs, "\n") {
		var m map[string]any
		if json.Unmarshal([]byte(line), &m) == nil && m["msg"] == "access" && m["path"] == path {
			ids = append(ids, m["request_id"].(string))
		}
	}
	return ids
}

// A caller's Connection header cannot name away the headers the gateway sets
// itself: they are set after hop-by-hop stripping.
func TestConnectionCannotRemoveGatewayHeaders(t *testing.T) {
	t.Parallel()
	gw, up := gatewayFor(t, nil, edgeConfig)
	raw := "GET /named HTTP/1.1\r\nHost: gw.example\r\n" +
		"Connection: keep-alive, X-Forwarded-For, X-Request-Id, X-Forwarded-Proto, X-Forwarded-Host, Host\r\n" +
		"X-Forwarded-For: 10.9.8.7\r\nX-Request-Id: caller-id-1\r\n\r\n"
	out := rawRequest(t, gw.URL, raw)
	if !strings.HasPrefix(out, "200\n") {
		t.Fatalf("answer:\n%s", out)
	}
	got := up.Last(t)
	for name, want := range map[string]string{
		"X-Forwarded-For":   "10.9.8.7, 127.0.0.1",
		"X-Forwarded-Proto": "http",
		"X-Forwarded-Host":  "gw.example",
		"X-Request-Id":      "caller-id-1",
	} {
		if v := got.Header.Values(name); !slices.Equal(v, []string{want}) {
			t.Errorf("upstream got %s %q, want exactly %q", name, v, want)
		}
	}
	if got.Host != strings.TrimPrefix(up.URL, "http://") {
		t.Errorf("upstream Host %q", got.Host)
	}
}

// Exactly one X-Request-Id is forwarded, the one logged and returned; the
// gateway's other own headers are not duplicated by a caller either.
func TestDuplicateRequestIDForwardedOnce(t *testing.T) {
	t.Parallel()
	gw, up := gatewayFor(t, nil, edgeConfig)
	for _, c := range []struct {
		path, ids string
		want      string // "" = a generated id
	}{
		{"/dup", "X-Request-Id: first-id\r\nx-request-id: second-id\r\n", "first-id"},
		{"/dup-invalid-first", "X-Request-Id: " + strings.Repeat("x", 300) + "\r\nX-Request-Id: second-id\r\n", ""},
	} {
		raw := "GET " + c.path + " HTTP/1.1\r\nHost: gw\r\n" + c.ids +
			"X-Forwarded-Proto: https\r\nX-Forwarded-Proto: https\r\nX-Forwarded-Host: evil\r\nX-Forwarded-Host: evil2\r\n" +
			"X-Forwarded-For: 1.1.1.1\r\nX-Forwarded-For: 2.2.2.2\r\n\r\n"
		out := rawRequest(t, gw.URL, raw)
		if !strings.HasPrefix(out, "200\n") {
			t.Fatalf("%s: answer:\n%s", c.path, out)
		}
		var rec []string
		for _, r := range up.Requests() {
			if r.URI == c.path {
				rec = r.Header.Values("X-Request-Id")
				for name, want := range map[string]string{"X-Forwarded-Proto": "http", "X-Forwarded-Host": "gw", "X-Forwarded-For": "1.1.1.1, 127.0.0.1"} {
					if v := r.Header.Values(name); !slices.Equal(v, []string{want}) {
						t.Errorf("%s: upstream got %s %q, want exactly %q", c.path, name, v, want)
					}
				}
			}
		}
		var answered string
		for _, line := range strings.Split(out, "\n") {
			if v, ok := strings.CutPrefix(line, "X-Request-Id: "); ok {
				answered = v
			}
		}
		logged := loggedRequestIDs(t, gw.Logs.String(), c.path)
		if len(rec) != 1 || len(logged) != 1 || rec[0] != logged[0] || rec[0] != answered {
			t.Fatalf("%s: forwarded %q, logged %q, answered %q: want one id, the same", c.path, rec, logged, answered)
		}
		if c.want != "" && rec[0] != c.want {
			t.Errorf("%s: forwarded %q, want %q", c.path, rec[0], c.want)
		} else if c.want == "" && !hexID.MatchString(rec[0]) {
			t.Errorf("%s: forwarded %q, want a generated id", c.path, rec[0])
		}
	}
}

// Method-override headers are refused, never forwarded: the provider must
// run the method the gateway routed, cached, retried and rate-limited.
func TestMethodOverrideHeadersRefused(t *testing.T) {
	t.Parallel()
	gw, up := gatewayFor(t, nil, edgeConfig)
	for _, h := range []string{"X-HTTP-Method-Override: DELETE", "x-http-method: DELETE", "X-METHOD-OVERRIDE: PUT", "X-Http-Method-Override:"} {
		raw := "GET /override HTTP/1.1\r\nHost: gw\r\n" + h + "\r\nConnection: close\r\n\r\n"
		if out := rawRequest(t, gw.URL, raw); !strings.HasPrefix(out, "400\n") || !strings.Contains(out, `"code":"bad_request"`) {
			t.Errorf("%s: want 400 bad_request, got:\n%s", h, out)
		}
	}
	if n := up.Count(); n != 0 {
		t.Fatalf("the upstream got %d requests carrying a method override", n)
	}
}

// readProblem reads one response from br and checks it is a problem+json
// with status and code.
func readProblem(t *testing.T, br *bufio.Reader, status int, code string) *http.Response {
	t.Helper()
	resp, err := http.ReadResponse(br, nil)
	if err != nil {
		t.Fatalf("reading the answer: %v", err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	var p map[string]any
	if resp.StatusCode != status || resp.Header.Get("Content-Type") != "application/problem+json" ||
		json.Unmarshal(body, &p) != nil || p["code"] != code || p["request_id"] != resp.Header.Get("X-Request-Id") {
		t.Fatalf("got %d %q %s, want %d problem+json %s", resp.StatusCode, resp.Header.Get("Content-Type"), body, status, code)
	}
	return resp
}

// Expect: 100-continue with a Content-Length over server.max_request_body is
// refused with 413 before any 100 Continue; other expectations get 417; a
// body within the limit is still invited and forwarded.
func TestExpectContinue(t *testing.T) {
	t.Parallel()
	gw, up := gatewayFor(t, nil, `
log: {access_log: false}
server: {max_request_body: 1KiB}
upstreams: {up: {url: "%[1]s"}}
routes: {r: {path: "/{p:*}", upstream: up}}
`)
	t.Run("oversized", func(t *testing.T) {
		conn := dial(t, gw.URL, 5*time.Second)
		fmt.Fprintf(conn, "POST /big HTTP/1.1\r\nHost: gw\r\nExpect: 100-continue\r\nContent-Length: 20000000\r\n\r\n")
		// The first answer must be the 413: http.ReadResponse returns a
		// 100 Continue as a response of its own.
		readProblem(t, bufio.NewReader(conn), 413, "request_too_large")
	})
	t.Run("other expectation", func(t *testing.T) {
		conn := dial(t, gw.URL, 5*time.Second)
		fmt.Fprintf(conn, "POST /odd HTTP/1.1\r\nHost: gw\r\nExpect: something-else\r\nContent-Length: 2\r\n\r\nhi")
		readProblem(t, bufio.NewReader(conn), 417, "bad_request")
	})
	t.Run("within the limit", func(t *testing.T) {
		conn := dial(t, gw.URL, 5*time.Second)
		br := bufio.NewReader(conn)
		fmt.Fprintf(conn, "POST /small HTTP/1.1\r\nHost: gw\r\nExpect: 100-Continue\r\nContent-Length: 5\r\n\r\n")
		resp, err := http.ReadResponse(br, nil)
		if err != nil || resp.StatusCode != 100 {
			t.Fatalf("want 100 Continue first: %v %v", resp, err)
		}
		fmt.Fprintf(conn, "hello")
		if resp, err = http.ReadResponse(br, nil); err != nil || resp.StatusCode != 200 {
			t.Fatalf("want 200: %v %v", resp, err)
		}
		resp.Body.Close()
		for _, r := range up.Requests() {
			if r.URI == "/small" && string(r.Body) != "hello" {
				t.Errorf("upstream body %q", r.Body)
			}
		}
	})
	if n := len(up.Requests()); n != 1 {
		t.Errorf("upstream got %d requests, want only /small", n)
	}
}

// Connections over server.max_connections get a problem+json 503 overloaded
// with Retry-After, not fasthttp's plain text; a freed slot serves again.
func TestMaxConnectionsProblem(t *testing.T) {
	t.Parallel()
	gw, _ := gatewayFor(t, nil, `
log: {access_log: false}
server: {max_connections: 2}
upstreams: {up: {url: "%[1]s"}}
routes: {r: {path: "/{p:*}", upstream: up}}
`)
	get := func(conn net.Conn, br *bufio.Reader) int {
		fmt.Fprintf(conn, "GET /x HTTP/1.1\r\nHost: gw\r\n\r\n")
		resp, err := http.ReadResponse(br, nil)
		if err != nil {
			t.Fatalf("reading: %v", err)
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		return resp.StatusCode
	}
	var held []net.Conn
	for range 2 { // two kept-alive connections take the two slots
		c := dial(t, gw.URL, 5*time.Second)
		if s := get(c, bufio.NewReader(c)); s != 200 {
			t.Fatalf("connection within the limit: %d", s)
		}
		held = append(held, c)
	}
	third := dial(t, gw.URL, 5*time.Second)
	fmt.Fprintf(third, "GET /x HTTP/1.1\r\nHost: gw\r\n\r\n")
	resp := readProblem(t, bufio.NewReader(third), 503, "overloaded")
	if resp.Header.Get("Retry-After") != "1" || !resp.Close {
		t.Errorf("Retry-After %q, close %v", resp.Header.Get("Retry-After"), resp.Close)
	}
	held[0].Close()
	testkit.Eventually(t, 5*time.Second, func() bool {
		c, err := net.Dial("tcp", strings.TrimPrefix(gw.URL, "http://"))
		if err != nil {
			return false
		}
		defer c.Close()
		_ = c.SetDeadline(time.Now().Add(2 * time.Second))
		fmt.Fprintf(c, "GET /x HTTP/1.1\r\nHost: gw\r\nConnection: close\r\n\r\n")
		r, err := http.ReadResponse(bufio.NewReader(c), nil)
		return err == nil && r.StatusCode == 200
	}, "a connection slot freed by a close serves again")
}

// A gateway shut down before Serve: Serve returns at once and the gateway
// stays not ready (it used to block forever and report ready).
func TestServeAfterShutdownReturns(t *testing.T) {
	t.Parallel()
	up := testkit.NewUpstream(t, nil)
	dir := t.TempDir()
	testkit.WriteFile(t, dir+"/sluice.yaml", fmt.Sprintf("log: {access_log: false}\nupstreams: {up: {url: %q}}\nroutes: {r: {path: \"/\", upstream: up}}\n", up.URL))
	cfg, err := config.Load(dir + "/sluice.yaml")
	if err != nil {
		t.Fatal(err)
	}
	g, err := proxy.New(cfg, proxy.Options{Plugins: plugins.Registry(), LogOutput: io.Discard})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := g.Shutdown(ctx); err != nil {
		t.Fatalf("Shutdown: %v", err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	served := make(chan error, 1)
	go func() { served <- g.Serve(ln) }()
	select {
	case err := <-served:
		if err != nil {
			t.Errorf("Serve after Shutdown: %v", err)
		}
	case <-time.After(10 * time.Second): // a hang, not a duration being measured
		_ = ln.Close()
		<-served
		t.Fatal("Serve after Shutdown did not return")
	}
	rec := httptest.NewRecorder()
	g.AdminHandler().ServeHTTP(rec, httptest.NewRequest("GET", "/readyz", nil))
	if rec.Code != 503 || !strings.Contains(rec.Body.String(), "draining") {
		t.Errorf("/readyz after Shutdown and Serve: %d %s", rec.Code, rec.Body)
	}
	if c, err := net.Dial("tcp", ln.Addr().String()); err == nil {
		c.Close()
		t.Errorf("the listener still accepts after Serve returned")
	}
}

// A flood of connections over max_connections cannot pile up goroutines:
// at most a bounded number are being answered 503 at once, the rest are
// closed unanswered. (Not parallel: it counts the process's goroutines.)
func TestConnectionFloodIsBounded(t *testing.T) {
	gw, _ := gatewayFor(t, nil, `
log: {access_log: false}
server: {max_connections: 1}
upstreams: {up: {url: "%[1]s"}}
routes: {r: {path: "/{p:*}", upstream: up}}
`)
	hold := dial(t, gw.URL, 10*time.Second)
	fmt.Fprintf(hold, "GET /x HTTP/1.1\r\nHost: gw\r\n\r\n")
	if _, err := http.ReadResponse(bufio.NewReader(hold), nil); err != nil {
		t.Fatal(err)
	}
	base := runtime.NumGoroutine()
	const flood = 600
	for range flood { // never read from, never closed until the test ends
		dial(t, gw.URL, 10*time.Second)
	}
	time.Sleep(200 * time.Millisecond) // let the gateway accept them all
	// At most 256 refusals are answered at once; the rest is slack.
	if grown := runtime.NumGoroutine() - base; grown > 400 {
		t.Fatalf("%d connections over the limit grew the process by %d goroutines", flood, grown)
	}
}
