package cache_test

import (
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/sluice-gw/sluice/internal/testkit"
	"github.com/valyala/fasthttp"
)

// warmValue reads one series of sluice_cache_warm_fetches_total.
func warmValue(t *testing.T, gw *testkit.Gateway, route, result string) float64 {
	t.Helper()
	v, _ := gw.Metrics(t).Value("sluice_cache_warm_fetches_total", "route", route, "result", result)
	return v
}

// Declared paths are fetched at start: the first caller finds them fresh,
// and the provider saw only the warm fetch.
func TestWarmAtStart(t *testing.T) {
	o := newOrigin(t, func(ctx *fasthttp.RequestCtx, n int64) {
		ctx.Response.Header.Set("Cache-Control", "max-age=600")
		fmt.Fprintf(ctx, "%s n=%d", ctx.Path(), n)
	})
	gw := gateway(t, o.URL, `{warm: {paths: ["/api/repos/app"], template: "/api/repos/{repo}/issues", values: {repo: [api, web]}, rate: 50, concurrency: 2}}`)
	paths := []string{"/repos/app", "/repos/api/issues", "/repos/web/issues"}
	testkit.Eventually(t, 5*time.Second, func() bool { return warmValue(t, gw, "r", "ok") == 3 }, "the declared paths were not warmed")
	for _, p := range paths {
		if n := o.Hits(p); n != 1 {
			t.Errorf("%s: upstream saw %d requests before any caller, want the one warm fetch", p, n)
		}
		r := get(t, gw.URL+"/api"+p)
		if cs := r.Header.Get("Cache-Status"); cs != "sluice; hit" || string(r.Body) != p+" n=1" {
			t.Errorf("first caller of %s: Cache-Status %q, body %q; want a hit on the warm answer", p, cs, r.Body)
		}
		if n := o.Hits(p); n != 1 {
			t.Errorf("%s: upstream saw %d requests after the first caller, want 1", p, n)
		}
	}
}

// An answer is fetched again before it expires: callers keep hitting.
func TestWarmRefreshesBeforeExpiry(t *testing.T) {
	o := newOrigin(t, func(ctx *fasthttp.RequestCtx, n int64) {
		ctx.Response.Header.Set("Cache-Control", "max-age=2")
		fmt.Fprintf(ctx, "n=%d", n)
	})
	start := time.Now()
	gw := gateway(t, o.URL, `{warm: {paths: ["/api/rates"], refresh_ahead: 50%, rate: 20}}`)
	testkit.Eventually(t, 5*time.Second, func() bool { return warmValue(t, gw, "r", "ok") == 1 }, "not warmed")
	// Lifetime 2s, refreshed with 1s left: about once a second.
	for time.Since(start) < 3500*time.Millisecond {
		if r := get(t, gw.URL+"/api/rates"); r.Header.Get("Cache-Status") != "sluice; hit" {
			t.Fatalf("after %v: Cache-Status %q, want every caller to hit", time.Since(start).Round(time.Millisecond), r.Header.Get("Cache-Status"))
		}
		time.Sleep(100 * time.Millisecond)
	}
	n := o.Hits("/rates")
	elapsed := time.Since(start)
	if n < 3 || float64(n) > 1+elapsed.Seconds()+0.5 {
		t.Errorf("upstream saw %d fetches in %v: want about one a second (refresh with half the lifetime left)", n, elapsed)
	}
	if got := warmValue(t, gw, "r", "ok"); got != float64(n) {
		t.Errorf("warm ok = %v, upstream fetches %d", got, n)
	}
}

// Warm fetches keep to their own rate, whatever the number of paths and workers.
func TestWarmRateBudget(t *testing.T) {
	o := newOrigin(t, func(ctx *fasthttp.RequestCtx, n int64) {
		ctx.Response.Header.Set("Cache-Control", "max-age=600")
		ctx.SetBodyString("x")
	})
	var values []string
	for i := range 40 {
		values = append(values, fmt.Sprint(i))
	}
	start := time.Now()
	gw := gateway(t, o.URL, fmt.Sprintf(`{warm: {template: "/api/items/{id}", values: {id: [%s]}, rate: 5, concurrency: 4}}`, strings.Join(values, ", ")))
	time.Sleep(2 * time.Second)
	got := warmValue(t, gw, "r", "ok")
	elapsed := time.Since(start).Seconds()
	// A burst of one, then 5 a second.
	if max := 1 + 5*elapsed; got > max || got < 5*elapsed-3 {
		t.Errorf("%v warm fetches in %.2fs at rate 5: want at most %.1f and close to it", got, elapsed, max)
	}
	total := int64(0)
	for _, v := range values {
		total += o.Hits("/items/" + v)
	}
	// Every fetch the metric counts reached the upstream; the upstream may
	// also have seen the fetches in flight when the metric was read (at
	// most concurrency of them), which are not counted yet.
	if float64(total) < got || float64(total) > got+4 {
		t.Errorf("upstream saw %d requests, warm ok = %v: want ok plus at most 4 in flight", total, got)
	}
}

