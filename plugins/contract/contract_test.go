package contract_test

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/sluice-gw/sluice/internal/testkit"
	"github.com/valyala/fasthttp"
)

func TestMain(m *testing.M) { testkit.RunWithoutLeaks(m) }

// spec is the trimmed Resend document (testdata/README.md).
func spec(t testing.TB) string {
	t.Helper()
	abs, err := filepath.Abs("testdata/resend-emails.yaml")
	if err != nil {
		t.Fatal(err)
	}
	return abs
}

// provider is a real upstream that answers like Resend's /emails API;
// answer can be swapped to make it drift.
type provider struct {
	*testkit.Upstream
	answer atomic.Pointer[func(ctx *fasthttp.RequestCtx)]
}

func newProvider(t *testing.T) *provider {
	p := &provider{}
	ok := func(ctx *fasthttp.RequestCtx) {
		ctx.SetContentType("application/json")
		switch {
		case string(ctx.Method()) == "POST":
			ctx.SetBodyString(`{"id":"49a3999c-0ce1-4ea6-ab68-afcd6dc2e794"}`)
		default:
			ctx.SetBodyString(`{"object":"email","id":"4ef9a417","to":["a@example.com"],"from":"b@example.com",` +
				`"created_at":"2023-04-03T22:13:42.674981+00:00","subject":"Hello","html":"<p>hi</p>","text":"hi",` +
				`"bcc":[],"cc":[],"reply_to":["c@example.com"],"last_event":"delivered"}`)
		}
	}
	p.answer.Store(&ok)
	p.Upstream = testkit.NewUpstream(t, func(ctx *fasthttp.RequestCtx) { (*p.answer.Load())(ctx) })
	return p
}

func (p *provider) set(f func(ctx *fasthttp.RequestCtx)) { p.answer.Store(&f) }

func gateway(t *testing.T, up *provider, block string) *testkit.Gateway {
	t.Helper()
	return testkit.StartGateway(t, fmt.Sprintf(`
upstreams:
  resend:
    url: "%s"
    plugins:
      contract: %s
routes:
  mail: {path: "/resend/{p:*}", upstream: resend, strip_prefix: /resend}
  plain: {path: "/plain/{p:*}", upstream: resend, strip_prefix: /plain, plugins: {contract: {enabled: false}}}
`, up.URL, block))
}

func metric(t *testing.T, gw *testkit.Gateway, name string, labels ...string) float64 {
	t.Helper()
	v, _ := gw.Metrics(t).Value(name, labels...)
	return v
}

const validEmail = `{"from":"Acme <onboarding@resend.dev>","to":["delivered@resend.dev"],"subject":"hello world","html":"<p>it works!</p>"}`

