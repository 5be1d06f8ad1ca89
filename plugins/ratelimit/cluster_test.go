package ratelimit_test

import (
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/sluice-gw/sluice/internal/testkit"
	"github.com/sluice-gw/sluice/plugins/ratelimit"
	"github.com/valyala/fasthttp"
)

// cluster starts n gateways sharing rd, each in front of up, with the given
// upstream plugins.
func cluster(t *testing.T, n int, rd *testkit.Redis, up *testkit.Upstream, upstreamPlugins string) []*testkit.Gateway {
	t.Helper()
	top := fmt.Sprintf("cluster: {redis: {addr: %q, key_prefix: \"t:\"}}", rd.Addr)
	gws := make([]*testkit.Gateway, n)
	for i := range gws {
		gws[i] = testkit.StartGateway(t, gatewayYAML(up.URL, top, upstreamPlugins, ""))
	}
	return gws
}

// One YAML block keeps a provider's quota across three gateways sharing
// Redis: together they admit the burst, not three bursts.
func TestGatewaysShareALimitThroughRedis(t *testing.T) {
	t.Parallel()
	rd := testkit.StartRedis(t)
	up := testkit.NewUpstream(t, nil)
	gws := cluster(t, 3, rd, up, `{rate_limit: {rate: 1, per: 1m, burst: 5, key: upstream}}`)
	var admitted, refused, other atomic.Int32
	var wg sync.WaitGroup
	for i := range 30 {
		wg.Go(func() {
			resp, err := testkit.TryDo("GET", gws[i%3].URL+"/r/x", "")
			switch {
			case err != nil:
				other.Add(1)
			case resp.Status == 200:
				admitted.Add(1)
			case resp.Status == 429:
				refused.Add(1)
			default:
				other.Add(1)
			}
		})
	}
	wg.Wait()
	// 1 per minute refills nothing while the test runs: exactly the burst.
	if admitted.Load() != 5 || refused.Load() != 25 || other.Load() != 0 {
		t.Errorf("admitted %d, refused %d, other %d; want 5, 25, 0", admitted.Load(), refused.Load(), other.Load())
	}
	if up.Count() != 5 {
		t.Errorf("upstream got %d calls, want 5", up.Count())
	}
	if got, err := rd.Do("EXISTS", "t:"+ratelimit.UpstreamKey("api", "upstream", 1, time.Minute, 5)); got != ":1" {
		t.Errorf("the limit's key is not in Redis: %q %v", got, err)
	}
	resp := testkit.Do(t, "GET", gws[1].URL+"/r/x", "")
	testkit.WantProblem(t, resp, 429, "rate_limited")
	if got := resp.Header.Get("RateLimit"); !strings.HasPrefix(got, `"upstream";r=0;t=`) {
		t.Errorf("RateLimit %q", got)
	}
	for _, gw := range gws {
		if v := metric(t, gw, "sluice_ratelimit_fallback_total"); v != 0 {
			t.Errorf("fallback decisions %v with Redis up", v)
		}
	}
}

// A provider's Retry-After seen by one gateway stops the others' callers too.
func TestProviderPauseIsShared(t *testing.T) {
	t.Parallel()
	rd := testkit.StartRedis(t)
	var calls atomic.Int32
	up := testkit.NewUpstream(t, func(ctx *fasthttp.RequestCtx) {
		if calls.Add(1) == 1 {
			ctx.Response.Header.Set("Retry-After", "30")
			ctx.SetStatusCode(429)
			return
		}
		ctx.SetBodyString("ok")
	})
	gws := cluster(t, 2, rd, up, `{normalize_errors: {}, rate_limit: {respect_upstream: true}}`)
	testkit.WantProblem(t, testkit.Do(t, "GET", gws[0].URL+"/r/x", ""), 429, "upstream_rate_limited")
	testkit.Eventually(t, 5*time.Second, func() bool {
		resp := testkit.Do(t, "GET", gws[1].AdminURL+"/admin/upstreams", "")
		return strings.Contains(string(resp.Body), `"paused": true`)
	}, "the second gateway never learnt of the pause")
	resp := testkit.Do(t, "GET", gws[1].URL+"/r/x", "")
	testkit.WantProblem(t, resp, 429, "upstream_rate_limited")
	if ra := resp.Header.Get("Retry-After"); ra == "" || ra == "1" {
		t.Errorf("Retry-After %q, want the provider's remaining pause", ra)
	}
	if up.Count() != 1 {
		t.Errorf("upstream got %d calls, want 1", up.Count())
	}
}

