package retry_test

import (
	"encoding/json"
	"fmt"
	"regexp"
	"sync"
	"testing"
	"time"

	"github.com/sluice-gw/sluice/internal/testkit"
	"github.com/valyala/fasthttp"
)

func TestMain(m *testing.M) { testkit.RunWithoutLeaks(m) }

// gateway serves one route "/" to an upstream with the given upstream lines
// and plugins block.
func gateway(t *testing.T, upstream, plugins string) *testkit.Gateway {
	t.Helper()
	return testkit.StartGateway(t, fmt.Sprintf(`
log: {access_log: false}
upstreams:
  up:
    %s
    plugins: %s
routes:
  r: {path: "/{p:*}", upstream: up}
`, upstream, plugins))
}

func metric(t *testing.T, gw *testkit.Gateway, name string, labels ...string) float64 {
	t.Helper()
	v, _ := gw.Metrics(t).Value(name, labels...)
	return v
}

func TestRetriesIdempotentRequests(t *testing.T) {
	t.Parallel()
	up := testkit.NewFaultUpstream(t)
	gw := gateway(t, `url: "`+up.URL+`"`, `{retry: {attempts: 3, backoff: 1ms}}`)
	up.Script(testkit.Err503, testkit.Fault{Status: 502}, testkit.OK)
	if resp := testkit.Do(t, "GET", gw.URL+"/x", ""); resp.Status != 200 {
		t.Fatalf("status %d, want 200 after two retries", resp.Status)
	}
	if up.Hits() != 3 {
		t.Errorf("hits = %d, want 3", up.Hits())
	}
	// attempts bounds the tries.
	up.Script(testkit.Err503, testkit.Err503, testkit.Err503, testkit.OK)
	if resp := testkit.Do(t, "PUT", gw.URL+"/x", "v"); resp.Status != 503 {
		t.Fatalf("status %d, want the third 503", resp.Status)
	}
	if up.Hits() != 6 {
		t.Errorf("hits = %d, want 6", up.Hits())
	}
	if v := metric(t, gw, "sluice_retries_total", "upstream", "up", "reason", "503"); v != 3 {
		t.Errorf("retries{reason=503} = %v, want 3", v)
	}
	if v := metric(t, gw, "sluice_retries_total", "upstream", "up", "reason", "502"); v != 1 {
		t.Errorf("retries{reason=502} = %v, want 1", v)
	}
	// A status not listed in on is not retried.
	up.Script(testkit.Err500, testkit.OK)
	if resp := testkit.Do(t, "GET", gw.URL+"/x", ""); resp.Status != 500 {
		t.Errorf("500 (not in on): status %d, want it passed through", resp.Status)
	}
	if up.Hits() != 7 {
		t.Errorf("hits = %d, want 7", up.Hits())
	}
}

// A POST is never repeated without an Idempotency-Key; with one, it is, with
// the same body and key on every attempt.
func TestPostNeedsIdempotencyKey(t *testing.T) {
	t.Parallel()
	up := testkit.NewFaultUpstream(t)
	gw := gateway(t, `url: "`+up.URL+`"`, `{retry: {attempts: 3, backoff: 1ms, methods: [GET, POST, PATCH]}}`)
	for _, f := range []testkit.Fault{testkit.Err503, testkit.ResetConn, testkit.Delayed(0)} {
		before := up.Hits()
		up.Script(f, testkit.OK)
		testkit.Do(t, "POST", gw.URL+"/charge", `{"amount":100}`)
		if got := up.Hits() - before; got != 1 {
			t.Errorf("POST without Idempotency-Key after %+v: upstream hit %d times, want 1", f, got)
		}
	}
	before := up.Hits()
	up.Script(testkit.Err503, testkit.ResetConn, testkit.OK)
	resp := testkit.Do(t, "POST", gw.URL+"/charge", `{"amount":100}`, "Idempotency-Key", "order-42")
	if resp.Status != 200 {
		t.Fatalf("POST with Idempotency-Key: %d, want 200 after retries", resp.Status)
	}
	reqs := up.Requests()[before:]
	if len(reqs) != 3 {
		t.Fatalf("hits = %d, want 3", len(reqs))
	}
	for i, r := range reqs {
		if r.Body != `{"amount":100}` || r.Header.Get("Idempotency-Key") != "order-42" || r.Method != "POST" {
			t.Errorf("attempt %d: %s body %q key %q, want the same request replayed", i+1, r.Method, r.Body, r.Header.Get("Idempotency-Key"))
		}
	}
}

