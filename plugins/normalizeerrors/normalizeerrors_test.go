package normalizeerrors_test

import (
	"bytes"
	"compress/gzip"
	"encoding/json"
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/sluice-gw/sluice/internal/testkit"
	"github.com/sluice-gw/sluice/proxy"
	"github.com/valyala/fasthttp"
)

// gatewayYAML is one upstream "api" with one route "r" under /api/. plugins
// is the YAML of the upstream's plugins block (indented by 6 spaces).
const gatewayYAML = `
log: {level: error, access_log: false}
upstreams:
  api:
    url: %q
    plugins:
%s
routes:
  r:
    path: "/api/{path:*}"
    upstream: api
    strip_prefix: "/api"
`

// pointers is the normalize_errors block most tests use.
const pointers = `      normalize_errors: {message: "/error/message", code: "/error/code"}`

// start runs an upstream answering with h and a gateway in front of it whose
// upstream carries the given plugins block.
func start(t *testing.T, h fasthttp.RequestHandler, pluginsBlock string) (*testkit.Upstream, *testkit.Gateway) {
	t.Helper()
	up := testkit.NewUpstream(t, h)
	gw := testkit.StartGateway(t, fmt.Sprintf(gatewayYAML, up.URL, pluginsBlock))
	return up, gw
}

// answer is an upstream handler replying status, headers (name, value pairs) and body.
func answer(status int, body string, header ...string) fasthttp.RequestHandler {
	return func(ctx *fasthttp.RequestCtx) {
		for i := 0; i+1 < len(header); i += 2 {
			ctx.Response.Header.Add(header[i], header[i+1])
		}
		ctx.SetStatusCode(status)
		ctx.SetBodyString(body)
	}
}

func gzipped(t *testing.T, s string) []byte {
	t.Helper()
	var b bytes.Buffer
	zw := gzip.NewWriter(&b)
	if _, err := zw.Write([]byte(s)); err != nil {
		t.Fatal(err)
	}
	if err := zw.Close(); err != nil {
		t.Fatal(err)
	}
	return b.Bytes()
}

// problem checks that resp is problem+json and decodes its body.
func problem(t *testing.T, resp *testkit.Response) map[string]any {
	t.Helper()
	if ct := resp.Header.Get("Content-Type"); ct != proxy.ProblemContentType {
		t.Fatalf("Content-Type = %q, want %q (body %s)", ct, proxy.ProblemContentType, resp.Body)
	}
	var m map[string]any
	if err := json.Unmarshal(resp.Body, &m); err != nil {
		t.Fatalf("body is not a JSON object: %v\n%s", err, resp.Body)
	}
	return m
}

// wantMembers compares members of a decoded problem; a nil want means the
// member must be absent. JSON numbers are float64.
func wantMembers(t *testing.T, got map[string]any, want map[string]any) {
	t.Helper()
	for k, w := range want {
		g, has := got[k]
		switch {
		case w == nil && has:
			t.Errorf("%s = %#v, want it absent", k, g)
		case w != nil && !has:
			t.Errorf("%s missing, want %#v", k, w)
		case w != nil && fmt.Sprint(g) != fmt.Sprint(w):
			t.Errorf("%s = %#v, want %#v", k, g, w)
		}
	}
}