// Redis killed mid-test: no 5xx, each gateway keeps its share of the limit
// locally, logs once, counts it; when Redis is back, decisions go back to it.
func TestRedisDownFallsBackAndRecovers(t *testing.T) {
	t.Parallel()
	rd := testkit.StartRedis(t)
	up := testkit.NewUpstream(t, nil)
	gws := cluster(t, 2, rd, up, `{rate_limit: {rate: 1, per: 1m, burst: 10, key: upstream, nodes: 2}}`)
	for _, gw := range gws {
		if s := testkit.Do(t, "GET", gw.URL+"/r/x", "").Status; s != 200 {
			t.Fatalf("with Redis up: %d", s)
		}
	}
	rd.Stop()
	for g, gw := range gws {
		statuses, retryAfter := map[int]int{}, map[string]int{}
		for range 20 {
			resp := testkit.Do(t, "GET", gw.URL+"/r/x", "")
			statuses[resp.Status]++
			retryAfter[resp.Header.Get("Retry-After")]++
		}
		// nodes: 2 → each gateway's share is 1 call per 2 minutes, burst 5,
		// and it starts empty (the shared bucket may have been spent just
		// before the outage): the first token is 120s away.
		if statuses[429] != 20 || retryAfter["120"] != 20 {
			t.Errorf("gateway %d without Redis: statuses %v, Retry-After %v; want 20x429 with Retry-After 120", g, statuses, retryAfter)
		}
		if v := metric(t, gw, "sluice_ratelimit_fallback_total", "route", "r", "scope", "upstream"); v < 20 {
			t.Errorf("gateway %d: sluice_ratelimit_fallback_total = %v, want >= 20", g, v)
		}
		if n := strings.Count(gw.Logs.String(), "Redis is unreachable"); n != 1 {
			t.Errorf("gateway %d logged the outage %d times, want once:\n%s", g, n, gw.Logs.String())
		}
	}
	rd.Start()
	testkit.Eventually(t, 10*time.Second, func() bool {
		testkit.Do(t, "GET", gws[0].URL+"/r/x", "")
		got, _ := rd.Do("EXISTS", "t:"+ratelimit.UpstreamKey("api", "upstream", 1, time.Minute, 10))
		return got == ":1"
	}, "decisions did not go back to Redis after it returned")
	testkit.Eventually(t, 5*time.Second, func() bool {
		return strings.Contains(gws[0].Logs.String(), "Redis answers again")
	}, "the recovery was not logged")
}

// Queue mode through Redis: the script reserves the slot, the gateway waits.
func TestQueueModeThroughRedis(t *testing.T) {
	t.Parallel()
	rd := testkit.StartRedis(t)
	up := testkit.NewUpstream(t, nil)
	gws := cluster(t, 2, rd, up, `{rate_limit: {rate: 10, per: 1s, burst: 1, key: upstream, mode: queue, max_wait: 2s}}`)
	start := time.Now()
	for i := range 4 {
		if resp := testkit.Do(t, "GET", gws[i%2].URL+"/r/x", ""); resp.Status != 200 {
			t.Fatalf("call %d: %d %s", i, resp.Status, resp.Body)
		}
	}
	if took := time.Since(start); took < 200*time.Millisecond {
		t.Errorf("4 calls at 10/s with burst 1 across two gateways took %v: they did not wait", took)
	}
	queued := metric(t, gws[0], "sluice_ratelimit_decisions_total", "decision", "queued") +
		metric(t, gws[1], "sluice_ratelimit_decisions_total", "decision", "queued")
	if queued != 3 {
		t.Errorf("queued decisions %v, want 3", queued)
	}
}

