package plugins_test

// Tests of the plugins working together, each with its real implementation:
// the promises one plugin makes depend on what another does at another stage.

import (
	"fmt"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/sluice-gw/sluice/internal/testkit"
	"github.com/valyala/fasthttp"
)

func TestMain(m *testing.M) { testkit.RunWithoutLeaks(m) }

// One caller never sees another's private data: with per-consumer provider
// credentials (inject_auth), the cache keeps each consumer's answers apart,
// although the provider marks them cacheable and the URL is the same.
func TestCacheKeepsConsumersApartWithPerConsumerCredentials(t *testing.T) {
	t.Parallel()
	var hits atomic.Int64
	up := testkit.NewUpstream(t, func(ctx *fasthttp.RequestCtx) {
		hits.Add(1)
		ctx.Response.Header.Set("Cache-Control", "max-age=60")
		fmt.Fprintf(ctx, "account of %s", ctx.Request.Header.Peek("Authorization"))
	})
	gw := testkit.StartGateway(t, fmt.Sprintf(`
log: {access_log: false}
consumers:
  billing: {keys: ["billing-key-0123456789"]}
  crm:     {keys: ["crm-key-0123456789abc"]}
upstreams: {pay: {url: "%s"}}
routes:
  r:
    path: "/{p:*}"
    upstream: pay
    plugins:
      authenticate: {}
      inject_auth:
        type: bearer
        token: "shared-provider-token"
        consumers:
          billing: {token: "billing-provider-token"}
          crm:     {token: "crm-provider-token"}
      cache: {}
`, up.URL))

	get := func(key string) *testkit.Response {
		return testkit.Do(t, "GET", gw.URL+"/v1/balance", "", "X-Api-Key", key)
	}
	b1, c1, b2 := get("billing-key-0123456789"), get("crm-key-0123456789abc"), get("billing-key-0123456789")
	if string(b1.Body) != "account of Bearer billing-provider-token" {
		t.Fatalf("billing got %q", b1.Body)
	}
	if string(c1.Body) != "account of Bearer crm-provider-token" {
		t.Errorf("crm got %q (Cache-Status %q): another consumer's answer", c1.Body, c1.Header.Get("Cache-Status"))
	}
	if string(b2.Body) != string(b1.Body) || b2.Header.Get("Cache-Status") != "sluice; hit" {
		t.Errorf("billing again: %q, Cache-Status %q; want its own entry as a hit", b2.Body, b2.Header.Get("Cache-Status"))
	}
	if n := hits.Load(); n != 2 {
		t.Errorf("provider called %d times, want 2 (one per consumer)", n)
	}
	// A caller without a key is refused before the cache: nothing cached leaks.
	if r := testkit.Do(t, "GET", gw.URL+"/v1/balance", ""); r.Status != 401 || strings.Contains(string(r.Body), "account") {
		t.Errorf("no key: %d %s", r.Status, r.Body)
	}
}

