package proxy_test

import (
	"errors"
	"fmt"
	"strings"
	"testing"

	"github.com/sluice-gw/sluice/internal/testkit"
	"github.com/sluice-gw/sluice/plugins"
	"github.com/sluice-gw/sluice/proxy"
	"github.com/sluice-gw/sluice/proxy/config"
	"github.com/valyala/fasthttp"
)

func TestRouting(t *testing.T) {
	t.Parallel()
	tag := func(name string) fasthttp.RequestHandler {
		return func(ctx *fasthttp.RequestCtx) { ctx.SetBodyString(name) }
	}
	a := testkit.NewUpstream(t, tag("a"))
	b := testkit.NewUpstream(t, tag("b"))
	c := testkit.NewUpstream(t, tag("c"))
	gw := testkit.StartGateway(t, fmt.Sprintf(`
log: {access_log: false}
upstreams:
  a: {url: "%s"}
  b: {url: "%s"}
  c: {url: "%s"}
routes:
  reads:  {path: "/v1/items/{id}", methods: [GET, HEAD], upstream: a}
  writes: {path: "/v1/items/{id}", methods: [POST, DELETE], upstream: b}
  any:    {path: "/any/{p:*}", upstream: a}
  hosted: {path: "/any/{p:*}", host: "Billing.Internal", upstream: c}
  static: {path: "/exact", upstream: b}
`, a.URL, b.URL, c.URL))

	cases := []struct {
		name, method, path, host string
		wantStatus               int
		wantBody, wantCode       string
	}{
		{"method picks route GET", "GET", "/v1/items/7", "", 200, "a", ""},
		{"method picks route POST", "POST", "/v1/items/7", "", 200, "b", ""},
		{"method not allowed", "PUT", "/v1/items/7", "", 405, "", "method_not_allowed"},
		{"any method", "PURGE", "/any/x", "", 200, "a", ""},
		{"host route", "GET", "/any/x", "billing.internal:8080", 200, "c", ""},
		{"host fallback", "GET", "/any/x", "other.internal", 200, "a", ""},
		{"static", "GET", "/exact", "", 200, "b", ""},
		{"no trailing slash redirect", "GET", "/exact/", "", 404, "", "route_not_found"},
		{"not found", "GET", "/nope", "", 404, "", "route_not_found"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			var hdr []string
			if tc.host != "" {
				hdr = []string{"Host", tc.host}
			}
			resp := testkit.Do(t, tc.method, gw.URL+tc.path, "", hdr...)
			if tc.wantCode != "" {
				p := testkit.WantProblem(t, resp, tc.wantStatus, tc.wantCode)
				if p["instance"] != tc.path {
					t.Errorf("instance = %v, want %s", p["instance"], tc.path)
				}
				if tc.wantStatus == 405 && resp.Header.Get("Allow") != "GET, HEAD, POST, DELETE" {
					t.Errorf("Allow = %q", resp.Header.Get("Allow"))
				}
				return
			}
			if resp.Status != tc.wantStatus || string(resp.Body) != tc.wantBody {
				t.Fatalf("got %d %q, want %d %q", resp.Status, resp.Body, tc.wantStatus, tc.wantBody)
			}
		})
	}
}

func TestDotSegmentsRefused(t *testing.T) {
	t.Parallel()
	gw, up := gatewayFor(t, nil, `
log: {access_log: false}
upstreams: {up: {url: "%[1]s/v1"}}
routes: {r: {path: "/api/{p:*}", upstream: up, strip_prefix: "/api"}}
`)
	for _, path := range []string{"/api/../admin", "/api/x/%2e%2E/y", "/api/./x", "/api/x/.."} {
		out := rawRequest(t, gw.URL, "GET "+path+" HTTP/1.1\r\nHost: gw\r\nConnection: close\r\n\r\n")
		if !strings.HasPrefix(out, "400\n") || !strings.Contains(out, `"code":"bad_request"`) {
			t.Errorf("%s: want 400 bad_request, got %s", path, out)
		}
	}
	for _, path := range []string{"/api/x..y/.well", "/api/...", "/api/a.b"} {
		out := rawRequest(t, gw.URL, "GET "+path+" HTTP/1.1\r\nHost: gw\r\nConnection: close\r\n\r\n")
		if !strings.HasPrefix(out, "200\n") {
			t.Errorf("%s: ordinary segment refused: %s", path, out)
		}
	}
	if n := up.Count(); n != 3 {
		t.Errorf("upstream got %d requests, want only the 3 ordinary ones", n)
	}
}