// A 404 or a 500 is counted and tried again later, waiting longer each
// time up to max_backoff; a good path beside them is unaffected.
func TestWarmErrorStatusBacksOff(t *testing.T) {
	var mu sync.Mutex
	seen := map[string][]time.Time{}
	o := newOrigin(t, func(ctx *fasthttp.RequestCtx, n int64) {
		mu.Lock()
		seen[string(ctx.Path())] = append(seen[string(ctx.Path())], time.Now())
		mu.Unlock()
		switch string(ctx.Path()) {
		case "/missing":
			ctx.SetStatusCode(404)
		case "/broken":
			ctx.SetStatusCode(500)
		default:
			ctx.Response.Header.Set("Cache-Control", "max-age=600")
		}
	})
	gw := gateway(t, o.URL, `{warm: {paths: ["/api/missing", "/api/broken", "/api/good"], rate: 100, concurrency: 2, backoff: 200ms, max_backoff: 800ms}}`)
	time.Sleep(3 * time.Second)
	mu.Lock()
	defer mu.Unlock()
	for _, p := range []string{"/missing", "/broken"} {
		at := seen[p]
		// Tries at about 0, 0.2, 0.6, 1.4, 2.2, 3.0s: 5 or 6 in 3s.
		if len(at) < 4 || len(at) > 6 {
			t.Fatalf("%s fetched %d times in 3s, want 4 to 6 (backoff 200ms doubling, capped at 800ms)", p, len(at))
		}
		gaps := make([]time.Duration, len(at)-1)
		for i := range gaps {
			gaps[i] = at[i+1].Sub(at[i])
		}
		if gaps[0] < 150*time.Millisecond || gaps[1] < 350*time.Millisecond || gaps[2] < 700*time.Millisecond {
			t.Errorf("%s: gaps %v, want about 200ms, 400ms, 800ms", p, gaps)
		}
		for _, g := range gaps[2:] {
			if g > 1200*time.Millisecond {
				t.Errorf("%s: gap %v, want the backoff capped at 800ms", p, g)
			}
		}
	}
	if n := len(seen["/good"]); n != 1 {
		t.Errorf("/good fetched %d times, want once (fresh for 10m)", n)
	}
	errs := warmValue(t, gw, "r", "error_status")
	if want := float64(len(seen["/missing"]) + len(seen["/broken"])); errs != want {
		t.Errorf("error_status = %v, want %v", errs, want)
	}
	if ok := warmValue(t, gw, "r", "ok"); ok != 1 {
		t.Errorf("ok = %v, want 1", ok)
	}
}

// An answer the cache may not store is counted and tried again later.
func TestWarmNotStored(t *testing.T) {
	o := newOrigin(t, func(ctx *fasthttp.RequestCtx, n int64) {
		ctx.Response.Header.Set("Cache-Control", "no-store")
	})
	gw := gateway(t, o.URL, `{warm: {paths: ["/api/live"], rate: 100, backoff: 300ms, max_backoff: 300ms}}`)
	time.Sleep(1100 * time.Millisecond)
	n := o.Hits("/live")
	if n < 3 || n > 5 {
		t.Errorf("fetched %d times in 1.1s, want every 300ms (4)", n)
	}
	if got := warmValue(t, gw, "r", "not_stored"); got != float64(n) {
		t.Errorf("not_stored = %v, want %d", got, n)
	}
}