// A provider quota limit (key: upstream) counts calls that really leave for
// the provider: each retry attempt takes a token, and when the quota is spent
// the retry stops instead of sending more.
func TestUpstreamQuotaCountsEveryRetryAttempt(t *testing.T) {
	t.Parallel()
	var hits atomic.Int64
	up := testkit.NewUpstream(t, func(ctx *fasthttp.RequestCtx) {
		hits.Add(1)
		ctx.SetStatusCode(503)
	})
	gw := testkit.StartGateway(t, fmt.Sprintf(`
log: {access_log: false}
upstreams:
  up:
    url: "%s"
    plugins:
      rate_limit: {rate: 1, per: 1h, burst: 4, key: upstream}
      retry: {attempts: 3, backoff: 1ms, max_backoff: 2ms}
routes: {r: {path: "/{p:*}", upstream: up}}
`, up.URL))

	first := testkit.Do(t, "GET", gw.URL+"/x", "")
	if first.Status != 503 || hits.Load() != 3 {
		t.Fatalf("first call: status %d after %d provider calls, want 503 after 3 attempts", first.Status, hits.Load())
	}
	second := testkit.Do(t, "GET", gw.URL+"/x", "")
	if n := hits.Load(); n != 4 {
		t.Errorf("provider called %d times in all, want 4: the quota of 4 must cap attempts", n)
	}
	if second.Status != 429 && second.Status != 503 {
		t.Errorf("second call: %d %s", second.Status, second.Body)
	}
	third := testkit.Do(t, "GET", gw.URL+"/x", "")
	testkit.WantProblem(t, third, 429, "rate_limited")
	if hits.Load() != 4 {
		t.Errorf("the third call reached the provider (%d calls), want it refused by the quota", hits.Load())
	}
	m := gw.Metrics(t)
	if v, _ := m.Value("sluice_ratelimit_decisions_total", "route", "r", "scope", "upstream", "decision", "allowed"); v != 4 {
		t.Errorf("allowed upstream decisions = %v, want 4", v)
	}
}

// When the provider is down and its circuit is open, a cached read is still
// answered, stale, without touching the network.
func TestStaleIfErrorBridgesAnOpenCircuit(t *testing.T) {
	t.Parallel()
	var failing atomic.Bool
	var hits atomic.Int64
	up := testkit.NewUpstream(t, func(ctx *fasthttp.RequestCtx) {
		hits.Add(1)
		if failing.Load() {
			ctx.SetStatusCode(500)
			return
		}
		ctx.Response.Header.Set("Cache-Control", "max-age=0, stale-if-error=300")
		ctx.SetBodyString("catalog v1")
	})
	gw := testkit.StartGateway(t, fmt.Sprintf(`
log: {access_log: false}
upstreams:
  up:
    url: "%s"
    plugins:
      circuit_breaker: {consecutive_failures: 1, open_for: 1m}
routes: {r: {path: "/{p:*}", upstream: up, plugins: {cache: {}}}}
`, up.URL))

	if r := testkit.Do(t, "GET", gw.URL+"/catalog", ""); string(r.Body) != "catalog v1" {
		t.Fatalf("fill: %d %s", r.Status, r.Body)
	}
	failing.Store(true)
	// The entry is stale at once (max-age=0): this call reaches the failing
	// provider, opens the circuit and is answered stale.
	r := testkit.Do(t, "GET", gw.URL+"/catalog", "")
	if r.Status != 200 || string(r.Body) != "catalog v1" {
		t.Fatalf("provider failing: %d %s (Cache-Status %q)", r.Status, r.Body, r.Header.Get("Cache-Status"))
	}
	before := hits.Load()
	r = testkit.Do(t, "GET", gw.URL+"/catalog", "")
	if r.Status != 200 || string(r.Body) != "catalog v1" || !strings.Contains(r.Header.Get("Cache-Status"), "stale") {
		t.Errorf("circuit open: %d %s (Cache-Status %q); want the stale entry", r.Status, r.Body, r.Header.Get("Cache-Status"))
	}
	if hits.Load() != before {
		t.Errorf("the provider was called while its circuit was open")
	}
	if v, _ := gw.Metrics(t).Value("sluice_circuit_state", "upstream", "up"); v != 2 {
		t.Errorf("sluice_circuit_state = %v, want 2 (open)", v)
	}
	// A path never cached gets the honest error.
	testkit.WantProblem(t, testkit.Do(t, "GET", gw.URL+"/other", ""), 503, "circuit_open")
}

