package ratelimit_test

import (
	"encoding/json"
	"fmt"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/sluice-gw/sluice/internal/testkit"
	"github.com/sluice-gw/sluice/proxy"
	"github.com/valyala/fasthttp"
)

// gateway starts an upstream answering with h (nil: 200 "ok") and a gateway
// with routes r (/r/...) and s (/s/...) on it; upstreamPlugins and
// routePlugins are YAML flow maps for the upstream and for route r.
func gateway(t *testing.T, h fasthttp.RequestHandler, upstreamPlugins, routePlugins string, opt ...testkit.Options) (*testkit.Upstream, *testkit.Gateway) {
	t.Helper()
	up := testkit.NewUpstream(t, h)
	gw := testkit.StartGateway(t, gatewayYAML(up.URL, "", upstreamPlugins, routePlugins), opt...)
	return up, gw
}

func gatewayYAML(url, top, upstreamPlugins, routePlugins string) string {
	if upstreamPlugins == "" {
		upstreamPlugins = "{}"
	}
	if routePlugins == "" {
		routePlugins = "{}"
	}
	return fmt.Sprintf(`
log: {level: info, access_log: false}
%s
upstreams:
  api: {url: %q, plugins: %s}
routes:
  r: {path: "/r/{p:*}", upstream: api, strip_prefix: "/r", plugins: %s}
  s: {path: "/s/{p:*}", upstream: api, strip_prefix: "/s"}
`, top, url, upstreamPlugins, routePlugins)
}

// burst sends n requests at once and returns the statuses.
func burst(t *testing.T, n int, url string, header ...string) map[int]int {
	t.Helper()
	var mu sync.Mutex
	got := map[int]int{}
	var wg sync.WaitGroup
	for range n {
		wg.Go(func() {
			resp, err := testkit.TryDo("GET", url, "", header...)
			mu.Lock()
			defer mu.Unlock()
			if err != nil {
				got[-1]++
				return
			}
			got[resp.Status]++
		})
	}
	wg.Wait()
	return got
}

func metric(t *testing.T, gw *testkit.Gateway, name string, labels ...string) float64 {
	t.Helper()
	v, _ := gw.Metrics(t).Value(name, labels...)
	return v
}

// N calls at once against a full bucket: exactly burst get through, the
// rest get 429 rate_limited with Retry-After and the RateLimit fields.
func TestBurstAdmitsExactlyBurst(t *testing.T) {
	t.Parallel()
	// 1 per 10s: nothing refills while the burst is in flight.
	up, gw := gateway(t, nil, `{rate_limit: {rate: 1, per: 10s, burst: 10, key: upstream}}`, "")
	got := burst(t, 40, gw.URL+"/r/x")
	if got[200] != 10 || got[429] != 30 {
		t.Fatalf("statuses %v, want 10x200 and 30x429", got)
	}
	if up.Count() != 10 {
		t.Errorf("upstream got %d calls, want 10", up.Count())
	}
	// The bucket is the upstream's: route s shares it.
	resp := testkit.Do(t, "GET", gw.URL+"/s/x", "")
	p := testkit.WantProblem(t, resp, 429, "rate_limited")
	if resp.Header.Get("Retry-After") == "" || p["retry_after"] == nil || p["retryable"] != true {
		t.Errorf("429 without Retry-After/retryable: %v %s", resp.Header, resp.Body)
	}
	if !strings.Contains(p["detail"].(string), "rate limit of 1 per 10s for upstream api exceeded") {
		t.Errorf("detail %q", p["detail"])
	}
	if got, want := resp.Header.Get("RateLimit-Policy"), `"upstream";q=10;w=100`; got != want {
		t.Errorf("RateLimit-Policy %q, want %q", got, want)
	}
	if got := resp.Header.Get("RateLimit"); !regexp.MustCompile(`^"upstream";r=0;t=\d+$`).MatchString(got) {
		t.Errorf("RateLimit on a 429: %q", got)
	}
	if ra, _ := strconv.Atoi(resp.Header.Get("Retry-After")); ra < 1 || ra > 10 {
		t.Errorf("Retry-After %q, want 1..10 s", resp.Header.Get("Retry-After"))
	}
	fams := gw.Metrics(t)
	if v, _ := fams.Value("sluice_ratelimit_decisions_total", "route", "r", "scope", "upstream", "decision", "allowed"); v != 10 {
		t.Errorf("allowed decisions on r = %v, want 10", v)
	}
	if v, _ := fams.Value("sluice_ratelimit_decisions_total", "scope", "upstream", "decision", "rejected"); v != 31 {
		t.Errorf("rejected decisions = %v, want 31", v)
	}
	if v, _ := fams.Value("sluice_errors_total", "code", "rate_limited"); v != 31 {
		t.Errorf("sluice_errors_total{code=rate_limited} = %v, want 31", v)
	}
}