// Warm fetches go through the stages after the cache: inject_auth's
// credentials reach the provider (and nowhere else), authenticate is not
// asked (there is no caller), and the caller who then asks is served the
// entry.
func TestWarmInjectsCredentials(t *testing.T) {
	up := testkit.NewUpstream(t, func(ctx *fasthttp.RequestCtx) {
		if string(ctx.Request.Header.Peek("Authorization")) != "Bearer provider-token-xyz" {
			ctx.SetStatusCode(401)
			return
		}
		ctx.Response.Header.Set("Cache-Control", "public, max-age=600")
		ctx.SetBodyString("secret data")
	})
	gw := testkit.StartGateway(t, fmt.Sprintf(`
log: {access_log: true}
admin: {token: admintoken-0123456789}
consumers: {app: {keys: ["app-key-0123456789"]}}
upstreams: {up: {url: "%s"}}
routes:
  r:
    path: "/api/{path:*}"
    upstream: up
    strip_prefix: /api
    plugins:
      authenticate: {}
      cache: {warm: {paths: ["/api/report"]}}
      inject_auth: {type: bearer, token: provider-token-xyz}
`, up.URL))
	testkit.Eventually(t, 5*time.Second, func() bool { return warmValue(t, gw, "r", "ok") == 1 }, "not warmed")
	if up.Count() != 1 || up.Last(t).URI != "/report" {
		t.Fatalf("upstream saw %d requests (last %q), want the warm fetch of /report", up.Count(), up.Last(t).URI)
	}
	r := get(t, gw.URL+"/api/report", "X-Api-Key", "app-key-0123456789")
	if r.Header.Get("Cache-Status") != "sluice; hit" || string(r.Body) != "secret data" {
		t.Errorf("caller: %d %q %q, want a hit", r.Status, r.Header.Get("Cache-Status"), r.Body)
	}
	if r := get(t, gw.URL+"/api/report"); r.Status != 401 {
		t.Errorf("a caller without a key got %d: the warm entry must not skip authenticate", r.Status)
	}
	if up.Count() != 1 {
		t.Errorf("upstream saw %d requests, want 1", up.Count())
	}
	_, body := gw.PluginConfigs(t, "Authorization", "Bearer admintoken-0123456789")
	for what, s := range map[string]string{"logs": gw.Logs.String(), "/admin/config": string(body), "metrics": fmt.Sprint(gw.Metrics(t))} {
		if strings.Contains(s, "provider-token-xyz") {
			t.Errorf("the provider token is in the %s", what)
		}
	}
	if !strings.Contains(gw.Logs.String(), `"internal":true`) {
		t.Error("the warm fetch has no internal access line")
	}
}

// A reload starts the new config's warmer and stops the old one: what is
// already fresh is not fetched again, new paths are, and only one warmer
// refreshes afterwards. (TestMain fails the package on leaked goroutines.)
func TestWarmReload(t *testing.T) {
	o := newOrigin(t, func(ctx *fasthttp.RequestCtx, n int64) {
		ctx.Response.Header.Set("Cache-Control", "max-age=2")
		ctx.SetBodyString("x")
	})
	conf := func(paths string) string {
		return fmt.Sprintf(`
log: {access_log: false}
upstreams: {up: {url: "%s"}}
routes:
  r: {path: "/api/{path:*}", upstream: up, strip_prefix: /api, plugins: {cache: {warm: {paths: [%s], refresh_ahead: 50%%, rate: 50}}}}
`, o.URL, paths)
	}
	gw := testkit.StartGateway(t, conf(`"/api/a"`))
	testkit.Eventually(t, 5*time.Second, func() bool { return warmValue(t, gw, "r", "ok") == 1 }, "not warmed")
	testkit.WriteFile(t, gw.File, conf(`"/api/a", "/api/b"`))
	if err := gw.Reload(); err != nil {
		t.Fatal(err)
	}
	testkit.Eventually(t, 5*time.Second, func() bool { return o.Hits("/b") == 1 }, "the new path was not warmed after the reload")
	if n := o.Hits("/a"); n != 1 {
		t.Errorf("/a fetched %d times right after the reload, want it kept (fresh)", n)
	}
	// Refreshed about once a second from now on: by one warmer, not two.
	before, start := o.Hits("/a"), time.Now()
	time.Sleep(3 * time.Second)
	if n := o.Hits("/a") - before; n < 2 || float64(n) > time.Since(start).Seconds()+1 {
		t.Errorf("/a refreshed %d times in %v, want about once a second (one warmer)", n, time.Since(start).Round(time.Millisecond))
	}
	if err := gw.Stop(); err != nil {
		t.Fatal(err)
	}
	after := o.Hits("/a") + o.Hits("/b")
	time.Sleep(1500 * time.Millisecond)
	if n := o.Hits("/a") + o.Hits("/b"); n != after {
		t.Errorf("%d warm fetches after shutdown", n-after)
	}
}