func TestUpstreamErrorBecomesProblem(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name    string
		status  int
		body    string
		request []string // header pairs sent by the caller
		want    map[string]any
	}{
		{
			name:   "404 with message and code",
			status: 404,
			body:   `{"error":{"message":"No such repository","code":"repo_missing"}}`,
			want: map[string]any{
				"type": "about:blank", "title": "Not Found", "status": 404.0,
				"code": "upstream_client_error", "detail": "No such repository",
				"upstream": "api", "retryable": false, "upstream_code": "repo_missing",
				"retry_after": nil, "upstream_body": nil,
			},
		},
		{
			name:   "400 with a numeric provider code",
			status: 400,
			body:   `{"error":{"message":"amount must be positive","code":1234}}`,
			want: map[string]any{
				"title": "Bad Request", "status": 400.0, "code": "upstream_client_error",
				"detail": "amount must be positive", "upstream_code": "1234", "retryable": false,
			},
		},
		{
			name:   "422 with an object as message is rendered as compact JSON",
			status: 422,
			body:   `{"error":{"message":{"field":"email"}}}`,
			want: map[string]any{
				"status": 422.0, "code": "upstream_client_error",
				"detail": `{"field":"email"}`, "upstream_code": nil,
			},
		},
		{
			name:   "JSON body without the pointed members gets the default detail",
			status: 409,
			body:   `{"message":"elsewhere"}`,
			want: map[string]any{
				"status": 409.0, "title": "Conflict", "code": "upstream_client_error",
				"detail": "upstream api answered 409 Conflict", "upstream_code": nil,
			},
		},
		{
			name:   "HTML body gets the default detail",
			status: 502,
			body:   "<html><body><h1>502 Bad Gateway</h1></body></html>",
			want: map[string]any{
				"status": 502.0, "title": "Bad Gateway", "code": "upstream_error",
				"detail": "upstream api answered 502 Bad Gateway", "upstream_code": nil, "upstream_body": nil,
			},
		},
		{
			name:   "empty body gets the default detail",
			status: 403,
			body:   "",
			want: map[string]any{
				"status": 403.0, "title": "Forbidden", "code": "upstream_client_error",
				"detail": "upstream api answered 403 Forbidden",
			},
		},
		{
			name:    "caller's request id is echoed",
			status:  404,
			body:    `{"error":{"message":"gone"}}`,
			request: []string{"X-Request-Id", "caller-id-42"},
			want:    map[string]any{"request_id": "caller-id-42", "detail": "gone"},
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			ct := "application/json"
			if strings.HasPrefix(tc.body, "<") {
				ct = "text/html; charset=utf-8"
			}
			up, gw := start(t, answer(tc.status, tc.body, "Content-Type", ct), pointers)
			resp := testkit.Do(t, "GET", gw.URL+"/api/repos/x?api_key=secret&page=2", "", tc.request...)
			if resp.Status != tc.status {
				t.Fatalf("status = %d, want %d (body %s)", resp.Status, tc.status, resp.Body)
			}
			if got := up.Last(t).URI; got != "/repos/x?api_key=secret&page=2" {
				t.Errorf("upstream got %q", got)
			}
			p := problem(t, resp)
			wantMembers(t, p, tc.want)
			// instance is the caller's path: no strip_prefix, no query.
			wantMembers(t, p, map[string]any{"instance": "/api/repos/x"})
			if bytes.Contains(resp.Body, []byte("secret")) {
				t.Errorf("query string leaked into the problem: %s", resp.Body)
			}
			rid := resp.Header.Get("X-Request-Id")
			if rid == "" || p["request_id"] != rid {
				t.Errorf("request_id = %v, X-Request-Id header = %q; want equal and non-empty", p["request_id"], rid)
			}
			if cc := resp.Header.Get("Cache-Control"); cc != "no-store" {
				t.Errorf("Cache-Control = %q, want no-store", cc)
			}
		})
	}
}

func TestProblemMembersAreExactlyTheContract(t *testing.T) {
	t.Parallel()
	_, gw := start(t, answer(404, `{"error":{"message":"m","code":"c"}}`, "Content-Type", "application/json"), pointers)
	p := problem(t, testkit.Do(t, "GET", gw.URL+"/api/x", ""))
	want := []string{"type", "title", "status", "code", "detail", "instance", "request_id", "upstream", "retryable", "upstream_code"}
	if len(p) != len(want) {
		t.Errorf("members = %v, want exactly %v", p, want)
	}
	for _, k := range want {
		if _, ok := p[k]; !ok {
			t.Errorf("member %q missing from %v", k, p)
		}
	}
}

