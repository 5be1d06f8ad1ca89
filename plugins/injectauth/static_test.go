package injectauth_test

import (
	"encoding/base64"
	"net/url"
	"strings"
	"testing"

	"github.com/sluice-gw/sluice/internal/testkit"
	"github.com/sluice-gw/sluice/plugins/injectauth"
	"github.com/sluice-gw/sluice/proxy"
	"github.com/sluice-gw/sluice/proxy/config"
)

const (
	billingKey = "billing-key-0123456789abcdef"
	crmKey     = "crm-key-0123456789abcdefgh"
	consumers  = `
consumers:
  billing: {keys: ["` + billingKey + `"]}
  crm: {keys: ["` + crmKey + `"]}
`
)

func TestStaticCredentials(t *testing.T) {
	up := testkit.NewUpstream(t, nil)
	gw := testkit.StartGateway(t, consumers+`
upstreams:
  payments:
    url: "`+up.URL+`"
    plugins:
      authenticate: {}
      inject_auth: {type: bearer, token: "sk_live_payments_secret"}
routes:
  bearer: {path: "/bearer/{p:*}", upstream: payments, strip_prefix: "/bearer"}
  header:
    path: "/header/{p:*}"
    upstream: payments
    strip_prefix: "/header"
    plugins: {inject_auth: {type: header, name: X-Provider-Key, value: "provider-header-secret"}}
  query:
    path: "/query/{p:*}"
    upstream: payments
    strip_prefix: "/query"
    plugins: {inject_auth: {type: query, name: api_key, value: "provider query/secret&x"}}
  basic:
    path: "/basic/{p:*}"
    upstream: payments
    strip_prefix: "/basic"
    plugins: {inject_auth: {type: basic, username: acct_42, password: "basic-password-secret"}}
  pool:
    path: "/pool/{p:*}"
    upstream: payments
    strip_prefix: "/pool"
    plugins: {inject_auth: {type: header, name: X-Key, keys: [pool-key-a, pool-key-b, pool-key-c]}}
  per-consumer:
    path: "/pc/{p:*}"
    upstream: payments
    strip_prefix: "/pc"
    plugins:
      inject_auth:
        type: bearer
        token: "shared-token-secret"
        consumers:
          billing: {token: "billing-own-token-secret"}
          crm: {type: header, name: X-Crm-Key, value: "crm-own-secret"}
`)
	call := func(path, key string, extra ...string) testkit.Recorded {
		t.Helper()
		resp := testkit.Do(t, "GET", gw.URL+path, "", append([]string{"X-Api-Key", key}, extra...)...)
		if resp.Status != 200 {
			t.Fatalf("%s: status %d: %s", path, resp.Status, resp.Body)
		}
		return up.Last(t)
	}

	t.Run("bearer", func(t *testing.T) {
		got := call("/bearer/v1/charges", billingKey, "Authorization", "Bearer caller-tries-its-own")
		if v := got.Header.Values("Authorization"); len(v) != 1 || v[0] != "Bearer sk_live_payments_secret" {
			t.Errorf("Authorization = %q", v)
		}
		if got.Header.Get("X-Api-Key") != "" {
			t.Error("consumer key forwarded")
		}
	})
	t.Run("header", func(t *testing.T) {
		got := call("/header/v1/x", billingKey, "X-Provider-Key", "caller-value")
		if v := got.Header.Values("X-Provider-Key"); len(v) != 1 || v[0] != "provider-header-secret" {
			t.Errorf("X-Provider-Key = %q", v)
		}
	})
	t.Run("query", func(t *testing.T) {
		got := call("/query/v1/x?limit=10", billingKey)
		if got.URI != "/v1/x?limit=10&api_key="+url.QueryEscape("provider query/secret&x") {
			t.Errorf("upstream URI = %q", got.URI)
		}
		got = call("/query/v1/x", billingKey)
		u, _ := url.Parse(got.URI)
		if u.Path != "/v1/x" || u.Query().Get("api_key") != "provider query/secret&x" {
			t.Errorf("upstream URI = %q", got.URI)
		}
		if strings.Contains(gw.Logs.String(), "api_key") {
			t.Error("the access log shows the injected query parameter")
		}
	})
	t.Run("basic", func(t *testing.T) {
		got := call("/basic/v1/x", billingKey)
		want := "Basic " + base64.StdEncoding.EncodeToString([]byte("acct_42:basic-password-secret"))
		if v := got.Header.Get("Authorization"); v != want {
			t.Errorf("Authorization = %q, want %q", v, want)
		}
	})
	t.Run("pool round-robin", func(t *testing.T) {
		seen := map[string]int{}
		for range 9 {
			seen[call("/pool/v1/x", billingKey).Header.Get("X-Key")]++
		}
		if seen["pool-key-a"] != 3 || seen["pool-key-b"] != 3 || seen["pool-key-c"] != 3 {
			t.Errorf("keys used: %v, want each of 3 keys 3 times", seen)
		}
	})
	t.Run("per consumer", func(t *testing.T) {
		if v := call("/pc/x", billingKey).Header.Get("Authorization"); v != "Bearer billing-own-token-secret" {
			t.Errorf("billing: Authorization = %q", v)
		}
		got := call("/pc/x", crmKey)
		if got.Header.Get("X-Crm-Key") != "crm-own-secret" || got.Header.Get("Authorization") != "" {
			t.Errorf("crm: %v", got.Header)
		}
	})
}