// An admitted call carries the RateLimit fields with what is left.
func TestHeadersOnAdmittedCalls(t *testing.T) {
	t.Parallel()
	_, gw := gateway(t, nil, `{rate_limit: {rate: 5, per: 1s, burst: 5, key: upstream}}`, "")
	resp := testkit.Do(t, "GET", gw.URL+"/r/x", "")
	if resp.Status != 200 {
		t.Fatalf("status %d", resp.Status)
	}
	if got := resp.Header.Get("RateLimit-Policy"); got != `"upstream";q=5;w=1` {
		t.Errorf("RateLimit-Policy %q", got)
	}
	if got := resp.Header.Get("RateLimit"); got != `"upstream";r=4;t=1` {
		t.Errorf("RateLimit %q, want \"upstream\";r=4;t=1", got)
	}
}

// After the burst, calls come back at the rate.
func TestRefillsAtTheRate(t *testing.T) {
	t.Parallel()
	_, gw := gateway(t, nil, `{rate_limit: {rate: 10, per: 1s, burst: 10}}`, "")
	start := time.Now()
	got := burst(t, 20, gw.URL+"/r/x")
	emptied := time.Now()
	// The burst itself lasts a moment, during which tokens come back.
	if most := 10 + int(emptied.Sub(start).Seconds()*10) + 1; got[200] < 10 || got[200] > most {
		t.Fatalf("first burst: %v, want 10..%d admitted", got, most)
	}
	time.Sleep(500 * time.Millisecond)
	first := time.Now()
	admitted := 0
	for range 20 {
		if testkit.Do(t, "GET", gw.URL+"/r/x", "").Status == 200 {
			admitted++
		}
	}
	last := time.Now()
	// At least what 10/s refills between the end of the burst and the
	// first call (the bucket holds at most 10); at most what it refills
	// from the start of the burst to the last call.
	lo := min(10, int(first.Sub(emptied).Seconds()*10)) - 1
	hi := int(last.Sub(start).Seconds()*10) + 1
	if admitted < lo || admitted > hi || admitted == 0 {
		t.Errorf("after %v, %d calls admitted; want %d..%d", first.Sub(emptied), admitted, lo, hi)
	}
}

func authRegistry() *proxy.Registry {
	return testkit.WithStandIns(proxy.Define("authenticate", func(*struct{}, *proxy.Build) (proxy.Plugin, error) {
		return consumerFromHeader{}, nil
	}))
}

type consumerFromHeader struct{}

func (consumerFromHeader) Handle(ctx *fasthttp.RequestCtx, ex *proxy.Exchange, next proxy.Handler) error {
	ex.Consumer = string(ctx.Request.Header.Peek("X-Consumer"))
	return next.Handle(ctx, ex)
}

