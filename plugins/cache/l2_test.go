package cache_test

import (
	"context"
	"fmt"
	"net"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/sluice-gw/sluice/internal/testkit"
	"github.com/valyala/fasthttp"
)

const adminAuth = "Bearer admintoken-0123456789"

// sharedYAML is a gateway of a cluster on rd with one cached route /api/...
// (tags from the path, and a rule) and cache section extra. shared_timeout
// is 1s unless extra sets it: these tests are about what the tier does, on
// a small shared machine (and under the race detector); the fallback tests
// set their own.
func sharedYAML(redisAddr, upstream, extra string) string {
	if !strings.Contains(extra, "shared_timeout") {
		extra += ", shared_timeout: 1s"
	}
	return fmt.Sprintf(`
log: {access_log: false}
admin: {token: admintoken-0123456789}
cluster: {redis: {addr: "%s"}}
cache: {max_size: 8MiB, max_entry_size: 64KiB%s}
upstreams: {up: {url: "%s", timeout: 5s}}
routes:
  r:
    path: "/api/{kind}/{id}"
    upstream: up
    strip_prefix: /api
    plugins:
      cache:
        stale_while_revalidate: 1h
        tags: ["item:{id}"]
        invalidate: [{methods: [POST], path: "/api/touch/{id}", tags: ["item:{id}"]}]
`, redisAddr, extra, upstream)
}

// sharedOrigin answers every GET with max-age=600, a Surrogate-Key of its
// path and a body naming the path and the call number for it.
func sharedOrigin(t *testing.T) *origin {
	return newOrigin(t, func(ctx *fasthttp.RequestCtx, n int64) {
		if !ctx.IsGet() {
			return
		}
		ctx.Response.Header.Set("Cache-Control", "max-age=600")
		ctx.Response.Header.Set("Surrogate-Key", "sk"+strings.ReplaceAll(string(ctx.Path()), "/", "-"))
		fmt.Fprintf(ctx, "%s#%d", ctx.Path(), n)
	})
}

func cacheStatus(r *testkit.Response) string { return r.Header.Get("Cache-Status") }

// waitSubscribed waits until n gateways listen for cluster invalidations.
func waitSubscribed(t *testing.T, rd *testkit.Redis, n int) {
	t.Helper()
	testkit.Eventually(t, 5*time.Second, func() bool {
		got, _ := rd.Subscribers("sluice:cache:invalidate")
		return got == n
	}, fmt.Sprintf("%d gateways subscribed", n))
}

func metric(t *testing.T, g *testkit.Gateway, name string, labels ...string) float64 {
	t.Helper()
	v, _ := g.Metrics(t).Value(name, labels...)
	return v
}

// A miss on one gateway is answered from the entry another gateway stored
// in Redis, and says so in Cache-Status; the answer then lives in its own
// store too.
func TestSharedTierHit(t *testing.T) {
	rd := testkit.StartRedis(t)
	o := sharedOrigin(t)
	g1 := testkit.StartGateway(t, sharedYAML(rd.Addr, o.URL, ""))
	g2 := testkit.StartGateway(t, sharedYAML(rd.Addr, o.URL, ""))

	r := get(t, g1.URL+"/api/items/1")
	if r.Status != 200 || cacheStatus(r) != "sluice-shared; fwd=miss; stored, sluice; fwd=miss; stored" {
		t.Fatalf("first call: %d %q", r.Status, cacheStatus(r))
	}
	r = get(t, g2.URL+"/api/items/1")
	if cacheStatus(r) != "sluice-shared; hit, sluice; fwd=miss; stored" || string(r.Body) != "/items/1#1" {
		t.Fatalf("other gateway: %q %q, want the shared tier's hit of the first answer", cacheStatus(r), r.Body)
	}
	if r.Header.Get("Age") == "" || r.Header.Get("Surrogate-Key") != "sk-items-1" {
		t.Errorf("stored headers lost: Age %q, Surrogate-Key %q", r.Header.Get("Age"), r.Header.Get("Surrogate-Key"))
	}
	r = get(t, g2.URL+"/api/items/1")
	if cacheStatus(r) != "sluice; hit" {
		t.Errorf("second call on the other gateway: %q, want a hit of its own store", cacheStatus(r))
	}
	if n := o.Hits("/items/1"); n != 1 {
		t.Errorf("the provider was called %d times, want 1", n)
	}
	if v := metric(t, g2, "sluice_cache_shared_lookups_total", "result", "hit"); v != 1 {
		t.Errorf("g2 counted %v shared hits, want 1", v)
	}
	if v := metric(t, g1, "sluice_cache_shared_writes_total", "result", "stored"); v != 1 {
		t.Errorf("g1 counted %v shared writes, want 1", v)
	}
}