func TestEnforceRejectsWithoutReachingTheProvider(t *testing.T) {
	t.Parallel()
	up := newProvider(t)
	gw := gateway(t, up, fmt.Sprintf(`{spec: "file:%s"}`, spec(t)))

	// Every violation listed, each with its pointer: "to" of the wrong
	// type, "subject" missing, a tag that is not an object.
	bad := `{"from":"a@example.com","to":42,"tags":["x"]}`
	r := testkit.Do(t, "POST", gw.URL+"/resend/emails", bad, "Content-Type", "application/json")
	body := testkit.WantProblem(t, r, 400, "contract_violation")
	probs, _ := body["problems"].([]any)
	got := map[string]string{}
	for _, p := range probs {
		m := p.(map[string]any)
		got[m["pointer"].(string)] = m["kind"].(string)
	}
	for _, ptr := range []string{"/to", "/subject", "/tags/0"} {
		if got[ptr] != "body" {
			t.Errorf("problems = %v: want a body violation at %s", probs, ptr)
		}
	}
	if up.Count() != 0 {
		t.Fatalf("the provider was called %d times for an invalid call", up.Count())
	}

	// Wrong content type, unknown operation, bad path parameter placement.
	cases := []struct {
		method, path, body, ctype, kind, pointer string
	}{
		{"POST", "/resend/emails", `from=a`, "application/x-www-form-urlencoded", "content_type", "/header/Content-Type"},
		{"DELETE", "/resend/emails", "", "", "unknown_operation", ""},
		{"GET", "/resend/nothing-here", "", "", "unknown_operation", ""},
		{"GET", "/resend/emails?limit=abc", "", "", "parameter", "/query/limit"},
	}
	for _, c := range cases {
		var h []string
		if c.ctype != "" {
			h = []string{"Content-Type", c.ctype}
		}
		r := testkit.Do(t, c.method, gw.URL+c.path, c.body, h...)
		body := testkit.WantProblem(t, r, 400, "contract_violation")
		probs, _ := body["problems"].([]any)
		if len(probs) == 0 {
			t.Errorf("%s %s: no problems listed: %s", c.method, c.path, r.Body)
			continue
		}
		first := probs[0].(map[string]any)
		if first["kind"] != c.kind || first["pointer"] != c.pointer {
			t.Errorf("%s %s: first problem %v, want kind %s at %q", c.method, c.path, first, c.kind, c.pointer)
		}
	}
	if up.Count() != 0 {
		t.Fatalf("the provider was called %d times for invalid calls", up.Count())
	}

	// A valid call goes through, as does any call on a route without a contract.
	if r := testkit.Do(t, "POST", gw.URL+"/resend/emails", validEmail, "Content-Type", "application/json"); r.Status != 200 {
		t.Fatalf("valid call: %d %s", r.Status, r.Body)
	}
	if r := testkit.Do(t, "DELETE", gw.URL+"/plain/emails", ""); r.Status != 200 {
		t.Fatalf("route with the contract off: %d %s", r.Status, r.Body)
	}
	if up.Count() != 2 {
		t.Errorf("provider calls = %d, want 2", up.Count())
	}
	if v := metric(t, gw, "sluice_contract_violations_total", "upstream", "resend", "operation", "emails/send", "direction", "request", "kind", "body"); v != 1 {
		t.Errorf("violations{emails/send, body} = %v, want 1 (one call, counted once per kind)", v)
	}
	if v := metric(t, gw, "sluice_contract_violations_total", "operation", "unknown", "direction", "request", "kind", "unknown_operation"); v != 2 {
		t.Errorf("violations{unknown_operation} = %v, want 2", v)
	}
	if v := metric(t, gw, "sluice_contract_checked_total", "upstream", "resend", "direction", "request"); v != 6 {
		t.Errorf("checked{request} = %v, want 6", v)
	}
}

func TestReportForwardsAndCounts(t *testing.T) {
	t.Parallel()
	up := newProvider(t)
	gw := gateway(t, up, fmt.Sprintf(`{spec: "file:%s", requests: report}`, spec(t)))
	for range 3 {
		r := testkit.Do(t, "POST", gw.URL+"/resend/emails", `{"from":"a@example.com"}`, "Content-Type", "application/json")
		if r.Status != 200 {
			t.Fatalf("report mode: %d %s, want the call forwarded", r.Status, r.Body)
		}
	}
	if up.Count() != 3 {
		t.Fatalf("provider calls = %d, want 3", up.Count())
	}
	if v := metric(t, gw, "sluice_contract_violations_total", "operation", "emails/send", "direction", "request", "kind", "body"); v != 3 {
		t.Errorf("violations{request, body} = %v, want 3", v)
	}
	if n := strings.Count(gw.Logs.String(), "call does not match"); n != 1 {
		t.Errorf("logged %d times, want once for the kind: %s", n, gw.Logs.String())
	}
}