// Under the default block (idempotency_key: require, methods unset) a POST
// or PATCH that carries the caller's Idempotency-Key is retried, as the
// documentation says; one without a key is sent once.
func TestDefaultRetriesKeyedPost(t *testing.T) {
	t.Parallel()
	up := testkit.NewFaultUpstream(t)
	gw := gateway(t, `url: "`+up.URL+`"`, `{retry: {backoff: 1ms}}`)
	for _, method := range []string{"POST", "PATCH"} {
		before := up.Hits()
		up.Script(testkit.Err503, testkit.OK)
		if resp := testkit.Do(t, method, gw.URL+"/charge", `{"amount":100}`, "Idempotency-Key", "k-"+method); resp.Status != 200 {
			t.Errorf("%s with Idempotency-Key: status %d, want 200 after one retry", method, resp.Status)
		}
		if got := up.Hits() - before; got != 2 {
			t.Errorf("%s with Idempotency-Key: upstream hit %d times, want 2", method, got)
		}
		before = up.Hits()
		up.Script(testkit.Err503, testkit.OK)
		if resp := testkit.Do(t, method, gw.URL+"/charge", `{"amount":100}`); resp.Status != 503 {
			t.Errorf("%s without Idempotency-Key: status %d, want the 503 unretried", method, resp.Status)
		}
		if got := up.Hits() - before; got != 1 {
			t.Errorf("%s without Idempotency-Key: upstream hit %d times, want 1", method, got)
		}
	}
}

var uuidV4 = regexp.MustCompile(`^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$`)

// idempotency_key: generate adds a UUID when the caller sent none, the same on
// every attempt, a new one per request; the caller's own key is kept.
func TestGeneratedIdempotencyKey(t *testing.T) {
	t.Parallel()
	up := testkit.NewFaultUpstream(t)
	gw := gateway(t, `url: "`+up.URL+`"`, `{retry: {attempts: 3, backoff: 1ms, idempotency_key: generate}}`)
	up.Script(testkit.Err503, testkit.Err503, testkit.OK)
	if resp := testkit.Do(t, "POST", gw.URL+"/charge", "a=1"); resp.Status != 200 {
		t.Fatalf("status %d", resp.Status)
	}
	up.Script(testkit.Err503, testkit.OK)
	if resp := testkit.Do(t, "PATCH", gw.URL+"/charge", "a=2"); resp.Status != 200 {
		t.Fatalf("status %d", resp.Status)
	}
	reqs := up.Requests()
	if len(reqs) != 5 {
		t.Fatalf("hits = %d, want 5", len(reqs))
	}
	k1, k2 := reqs[0].Header.Get("Idempotency-Key"), reqs[3].Header.Get("Idempotency-Key")
	if !uuidV4.MatchString(k1) || !uuidV4.MatchString(k2) {
		t.Fatalf("generated keys %q %q, want UUIDv4", k1, k2)
	}
	if k1 == k2 {
		t.Error("two requests got the same generated key")
	}
	for i, r := range reqs {
		want := k1
		if i >= 3 {
			want = k2
		}
		if got := r.Header.Get("Idempotency-Key"); got != want {
			t.Errorf("attempt %d: key %q, want %q (the same on every attempt)", i, got, want)
		}
	}
	up.Script(testkit.OK)
	testkit.Do(t, "POST", gw.URL+"/charge", "", "Idempotency-Key", "mine")
	if got := up.Requests()[5].Header.Values("Idempotency-Key"); len(got) != 1 || got[0] != "mine" {
		t.Errorf("caller's key became %q", got)
	}
}

// Transport failures are retried as conn_error and timeout.
func TestRetriesTransportFailures(t *testing.T) {
	t.Parallel()
	up := testkit.NewFaultUpstream(t)
	gw := gateway(t, `url: "`+up.URL+`"
    timeout: 200ms`, `{retry: {attempts: 5, backoff: 1ms}}`)
	up.Script(testkit.Delayed(time.Second), testkit.Garbage, testkit.HalfBody, testkit.ResetConn, testkit.OK)
	if resp := testkit.Do(t, "GET", gw.URL+"/x", ""); resp.Status != 200 || string(resp.Body) != "ok" {
		t.Fatalf("status %d %q, want 200 ok", resp.Status, resp.Body)
	}
	if up.Hits() != 5 {
		t.Errorf("hits = %d, want 5", up.Hits())
	}
	if v := metric(t, gw, "sluice_retries_total", "upstream", "up", "reason", "timeout"); v != 1 {
		t.Errorf("retries{reason=timeout} = %v, want 1", v)
	}
	// The upstream client resends a GET once on a broken connection by
	// itself, so conn_error counts the plugin's retries only: at least one.
	if v := metric(t, gw, "sluice_retries_total", "upstream", "up", "reason", "conn_error"); v < 1 {
		t.Errorf("retries{reason=conn_error} = %v, want at least 1", v)
	}
}