// A purge that runs while a warm refresh is in flight wins: the refresh's
// answer, fetched before the purge ended, is not kept.
func TestWarmPurgeDuringRefresh(t *testing.T) {
	inFlight := make(chan struct{})
	release := make(chan struct{})
	o := newOrigin(t, func(ctx *fasthttp.RequestCtx, n int64) {
		ctx.Response.Header.Set("Cache-Control", "max-age=2")
		if n == 2 { // the first refresh: hold it until the purge is done
			close(inFlight)
			select {
			case <-release:
			case <-time.After(5 * time.Second):
			}
		}
		fmt.Fprintf(ctx, "n=%d", n)
	})
	gw := gateway(t, o.URL, `{warm: {paths: ["/api/doc"], refresh_ahead: 50%, rate: 50, backoff: 10s}}`)
	select {
	case <-inFlight:
	case <-time.After(5 * time.Second):
		t.Fatal("no warm refresh started")
	}
	r := testkit.Do(t, "POST", gw.AdminURL+"/admin/cache/purge", `{"keys":["/api/doc"]}`, "Authorization", "Bearer admintoken-0123456789")
	if r.Status != 200 || !strings.Contains(string(r.Body), `"purged":1`) {
		t.Fatalf("purge: %d %s", r.Status, r.Body)
	}
	close(release)
	testkit.Eventually(t, 5*time.Second, func() bool { return warmValue(t, gw, "r", "purged") == 1 }, "the refresh was not counted as purged")
	r = get(t, gw.URL+"/api/doc")
	if cs := r.Header.Get("Cache-Status"); cs != "sluice; fwd=miss; stored" || string(r.Body) != "n=3" {
		t.Errorf("after the purge: Cache-Status %q, body %q; want a miss, not the refresh fetched during the purge", cs, r.Body)
	}
}

// Warming as a consumer, on a route whose answers are kept per consumer:
// the entry serves that consumer.
func TestWarmAsConsumer(t *testing.T) {
	up := testkit.NewUpstream(t, func(ctx *fasthttp.RequestCtx) {
		ctx.Response.Header.Set("Cache-Control", "max-age=600")
		ctx.SetBodyString(string(ctx.Request.Header.Peek("X-Key")))
	})
	gw := testkit.StartGateway(t, fmt.Sprintf(`
log: {access_log: false}
consumers:
  billing: {keys: ["billing-key-0123456789"]}
  support: {keys: ["support-key-0123456789"]}
upstreams: {up: {url: "%s"}}
routes:
  r:
    path: "/api/{path:*}"
    upstream: up
    strip_prefix: /api
    plugins:
      authenticate: {}
      cache: {warm: {paths: ["/api/plan"], consumer: billing}}
      inject_auth: {type: header, name: X-Key, value: shared-k, consumers: {billing: {name: X-Key, value: billing-k}}}
`, up.URL))
	// Wait for the stored entry, not the upstream's count: the provider sees
	// the fetch before the gateway has kept its answer.
	testkit.Eventually(t, 5*time.Second, func() bool { return warmValue(t, gw, "r", "ok") == 1 }, "not warmed")
	if got := string(up.Last(t).Header.Get("X-Key")); got != "billing-k" {
		t.Errorf("warm fetch sent X-Key %q, want billing's credential", got)
	}
	if r := get(t, gw.URL+"/api/plan", "X-Api-Key", "billing-key-0123456789"); r.Header.Get("Cache-Status") != "sluice; hit" || string(r.Body) != "billing-k" {
		t.Errorf("billing: %q %q, want a hit on its warm entry", r.Header.Get("Cache-Status"), r.Body)
	}
	if r := get(t, gw.URL+"/api/plan", "X-Api-Key", "support-key-0123456789"); r.Header.Get("Cache-Status") == "sluice; hit" || string(r.Body) != "shared-k" {
		t.Errorf("support: %q %q, want its own fetch", r.Header.Get("Cache-Status"), r.Body)
	}
}

