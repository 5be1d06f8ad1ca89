package proxy_test

import (
	"encoding/json"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/sluice-gw/sluice/internal/testkit"
	"github.com/valyala/fasthttp"
)

// upstreamsView is GET /admin/upstreams, as far as these tests read it.
type upstreamsView struct {
	Upstreams []struct {
		Name    string `json:"name"`
		Balance string `json:"balance"`
		Targets []struct {
			URL       string  `json:"url"`
			State     string  `json:"state"`
			Failures  int64   `json:"consecutive_failures"`
			Ejections int64   `json:"ejections"`
			Ejected   float64 `json:"ejected_for_seconds"`
		} `json:"targets"`
		Status map[string]json.RawMessage `json:"status"`
	} `json:"upstreams"`
}

func adminUpstreams(t *testing.T, gw *testkit.Gateway) upstreamsView {
	t.Helper()
	var v upstreamsView
	resp := testkit.Do(t, "GET", gw.AdminURL+"/admin/upstreams", "")
	if err := json.Unmarshal(resp.Body, &v); err != nil {
		t.Fatalf("/admin/upstreams: %v: %s", err, resp.Body)
	}
	return v
}

// A dead target in a pool costs a few failed requests, then none: it is
// ejected and traffic goes to the live one.
func TestDeadTargetIsEjected(t *testing.T) {
	t.Parallel()
	live := testkit.NewUpstream(t, nil)
	dead := testkit.ClosedAddr(t)
	gw := testkit.StartGateway(t, fmt.Sprintf(`
log: {access_log: false}
upstreams:
  pool:
    targets: ["http://%s", "%s"]
    outlier: {consecutive_failures: 2, eject_for: 1m}
routes:
  r: {path: "/{p:*}", upstream: pool}
`, dead, live.URL))
	failed := 0
	for range 10 { // round-robin: the dead target fails twice, then is out
		if testkit.Do(t, "GET", gw.URL+"/x", "").Status != 200 {
			failed++
		}
	}
	if failed != 2 {
		t.Errorf("%d failed requests before ejection, want 2 (consecutive_failures)", failed)
	}
	for i := range 50 {
		if resp := testkit.Do(t, "GET", gw.URL+"/x", ""); resp.Status != 200 {
			t.Fatalf("request %d after ejection: status %d %s", i, resp.Status, resp.Body)
		}
	}
	v := adminUpstreams(t, gw)
	tg := v.Upstreams[0].Targets[0]
	if tg.State != "ejected" || tg.Ejected <= 0 || tg.Ejected > 60 || tg.Ejections != 1 {
		t.Errorf("dead target in /admin/upstreams: %+v, want ejected for up to 60s", tg)
	}
	if live := v.Upstreams[0].Targets[1]; live.State != "healthy" || live.Failures != 0 {
		t.Errorf("live target in /admin/upstreams: %+v", live)
	}
	if !strings.Contains(gw.Logs.String(), `"msg":"target ejected"`) {
		t.Errorf("ejection not logged:\n%s", gw.Logs)
	}
	if n := strings.Count(gw.Logs.String(), "target ejected"); n != 1 {
		t.Errorf("ejection logged %d times, want once", n)
	}
}

// If every target is ejected, requests are still tried rather than failed
// wholesale; a target that works again rejoins.
func TestAllEjectedStillTried(t *testing.T) {
	t.Parallel()
	var broken atomic.Bool
	broken.Store(true)
	h := func(ctx *fasthttp.RequestCtx) {
		if broken.Load() {
			ctx.SetStatusCode(503)
		}
	}
	a, b := testkit.NewUpstream(t, h), testkit.NewUpstream(t, h)
	gw := testkit.StartGateway(t, fmt.Sprintf(`
log: {access_log: false}
upstreams:
  pool:
    targets: ["%s", "%s"]
    outlier: {consecutive_failures: 1, eject_for: 1m}
routes:
  r: {path: "/{p:*}", upstream: pool}
`, a.URL, b.URL))
	for range 4 {
		testkit.Do(t, "GET", gw.URL+"/x", "")
	}
	for _, tg := range adminUpstreams(t, gw).Upstreams[0].Targets {
		if tg.State != "ejected" {
			t.Fatalf("target %s is %s, want both ejected", tg.URL, tg.State)
		}
	}
	before := a.Count() + b.Count()
	broken.Store(false)
	for range 5 {
		if resp := testkit.Do(t, "GET", gw.URL+"/x", ""); resp.Status != 200 {
			t.Fatalf("with every target ejected: status %d, want the request tried anyway", resp.Status)
		}
	}
	if got := a.Count() + b.Count() - before; got != 5 {
		t.Errorf("upstreams saw %d requests, want 5", got)
	}
}