// Keyed limits keep callers apart; several limits apply together; calls
// without the key share one bucket.
func TestPerKeyIsolationAndSeveralLimits(t *testing.T) {
	t.Parallel()
	up, gw := gateway(t, nil, "", `{authenticate: {}, rate_limit: {limits: [
		{rate: 1, per: 1m, burst: 2, key: consumer},
		{rate: 1, per: 1m, burst: 3, key: "header:X-Tenant", name: tenant},
		{rate: 1, per: 1m, burst: 100, key: upstream}]}}`, testkit.Options{Registry: authRegistry()})
	call := func(consumer, tenant string) *testkit.Response {
		h := []string{}
		if consumer != "" {
			h = append(h, "X-Consumer", consumer)
		}
		if tenant != "" {
			h = append(h, "X-Tenant", tenant)
		}
		return testkit.Do(t, "GET", gw.URL+"/r/x", "", h...)
	}
	for i, c := range []struct {
		consumer, tenant string
		status           int
	}{
		{"billing", "t1", 200}, {"billing", "t1", 200}, {"billing", "t2", 429}, // billing's 2 used
		{"search", "t1", 200},                        // tenant t1's 3 used
		{"search", "t2", 200}, {"search", "t2", 429}, // search's 2 used
		// refused by the tenant limit after the consumer limit let it
		// through: limits are checked in order, and the earlier ones count it
		{"batch", "t1", 429}, {"batch", "t2", 200},
		{"", "", 200}, {"", "", 200}, {"", "", 429}, // anonymous callers share one bucket
	} {
		resp := call(c.consumer, c.tenant)
		if resp.Status != c.status {
			t.Fatalf("call %d (%s, %s): status %d, want %d: %s", i, c.consumer, c.tenant, resp.Status, c.status, resp.Body)
		}
		if i == 0 {
			if got := resp.Header.Values("RateLimit-Policy"); strings.Join(got, ", ") != `"consumer";q=2;w=120, "tenant";q=3;w=180, "upstream";q=100;w=6000` {
				t.Errorf("RateLimit-Policy %q", got)
			}
			// one field line: the caller limits' items, then the upstream limit's
			if got := resp.Header.Values("RateLimit"); len(got) != 1 || !strings.HasPrefix(got[0], `"consumer";r=1;t=60, "tenant";r=2;t=60, "upstream";r=99;`) {
				t.Errorf("RateLimit %q", got)
			}
		}
	}
	if up.Count() != 7 {
		t.Errorf("upstream got %d calls, want 7", up.Count())
	}
	if v := metric(t, gw, "sluice_ratelimit_decisions_total", "scope", "tenant", "decision", "rejected"); v != 1 {
		t.Errorf("tenant rejections %v, want 1", v)
	}
}

// A flood of distinct keys cannot grow the table past max_keys: new keys
// share one overflow bucket, known keys keep theirs. (The key names the
// header in lower case; the caller sends X-Key: names match in any case.)
func TestKeyTableIsBounded(t *testing.T) {
	t.Parallel()
	_, gw := gateway(t, nil, "", `{rate_limit: {rate: 1, per: 1m, burst: 1, key: "header:x-key", max_keys: 1}}`)
	if s := testkit.Do(t, "GET", gw.URL+"/r/x", "", "X-Key", "first").Status; s != 200 {
		t.Fatalf("first key: %d", s)
	}
	admitted := 0
	for i := range 200 {
		if testkit.Do(t, "GET", gw.URL+"/r/x", "", "X-Key", fmt.Sprint("k", i)).Status == 200 {
			admitted++
		}
	}
	if admitted != 1 {
		t.Errorf("200 new keys beyond max_keys admitted %d calls, want 1 (one shared overflow bucket)", admitted)
	}
	resp := testkit.Do(t, "GET", gw.AdminURL+"/admin/upstreams", "")
	var view struct {
		Upstreams []struct {
			Status map[string]struct {
				Limits []map[string]any `json:"limits"`
			} `json:"status"`
		} `json:"upstreams"`
	}
	if err := json.Unmarshal(resp.Body, &view); err != nil || len(view.Upstreams) != 1 {
		t.Fatalf("%v %s", err, resp.Body)
	}
	keys := view.Upstreams[0].Status["rate_limit/route:r"].Limits[0]["keys"].(float64)
	if keys != 1 {
		t.Errorf("%v keys held, want 1 (max_keys)", keys)
	}
}