func TestRateLimitedUpstream(t *testing.T) {
	t.Parallel()
	future := time.Now().Add(120 * time.Second).UTC().Format(http.TimeFormat)
	tests := []struct {
		name       string
		retryAfter string // "" sends none
		min, max   float64
	}{
		{"delay seconds kept", "7", 7, 7},
		{"no Retry-After defaults to 1", "", 1, 1},
		{"HTTP-date becomes seconds from now", future, 115, 121},
		{"past HTTP-date defaults to 1", "Mon, 02 Jan 2006 15:04:05 GMT", 1, 1},
		{"unreadable value defaults to 1", "soon", 1, 1},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			h := []string{"Content-Type", "application/json"}
			if tc.retryAfter != "" {
				h = append(h, "Retry-After", tc.retryAfter)
			}
			_, gw := start(t, answer(429, `{"error":{"message":"slow down","code":"rate"}}`, h...), pointers)
			for _, method := range []string{"GET", "POST"} {
				resp := testkit.Do(t, method, gw.URL+"/api/x", "")
				if resp.Status != 429 {
					t.Fatalf("%s: status = %d, want 429", method, resp.Status)
				}
				p := problem(t, resp)
				wantMembers(t, p, map[string]any{
					"code": "upstream_rate_limited", "title": "Too Many Requests", "retryable": true,
					"detail": "slow down", "upstream_code": "rate",
				})
				ra, _ := p["retry_after"].(float64)
				if ra < tc.min || ra > tc.max {
					t.Errorf("%s: retry_after = %v, want in [%v, %v]", method, p["retry_after"], tc.min, tc.max)
				}
				if got := resp.Header.Values("Retry-After"); len(got) != 1 || got[0] != fmt.Sprint(ra) {
					t.Errorf("%s: Retry-After header = %q, want [%q]", method, got, fmt.Sprint(ra))
				}
			}
		})
	}
}

func TestRetryable(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name       string
		status     int
		method     string
		header     []string
		code       string
		retryable  bool
		retryAfter any // nil: absent
	}{
		{"500 GET", 500, "GET", nil, "upstream_error", true, nil},
		{"500 POST", 500, "POST", nil, "upstream_error", false, nil},
		{"500 POST with Idempotency-Key", 500, "POST", []string{"Idempotency-Key", "k-1"}, "upstream_error", true, nil},
		{"500 PUT", 500, "PUT", nil, "upstream_error", true, nil},
		{"500 DELETE", 500, "DELETE", nil, "upstream_error", true, nil},
		{"500 PATCH", 500, "PATCH", nil, "upstream_error", false, nil},
		{"502 GET", 502, "GET", nil, "upstream_error", true, nil},
		{"502 POST", 502, "POST", nil, "upstream_error", false, nil},
		{"504 GET", 504, "GET", nil, "upstream_error", true, nil},
		{"504 POST", 504, "POST", nil, "upstream_error", false, nil},
		{"504 POST with Idempotency-Key", 504, "POST", []string{"Idempotency-Key", "k-2"}, "upstream_error", true, nil},
		{"503 POST", 503, "POST", nil, "upstream_error", true, 1.0},
		{"503 GET", 503, "GET", nil, "upstream_error", true, 1.0},
		{"501 GET", 501, "GET", nil, "upstream_error", false, nil},
		{"505 GET", 505, "GET", nil, "upstream_error", false, nil},
		{"408 POST", 408, "POST", nil, "upstream_client_error", true, nil},
		{"400 GET", 400, "GET", nil, "upstream_client_error", false, nil},
		{"404 GET", 404, "GET", nil, "upstream_client_error", false, nil},
		{"409 PUT", 409, "PUT", nil, "upstream_client_error", false, nil},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			_, gw := start(t, answer(tc.status, `{"error":{"message":"boom"}}`, "Content-Type", "application/json"), pointers)
			resp := testkit.Do(t, tc.method, gw.URL+"/api/x", `{"a":1}`, tc.header...)
			if resp.Status != tc.status {
				t.Fatalf("status = %d, want %d", resp.Status, tc.status)
			}
			wantMembers(t, problem(t, resp), map[string]any{
				"status": float64(tc.status), "code": tc.code, "retryable": tc.retryable,
				"retry_after": tc.retryAfter, "detail": "boom", "upstream": "api",
			})
			wantHeader := ""
			if tc.retryAfter != nil {
				wantHeader = fmt.Sprint(tc.retryAfter)
			}
			if got := resp.Header.Get("Retry-After"); got != wantHeader {
				t.Errorf("Retry-After = %q, want %q", got, wantHeader)
			}
		})
	}
}