// A Retry-After that fits the deadline is waited for; one that does not ends
// the retries at once with the provider's answer.
func TestRetryAfter(t *testing.T) {
	t.Parallel()
	up := testkit.NewFaultUpstream(t)
	gw := testkit.StartGateway(t, `
log: {access_log: false}
upstreams:
  up:
    url: "`+up.URL+`"
    timeout: 1s
    deadline: 5s
    plugins: {retry: {attempts: 3, backoff: 1ms, on: [429, 503]}}
routes:
  r: {path: "/{p:*}", upstream: up}
  short: {path: "/short", upstream: up, deadline: 2s}
`)
	up.Script(testkit.Fault{Status: 429, Header: []string{"Retry-After: 1"}}, testkit.OK)
	start := time.Now()
	if resp := testkit.Do(t, "GET", gw.URL+"/x", ""); resp.Status != 200 {
		t.Fatalf("status %d", resp.Status)
	}
	if d := time.Since(start); d < time.Second {
		t.Errorf("retried after %v, before the provider's Retry-After of 1s", d)
	}
	up.Script(testkit.Fault{Status: 503, Header: []string{"Retry-After: 30"}}, testkit.OK)
	before := up.Hits()
	start = time.Now()
	resp := testkit.Do(t, "GET", gw.URL+"/short", "")
	if resp.Status != 503 || resp.Header.Get("Retry-After") != "30" {
		t.Errorf("status %d Retry-After %q, want the provider's 503 and its Retry-After", resp.Status, resp.Header.Get("Retry-After"))
	}
	if d := time.Since(start); d > 1500*time.Millisecond {
		t.Errorf("took %v: a Retry-After beyond the deadline must end the retries at once", d)
	}
	if got := up.Hits() - before; got != 1 {
		t.Errorf("hits = %d, want 1", got)
	}
	up.Script()
}

// The retry budget caps retries under a sustained failure.
func TestRetryBudget(t *testing.T) {
	t.Parallel()
	up := testkit.NewFaultUpstream(t)
	up.SetDefault(testkit.Err503)
	gw := gateway(t, `url: "`+up.URL+`"`, `{retry: {attempts: 3, backoff: 1ms, budget: 0.2, min_retries: 0, budget_window: 1m}}`)
	const n = 50
	var wg sync.WaitGroup
	for range 5 {
		wg.Go(func() {
			for range n / 5 {
				if _, err := testkit.TryDo("GET", gw.URL+"/x", ""); err != nil {
					t.Error(err)
				}
			}
		})
	}
	wg.Wait()
	retries := up.Hits() - n
	// Without a budget: 2 retries per request, 100. With 20%: about 10
	// (concurrent callers may each take the last one).
	if retries > n/5+5 || retries < 1 {
		t.Errorf("%d retries for %d failing requests, want at most %d (budget 0.2)", retries, n, n/5+5)
	}
	if v := metric(t, gw, "sluice_retry_budget_exhausted_total", "upstream", "up"); v < 1 {
		t.Errorf("sluice_retry_budget_exhausted_total = %v, want > 0", v)
	}
	if v := metric(t, gw, "sluice_retries_total", "upstream", "up"); int(v) != retries {
		t.Errorf("sluice_retries_total = %v, upstream saw %d retries", v, retries)
	}
}

// The deadline covers every attempt and the waits between them.
func TestDeadlineHolds(t *testing.T) {
	t.Parallel()
	up := testkit.NewFaultUpstream(t)
	up.SetDefault(testkit.Delayed(2 * time.Second))
	gw := gateway(t, `url: "`+up.URL+`"
    timeout: 300ms
    deadline: 700ms`, `{retry: {attempts: 10, backoff: 50ms, max_backoff: 50ms}}`)
	start := time.Now()
	resp := testkit.Do(t, "GET", gw.URL+"/x", "")
	elapsed := time.Since(start)
	var p struct {
		Code string `json:"code"`
	}
	_ = json.Unmarshal(resp.Body, &p)
	if resp.Status != 504 || p.Code != "upstream_timeout" {
		t.Errorf("status %d %s, want 504 upstream_timeout", resp.Status, resp.Body)
	}
	if elapsed > 3*time.Second {
		t.Errorf("took %v with a 700ms deadline", elapsed)
	}
	if up.Hits() > 3 {
		t.Errorf("hits = %d: 10 attempts of 300ms cannot fit a 700ms deadline", up.Hits())
	}
}

