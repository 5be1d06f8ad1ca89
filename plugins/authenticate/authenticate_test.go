package authenticate_test

import (
	"encoding/json"
	"strings"
	"testing"

	"github.com/sluice-gw/sluice/internal/testkit"
)

const (
	billingKey  = "billing-key-0123456789abcdef"
	billingKey2 = "billing-key-rotated-0123456789"
	crmKey      = "crm-key-0123456789abcdefgh"
)

func gatewayYAML(upstream string) string {
	return `
consumers:
  billing: {keys: ["` + billingKey + `", "` + billingKey2 + `"]}
  crm: {keys: ["` + crmKey + `"]}
upstreams:
  up: {url: "` + upstream + `"}
routes:
  open:
    path: "/open/{p:*}"
    upstream: up
    plugins: {authenticate: {}}
  billing-only:
    path: "/billing/{p:*}"
    upstream: up
    plugins: {authenticate: {consumers: [billing]}}
  public:
    path: "/public/{p:*}"
    upstream: up
    plugins: {authenticate: {anonymous: true}}
  none:
    path: "/none/{p:*}"
    upstream: up
`
}

func TestAuthenticate(t *testing.T) {
	up := testkit.NewUpstream(t, nil)
	gw := testkit.StartGateway(t, gatewayYAML(up.URL))

	cases := []struct {
		name     string
		path     string
		header   []string
		status   int
		code     string
		consumer string // in the access log
	}{
		{"no key", "/open/x", nil, 401, "unauthorized", ""},
		{"unknown key", "/open/x", []string{"X-Api-Key", "not-a-key-0123456789abc"}, 401, "unauthorized", ""},
		{"key of another length", "/open/x", []string{"X-Api-Key", billingKey + "x"}, 401, "unauthorized", ""},
		{"api key header", "/open/x", []string{"X-Api-Key", billingKey}, 200, "", "billing"},
		{"second key", "/open/x", []string{"X-Api-Key", billingKey2}, 200, "", "billing"},
		{"bearer", "/open/x", []string{"Authorization", "Bearer " + crmKey}, 200, "", "crm"},
		{"bearer lower-case scheme", "/open/x", []string{"Authorization", "bearer " + crmKey}, 200, "", "crm"},
		{"basic is not a key", "/open/x", []string{"Authorization", "Basic " + crmKey}, 401, "unauthorized", ""},
		{"allowed consumer", "/billing/x", []string{"X-Api-Key", billingKey}, 200, "", "billing"},
		{"consumer not allowed", "/billing/x", []string{"X-Api-Key", crmKey}, 403, "forbidden", ""},
		{"anonymous", "/public/x", nil, 200, "", "anonymous"},
		{"known consumer on anonymous route", "/public/x", []string{"X-Api-Key", crmKey}, 200, "", "crm"},
		{"wrong key on anonymous route", "/public/x", []string{"X-Api-Key", "not-a-key-0123456789abc"}, 401, "unauthorized", ""},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			before := up.Count()
			resp := testkit.Do(t, "GET", gw.URL+c.path, "", append([]string{"X-Request-Id", "req-" + strings.ReplaceAll(c.name, " ", "-")}, c.header...)...)
			if resp.Status != c.status {
				t.Fatalf("status %d, want %d: %s", resp.Status, c.status, resp.Body)
			}
			if c.code != "" {
				var p struct{ Code string }
				if err := json.Unmarshal(resp.Body, &p); err != nil || p.Code != c.code {
					t.Errorf("code %q (%v), want %q: %s", p.Code, err, c.code, resp.Body)
				}
				if c.status == 401 && resp.Header.Get("WWW-Authenticate") == "" {
					t.Error("401 without WWW-Authenticate")
				}
				if up.Count() != before {
					t.Error("a refused call reached the upstream")
				}
				return
			}
			got := up.Last(t)
			if got.Header.Get("X-Api-Key") != "" || got.Header.Get("Authorization") != "" {
				t.Errorf("the caller's credential was forwarded: %v", got.Header)
			}
			if !strings.Contains(gw.Logs.String(), `"consumer":"`+c.consumer+`"`) {
				t.Errorf("access log does not name consumer %s", c.consumer)
			}
		})
	}

	// A route without authenticate forwards what the caller sent.
	testkit.Do(t, "GET", gw.URL+"/none/x", "", "Authorization", "Bearer caller-own-token")
	if got := up.Last(t).Header.Get("Authorization"); got != "Bearer caller-own-token" {
		t.Errorf("route without authenticate: Authorization %q", got)
	}

	m := gw.Metrics(t)
	for _, w := range []struct {
		route, reason string
		n             float64
	}{
		{"open", "missing", 2}, {"open", "invalid_key", 2}, {"billing-only", "forbidden", 1}, {"public", "invalid_key", 1},
	} {
		if v, _ := m.Value("sluice_auth_failures_total", "route", w.route, "reason", w.reason); v != w.n {
			t.Errorf("sluice_auth_failures_total{route=%s,reason=%s} = %v, want %v", w.route, w.reason, v, w.n)
		}
	}
}

func TestAuthenticateConfigErrors(t *testing.T) {
	t.Parallel()
	base := `
upstreams: {up: {url: "http://127.0.0.1:9"}}
`
	cases := []struct{ name, yaml, path, msg string }{
		{"unknown consumer", base + `consumers: {billing: {keys: ["` + billingKey + `"]}}
routes: {r: {path: "/{p:*}", upstream: up, plugins: {authenticate: {consumers: [biling]}}}}`,
			"routes.r.plugins.authenticate.consumers[0]", `unknown consumer "biling"`},
		{"no consumers at all", base + `routes: {r: {path: "/{p:*}", upstream: up, plugins: {authenticate: {}}}}`,
			"routes.r.plugins.authenticate", "no consumers are defined"},
		{"duplicate", base + `consumers: {billing: {keys: ["` + billingKey + `"]}}
routes: {r: {path: "/{p:*}", upstream: up, plugins: {authenticate: {consumers: [billing, billing]}}}}`,
			"routes.r.plugins.authenticate.consumers[1]", "duplicate"},
		{"unknown key", base + `consumers: {billing: {keys: ["` + billingKey + `"]}}
routes: {r: {path: "/{p:*}", upstream: up, plugins: {authenticate: {anonymus: true}}}}`,
			"routes.r.plugins.authenticate.anonymus", "unknown key"},
		{"anonymous without consumers is fine", base + `routes: {r: {path: "/{p:*}", upstream: up, plugins: {authenticate: {anonymous: true}}}}`, "", ""},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			t.Parallel()
			probs := testkit.ConfigProblems(t, c.yaml)
			testkit.WantOneProblem(t, probs, c.path, c.msg)
		})
	}
}
