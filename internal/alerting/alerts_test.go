package alerting_test

import (
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/sluice-gw/sluice/internal/testkit"
	"github.com/sluice-gw/sluice/proxy"
	"github.com/valyala/fasthttp"
)

const (
	adminToken  = "alerting-test-admin-token"
	consumerKey = "alerting-test-consumer-key"
	// slowFor is how long the slow provider takes: above the 2.5s p99
	// threshold of SluiceRouteHighLatencyP99, well inside the 30s timeout.
	slowFor = 2600 * time.Millisecond
	// driveLimit bounds every traffic loop, whatever happens to the test.
	driveLimit = 3 * time.Minute
	// alertDeadline bounds the wait for the alerts once traffic flows.
	alertDeadline = 60 * time.Second
)

// gatewayA is the gateway under test: cluster mode (Redis), one route per
// failure the alerts are for, and the plugins whose series the dashboard
// shows. Arguments: redis, ok, dead, flaky, slow, narrow, token-ok,
// token-bad (URLs or addresses), the contract's OpenAPI document.
const gatewayA = `
log: {level: info, access_log: false}
admin: {token: %q}
cluster: {redis: {addr: %q, key_prefix: "alerting:"}}
cache: {max_size: 1MiB, max_entry_size: 128KiB, shards: 1}   # small: big answers evict
consumers:
  svc: {keys: [%q]}
plugins:
  normalize_errors: {}
upstreams:
  ok:
    url: %q
  dead:                                  # nothing listens: connection refused
    url: "http://%s"
    plugins: {retry: {}, circuit_breaker: {}}
  flaky:                                 # answers 502; retries soon exceed the budget
    url: %q
    plugins: {retry: {budget: 0.1, min_retries: 1}}
  slow:
    url: %q
  narrow:                                # one connection: the rest is refused as overloaded
    url: %q
    max_conns: 1
  oauthok:
    url: %[4]q
    plugins:
      inject_auth: {type: oauth2_client_credentials, token_url: "%[9]s/token", client_id: sluice, client_secret: alerting-test-secret}
  oauthbad:
    url: %[4]q
    plugins:
      inject_auth: {type: oauth2_client_credentials, token_url: "%[10]s/token", client_id: sluice, client_secret: alerting-test-secret}
  drifting:                              # answers "ok" where its OpenAPI document says JSON
    url: %[4]q
    plugins: {contract: {spec: "file:%[11]s"}}
routes:
  ok:       {path: "/ok/{p:*}", upstream: ok}
  cached:   {path: "/cached/{p:*}", upstream: ok, plugins: {cache: {}}}
  auth:     {path: "/auth/{p:*}", upstream: ok, plugins: {authenticate: {}}}
  limited:  {path: "/limited/{p:*}", upstream: ok, plugins: {rate_limit: {rate: 1000, per: 1s, burst: 1000, key: upstream, respect_upstream: true}}}
  boom:     {path: "/boom/{p:*}", upstream: ok, plugins: {boom: {}}}
  dead:     {path: "/dead/{p:*}", upstream: dead}
  flaky:    {path: "/flaky/{p:*}", upstream: flaky}
  slow:     {path: "/slow/{p:*}", upstream: slow}
  narrow:   {path: "/narrow/{p:*}", upstream: narrow}
  oauthok:  {path: "/oauthok/{p:*}", upstream: oauthok}
  oauthbad: {path: "/oauthbad/{p:*}", upstream: oauthbad}
  contract: {path: "/contract/{p:*}", upstream: drifting, strip_prefix: /contract}
`

// gatewayB is a second instance, stopped during the test (SluiceDown).
const gatewayB = `
log: {level: error, access_log: false}
upstreams: {ok: {url: %q}}
routes: {ok: {path: "/ok/{p:*}", upstream: ok}}
`

// panicky is a plugin with a bug: it panics on every call.
type panicky struct{}

func (panicky) Handle(*fasthttp.RequestCtx, *proxy.Exchange, proxy.Handler) error {
	panic("alerting test: a plugin bug")
}

// want is an alert expected active: its name and labels it must carry.
type want struct {
	alert  string
	labels map[string]string
}

