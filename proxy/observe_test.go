package proxy_test

import (
	"bufio"
	"encoding/json"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/sluice-gw/sluice/internal/testkit"
	"github.com/valyala/fasthttp"
)

func TestMetrics(t *testing.T) {
	t.Parallel()
	release := make(chan struct{})
	up := testkit.NewUpstream(t, func(ctx *fasthttp.RequestCtx) {
		switch string(ctx.Path()) {
		case "/fail":
			ctx.SetStatusCode(500)
		case "/slow":
			time.Sleep(200 * time.Millisecond)
		case "/hold":
			<-release
		}
	})
	gw := testkit.StartGateway(t, fmt.Sprintf(`
log: {access_log: false}
upstreams:
  up:     {url: "%s", timeout: 50ms}
  hold:   {url: "%s"}
  closed: {url: "http://%s"}
routes:
  r:      {path: "/{p:*}", upstream: up}
  held:   {path: "/held/{p:*}", upstream: hold, strip_prefix: "/held"}
  dead:   {path: "/dead/{p:*}", upstream: closed}
`, up.URL, up.URL, testkit.ClosedAddr(t)))

	testkit.Do(t, "GET", gw.URL+"/ok", "")
	testkit.Do(t, "GET", gw.URL+"/ok", "")
	testkit.Do(t, "POST", gw.URL+"/ok", "x")
	testkit.Do(t, "GET", gw.URL+"/fail", "")
	testkit.Do(t, "GET", gw.URL+"/slow", "")
	testkit.Do(t, "GET", gw.URL+"/dead/x", "")
	testkit.Do(t, "BREW", gw.URL+"/ok", "")

	done := make(chan struct{})
	go func() { _, _ = testkit.TryDo("GET", gw.URL+"/held/hold", ""); close(done) }()
	testkit.Eventually(t, 2*time.Second, func() bool {
		v, _ := gw.Metrics(t).Value("sluice_inflight_requests")
		return v == 1
	}, "sluice_inflight_requests never showed the held request")
	close(release)
	<-done

	m := gw.Metrics(t)
	checks := []struct {
		name   string
		labels []string
		want   float64
	}{
		{"sluice_requests_total", []string{"route", "r", "upstream", "up", "method", "GET", "status", "200"}, 2},
		{"sluice_requests_total", []string{"route", "r", "method", "POST", "status", "200"}, 1},
		{"sluice_requests_total", []string{"route", "r", "method", "GET", "status", "500"}, 1},
		{"sluice_requests_total", []string{"route", "r", "method", "GET", "status", "504"}, 1},
		{"sluice_requests_total", []string{"route", "r", "method", "OTHER", "status", "200"}, 1},
		{"sluice_requests_total", []string{"route", "dead", "upstream", "closed", "status", "502"}, 1},
		{"sluice_request_duration_seconds", []string{"route", "r", "upstream", "up"}, 6},
		{"sluice_upstream_duration_seconds", []string{"upstream", "up", "outcome", "ok"}, 4},
		{"sluice_upstream_duration_seconds", []string{"upstream", "up", "outcome", "error_status"}, 1},
		{"sluice_upstream_duration_seconds", []string{"upstream", "up", "outcome", "timeout"}, 1},
		{"sluice_upstream_duration_seconds", []string{"upstream", "closed", "outcome", "conn_error"}, 1},
		{"sluice_errors_total", []string{"route", "r", "code", "upstream_timeout"}, 1},
		{"sluice_errors_total", []string{"route", "dead", "code", "upstream_unreachable"}, 1},
		{"sluice_inflight_requests", nil, 0},
		{"sluice_config_reloads_total", []string{"result", "failure"}, 0},
	}
	for _, c := range checks {
		got, found := m.Value(c.name, c.labels...)
		if !found || got != c.want {
			t.Errorf("%s%v = %v (found %v), want %v", c.name, c.labels, got, found, c.want)
		}
	}
	for _, name := range []string{"go_goroutines", "process_cpu_seconds_total"} {
		if m[name] == nil {
			t.Errorf("%s missing: Go and process collectors not registered", name)
		}
	}
	// The 500 passed through (no normalize_errors here) is not a gateway error.
	if v, found := m.Value("sluice_errors_total", "route", "r", "code", "upstream_error"); found {
		t.Errorf("a passed-through upstream 500 counted as a gateway error: %v", v)
	}
}