// The provider changes its answers under us: drift is counted by kind and
// logged once per kind with the operation and the pointer.
func TestDriftCountedAndLoggedOncePerKind(t *testing.T) {
	t.Parallel()
	up := newProvider(t)
	gw := gateway(t, up, fmt.Sprintf(`{spec: "file:%s"}`, spec(t)))
	get := func() {
		t.Helper()
		if r := testkit.Do(t, "GET", gw.URL+"/resend/emails/4ef9a417", ""); r.Status >= 500 {
			t.Fatalf("GET: %d %s", r.Status, r.Body)
		}
	}
	get()
	if v := metric(t, gw, "sluice_contract_checked_total", "direction", "response"); v != 1 {
		t.Fatalf("checked{response} = %v, want 1", v)
	}
	if _, found := gw.Metrics(t).Value("sluice_contract_violations_total", "direction", "response"); found {
		t.Fatalf("a conforming answer counted as drift: %s", gw.Logs.String())
	}
	// The provider renames a field to a number and starts answering 202.
	up.set(func(ctx *fasthttp.RequestCtx) {
		ctx.SetContentType("application/json")
		ctx.SetBodyString(`{"object":"email","id":17,"to":"a@example.com"}`)
	})
	get()
	get()
	up.set(func(ctx *fasthttp.RequestCtx) { ctx.SetStatusCode(202) })
	get()
	op := []string{"upstream", "resend", "operation", "emails/get", "direction", "response"}
	if v := metric(t, gw, "sluice_contract_violations_total", append(op, "kind", "body")...); v != 2 {
		t.Errorf("drift{body} = %v, want 2", v)
	}
	if v := metric(t, gw, "sluice_contract_violations_total", append(op, "kind", "status")...); v != 1 {
		t.Errorf("drift{status} = %v, want 1", v)
	}
	logs := gw.Logs.String()
	var lines []map[string]any
	for l := range strings.Lines(logs) {
		if strings.Contains(l, "drift") {
			var m map[string]any
			if err := json.Unmarshal([]byte(l), &m); err != nil {
				t.Fatalf("log line %q: %v", l, err)
			}
			lines = append(lines, m)
		}
	}
	if len(lines) != 2 {
		t.Fatalf("drift logged %d times, want once per kind (body, status): %s", len(lines), logs)
	}
	if lines[0]["operation"] != "emails/get" || lines[0]["kind"] != "body" || lines[0]["pointer"] != "/id" {
		t.Errorf("first drift log = %v, want operation emails/get, kind body, pointer /id", lines[0])
	}
	if lines[1]["kind"] != "status" || lines[1]["pointer"] != "/status" {
		t.Errorf("second drift log = %v, want kind status at /status", lines[1])
	}
}

func TestSampleZeroChecksNoAnswer(t *testing.T) {
	t.Parallel()
	up := newProvider(t)
	up.set(func(ctx *fasthttp.RequestCtx) { ctx.SetStatusCode(202) })
	gw := gateway(t, up, fmt.Sprintf(`{spec: "file:%s", sample: 0}`, spec(t)))
	for range 5 {
		testkit.Do(t, "GET", gw.URL+"/resend/emails/x", "")
	}
	if _, found := gw.Metrics(t).Value("sluice_contract_checked_total", "direction", "response"); found {
		t.Error("answers checked with sample: 0")
	}
	if up.Count() != 5 {
		t.Errorf("provider calls = %d", up.Count())
	}
}

func TestTooLargeBodiesAreCountedNotChecked(t *testing.T) {
	t.Parallel()
	up := newProvider(t)
	gw := gateway(t, up, fmt.Sprintf(`{spec: "file:%s", max_body: 64}`, spec(t)))
	// Invalid, but above max_body: the body is not read by the validator.
	big := `{"from":1,"to":2,"subject":3,"html":"` + strings.Repeat("x", 100) + `"}`
	r := testkit.Do(t, "POST", gw.URL+"/resend/emails", big, "Content-Type", "application/json")
	if r.Status != 200 {
		t.Fatalf("too large to check: %d %s, want it forwarded", r.Status, r.Body)
	}
	if v := metric(t, gw, "sluice_contract_unchecked_total", "upstream", "resend", "direction", "request", "reason", "body_too_large"); v != 1 {
		t.Errorf("unchecked{request, body_too_large} = %v, want 1", v)
	}
	// The answer (the GET's body is above 64 bytes) is not checked either;
	// its status still is.
	testkit.Do(t, "GET", gw.URL+"/resend/emails/x", "")
	if v := metric(t, gw, "sluice_contract_unchecked_total", "direction", "response", "reason", "body_too_large"); v != 1 {
		t.Errorf("unchecked{response, body_too_large} = %v, want 1", v)
	}
	// The call is still matched to an operation.
	r = testkit.Do(t, "DELETE", gw.URL+"/resend/emails", big, "Content-Type", "application/json")
	testkit.WantProblem(t, r, 400, "contract_violation")
}