// Answers with Vary reach the other gateways too: the marker and the
// variant are both shared, and another variant is a miss.
func TestSharedTierVary(t *testing.T) {
	rd := testkit.StartRedis(t)
	o := newOrigin(t, func(ctx *fasthttp.RequestCtx, n int64) {
		ctx.Response.Header.Set("Cache-Control", "max-age=600")
		ctx.Response.Header.Set("Vary", "Accept-Language")
		fmt.Fprintf(ctx, "%s#%d", ctx.Request.Header.Peek("Accept-Language"), n)
	})
	g1 := testkit.StartGateway(t, sharedYAML(rd.Addr, o.URL, ""))
	g2 := testkit.StartGateway(t, sharedYAML(rd.Addr, o.URL, ""))
	get(t, g1.URL+"/api/items/1", "Accept-Language", "ko")
	r := get(t, g2.URL+"/api/items/1", "Accept-Language", "ko")
	if cacheStatus(r) != "sluice-shared; hit, sluice; fwd=miss; stored" || string(r.Body) != "ko#1" {
		t.Fatalf("ko on g2: %q %q", cacheStatus(r), r.Body)
	}
	r = get(t, g2.URL+"/api/items/1", "Accept-Language", "en")
	if string(r.Body) != "en#2" || !strings.HasPrefix(cacheStatus(r), "sluice-shared; fwd=miss; stored, sluice; fwd=vary-miss; stored") {
		t.Fatalf("en on g2: %q %q", cacheStatus(r), r.Body)
	}
	r = get(t, g1.URL+"/api/items/1", "Accept-Language", "en")
	if cacheStatus(r) != "sluice-shared; hit, sluice; fwd=miss; stored" || string(r.Body) != "en#2" {
		t.Fatalf("en on g1: %q %q", cacheStatus(r), r.Body)
	}
}

// 3 gateways x 50 concurrent misses on one key: the provider sees one call,
// whichever gateway asks first; every caller gets its answer. Also for an
// answer with Vary (the waiters follow the marker to their variant).
func TestSharedTierCollapsesAcrossGateways(t *testing.T) {
	for _, vary := range []bool{false, true} {
		t.Run(fmt.Sprintf("vary=%v", vary), func(t *testing.T) { testCollapse(t, vary) })
	}
}

func testCollapse(t *testing.T, vary bool) {
	rd := testkit.StartRedis(t)
	var calls atomic.Int64
	up := testkit.NewUpstream(t, func(ctx *fasthttp.RequestCtx) {
		n := calls.Add(1)
		time.Sleep(300 * time.Millisecond) // a slow provider: everyone arrives while it works
		ctx.Response.Header.Set("Cache-Control", "max-age=600")
		if vary {
			ctx.Response.Header.Set("Vary", "Accept-Language")
		}
		fmt.Fprintf(ctx, "answer#%d", n)
	})
	var gws []*testkit.Gateway
	for range 3 {
		// Waits are bounded by design (past shared_wait a waiter calls the
		// provider itself): generous here, since this test is about the lock
		// and may run on a loaded machine under the race detector.
		gws = append(gws, testkit.StartGateway(t, sharedYAML(rd.Addr, up.URL, ", shared_wait: 10s")))
	}
	const perGateway = 50
	var wg sync.WaitGroup
	var mu sync.Mutex
	statuses := map[string]int{}
	bodies := map[string]int{}
	var failed atomic.Int64
	start := make(chan struct{})
	for _, g := range gws {
		for range perGateway {
			wg.Go(func() {
				<-start
				r, err := testkit.TryDo("GET", g.URL+"/api/items/hot", "", "Accept-Language", "ko")
				if err != nil || r.Status != 200 {
					failed.Add(1)
					return
				}
				mu.Lock()
				statuses[cacheStatus(r)]++
				bodies[string(r.Body)]++
				mu.Unlock()
			})
		}
	}
	close(start)
	wg.Wait()
	if n := failed.Load(); n > 0 {
		t.Errorf("%d of %d callers got no answer", n, 3*perGateway)
	}
	if n := calls.Load(); n != 1 {
		t.Errorf("the provider was called %d times for one key, want 1 (Cache-Status seen: %v)", n, statuses)
		for i, g := range gws {
			t.Logf("gateway %d: waits through %v, fallbacks get %v wait %v; logs:\n%s", i,
				metric(t, g, "sluice_cache_shared_waits_total", "result", "through"),
				metric(t, g, "sluice_cache_shared_fallback_total", "op", "get"),
				metric(t, g, "sluice_cache_shared_fallback_total", "op", "wait"), g.Logs.String())
		}
	}
	if len(bodies) != 1 || bodies["answer#1"] != 3*perGateway {
		t.Errorf("answers: %v, want every caller to get answer#1", bodies)
	}
	t.Logf("provider calls: %d; Cache-Status: %v", calls.Load(), statuses)
	var waited float64
	for _, g := range gws {
		waited += metric(t, g, "sluice_cache_shared_waits_total", "result", "collapsed")
	}
	if waited != 2 {
		t.Errorf("%v gateways answered from another's fetch, want 2", waited)
	}
}