// distributed: false keeps a limit per gateway in cluster mode; keyed
// distributed limits use the caller's address in text in their Redis key.
func TestDistributedFalseStaysLocal(t *testing.T) {
	t.Parallel()
	rd := testkit.StartRedis(t)
	up := testkit.NewUpstream(t, nil)
	gws := cluster(t, 2, rd, up, `{rate_limit: {limits: [{rate: 1, per: 1m, burst: 2, key: route, distributed: false}, {rate: 1, per: 1m, burst: 100, key: ip}]}}`)
	admitted := 0
	for i := range 8 {
		if testkit.Do(t, "GET", gws[i%2].URL+"/r/x", "").Status == 200 {
			admitted++
		}
	}
	if admitted != 4 {
		t.Errorf("admitted %d, want 4 (2 per gateway)", admitted)
	}
	if got, _ := rd.Do("EXISTS", "t:rl:r:r:route"); got != ":0" {
		t.Errorf("a local limit wrote to Redis: %q", got)
	}
	if got, _ := rd.Do("EXISTS", "t:rl:r:r:ip:127.0.0.1"); got != ":1" {
		t.Errorf("the ip limit's key is not t:rl:r:r:ip:127.0.0.1: %q", got)
	}
}

// By default the gateways count themselves in Redis, and each one's share
// while Redis is away follows the count.
func TestFallbackShareFollowsTheGatewaysCounted(t *testing.T) {
	t.Parallel()
	rd := testkit.StartRedis(t)
	up := testkit.NewUpstream(t, nil)
	gws := cluster(t, 3, rd, up, `{rate_limit: {rate: 1, per: 1m, burst: 9, key: upstream}}`)
	if got, _ := rd.Do("ZCARD", "t:rl:nodes"); got != ":3" {
		t.Errorf("ZCARD t:rl:nodes = %q right after start, want :3 (each gateway beats once before serving)", got)
	}
	for g, gw := range gws { // each learns the count at its next beat
		testkit.Eventually(t, 5*time.Second, func() bool {
			resp := testkit.Do(t, "GET", gw.AdminURL+"/admin/upstreams", "")
			return strings.Contains(string(resp.Body), `"gateways": 3`)
		}, fmt.Sprintf("gateway %d never counted 3 gateways", g))
	}
	rd.Stop()
	for g, gw := range gws {
		// The share of 1/min over 3 gateways is one call per 3 minutes, in a
		// bucket that starts empty: refused, the first token 180s away.
		for range 5 {
			resp := testkit.Do(t, "GET", gw.URL+"/r/x", "")
			if resp.Status != 429 || resp.Header.Get("Retry-After") != "180" {
				t.Fatalf("gateway %d without Redis: status %d, Retry-After %q; want 429 with 180 (1/min shared by 3)",
					g, resp.Status, resp.Header.Get("Retry-After"))
			}
		}
	}
}

// Gateways started while Redis is down share pauses once it is up.
func TestPauseSharingStartsWhenRedisComesUp(t *testing.T) {
	t.Parallel()
	rd := testkit.StartRedis(t)
	rd.Stop()
	up := testkit.NewUpstream(t, func(ctx *fasthttp.RequestCtx) {
		if string(ctx.Path()) == "/slow" {
			ctx.Response.Header.Set("Retry-After", "30")
			ctx.SetStatusCode(429)
			return
		}
		ctx.SetBodyString("ok")
	})
	gws := cluster(t, 2, rd, up, `{rate_limit: {respect_upstream: true}}`)
	rd.Start()
	// Once the second gateway's subscription is back, a pause reaches it.
	testkit.Eventually(t, 15*time.Second, func() bool {
		testkit.Do(t, "GET", gws[0].URL+"/r/slow", "")
		resp := testkit.Do(t, "GET", gws[1].AdminURL+"/admin/upstreams", "")
		return strings.Contains(string(resp.Body), `"paused": true`)
	}, "the second gateway never learnt of the pause after Redis came up")
}

// Two routes' upstream limits of one name with different settings are two
// buckets in Redis too, as they are locally: they do not share one GCRA key
// with different intervals.
func TestUpstreamLimitsWithDifferentSettingsDoNotShareAKey(t *testing.T) {
	t.Parallel()
	rd := testkit.StartRedis(t)
	up := testkit.NewUpstream(t, nil)
	gw := testkit.StartGateway(t, fmt.Sprintf(`
log: {access_log: false}
cluster: {redis: {addr: %q, key_prefix: "t:"}}
upstreams: {api: {url: %q}}
routes:
  r: {path: "/r/{p:*}", upstream: api, plugins: {rate_limit: {rate: 1, per: 1m, burst: 2}}}
  s: {path: "/s/{p:*}", upstream: api, plugins: {rate_limit: {rate: 1, per: 1m, burst: 5}}}
`, rd.Addr, up.URL))
	count := func(path string) int {
		n := 0
		for range 10 {
			if testkit.Do(t, "GET", gw.URL+path, "").Status == 200 {
				n++
			}
		}
		return n
	}
	if n := count("/r/x"); n != 2 {
		t.Errorf("route r admitted %d, want 2 (its burst)", n)
	}
	if n := count("/s/x"); n != 5 {
		t.Errorf("route s admitted %d after r emptied its bucket, want 5 (its own burst)", n)
	}
	for _, burst := range []int{2, 5} {
		if got, _ := rd.Do("EXISTS", "t:"+ratelimit.UpstreamKey("api", "upstream", 1, time.Minute, burst)); got != ":1" {
			t.Errorf("no Redis key for the burst-%d limit: %q", burst, got)
		}
	}
	if v := metric(t, gw, "sluice_ratelimit_fallback_total"); v != 0 {
		t.Errorf("fallback decisions %v with Redis up", v)
	}
}

