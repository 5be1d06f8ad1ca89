package idempotency_test

import (
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/sluice-gw/sluice/internal/testkit"
	"github.com/valyala/fasthttp"
)

// provider answers POST /charges with a new id each time (a provider that
// does not de-duplicate), or with the status asked for in ?status=.
func provider(t *testing.T, delay time.Duration) (*testkit.Upstream, *atomic.Int64) {
	var n atomic.Int64
	up := testkit.NewUpstream(t, func(ctx *fasthttp.RequestCtx) {
		id := n.Add(1)
		time.Sleep(delay)
		if s := ctx.QueryArgs().GetUintOrZero("status"); s != 0 {
			ctx.SetStatusCode(s)
		}
		ctx.Response.Header.Set("X-Charge", fmt.Sprint(id))
		ctx.SetContentType("application/json")
		fmt.Fprintf(ctx, `{"id":"ch_%d"}`, id)
	})
	return up, &n
}

func gatewayYAML(url, top, block string) string {
	return fmt.Sprintf(`
log: {access_log: false}
%s
upstreams:
  pay: {url: %q, timeout: 5s}
routes:
  charges:
    path: "/{p:*}"
    upstream: pay
    plugins:
      idempotency: %s
`, top, url, block)
}

func metric(t *testing.T, gw *testkit.Gateway, name string, labels ...string) float64 {
	t.Helper()
	v, _ := gw.Metrics(t).Value(name, labels...)
	return v
}

func TestReplaysTheFirstAnswer(t *testing.T) {
	t.Parallel()
	up, calls := provider(t, 0)
	gw := testkit.StartGateway(t, gatewayYAML(up.URL, "", "{}"))
	first := testkit.Do(t, "POST", gw.URL+"/charges", `{"amount":100}`, "Idempotency-Key", "order-1")
	if first.Status != 200 || string(first.Body) != `{"id":"ch_1"}` || first.Header.Get("Idempotent-Replayed") != "" {
		t.Fatalf("first call: %d %s replayed=%q", first.Status, first.Body, first.Header.Get("Idempotent-Replayed"))
	}
	for range 3 {
		again := testkit.Do(t, "POST", gw.URL+"/charges", `{"amount":100}`, "Idempotency-Key", "order-1")
		if again.Status != 200 || string(again.Body) != `{"id":"ch_1"}` || again.Header.Get("X-Charge") != "1" {
			t.Errorf("repeat: %d %s X-Charge=%q, want the first answer", again.Status, again.Body, again.Header.Get("X-Charge"))
		}
		if again.Header.Get("Idempotent-Replayed") != "true" {
			t.Errorf("repeat not marked Idempotent-Replayed: true")
		}
		if again.Header.Get("X-Request-Id") == first.Header.Get("X-Request-Id") {
			t.Errorf("a replay repeats the first call's X-Request-Id")
		}
	}
	if got := calls.Load(); got != 1 {
		t.Errorf("provider called %d times, want 1", got)
	}
	if v := metric(t, gw, "sluice_idempotency_replays_total", "route", "charges"); v != 3 {
		t.Errorf("replays metric = %v, want 3", v)
	}
	// Another key, a call without a key, and a GET go through.
	testkit.Do(t, "POST", gw.URL+"/charges", `{"amount":100}`, "Idempotency-Key", "order-2")
	testkit.Do(t, "POST", gw.URL+"/charges", `{"amount":100}`)
	testkit.Do(t, "POST", gw.URL+"/charges", `{"amount":100}`)
	testkit.Do(t, "GET", gw.URL+"/charges", "", "Idempotency-Key", "order-1")
	if got := calls.Load(); got != 5 {
		t.Errorf("provider called %d times, want 5", got)
	}
}

func TestSameKeyOtherRequestIs422(t *testing.T) {
	t.Parallel()
	up, calls := provider(t, 0)
	gw := testkit.StartGateway(t, gatewayYAML(up.URL, "", "{}"))
	testkit.Do(t, "POST", gw.URL+"/charges", `{"amount":100}`, "Idempotency-Key", "k")
	for _, c := range []struct{ method, path, body string }{
		{"POST", "/charges", `{"amount":200}`},
		{"POST", "/refunds", `{"amount":100}`},
		{"POST", "/charges?x=1", `{"amount":100}`},
		{"PATCH", "/charges", `{"amount":100}`},
	} {
		resp := testkit.Do(t, c.method, gw.URL+c.path, c.body, "Idempotency-Key", "k")
		testkit.WantProblem(t, resp, 422, "bad_request")
	}
	if got := calls.Load(); got != 1 {
		t.Errorf("provider called %d times, want 1", got)
	}
	if v := metric(t, gw, "sluice_idempotency_conflicts_total", "route", "charges", "reason", "mismatch"); v != 4 {
		t.Errorf("mismatch metric = %v, want 4", v)
	}
}

