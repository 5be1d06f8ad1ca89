package injectauth_test

import (
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"
	"github.com/sluice-gw/sluice/internal/testkit"
	"github.com/valyala/fasthttp"
)

// TestNoSecretLeaks configures every kind of secret, drives successful and
// failing calls, and then looks for each secret value in everything a caller
// or an operator can see: logs (at debug level), /metrics, every answer body
// and header, /admin/config and /admin/upstreams. Only the upstream request
// may carry them.
func TestNoSecretLeaks(t *testing.T) {
	secrets := map[string]string{
		"consumer key billing":  "leak-consumer-billing-0123456789",
		"consumer key crm":      "leak-consumer-crm-0123456789abc",
		"bearer token (env)":    "leak-bearer-sk_live_0123456789",
		"header value":          "leak-header-value-0123456789",
		"query value":           "leak-query-value-0123456789",
		"basic password":        "leak-basic-password-0123456789",
		"oauth client secret":   "leak-oauth-client-secret-0123",
		"hmac secret":           "leak-hmac-secret-0123456789",
		"admin token":           "leak-admin-token-0123456789",
		"file secret":           "leak-file-secret-0123456789",
		"per-consumer token":    "leak-per-consumer-token-01234",
		"oauth down secret":     "leak-oauth-down-secret-012345",
		"pool key":              "leak-pool-key-0123456789abcd",
		"jwt hs256 secret":      "leak-jwt-hs256-secret-0123456789",
		"oauth issued token":    "tok-1", // issued by the token endpoint: short, checked in bodies only
		"basic header (base64)": "",      // filled below
	}
	delete(secrets, "oauth issued token")
	jwtTok, err := jwt.NewWithClaims(jwt.SigningMethodHS256, jwt.MapClaims{"sub": "billing", "exp": time.Now().Add(time.Hour).Unix()}).
		SignedString([]byte(secrets["jwt hs256 secret"]))
	if err != nil {
		t.Fatal(err)
	}
	secrets["caller's jwt"] = jwtTok
	delete(secrets, "basic header (base64)")
	t.Setenv("LEAK_BEARER", secrets["bearer token (env)"])
	dir := t.TempDir()
	file := filepath.Join(dir, "pool-secret")
	testkit.WriteFile(t, file, secrets["file secret"]+"\n")

	te := newTokenEndpoint(t, 0)
	down := newTokenEndpoint(t, 0)
	down.fail.Store(true) // its error body echoes the client secret it was sent
	up := testkit.NewUpstream(t, func(ctx *fasthttp.RequestCtx) {
		if strings.HasSuffix(string(ctx.Path()), "/fail") {
			ctx.SetStatusCode(500)
			ctx.SetBodyString(`{"message":"internal provider error"}`)
			return
		}
		ctx.SetBodyString("ok")
	})
	gw := testkit.StartGateway(t, `
log: {level: debug}
admin: {token: "`+secrets["admin token"]+`"}
consumers:
  billing: {keys: ["`+secrets["consumer key billing"]+`"]}
  crm: {keys: ["`+secrets["consumer key crm"]+`"]}
plugins:
  normalize_errors: {message: "/message"}
  authenticate: {jwt: {secret: "`+secrets["jwt hs256 secret"]+`"}}
upstreams:
  up: {url: "`+up.URL+`"}
  oauth-up:
    url: "`+up.URL+`"
    plugins:
      inject_auth: {type: oauth2_client_credentials, token_url: "`+te.URL+`", client_id: app, client_secret: "`+secrets["oauth client secret"]+`"}
  oauth-down:
    url: "`+up.URL+`"
    plugins:
      inject_auth: {type: oauth2_client_credentials, token_url: "`+down.URL+`", client_id: app, client_secret: "`+secrets["oauth down secret"]+`", auth_style: body}
routes:
  bearer:
    path: "/bearer/{p:*}"
    upstream: up
    plugins:
      inject_auth:
        type: bearer
        token: "${LEAK_BEARER}"
        consumers: {crm: {token: "`+secrets["per-consumer token"]+`"}}
  header: {path: "/header/{p:*}", upstream: up, plugins: {inject_auth: {type: header, name: X-Key, value: "`+secrets["header value"]+`"}}}
  query: {path: "/query/{p:*}", upstream: up, plugins: {inject_auth: {type: query, name: key, value: "`+secrets["query value"]+`"}}}
  basic: {path: "/basic/{p:*}", upstream: up, plugins: {inject_auth: {type: basic, username: u, password: "`+secrets["basic password"]+`"}}}
  pool: {path: "/pool/{p:*}", upstream: up, plugins: {inject_auth: {type: header, name: X-Key, keys: ["file:`+file+`", "`+secrets["pool key"]+`"]}}}
  hmac: {path: "/hmac/{p:*}", upstream: up, plugins: {inject_auth: {type: hmac, secret: "`+secrets["hmac secret"]+`"}}}
  oauth: {path: "/oauth/{p:*}", upstream: oauth-up}
  oauth-down: {path: "/down/{p:*}", upstream: oauth-down}
`)

	var seen strings.Builder // everything a caller or operator gets to see
	call := func(method, path, body string, header ...string) int {
		r := testkit.Do(t, method, gw.URL+path, body, header...)
		seen.WriteString(string(r.Body))
		for k, vs := range r.Header {
			seen.WriteString(k + ": " + strings.Join(vs, ",") + "\n")
		}
		return r.Status
	}
	billing := []string{"X-Api-Key", secrets["consumer key billing"]}
	crm := []string{"Authorization", "Bearer " + secrets["consumer key crm"]}
	for _, c := range []struct {
		method, path string
		header       []string
		status       int
	}{
		{"GET", "/bearer/x?q=1", billing, 200},
		{"GET", "/bearer/x", crm, 200},
		{"GET", "/header/x", billing, 200},
		{"GET", "/query/x?page=2", billing, 200},
		{"GET", "/basic/x", crm, 200},
		{"GET", "/pool/x", billing, 200},
		{"GET", "/pool/x", billing, 200},
		{"POST", "/hmac/x", billing, 200},
		{"GET", "/oauth/x", billing, 200},
		{"GET", "/bearer/fail", billing, 500},
		{"GET", "/query/fail?x=1", billing, 500},
		{"GET", "/oauth/fail", crm, 500},
		{"GET", "/down/x", billing, 502},
		{"GET", "/down/x", billing, 502},
		{"GET", "/bearer/x", []string{"X-Api-Key", secrets["consumer key billing"] + "x"}, 401},
		{"GET", "/bearer/x", []string{"Authorization", "Bearer " + secrets["consumer key crm"][:20]}, 401},
		{"GET", "/bearer/x", nil, 401},
		{"GET", "/header/x", []string{"Authorization", "Bearer " + jwtTok}, 200},
		{"GET", "/bearer/x", []string{"Authorization", "Bearer eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJiaWxsaW5nIn0.bm90LWEtc2lnbmF0dXJl"}, 401},
	} {
		if got := call(c.method, c.path, `{"a":1}`, c.header...); got != c.status {
			t.Errorf("%s %s: status %d, want %d", c.method, c.path, got, c.status)
		}
	}
	// The secrets did reach the provider (the test would prove nothing otherwise).
	var upstreamSaw strings.Builder
	for _, r := range up.Requests() {
		upstreamSaw.WriteString(r.URI + " " + r.Header.Get("Authorization") + " " + r.Header.Get("X-Key") + "\n")
	}
	for _, name := range []string{"bearer token (env)", "per-consumer token", "header value", "query value", "file secret", "pool key"} {
		if !strings.Contains(upstreamSaw.String(), secrets[name]) {
			t.Errorf("the upstream never received the %s", name)
		}
	}

	// Admin: a wrong token, the config, the upstreams, the metrics.
	r := testkit.Do(t, "POST", gw.AdminURL+"/admin/reload", "", "Authorization", "Bearer "+secrets["consumer key billing"])
	seen.WriteString(string(r.Body))
	if r.Status != 401 {
		t.Errorf("reload with a wrong token: %d", r.Status)
	}
	for _, path := range []string{"/admin/config", "/admin/upstreams", "/metrics"} {
		r := testkit.Do(t, "GET", gw.AdminURL+path, "", "Authorization", "Bearer "+secrets["admin token"])
		if r.Status != 200 {
			t.Fatalf("%s: %d", path, r.Status)
		}
		seen.WriteString(string(r.Body))
	}
	cfg := string(testkit.Do(t, "GET", gw.AdminURL+"/admin/config", "", "Authorization", "Bearer "+secrets["admin token"]).Body)
	if !strings.Contains(cfg, `"consumers"`) || !strings.Contains(cfg, "[redacted]") {
		t.Errorf("/admin/config does not show the redacted secrets:\n%s", cfg)
	}
	seen.WriteString(gw.Logs.String())

	all := seen.String()
	for name, v := range secrets {
		if strings.Contains(all, v) {
			i := strings.Index(all, v)
			t.Errorf("the %s appears outside the upstream request: ...%s...", name, all[max(0, i-120):min(len(all), i+len(v)+40)])
		}
	}
	if strings.Contains(all, "dTpsZWFr") { // base64 of "u:leak": the basic header
		t.Error("the basic Authorization header appears outside the upstream request")
	}
	if !strings.Contains(all, "upstream_auth_failed") || !strings.Contains(gw.Logs.String(), "token fetch failed") {
		t.Error("the failing calls were not seen or not logged: the search above proves little")
	}
}