// Bad warm blocks are refused with the key path that is wrong.
func TestWarmConfigErrors(t *testing.T) {
	conf := func(route, warm string) string {
		return fmt.Sprintf(`
consumers: {billing: {keys: ["billing-key-0123456789"]}}
upstreams: {up: {url: "http://127.0.0.1:1"}}
routes:
  r: {%s, upstream: up, plugins: {cache: {warm: %s}, inject_auth: {type: header, name: X-Key, value: a, consumers: {billing: {name: X-Key, value: b}}}}}
`, route, warm)
	}
	const at = "routes.r.plugins.cache."
	plain := `path: "/api/{path:*}"`
	for _, tc := range []struct{ route, warm, path, msg string }{
		{plain, `{}`, at + "warm", "declares nothing to warm"},
		{plain, `{paths: ["api/x"], consumer: billing}`, at + "warm.paths[0]", "must start with '/'"},
		{plain, `{paths: ["/api/../x"], consumer: billing}`, at + "warm.paths[0]", "dot segment"},
		{plain, `{paths: ["/other/x"], consumer: billing}`, at + "warm.paths[0]", `does not match the path "/api/{path:*}" of route r`},
		{`path: "/repos/{owner}/{repo}"`, `{template: "/repos/acme/{repo}/x", values: {repo: [a]}, consumer: billing}`, at + "warm.template", "does not match"},
		{`path: "/repos/{owner}/{repo}"`, `{template: "/repos/{owner}/{repo}", values: {owner: [acme]}, consumer: billing}`, at + "warm.values", "no values for {repo}"},
		{`path: "/repos/{owner}/{repo}"`, `{template: "/repos/acme/{repo}", values: {repo: [a], owner: [x]}, consumer: billing}`, at + "warm.values.owner", "not a parameter of the template"},
		{`path: "/repos/{owner}/{repo}"`, `{template: "/repos/acme/{repo}", values: {repo: ["a/b"]}, consumer: billing}`, at + "warm.values.repo[0]", "one path segment"},
		{plain, `{values: {x: [a]}, paths: ["/api/x"], consumer: billing}`, at + "warm.values", "set warm.template"},
		{plain, `{paths: ["/api/x"], refresh_ahead: 120%, consumer: billing}`, at + "warm.refresh_ahead", "between 0% and 100%"},
		{plain, `{paths: ["/api/x"], refresh_ahead: soon, consumer: billing}`, at + "warm.refresh_ahead", "positive duration"},
		{plain, `{paths: ["/api/x"], rate: -1, consumer: billing}`, at + "warm.rate", "more than 0"},
		{plain, `{paths: ["/api/x"], concurrency: 100, consumer: billing}`, at + "warm.concurrency", "1 to 64"},
		{plain, `{paths: ["/api/x"], backoff: 10s, max_backoff: 1s, consumer: billing}`, at + "warm.max_backoff", "not be shorter"},
		{plain, `{paths: ["/api/x"], headers: {Authorization: "Bearer x"}, consumer: billing}`, at + "warm.headers.Authorization", "inject_auth"},
		{plain, `{paths: ["/api/x"], headers: {Host: x}, consumer: billing}`, at + "warm.headers.Host", "set by the gateway"},
		{plain, `{paths: ["/api/x"], consumer: nobody}`, at + "warm.consumer", `unknown consumer "nobody"`},
		{plain, `{paths: ["/api/x"]}`, at + "warm", "apart per consumer"},
		{plain, `{paths: ["/api/x"], colour: blue, consumer: billing}`, at + "warm.colour", ""},
		{`path: "/api/{path:*}", methods: [POST]`, `{paths: ["/api/x"], consumer: billing}`, at + "warm", "does not accept GET"},
	} {
		t.Run(tc.path+" "+tc.msg, func(t *testing.T) {
			testkit.WantOneProblem(t, testkit.ConfigProblems(t, conf(tc.route, tc.warm)), tc.path, tc.msg)
		})
	}
	// More than 10000 paths.
	var a, b []string
	for i := range 101 {
		a, b = append(a, fmt.Sprint(i)), append(b, fmt.Sprint(i))
	}
	big := fmt.Sprintf(`{template: "/repos/{owner}/{repo}", values: {owner: [%s], repo: [%s]}, consumer: billing}`, strings.Join(a, ","), strings.Join(b, ","))
	testkit.WantOneProblem(t, testkit.ConfigProblems(t, conf(`path: "/repos/{owner}/{repo}"`, big)), at+"warm", "10201 paths, more than 10000")
	// And a good one.
	testkit.WantOneProblem(t, testkit.ConfigProblems(t, conf(`path: "/repos/{owner}/{repo}"`,
		`{paths: ["/repos/acme/app?per_page=100"], template: "/repos/acme/{repo}", values: {repo: [api, web]}, refresh_ahead: 30s, headers: {Accept: application/json}, consumer: billing}`)), "", "")
}
