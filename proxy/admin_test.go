package proxy_test

import (
	"context"
	"encoding/json"
	"fmt"
	"net"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/sluice-gw/sluice/internal/testkit"
	"github.com/sluice-gw/sluice/plugins"
	"github.com/sluice-gw/sluice/proxy"
	"github.com/sluice-gw/sluice/proxy/config"
)

// With admin.token set, every admin endpoint but /metrics, /healthz and
// /readyz needs it, with the same check as /admin/reload.
func TestAdminReadEndpointsNeedTheToken(t *testing.T) {
	const token = "adm-read-tok-0123456789"
	up := testkit.NewUpstream(t, nil)
	gw := testkit.StartGateway(t, fmt.Sprintf(`
log: {access_log: false}
admin: {token: %q, pprof: true}
upstreams: {up: {url: %q}}
routes: {r: {path: "/{p:*}", upstream: up}}
`, token, up.URL))
	for _, p := range []string{"/metrics", "/healthz", "/readyz"} {
		if r := testkit.Do(t, "GET", gw.AdminURL+p, ""); r.Status != 200 {
			t.Errorf("GET %s without token: %d, want 200", p, r.Status)
		}
	}
	for _, p := range []string{"/admin/config", "/admin/upstreams", "/admin/nope", "/debug/pprof/cmdline"} {
		for _, auth := range [][]string{nil, {"Authorization", "Bearer wrong-token-0123456789"}, {"Authorization", token}} {
			r := testkit.Do(t, "GET", gw.AdminURL+p, "", auth...)
			if r.Status != 401 || r.Header.Get("WWW-Authenticate") == "" {
				t.Errorf("GET %s with %q: %d, want 401 with WWW-Authenticate", p, auth, r.Status)
			}
			wantAdminProblem(t, r, 401, "unauthorized")
		}
		r := testkit.Do(t, "GET", gw.AdminURL+p, "", "Authorization", "Bearer "+token)
		if want := map[bool]int{true: 404, false: 200}[p == "/admin/nope"]; r.Status != want {
			t.Errorf("GET %s with the token: %d, want %d", p, r.Status, want)
		}
	}
}

// fakeLocalListener accepts real loopback connections but reports another
// local address, as a listener on a pod IP would.
type fakeLocalListener struct {
	net.Listener
	local net.Addr
}

func (l fakeLocalListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err != nil {
		return nil, err
	}
	return fakeLocalConn{c, l.local}, nil
}

type fakeLocalConn struct {
	net.Conn
	local net.Addr
}

func (c fakeLocalConn) LocalAddr() net.Addr { return c.local }

// Without admin.token, the reading admin endpoints are served on loopback
// only: on a listener bound to another interface they are refused (403), the
// probes and /metrics still answer.
func TestAdminWithoutTokenServesOnlyLoopback(t *testing.T) {
	up := testkit.NewUpstream(t, nil)
	dir := t.TempDir()
	file := dir + "/sluice.yaml"
	testkit.WriteFile(t, file, fmt.Sprintf(`
log: {access_log: false}
upstreams: {up: {url: %q}}
routes: {r: {path: "/{p:*}", upstream: up}}
`, up.URL))
	cfg, err := config.Load(file)
	if err != nil {
		t.Fatal(err)
	}
	g, err := proxy.New(cfg, proxy.Options{Plugins: plugins.Registry(), LogOutput: &testkit.SyncBuffer{}})
	if err != nil {
		t.Fatal(err)
	}
	serve := func(local net.Addr) string {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		var l net.Listener = ln
		if local != nil {
			l = fakeLocalListener{ln, local}
		}
		go func() { _ = g.ServeAdmin(l) }()
		t.Cleanup(func() { _ = ln.Close() })
		return "http://" + ln.Addr().String()
	}
	loop := serve(nil)
	public := serve(&net.TCPAddr{IP: net.IPv4(192, 0, 2, 10), Port: 9090})
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = g.Shutdown(ctx)
	})

	for _, p := range []string{"/admin/config", "/admin/upstreams"} {
		if r := testkit.Do(t, "GET", loop+p, ""); r.Status != 200 {
			t.Errorf("loopback GET %s: %d, want 200", p, r.Status)
		}
		r := testkit.Do(t, "GET", public+p, "")
		wantAdminProblem(t, r, 403, "forbidden")
		if !strings.Contains(string(r.Body), "loopback") {
			t.Errorf("non-loopback GET %s: %s", p, r.Body)
		}
	}
	for _, p := range []string{"/metrics", "/healthz"} {
		if r := testkit.Do(t, "GET", public+p, ""); r.Status != 200 {
			t.Errorf("non-loopback GET %s: %d, want 200", p, r.Status)
		}
	}
	// Mutating calls stay refused everywhere without a token.
	wantAdminProblem(t, testkit.Do(t, "POST", loop+"/admin/reload", ""), 403, "forbidden")
}

func TestLoopbackListen(t *testing.T) {
	for addr, want := range map[string]bool{
		"127.0.0.1:9090": true, "[::1]:9090": true, "localhost:9090": true, "127.1.2.3:1": true,
		"0.0.0.0:9090": false, ":9090": false, "[::]:9090": false, "10.0.0.1:9090": false, "example.com:9090": false, "nope": false,
	} {
		if got := proxy.LoopbackListen(addr); got != want {
			t.Errorf("LoopbackListen(%q) = %v, want %v", addr, got, want)
		}
	}
}