// A waiter does not wait for ever: past shared_wait it calls the provider
// itself.
func TestSharedTierWaitIsBounded(t *testing.T) {
	rd := testkit.StartRedis(t)
	release := make(chan struct{})
	var calls atomic.Int64
	up := testkit.NewUpstream(t, func(ctx *fasthttp.RequestCtx) {
		if calls.Add(1) == 1 {
			<-release
		}
		ctx.Response.Header.Set("Cache-Control", "max-age=600")
		fmt.Fprintf(ctx, "answer#%d", calls.Load())
	})
	defer close(release)
	g1 := testkit.StartGateway(t, sharedYAML(rd.Addr, up.URL, ", shared_wait: 200ms"))
	g2 := testkit.StartGateway(t, sharedYAML(rd.Addr, up.URL, ", shared_wait: 200ms"))
	done := make(chan struct{})
	go func() {
		defer close(done)
		_, _ = testkit.TryDo("GET", g1.URL+"/api/items/slow", "")
	}()
	testkit.Eventually(t, 5*time.Second, func() bool { return calls.Load() == 1 }, "g1 fetching")
	t0 := time.Now()
	r := get(t, g2.URL+"/api/items/slow")
	took := time.Since(t0)
	if r.Status != 200 || cacheStatus(r) != "sluice-shared; fwd=miss; stored, sluice; fwd=miss; stored" {
		t.Errorf("g2: %d %q", r.Status, cacheStatus(r))
	}
	if took < 200*time.Millisecond || took > 2*time.Second {
		t.Errorf("g2 answered after %v, want about shared_wait (200ms)", took)
	}
	if v := metric(t, g2, "sluice_cache_shared_waits_total", "result", "through"); v != 1 {
		t.Errorf("waits through: %v, want 1", v)
	}
	release <- struct{}{}
	<-done
}

// A gateway that restarts (a new process: an empty store) answers at once
// from the shared tier; with cache.shared false it starts cold.
func TestSharedTierWarmAfterRestart(t *testing.T) {
	rd := testkit.StartRedis(t)
	o := sharedOrigin(t)
	g1 := testkit.StartGateway(t, sharedYAML(rd.Addr, o.URL, ""))
	const keys = 50
	for i := range keys {
		get(t, fmt.Sprintf("%s/api/items/%d", g1.URL, i))
	}
	ratio := func(g *testkit.Gateway) float64 {
		hits := 0
		for i := range keys {
			if r := get(t, fmt.Sprintf("%s/api/items/%d", g.URL, i)); strings.Contains(cacheStatus(r), "hit") {
				hits++
			}
		}
		return float64(hits) / keys
	}
	if err := g1.Stop(); err != nil {
		t.Fatal(err)
	}
	warm := ratio(testkit.StartGateway(t, sharedYAML(rd.Addr, o.URL, "")))
	cold := ratio(testkit.StartGateway(t, sharedYAML(rd.Addr, o.URL, ", shared: false")))
	t.Logf("hit ratio of the first pass after a restart: %.2f with the shared tier, %.2f without", warm, cold)
	if warm != 1 || cold != 0 {
		t.Errorf("hit ratio after a restart: %.2f warm (want 1), %.2f cold (want 0)", warm, cold)
	}
	for i := range keys {
		p := fmt.Sprintf("/items/%d", i)
		if n := o.Hits(p); n != 2 { // g1, then the cold gateway
			t.Fatalf("%s: %d provider calls, want 2", p, n)
		}
	}
}

