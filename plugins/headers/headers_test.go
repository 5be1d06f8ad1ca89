package headers_test

import (
	"fmt"
	"slices"
	"strings"
	"testing"

	"github.com/sluice-gw/sluice/internal/testkit"
	"github.com/sluice-gw/sluice/proxy"
	"github.com/valyala/fasthttp"
)

// routeYAML is one upstream "api" and one route "r" under /api/ whose plugins
// block is given (indented by 6 spaces).
const routeYAML = `
log: {level: error, access_log: false}
upstreams:
  api: {url: %q, forwarded_headers: true}
routes:
  r:
    path: "/api/{path:*}"
    upstream: api
    strip_prefix: "/api"
    plugins:
%s
`

// pairs is a list of header name, value pairs.
type pairs []string

// wantHeader checks the values of one header; a nil want means absent.
func wantHeader(t *testing.T, where string, h map[string][]string, name string, want []string) {
	t.Helper()
	got := h[name]
	if !slices.Equal(got, want) {
		t.Errorf("%s: %s = %q, want %q", where, name, got, want)
	}
}

func TestRequestEdits(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name   string
		block  string
		caller pairs
		want   map[string][]string // canonical name -> values the upstream receives; nil: absent
	}{
		{
			name:   "set adds an absent header",
			block:  `{request: {set: {X-Api-Version: "2024-06-01"}}}`,
			caller: nil,
			want:   map[string][]string{"X-Api-Version": {"2024-06-01"}},
		},
		{
			name:   "set replaces the caller's value",
			block:  `{request: {set: {X-Api-Version: "2024-06-01"}}}`,
			caller: pairs{"X-Api-Version", "1999-01-01"},
			want:   map[string][]string{"X-Api-Version": {"2024-06-01"}},
		},
		{
			name:   "set replaces every caller value",
			block:  `{request: {set: {X-Tag: gateway}}}`,
			caller: pairs{"X-Tag", "one", "X-Tag", "two"},
			want:   map[string][]string{"X-Tag": {"gateway"}},
		},
		{
			name:   "add keeps the caller's value and appends",
			block:  `{request: {add: {X-Tag: gateway}}}`,
			caller: pairs{"X-Tag", "caller"},
			want:   map[string][]string{"X-Tag": {"caller", "gateway"}},
		},
		{
			name:   "add without a caller value",
			block:  `{request: {add: {X-Tag: gateway}}}`,
			caller: nil,
			want:   map[string][]string{"X-Tag": {"gateway"}},
		},
		{
			name:   "remove drops the caller's header",
			block:  `{request: {remove: [X-Caller-Secret]}}`,
			caller: pairs{"X-Caller-Secret", "s3cret", "X-Other", "kept"},
			want:   map[string][]string{"X-Caller-Secret": nil, "X-Other": {"kept"}},
		},
		{
			name:   "remove is case-insensitive",
			block:  `{request: {remove: [x-CALLER-secret]}}`,
			caller: pairs{"X-Caller-Secret", "s3cret"},
			want:   map[string][]string{"X-Caller-Secret": nil},
		},
		{
			name:   "remove drops every value",
			block:  `{request: {remove: [X-Tag]}}`,
			caller: pairs{"X-Tag", "one", "X-Tag", "two"},
			want:   map[string][]string{"X-Tag": nil},
		},
		{
			name:   "remove Cookie and Authorization",
			block:  `{request: {remove: [Cookie, Authorization]}}`,
			caller: pairs{"Cookie", "session=abc", "Authorization", "Bearer caller-token"},
			want:   map[string][]string{"Cookie": nil, "Authorization": nil},
		},
		{
			name:   "set User-Agent",
			block:  `{request: {set: {User-Agent: sluice-test}}}`,
			caller: pairs{"User-Agent", "caller/1.0"},
			want:   map[string][]string{"User-Agent": {"sluice-test"}},
		},
		{
			name:   "set name given in lower case",
			block:  `{request: {set: {x-api-key: k}}}`,
			caller: pairs{"X-Api-Key", "caller"},
			want:   map[string][]string{"X-Api-Key": {"k"}},
		},
		{
			name:   "remove, then set, then add",
			block:  `{request: {remove: [X-A], set: {X-A: set}, add: {X-A: added}}}`,
			caller: pairs{"X-A", "caller"},
			want:   map[string][]string{"X-A": {"set", "added"}},
		},
		{
			name:   "numbers are taken as text",
			block:  `{request: {set: {X-Version: 2, X-Date: "2024-06-01"}}}`,
			caller: nil,
			want:   map[string][]string{"X-Version": {"2"}, "X-Date": {"2024-06-01"}},
		},
		{
			name:   "X-Request-Id may be removed upstream",
			block:  `{request: {remove: [X-Request-Id]}}`,
			caller: pairs{"X-Request-Id", "caller-id"},
			want:   map[string][]string{"X-Request-Id": nil},
		},
		{
			name:   "response edits do not touch the request",
			block:  `{response: {set: {X-Resp: r}, remove: [X-Tag]}}`,
			caller: pairs{"X-Tag", "caller"},
			want:   map[string][]string{"X-Resp": nil, "X-Tag": {"caller"}},
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			up := testkit.NewUpstream(t, nil)
			gw := testkit.StartGateway(t, fmt.Sprintf(routeYAML, up.URL, "      headers: "+tc.block))
			resp := testkit.Do(t, "GET", gw.URL+"/api/x", "", tc.caller...)
			if resp.Status != 200 {
				t.Fatalf("status = %d (body %s)", resp.Status, resp.Body)
			}
			got := up.Last(t).Header
			for name, want := range tc.want {
				wantHeader(t, "upstream", got, name, want)
			}
			// The gateway's own headers are not disturbed.
			if got.Get("X-Forwarded-For") == "" {
				t.Error("X-Forwarded-For missing upstream")
			}
			if resp.Header.Get("X-Request-Id") == "" {
				t.Error("X-Request-Id missing in the answer")
			}
		})
	}
}