func TestBadSpecIsAConfigError(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	write := func(name, content string) string {
		p := filepath.Join(dir, name)
		testkit.WriteFile(t, p, content)
		return p
	}
	src, err := os.ReadFile(spec(t))
	if err != nil {
		t.Fatal(err)
	}
	dangling := strings.Replace(string(src), "#/components/schemas/Tag", "#/components/schemas/Missing", 1)
	cases := []struct{ name, spec, want string }{
		{"missing", "file:" + filepath.Join(dir, "nope.yaml"), "cannot read the OpenAPI document"},
		{"syntax", "file:" + write("broken.yaml", "openapi: 3.0.3\npaths:\n  /x: [\n"), "line"},
		{"dangling", "file:" + write("dangling.yaml", dangling), "#/components/schemas/Missing"},
		{"invalid", "file:" + write("invalid.yaml", strings.Replace(string(src), "type: object", "type: objekt", 1)), "is not valid"},
		{"swagger2", "file:" + write("v2.yaml", "swagger: \"2.0\"\ninfo: {title: t, version: \"1\"}\npaths: {}\n"), "want an OpenAPI 3 document"},
		{"no prefix", spec(t), `want "file:PATH"`},
	}
	for _, c := range cases {
		probs := testkit.ConfigProblems(t, fmt.Sprintf(`
upstreams: {up: {url: "http://127.0.0.1:1"}}
routes:
  r: {path: "/{p:*}", upstream: up, plugins: {contract: {spec: %q}}}
`, c.spec))
		t.Logf("%s: %v", c.name, probs)
		testkit.WantOneProblem(t, probs, "routes.r.plugins.contract.spec", c.want)
		if len(probs) == 1 && c.name != "no prefix" && !strings.Contains(probs[0].Msg, dir) && c.name != "missing" {
			t.Errorf("%s: %q does not name the document", c.name, probs[0].Msg)
		}
	}
}

// A relative spec path is relative to the config file's directory.
func TestRelativeSpecPath(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	src, err := os.ReadFile(spec(t))
	if err != nil {
		t.Fatal(err)
	}
	if err := os.Mkdir(filepath.Join(dir, "openapi"), 0o700); err != nil {
		t.Fatal(err)
	}
	testkit.WriteFile(t, filepath.Join(dir, "openapi", "resend.yaml"), string(src))
	up := newProvider(t)
	gw := testkit.StartGateway(t, fmt.Sprintf(`
upstreams: {resend: {url: "%s"}}
routes:
  r: {path: "/{p:*}", upstream: resend, plugins: {contract: {spec: "file:openapi/resend.yaml"}}}
`, up.URL), testkit.Options{Dir: dir})
	testkit.WantProblem(t, testkit.Do(t, "DELETE", gw.URL+"/emails", ""), 400, "contract_violation")
}