// Every kind of invalidation reaches both tiers on every gateway: after
// it, a gateway that never saw the entry (a fresh store) misses in Redis.
func TestSharedTierInvalidation(t *testing.T) {
	rd := testkit.StartRedis(t)
	o := sharedOrigin(t)
	yaml := sharedYAML(rd.Addr, o.URL, "")
	g1 := testkit.StartGateway(t, yaml)
	g2 := testkit.StartGateway(t, yaml)
	waitSubscribed(t, rd, 2)
	for _, tc := range []struct {
		name  string
		path  string
		purge func()
	}{
		{"route tag", "/items/t1", func() {
			testkit.Do(t, "POST", g1.AdminURL+"/admin/cache/purge", `{"tags":["item:t1"]}`, "Authorization", adminAuth)
		}},
		{"provider tag", "/items/t2", func() {
			testkit.Do(t, "POST", g1.AdminURL+"/admin/cache/purge", `{"tags":["sk-items-t2"]}`, "Authorization", adminAuth)
		}},
		{"key", "/items/k", func() {
			testkit.Do(t, "POST", g1.AdminURL+"/admin/cache/purge", `{"keys":["/api/items/k"]}`, "Authorization", adminAuth)
		}},
		{"prefix", "/items/p", func() {
			testkit.Do(t, "POST", g1.AdminURL+"/admin/cache/purge", `{"prefix":"/api/items/p"}`, "Authorization", adminAuth)
		}},
		{"all", "/items/a", func() {
			testkit.Do(t, "POST", g1.AdminURL+"/admin/cache/purge", `{"all":true}`, "Authorization", adminAuth)
		}},
		{"unsafe method", "/items/m", func() { testkit.Do(t, "PUT", g1.URL+"/api/items/m", "{}") }},
		{"rule", "/items/r", func() { testkit.Do(t, "POST", g1.URL+"/api/touch/r", "{}") }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			keep := "/items/keep-" + strings.ReplaceAll(tc.name, " ", "-")
			for _, p := range []string{tc.path, keep} {
				get(t, g1.URL+"/api"+p)
				get(t, g2.URL+"/api"+p)
				if r := get(t, g2.URL+"/api"+p); cacheStatus(r) != "sluice; hit" {
					t.Fatalf("%s not cached on g2: %q", p, cacheStatus(r))
				}
			}
			tc.purge()
			before := o.Hits(tc.path) // an unsafe method went to the provider too
			testkit.Eventually(t, 5*time.Second, func() bool {
				return !strings.Contains(cacheStatus(get(t, g2.URL+"/api"+tc.path)), "hit")
			}, "g2 misses after the purge on g1")
			if o.Hits(tc.path) != before+1 {
				t.Errorf("after the purge g2 got %s from the provider %d times, want once", tc.path, o.Hits(tc.path)-before)
			}
			// A fresh gateway finds nothing in Redis but g2's new answer.
			g3 := testkit.StartGateway(t, yaml)
			r := get(t, g3.URL+"/api"+tc.path)
			if want := fmt.Sprintf("%s#%d", tc.path, before+1); string(r.Body) != want {
				t.Errorf("a fresh gateway got %q (%q), want the answer fetched after the purge %q", r.Body, cacheStatus(r), want)
			}
			if tc.name != "all" {
				if r := get(t, g3.URL+"/api"+keep); cacheStatus(r) != "sluice-shared; hit, sluice; fwd=miss; stored" {
					t.Errorf("%s was purged too: %q", keep, cacheStatus(r))
				}
			}
			_ = g3.Stop()
		})
	}
}