func (w want) String() string { return fmt.Sprintf("%s%v", w.alert, w.labels) }

// The files Prometheus loads: the real rules, whose `for:` of minutes lets a
// test of seconds see them pending, and a copy with `for: 0s`, whose alerts
// fire as soon as their expression holds.
const (
	realRules = "alerts.yml"
	fastRules = "alerts_for0s.yml"
)

var acceptedStates = map[string][]string{
	realRules: {"pending", "firing"},
	fastRules: {"firing"},
}

// TestAlertsOnRealPrometheus runs Prometheus against two gateways and drives
// the failure each rule of deploy/prometheus/alerts.yml is named for; every
// alert must be pending (real rules) and firing (the for: 0s copy) for the
// labels of that failure, and no alert may name the healthy route. Then every
// query of the Grafana dashboard must return data.
func TestAlertsOnRealPrometheus(t *testing.T) {
	repo := filepath.Join("..", "..")
	dir := t.TempDir()

	// Providers, all on 127.0.0.1.
	big := strings.Repeat("b", 100<<10)
	ok := testkit.NewUpstream(t, func(ctx *fasthttp.RequestCtx) {
		ctx.Response.Header.Set("Cache-Control", "max-age=60")
		ctx.Response.Header.Set("X-RateLimit-Remaining", "4999")
		ctx.Response.Header.Set("X-RateLimit-Reset", "60")
		if strings.Contains(string(ctx.Path()), "/big/") {
			ctx.SetBodyString(big)
			return
		}
		ctx.SetBodyString("ok")
	})
	dead := testkit.ClosedAddr(t)
	flaky := testkit.NewUpstream(t, func(ctx *fasthttp.RequestCtx) {
		ctx.SetStatusCode(502)
		ctx.SetBodyString(`{"message":"bad gateway upstream of the provider"}`)
	})
	slow := testkit.NewUpstream(t, func(ctx *fasthttp.RequestCtx) {
		time.Sleep(slowFor)
		ctx.SetBodyString("slow")
	})
	narrow := testkit.NewUpstream(t, func(ctx *fasthttp.RequestCtx) {
		time.Sleep(time.Second)
		ctx.SetBodyString("narrow")
	})
	tokenOK := testkit.NewUpstream(t, func(ctx *fasthttp.RequestCtx) {
		ctx.SetContentType("application/json")
		ctx.SetBodyString(`{"access_token":"alerting-token","token_type":"Bearer","expires_in":3600}`)
	})
	tokenBad := testkit.NewUpstream(t, func(ctx *fasthttp.RequestCtx) {
		ctx.SetStatusCode(503)
	})
	rd := testkit.StartRedis(t)

	reg := testkit.WithPlugin("authenticate", proxy.Define("boom", func(*struct{}, *proxy.Build) (proxy.Plugin, error) {
		return panicky{}, nil
	}))
	spec, err := filepath.Abs(filepath.Join(repo, "plugins", "contract", "testdata", "resend-emails.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	cfgA := fmt.Sprintf(gatewayA, adminToken, rd.Addr, consumerKey, ok.URL, dead, flaky.URL, slow.URL, narrow.URL,
		tokenOK.URL, tokenBad.URL, spec)
	gwA := testkit.StartGateway(t, cfgA, testkit.Options{Registry: reg})
	gwB := testkit.StartGateway(t, fmt.Sprintf(gatewayB, ok.URL))
	instA := strings.TrimPrefix(gwA.AdminURL, "http://")
	instB := strings.TrimPrefix(gwB.AdminURL, "http://")

	// Prometheus: 1s scrapes and evaluations, job sluice from a file that
	// lists no target yet.
	rulesSrc := filepath.Join(repo, "deploy", "prometheus", "alerts.yml")
	raw, err := os.ReadFile(rulesSrc)
	if err != nil {
		t.Fatal(err)
	}
	testkit.WriteFile(t, filepath.Join(dir, realRules), string(raw))
	rewriteFor(t, rulesSrc, filepath.Join(dir, fastRules), "0s")
	targets := filepath.Join(dir, "targets.json")
	writeTargets(t, targets)
	prom := startPrometheus(t, dir, fmt.Sprintf(`
global:
  scrape_interval: 1s
  scrape_timeout: 1s
  evaluation_interval: 1s
rule_files: [%s, %s]
scrape_configs:
  - job_name: sluice
    file_sd_configs:
      - files: [targets.json]
`, realRules, fastRules))

	// 1. No target: SluiceTargetMissing.
	if !waitAlerts(t, prom, 30*time.Second, []want{{"SluiceTargetMissing", map[string]string{"job": "sluice"}}}) {
		t.FailNow()
	}

	// 2. Both gateways discovered and scraped.
	writeTargets(t, targets, instA, instB)
	waitFor(t, 30*time.Second, func() (bool, string) {
		v, err := prom.query(`sum(up{job="sluice"})`)
		if err != nil {
			return false, err.Error()
		}
		return len(v) == 1 && v[0].value() == "2", prom.describe(`up{job="sluice"}`)
	}, "both gateways scraped")

	// 3. Traffic, each loop bounded by driveLimit and stopped after the checks.
	d := newDrivers()
	defer d.stop()
	get := func(url string, header ...string) func() (*testkit.Response, error) {
		return func() (*testkit.Response, error) { return testkit.TryDo("GET", url, "", header...) }
	}
	d.loop("ok", 1, 100*time.Millisecond, get(gwA.URL+"/ok/x"))
	d.loop("ok (instance B)", 1, 200*time.Millisecond, get(gwB.URL+"/ok/x"))
	d.loop("cached GET", 1, 100*time.Millisecond, get(gwA.URL+"/cached/item"))
	d.loop("cached POST", 1, time.Second, func() (*testkit.Response, error) {
		return testkit.TryDo("POST", gwA.URL+"/cached/item", "x")
	})
	var bigN atomic.Int64 // a new key each time: the 1MiB store evicts
	d.loop("cached big", 1, 200*time.Millisecond, func() (*testkit.Response, error) {
		return testkit.TryDo("GET", fmt.Sprintf("%s/cached/big/%d", gwA.URL, bigN.Add(1)), "")
	})
	d.loop("auth without key", 1, 200*time.Millisecond, get(gwA.URL+"/auth/x"))
	d.loop("auth with key", 1, 200*time.Millisecond, get(gwA.URL+"/auth/x", "X-Api-Key", consumerKey))
	d.loop("limited", 1, 50*time.Millisecond, get(gwA.URL+"/limited/x"))
	d.loop("dead", 1, 50*time.Millisecond, get(gwA.URL+"/dead/x"))
	d.loop("flaky", 1, 50*time.Millisecond, get(gwA.URL+"/flaky/x"))
	d.loop("slow", 12, 0, get(gwA.URL+"/slow/x"))
	d.loop("narrow", 3, 50*time.Millisecond, get(gwA.URL+"/narrow/x"))
	d.loop("unmatched", 1, 10*time.Millisecond, get(gwA.URL+"/nope/x"))
	d.loop("oauthok", 1, 200*time.Millisecond, get(gwA.URL+"/oauthok/x"))
	d.loop("oauthbad", 1, 100*time.Millisecond, get(gwA.URL+"/oauthbad/x"))
	d.loop("contract drift", 1, 200*time.Millisecond, get(gwA.URL+"/contract/emails/4ef9a417"))

	// One panic only: the route's internal_error series is born at 1.
	d.once("boom", func() {
		resp, err := testkit.TryDo("GET", gwA.URL+"/boom/x", "")
		if err != nil || resp.Status != 500 {
			t.Errorf("boom: %v %v, want 500 internal_error", err, resp)
		}
	})
	// Redis goes away: distributed limits fall back to local decisions.
	d.once("redis", func() {
		if d.sleep(3 * time.Second) {
			rd.Stop()
		}
	})
	// Instance B goes away: its scrapes fail.
	d.once("stop B", func() {
		if d.sleep(2 * time.Second) {
			_ = gwB.Stop()
		}
	})
	// A reload is rejected, once Prometheus has seen the failure counter at
	// 0 (the gateway creates it at 0 for that purpose).
	d.once("bad reload", func() {
		sel := fmt.Sprintf(`sluice_config_reloads_total{job="sluice", instance=%q, result="failure"} == 0`, instA)
		for i := 0; ; i++ {
			if v, err := prom.query(sel); err == nil && len(v) == 1 {
				break
			}
			if i == 200 || !d.sleep(100*time.Millisecond) {
				t.Errorf("Prometheus never saw %s", sel)
				return
			}
		}
		if err := os.WriteFile(gwA.File, []byte("upstreams: {}\nroutes: {broken: {path: /b, upstream: nowhere}}\n"), 0o600); err != nil {
			t.Error(err)
			return
		}
		resp, err := testkit.TryDo("POST", gwA.AdminURL+"/admin/reload", "", "Authorization", "Bearer "+adminToken)
		if werr := os.WriteFile(gwA.File, []byte(cfgA), 0o600); werr != nil {
			t.Error(werr)
		}
		if err != nil || resp.Status != 422 {
			t.Errorf("bad reload: %v %v, want 422", err, resp)
		}
		// The fixed file loads again (the dashboard counts both results).
		resp, err = testkit.TryDo("POST", gwA.AdminURL+"/admin/reload", "", "Authorization", "Bearer "+adminToken)
		if err != nil || resp.Status != 200 {
			t.Errorf("good reload: %v %v, want 200", err, resp)
		}
	})

	// 4. Every other alert, for the failure it is named for.
	wants := []want{
		{"SluiceDown", map[string]string{"instance": instB}},
		{"SluiceRouteHighErrorRatio", map[string]string{"route": "flaky"}},
		{"SluiceRouteVeryHighErrorRatio", map[string]string{"route": "flaky"}},
		{"SluiceRouteHighLatencyP99", map[string]string{"route": "slow"}},
		{"SluiceOverloaded", map[string]string{"instance": instA, "route": "narrow"}},
		{"SluiceUnmatchedRequests", map[string]string{"job": "sluice"}},
		{"SluiceInternalErrors", map[string]string{"instance": instA, "route": "boom"}},
		{"SluiceUpstreamFailing", map[string]string{"upstream": "dead"}},
		{"SluiceConfigReloadFailed", map[string]string{"instance": instA}},
		{"SluiceCircuitOpen", map[string]string{"instance": instA, "upstream": "dead"}},
		{"SluiceRetryBudgetExhausted", map[string]string{"instance": instA, "upstream": "flaky"}},
		{"SluiceOAuthTokenFetchFailing", map[string]string{"instance": instA, "upstream": "oauthbad"}},
		{"SluiceRedisUnreachable", map[string]string{"instance": instA}},
		{"SluiceContractDrift", map[string]string{"upstream": "drifting", "operation": "emails/get", "kind": "content_type"}},
	}
	alertsOK := waitAlerts(t, prom, alertDeadline, wants)
	checkCoverage(t, prom, append(wants, want{alert: "SluiceTargetMissing"}))

	// Healthy parts must not alert: the ok route and upstream at all, and
	// SluiceUpstreamFailing neither for the slow provider nor for the one
	// whose connection pool (max_conns) is full.
	if rules, err := prom.alertRules(); err != nil {
		t.Error(err)
	} else {
		for file, byName := range rules {
			for name, r := range byName {
				for _, a := range r.Alerts {
					if a.Labels["route"] == "ok" || a.Labels["upstream"] == "ok" ||
						(name == "SluiceUpstreamFailing" && (a.Labels["upstream"] == "narrow" || a.Labels["upstream"] == "slow")) {
						t.Errorf("%s: %s is %s for a healthy part: %v (expression: %s)", file, name, a.State, a.Labels, prom.describe(r.Query))
					}
				}
			}
		}
	}

	// 5. The dashboard's queries, while traffic still flows.
	if alertsOK {
		checkDashboard(t, prom, filepath.Join(repo, "deploy", "grafana", "dashboards", "sluice.json"))
	}

	// Redis comes back while the limited route still has traffic: the
	// gateway shares its decisions again and its client stops redialling.
	rd.Start()
	testkit.Eventually(t, 15*time.Second, func() bool {
		return strings.Contains(gwA.Logs.String(), "Redis answers again")
	}, "the gateway never noticed that Redis is back")
	d.stop()
	t.Logf("traffic (status: count, -1 = transport error): %s", d.summary())
}

// writeTargets writes the file_sd file of job sluice (atomically: Prometheus
// watches it).
func writeTargets(t *testing.T, file string, addrs ...string) {
	t.Helper()
	list := "[]"
	if len(addrs) > 0 {
		list = fmt.Sprintf(`[{"targets": ["%s"]}]`, strings.Join(addrs, `", "`))
	}
	tmp := file + ".tmp"
	testkit.WriteFile(t, tmp, list)
	if err := os.Rename(tmp, file); err != nil {
		t.Fatal(err)
	}
}

// waitFor polls cond every 250ms until it holds; after timeout it fails the
// test with what cond last reported.
func waitFor(t *testing.T, timeout time.Duration, cond func() (bool, string), what string) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		done, state := cond()
		if done {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: not after %v; last: %s", what, timeout, state)
		}
		time.Sleep(250 * time.Millisecond)
	}
}