// A reload whose document is broken is refused; the old contract keeps
// serving.
func TestReloadWithBadSpecKeepsTheOldConfig(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	src, err := os.ReadFile(spec(t))
	if err != nil {
		t.Fatal(err)
	}
	doc := filepath.Join(dir, "resend.yaml")
	testkit.WriteFile(t, doc, string(src))
	up := newProvider(t)
	conf := fmt.Sprintf(`
upstreams: {resend: {url: "%s"}}
routes:
  r: {path: "/{p:*}", upstream: resend, plugins: {contract: {spec: "file:resend.yaml"}}}
`, up.URL)
	gw := testkit.StartGateway(t, conf, testkit.Options{Dir: dir})
	testkit.WriteFile(t, doc, strings.Replace(string(src), "#/components/schemas/Tag", "#/components/schemas/Missing", 1))
	err = gw.Reload()
	if err == nil || !strings.Contains(err.Error(), "routes.r.plugins.contract.spec") {
		t.Fatalf("reload with a dangling reference: %v, want an error at routes.r.plugins.contract.spec", err)
	}
	testkit.WantProblem(t, testkit.Do(t, "DELETE", gw.URL+"/emails", ""), 400, "contract_violation")
	if r := testkit.Do(t, "POST", gw.URL+"/emails", validEmail, "Content-Type", "application/json"); r.Status != 200 {
		t.Fatalf("after the refused reload: %d %s", r.Status, r.Body)
	}
	if up.Count() != 1 {
		t.Errorf("provider calls = %d, want 1", up.Count())
	}
}

func TestBlockErrors(t *testing.T) {
	t.Parallel()
	for _, c := range []struct{ block, path, want string }{
		{`{spec: "file:/x.yaml", requests: block}`, "requests", "unknown mode"},
		{`{spec: "file:/x.yaml", responses: enforce}`, "responses", "unknown mode"},
		{`{spec: "file:/x.yaml", sample: 1.5}`, "sample", "between 0 and 1"},
		{`{spec: "file:/x.yaml", max_body: 0}`, "max_body", "positive"},
		{`{}`, "spec", "is required"},
	} {
		probs := testkit.ConfigProblems(t, `
upstreams: {up: {url: "http://127.0.0.1:1"}}
routes:
  r: {path: "/{p:*}", upstream: up, plugins: {contract: `+c.block+`}}
`)
		testkit.WantOneProblem(t, probs, "routes.r.plugins.contract."+c.path, c.want)
	}
}

// A block on the upstream reports its document's problems at the
// upstream's key path; responses only (requests: off) lets every call
// through and still counts drift.
func TestUpstreamBlockAndAnswersOnly(t *testing.T) {
	t.Parallel()
	probs := testkit.ConfigProblems(t, `
upstreams: {up: {url: "http://127.0.0.1:1", plugins: {contract: {spec: "file:does-not-exist.yaml"}}}}
routes:
  r: {path: "/{p:*}", upstream: up}
`)
	testkit.WantOneProblem(t, probs, "upstreams.up.plugins.contract.spec", "cannot read the OpenAPI document")

	up := newProvider(t)
	up.set(func(ctx *fasthttp.RequestCtx) { ctx.SetStatusCode(202) })
	gw := gateway(t, up, fmt.Sprintf(`{spec: "file:%s", requests: off}`, spec(t)))
	if r := testkit.Do(t, "DELETE", gw.URL+"/resend/emails", ""); r.Status != 202 {
		t.Fatalf("requests: off: %d %s, want the call forwarded", r.Status, r.Body)
	}
	testkit.Do(t, "GET", gw.URL+"/resend/emails/x", "")
	if up.Count() != 2 {
		t.Errorf("provider calls = %d, want 2", up.Count())
	}
	if _, found := gw.Metrics(t).Value("sluice_contract_checked_total", "direction", "request"); found {
		t.Error("calls checked with requests: off")
	}
	// The DELETE matches no operation: its answer is not judged; the GET's
	// undocumented 202 is drift.
	if v := metric(t, gw, "sluice_contract_violations_total", "operation", "emails/get", "direction", "response", "kind", "status"); v != 1 {
		t.Errorf("drift{status} = %v, want 1", v)
	}
	if v := metric(t, gw, "sluice_contract_checked_total", "direction", "response"); v != 1 {
		t.Errorf("checked{response} = %v, want 1 (the answer to a call of no operation is not checked)", v)
	}
}
