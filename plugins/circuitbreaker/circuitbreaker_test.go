package circuitbreaker_test

import (
	"encoding/json"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/sluice-gw/sluice/internal/testkit"
	"github.com/sluice-gw/sluice/proxy"
	"github.com/valyala/fasthttp"
)

func TestMain(m *testing.M) { testkit.RunWithoutLeaks(m) }

func gateway(t *testing.T, upstream, breaker string) *testkit.Gateway {
	t.Helper()
	return testkit.StartGateway(t, fmt.Sprintf(`
log: {access_log: false}
upstreams:
  up:
    %s
    plugins:
      circuit_breaker: %s
routes:
  r: {path: "/{p:*}", upstream: up}
`, upstream, breaker))
}

func metric(t *testing.T, gw *testkit.Gateway, name string, labels ...string) float64 {
	t.Helper()
	v, _ := gw.Metrics(t).Value(name, labels...)
	return v
}

type problemBody struct {
	Code       string `json:"code"`
	Status     int    `json:"status"`
	RetryAfter int    `json:"retry_after"`
	Upstream   string `json:"upstream"`
	Retryable  bool   `json:"retryable"`
}

func wantOpen(t *testing.T, resp *testkit.Response) problemBody {
	t.Helper()
	var p problemBody
	_ = json.Unmarshal(resp.Body, &p)
	if resp.Status != 503 || p.Code != "circuit_open" || resp.Header.Get("Retry-After") == "" || !p.Retryable {
		t.Fatalf("want 503 circuit_open with Retry-After, got %d %v %s", resp.Status, resp.Header, resp.Body)
	}
	return p
}

// The whole life of a circuit: closed, open (fast failures that never reach
// the upstream), half-open (probes), closed again.
func TestBreakerLifecycle(t *testing.T) {
	t.Parallel()
	up := testkit.NewFaultUpstream(t)
	up.SetDefault(testkit.Err500)
	gw := gateway(t, `url: "`+up.URL+`"`, `{consecutive_failures: 3, open_for: 300ms, half_open_requests: 2}`)

	for i := range 3 {
		if resp := testkit.Do(t, "GET", gw.URL+"/x", ""); resp.Status != 500 {
			t.Fatalf("request %d: status %d, want the upstream's 500", i, resp.Status)
		}
	}
	if v := metric(t, gw, "sluice_circuit_state", "upstream", "up"); v != 2 {
		t.Fatalf("sluice_circuit_state = %v after 3 failures, want 2 (open)", v)
	}
	for range 10 {
		p := wantOpen(t, testkit.Do(t, "GET", gw.URL+"/x", ""))
		if p.Upstream != "up" || p.RetryAfter < 1 {
			t.Errorf("problem %+v", p)
		}
	}
	if up.Hits() != 3 {
		t.Fatalf("upstream hits = %d, want 3: an open circuit must not touch the network", up.Hits())
	}

	// The provider recovers; after open_for, probes go through.
	up.SetDefault(testkit.OK)
	testkit.Eventually(t, 5*time.Second, func() bool {
		return testkit.Do(t, "GET", gw.URL+"/x", "").Status == 200
	}, "first probe after open_for")
	if v := metric(t, gw, "sluice_circuit_state", "upstream", "up"); v != 1 {
		t.Errorf("after one of two probes: state %v, want 1 (half-open)", v)
	}
	if resp := testkit.Do(t, "GET", gw.URL+"/x", ""); resp.Status != 200 {
		t.Fatalf("second probe: %d", resp.Status)
	}
	if v := metric(t, gw, "sluice_circuit_state", "upstream", "up"); v != 0 {
		t.Errorf("after two good probes: state %v, want 0 (closed)", v)
	}
	for _, to := range []string{"open", "half_open", "closed"} {
		if v := metric(t, gw, "sluice_circuit_transitions_total", "upstream", "up", "to", to); v != 1 {
			t.Errorf("transitions to %s = %v, want 1", to, v)
		}
	}
	logs := gw.Logs.String()
	for _, msg := range []string{"circuit opened", "circuit half-open", "circuit closed"} {
		if n := strings.Count(logs, msg); n != 1 {
			t.Errorf("%q logged %d times, want once:\n%s", msg, n, logs)
		}
	}
}

