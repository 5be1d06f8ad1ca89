package normalizeerrors_test

import (
	"encoding/json"
	"fmt"
	"strings"
	"testing"

	"github.com/sluice-gw/sluice/internal/testkit"
	"github.com/valyala/fasthttp"
)

// profileYAML: an upstream with a profile (and optional extra upstream
// plugin blocks), a consumer, authenticate and normalize_errors: {} at the
// top level as in the shipped example.
func profileYAML(url, profile, upstreamPlugins, extra string) string {
	return fmt.Sprintf(`
log: {level: error, access_log: false}
consumers: {svc: {keys: ["svc-consumer-key-0001"]}}
plugins:
  authenticate: {}
  normalize_errors: {}
%s
upstreams:
  api:
    url: %q
    profile: %s
    plugins: {%s}
routes:
  r: {path: "/{p:*}", upstream: api}
`, extra, url, profile, upstreamPlugins)
}

const key = "svc-consumer-key-0001"

// Each built-in profile renders Sluice's 401 in its provider's shape, and
// passes the provider's own error through; Accept: application/problem+json
// gets problem+json for both.
func TestProfilesSpeakTheProvidersDialect(t *testing.T) {
	t.Parallel()
	providerBody := map[string]string{
		"stripe": `{"error":{"type":"invalid_request_error","message":"Missing required param: amount."}}`,
		"github": `{"message":"Not Found","documentation_url":"https://docs.github.com/rest"}`,
		"openai": `{"error":{"message":"bad","type":"invalid_request_error","param":null,"code":null}}`,
		"slack":  `{"ok":false,"error":"channel_not_found"}`,
		"twilio": `{"code":21211,"message":"Invalid 'To' Phone Number","more_info":"https://www.twilio.com/docs/errors/21211","status":400}`,
	}
	check401 := map[string]func(m map[string]any) bool{
		"stripe": func(m map[string]any) bool {
			e, _ := m["error"].(map[string]any)
			return e["type"] == "invalid_request_error" && e["code"] == "unauthorized" && e["message"] != ""
		},
		"github": func(m map[string]any) bool { return m["message"] != "" && m["status"] == "401" },
		"openai": func(m map[string]any) bool {
			e, _ := m["error"].(map[string]any)
			return e["type"] == "invalid_request_error" && e["code"] == "unauthorized"
		},
		"slack":  func(m map[string]any) bool { return m["ok"] == false && m["error"] == "not_authed" },
		"twilio": func(m map[string]any) bool { return m["code"] == float64(20003) && m["status"] == float64(401) },
	}
	for profile, body := range providerBody {
		up := testkit.NewUpstream(t, answer(400, body, "Content-Type", "application/json"))
		gw := testkit.StartGateway(t, profileYAML(up.URL, profile, "", ""))

		resp := testkit.Do(t, "GET", gw.URL+"/x", "", "Authorization", "Bearer wrong-key-000000000")
		var m map[string]any
		if resp.Status != 401 || json.Unmarshal(resp.Body, &m) != nil || !check401[profile](m) {
			t.Errorf("%s: Sluice's 401 is %d %s %s, not in the provider's dialect", profile, resp.Status, resp.Header.Get("Content-Type"), resp.Body)
		}
		if strings.Contains(resp.Header.Get("Content-Type"), "problem") {
			t.Errorf("%s: 401 Content-Type %q", profile, resp.Header.Get("Content-Type"))
		}
		resp = testkit.Do(t, "GET", gw.URL+"/x", "", "Authorization", "Bearer "+key)
		if resp.Status != 400 || string(resp.Body) != body {
			t.Errorf("%s: provider's 400 became %d %s, want it unchanged", profile, resp.Status, resp.Body)
		}
		// problem+json on request, for both.
		testkit.WantProblem(t, testkit.Do(t, "GET", gw.URL+"/x", "", "Authorization", "Bearer wrong-key-000000000",
			"Accept", "application/json, application/problem+json"), 401, "unauthorized")
		testkit.WantProblem(t, testkit.Do(t, "GET", gw.URL+"/x", "", "Authorization", "Bearer "+key,
			"Accept", "application/problem+json"), 400, "upstream_client_error")
		// q=0 refuses it.
		if r := testkit.Do(t, "GET", gw.URL+"/x", "", "Authorization", "Bearer wrong-key-000000000",
			"Accept", "application/problem+json;q=0, */*"); strings.Contains(r.Header.Get("Content-Type"), "problem") {
			t.Errorf("%s: q=0 still got problem+json", profile)
		}
	}
}

// Stripe's retry hint follows Sluice's retryable flag.
func TestStripeShouldRetry(t *testing.T) {
	t.Parallel()
	up := testkit.NewUpstream(t, answer(200, `{}`))
	gw := testkit.StartGateway(t, profileYAML(up.URL, "stripe", `rate_limit: {rate: 1, per: 1m, key: consumer}`, ""))
	if r := testkit.Do(t, "GET", gw.URL+"/x", "", "Authorization", "Bearer wrong-key-000000000"); r.Header.Get("Stripe-Should-Retry") != "false" {
		t.Errorf("401: Stripe-Should-Retry %q, want false", r.Header.Get("Stripe-Should-Retry"))
	}
	testkit.Do(t, "GET", gw.URL+"/x", "", "Authorization", "Bearer "+key)
	r := testkit.Do(t, "GET", gw.URL+"/x", "", "Authorization", "Bearer "+key)
	if r.Status != 429 || r.Header.Get("Stripe-Should-Retry") != "true" || r.Header.Get("Retry-After") == "" {
		t.Errorf("429: %d Stripe-Should-Retry %q Retry-After %q", r.Status, r.Header.Get("Stripe-Should-Retry"), r.Header.Get("Retry-After"))
	}
	if v, _ := gw.Metrics(t).Value("sluice_errors_total", "route", "r", "code", "rate_limited"); v != 1 {
		t.Errorf("a dialect error is not counted in sluice_errors_total: %v", v)
	}
}