// waitAlerts polls /api/v1/rules until each wanted alert is active in both
// rule files (pending or firing in the real one, firing in the for: 0s
// copy), or timeout passes; then it reports each missing one with its rule's
// state and the current value of its expression. It logs how long each took.
func waitAlerts(t *testing.T, prom *prometheus, timeout time.Duration, wants []want) bool {
	t.Helper()
	start := time.Now()
	met := map[string]time.Duration{} // file + want -> when
	var rules map[string]map[string]rule
	for {
		var err error
		if rules, err = prom.alertRules(); err != nil {
			t.Fatalf("rules: %v", err)
		}
		for _, w := range wants {
			for file, states := range acceptedStates {
				key := file + " " + w.String()
				if _, done := met[key]; done {
					continue
				}
				if _, ok := activeAlert(rules[file][w.alert], w.labels, states...); ok {
					met[key] = time.Since(start).Round(100 * time.Millisecond)
				}
			}
		}
		if len(met) == len(wants)*len(acceptedStates) || time.Since(start) > timeout {
			break
		}
		time.Sleep(500 * time.Millisecond)
	}
	all := true
	for _, w := range wants {
		for _, file := range []string{realRules, fastRules} {
			key := file + " " + w.String()
			if at, ok := met[key]; ok {
				a, _ := activeAlert(rules[file][w.alert], w.labels, acceptedStates[file]...)
				t.Logf("%-18s %-32s %-8s after %-6v value %s", file, w.alert, a.State, at, a.Value)
				continue
			}
			all = false
			r, found := rules[file][w.alert]
			if !found {
				t.Errorf("%s: no rule %s", file, w.alert)
				continue
			}
			var active []string
			for _, a := range r.Alerts {
				active = append(active, fmt.Sprintf("%s %v", a.State, a.Labels))
			}
			t.Errorf("%s: %s not %s for %v within %v\n  rule state %s, health %s %s\n  alerts: %v\n  expression now: %s\n  its values before the thresholds:%s",
				file, w.alert, strings.Join(acceptedStates[file], " or "), w.labels, timeout,
				r.State, r.Health, r.LastError, active, prom.describe(r.Query), prom.explain(r.Query))
		}
	}
	return all
}