func TestInFlightConflictAndWait(t *testing.T) {
	t.Parallel()
	for _, mode := range []string{"conflict", "wait"} {
		t.Run(mode, func(t *testing.T) {
			t.Parallel()
			up, calls := provider(t, 300*time.Millisecond)
			gw := testkit.StartGateway(t, gatewayYAML(up.URL, "", "{in_flight: "+mode+"}"))
			var wg sync.WaitGroup
			var first *testkit.Response
			wg.Go(func() {
				first = testkit.Do(t, "POST", gw.URL+"/charges", "a=1", "Idempotency-Key", "slow")
			})
			testkit.Eventually(t, 2*time.Second, func() bool { return calls.Load() == 1 }, "first call reaches the provider")
			second := testkit.Do(t, "POST", gw.URL+"/charges", "a=1", "Idempotency-Key", "slow")
			wg.Wait()
			if first.Status != 200 {
				t.Fatalf("first: %d", first.Status)
			}
			if mode == "conflict" {
				testkit.WantProblem(t, second, 409, "bad_request")
				if v := metric(t, gw, "sluice_idempotency_conflicts_total", "route", "charges", "reason", "in_flight"); v != 1 {
					t.Errorf("in_flight metric = %v, want 1", v)
				}
			} else if second.Status != 200 || string(second.Body) != string(first.Body) || second.Header.Get("Idempotent-Replayed") != "true" {
				t.Errorf("waiting repeat: %d %s, want the first answer replayed (%s)", second.Status, second.Body, first.Body)
			}
			if got := calls.Load(); got != 1 {
				t.Errorf("provider called %d times, want 1", got)
			}
		})
	}
}

// 5xx, 429 and gateway errors are not stored: the retry goes through.
func TestFailuresAreNotStored(t *testing.T) {
	t.Parallel()
	up, calls := provider(t, 0)
	gw := testkit.StartGateway(t, gatewayYAML(up.URL, "", "{}"))
	for i, s := range []int{500, 503, 429, 408} {
		key := fmt.Sprint("fail-", s)
		testkit.Do(t, "POST", gw.URL+fmt.Sprint("/charges?status=", s), "a", "Idempotency-Key", key)
		resp := testkit.Do(t, "POST", gw.URL+fmt.Sprint("/charges?status=", s), "a", "Idempotency-Key", key)
		if resp.Header.Get("Idempotent-Replayed") != "" {
			t.Errorf("%d was replayed", s)
		}
		if got := calls.Load(); got != int64(2*(i+1)) {
			t.Errorf("after %d: provider called %d times, want %d", s, got, 2*(i+1))
		}
	}
	// A 4xx is the provider's final word: stored.
	testkit.Do(t, "POST", gw.URL+"/charges?status=400", "a", "Idempotency-Key", "bad")
	resp := testkit.Do(t, "POST", gw.URL+"/charges?status=400", "a", "Idempotency-Key", "bad")
	if resp.Status != 400 || resp.Header.Get("Idempotent-Replayed") != "true" {
		t.Errorf("400: %d replayed=%q, want the 400 replayed", resp.Status, resp.Header.Get("Idempotent-Replayed"))
	}
	// A timeout (gateway error) is not stored.
	slow, slowCalls := provider(t, 400*time.Millisecond)
	gw2 := testkit.StartGateway(t, strings.Replace(gatewayYAML(slow.URL, "", "{}"), "timeout: 5s", "timeout: 100ms", 1))
	for range 2 {
		testkit.WantProblem(t, testkit.Do(t, "POST", gw2.URL+"/charges", "a", "Idempotency-Key", "t"), 504, "upstream_timeout")
	}
	testkit.Eventually(t, 2*time.Second, func() bool { return slowCalls.Load() == 2 }, "both timed-out calls reached the provider")
}

func TestBadKeys(t *testing.T) {
	t.Parallel()
	up, calls := provider(t, 0)
	gw := testkit.StartGateway(t, gatewayYAML(up.URL, "", "{}"))
	for name, key := range map[string]string{
		"10KiB":     strings.Repeat("k", 10<<10),
		"256B":      strings.Repeat("k", 256),
		"control":   "ab\tcd", // a tab: the Go client refuses the other control characters
		"non-ascii": "ключ",
	} {
		resp, err := testkit.TryDo("POST", gw.URL+"/charges", "a", "Idempotency-Key", key)
		if err != nil {
			t.Errorf("%s: %v", name, err)
			continue
		}
		p := testkit.WantProblem(t, resp, 400, "bad_request")
		if d, _ := p["detail"].(string); !strings.Contains(d, "Idempotency-Key") {
			t.Errorf("%s: detail %q does not name the header", name, d)
		}
	}
	if got := calls.Load(); got != 0 {
		t.Errorf("provider called %d times, want 0", got)
	}
}