func TestCompressedErrorBody(t *testing.T) {
	t.Parallel()
	const doc = `{"error":{"message":"compressed message","code":"gz"}}`
	const keep = `      normalize_errors: {message: "/error/message", code: "/error/code", keep_body: true}`
	tests := []struct {
		name     string
		block    string
		encoding string
		body     func(t *testing.T) []byte
		want     map[string]any
	}{
		{"gzip message extracted", pointers, "gzip", func(t *testing.T) []byte { return gzipped(t, doc) },
			map[string]any{"detail": "compressed message", "upstream_code": "gz", "upstream_body": nil}},
		{"coding names are case-insensitive", pointers, "GZIP", func(t *testing.T) []byte { return gzipped(t, doc) },
			map[string]any{"detail": "compressed message", "upstream_code": "gz"}},
		{"kept body is the decompressed document", keep, "gzip", func(t *testing.T) []byte { return gzipped(t, doc) },
			map[string]any{"detail": "compressed message", "upstream_body": map[string]any{"error": map[string]any{"message": "compressed message", "code": "gz"}}}},
		{"corrupt gzip is neither parsed nor kept", keep, "gzip", func(*testing.T) []byte { return []byte(doc) },
			map[string]any{"detail": "upstream api answered 400 Bad Request", "upstream_code": nil, "upstream_body": nil}},
		{"unknown coding is neither parsed nor kept", keep, "x-custom", func(*testing.T) []byte { return []byte("\x01\x02binary") },
			map[string]any{"detail": "upstream api answered 400 Bad Request", "upstream_body": nil}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			body := tc.body(t)
			h := func(ctx *fasthttp.RequestCtx) {
				ctx.SetStatusCode(400)
				ctx.Response.Header.Set("Content-Type", "application/json")
				ctx.Response.Header.Set("Content-Encoding", tc.encoding)
				ctx.Response.Header.Set("Vary", "Accept-Encoding")
				ctx.SetBody(body)
			}
			_, gw := start(t, h, tc.block)
			resp := testkit.Do(t, "GET", gw.URL+"/api/x", "")
			if resp.Status != 400 {
				t.Fatalf("status = %d", resp.Status)
			}
			for _, name := range []string{"Content-Encoding", "Vary"} {
				if v, ok := resp.Header[name]; ok {
					t.Errorf("%s = %q, want it dropped with the body it described", name, v)
				}
			}
			p := problem(t, resp)
			scalars := map[string]any{}
			for k, w := range tc.want {
				if _, isMap := w.(map[string]any); !isMap {
					scalars[k] = w
					continue
				}
				got, _ := json.Marshal(p[k])
				want, _ := json.Marshal(w)
				if !bytes.Equal(got, want) {
					t.Errorf("%s = %s, want %s", k, got, want)
				}
			}
			wantMembers(t, p, scalars)
		})
	}
}

// A compressed body is decompressed no further than max_parse: a few KiB
// from the provider must not expand into megabytes in the gateway (or in the
// caller's answer with keep_body), and compressed bytes are never passed off
// as the provider's body.
func TestCompressedBodyBeyondMaxParse(t *testing.T) {
	t.Parallel()
	bomb := gzipped(t, string(make([]byte, 1<<20))) // 1 MiB of NULs, ~1 KiB compressed
	h := func(ctx *fasthttp.RequestCtx) {
		ctx.SetStatusCode(500)
		ctx.Response.Header.Set("Content-Encoding", "gzip")
		ctx.SetBody(bomb)
	}
	_, gw := start(t, h, `      normalize_errors: {message: "/error/message", max_parse: 1KiB, keep_body: true}`)
	resp := testkit.Do(t, "GET", gw.URL+"/api/x", "")
	if resp.Status != 500 {
		t.Fatalf("status = %d", resp.Status)
	}
	if len(resp.Body) > 4096 {
		t.Fatalf("problem body is %d bytes: the compressed body was expanded beyond max_parse", len(resp.Body))
	}
	p := problem(t, resp)
	wantMembers(t, p, map[string]any{
		"detail": "upstream api answered 500 Internal Server Error", "code": "upstream_error",
		"upstream_body": nil,
	})
	if resp.Header.Get("Content-Encoding") != "" {
		t.Errorf("Content-Encoding = %q on a problem body", resp.Header.Get("Content-Encoding"))
	}
}

func TestMaxParse(t *testing.T) {
	t.Parallel()
	small := `{"error":{"message":"short"}}`
	big := `{"error":{"message":"long"},"pad":"` + strings.Repeat("p", 200) + `"}`
	tests := []struct {
		name, body, detail string
	}{
		{"body within max_parse is parsed", small, "short"},
		{"body beyond max_parse is not parsed", big, "upstream api answered 400 Bad Request"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			_, gw := start(t, answer(400, tc.body), `      normalize_errors: {message: "/error/message", max_parse: 100}`)
			wantMembers(t, problem(t, testkit.Do(t, "GET", gw.URL+"/api/x", "")), map[string]any{"detail": tc.detail})
		})
	}
}