// checkCoverage fails when alerts.yml has an alert the test does not drive,
// or the test names one that does not exist.
func checkCoverage(t *testing.T, prom *prometheus, wants []want) {
	t.Helper()
	rules, err := prom.alertRules()
	if err != nil {
		t.Fatal(err)
	}
	driven := map[string]bool{}
	for _, w := range wants {
		driven[w.alert] = true
		if _, ok := rules[realRules][w.alert]; !ok {
			t.Errorf("the test drives %s, which %s does not define", w.alert, realRules)
		}
	}
	for name := range rules[realRules] {
		if !driven[name] {
			t.Errorf("%s defines %s, which this test does not drive: add its failure", realRules, name)
		}
	}
	if len(rules[fastRules]) != len(rules[realRules]) {
		t.Errorf("%s has %d alerts, %s %d", fastRules, len(rules[fastRules]), realRules, len(rules[realRules]))
	}
}

// checkDashboard runs every query of the dashboard until each returns data
// (at most 20s: rates need two samples in their window) and reports the
// count.
func checkDashboard(t *testing.T, prom *prometheus, file string) {
	t.Helper()
	queries := dashboardQueries(t, file)
	if len(queries) < 20 {
		t.Fatalf("%s: only %d queries found", file, len(queries))
	}
	type result struct {
		n, nonZero int
		shown      string
		err        error
	}
	results := make([]result, len(queries))
	deadline := time.Now().Add(20 * time.Second)
	for {
		missing := 0
		for i, q := range queries {
			if results[i].n > 0 {
				continue
			}
			r := &results[i]
			r.n, r.nonZero, r.shown, r.err = q.run(prom)
			if r.n == 0 {
				missing++
			}
		}
		if missing == 0 || time.Now().After(deadline) {
			break
		}
		time.Sleep(time.Second)
	}
	withData, nonZero, panels := 0, 0, 0
	for i, q := range queries {
		r := results[i]
		if !q.Variable {
			panels++
		}
		switch {
		case r.err != nil:
			t.Errorf("dashboard %s: %v\n  query: %s", q.Where, r.err, q.Expr)
		case r.n == 0:
			t.Errorf("dashboard %s returns no data: %s\n  query: %s", q.Where, r.shown, q.Expr)
		default:
			withData++
			if r.nonZero > 0 {
				nonZero++
			} else {
				t.Logf("dashboard %s: data, all zero: %s", q.Where, r.shown)
			}
		}
	}
	t.Logf("dashboard: %d of %d queries (%d panel targets, %d template variables) return data, %d of them a non-zero value",
		withData, len(queries), panels, len(queries)-panels, nonZero)
}