// A probe that fails opens the circuit again for twice as long.
func TestBreakerOpenForGrows(t *testing.T) {
	t.Parallel()
	up := testkit.NewFaultUpstream(t)
	up.SetDefault(testkit.Err503)
	gw := gateway(t, `url: "`+up.URL+`"`, `{consecutive_failures: 1, open_for: 1s, max_open_for: 10s}`)
	testkit.Do(t, "GET", gw.URL+"/x", "")
	halfOpenIn := func() float64 {
		resp := testkit.Do(t, "GET", gw.AdminURL+"/admin/upstreams", "")
		var v struct {
			Upstreams []struct {
				Status struct {
					CB struct {
						State      string  `json:"state"`
						HalfOpenIn float64 `json:"half_open_in_seconds"`
						Trips      int     `json:"trips"`
					} `json:"circuit_breaker"`
				} `json:"status"`
			} `json:"upstreams"`
		}
		if err := json.Unmarshal(resp.Body, &v); err != nil {
			t.Fatal(err)
		}
		return v.Upstreams[0].Status.CB.HalfOpenIn
	}
	if d := halfOpenIn(); d <= 0 || d > 1 {
		t.Fatalf("first trip: half-open in %vs, want within open_for (1s)", d)
	}
	// Wait for the probe and let it fail.
	before := up.Hits()
	testkit.Eventually(t, 5*time.Second, func() bool {
		testkit.Do(t, "GET", gw.URL+"/x", "")
		return up.Hits() > before
	}, "probe reaches the upstream")
	if d := halfOpenIn(); d <= 1 || d > 2 {
		t.Errorf("second trip: half-open in %vs, want more than 1s and at most 2s (open_for doubled)", d)
	}
}

// What counts as a failure: 5xx, timeouts, resets, garbage and half-written
// bodies do; 429 and 4xx do not.
func TestBreakerFailureClassification(t *testing.T) {
	t.Parallel()
	t.Run("429 and 4xx are not failures", func(t *testing.T) {
		t.Parallel()
		up := testkit.NewFaultUpstream(t)
		up.SetDefault(testkit.Fault{Status: 429, Header: []string{"Retry-After: 1"}})
		gw := gateway(t, `url: "`+up.URL+`"`, `{consecutive_failures: 2}`)
		for range 5 {
			testkit.Do(t, "GET", gw.URL+"/x", "")
		}
		up.SetDefault(testkit.Fault{Status: 404})
		for range 5 {
			testkit.Do(t, "GET", gw.URL+"/x", "")
		}
		if up.Hits() != 10 {
			t.Errorf("hits = %d, want 10: the circuit must stay closed", up.Hits())
		}
	})
	t.Run("transport failures", func(t *testing.T) {
		t.Parallel()
		up := testkit.NewFaultUpstream(t)
		up.Script(testkit.ResetConn, testkit.Garbage, testkit.HalfBody, testkit.Delayed(500*time.Millisecond))
		gw := gateway(t, `url: "`+up.URL+`"
    timeout: 100ms`, `{consecutive_failures: 4}`)
		// POST: the upstream client does not resend it on a broken connection,
		// so each request meets exactly one fault.
		for i, want := range []int{502, 502, 502, 504} {
			if resp := testkit.Do(t, "POST", gw.URL+"/x", "body"); resp.Status != want {
				t.Errorf("fault %d: status %d, want %d", i, resp.Status, want)
			}
		}
		wantOpen(t, testkit.Do(t, "POST", gw.URL+"/x", "body"))
		if up.Hits() != 4 {
			t.Errorf("hits = %d, want 4", up.Hits())
		}
	})
	t.Run("failure_statuses", func(t *testing.T) {
		t.Parallel()
		up := testkit.NewFaultUpstream(t)
		up.SetDefault(testkit.Err500)
		gw := gateway(t, `url: "`+up.URL+`"`, `{consecutive_failures: 2, failure_statuses: [502, 503]}`)
		for range 4 {
			if resp := testkit.Do(t, "GET", gw.URL+"/x", ""); resp.Status != 500 {
				t.Fatalf("status %d: a 500 is not in failure_statuses", resp.Status)
			}
		}
		up.SetDefault(testkit.Err503)
		testkit.Do(t, "GET", gw.URL+"/x", "")
		testkit.Do(t, "GET", gw.URL+"/x", "")
		wantOpen(t, testkit.Do(t, "GET", gw.URL+"/x", ""))
	})
}

// failure_ratio trips on the share of failures over the window, once
// min_requests were seen.
func TestBreakerFailureRatio(t *testing.T) {
	t.Parallel()
	up := testkit.NewFaultUpstream(t)
	up.Script(testkit.Err500, testkit.OK, testkit.Err500, testkit.OK, testkit.OK, testkit.Err500)
	gw := gateway(t, `url: "`+up.URL+`"`, `{failure_ratio: 0.5, min_requests: 6, window: 1m}`)
	for i := range 6 {
		testkit.Do(t, "GET", gw.URL+"/x", "") // 3 of 6 fail: trips on the 6th
		if i < 5 && metric(t, gw, "sluice_circuit_state", "upstream", "up") != 0 {
			t.Fatalf("tripped after %d requests, before min_requests", i+1)
		}
	}
	wantOpen(t, testkit.Do(t, "GET", gw.URL+"/x", ""))
	if up.Hits() != 6 {
		t.Errorf("hits = %d, want 6", up.Hits())
	}
}