func TestLongMessageIsTruncatedOnARuneBoundary(t *testing.T) {
	t.Parallel()
	msg := strings.Repeat("é", 2000) // 4000 bytes
	_, gw := start(t, answer(400, `{"error":{"message":"`+msg+`"}}`), pointers)
	p := problem(t, testkit.Do(t, "GET", gw.URL+"/api/x", ""))
	d, _ := p["detail"].(string)
	if !utf8.ValidString(d) {
		t.Fatalf("detail is not valid UTF-8: %q", d)
	}
	if !strings.HasSuffix(d, "…") || !strings.HasPrefix(msg, strings.TrimSuffix(d, "…")) {
		t.Errorf("detail is not a marked prefix of the message: %q", d)
	}
	if n := len(strings.TrimSuffix(d, "…")); n > 1024 || n < 1000 {
		t.Errorf("detail holds %d bytes of the message, want about 1024", n)
	}
}

func TestKeepBody(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name, contentType, body string
		want                    any
	}{
		{"JSON object is embedded as JSON", "application/json", `{"error":{"message":"bad","code":"E1"},"docs":"https://x"}`,
			map[string]any{"error": map[string]any{"message": "bad", "code": "E1"}, "docs": "https://x"}},
		{"JSON array is embedded as JSON", "application/json", `[{"message":"a"},{"message":"b"}]`,
			[]any{map[string]any{"message": "a"}, map[string]any{"message": "b"}}},
		{"HTML is a JSON string", "text/html", `<h1>"Bad" request</h1>`, `<h1>"Bad" request</h1>`},
		{"truncated JSON is a JSON string", "application/json", `{"error":`, `{"error":`},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			_, gw := start(t, answer(400, tc.body, "Content-Type", tc.contentType),
				`      normalize_errors: {message: "/error/message", code: "/error/code", keep_body: true}`)
			resp := testkit.Do(t, "GET", gw.URL+"/api/x", "")
			p := problem(t, resp)
			got, _ := json.Marshal(p["upstream_body"])
			want, _ := json.Marshal(tc.want)
			if !bytes.Equal(got, want) {
				t.Errorf("upstream_body = %s, want %s\nbody: %s", got, want, resp.Body)
			}
		})
	}
}

func TestProviderHeaders(t *testing.T) {
	t.Parallel()
	h := answer(429, `{"error":{"message":"quota"}}`,
		"Content-Type", "application/json",
		"X-RateLimit-Remaining", "0",
		"X-RateLimit-Reset", "1700000000",
		"X-Provider-Request-Id", "prov-123",
		"Retry-After", "30",
		"ETag", `"abc"`,
		"Last-Modified", "Mon, 02 Jan 2006 15:04:05 GMT",
		"Content-Language", "de",
		"Content-Disposition", "attachment",
		"Cache-Control", "public, max-age=600",
		"Expires", "Mon, 02 Jan 2040 15:04:05 GMT",
	)
	_, gw := start(t, h, pointers)
	resp := testkit.Do(t, "GET", gw.URL+"/api/x", "")
	if resp.Status != 429 {
		t.Fatalf("status = %d", resp.Status)
	}
	tests := []struct {
		name, header, want string
		present            bool
	}{
		{"rate-limit state kept", "X-RateLimit-Remaining", "0", true},
		{"rate-limit reset kept", "X-RateLimit-Reset", "1700000000", true},
		{"provider request id kept", "X-Provider-Request-Id", "prov-123", true},
		{"Retry-After from the provider", "Retry-After", "30", true},
		{"Cache-Control replaced", "Cache-Control", "no-store", true},
		{"Content-Type replaced", "Content-Type", proxy.ProblemContentType, true},
		{"ETag dropped", "ETag", "", false},
		{"Last-Modified dropped", "Last-Modified", "", false},
		{"Content-Language dropped", "Content-Language", "", false},
		{"Content-Disposition dropped", "Content-Disposition", "", false},
		{"Expires dropped", "Expires", "", false},
		{"gateway request id", "X-Request-Id", resp.Header.Get("X-Request-Id"), true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			got, has := resp.Header[http.CanonicalHeaderKey(tc.header)]
			if has != tc.present {
				t.Fatalf("%s present = %v (%q), want %v", tc.header, has, got, tc.present)
			}
			if tc.present && (len(got) != 1 || got[0] != tc.want || got[0] == "") {
				t.Errorf("%s = %q, want [%q]", tc.header, got, tc.want)
			}
		})
	}
}