// Queue mode: a call that finds the bucket empty waits for its token; one
// that would wait longer than max_wait gets the 429 at once.
func TestQueueMode(t *testing.T) {
	t.Parallel()
	up, gw := gateway(t, nil, "", `{rate_limit: {limits: [{rate: 10, per: 1s, burst: 1, key: route}], mode: queue, max_wait: 2s}}`)
	start := time.Now()
	for i := range 3 {
		if resp := testkit.Do(t, "GET", gw.URL+"/r/x", ""); resp.Status != 200 {
			t.Fatalf("call %d: %d %s", i, resp.Status, resp.Body)
		}
	}
	if took := time.Since(start); took < 150*time.Millisecond {
		t.Errorf("3 calls at 10/s with burst 1 took %v: they did not wait for tokens", took)
	}
	if up.Count() != 3 {
		t.Errorf("upstream got %d", up.Count())
	}
	fams := gw.Metrics(t)
	if v, _ := fams.Value("sluice_ratelimit_decisions_total", "route", "r", "decision", "queued"); v != 2 {
		t.Errorf("queued decisions %v, want 2", v)
	}
	if v, _ := fams.Value("sluice_ratelimit_queue_wait_seconds", "route", "r"); v != 2 {
		t.Errorf("queue wait observations %v, want 2", v)
	}

	_, slow := gateway(t, nil, "", `{rate_limit: {rate: 1, per: 1m, burst: 1, key: route, mode: queue, max_wait: 3s}}`)
	if s := testkit.Do(t, "GET", slow.URL+"/r/x", "").Status; s != 200 {
		t.Fatalf("first call %d", s)
	}
	start = time.Now()
	resp := testkit.Do(t, "GET", slow.URL+"/r/x", "")
	took := time.Since(start)
	testkit.WantProblem(t, resp, 429, "rate_limited")
	if took > 2*time.Second {
		t.Errorf("a call that would wait 60s took %v to be refused: it waited instead of failing at once", took)
	}
	if ra, _ := strconv.Atoi(resp.Header.Get("Retry-After")); ra < 50 || ra > 60 {
		t.Errorf("Retry-After %q, want about 60", resp.Header.Get("Retry-After"))
	}
}

// The route's deadline bounds the queue too.
func TestQueueModeRespectsTheRouteDeadline(t *testing.T) {
	t.Parallel()
	up := testkit.NewUpstream(t, nil)
	gw := testkit.StartGateway(t, fmt.Sprintf(`
log: {access_log: false}
upstreams: {api: {url: %q}}
routes:
  r: {path: "/{p:*}", upstream: api, deadline: 1s, plugins: {rate_limit: {rate: 1, per: 5s, burst: 1, key: route, mode: queue, max_wait: 10s}}}
`, up.URL))
	testkit.Do(t, "GET", gw.URL+"/x", "")
	start := time.Now()
	testkit.WantProblem(t, testkit.Do(t, "GET", gw.URL+"/x", ""), 429, "rate_limited")
	if took := time.Since(start); took > 3*time.Second {
		t.Errorf("took %v: waited past the 1s deadline", took)
	}
}

// respect_upstream: a provider's 429 with Retry-After passes on as
// upstream_rate_limited, and further calls are answered by Sluice without
// reaching the provider until the reset.
func TestProviderRetryAfterStopsCalls(t *testing.T) {
	t.Parallel()
	var calls atomic.Int32
	up, gw := gateway(t, func(ctx *fasthttp.RequestCtx) {
		if calls.Add(1) == 1 {
			ctx.Response.Header.Set("Retry-After", "30")
			ctx.SetStatusCode(429)
			ctx.SetBodyString(`{"message":"slow down"}`)
			return
		}
		ctx.SetBodyString("ok")
	}, `{normalize_errors: {message: /message}, rate_limit: {respect_upstream: true}}`, "")
	resp := testkit.Do(t, "GET", gw.URL+"/r/x", "")
	p := testkit.WantProblem(t, resp, 429, "upstream_rate_limited")
	if resp.Header.Get("Retry-After") != "30" || p["detail"] != "slow down" {
		t.Errorf("provider's 429: %v %s", resp.Header, resp.Body)
	}
	for _, path := range []string{"/r/y", "/s/z"} {
		resp = testkit.Do(t, "GET", gw.URL+path, "")
		testkit.WantProblem(t, resp, 429, "upstream_rate_limited")
		if ra, _ := strconv.Atoi(resp.Header.Get("Retry-After")); ra < 25 || ra > 30 {
			t.Errorf("%s: Retry-After %q, want about 30", path, resp.Header.Get("Retry-After"))
		}
	}
	if up.Count() != 1 {
		t.Errorf("upstream got %d calls, want 1: the pause did not hold calls back", up.Count())
	}
	resp = testkit.Do(t, "GET", gw.AdminURL+"/admin/upstreams", "")
	if !strings.Contains(string(resp.Body), `"paused": true`) {
		t.Errorf("/admin/upstreams does not show the pause: %s", resp.Body)
	}
}