// Each attempt goes to another target when there are several.
func TestRetryGoesToAnotherTarget(t *testing.T) {
	t.Parallel()
	bad, good := testkit.NewFaultUpstream(t), testkit.NewFaultUpstream(t)
	bad.SetDefault(testkit.Err503)
	for _, cb := range []string{"", ", circuit_breaker: {consecutive_failures: 100}"} {
		gw := gateway(t, fmt.Sprintf(`targets: ["%s", "%s"]
    outlier: {enabled: false}`, bad.URL, good.URL), `{retry: {attempts: 2, backoff: 1ms}`+cb+`}`)
		b0, g0 := bad.Hits(), good.Hits()
		for i := range 10 {
			if resp := testkit.Do(t, "GET", gw.URL+"/x", ""); resp.Status != 200 {
				t.Fatalf("%q request %d: %d, want the retry to reach the good target", cb, i, resp.Status)
			}
		}
		if b, g := bad.Hits()-b0, good.Hits()-g0; g != 10 || b < 1 {
			t.Errorf("%q: bad target %d hits, good %d; want every request answered by the good one", cb, b, g)
		}
	}
}

// An open circuit is not retried: the breaker answers, the upstream rests.
func TestRetryStopsAtOpenCircuit(t *testing.T) {
	t.Parallel()
	up := testkit.NewFaultUpstream(t)
	up.SetDefault(testkit.Err503)
	gw := gateway(t, `url: "`+up.URL+`"`, `{retry: {attempts: 5, backoff: 1ms}, circuit_breaker: {consecutive_failures: 2, open_for: 1m}}`)
	resp := testkit.Do(t, "GET", gw.URL+"/x", "")
	var p struct {
		Code string `json:"code"`
	}
	_ = json.Unmarshal(resp.Body, &p)
	if resp.Status != 503 || p.Code != "circuit_open" {
		t.Errorf("status %d %s, want circuit_open once the breaker opened mid-retries", resp.Status, resp.Body)
	}
	if up.Hits() != 2 {
		t.Errorf("hits = %d, want 2", up.Hits())
	}
}

func TestRetryConfigErrors(t *testing.T) {
	t.Parallel()
	cases := []struct{ name, block, path, msg string }{
		{"attempts", `{attempts: 0}`, "attempts", "between 1 and 10"},
		{"max_backoff", `{backoff: 1s, max_backoff: 10ms}`, "max_backoff", "shorter than backoff"},
		{"on", `{on: [503, sometimes]}`, "on[1]", "want a status"},
		{"on 2xx", `{on: ["2xx"]}`, "on[0]", "not an error status"},
		{"methods", `{methods: [get]}`, "methods[0]", "upper-case"},
		{"mode", `{idempotency_key: always}`, "idempotency_key", "require or generate"},
		{"budget", `{budget: 2}`, "budget", "between 0 and 1"},
		{"window", `{budget_window: 10ms}`, "budget_window", "at least 1s"},
		{"unknown", `{retries: 3}`, "retries", ""},
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
      retry: %s
`, c.block))
			testkit.WantOneProblem(t, probs, "routes.r.plugins.retry."+c.path, c.msg)
		})
	}
}

// The answer of a retried attempt reaches the caller as the provider sent it:
// nothing of the failed attempt stays, and no Content-Type is invented.
func TestRetriedAnswerIsFaithful(t *testing.T) {
	t.Parallel()
	var mu sync.Mutex
	n := 0
	up := testkit.NewUpstream(t, func(ctx *fasthttp.RequestCtx) {
		mu.Lock()
		n++
		first := n == 1
		mu.Unlock()
		if first {
			ctx.SetStatusCode(503)
			ctx.Response.Header.Set("X-Failed-Attempt", "1")
			ctx.Response.Header.SetContentType("text/html")
			ctx.SetBodyString("<h1>down</h1>")
			return
		}
		ctx.Response.Header.Set("X-Good", "1")
		ctx.SetBodyString("raw bytes")
	})
	gw := gateway(t, `url: "`+up.URL+`"`, `{retry: {backoff: 1ms}}`)
	resp := testkit.Do(t, "GET", gw.URL+"/x", "")
	if resp.Status != 200 || string(resp.Body) != "raw bytes" || resp.Header.Get("X-Good") != "1" {
		t.Fatalf("got %d %v %q", resp.Status, resp.Header, resp.Body)
	}
	if ct, failed := resp.Header.Get("Content-Type"), resp.Header.Get("X-Failed-Attempt"); ct != "" || failed != "" {
		t.Errorf("Content-Type %q, X-Failed-Attempt %q: want neither (nothing invented, nothing left over)", ct, failed)
	}
}