func TestSuccessAndRedirectsPassThrough(t *testing.T) {
	t.Parallel()
	gz := func(t *testing.T) string { return string(gzipped(t, `{"ok":true}`)) }
	tests := []struct {
		name        string
		status      int
		contentType string
		body        func(t *testing.T) string
		header      []string
	}{
		{"200 JSON", 200, "application/json", func(*testing.T) string { return `{"message":"not an error","code":"x"}` }, nil},
		{"201 text", 201, "text/plain; charset=utf-8", func(*testing.T) string { return "created\n" }, nil},
		{"200 gzip stays compressed", 200, "application/json", gz, []string{"Content-Encoding", "gzip", "ETag", `"v1"`}},
		{"302 redirect", 302, "text/html", func(*testing.T) string { return `<a href="/elsewhere">moved</a>` }, []string{"Location", "/elsewhere"}},
		{"204 no content", 204, "", func(*testing.T) string { return "" }, nil},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			body := tc.body(t)
			h := tc.header
			if tc.contentType != "" {
				h = append([]string{"Content-Type", tc.contentType}, h...)
			}
			_, gw := start(t, answer(tc.status, body, h...), `      normalize_errors: {message: "/message", code: "/code", keep_body: true}`)
			resp := testkit.Do(t, "GET", gw.URL+"/api/x", "")
			if resp.Status != tc.status {
				t.Fatalf("status = %d, want %d", resp.Status, tc.status)
			}
			if !bytes.Equal(resp.Body, []byte(body)) {
				t.Errorf("body = %q, want %q", resp.Body, body)
			}
			if got := resp.Header.Get("Content-Type"); got != tc.contentType {
				t.Errorf("Content-Type = %q, want %q", got, tc.contentType)
			}
			for i := 0; i+1 < len(tc.header); i += 2 {
				if got := resp.Header.Get(tc.header[i]); got != tc.header[i+1] {
					t.Errorf("%s = %q, want %q", tc.header[i], got, tc.header[i+1])
				}
			}
			if cc := resp.Header.Get("Cache-Control"); cc != "" {
				t.Errorf("Cache-Control = %q added to a success", cc)
			}
		})
	}
}

func TestEnabledFalseOnRoutePassesProviderErrorsThrough(t *testing.T) {
	t.Parallel()
	const raw = `{"error":{"message":"No such repository","code":"repo_missing"}}`
	up := testkit.NewUpstream(t, answer(404, raw, "Content-Type", "application/vnd.github+json", "ETag", `"e1"`))
	gw := testkit.StartGateway(t, fmt.Sprintf(`
log: {level: error, access_log: false}
plugins:
  normalize_errors: {message: "/error/message", code: "/error/code"}
upstreams:
  api: {url: %q}
routes:
  raw:
    path: "/raw/{path:*}"
    upstream: api
    strip_prefix: "/raw"
    plugins:
      normalize_errors: {enabled: false}
  normalized:
    path: "/api/{path:*}"
    upstream: api
    strip_prefix: "/api"
`, up.URL))

	t.Run("disabled route passes the provider body", func(t *testing.T) {
		t.Parallel()
		resp := testkit.Do(t, "GET", gw.URL+"/raw/repos/x", "")
		if resp.Status != 404 {
			t.Fatalf("status = %d", resp.Status)
		}
		if string(resp.Body) != raw {
			t.Errorf("body = %s, want the provider's %s", resp.Body, raw)
		}
		if ct := resp.Header.Get("Content-Type"); ct != "application/vnd.github+json" {
			t.Errorf("Content-Type = %q", ct)
		}
		if et := resp.Header.Get("ETag"); et != `"e1"` {
			t.Errorf("ETag = %q, want the provider's", et)
		}
		if resp.Header.Get("X-Request-Id") == "" {
			t.Error("no X-Request-Id")
		}
	})
	t.Run("other route inherits the top-level block", func(t *testing.T) {
		t.Parallel()
		resp := testkit.Do(t, "GET", gw.URL+"/api/repos/x", "")
		if resp.Status != 404 {
			t.Fatalf("status = %d", resp.Status)
		}
		wantMembers(t, problem(t, resp), map[string]any{
			"code": "upstream_client_error", "detail": "No such repository", "upstream_code": "repo_missing",
		})
	})
}