// X-RateLimit-Remaining: 0 with a reset (delta seconds or Unix time) pauses
// until the reset; the remaining quota is exported; RateLimit (draft form)
// is read too.
func TestProviderQuotaHeaders(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name    string
		headers func() []string
		pause   bool
		quota   float64
	}{
		{"x-ratelimit left", func() []string { return []string{"X-RateLimit-Remaining", "42", "X-RateLimit-Reset", "20"} }, false, 42},
		{"x-ratelimit delta", func() []string { return []string{"X-RateLimit-Remaining", "0", "X-RateLimit-Reset", "20"} }, true, 0},
		{"x-ratelimit epoch", func() []string {
			return []string{"X-RateLimit-Remaining", "0", "X-RateLimit-Reset", strconv.FormatInt(time.Now().Add(20*time.Second).Unix(), 10)}
		}, true, 0},
		{"ratelimit draft", func() []string { return []string{"RateLimit", `"default";r=0;t=20`} }, true, 0},
		{"ratelimit draft left", func() []string { return []string{"RateLimit", `"default";r=7;t=20`} }, false, 7},
		// every item of the list counts: the day's quota is out though the
		// minute's is not; the longest t of the items with r=0 pauses
		{"ratelimit list", func() []string {
			return []string{"RateLimit", `"min";r=5;t=1, "day";r=0;t=20, "hour";r=0;t=3`}
		}, true, 0},
		{"ratelimit older drafts", func() []string { return []string{"RateLimit-Remaining", "0", "RateLimit-Reset", "20"} }, true, 0},
		{"503 retry-after", func() []string { return []string{"Retry-After", "20", ":status", "503"} }, true, -1},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			up, gw := gateway(t, func(ctx *fasthttp.RequestCtx) {
				h := tc.headers()
				ctx.SetBodyString("ok")
				for i := 0; i < len(h); i += 2 {
					if h[i] == ":status" {
						ctx.SetStatusCode(503)
						continue
					}
					ctx.Response.Header.Set(h[i], h[i+1])
				}
			}, `{rate_limit: {respect_upstream: true}}`, "")
			testkit.Do(t, "GET", gw.URL+"/r/x", "")
			if v := metric(t, gw, "sluice_upstream_quota_remaining", "upstream", "api"); v != tc.quota {
				t.Errorf("sluice_upstream_quota_remaining = %v, want %v", v, tc.quota)
			}
			resp := testkit.Do(t, "GET", gw.URL+"/r/x", "")
			if !tc.pause {
				if resp.Status != 200 || up.Count() != 2 {
					t.Errorf("paused without cause: %d, %d upstream calls", resp.Status, up.Count())
				}
				return
			}
			testkit.WantProblem(t, resp, 429, "upstream_rate_limited")
			if ra, _ := strconv.Atoi(resp.Header.Get("Retry-After")); ra < 15 || ra > 21 {
				t.Errorf("Retry-After %q, want about 20", resp.Header.Get("Retry-After"))
			}
			if up.Count() != 1 {
				t.Errorf("upstream got %d calls, want 1", up.Count())
			}
		})
	}
}