// A provider's 429 pauses its traffic (rate_limit respect_upstream) and is not
// a failure for the circuit breaker: rate limiting owns it.
func TestProvider429PausesButDoesNotTripTheBreaker(t *testing.T) {
	t.Parallel()
	var hits atomic.Int64
	up := testkit.NewUpstream(t, func(ctx *fasthttp.RequestCtx) {
		if hits.Add(1) <= 3 {
			ctx.SetStatusCode(429)
			ctx.Response.Header.Set("Retry-After", "1")
			return
		}
		ctx.SetBodyString("ok")
	})
	gw := testkit.StartGateway(t, fmt.Sprintf(`
log: {access_log: false}
upstreams:
  up:
    url: "%s"
    plugins:
      normalize_errors: {}
      rate_limit: {rate: 100, burst: 100, respect_upstream: true}
      circuit_breaker: {consecutive_failures: 1, open_for: 1m}
routes: {r: {path: "/{p:*}", upstream: up}}
`, up.URL))

	first := testkit.Do(t, "GET", gw.URL+"/x", "")
	testkit.WantProblem(t, first, 429, "upstream_rate_limited")
	second := testkit.Do(t, "GET", gw.URL+"/x", "")
	if second.Status != 429 || hits.Load() != 1 {
		t.Errorf("paused: %d after %d provider calls; want 429 from Sluice, 1 call", second.Status, hits.Load())
	}
	if second.Header.Get("Retry-After") == "" {
		t.Errorf("paused answer without Retry-After")
	}
	if v, _ := gw.Metrics(t).Value("sluice_circuit_state", "upstream", "up"); v != 0 {
		t.Errorf("sluice_circuit_state = %v after a 429, want 0: a 429 is not a failure", v)
	}
}

// The quota gauges follow the provider's latest answer, not answers the
// cache stores: a hit replays the quota headers of an old answer, and
// reading them set the gauges back to what the provider said then.
func TestCacheHitsDoNotRewindQuotaGauges(t *testing.T) {
	t.Parallel()
	var left atomic.Int64
	left.Store(100)
	up := testkit.NewUpstream(t, func(ctx *fasthttp.RequestCtx) {
		n := left.Add(-1)
		ctx.Response.Header.Set("X-RateLimit-Limit", "100")
		ctx.Response.Header.Set("X-RateLimit-Remaining", fmt.Sprint(n))
		if strings.HasPrefix(string(ctx.Path()), "/catalog") {
			ctx.Response.Header.Set("Cache-Control", "max-age=60")
		}
		ctx.SetBodyString("ok")
	})
	gw := testkit.StartGateway(t, fmt.Sprintf(`
log: {access_log: false}
consumers:
  billing: {keys: ["billing-key-0123456789"]}
upstreams: {pay: {url: "%s"}}
routes:
  r:
    path: "/{p:*}"
    upstream: pay
    plugins:
      authenticate: {}
      rate_limit: {rate: 1000, key: consumer, respect_upstream: true}
      cache: {}
`, up.URL))
	get := func(path, wantStatus string) {
		t.Helper()
		r := testkit.Do(t, "GET", gw.URL+path, "", "X-Api-Key", "billing-key-0123456789")
		if r.Status != 200 || !strings.HasPrefix(r.Header.Get("Cache-Status"), "sluice; "+wantStatus) {
			t.Fatalf("GET %s: %d, Cache-Status %q; want 200 and %s", path, r.Status, r.Header.Get("Cache-Status"), wantStatus)
		}
	}
	get("/catalog", "fwd=miss") // stored, the provider said 99
	get("/orders", "fwd=miss")  // not stored: 98
	get("/catalog", "hit")      // the stored 99 again
	m := gw.Metrics(t)
	if v, _ := m.Value("sluice_consumer_quota_remaining", "consumer", "billing", "upstream", "pay"); v != 98 {
		t.Errorf("sluice_consumer_quota_remaining = %v after a cache hit, want the provider's latest, 98", v)
	}
	if v, _ := m.Value("sluice_upstream_quota_remaining", "upstream", "pay"); v != 98 {
		t.Errorf("sluice_upstream_quota_remaining = %v after a cache hit, want the provider's latest, 98", v)
	}
}