// With several targets, each has its circuit: a failing target is skipped
// while the others serve; callers get circuit_open only when all are open.
func TestBreakerPerTarget(t *testing.T) {
	t.Parallel()
	bad, good := testkit.NewFaultUpstream(t), testkit.NewFaultUpstream(t)
	bad.SetDefault(testkit.Err503)
	gw := gateway(t, fmt.Sprintf(`targets: ["%s", "%s"]
    outlier: {enabled: false}`, bad.URL, good.URL),
		`{consecutive_failures: 2, open_for: 1m}`)
	for range 6 {
		testkit.Do(t, "GET", gw.URL+"/x", "")
	}
	if bad.Hits() != 2 {
		t.Fatalf("failing target hits = %d, want 2 (then its circuit opens)", bad.Hits())
	}
	for i := range 20 {
		if resp := testkit.Do(t, "GET", gw.URL+"/x", ""); resp.Status != 200 {
			t.Fatalf("request %d: %d, want the healthy target to serve", i, resp.Status)
		}
	}
	if bad.Hits() != 2 {
		t.Errorf("failing target hits = %d after its circuit opened, want 2", bad.Hits())
	}
	if v := metric(t, gw, "sluice_circuit_state", "upstream", "up"); v != 1 {
		t.Errorf("state with one of two circuits open = %v, want 1", v)
	}
	resp := testkit.Do(t, "GET", gw.AdminURL+"/admin/upstreams", "")
	if !strings.Contains(string(resp.Body), `"target": "`+bad.URL+`"`) || !strings.Contains(string(resp.Body), `"state": "open"`) {
		t.Errorf("/admin/upstreams does not show the open target circuit:\n%s", resp.Body)
	}

	if !strings.Contains(gw.Logs.String(), `"msg":"circuit opened","upstream":"up","target":"`+bad.URL+`"`) {
		t.Errorf("the target's circuit opening is not logged with its target:\n%s", gw.Logs)
	}
	good.SetDefault(testkit.Err503)
	for range 4 {
		testkit.Do(t, "GET", gw.URL+"/x", "")
	}
	wantOpen(t, testkit.Do(t, "GET", gw.URL+"/x", ""))
	if v := metric(t, gw, "sluice_circuit_state", "upstream", "up"); v != 2 {
		t.Errorf("state with every circuit open = %v, want 2", v)
	}
}

// An open circuit stays open across a reload that keeps its settings.
func TestBreakerSurvivesReload(t *testing.T) {
	t.Parallel()
	up := testkit.NewFaultUpstream(t)
	up.SetDefault(testkit.Err500)
	yaml := `
log: {access_log: false}
upstreams:
  up:
    url: "` + up.URL + `"
    plugins:
      circuit_breaker: {consecutive_failures: 1, open_for: 1m}
routes:
  r: {path: "/{p:*}", upstream: up}
`
	gw := testkit.StartGateway(t, yaml)
	testkit.Do(t, "GET", gw.URL+"/x", "")
	wantOpen(t, testkit.Do(t, "GET", gw.URL+"/x", ""))
	testkit.WriteFile(t, gw.File, yaml+"  other: {path: \"/other\", upstream: up}\n")
	if err := gw.Reload(); err != nil {
		t.Fatal(err)
	}
	wantOpen(t, testkit.Do(t, "GET", gw.URL+"/other", ""))
	if up.Hits() != 1 {
		t.Errorf("hits = %d, want 1", up.Hits())
	}
	if v := metric(t, gw, "sluice_circuit_state", "upstream", "up"); v != 2 {
		t.Errorf("state after reload = %v, want 2", v)
	}
}