// drivers run bounded traffic loops and one-shot actions until stopped.
type drivers struct {
	done     chan struct{}
	stopOnce sync.Once
	wg       sync.WaitGroup
	mu       sync.Mutex
	statuses map[string]map[int]int
}

func newDrivers() *drivers {
	return &drivers{done: make(chan struct{}), statuses: map[string]map[int]int{}}
}

// sleep waits d, or less if the drivers are stopped; it reports whether
// they are still running.
func (d *drivers) sleep(dur time.Duration) bool {
	select {
	case <-d.done:
		return false
	case <-time.After(dur):
		return true
	}
}

// loop runs call in workers goroutines, pausing between calls, until
// stopped or driveLimit passes.
func (d *drivers) loop(name string, workers int, pause time.Duration, call func() (*testkit.Response, error)) {
	until := time.Now().Add(driveLimit)
	for range workers {
		d.wg.Go(func() {
			for time.Now().Before(until) {
				select {
				case <-d.done:
					return
				default:
				}
				status := -1
				if resp, err := call(); err == nil {
					status = resp.Status
				}
				d.mu.Lock()
				if d.statuses[name] == nil {
					d.statuses[name] = map[int]int{}
				}
				d.statuses[name][status]++
				d.mu.Unlock()
				if pause > 0 && !d.sleep(pause) {
					return
				}
			}
		})
	}
}

func (d *drivers) once(name string, f func()) { d.wg.Go(f) }

// stop ends every loop and waits for them.
func (d *drivers) stop() {
	d.stopOnce.Do(func() { close(d.done) })
	d.wg.Wait()
}

func (d *drivers) summary() string {
	d.mu.Lock()
	defer d.mu.Unlock()
	var lines []string
	for name, st := range d.statuses {
		var parts []string
		for s, n := range st {
			parts = append(parts, fmt.Sprintf("%d: %d", s, n))
		}
		sort.Strings(parts)
		lines = append(lines, fmt.Sprintf("%s {%s}", name, strings.Join(parts, ", ")))
	}
	sort.Strings(lines)
	return "\n  " + strings.Join(lines, "\n  ")
}