// Building a config has no side effects: a reload that is rejected (here
// with a cluster on another Redis) does not repoint the serving config's
// pause sharing, so a pause still reaches the other gateways.
func TestRejectedReloadKeepsPauseSharing(t *testing.T) {
	t.Parallel()
	rd, other := testkit.StartRedis(t), testkit.StartRedis(t)
	up := testkit.NewUpstream(t, func(ctx *fasthttp.RequestCtx) {
		if string(ctx.Path()) == "/slow" {
			ctx.Response.Header.Set("Retry-After", "30")
			ctx.SetStatusCode(429)
			return
		}
		ctx.SetBodyString("ok")
	})
	gws := cluster(t, 2, rd, up, `{rate_limit: {respect_upstream: true}}`)
	// Same upstream and plugins, another Redis, and a broken route: built,
	// then rejected.
	bad := gatewayYAML(up.URL, fmt.Sprintf("cluster: {redis: {addr: %q, key_prefix: \"t:\"}}", other.Addr),
		`{rate_limit: {respect_upstream: true}}`, "") + `  bad: {path: "/b/{p:*}", upstream: api, plugins: {rate_limit: {rate: -1}}}
`
	testkit.WriteFile(t, gws[0].File, bad)
	if err := gws[0].Reload(); err == nil {
		t.Fatal("the broken config was accepted")
	}
	testkit.Do(t, "GET", gws[0].URL+"/r/slow", "")
	testkit.Eventually(t, 5*time.Second, func() bool {
		resp := testkit.Do(t, "GET", gws[1].AdminURL+"/admin/upstreams", "")
		return strings.Contains(string(resp.Body), `"paused": true`)
	}, "after a rejected reload, a pause no longer reaches the other gateway")
}

// Once Redis is back and the grace after it has passed, decisions go
// through Redis alone again: a burst the shared bucket holds is admitted in
// full. (The grace's end was kept in wall-clock nanoseconds and compared
// with the monotonic clock the buckets run on, so it never ended: after the
// first outage every call was held to the gateway's share and a floored
// shared bucket, about one call per refill interval.)
func TestRecoveryGraceEnds(t *testing.T) {
	t.Parallel()
	rd := testkit.StartRedis(t)
	up := testkit.NewUpstream(t, nil)
	gw := cluster(t, 1, rd, up, `{rate_limit: {rate: 20, per: 1s, burst: 10, key: upstream, nodes: 2}}`)[0]
	if s := testkit.Do(t, "GET", gw.URL+"/r/x", "").Status; s != 200 {
		t.Fatalf("with Redis up: %d", s)
	}
	rd.Stop()
	testkit.Eventually(t, 5*time.Second, func() bool {
		testkit.Do(t, "GET", gw.URL+"/r/x", "")
		return strings.Contains(gw.Logs.String(), "Redis is unreachable")
	}, "the outage was not noticed")
	rd.Start()
	testkit.Eventually(t, 10*time.Second, func() bool {
		testkit.Do(t, "GET", gw.URL+"/r/x", "")
		return strings.Contains(gw.Logs.String(), "Redis answers again")
	}, "Redis was not found again")
	// Past the grace, and long enough for the shared bucket to refill
	// (burst 10 at 20/s: 0.5 s).
	time.Sleep(ratelimit.RecoverGrace + time.Second)
	got := burst(t, 10, gw.URL+"/r/x")
	if got[200] != 10 {
		t.Errorf("10 calls at once after the recovery, shared bucket full: %v; want 10x200", got)
	}
}