func TestRouteConflictsAreConfigErrors(t *testing.T) {
	t.Parallel()
	cases := []struct {
		name, routes string
		wantPath     string
		wantMsg      string
	}{
		{"same path and method", `
  a: {path: "/x", methods: [GET], upstream: up}
  b: {path: "/x", methods: [GET, POST], upstream: up}`, "routes.b.path", `GET /x is already served by route "a"`},
		{"same path any method", `
  a: {path: "/x/{p:*}", upstream: up}
  b: {path: "/x/{p:*}", upstream: up}`, "routes.b.path", `already served by route "a"`},
		{"conflicting wildcards", `
  a: {path: "/u/{id}", upstream: up}
  b: {path: "/u/{name}", upstream: up}`, "routes.b.path", `conflicts with route "a"`},
		{"catch-all not at the end", `
  a: {path: "/u/{p:*}/x", upstream: up}`, "routes.a.path", "only allowed at the end"},
		{"unbalanced braces", `
  a: {path: "/u/{id", upstream: up}`, "routes.a.path", "unbalanced"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			t.Parallel()
			cfg, err := config.LoadBytes([]byte("upstreams: {up: {url: \"http://127.0.0.1:1\"}}\nroutes:" + c.routes))
			if err == nil {
				err = proxy.Check(cfg, plugins.Registry())
			}
			var ce *config.ConfigError
			if !errors.As(err, &ce) {
				t.Fatalf("Check = %v, want a *ConfigError", err)
			}
			for _, p := range ce.Problems {
				if p.Path == c.wantPath && strings.Contains(p.Msg, c.wantMsg) {
					return
				}
			}
			t.Fatalf("no problem at %s containing %q in: %v", c.wantPath, c.wantMsg, err)
		})
	}
}

// Every encoding of a dot segment is refused, whatever the decoding depth or
// separator a server behind the gateway uses, and nothing is forwarded.
func TestEncodedDotSegmentsRefused(t *testing.T) {
	t.Parallel()
	gw, up := gatewayFor(t, nil, `
log: {access_log: false}
upstreams: {up: {url: "%[1]s/v2"}}
routes: {r: {path: "/prov/{p:*}", upstream: up, strip_prefix: "/prov"}}
`)
	refused := []string{
		"/prov/..%2fadmin/x", "/prov/%2e%2e%2fadmin/x", "/prov/.%2e%2fadmin", "/prov/%2E%2E%2Fadmin",
		"/prov/..%5cadmin", `/prov/..\admin`, "/prov/..;/admin", "/prov/.;x/admin", `/prov/.\`,
		"/prov/%252e%252e%252fadmin", "/prov/%25252e%25252e/admin", "/prov/%c0%ae%c0%ae/admin",
		"/prov/%c0%ae%c0%ae%c0%afadmin", "/prov/x/%2e", "/prov/x%2f..%2fy", "/prov/x%5c.%5cy",
	}
	for _, path := range refused {
		out := rawRequest(t, gw.URL, "GET "+path+" HTTP/1.1\r\nHost: gw\r\nConnection: close\r\n\r\n")
		if !strings.HasPrefix(out, "400\n") || !strings.Contains(out, `"code":"bad_request"`) {
			t.Errorf("%s: want 400 bad_request, got %s", path, out)
		}
	}
	allowed := []string{"/prov/a.b/c.json", "/prov/.well-known/x", "/prov/...", "/prov/group%2Fproject", "/prov/a%20b", "/prov/%2e%2e%2e"}
	for _, path := range allowed {
		out := rawRequest(t, gw.URL, "GET "+path+" HTTP/1.1\r\nHost: gw\r\nConnection: close\r\n\r\n")
		if !strings.HasPrefix(out, "200\n") {
			t.Errorf("%s: ordinary path refused: %s", path, out)
		}
	}
	if n := up.Count(); n != len(allowed) {
		t.Errorf("upstream got %d requests, want only the %d ordinary ones", n, len(allowed))
	}
}