// The upstream's own block overrides the profile key by key; a profile
// declared in the file is used like a built-in one.
func TestProfileLayering(t *testing.T) {
	t.Parallel()
	up := testkit.NewUpstream(t, answer(400, `{"error":{"message":"nope"}}`))
	gw := testkit.StartGateway(t, profileYAML(up.URL, "stripe", `normalize_errors: {upstream_errors: problem}`, ""))
	p := testkit.WantProblem(t, testkit.Do(t, "GET", gw.URL+"/x", "", "Authorization", "Bearer "+key), 400, "upstream_client_error")
	if p["detail"] != "nope" {
		t.Errorf("detail %v: the profile's message pointer should still apply", p["detail"])
	}
	// gateway errors still in Stripe's dialect (the profile's key).
	if r := testkit.Do(t, "GET", gw.URL+"/x", ""); !strings.Contains(string(r.Body), `"type":"invalid_request_error"`) {
		t.Errorf("401 lost the profile's dialect: %s", r.Body)
	}

	own := `
profiles:
  acme:
    description: "ACME's API"
    plugins:
      normalize_errors:
        gateway_errors: dialect
        dialect:
          content_type: "application/vnd.acme+json"
          body: '{"fault":{{json .ProviderCode}},"why":{{json .Detail}}}'
          headers: {X-Acme-Retry: "{{if .Retryable}}yes{{end}}"}
`
	gw2 := testkit.StartGateway(t, profileYAML(up.URL, "acme", "", own))
	r := testkit.Do(t, "GET", gw2.URL+"/x", "")
	var m map[string]any
	if r.Status != 401 || r.Header.Get("Content-Type") != "application/vnd.acme+json" || json.Unmarshal(r.Body, &m) != nil || m["fault"] != "unauthorized" {
		t.Errorf("user profile: %d %s %s", r.Status, r.Header.Get("Content-Type"), r.Body)
	}
	if _, set := r.Header["X-Acme-Retry"]; set {
		t.Errorf("a header that renders empty was set")
	}
}

func TestProfileConfigErrors(t *testing.T) {
	t.Parallel()
	up := "http://127.0.0.1:1"
	testkit.WantOneProblem(t, testkit.ConfigProblems(t, profileYAML(up, "strpe", "", "")),
		"upstreams.api.profile", `unknown profile "strpe"; did you mean "stripe"?`)
	bad := func(body string) string {
		return fmt.Sprintf(`
profiles:
  acme:
    plugins:
      normalize_errors:
        gateway_errors: dialect
        dialect: {body: '%s'}
`, body)
	}
	for body, want := range map[string][2]string{
		`{"fault":{{json .Nope}}}`: {"profiles.acme.plugins.normalize_errors.dialect.body", "does not render"},
		`{"fault":{{.Code}}}`:      {"profiles.acme.plugins.normalize_errors.dialect.body", "renders invalid JSON"},
		`{"fault":{{json .Code}`:   {"profiles.acme.plugins.normalize_errors.dialect.body", "does not parse"},
	} {
		testkit.WantOneProblem(t, testkit.ConfigProblems(t, profileYAML(up, "acme", "", bad(body))), want[0], want[1])
	}
	testkit.WantOneProblem(t, testkit.ConfigProblems(t, profileYAML(up, "acme", "", `
profiles:
  acme:
    plugins: {normalize_errors: {gateway_errors: dialect, dialect: {body: "{}", types: {unauthorised: x}}}}
`)), "profiles.acme.plugins.normalize_errors.dialect.types.unauthorised", `did you mean "unauthorized"`)
	testkit.WantOneProblem(t, testkit.ConfigProblems(t, profileYAML(up, "stripe", "", `
profiles:
  acme:
    defaults: {nope: {}}
`)), "profiles.acme.defaults.nope", "unknown plugin")
	testkit.WantOneProblem(t, testkit.ConfigProblems(t, profileYAML(up, "stripe", `normalize_errors: {gateway_errors: dialect, dialect: null}`, "")),
		"upstreams.api.plugins.normalize_errors.dialect", "required")
}

// The built-in profiles load and every one of their blocks compiles.
func TestBuiltinProfilesCompile(t *testing.T) {
	t.Parallel()
	for _, p := range []string{"stripe", "github", "openai", "slack", "twilio"} {
		y := profileYAML("http://127.0.0.1:1", p, `inject_auth: {token: "tok-123456"}, idempotency: {}, retry: {}`, "")
		if p == "twilio" {
			y = profileYAML("http://127.0.0.1:1", p, `inject_auth: {username: AC1, password: "tok-123456"}, idempotency: {}, retry: {}`, "")
		}
		if probs := testkit.ConfigProblems(t, y); len(probs) > 0 {
			t.Errorf("profile %s: %v", p, probs)
		}
	}
}

var _ = fasthttp.StatusOK