func TestInjectAuthConfigErrors(t *testing.T) {
	t.Parallel()
	route := func(block string) string {
		return consumers + `
upstreams: {up: {url: "http://127.0.0.1:9"}}
routes: {r: {path: "/{p:*}", upstream: up, plugins: {inject_auth: ` + block + `}}}
`
	}
	const at = "routes.r.plugins.inject_auth"
	cases := []struct{ name, block, path, msg string }{
		{"no type", `{token: x}`, at + ".type", "is required"},
		{"typo", `{type: bearer, token: x, tokn: y}`, at + ".tokn", `did you mean "token"`},
		{"unknown type", `{type: digest}`, at + ".type", `unknown type "digest"`},
		{"bearer without token", `{type: bearer}`, at + ".token", "is required"},
		{"token and keys", `{type: bearer, token: a, keys: [b]}`, at + ".token", "not both"},
		{"field of another type", `{type: bearer, token: a, name: X-Key}`, at + ".name", "does not apply to type bearer"},
		{"field of another type, hmac", `{type: hmac, secret: s, token: a}`, at + ".token", "does not apply to type hmac (it uses secret, algorithm"},
		{"field of another type in an override", `{type: bearer, token: a, consumers: {crm: {type: header, name: X-Crm, value: v, token: b}}}`, at + ".consumers.crm.token", "does not apply to type header"},
		{"typo in an override", `{type: bearer, token: a, consumers: {billing: {tokn: b}}}`, at + ".consumers.billing.tokn", `did you mean "token"`},
		{"typo without a type", `{tokn: a}`, at + ".tokn", `did you mean "token"`},
		{"override of unknown type", `{type: bearer, token: a, consumers: {billing: {type: digest}}}`, at + ".consumers.billing.type", `unknown type "digest"`},
		{"header without name", `{type: header, value: v}`, at + ".name", "is required"},
		{"reserved header", `{type: header, name: Host, value: v}`, at + ".name", "cannot carry"},
		{"basic without password", `{type: basic, username: u}`, at + ".password", "is required"},
		{"empty pool key", `{type: query, name: k, keys: [a, ""]}`, at + ".keys[1]", "is empty"},
		{"oauth2 bad url", `{type: oauth2_client_credentials, token_url: "ftp://x", client_id: a, client_secret: b}`, at + ".token_url", "invalid URL"},
		{"oauth2 url credentials", `{type: oauth2_client_credentials, token_url: "https://app:hunter2pass@auth.test/t", client_id: a, client_secret: b}`, at + ".token_url", "[redacted]@auth.test"},
		{"oauth2 auth style", `{type: oauth2_client_credentials, token_url: "http://127.0.0.1:9/t", client_id: a, client_secret: b, auth_style: digest}`, at + ".auth_style", "unknown style"},
		{"hmac algorithm", `{type: hmac, secret: s, algorithm: md5}`, at + ".algorithm", "unknown algorithm"},
		{"hmac part", `{type: hmac, secret: s, sign: [method, headers]}`, at + ".sign[1]", "unknown part"},
		{"unknown consumer", `{type: bearer, token: a, consumers: {billng: {token: b}}}`, at + ".consumers.billng", "unknown consumer"},
		{"override checked", `{type: bearer, token: a, consumers: {billing: {}}}`, at + ".consumers.billing.token", "is required"},
		{"secret file missing", `{type: bearer, token: "file:/nonexistent/sluice-token"}`, at + ".token", "cannot read secret file"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			t.Parallel()
			testkit.WantOneProblem(t, testkit.ConfigProblems(t, route(c.block)), c.path, c.msg)
		})
	}
}

func TestVariesByConsumer(t *testing.T) {
	t.Parallel()
	for _, c := range []struct {
		block string
		want  bool
	}{
		{`{type: bearer, token: a}`, false},
		{`{type: bearer, token: a, consumers: {billing: {token: b}}}`, true},
	} {
		cfg, err := config.LoadBytes([]byte(consumers + `
upstreams: {up: {url: "http://127.0.0.1:9"}}
routes: {r: {path: "/{p:*}", upstream: up, plugins: {inject_auth: ` + c.block + `}}}
`))
		if err != nil {
			t.Fatal(err)
		}
		ic := injectauth.Factory.NewConfig()
		if err := config.DecodeBlock(cfg.Routes["r"].Plugins["inject_auth"], ic); err != nil {
			t.Fatal(err)
		}
		cs, ok := ic.(proxy.ConsumerScoped)
		if !ok || cs.VariesByConsumer() != c.want {
			t.Errorf("%s: ConsumerScoped %v, VariesByConsumer want %v", c.block, ok, c.want)
		}
	}
}