func TestResponseEdits(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name     string
		block    string
		provider pairs
		want     map[string][]string
		gone     pairs // header, value pairs the caller must not see
	}{
		{
			name:     "set adds an absent header",
			block:    `{response: {set: {X-Served-By: sluice}}}`,
			provider: nil,
			want:     map[string][]string{"X-Served-By": {"sluice"}},
		},
		{
			name:     "set replaces the provider's value",
			block:    `{response: {set: {Cache-Control: no-cache}}}`,
			provider: pairs{"Cache-Control", "public, max-age=600"},
			want:     map[string][]string{"Cache-Control": {"no-cache"}},
		},
		{
			name:     "add keeps the provider's value and appends",
			block:    `{response: {add: {X-Tag: gateway}}}`,
			provider: pairs{"X-Tag", "provider"},
			want:     map[string][]string{"X-Tag": {"provider", "gateway"}},
		},
		{
			name:     "remove drops the provider's header",
			block:    `{response: {remove: [X-Powered-By]}}`,
			provider: pairs{"X-Powered-By", "PHP/5.4", "X-Other", "kept"},
			want:     map[string][]string{"X-Powered-By": nil, "X-Other": {"kept"}},
		},
		{
			name:     "set replaces every provider value",
			block:    `{response: {set: {X-Tag: gateway}}}`,
			provider: pairs{"X-Tag", "one", "X-Tag", "two"},
			want:     map[string][]string{"X-Tag": {"gateway"}},
		},
		{
			name:     "remove is case-insensitive",
			block:    `{response: {remove: [x-POWERED-by, SET-COOKIE]}}`,
			provider: pairs{"X-Powered-By", "PHP/5.4", "Set-Cookie", "tracking=1", "Set-Cookie", "session=2"},
			want:     map[string][]string{"X-Powered-By": nil, "Set-Cookie": nil},
		},
		{
			// The provider's Server value goes; whether the gateway then
			// names itself is the server's business, not this plugin's.
			name:     "remove Server hides what the provider runs",
			block:    `{response: {remove: [Server]}}`,
			provider: pairs{"Server", "nginx/1.2.3"},
			gone:     pairs{"Server", "nginx/1.2.3"},
		},
		{
			name:     "X-Request-Id comes back even when removed",
			block:    `{response: {remove: [X-Request-Id]}}`,
			provider: pairs{"X-Request-Id", "provider-id"},
			want:     map[string][]string{"X-Request-Id": {"caller-id"}},
		},
		{
			name:     "request edits do not touch the response",
			block:    `{request: {set: {X-Req: r}, remove: [X-Tag]}}`,
			provider: pairs{"X-Tag", "provider"},
			want:     map[string][]string{"X-Req": nil, "X-Tag": {"provider"}},
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			up := testkit.NewUpstream(t, func(ctx *fasthttp.RequestCtx) {
				for i := 0; i+1 < len(tc.provider); i += 2 {
					ctx.Response.Header.Add(tc.provider[i], tc.provider[i+1])
				}
				ctx.SetBodyString("payload")
			})
			gw := testkit.StartGateway(t, fmt.Sprintf(routeYAML, up.URL, "      headers: "+tc.block))
			resp := testkit.Do(t, "GET", gw.URL+"/api/x", "", "X-Request-Id", "caller-id")
			if resp.Status != 200 || string(resp.Body) != "payload" {
				t.Fatalf("answer = %d %q, want 200 \"payload\"", resp.Status, resp.Body)
			}
			for name, want := range tc.want {
				wantHeader(t, "caller", resp.Header, name, want)
			}
			for i := 0; i+1 < len(tc.gone); i += 2 {
				if got := resp.Header.Values(tc.gone[i]); slices.Contains(got, tc.gone[i+1]) {
					t.Errorf("caller: %s = %q, want no %q", tc.gone[i], got, tc.gone[i+1])
				}
			}
		})
	}
}