// Redis going away: the store keeps answering, misses go to the provider,
// nothing fails; the fallback is counted and logged once, the recovery
// once, and the shared tier is used again after it.
func TestSharedTierRedisDown(t *testing.T) {
	rd := testkit.StartRedis(t)
	o := sharedOrigin(t)
	g := testkit.StartGateway(t, sharedYAML(rd.Addr, o.URL, ", shared_timeout: 200ms"))
	get(t, g.URL+"/api/items/1")
	rd.Stop()
	for i := range 20 {
		if r := get(t, g.URL+"/api/items/1"); cacheStatus(r) != "sluice; hit" {
			t.Fatalf("the store stopped answering while Redis is down: %q", cacheStatus(r))
		}
		r := get(t, fmt.Sprintf("%s/api/items/down-%d", g.URL, i))
		if r.Status != 200 || cacheStatus(r) != "sluice-shared; detail=unavailable, sluice; fwd=miss; stored" {
			t.Fatalf("a miss while Redis is down: %d %q", r.Status, cacheStatus(r))
		}
	}
	if v := metric(t, g, "sluice_cache_shared_fallback_total", "op", "get"); v != 20 {
		t.Errorf("fallbacks counted: %v, want 20", v)
	}
	// A purge while Redis is away cannot reach it: the tier is flushed once
	// it answers again (the entry purged must not come back from there).
	testkit.Do(t, "POST", g.AdminURL+"/admin/cache/purge", `{"tags":["item:1"]}`, "Authorization", adminAuth)
	if n := strings.Count(g.Logs.String(), "shared tier (Redis) does not answer"); n != 1 {
		t.Errorf("the outage was logged %d times, want once:\n%s", n, g.Logs.String())
	}
	rd.Start()
	testkit.Eventually(t, 10*time.Second, func() bool {
		return strings.HasPrefix(cacheStatus(get(t, fmt.Sprintf("%s/api/items/up-%d", g.URL, time.Now().UnixNano()))), "sluice-shared; fwd=miss; stored")
	}, "the shared tier is used again")
	testkit.Eventually(t, 5*time.Second, func() bool {
		return strings.Contains(g.Logs.String(), "flushed the shared tier")
	}, "the tier flushed after lost invalidations")
	if n := strings.Count(g.Logs.String(), "shared tier (Redis) answers again"); n != 1 {
		t.Errorf("the recovery was logged %d times, want once", n)
	}
	if n := strings.Count(g.Logs.String(), "shared tier (Redis) does not answer"); n != 1 {
		t.Errorf("the outage was logged %d times, want once", n)
	}
}

// Bytes in Redis are hostile input: junk, an entry of another key, a key
// of the wrong type are misses (counted), never an answer or a panic.
func TestSharedTierGarbage(t *testing.T) {
	rd := testkit.StartRedis(t)
	o := sharedOrigin(t)
	yaml := sharedYAML(rd.Addr, o.URL, "")
	g1 := testkit.StartGateway(t, yaml)
	get(t, g1.URL+"/api/items/a")
	entryKey := func() string {
		keys := redisKeys(t, rd, "sluice:cache:e:*")
		if len(keys) != 1 {
			t.Fatalf("entries in Redis: %v, want 1", keys)
		}
		return keys[0]
	}
	keyA := entryKey()
	rc := redis.NewClient(&redis.Options{Addr: rd.Addr})
	defer rc.Close()
	ctx := context.Background()
	valueA, err := rc.Get(ctx, keyA).Bytes()
	if err != nil {
		t.Fatal(err)
	}
	testkit.Do(t, "POST", g1.AdminURL+"/admin/cache/purge", `{"all":true}`, "Authorization", adminAuth)
	get(t, g1.URL+"/api/items/b")
	keyB := entryKey()

	for _, tc := range []struct {
		name string
		set  func() error
	}{
		{"junk", func() error { return rc.Set(ctx, keyB, "\x01not an entry at all", 0).Err() }},
		{"truncated", func() error { return rc.Set(ctx, keyB, valueA[:40], 0).Err() }},
		{"another key's entry", func() error { return rc.Set(ctx, keyB, valueA, 0).Err() }},
		{"a set", func() error {
			if err := rc.Del(ctx, keyB).Err(); err != nil {
				return err
			}
			return rc.SAdd(ctx, keyB, "x").Err()
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if err := tc.set(); err != nil {
				t.Fatal(err)
			}
			g := testkit.StartGateway(t, yaml)
			before := o.Hits("/items/b")
			r := get(t, g.URL+"/api/items/b")
			if r.Status != 200 || !strings.HasPrefix(string(r.Body), "/items/b#") || o.Hits("/items/b") != before+1 {
				t.Errorf("answered %d %q (%q), want a miss fetched from the provider", r.Status, r.Body, cacheStatus(r))
			}
			if tc.name != "a set" {
				if v := metric(t, g, "sluice_cache_shared_lookups_total", "result", "corrupt"); v != 1 {
					t.Errorf("corrupt lookups: %v, want 1", v)
				}
			}
			if v := metric(t, g, "sluice_cache_shared_fallback_total", "op", "get"); v != 0 {
				t.Errorf("garbage counted as an outage: %v fallbacks", v)
			}
			_ = g.Stop()
		})
	}
}