func TestAccessLog(t *testing.T) {
	t.Parallel()
	gw, _ := gatewayFor(t, nil, `
log: {access_log: true}
upstreams: {up: {url: "%[1]s"}}
routes: {r: {path: "/{p:*}", upstream: up}}
`)
	testkit.Do(t, "POST", gw.URL+"/v1/charges?api_key=sk_live_SECRET", "amount=10", "X-Request-Id", "log-test-1")
	testkit.Do(t, "GET", gw.URL+"/../x", "")
	var line map[string]any
	sc := bufio.NewScanner(strings.NewReader(gw.Logs.String()))
	for sc.Scan() {
		var m map[string]any
		if json.Unmarshal(sc.Bytes(), &m) == nil && m["msg"] == "access" && m["request_id"] == "log-test-1" {
			line = m
		}
	}
	if line == nil {
		t.Fatalf("no access line for the request:\n%s", gw.Logs.String())
	}
	want := map[string]any{"route": "r", "upstream": "up", "method": "POST", "path": "/v1/charges",
		"status": float64(200), "bytes_in": float64(9), "bytes_out": float64(2), "remote": "127.0.0.1", "attempts": float64(1)}
	for k, v := range want {
		if line[k] != v {
			t.Errorf("access log %s = %v, want %v", k, line[k], v)
		}
	}
	if _, ok := line["duration_ms"].(float64); !ok {
		t.Errorf("duration_ms missing: %v", line)
	}
	if strings.Contains(gw.Logs.String(), "sk_live_SECRET") {
		t.Errorf("the query string (and the key in it) reached the log")
	}
}

func TestAccessLogOff(t *testing.T) {
	t.Parallel()
	gw, _ := gatewayFor(t, nil, `
log: {access_log: false}
upstreams: {up: {url: "%[1]s"}}
routes: {r: {path: "/{p:*}", upstream: up}}
`)
	testkit.Do(t, "GET", gw.URL+"/x", "")
	if strings.Contains(gw.Logs.String(), `"msg":"access"`) {
		t.Errorf("access line written with access_log: false")
	}
}

func TestAdminAPI(t *testing.T) {
	t.Setenv("TEST_ADMIN_TOKEN", "adm-tok-9f8e7d6c5b4a")
	up := testkit.NewUpstream(t, nil)
	gw := testkit.StartGateway(t, fmt.Sprintf(`
log: {access_log: false}
admin: {token: "${TEST_ADMIN_TOKEN}"}
upstreams: {up: {targets: ["%s", "%s"]}}
routes: {r: {path: "/{p:*}", upstream: up}}
`, up.URL, up.URL))
	auth := []string{"Authorization", "Bearer adm-tok-9f8e7d6c5b4a"}

	t.Run("health and readiness", func(t *testing.T) {
		for _, p := range []string{"/healthz", "/readyz"} {
			if resp := testkit.Do(t, "GET", gw.AdminURL+p, ""); resp.Status != 200 {
				t.Errorf("%s: %d", p, resp.Status)
			}
		}
	})
	t.Run("config is redacted", func(t *testing.T) {
		resp := testkit.Do(t, "GET", gw.AdminURL+"/admin/config", "", auth...)
		if resp.Status != 200 || strings.Contains(string(resp.Body), "adm-tok-9f8e7d6c5b4a") {
			t.Fatalf("status %d; token visible: %v", resp.Status, strings.Contains(string(resp.Body), "adm-tok"))
		}
		var cfg map[string]map[string]any
		if err := json.Unmarshal(resp.Body, &cfg); err != nil {
			t.Fatal(err)
		}
		if cfg["admin"]["token"] != "[redacted]" || cfg["server"]["read_timeout"] != "10s" || cfg["server"]["max_request_body"] != "10MiB" {
			t.Errorf("admin %v server %v", cfg["admin"], cfg["server"])
		}
	})
	t.Run("upstreams", func(t *testing.T) {
		testkit.Do(t, "GET", gw.URL+"/x", "")
		resp := testkit.Do(t, "GET", gw.AdminURL+"/admin/upstreams", "", auth...)
		var out struct {
			Upstreams []struct {
				Name    string   `json:"name"`
				Routes  []string `json:"routes"`
				Targets []struct {
					URL   string `json:"url"`
					Conns int    `json:"open_conns"`
				} `json:"targets"`
			} `json:"upstreams"`
		}
		if err := json.Unmarshal(resp.Body, &out); err != nil || len(out.Upstreams) != 1 {
			t.Fatalf("%v: %s", err, resp.Body)
		}
		u := out.Upstreams[0]
		if u.Name != "up" || len(u.Targets) != 2 || u.Routes[0] != "r" || u.Targets[0].URL != up.URL {
			t.Errorf("unexpected: %+v", u)
		}
	})
	t.Run("reload needs the token", func(t *testing.T) {
		resp := testkit.Do(t, "POST", gw.AdminURL+"/admin/reload", "")
		if resp.Status != 401 || resp.Header.Get("WWW-Authenticate") == "" {
			t.Errorf("no token: %d %q", resp.Status, resp.Header.Get("WWW-Authenticate"))
		}
		resp = testkit.Do(t, "POST", gw.AdminURL+"/admin/reload", "", "Authorization", "Bearer wrong")
		if resp.Status != 401 {
			t.Errorf("wrong token: %d", resp.Status)
		}
		resp = testkit.Do(t, "POST", gw.AdminURL+"/admin/reload", "", "Authorization", "Bearer adm-tok-9f8e7d6c5b4a")
		if resp.Status != 200 {
			t.Errorf("right token: %d %s", resp.Status, resp.Body)
		}
	})
	t.Run("unknown path and method are problems", func(t *testing.T) {
		resp := testkit.Do(t, "GET", gw.AdminURL+"/admin/nope", "", auth...)
		if resp.Status != 404 || resp.Header.Get("Content-Type") != "application/problem+json" {
			t.Errorf("unknown path: %d %s", resp.Status, resp.Header.Get("Content-Type"))
		}
		if resp := testkit.Do(t, "GET", gw.AdminURL+"/admin/reload", "", auth...); resp.Status != 405 {
			t.Errorf("GET /admin/reload: %d", resp.Status)
		}
	})
}