// Upstream error answers come back through the pipeline: response edits
// apply to them, and normalize_errors keeps them.
func TestResponseEditsApplyToUpstreamErrorAnswers(t *testing.T) {
	t.Parallel()
	up := testkit.NewUpstream(t, func(ctx *fasthttp.RequestCtx) {
		ctx.Response.Header.Set("X-Powered-By", "PHP")
		ctx.SetStatusCode(404)
		ctx.SetBodyString(`{"message":"nope"}`)
	})
	gw := testkit.StartGateway(t, fmt.Sprintf(routeYAML, up.URL, `      normalize_errors: {message: "/message"}
      headers: {response: {set: {X-Served-By: sluice}, remove: [X-Powered-By]}}`))
	resp := testkit.Do(t, "GET", gw.URL+"/api/x", "")
	if resp.Status != 404 || resp.Header.Get("Content-Type") != proxy.ProblemContentType {
		t.Fatalf("answer = %d %s, want a normalized 404", resp.Status, resp.Header.Get("Content-Type"))
	}
	wantHeader(t, "caller", resp.Header, "X-Served-By", []string{"sluice"})
	wantHeader(t, "caller", resp.Header, "X-Powered-By", nil)
}

// Intended behaviour (package doc): response edits concern answers that come
// back through the pipeline; errors the gateway produces itself are rendered
// at the route as problem+json and are not edited.
func TestResponseEditsAreNotAppliedToGatewayErrors(t *testing.T) {
	t.Parallel()
	gw := testkit.StartGateway(t, fmt.Sprintf(`
log: {level: error, access_log: false}
upstreams:
  gone: {url: "http://%s", connect_timeout: 1s}
routes:
  r:
    path: "/api/{path:*}"
    upstream: gone
    plugins:
      headers: {response: {set: {X-Served-By: sluice, Cache-Control: "public, max-age=60"}, add: {X-Tag: gateway}}}
`, testkit.ClosedAddr(t)))
	resp := testkit.Do(t, "GET", gw.URL+"/api/x", "")
	if resp.Status != 502 || resp.Header.Get("Content-Type") != proxy.ProblemContentType {
		t.Fatalf("answer = %d %s %s, want a 502 problem", resp.Status, resp.Header.Get("Content-Type"), resp.Body)
	}
	if !strings.Contains(string(resp.Body), `"code":"upstream_unreachable"`) {
		t.Errorf("body = %s, want code upstream_unreachable", resp.Body)
	}
	wantHeader(t, "caller", resp.Header, "X-Served-By", nil)
	wantHeader(t, "caller", resp.Header, "X-Tag", nil)
	wantHeader(t, "caller", resp.Header, "Cache-Control", []string{"no-store"})
}