func TestBreakerConfigErrors(t *testing.T) {
	t.Parallel()
	cases := []struct{ name, block, path, msg string }{
		{"ratio", `{failure_ratio: 1.5}`, "failure_ratio", "between 0 and 1"},
		{"429", `{failure_statuses: [429]}`, "failure_statuses[0]", "includes 429"},
		{"4xx", `{failure_statuses: ["5xx", "4xx"]}`, "failure_statuses[1]", "includes 429"},
		{"bad status", `{failure_statuses: [abc]}`, "failure_statuses[0]", "invalid status"},
		{"probes", `{half_open_requests: 0}`, "half_open_requests", "between 1 and 1000"},
		{"max_open_for", `{open_for: 1m, max_open_for: 10s}`, "max_open_for", "shorter than open_for"},
		{"window", `{failure_ratio: 0.5, window: 10ms}`, "window", "at least 100ms"},
		{"unknown", `{open: 1s}`, "open", ""},
		{"bare number", `{open_for: 30}`, "open_for", ""},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			t.Parallel()
			probs := testkit.ConfigProblems(t, fmt.Sprintf(`
upstreams:
  up: {url: "http://127.0.0.1:1"}
routes:
  r:
    path: /x
    upstream: up
    plugins:
      circuit_breaker: %s
`, c.block))
			testkit.WantOneProblem(t, probs, "routes.r.plugins.circuit_breaker."+c.path, c.msg)
		})
	}
}

// panicker is a stand-in for a stage inside the breaker (the upstream quota
// stage) that panics when the request asks it to.
type panicker struct{}

func (panicker) Handle(ctx *fasthttp.RequestCtx, ex *proxy.Exchange, next proxy.Handler) error {
	if len(ctx.Request.Header.Peek("X-Panic")) > 0 {
		panic("test panic inside the breaker")
	}
	return next.Handle(ctx, ex)
}

// withInnerStage starts a gateway whose upstream has the circuit breaker
// (breaker is its YAML block) and, inside it at the upstream quota stage, the
// test plugin inner; routeExtra is added to the route's flow mapping.
func withInnerStage(t *testing.T, up *testkit.FaultUpstream, inner proxy.Plugin, breaker, routeExtra string) *testkit.Gateway {
	t.Helper()
	reg := testkit.WithPlugin("rate_limit.upstream_quota", proxy.Define("test_inner", func(*struct{}, *proxy.Build) (proxy.Plugin, error) {
		return inner, nil
	}))
	if routeExtra != "" {
		routeExtra = ", " + routeExtra
	}
	return testkit.StartGateway(t, `
log: {access_log: false}
upstreams:
  up:
    url: "`+up.URL+`"
    plugins:
      circuit_breaker: `+breaker+`
      test_inner: {}
routes:
  r: {path: "/{p:*}", upstream: up`+routeExtra+`}
`, testkit.Options{Registry: reg})
}

// A probe that panics further in gives its slot back: the circuit does not
// stay half-open with no probe allowed.
func TestBreakerProbePanicDoesNotWedge(t *testing.T) {
	t.Parallel()
	up := testkit.NewFaultUpstream(t)
	up.SetDefault(testkit.Err500)
	gw := withInnerStage(t, up, panicker{}, "{consecutive_failures: 1, open_for: 200ms}", "")
	testkit.Do(t, "GET", gw.URL+"/x", "")
	wantOpen(t, testkit.Do(t, "GET", gw.URL+"/x", ""))
	up.SetDefault(testkit.OK)
	testkit.Eventually(t, 5*time.Second, func() bool {
		return testkit.Do(t, "GET", gw.URL+"/x", "", "X-Panic", "1").Status == 500
	}, "the probe reaches the panicking stage")
	if resp := testkit.Do(t, "GET", gw.URL+"/x", ""); resp.Status != 200 {
		t.Fatalf("after a panicking probe: %d %s, want the next probe let through", resp.Status, resp.Body)
	}
}

// sleeper is a stand-in for a stage inside the breaker that waits (as the
// upstream quota's queue mode does) until the route's deadline has passed.
type sleeper struct{}

func (sleeper) Handle(ctx *fasthttp.RequestCtx, ex *proxy.Exchange, next proxy.Handler) error {
	time.Sleep(ex.Remaining() + 20*time.Millisecond)
	return next.Handle(ctx, ex)
}

// A call whose deadline passed before anything was sent teaches the breaker
// nothing about the provider: the circuit stays closed.
func TestDeadlineBeforeSendIsNotAProviderFailure(t *testing.T) {
	t.Parallel()
	up := testkit.NewFaultUpstream(t)
	up.SetDefault(testkit.OK)
	gw := withInnerStage(t, up, sleeper{}, "{consecutive_failures: 1, open_for: 1m}", "deadline: 50ms")
	for range 2 {
		testkit.WantProblem(t, testkit.Do(t, "GET", gw.URL+"/x", ""), 504, "upstream_timeout")
	}
	if v, _ := gw.Metrics(t).Value("sluice_circuit_state", "upstream", "up"); v != 0 {
		t.Errorf("sluice_circuit_state = %v after deadlines that sent nothing, want 0", v)
	}
}