// A Redis that accepts connections and never answers: misses go to the
// provider within shared_timeout, nothing fails.
func TestSharedTierSlowRedis(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var mu sync.Mutex
	var conns []net.Conn
	acceptDone := make(chan struct{})
	go func() {
		defer close(acceptDone)
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			mu.Lock()
			conns = append(conns, c)
			mu.Unlock()
		}
	}()
	t.Cleanup(func() {
		_ = ln.Close()
		<-acceptDone
		mu.Lock()
		for _, c := range conns {
			_ = c.Close()
		}
		mu.Unlock()
	})
	o := sharedOrigin(t)
	g := testkit.StartGateway(t, sharedYAML(ln.Addr().String(), o.URL, ", shared_timeout: 30ms"))
	for i := range 5 {
		t0 := time.Now()
		r := get(t, fmt.Sprintf("%s/api/items/%d", g.URL, i))
		took := time.Since(t0)
		if r.Status != 200 || !strings.HasPrefix(cacheStatus(r), "sluice-shared; detail=unavailable") {
			t.Errorf("miss %d: %d %q", i, r.Status, cacheStatus(r))
		}
		if took > 500*time.Millisecond {
			t.Errorf("miss %d took %v with a Redis that never answers (shared_timeout 30ms)", i, took)
		}
	}
	if v := metric(t, g, "sluice_cache_shared_fallback_total", "op", "get"); v != 5 {
		t.Errorf("fallbacks: %v, want 5", v)
	}
}

// An entry over shared_max_entry_size stays in the gateway's own store.
func TestSharedTierEntryCap(t *testing.T) {
	rd := testkit.StartRedis(t)
	o := newOrigin(t, func(ctx *fasthttp.RequestCtx, n int64) {
		ctx.Response.Header.Set("Cache-Control", "max-age=600")
		size := 100
		if strings.HasSuffix(string(ctx.Path()), "big") {
			size = 8 << 10
		}
		ctx.SetBodyString(strings.Repeat("x", size))
	})
	yaml := sharedYAML(rd.Addr, o.URL, ", shared_max_entry_size: 4KiB")
	g1 := testkit.StartGateway(t, yaml)
	g2 := testkit.StartGateway(t, yaml)
	if r := get(t, g1.URL+"/api/items/big"); cacheStatus(r) != "sluice-shared; fwd=miss, sluice; fwd=miss; stored" {
		t.Errorf("big on g1: %q, want stored locally only", cacheStatus(r))
	}
	if r := get(t, g1.URL+"/api/items/big"); cacheStatus(r) != "sluice; hit" {
		t.Errorf("big again on g1: %q", cacheStatus(r))
	}
	if r := get(t, g2.URL+"/api/items/big"); !strings.HasPrefix(cacheStatus(r), "sluice-shared; fwd=miss") || o.Hits("/items/big") != 2 {
		t.Errorf("big on g2: %q, %d provider calls, want a miss", cacheStatus(r), o.Hits("/items/big"))
	}
	if v := metric(t, g1, "sluice_cache_shared_writes_total", "result", "too_large"); v != 1 {
		t.Errorf("too_large: %v, want 1", v)
	}
	get(t, g1.URL+"/api/items/small")
	if r := get(t, g2.URL+"/api/items/small"); cacheStatus(r) != "sluice-shared; hit, sluice; fwd=miss; stored" {
		t.Errorf("small on g2: %q, want a shared hit", cacheStatus(r))
	}
}