// quota_headers and throttle_statuses: a provider's own quota headers
// (OpenAI's per-requests and per-tokens pairs, resets written as durations)
// and a status that means "slow down" with a Retry-After (GitHub's secondary
// limits answer 403) pause like the standard ones; without the keys they do not.
func TestProviderQuotaRules(t *testing.T) {
	t.Parallel()
	const openai = `{rate_limit: {respect_upstream: true, quota_headers: [
	  {remaining: x-ratelimit-remaining-requests, reset: x-ratelimit-reset-requests},
	  {remaining: x-ratelimit-remaining-tokens, reset: x-ratelimit-reset-tokens}]}}`
	for _, tc := range []struct {
		name    string
		block   string
		status  int
		headers []string
		pause   bool
		quota   float64
	}{
		{"tokens out, reset as a duration", openai, 200, []string{"x-ratelimit-remaining-requests", "59", "x-ratelimit-reset-requests", "1s",
			"x-ratelimit-remaining-tokens", "0", "x-ratelimit-reset-tokens", "20s"}, true, 0},
		{"requests out, reset in minutes and seconds", openai, 200, []string{"x-ratelimit-remaining-requests", "0", "x-ratelimit-reset-requests", "0m20s"}, true, 0},
		{"both left: the least is the quota", openai, 200, []string{"x-ratelimit-remaining-requests", "59", "x-ratelimit-reset-requests", "1s",
			"x-ratelimit-remaining-tokens", "1500", "x-ratelimit-reset-tokens", "6m0s"}, false, 59},
		{"the same headers unnamed are not read", `{rate_limit: {respect_upstream: true}}`, 200,
			[]string{"x-ratelimit-remaining-tokens", "0", "x-ratelimit-reset-tokens", "20s"}, false, -1},
		{"403 with Retry-After under throttle_statuses", `{rate_limit: {respect_upstream: true, throttle_statuses: [403]}}`, 403,
			[]string{"Retry-After", "20"}, true, -1},
		{"403 with Retry-After otherwise", `{rate_limit: {respect_upstream: true}}`, 403, []string{"Retry-After", "20"}, false, -1},
		{"403 without Retry-After under throttle_statuses", `{rate_limit: {respect_upstream: true, throttle_statuses: [403]}}`, 403, nil, false, -1},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			up, gw := gateway(t, func(ctx *fasthttp.RequestCtx) {
				ctx.SetStatusCode(tc.status)
				ctx.SetBodyString("ok")
				for i := 0; i < len(tc.headers); i += 2 {
					ctx.Response.Header.Set(tc.headers[i], tc.headers[i+1])
				}
			}, tc.block, "")
			testkit.Do(t, "GET", gw.URL+"/r/x", "")
			if v := metric(t, gw, "sluice_upstream_quota_remaining", "upstream", "api"); v != tc.quota {
				t.Errorf("sluice_upstream_quota_remaining = %v, want %v", v, tc.quota)
			}
			resp := testkit.Do(t, "GET", gw.URL+"/r/x", "")
			if !tc.pause {
				if resp.Status != tc.status || up.Count() != 2 {
					t.Errorf("paused without cause: %d, %d upstream calls", resp.Status, up.Count())
				}
				return
			}
			testkit.WantProblem(t, resp, 429, "upstream_rate_limited")
			if ra, _ := strconv.Atoi(resp.Header.Get("Retry-After")); ra < 15 || ra > 21 {
				t.Errorf("Retry-After %q, want about 20", resp.Header.Get("Retry-After"))
			}
			if up.Count() != 1 {
				t.Errorf("upstream got %d calls, want 1", up.Count())
			}
		})
	}
}

// A 503 without Retry-After is the circuit breaker's business: no pause.
func TestProvider503WithoutRetryAfterDoesNotPause(t *testing.T) {
	t.Parallel()
	up, gw := gateway(t, func(ctx *fasthttp.RequestCtx) { ctx.SetStatusCode(503) }, `{rate_limit: {respect_upstream: true}}`, "")
	for range 3 {
		testkit.Do(t, "GET", gw.URL+"/r/x", "")
	}
	if up.Count() != 3 {
		t.Errorf("upstream got %d calls, want 3", up.Count())
	}
}

func TestConfigErrors(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct{ block, path, msg string }{
		{`{rate: -1}`, "rate", "must be a positive number"},
		{`{}`, "rate", "required"},
		{`{rate: 1, key: user}`, "key", `unknown key "user"`},
		{`{rate: 1, key: "header:"}`, "key", "invalid header name"},
		{`{rate: 1, burst: -1}`, "burst", "must not be negative"},
		{`{rate: 1, per: 1}`, "per", "missing unit"},
		{`{rate: 1, mode: wait}`, "mode", `unknown mode "wait"`},
		{`{rate: 1, quota_headers: [{remaining: x-left}]}`, "quota_headers", "only read with respect_upstream: true"},
		{`{respect_upstream: true, quota_headers: [{remaining: "x left"}]}`, "quota_headers[0].remaining", "is not a header name"},
		{`{respect_upstream: true, quota_headers: [{remaining: x-left, reset: ""}, {remaining: x-b, reset: "a:b"}]}`, "quota_headers[1].reset", "is not a header name"},
		{`{respect_upstream: true, throttle_statuses: [200]}`, "throttle_statuses[0]", "is not a 4xx or 5xx status"},
		{`{rate: 1, limits: [{rate: 2}]}`, "limits", "not both"},
		{`{limits: [{rate: 2, key: consumer}, {rate: 3, key: consumer}]}`, "limits[1].name", "names two limits"},
		{`{limits: [{rate: 2, name: "a\"b"}]}`, "limits[0].name", "invalid character"},
		{`{limits: [{rate: 2, burts: 3}]}`, "limits[0].burts", "unknown key"},
		{`{rate: 1, nodes: -1}`, "nodes", "must be 0"},
		{`{rate: 1, max_keys: 0}`, "max_keys", "at least 1"},
	} {
		probs := testkit.ConfigProblems(t, gatewayYAML("http://127.0.0.1:1", "", "{rate_limit: "+tc.block+"}", ""))
		testkit.WantOneProblem(t, probs, strings.TrimSuffix("upstreams.api.plugins.rate_limit."+tc.path, "."), tc.msg)
	}
}