// least_inflight sends new requests to the target with the fewest requests in
// progress: while one target is busy with slow requests, the other gets the rest.
func TestLeastInflight(t *testing.T) {
	t.Parallel()
	release := make(chan struct{})
	slow := testkit.NewUpstream(t, func(ctx *fasthttp.RequestCtx) {
		if string(ctx.Path()) == "/slow" {
			<-release
		}
	})
	fast := testkit.NewUpstream(t, nil)
	gw := testkit.StartGateway(t, fmt.Sprintf(`
log: {access_log: false}
upstreams:
  pool: {targets: ["%s", "%s"], balance: least_inflight}
routes:
  r: {path: "/{p:*}", upstream: pool}
`, slow.URL, fast.URL))
	// Park requests until one reaches the slow target; those that went to
	// the fast target come back at once.
	var wg sync.WaitGroup
	defer wg.Wait()
	defer close(release)
	for i := 0; slow.Count() == 0; i++ {
		if i > 20 {
			t.Fatal("no request reached the first target")
		}
		wg.Go(func() { _, _ = testkit.TryDo("GET", gw.URL+"/slow", "") })
		time.Sleep(20 * time.Millisecond)
	}
	before := fast.Count()
	for range 20 {
		if resp := testkit.Do(t, "GET", gw.URL+"/quick", ""); resp.Status != 200 {
			t.Fatalf("status %d", resp.Status)
		}
	}
	if got := fast.Count() - before; got != 20 {
		t.Errorf("the idle target got %d of 20 requests while the other was busy, want all", got)
	}
	if v := adminUpstreams(t, gw); v.Upstreams[0].Balance != "least_inflight" {
		t.Errorf("balance in /admin/upstreams = %q", v.Upstreams[0].Balance)
	}
}

// Active health checks take a failing target out before any request fails
// and bring it back when its checks pass again.
func TestHealthCheckTakesOutAndBringsBack(t *testing.T) {
	t.Parallel()
	var sick atomic.Bool
	sick.Store(true)
	a := testkit.NewUpstream(t, func(ctx *fasthttp.RequestCtx) {
		if string(ctx.Path()) == "/health" && sick.Load() {
			ctx.SetStatusCode(503)
		}
	})
	b := testkit.NewUpstream(t, nil)
	gw := testkit.StartGateway(t, fmt.Sprintf(`
log: {access_log: false}
upstreams:
  pool:
    targets: ["%s", "%s"]
    health_check: {path: /health, interval: 50ms, timeout: 40ms, unhealthy_after: 1}
routes:
  r: {path: "/{p:*}", upstream: pool}
`, a.URL, b.URL))
	state := func(i int) string { return adminUpstreams(t, gw).Upstreams[0].Targets[i].State }
	testkit.Eventually(t, 5*time.Second, func() bool { return state(0) == "down" }, "target a marked down")
	before := a.Count()
	for range 10 {
		testkit.Do(t, "GET", gw.URL+"/work", "")
	}
	var work int
	for _, r := range a.Requests()[before:] {
		if r.URI == "/work" {
			work++
		}
	}
	if work != 0 {
		t.Errorf("a down target got %d requests", work)
	}
	sick.Store(false)
	testkit.Eventually(t, 5*time.Second, func() bool { return state(0) == "healthy" }, "target a back up")
	before = a.Count()
	for range 10 {
		testkit.Do(t, "GET", gw.URL+"/work", "")
	}
	if a.Count() == before {
		t.Error("the target that came back gets no traffic")
	}
	if ua := a.Last(t).Header.Get("User-Agent"); a.Requests()[0].URI != "/health" || ua == "" {
		t.Errorf("health check request: %+v", a.Requests()[0])
	}
	logs := gw.Logs.String()
	if strings.Count(logs, "target down: health check failed") != 1 || strings.Count(logs, "target up: health check passed") != 1 {
		t.Errorf("state changes should be logged once each:\n%s", logs)
	}
}