// A purge that comes while a stale-while-revalidate refresh is fetching
// the entry: the refreshed answer, fetched before the purge, is refused by
// Redis and dropped by the store; no gateway serves it.
func TestSharedTierPurgeDuringRefresh(t *testing.T) {
	rd := testkit.StartRedis(t)
	fetching := make(chan struct{}, 1)
	release := make(chan struct{})
	var calls atomic.Int64
	up := testkit.NewUpstream(t, func(ctx *fasthttp.RequestCtx) {
		n := calls.Add(1)
		if n == 2 { // the background refresh
			fetching <- struct{}{}
			<-release
		}
		ctx.Response.Header.Set("Cache-Control", "max-age=1")
		fmt.Fprintf(ctx, "v%d", n)
	})
	yaml := sharedYAML(rd.Addr, up.URL, "")
	g1 := testkit.StartGateway(t, yaml)
	g2 := testkit.StartGateway(t, yaml)
	waitSubscribed(t, rd, 2)
	if r := get(t, g1.URL+"/api/items/r"); string(r.Body) != "v1" {
		t.Fatalf("first: %q", r.Body)
	}
	time.Sleep(1100 * time.Millisecond) // stale, within stale_while_revalidate
	if r := get(t, g1.URL+"/api/items/r"); string(r.Body) != "v1" || !strings.Contains(cacheStatus(r), "stale-while-revalidate") {
		t.Fatalf("stale: %q %q", r.Body, cacheStatus(r))
	}
	select {
	case <-fetching:
	case <-time.After(5 * time.Second):
		t.Fatal("no background refresh")
	}
	r := testkit.Do(t, "POST", g2.AdminURL+"/admin/cache/purge", `{"tags":["item:r"]}`, "Authorization", adminAuth)
	if r.Status != 200 {
		t.Fatalf("purge: %d %s", r.Status, r.Body)
	}
	close(release)
	testkit.Eventually(t, 5*time.Second, func() bool {
		return metric(t, g1, "sluice_cache_shared_writes_total", "result", "stored")+
			metric(t, g1, "sluice_cache_shared_writes_total", "result", "refused") == 2
	}, "the refresh offered its answer to Redis")
	testkit.Eventually(t, 5*time.Second, func() bool {
		return metric(t, g1, "sluice_cache_invalidations_total", "source", "cluster") >= 1
	}, "g1 got the purge")
	g3 := testkit.StartGateway(t, yaml)
	for name, g := range map[string]*testkit.Gateway{"g1": g1, "g2": g2, "g3": g3} {
		r := get(t, g.URL+"/api/items/r")
		if string(r.Body) == "v2" {
			t.Errorf("%s answered %q (%q): the answer fetched before the purge came back", name, r.Body, cacheStatus(r))
		}
	}
	if v := metric(t, g1, "sluice_cache_shared_writes_total", "result", "refused"); v != 1 {
		t.Errorf("refused writes: %v, want 1 (the refresh's)", v)
	}
}

// cache.shared: false keeps a cluster's gateways off Redis for entries;
// bad settings are refused naming their key.
func TestSharedTierSwitchAndSettings(t *testing.T) {
	rd := testkit.StartRedis(t)
	o := sharedOrigin(t)
	g := testkit.StartGateway(t, sharedYAML(rd.Addr, o.URL, ", shared: false"))
	if r := get(t, g.URL+"/api/items/1"); cacheStatus(r) != "sluice; fwd=miss; stored" {
		t.Errorf("shared off: %q", cacheStatus(r))
	}
	if keys := redisKeys(t, rd, "sluice:cache:*"); len(keys) != 0 {
		t.Errorf("shared off wrote %v to Redis", keys)
	}
	base := `
upstreams: {up: {url: "http://127.0.0.1:1"}}
routes: {r: {path: "/{p:*}", upstream: up, plugins: {cache: {}}}}
cache: {%s}`
	for _, tc := range []struct{ global, path, msg string }{
		{"shared_timeout: 0s", "cache.shared_timeout", "positive"},
		{"shared_timeout: 1m", "cache.shared_timeout", "at most 10s"},
		{"shared_wait: -1s", "cache.shared_wait", "negative"},
		{"shared_max_entry_size: 10", "cache.shared_max_entry_size", "at least 1KiB"},
		{"max_entry_size: 64KiB, shared_max_entry_size: 1MiB", "cache.shared_max_entry_size", "more than max_entry_size"},
		{"shared: maybe", "cache.shared", ""},
	} {
		probs := testkit.ConfigProblems(t, fmt.Sprintf(base, tc.global))
		if tc.msg == "" {
			if len(probs) != 1 || probs[0].Path != tc.path {
				t.Errorf("%s: got %v", tc.global, probs)
			}
			continue
		}
		testkit.WantOneProblem(t, probs, tc.path, tc.msg)
	}
	if probs := testkit.ConfigProblems(t, fmt.Sprintf(base, "shared: false, shared_timeout: 200ms, shared_wait: 0s, shared_max_entry_size: 64KiB")); len(probs) != 0 {
		t.Errorf("valid settings refused: %v", probs)
	}
}