// For each plugin the most specific block wins whole: a route's headers block
// replaces the upstream's and the top level's, it is not merged with them.
func TestMostSpecificBlockWinsWhole(t *testing.T) {
	t.Parallel()
	up := testkit.NewUpstream(t, func(ctx *fasthttp.RequestCtx) {
		ctx.Response.Header.Set("X-Provider", "p")
		ctx.SetBodyString("ok")
	})
	gw := testkit.StartGateway(t, fmt.Sprintf(`
log: {level: error, access_log: false}
plugins:
  headers:
    request: {set: {X-Top: top}, remove: [X-Caller]}
    response: {set: {X-Top: top}, remove: [X-Provider]}
upstreams:
  api: {url: %q}
  other:
    url: %q
    plugins:
      headers:
        request: {set: {X-Upstream: upstream}}
routes:
  inherit:
    path: "/inherit/{path:*}"
    upstream: api
  own:
    path: "/own/{path:*}"
    upstream: api
    plugins:
      headers:
        request: {set: {X-Route: route}}
        response: {add: {X-Route: route}}
  off:
    path: "/off/{path:*}"
    upstream: api
    plugins:
      headers: {enabled: false}
  via-upstream:
    path: "/via/{path:*}"
    upstream: other
`, up.URL, up.URL))
	tests := []struct {
		name         string
		path         string
		wantUpstream map[string][]string
		wantCaller   map[string][]string
	}{
		{
			name:         "top-level block inherited",
			path:         "/inherit/x",
			wantUpstream: map[string][]string{"X-Top": {"top"}, "X-Caller": nil, "X-Route": nil},
			wantCaller:   map[string][]string{"X-Top": {"top"}, "X-Provider": nil},
		},
		{
			name:         "route block replaces the top-level block",
			path:         "/own/x",
			wantUpstream: map[string][]string{"X-Route": {"route"}, "X-Top": nil, "X-Caller": {"c"}},
			wantCaller:   map[string][]string{"X-Route": {"route"}, "X-Top": nil, "X-Provider": {"p"}},
		},
		{
			name:         "enabled false switches the inherited block off",
			path:         "/off/x",
			wantUpstream: map[string][]string{"X-Top": nil, "X-Caller": {"c"}},
			wantCaller:   map[string][]string{"X-Top": nil, "X-Provider": {"p"}},
		},
		{
			name:         "upstream block replaces the top-level block",
			path:         "/via/x",
			wantUpstream: map[string][]string{"X-Upstream": {"upstream"}, "X-Top": nil, "X-Caller": {"c"}},
			wantCaller:   map[string][]string{"X-Top": nil, "X-Provider": {"p"}},
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			// Not parallel: the subtests share the upstream and read its last request.
			resp := testkit.Do(t, "GET", gw.URL+tc.path, "", "X-Caller", "c")
			if resp.Status != 200 {
				t.Fatalf("status = %d (body %s)", resp.Status, resp.Body)
			}
			got := up.Last(t).Header
			for name, want := range tc.wantUpstream {
				wantHeader(t, "upstream", got, name, want)
			}
			for name, want := range tc.wantCaller {
				wantHeader(t, "caller", resp.Header, name, want)
			}
		})
	}
}