func wantAdminProblem(t *testing.T, r *testkit.Response, status int, code string) {
	t.Helper()
	var p map[string]any
	if r.Status != status || r.Header.Get("Content-Type") != "application/problem+json" || json.Unmarshal(r.Body, &p) != nil || p["code"] != code {
		t.Errorf("got %d %s %s, want %d problem+json code %s", r.Status, r.Header.Get("Content-Type"), r.Body, status, code)
	}
}

// /admin/config shows the settings in effect, defaults that depend on other
// settings included (settled after decoding): retry's methods follow
// idempotency_key, circuit_breaker's consecutive_failures and max_open_for
// follow failure_ratio and open_for.
func TestAdminConfigShowsSettledDefaults(t *testing.T) {
	t.Parallel()
	gw := testkit.StartGateway(t, `
log: {access_log: false}
admin: {token: "admin-secret-123"}
upstreams: {up: {url: "http://127.0.0.1:9"}}
routes:
  r: {path: "/r", upstream: up, plugins: {retry: {}, circuit_breaker: {open_for: 10m}}}
  g: {path: "/g", upstream: up, plugins: {retry: {idempotency_key: generate}, circuit_breaker: {failure_ratio: 0.5}}}
`)
	configs, _ := gw.PluginConfigs(t, "Authorization", "Bearer admin-secret-123")
	got := func(route, plugin, key string) string { return fmt.Sprint(configs[route][plugin][key]) }
	for _, c := range []struct{ route, plugin, key, want string }{
		{"r", "retry", "methods", "[GET HEAD OPTIONS PUT DELETE POST PATCH]"},
		{"g", "retry", "methods", "[GET HEAD OPTIONS PUT DELETE POST PATCH]"},
		{"r", "circuit_breaker", "consecutive_failures", "5"},
		{"r", "circuit_breaker", "max_open_for", "10m0s"},
		{"g", "circuit_breaker", "consecutive_failures", "0"},
		{"g", "circuit_breaker", "max_open_for", "5m0s"},
	} {
		if v := got(c.route, c.plugin, c.key); v != c.want {
			t.Errorf("routes.%s.plugins.%s.%s = %s, want %s", c.route, c.plugin, c.key, v, c.want)
		}
	}
}

// An admin error has the proxy error's shape: the same members in the same
// order, request_id included, and the caller's X-Request-Id is kept.
func TestAdminProblemsHaveTheProxyShape(t *testing.T) {
	t.Parallel()
	const token = "admin-secret-0123456789"
	gw := testkit.StartGateway(t, fmt.Sprintf(`
log: {access_log: false}
admin: {token: %q}
upstreams: {dead: {url: "http://127.0.0.1:9"}}
routes: {r: {path: "/r", upstream: dead}}
`, token))
	proxyErr := testkit.Do(t, "GET", gw.URL+"/r", "")
	adminErr := testkit.Do(t, "GET", gw.AdminURL+"/admin/nope", "", "Authorization", "Bearer "+token)
	wantAdminProblem(t, adminErr, 404, "route_not_found")
	pk, ak := jsonKeys(t, proxyErr.Body), jsonKeys(t, adminErr.Body)
	// The admin error has no upstream; every member it has comes in the
	// proxy's order.
	var common []string
	for _, k := range pk {
		if slices.Contains(ak, k) {
			common = append(common, k)
		}
	}
	if !slices.Equal(common, ak) || !slices.Contains(ak, "request_id") {
		t.Errorf("admin problem members %v, want the proxy's order %v with request_id", ak, pk)
	}
	var body struct {
		RequestID string `json:"request_id"`
	}
	_ = json.Unmarshal(adminErr.Body, &body)
	if body.RequestID == "" || body.RequestID != adminErr.Header.Get("X-Request-Id") {
		t.Errorf("request_id %q, X-Request-Id %q: want the same, not empty", body.RequestID, adminErr.Header.Get("X-Request-Id"))
	}
	r := testkit.Do(t, "GET", gw.AdminURL+"/admin/config", "", "X-Request-Id", "caller-id-42")
	_ = json.Unmarshal(r.Body, &body)
	if r.Status != 401 || body.RequestID != "caller-id-42" || r.Header.Get("X-Request-Id") != "caller-id-42" {
		t.Errorf("caller's X-Request-Id: %d %s (header %q), want 401 carrying caller-id-42", r.Status, r.Body, r.Header.Get("X-Request-Id"))
	}
	r = testkit.Do(t, "GET", gw.AdminURL+"/healthz", "", "X-Request-Id", "bad id\twith tab")
	if id := r.Header.Get("X-Request-Id"); id == "" || strings.ContainsAny(id, " \t") {
		t.Errorf("an invalid caller id must be replaced, got %q", id)
	}
}

// jsonKeys lists the top-level member names of a JSON object, in order.
func jsonKeys(t *testing.T, body []byte) []string {
	t.Helper()
	dec := json.NewDecoder(strings.NewReader(string(body)))
	if tok, err := dec.Token(); err != nil || tok != json.Delim('{') {
		t.Fatalf("not a JSON object: %s", body)
	}
	var keys []string
	for dec.More() {
		tok, err := dec.Token()
		if err != nil {
			t.Fatalf("%s: %v", body, err)
		}
		keys = append(keys, tok.(string))
		var skip json.RawMessage
		if err := dec.Decode(&skip); err != nil {
			t.Fatalf("%s: %v", body, err)
		}
	}
	return keys
}