// The most specific block wins whole: a route block without pointers does not
// inherit the upstream block's pointers.
func TestRouteBlockReplacesUpstreamBlock(t *testing.T) {
	t.Parallel()
	up := testkit.NewUpstream(t, answer(400, `{"error":{"message":"m","code":"c"}}`))
	gw := testkit.StartGateway(t, fmt.Sprintf(`
log: {level: error, access_log: false}
upstreams:
  api:
    url: %q
    plugins:
      normalize_errors: {message: "/error/message", code: "/error/code"}
routes:
  inherit:
    path: "/a/{path:*}"
    upstream: api
  own:
    path: "/b/{path:*}"
    upstream: api
    plugins:
      normalize_errors: {keep_body: true}
`, up.URL))
	tests := []struct {
		name, path string
		want       map[string]any
	}{
		{"inherited upstream block", "/a/x", map[string]any{"detail": "m", "upstream_code": "c", "upstream_body": nil}},
		{"route block replaces it whole", "/b/x", map[string]any{"detail": "upstream api answered 400 Bad Request", "upstream_code": nil, "upstream_body": map[string]any{"error": map[string]any{"message": "m", "code": "c"}}}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			wantMembers(t, problem(t, testkit.Do(t, "GET", gw.URL+tc.path, "")), tc.want)
		})
	}
}

func TestHeadRequestKeepsStatusWithoutBody(t *testing.T) {
	t.Parallel()
	for _, status := range []int{404, 503} {
		t.Run(fmt.Sprint(status), func(t *testing.T) {
			t.Parallel()
			up, gw := start(t, answer(status, `{"error":{"message":"nope"}}`, "Content-Type", "application/json"), pointers)
			resp := testkit.Do(t, "HEAD", gw.URL+"/api/x", "")
			if resp.Status != status {
				t.Fatalf("status = %d, want %d", resp.Status, status)
			}
			if len(resp.Body) != 0 {
				t.Errorf("HEAD answer has a body: %q", resp.Body)
			}
			if got := up.Last(t).Method; got != "HEAD" {
				t.Errorf("upstream saw %s", got)
			}
			if resp.Header.Get("X-Request-Id") == "" {
				t.Error("no X-Request-Id")
			}
			// The connection is still usable: the next request gets a proper answer.
			p := problem(t, testkit.Do(t, "GET", gw.URL+"/api/x", ""))
			wantMembers(t, p, map[string]any{"status": float64(status), "detail": "nope"})
		})
	}
}

func TestGatewayErrorsAreProblemsWithOrWithoutThePlugin(t *testing.T) {
	t.Parallel()
	gw := testkit.StartGateway(t, fmt.Sprintf(`
log: {level: error, access_log: false}
plugins:
  normalize_errors: {message: "/error/message"}
upstreams:
  gone: {url: "http://%s", connect_timeout: 1s}
routes:
  on:
    path: "/on/{path:*}"
    upstream: gone
  off:
    path: "/off/{path:*}"
    upstream: gone
    plugins:
      normalize_errors: {enabled: false}
`, testkit.ClosedAddr(t)))
	tests := []struct {
		name, method, path string
	}{
		{"plugin on GET", "GET", "/on/x"},
		{"plugin on POST", "POST", "/on/x"},
		{"plugin off GET", "GET", "/off/x"},
		{"plugin off POST", "POST", "/off/x"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			resp := testkit.Do(t, tc.method, gw.URL+tc.path+"?token=secret", "{}")
			if resp.Status != 502 {
				t.Fatalf("status = %d, want 502 (body %s)", resp.Status, resp.Body)
			}
			p := problem(t, resp)
			wantMembers(t, p, map[string]any{
				"type": "about:blank", "title": "Bad Gateway", "status": 502.0,
				"code": "upstream_unreachable", "upstream": "gone", "instance": tc.path,
				"request_id": resp.Header.Get("X-Request-Id"),
				// nothing reached the provider: safe to retry whatever the method
				"retryable": true,
			})
		})
	}
}