func TestConfigValidation(t *testing.T) {
	t.Parallel()
	const base = `
upstreams:
  api: {url: "http://127.0.0.1:1"}
routes:
  r:
    path: "/api/{path:*}"
    upstream: api
    plugins:
      headers: %s
`
	const p = "routes.r.plugins.headers."
	tests := []struct {
		name          string
		block         string
		path, message string // "" path: valid
	}{
		{"valid", `{request: {set: {X-A: a}, add: {X-B: b}, remove: [Cookie, X-Request-Id]}, response: {set: {X-C: c}, add: {X-D: d}, remove: [Server]}}`, "", ""},
		{"empty block", `{}`, "", ""},
		{"Host may be set on the response", `{response: {set: {Host: h}}}`, "", ""},
		{"invalid header name", `{request: {set: {"Bad Header": v}}}`, p + "request.set.Bad Header", `invalid header name "Bad Header"`},
		{"invalid header name in remove", `{response: {remove: ["X-Ok", "Bad:Name"]}}`, p + "response.remove[1]", "invalid header name"},
		{"CR LF in a set value", `{request: {set: {X-A: "a\r\nX-Injected: 1"}}}`, p + "request.set.X-A", "CR, LF or NUL"},
		{"LF in an add value", `{response: {add: {X-A: "a\nb"}}}`, p + "response.add.X-A", "CR, LF or NUL"},
		{"NUL in a value", `{request: {add: {X-A: "a\0b"}}}`, p + "request.add.X-A", "CR, LF or NUL"},
		{"Content-Length", `{request: {set: {Content-Length: "10"}}}`, p + "request.set.Content-Length", "computed from the body"},
		{"Content-Length on the response", `{response: {remove: [content-length]}}`, p + "response.remove[0]", "computed from the body"},
		{"Host on the request", `{request: {set: {Host: evil.example}}}`, p + "request.set.Host", "upstream's url"},
		{"Host removed from the request", `{request: {remove: [Host]}}`, p + "request.remove[0]", "upstream's url"},
		{"Transfer-Encoding", `{response: {add: {Transfer-Encoding: chunked}}}`, p + "response.add.Transfer-Encoding", "set by the gateway"},
		{"Transfer-Encoding removed", `{request: {remove: [Transfer-Encoding]}}`, p + "request.remove[0]", "set by the gateway"},
		{"Connection", `{request: {set: {Connection: close}}}`, p + "request.set.Connection", "hop-by-hop"},
		{"Connection on the response", `{response: {set: {Connection: keep-alive}}}`, p + "response.set.Connection", "hop-by-hop"},
		{"Upgrade", `{request: {add: {Upgrade: websocket}}}`, p + "request.add.Upgrade", "hop-by-hop"},
		{"X-Request-Id cannot be set", `{response: {set: {X-Request-Id: mine}}}`, p + "response.set.X-Request-Id", "the gateway sets it"},
		{"X-Request-Id cannot be added upstream", `{request: {add: {X-Request-Id: mine}}}`, p + "request.add.X-Request-Id", "the gateway sets it"},
		{"unknown direction", `{requests: {set: {X-A: a}}}`, p + "requests", "unknown key"},
		{"unknown operation", `{request: {replace: {X-A: a}}}`, p + "request.replace", "unknown key"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			probs := testkit.ConfigProblems(t, fmt.Sprintf(base, tc.block))
			testkit.WantOneProblem(t, probs, tc.path, tc.message)
		})
	}
}

func TestConfigValidationReportsEveryProblem(t *testing.T) {
	t.Parallel()
	probs := testkit.ConfigProblems(t, `
plugins:
  headers: {request: {set: {Host: h}}}
upstreams:
  api:
    url: "http://127.0.0.1:1"
    plugins:
      headers: {response: {remove: [Connection]}}
routes:
  r:
    path: "/api/{path:*}"
    upstream: api
    plugins:
      headers: {request: {set: {"Bad Header": v, Content-Length: "1"}}}
`)
	var got []string
	for _, p := range probs {
		got = append(got, p.Path)
	}
	want := []string{
		"plugins.headers.request.set.Host",
		"routes.r.plugins.headers.request.set.Bad Header",
		"routes.r.plugins.headers.request.set.Content-Length",
		"upstreams.api.plugins.headers.response.remove[0]",
	}
	if !slices.Equal(got, want) {
		t.Errorf("problem paths = %q, want %q", got, want)
	}
}