// A full in-process store lets calls through un-deduplicated, counted.
func TestFullStoreBypasses(t *testing.T) {
	t.Parallel()
	up, calls := provider(t, 0)
	gw := testkit.StartGateway(t, gatewayYAML(up.URL, "", "{max_entries: 2}"))
	for i := range 3 {
		testkit.Do(t, "POST", gw.URL+"/charges", "a", "Idempotency-Key", fmt.Sprint("k", i))
	}
	resp := testkit.Do(t, "POST", gw.URL+"/charges", "a", "Idempotency-Key", "k2")
	if resp.Status != 200 || resp.Header.Get("Idempotent-Replayed") != "" {
		t.Errorf("third key with a full store: %d replayed=%q, want a fresh answer", resp.Status, resp.Header.Get("Idempotent-Replayed"))
	}
	if got := calls.Load(); got != 4 {
		t.Errorf("provider called %d times, want 4", got)
	}
	if v := metric(t, gw, "sluice_idempotency_bypassed_total", "route", "charges", "reason", "store_full"); v != 2 {
		t.Errorf("store_full metric = %v, want 2", v)
	}
	// The stored keys still replay.
	if r := testkit.Do(t, "POST", gw.URL+"/charges", "a", "Idempotency-Key", "k0"); r.Header.Get("Idempotent-Replayed") != "true" {
		t.Errorf("k0 not replayed")
	}
}

// Two gateways sharing Redis: either replays what the other stored; with
// Redis gone, calls go through, counted, never a 5xx from Sluice.
func TestReplayAcrossGatewaysAndRedisGone(t *testing.T) {
	t.Parallel()
	rd := testkit.StartRedis(t)
	up, calls := provider(t, 0)
	top := fmt.Sprintf("cluster: {redis: {addr: %q, key_prefix: \"t:\"}}", rd.Addr)
	a := testkit.StartGateway(t, gatewayYAML(up.URL, top, "{}"))
	b := testkit.StartGateway(t, gatewayYAML(up.URL, top, "{}"))
	first := testkit.Do(t, "POST", a.URL+"/charges", `{"amount":1}`, "Idempotency-Key", "x")
	again := testkit.Do(t, "POST", b.URL+"/charges", `{"amount":1}`, "Idempotency-Key", "x")
	if again.Status != first.Status || string(again.Body) != string(first.Body) || again.Header.Get("Idempotent-Replayed") != "true" ||
		again.Header.Get("Content-Type") != "application/json" {
		t.Errorf("replay on the other gateway: %d %s %v, want %s", again.Status, again.Body, again.Header, first.Body)
	}
	testkit.WantProblem(t, testkit.Do(t, "POST", b.URL+"/charges", `{"amount":2}`, "Idempotency-Key", "x"), 422, "bad_request")
	if got := calls.Load(); got != 1 {
		t.Errorf("provider called %d times, want 1", got)
	}
	rd.Stop()
	for i := range 2 {
		resp := testkit.Do(t, "POST", a.URL+"/charges", `{"amount":1}`, "Idempotency-Key", "y")
		if resp.Status != 200 {
			t.Errorf("Redis gone, call %d: %d %s, want the provider's 200", i, resp.Status, resp.Body)
		}
	}
	if got := calls.Load(); got != 3 {
		t.Errorf("provider called %d times, want 3", got)
	}
	if v := metric(t, a, "sluice_idempotency_bypassed_total", "route", "charges", "reason", "store_unavailable"); v < 2 {
		t.Errorf("store_unavailable metric = %v, want at least 2", v)
	}
	if n := strings.Count(a.Logs.String(), "idempotency: Redis is unreachable"); n != 1 {
		t.Errorf("Redis outage logged %d times, want once", n)
	}
}

func TestConfigErrors(t *testing.T) {
	t.Parallel()
	for block, want := range map[string][2]string{
		"{in_flight: maybe}":  {"routes.charges.plugins.idempotency.in_flight", `unknown mode "maybe"`},
		"{ttl: 10ms}":         {"routes.charges.plugins.idempotency.ttl", "at least 1s"},
		`{header: "a b"}`:     {"routes.charges.plugins.idempotency.header", "invalid header name"},
		"{max_key_length: 0}": {"routes.charges.plugins.idempotency.max_key_length", "between 1 and 4096"},
		"{methods: [post]}":   {"routes.charges.plugins.idempotency.methods[0]", "upper-case"},
	} {
		testkit.WantOneProblem(t, testkit.ConfigProblems(t, gatewayYAML("http://127.0.0.1:1", "", block)), want[0], want[1])
	}
}