// Buckets live across reloads that keep their settings.
func TestBucketsSurviveReload(t *testing.T) {
	t.Parallel()
	up := testkit.NewUpstream(t, nil)
	yaml := gatewayYAML(up.URL, "", `{rate_limit: {rate: 1, per: 1m, burst: 2}}`, "")
	gw := testkit.StartGateway(t, yaml)
	burst(t, 2, gw.URL+"/r/x")
	testkit.WriteFile(t, gw.File, yaml+"\n# touched\n")
	if err := gw.Reload(); err != nil {
		t.Fatal(err)
	}
	testkit.WantProblem(t, testkit.Do(t, "GET", gw.URL+"/r/x", ""), 429, "rate_limited")
}

// A route with caller limits only reports no "rate_limit" section: the
// first section per upstream wins, and an empty one would hide a sibling
// route's upstream limits.
func TestCallerOnlyRouteDoesNotHideUpstreamStatus(t *testing.T) {
	t.Parallel()
	up := testkit.NewUpstream(t, nil)
	gw := testkit.StartGateway(t, fmt.Sprintf(`
log: {access_log: false}
upstreams: {api: {url: %q}}
routes:
  r: {path: "/r/{p:*}", upstream: api, plugins: {rate_limit: {rate: 5, key: ip}}}
  s: {path: "/s/{p:*}", upstream: api, plugins: {rate_limit: {rate: 7, key: upstream}}}
`, up.URL))
	resp := testkit.Do(t, "GET", gw.AdminURL+"/admin/upstreams", "")
	var view struct {
		Upstreams []struct {
			Status map[string]struct {
				Limits []map[string]any `json:"limits"`
			} `json:"status"`
		} `json:"upstreams"`
	}
	if err := json.Unmarshal(resp.Body, &view); err != nil || len(view.Upstreams) != 1 {
		t.Fatalf("%v %s", err, resp.Body)
	}
	st := view.Upstreams[0].Status
	if ls := st["rate_limit"].Limits; len(ls) != 1 || ls[0]["rate"] != 7.0 {
		t.Errorf("rate_limit section %v, want route s's upstream limit: %s", ls, resp.Body)
	}
	if ls := st["rate_limit/route:r"].Limits; len(ls) != 1 || ls[0]["rate"] != 5.0 {
		t.Errorf("rate_limit/route:r section %v: %s", ls, resp.Body)
	}
}

// /admin/config shows a block as written: the limits-list form without an
// empty single limit ("rate":0,"per":"0s") beside its list, the single form
// with its settled members.
func TestAdminConfigShowsOnlyTheLimitsInUse(t *testing.T) {
	gw := testkit.StartGateway(t, `
log: {access_log: false}
upstreams: {up: {url: "http://127.0.0.1:9"}}
routes:
  list:   {path: "/l", upstream: up, plugins: {rate_limit: {limits: [{name: a, rate: 5, per: 1m, key: route}]}}}
  single: {path: "/s", upstream: up, plugins: {rate_limit: {rate: 3, key: route}}}
`)
	configs, _ := gw.PluginConfigs(t)
	list := configs["list"]["rate_limit"]
	for _, k := range []string{"rate", "per", "burst", "key"} {
		if v, ok := list[k]; ok {
			t.Errorf("limits-list form shows %s=%v beside its limits", k, v)
		}
	}
	if l, _ := list["limits"].([]any); len(l) != 1 {
		t.Errorf("limits = %v, want the one limit", list["limits"])
	}
	single := configs["single"]["rate_limit"]
	if single["rate"] != 3.0 || single["per"] != "1s" || single["burst"] != 3.0 || single["key"] != "route" {
		t.Errorf("single form = %v, want rate 3, per 1s, burst 3, key route", single)
	}
}