// Ejection survives a reload that keeps the target; the health checker of a
// retired config stops (goleak checks the goroutine at the end).
func TestHealthSurvivesReload(t *testing.T) {
	t.Parallel()
	live := testkit.NewUpstream(t, nil)
	dead := testkit.ClosedAddr(t)
	yaml := fmt.Sprintf(`
log: {access_log: false}
upstreams:
  pool:
    targets: ["http://%s", "%s"]
    outlier: {consecutive_failures: 1, eject_for: 1m}
    health_check: {path: /, interval: 1h}
routes:
  r: {path: "/{p:*}", upstream: pool}
  %%s
`, dead, live.URL)
	gw := testkit.StartGateway(t, fmt.Sprintf(yaml, ""))
	testkit.Eventually(t, 5*time.Second, func() bool {
		testkit.Do(t, "GET", gw.URL+"/x", "")
		return adminUpstreams(t, gw).Upstreams[0].Targets[0].State != "healthy"
	}, "dead target out")
	testkit.WriteFile(t, gw.File, fmt.Sprintf(yaml, `other: {path: "/other", upstream: pool}`))
	if err := gw.Reload(); err != nil {
		t.Fatal(err)
	}
	if s := adminUpstreams(t, gw).Upstreams[0].Targets[0].State; s == "healthy" {
		t.Errorf("after reload the dead target is %s, want still out", s)
	}
	for range 10 {
		if resp := testkit.Do(t, "GET", gw.URL+"/x", ""); resp.Status != 200 {
			t.Fatalf("after reload: status %d", resp.Status)
		}
	}
}

func TestBalanceConfigErrors(t *testing.T) {
	t.Parallel()
	cases := []struct{ name, block, path, msg string }{
		{"balance", `balance: random`, "upstreams.u.balance", "unknown mode"},
		{"failures", `outlier: {consecutive_failures: -1}`, "upstreams.u.outlier.consecutive_failures", "at least 1"},
		{"max eject", `outlier: {eject_for: 1m, max_eject_for: 10s}`, "upstreams.u.outlier.max_eject_for", "shorter than eject_for"},
		{"hc path", `health_check: {path: health}`, "upstreams.u.health_check.path", "absolute path"},
		{"hc timeout", `health_check: {path: /h, interval: 1s, timeout: 2s}`, "upstreams.u.health_check.timeout", "longer than interval"},
		{"hc status", `health_check: {path: /h, healthy_statuses: ["2xx", "abc"]}`, "upstreams.u.health_check.healthy_statuses[1]", "invalid status"},
		{"hc unknown key", `health_check: {path: /h, every: 1s}`, "upstreams.u.health_check.every", ""},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			t.Parallel()
			probs := testkit.ConfigProblems(t, fmt.Sprintf(`
upstreams:
  u:
    url: "http://127.0.0.1:1"
    %s
routes:
  r: {path: "/x", upstream: u}
`, c.block))
			testkit.WantOneProblem(t, probs, c.path, c.msg)
		})
	}
}

// A lone target is never ejected (the circuit breaker's business), but its
// failures in a row are shown.
func TestSingleTargetNotEjected(t *testing.T) {
	t.Parallel()
	up := testkit.NewUpstream(t, func(ctx *fasthttp.RequestCtx) { ctx.SetStatusCode(502) })
	gw := testkit.StartGateway(t, fmt.Sprintf(`
log: {access_log: false}
upstreams:
  one: {url: "%s", outlier: {consecutive_failures: 2}}
routes:
  r: {path: "/{p:*}", upstream: one}
`, up.URL))
	for range 5 {
		testkit.Do(t, "GET", gw.URL+"/x", "")
	}
	if up.Count() != 5 {
		t.Errorf("upstream saw %d of 5 requests", up.Count())
	}
	tg := adminUpstreams(t, gw).Upstreams[0].Targets[0]
	if tg.State != "healthy" || tg.Failures != 5 {
		t.Errorf("lone target: %+v, want healthy with 5 consecutive failures", tg)
	}
}

// A passing health check ends a passive ejection early.
func TestHealthCheckEndsEjection(t *testing.T) {
	t.Parallel()
	var failing atomic.Bool
	failing.Store(true)
	a := testkit.NewUpstream(t, func(ctx *fasthttp.RequestCtx) {
		if string(ctx.Path()) != "/health" && failing.Load() {
			ctx.SetStatusCode(500)
		}
	})
	b := testkit.NewUpstream(t, nil)
	gw := testkit.StartGateway(t, fmt.Sprintf(`
log: {access_log: false}
upstreams:
  pool:
    targets: ["%s", "%s"]
    outlier: {consecutive_failures: 1, eject_for: 1h}
    health_check: {path: /health, interval: 100ms, timeout: 50ms}
routes:
  r: {path: "/{p:*}", upstream: pool}
`, a.URL, b.URL))
	testkit.Eventually(t, 5*time.Second, func() bool {
		testkit.Do(t, "GET", gw.URL+"/x", "")
		return adminUpstreams(t, gw).Upstreams[0].Targets[0].State == "ejected"
	}, "target a ejected")
	failing.Store(false)
	testkit.Eventually(t, 5*time.Second, func() bool {
		return adminUpstreams(t, gw).Upstreams[0].Targets[0].State == "healthy"
	}, "a health check ends the 1h ejection")
	if !strings.Contains(gw.Logs.String(), "ejection ended early: health check passed") {
		t.Errorf("the early end is not logged:\n%s", gw.Logs)
	}
}