func TestAdminConfigShowsVariablesNotTheirValues(t *testing.T) {
	t.Setenv("TEST_PROVIDER_TOKEN", "ghp_0123456789abcdefSECRET")
	up := testkit.NewUpstream(t, nil)
	gw := testkit.StartGateway(t, fmt.Sprintf(`
log: {access_log: false}
upstreams: {up: {url: "%s"}}
routes:
  r:
    path: "/{p:*}"
    upstream: up
    plugins:
      headers: {request: {set: {X-Provider-Auth: "token ${TEST_PROVIDER_TOKEN}", Authorization: "Bearer literal-in-file-123"}}}
`, up.URL))
	testkit.Do(t, "GET", gw.URL+"/x", "")
	if got := up.Last(t).Header.Get("X-Provider-Auth"); got != "token ghp_0123456789abcdefSECRET" {
		t.Fatalf("upstream got %q", got)
	}
	body := string(testkit.Do(t, "GET", gw.AdminURL+"/admin/config", "").Body)
	if strings.Contains(body, "ghp_0123456789abcdefSECRET") || strings.Contains(body, "literal-in-file-123") {
		t.Fatalf("a credential is visible in /admin/config:\n%s", body)
	}
	if !strings.Contains(body, "[redacted]") {
		t.Errorf("credential-like header values not marked redacted:\n%s", body)
	}
}

func TestNoServerHeaderInvented(t *testing.T) {
	t.Parallel()
	gw, _ := gatewayFor(t, nil, `
log: {access_log: false}
upstreams: {up: {url: "%[1]s"}}
routes: {r: {path: "/{p:*}", upstream: up}}
`)
	for _, path := range []string{"/x", "/../nope"} {
		if resp := testkit.Do(t, "GET", gw.URL+path, ""); resp.Header.Get("Server") != "" {
			t.Errorf("%s: Server: %q added by the gateway", path, resp.Header.Get("Server"))
		}
	}
}

func TestPprofOnlyWhenEnabled(t *testing.T) {
	t.Parallel()
	for _, on := range []bool{false, true} {
		gw, _ := gatewayFor(t, nil, fmt.Sprintf(`
log: {access_log: false}
admin: {pprof: %v}
upstreams: {up: {url: "%%[1]s"}}
routes: {r: {path: "/{p:*}", upstream: up}}
`, on))
		resp := testkit.Do(t, "GET", gw.AdminURL+"/debug/pprof/cmdline", "")
		if got := resp.Status == 200; got != on {
			t.Errorf("pprof: %v: /debug/pprof/cmdline answered %d", on, resp.Status)
		}
	}
}