// redisKeys lists the keys matching pattern.
func redisKeys(t *testing.T, rd *testkit.Redis, pattern string) []string {
	t.Helper()
	rc := redis.NewClient(&redis.Options{Addr: rd.Addr})
	defer rc.Close()
	keys, err := rc.Keys(context.Background(), pattern).Result()
	if err != nil {
		t.Fatal(err)
	}
	return keys
}

// A tag set does not keep the digests of entries that are gone (expired or
// evicted by Redis) for ever: writes under the tag drop some of them.
func TestSharedTierTagSetsShed(t *testing.T) {
	rd := testkit.StartRedis(t)
	o := newOrigin(t, func(ctx *fasthttp.RequestCtx, n int64) {
		ctx.Response.Header.Set("Cache-Control", "max-age=600")
		ctx.Response.Header.Set("Surrogate-Key", "grp")
		fmt.Fprintf(ctx, "%s#%d", ctx.Path(), n)
	})
	g := testkit.StartGateway(t, sharedYAML(rd.Addr, o.URL, ""))
	rc := redis.NewClient(&redis.Options{Addr: rd.Addr})
	defer rc.Close()
	ctx := context.Background()
	for i := range 10 {
		get(t, fmt.Sprintf("%s/api/old/%d", g.URL, i))
	}
	sets := redisKeys(t, rd, "sluice:cache:t:*")
	var grp string
	for _, k := range sets {
		if n, _ := rc.SCard(ctx, k).Result(); n == 10 {
			grp = k
		}
	}
	if grp == "" {
		t.Fatalf("no tag set with the 10 entries among %v", sets)
	}
	// Redis evicts them (as maxmemory would).
	if err := rc.Del(ctx, redisKeys(t, rd, "sluice:cache:e:*")...).Err(); err != nil {
		t.Fatal(err)
	}
	for i := range 10 {
		get(t, fmt.Sprintf("%s/api/new/%d", g.URL, i))
	}
	n, err := rc.SCard(ctx, grp).Result()
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("tag set: %d members after 10 gone and 10 new", n)
	if n >= 20 || n < 10 {
		t.Errorf("tag set has %d members after 10 entries went and 10 came, want fewer than 20 and the 10 live ones", n)
	}
	// The live ones are all still purged by the tag.
	testkit.Do(t, "POST", g.AdminURL+"/admin/cache/purge", `{"tags":["grp"]}`, "Authorization", adminAuth)
	if keys := redisKeys(t, rd, "sluice:cache:e:*"); len(keys) != 0 {
		t.Errorf("entries left after the tag purge: %d", len(keys))
	}
}

// cache.shared and its settings apply at reload: off, the gateway stops
// using Redis for entries (and purges no longer reach it); on again, it
// uses it again.
func TestSharedTierReload(t *testing.T) {
	rd := testkit.StartRedis(t)
	o := sharedOrigin(t)
	g := testkit.StartGateway(t, sharedYAML(rd.Addr, o.URL, ""))
	if r := get(t, g.URL+"/api/items/1"); !strings.HasPrefix(cacheStatus(r), "sluice-shared; fwd=miss; stored") {
		t.Fatalf("shared on: %q", cacheStatus(r))
	}
	testkit.WriteFile(t, g.File, sharedYAML(rd.Addr, o.URL, ", shared: false"))
	if err := g.Reload(); err != nil {
		t.Fatal(err)
	}
	if r := get(t, g.URL+"/api/items/2"); cacheStatus(r) != "sluice; fwd=miss; stored" {
		t.Errorf("after a reload with shared: false: %q", cacheStatus(r))
	}
	if r := get(t, g.URL+"/api/items/1"); cacheStatus(r) != "sluice; hit" {
		t.Errorf("the store lost its entry at reload: %q", cacheStatus(r))
	}
	if n := len(redisKeys(t, rd, "sluice:cache:e:*")); n != 1 {
		t.Errorf("%d entries in Redis, want only the one written before the reload", n)
	}
	testkit.WriteFile(t, g.File, sharedYAML(rd.Addr, o.URL, ", shared_max_entry_size: 1KiB"))
	if err := g.Reload(); err != nil {
		t.Fatal(err)
	}
	if r := get(t, g.URL+"/api/items/3"); !strings.HasPrefix(cacheStatus(r), "sluice-shared; fwd=miss; stored") {
		t.Errorf("shared on again: %q", cacheStatus(r))
	}
}