func TestErrorsMetric(t *testing.T) {
	t.Parallel()
	up := testkit.NewUpstream(t, func(ctx *fasthttp.RequestCtx) {
		switch string(ctx.Path()) {
		case "/ok":
			ctx.SetBodyString("ok")
		case "/limited":
			ctx.SetStatusCode(429)
		default:
			ctx.SetStatusCode(404)
		}
	})
	gw := testkit.StartGateway(t, fmt.Sprintf(`
log: {level: error, access_log: false}
plugins:
  normalize_errors: {}
upstreams:
  api: {url: %q}
routes:
  r:
    path: "/r/{path:*}"
    upstream: api
    strip_prefix: "/r"
  raw:
    path: "/raw/{path:*}"
    upstream: api
    strip_prefix: "/raw"
    plugins:
      normalize_errors: {enabled: false}
`, up.URL))
	for _, p := range []string{"/r/missing", "/r/missing", "/r/limited", "/r/ok", "/raw/missing"} {
		testkit.Do(t, "GET", gw.URL+p, "")
	}
	m := gw.Metrics(t)
	tests := []struct {
		name   string
		labels []string
		want   float64
		found  bool
	}{
		{"client errors", []string{"route", "r", "code", "upstream_client_error"}, 2, true},
		{"rate limited", []string{"route", "r", "code", "upstream_rate_limited"}, 1, true},
		{"no upstream_error", []string{"route", "r", "code", "upstream_error"}, 0, false},
		{"raw errors are not counted", []string{"route", "raw"}, 0, false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			v, found := m.Value("sluice_errors_total", tc.labels...)
			if v != tc.want || found != tc.found {
				t.Errorf("sluice_errors_total%v = %v (found %v), want %v (found %v)", tc.labels, v, found, tc.want, tc.found)
			}
		})
	}
}

func TestConfigErrors(t *testing.T) {
	t.Parallel()
	const base = `
upstreams:
  api:
    url: "http://127.0.0.1:1"
    plugins:
      normalize_errors: %s
routes:
  r:
    path: "/api/{path:*}"
    upstream: api
    plugins:
      normalize_errors: %s
`
	tests := []struct {
		name          string
		upstream      string
		route         string
		path, message string // "" path: valid
	}{
		{"valid", `{}`, `{message: "/error/message", code: "/errors/0/code", keep_body: true, max_parse: 64KiB}`, "", ""},
		{"message without leading slash", `{}`, `{message: "error"}`, "routes.r.plugins.normalize_errors.message", "must start with '/'"},
		{"code without leading slash", `{}`, `{code: "error/code"}`, "routes.r.plugins.normalize_errors.code", "must start with '/'"},
		{"bad escape in pointer", `{}`, `{message: "/a~2b"}`, "routes.r.plugins.normalize_errors.message", "'~' must be followed by 0 or 1"},
		{"unknown key", `{}`, `{mesage: "/message"}`, "routes.r.plugins.normalize_errors.mesage", "unknown key"},
		{"zero max_parse", `{}`, `{max_parse: 0}`, "routes.r.plugins.normalize_errors.max_parse", "must be positive"},
		{"bad size", `{}`, `{max_parse: lots}`, "routes.r.plugins.normalize_errors.max_parse", "size"},
		{"bad keep_body", `{}`, `{keep_body: maybe}`, "routes.r.plugins.normalize_errors.keep_body", "true or false"},
		{"bad enabled", `{}`, `{enabled: maybe}`, "routes.r.plugins.normalize_errors.enabled", "true or false"},
		{"upstream level", `{message: "message"}`, `{enabled: false}`, "upstreams.api.plugins.normalize_errors.message", "must start with '/'"},
		{"disabled block is not checked", `{}`, `{enabled: false, message: "nope"}`, "", ""},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			probs := testkit.ConfigProblems(t, fmt.Sprintf(base, tc.upstream, tc.route))
			testkit.WantOneProblem(t, probs, tc.path, tc.message)
		})
	}
}

func TestTopLevelConfigErrorPath(t *testing.T) {
	t.Parallel()
	probs := testkit.ConfigProblems(t, `
plugins:
  normalize_errors: {message: "error/message"}
upstreams:
  api: {url: "http://127.0.0.1:1"}
routes:
  r: {path: "/api/{path:*}", upstream: api}
`)
	if len(probs) != 1 || probs[0].Path != "plugins.normalize_errors.message" {
		t.Fatalf("problems = %v, want one at plugins.normalize_errors.message", probs)
	}
}
