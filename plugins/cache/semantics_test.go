package cache_test

import (
	"fmt"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/sluice-gw/sluice/internal/testkit"
	"github.com/valyala/fasthttp"
)

func TestTTLAndOverride(t *testing.T) {
	o := newOrigin(t, func(ctx *fasthttp.RequestCtx, n int64) {
		if string(ctx.Path()) == "/nocache" {
			ctx.Response.Header.Set("Cache-Control", "no-cache, max-age=0")
		}
		fmt.Fprintf(ctx, "n=%d", n)
	})
	t.Run("ttl gives freshness to answers without it", func(t *testing.T) {
		gw := gateway(t, o.URL, "{ttl: 1m}")
		get(t, gw.URL+"/api/plain")
		r := get(t, gw.URL+"/api/plain")
		if string(r.Body) != "n=1" || r.Header.Get("Cache-Status") != "sluice; hit" {
			t.Errorf("got %q %q, want a hit", r.Body, r.Header.Get("Cache-Status"))
		}
		get(t, gw.URL+"/api/nocache")
		if r := get(t, gw.URL+"/api/nocache"); string(r.Body) != "n=2" {
			t.Errorf("ttl must not override the upstream's no-cache: %q", r.Body)
		}
	})
	t.Run("override ignores Cache-Control", func(t *testing.T) {
		gw := gateway(t, o.URL, "{ttl: 1m, override: true}")
		get(t, gw.URL+"/api/nocache")
		r := get(t, gw.URL+"/api/nocache")
		if r.Header.Get("Cache-Status") != "sluice; hit" {
			t.Errorf("got %q, want a hit with override", r.Header.Get("Cache-Status"))
		}
	})
}

func TestHeadAnsweredFromGetEntry(t *testing.T) {
	o := newOrigin(t, func(ctx *fasthttp.RequestCtx, n int64) {
		ctx.Response.Header.Set("Cache-Control", "max-age=60")
		ctx.Response.Header.Set("X-Origin", "yes")
		fmt.Fprintf(ctx, "body-%d", n)
	})
	gw := gateway(t, o.URL, "{}")
	get(t, gw.URL+"/api/h")
	r := testkit.Do(t, "HEAD", gw.URL+"/api/h", "")
	if r.Header.Get("Cache-Status") != "sluice; hit" || r.Header.Get("X-Origin") != "yes" || len(r.Body) != 0 || o.Hits("/h") != 1 {
		t.Errorf("HEAD: %q, X-Origin %q, body %q, origin hits %d", r.Header.Get("Cache-Status"), r.Header.Get("X-Origin"), r.Body, o.Hits("/h"))
	}
}

func TestQueryKeys(t *testing.T) {
	o := newOrigin(t, func(ctx *fasthttp.RequestCtx, n int64) {
		ctx.Response.Header.Set("Cache-Control", "max-age=60")
		fmt.Fprintf(ctx, "n=%d", n)
	})
	for _, tc := range []struct {
		name, block, a, b string
		same              bool
	}{
		{"sorted by default", "{}", "/api/q?a=1&b=2", "/api/q?b=2&a=1", true},
		{"as sent", "{sorted: false}", "/api/q?a=1&b=2", "/api/q?b=2&a=1", false},
		{"none", "{query: none}", "/api/q?a=1", "/api/q?a=2", true},
		{"list keeps the named", "{query: [page]}", "/api/q?page=1&utm=x", "/api/q?utm=y&page=1", true},
		{"list tells the named apart", "{query: [page]}", "/api/q?page=1", "/api/q?page=2", false},
		{"all tells values apart", "{}", "/api/q?a=1", "/api/q?a=2", false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			gw := gateway(t, o.URL, tc.block)
			first := get(t, gw.URL+tc.a)
			second := get(t, gw.URL+tc.b)
			if got := string(first.Body) == string(second.Body); got != tc.same {
				t.Errorf("%s then %s: bodies %q, %q; same entry = %v, want %v", tc.a, tc.b, first.Body, second.Body, got, tc.same)
			}
		})
	}
}

func TestVary(t *testing.T) {
	o := newOrigin(t, func(ctx *fasthttp.RequestCtx, n int64) {
		ctx.Response.Header.Set("Cache-Control", "max-age=60")
		ctx.Response.Header.Set("Vary", "Accept-Language")
		fmt.Fprintf(ctx, "%s-%d", ctx.Request.Header.Peek("Accept-Language"), n)
	})
	gw := gateway(t, o.URL, "{}")
	en1 := get(t, gw.URL+"/api/v", "Accept-Language", "en")
	de1 := get(t, gw.URL+"/api/v", "Accept-Language", "de")
	en2 := get(t, gw.URL+"/api/v", "Accept-Language", "en")
	de2 := get(t, gw.URL+"/api/v", "Accept-Language", "de")
	if string(en1.Body) != "en-1" || string(de1.Body) != "de-2" || string(en2.Body) != "en-1" || string(de2.Body) != "de-2" {
		t.Errorf("bodies %q %q %q %q: each language must get its own entry", en1.Body, de1.Body, en2.Body, de2.Body)
	}
	if de1.Header.Get("Cache-Status") != "sluice; fwd=vary-miss; stored" || en2.Header.Get("Cache-Status") != "sluice; hit" {
		t.Errorf("Cache-Status %q then %q", de1.Header.Get("Cache-Status"), en2.Header.Get("Cache-Status"))
	}
	if o.Hits("/v") != 2 {
		t.Errorf("origin hits %d, want 2", o.Hits("/v"))
	}
	t.Run("Vary: * is never stored", func(t *testing.T) {
		star := newOrigin(t, func(ctx *fasthttp.RequestCtx, n int64) {
			ctx.Response.Header.Set("Cache-Control", "max-age=60")
			ctx.Response.Header.Set("Vary", "*")
		})
		gw := gateway(t, star.URL, "{}")
		get(t, gw.URL+"/api/s")
		get(t, gw.URL+"/api/s")
		if star.Hits("/s") != 2 {
			t.Errorf("origin hits %d, want 2", star.Hits("/s"))
		}
	})
}

func TestRevalidationWith304(t *testing.T) {
	var mu sync.Mutex
	etag := `"v1"`
	o := newOrigin(t, func(ctx *fasthttp.RequestCtx, n int64) {
		mu.Lock()
		cur := etag
		mu.Unlock()
		ctx.Response.Header.Set("Cache-Control", "max-age=1")
		ctx.Response.Header.Set("ETag", cur)
		ctx.Response.Header.Set("X-Fetch", fmt.Sprint(n))
		if string(ctx.Request.Header.Peek("If-None-Match")) == cur {
			ctx.SetStatusCode(304)
			return
		}
		fmt.Fprintf(ctx, "%s-%d", cur, n)
	})
	gw := gateway(t, o.URL, "{}")
	get(t, gw.URL+"/api/r")
	time.Sleep(1100 * time.Millisecond)
	r := get(t, gw.URL+"/api/r", "If-None-Match", `"caller's own"`)
	if r.Status != 200 || string(r.Body) != `"v1"-1` || r.Header.Get("Cache-Status") != "sluice; fwd=stale; fwd-status=304" {
		t.Fatalf("after 304: %d %q %q", r.Status, r.Body, r.Header.Get("Cache-Status"))
	}
	if r.Header.Get("X-Fetch") != "2" {
		t.Errorf("X-Fetch %q: the 304's headers must update the entry", r.Header.Get("X-Fetch"))
	}
	if got := o.Last(t).Header.Get("If-None-Match"); got != `"v1"` {
		t.Errorf("upstream got If-None-Match %q, want the stored ETag", got)
	}
	if r := get(t, gw.URL+"/api/r"); r.Header.Get("Cache-Status") != "sluice; hit" || o.Hits("/r") != 2 {
		t.Errorf("after refresh: %q, origin hits %d; want a fresh hit", r.Header.Get("Cache-Status"), o.Hits("/r"))
	}
	mu.Lock()
	etag = `"v2"`
	mu.Unlock()
	time.Sleep(1100 * time.Millisecond)
	r = get(t, gw.URL+"/api/r")
	if string(r.Body) != `"v2"-3` || r.Header.Get("Cache-Status") != "sluice; fwd=stale; stored" {
		t.Errorf("changed resource: %q %q", r.Body, r.Header.Get("Cache-Status"))
	}
	m := gw.Metrics(t)
	if v, _ := m.Value("sluice_cache_requests_total", "route", "r", "result", "revalidated"); v != 1 {
		t.Errorf("revalidated counted %v, want 1", v)
	}
}

func TestStaleWhileRevalidate(t *testing.T) {
	o := newOrigin(t, func(ctx *fasthttp.RequestCtx, n int64) {
		ctx.Response.Header.Set("Cache-Control", "max-age=1")
		if string(ctx.Path()) == "/own" {
			ctx.Response.Header.Set("Cache-Control", "max-age=1, stale-while-revalidate=60")
		}
		time.Sleep(50 * time.Millisecond) // a slow provider
		fmt.Fprintf(ctx, "n=%d", n)
	})
	for _, tc := range []struct{ name, block, path string }{
		{"route setting", "{stale_while_revalidate: 1m}", "/swr"},
		{"response directive", "{}", "/own"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			gw := gateway(t, o.URL, tc.block)
			get(t, gw.URL+"/api"+tc.path)
			time.Sleep(1100 * time.Millisecond)
			var wg sync.WaitGroup
			for range 5 {
				wg.Go(func() {
					r, err := testkit.TryDo("GET", gw.URL+"/api"+tc.path, "")
					if err != nil || string(r.Body) != "n=1" || r.Header.Get("Cache-Status") != "sluice; hit; detail=stale-while-revalidate" {
						t.Errorf("stale answer: %v %+v", err, r)
					}
				})
			}
			wg.Wait()
			if v, _ := gw.Metrics(t).Value("sluice_cache_requests_total", "route", "r", "result", "stale"); v != 5 {
				t.Errorf("sluice_cache_requests_total{result=\"stale\"} = %v, want 5", v)
			}
			testkit.Eventually(t, 5*time.Second, func() bool {
				r := get(t, gw.URL+"/api"+tc.path)
				return string(r.Body) == "n=2" && r.Header.Get("Cache-Status") == "sluice; hit"
			}, "the background refresh stores the new answer")
			if o.Hits(tc.path) != 2 {
				t.Errorf("origin hits %d, want 2: one refresh for 5 stale answers", o.Hits(tc.path))
			}
			// Callers are counted, the background refresh is not: the fill is
			// the only miss, whatever the refresh got from the origin.
			if v, _ := gw.Metrics(t).Value("sluice_cache_requests_total", "route", "r", "result", "miss"); v != 1 {
				t.Errorf("sluice_cache_requests_total{result=\"miss\"} = %v, want 1 (the background refresh counted as a caller)", v)
			}
		})
	}
}

func TestStaleIfError(t *testing.T) {
	var mu sync.Mutex
	mode := "ok"
	o := newOrigin(t, func(ctx *fasthttp.RequestCtx, n int64) {
		mu.Lock()
		m := mode
		mu.Unlock()
		switch m {
		case "503":
			ctx.SetStatusCode(503)
			ctx.SetBodyString("down")
			return
		case "slow":
			time.Sleep(400 * time.Millisecond)
		}
		ctx.Response.Header.Set("Cache-Control", "max-age=1")
		if string(ctx.Path()) == "/must" {
			ctx.Response.Header.Set("Cache-Control", "max-age=1, must-revalidate")
		}
		fmt.Fprintf(ctx, "n=%d", n)
	})
	setMode := func(m string) { mu.Lock(); mode = m; mu.Unlock() }
	yaml := fmt.Sprintf(`
log: {access_log: false}
upstreams: {up: {url: "%s", timeout: 200ms}}
routes:
  r: {path: "/api/{path:*}", upstream: up, strip_prefix: /api, plugins: {cache: {stale_if_error: 1m}}}
`, o.URL)
	gw := testkit.StartGateway(t, yaml)
	setMode("ok")
	get(t, gw.URL+"/api/e")
	get(t, gw.URL+"/api/must")
	time.Sleep(1100 * time.Millisecond)
	for _, m := range []string{"503", "slow"} {
		setMode(m)
		r := get(t, gw.URL+"/api/e")
		if r.Status != 200 || string(r.Body) != "n=1" || r.Header.Get("Cache-Status") != "sluice; fwd=stale; detail=stale-if-error" {
			t.Errorf("%s: got %d %q %q, want the stale entry", m, r.Status, r.Body, r.Header.Get("Cache-Status"))
		}
	}
	setMode("503")
	if r := get(t, gw.URL+"/api/must"); r.Status != 503 {
		t.Errorf("must-revalidate: got %d, want the upstream's 503 (no stale serving)", r.Status)
	}
	t.Run("upstream gone", func(t *testing.T) {
		o.Close()
		r := get(t, gw.URL+"/api/e")
		if r.Status != 200 || string(r.Body) != "n=1" {
			t.Errorf("got %d %q, want the stale entry while the provider is down", r.Status, r.Body)
		}
		if age := r.Header.Get("Age"); age == "" || age == "0" {
			t.Errorf("Age %q: a stale answer is at least a second old", age)
		}
		if r := testkit.Do(t, "HEAD", gw.URL+"/api/e", ""); r.Status != 200 || r.Header.Get("Cache-Status") != "sluice; fwd=stale; detail=stale-if-error" {
			t.Errorf("HEAD: %d %q, want the stale entry", r.Status, r.Header.Get("Cache-Status"))
		}
	})
}

func TestCollapsing(t *testing.T) {
	release := make(chan struct{})
	o := newOrigin(t, func(ctx *fasthttp.RequestCtx, n int64) {
		<-release
		ctx.Response.Header.Set("Cache-Control", "max-age=60")
		fmt.Fprintf(ctx, "n=%d", n)
	})
	gw := gateway(t, o.URL, "{}")
	const N = 20
	var wg sync.WaitGroup
	bodies := make([]string, N)
	statuses := make([]string, N)
	for i := range N {
		wg.Go(func() {
			r, err := testkit.TryDo("GET", gw.URL+"/api/c", "")
			if err != nil {
				t.Error(err)
				return
			}
			bodies[i], statuses[i] = string(r.Body), r.Header.Get("Cache-Status")
		})
	}
	testkit.Eventually(t, 5*time.Second, func() bool { return o.Hits("/c") == 1 }, "the first miss reaches the origin")
	time.Sleep(100 * time.Millisecond) // let the others queue behind it
	close(release)
	wg.Wait()
	if o.Hits("/c") != 1 {
		t.Errorf("origin hits %d for %d concurrent misses, want 1", o.Hits("/c"), N)
	}
	collapsed := 0
	for i := range N {
		if bodies[i] != "n=1" {
			t.Errorf("request %d got %q", i, bodies[i])
		}
		if statuses[i] == "sluice; hit; detail=collapsed" {
			collapsed++
		}
	}
	m := gw.Metrics(t)
	v, _ := m.Value("sluice_cache_requests_total", "route", "r", "result", "collapsed")
	h, _ := m.Value("sluice_cache_requests_total", "route", "r", "result", "hit")
	if int(v) != collapsed || collapsed+int(h) != N-1 {
		t.Errorf("collapsed %d (metric %v), hits %v, want %d served without a call", collapsed, v, h, N-1)
	}
}

func TestCollapsedWaitIsBoundedByTheDeadline(t *testing.T) {
	release := make(chan struct{})
	defer close(release)
	o := newOrigin(t, func(ctx *fasthttp.RequestCtx, n int64) {
		select {
		case <-release:
		case <-time.After(3 * time.Second):
		}
		ctx.Response.Header.Set("Cache-Control", "max-age=60")
	})
	yaml := fmt.Sprintf(`
log: {access_log: false}
upstreams: {up: {url: "%s", timeout: 5s}}
routes:
  slow: {path: "/api/{path:*}", upstream: up, plugins: {cache: {}}}
  waiter: {path: "/w/{path:*}", upstream: up, strip_prefix: /w, deadline: 300ms, plugins: {cache: {}}}
`, o.URL)
	gw := testkit.StartGateway(t, yaml)
	go func() { _, _ = testkit.TryDo("GET", gw.URL+"/w/x", "") }() // leader (times out itself)
	testkit.Eventually(t, 5*time.Second, func() bool { return o.Hits("/x") == 1 }, "leader reached the origin")
	start := time.Now()
	r := get(t, gw.URL+"/w/x")
	if r.Status != 504 || time.Since(start) > 2*time.Second {
		t.Errorf("waiter: %d after %v, want 504 at its 300ms deadline", r.Status, time.Since(start))
	}
}

func TestUnsafeMethodsInvalidate(t *testing.T) {
	o := newOrigin(t, func(ctx *fasthttp.RequestCtx, n int64) {
		if ctx.IsPost() {
			ctx.SetStatusCode(201)
			ctx.Response.Header.Set("Location", "/items/7")
			ctx.Response.Header.Set("Content-Location", "http://"+string(ctx.Host())+"/items/8")
			return
		}
		if ctx.IsDelete() && string(ctx.Path()) == "/items/fail" {
			ctx.SetStatusCode(409)
			return
		}
		ctx.Response.Header.Set("Cache-Control", "max-age=60")
		fmt.Fprintf(ctx, "%s=%d", ctx.Path(), n)
	})
	gw := gateway(t, o.URL, "{}")
	for _, p := range []string{"/items", "/items/7", "/items/8", "/items/9", "/items/fail"} {
		get(t, gw.URL+"/api"+p)
	}
	r := testkit.Do(t, "POST", gw.URL+"/api/items", "{}")
	if r.Status != 201 || r.Header.Get("Cache-Status") != "sluice; fwd=bypass" {
		t.Fatalf("POST: %d %q", r.Status, r.Header.Get("Cache-Status"))
	}
	testkit.Do(t, "DELETE", gw.URL+"/api/items/fail", "") // 409: nothing changed
	for p, want := range map[string]string{"/items": "=3" /* GET, POST, GET */, "/items/7": "=2", "/items/8": "=2", "/items/9": "=1", "/items/fail": "=1"} {
		if r := get(t, gw.URL+"/api"+p); !strings.HasSuffix(string(r.Body), want) {
			t.Errorf("%s: %q, want ...%s", p, r.Body, want)
		}
	}
	if v, _ := gw.Metrics(t).Value("sluice_cache_invalidations_total", "source", "method"); v != 1 {
		t.Errorf("method invalidations %v, want 1", v)
	}
}

func TestTagsAndRules(t *testing.T) {
	o := newOrigin(t, func(ctx *fasthttp.RequestCtx, n int64) {
		if !ctx.IsGet() {
			return
		}
		ctx.Response.Header.Set("Cache-Control", "max-age=60")
		if strings.HasPrefix(string(ctx.Path()), "/orders/") {
			ctx.Response.Header.Set("Surrogate-Key", "orders all")
		}
		fmt.Fprintf(ctx, "%s=%d", ctx.Path(), n)
	})
	yaml := fmt.Sprintf(`
log: {access_log: false}
admin: {token: admintoken-0123456789}
upstreams: {up: {url: "%s"}}
routes:
  customers:
    path: "/v1/customers/{id}"
    upstream: up
    plugins: {cache: {tags: ["customer:{id}"]}}
  customer-orders:
    path: "/v1/customers/{id}/orders"
    upstream: up
    plugins: {cache: {tags: ["customer:{id}"]}}
  writes:
    path: "/v1/payments"
    methods: [POST]
    upstream: up
    plugins: {cache: {invalidate: [{methods: [POST], path: "/v1/payments", tags: ["customer:42"]}]}}
  update:
    path: "/v1/customers/{id}/update"
    methods: [POST]
    upstream: up
    plugins: {cache: {invalidate: [{path: "/v1/customers/{id}/update", tags: ["customer:{id}"]}]}}
  orders:
    path: "/orders/{id}"
    upstream: up
    plugins: {cache: {}}
`, o.URL)
	gw := testkit.StartGateway(t, yaml)
	paths := []string{"/v1/customers/42", "/v1/customers/42/orders", "/v1/customers/7", "/orders/1"}
	for _, p := range paths {
		get(t, gw.URL+p)
	}
	testkit.Do(t, "POST", gw.URL+"/v1/payments", "{}")
	want := map[string]string{"/v1/customers/42": "=2", "/v1/customers/42/orders": "=2", "/v1/customers/7": "=1", "/orders/1": "=1"}
	for _, p := range paths {
		if r := get(t, gw.URL+p); !strings.HasSuffix(string(r.Body), want[p]) {
			t.Errorf("after rule: %s: %q, want ...%s", p, r.Body, want[p])
		}
	}
	testkit.Do(t, "POST", gw.URL+"/v1/customers/7/update", "{}")
	if r := get(t, gw.URL+"/v1/customers/7"); string(r.Body) != "/v1/customers/7=2" {
		t.Errorf("rule with a path parameter: %q", r.Body)
	}
	r := testkit.Do(t, "POST", gw.AdminURL+"/admin/cache/purge", `{"tags":["orders"]}`, "Authorization", "Bearer admintoken-0123456789")
	if r.Status != 200 || !strings.Contains(string(r.Body), `"purged":1`) {
		t.Errorf("purge by Surrogate-Key tag: %d %s", r.Status, r.Body)
	}
	if r := get(t, gw.URL+"/orders/1"); string(r.Body) != "/orders/1=2" {
		t.Errorf("after tag purge: %q", r.Body)
	}
}

func TestAdminPurge(t *testing.T) {
	o := newOrigin(t, func(ctx *fasthttp.RequestCtx, n int64) {
		ctx.Response.Header.Set("Cache-Control", "max-age=60")
		fmt.Fprintf(ctx, "%s=%d", ctx.URI().RequestURI(), n)
	})
	gw := gateway(t, o.URL, "{}")
	purge := func(body string, hdr ...string) *testkit.Response {
		return testkit.Do(t, "POST", gw.AdminURL+"/admin/cache/purge", body, append([]string{"Authorization", "Bearer admintoken-0123456789"}, hdr...)...)
	}
	t.Run("works before any request", func(t *testing.T) {
		if r := purge(`{"all":true}`); r.Status != 200 || string(r.Body) != "{\"purged\":0}\n" {
			t.Errorf("%d %s", r.Status, r.Body)
		}
	})
	fill := func() {
		for _, p := range []string{"/api/a?x=1&y=2", "/api/b", "/api/sub/c", "/api/sub/d"} {
			get(t, gw.URL+p)
		}
	}
	cached := func(p string) bool { return get(t, gw.URL+p).Header.Get("Cache-Status") == "sluice; hit" }
	fill()
	if r := purge(`{"keys":["/api/a?y=2&x=1","/api/b"]}`); r.Status != 200 || !strings.Contains(string(r.Body), `"purged":2`) {
		t.Errorf("keys: %d %s", r.Status, r.Body)
	}
	if cached("/api/a?x=1&y=2") || cached("/api/b") || !cached("/api/sub/c") {
		t.Error("keys purged the wrong entries")
	}
	if r := purge(`{"prefix":"/api/sub/"}`); !strings.Contains(string(r.Body), `"purged":2`) {
		t.Errorf("prefix: %s", r.Body)
	}
	if cached("/api/sub/c") || cached("/api/sub/d") || !cached("/api/b") {
		t.Error("prefix purged the wrong entries")
	}
	fill()
	purge(`{"all":true}`)
	for _, p := range []string{"/api/b", "/api/sub/c"} {
		if get(t, gw.URL+p).Header.Get("Cache-Status") == "sluice; hit" {
			t.Errorf("%s survived all", p)
		}
	}
	for _, tc := range []struct {
		body   string
		hdr    []string
		status int
	}{
		{`{"all":true}`, []string{"Authorization", "Bearer wrong"}, 401},
		{`{}`, nil, 400},
		{`{"keys":["no-slash"]}`, nil, 400},
		{`{"prefx":"/x"}`, nil, 400},
		{`not json`, nil, 400},
	} {
		hdr := tc.hdr
		if hdr == nil {
			hdr = []string{"Authorization", "Bearer admintoken-0123456789"}
		}
		r := testkit.Do(t, "POST", gw.AdminURL+"/admin/cache/purge", tc.body, hdr...)
		if r.Status != tc.status || r.Header.Get("Content-Type") != "application/problem+json" {
			t.Errorf("%s: %d %s, want %d problem+json", tc.body, r.Status, r.Header.Get("Content-Type"), tc.status)
		}
	}
	if v, _ := gw.Metrics(t).Value("sluice_cache_invalidations_total", "source", "admin"); v != 4 {
		t.Errorf("admin invalidations %v, want 4", v)
	}
}

func TestPurgeNeedsToken(t *testing.T) {
	o := newOrigin(t, func(ctx *fasthttp.RequestCtx, n int64) {})
	yaml := fmt.Sprintf(`
upstreams: {up: {url: "%s"}}
routes: {r: {path: "/{p:*}", upstream: up, plugins: {cache: {}}}}
`, o.URL)
	gw := testkit.StartGateway(t, yaml)
	if r := testkit.Do(t, "POST", gw.AdminURL+"/admin/cache/purge", `{"all":true}`); r.Status != http.StatusForbidden {
		t.Errorf("without admin.token: %d, want 403", r.Status)
	}
}

// The README's example: tags from several path parameters and a catch-all.
func TestTagsFromSeveralParameters(t *testing.T) {
	o := newOrigin(t, func(ctx *fasthttp.RequestCtx, n int64) {
		ctx.Response.Header.Set("Cache-Control", "max-age=60")
		fmt.Fprintf(ctx, "%s=%d", ctx.Path(), n)
	})
	yaml := fmt.Sprintf(`
log: {access_log: false}
upstreams: {up: {url: "%s"}}
routes:
  github-repos:
    path: "/github/repos/{owner}/{repo}/{rest:*}"
    upstream: up
    strip_prefix: "/github"
    plugins:
      cache:
        tags: ["repo:{owner}/{repo}"]
        invalidate:
          - {methods: [POST, PATCH, DELETE], path: "/github/repos/{owner}/{repo}/{rest:*}", tags: ["repo:{owner}/{repo}"]}
`, o.URL)
	gw := testkit.StartGateway(t, yaml)
	for _, p := range []string{"/github/repos/a/b/issues", "/github/repos/a/b/pulls", "/github/repos/a/c/issues"} {
		get(t, gw.URL+p)
	}
	testkit.Do(t, "PATCH", gw.URL+"/github/repos/a/b/issues/1", "{}")
	for p, want := range map[string]string{"/github/repos/a/b/issues": "=2", "/github/repos/a/b/pulls": "=2", "/github/repos/a/c/issues": "=1"} {
		if r := get(t, gw.URL+p); !strings.HasSuffix(string(r.Body), want) {
			t.Errorf("%s: %q, want ...%s", p, r.Body, want)
		}
	}
}

// no-cache answers are stored but revalidated before every use.
func TestNoCacheRevalidatesEveryUse(t *testing.T) {
	o := newOrigin(t, func(ctx *fasthttp.RequestCtx, n int64) {
		ctx.Response.Header.Set("Cache-Control", "no-cache")
		ctx.Response.Header.Set("ETag", `"e"`)
		if string(ctx.Request.Header.Peek("If-None-Match")) == `"e"` {
			ctx.SetStatusCode(304)
			return
		}
		fmt.Fprintf(ctx, "n=%d", n)
	})
	gw := gateway(t, o.URL, "{}")
	if r := get(t, gw.URL+"/api/nc"); r.Header.Get("Cache-Status") != "sluice; fwd=miss; stored" {
		t.Fatalf("first: %q", r.Header.Get("Cache-Status"))
	}
	for range 2 {
		r := get(t, gw.URL+"/api/nc")
		if string(r.Body) != "n=1" || r.Header.Get("Cache-Status") != "sluice; fwd=stale; fwd-status=304" {
			t.Errorf("got %q %q, want the entry after a 304", r.Body, r.Header.Get("Cache-Status"))
		}
	}
	if o.Hits("/nc") != 3 {
		t.Errorf("origin hits %d, want 3 (every use asks)", o.Hits("/nc"))
	}
}

func TestConditionalHit(t *testing.T) {
	o := newOrigin(t, func(ctx *fasthttp.RequestCtx, n int64) {
		ctx.Response.Header.Set("Cache-Control", "max-age=60")
		ctx.Response.Header.Set("ETag", `W/"abc"`)
		fmt.Fprintf(ctx, "n=%d", n)
	})
	gw := gateway(t, o.URL, "{}")
	get(t, gw.URL+"/api/c")
	for _, tc := range []struct {
		inm    string
		status int
	}{
		{`"abc"`, 304}, {`W/"abc"`, 304}, {`"x", W/"abc"`, 304}, {`*`, 304}, {`"other"`, 200}, {"", 200},
	} {
		var hdr []string
		if tc.inm != "" {
			hdr = []string{"If-None-Match", tc.inm}
		}
		r := get(t, gw.URL+"/api/c", hdr...)
		if r.Status != tc.status || r.Header.Get("ETag") != `W/"abc"` || r.Header.Get("Cache-Status") != "sluice; hit" {
			t.Errorf("If-None-Match %q: %d, ETag %q, %q; want %d", tc.inm, r.Status, r.Header.Get("ETag"), r.Header.Get("Cache-Status"), tc.status)
		}
		if tc.status == 304 && len(r.Body) != 0 {
			t.Errorf("304 with a body: %q", r.Body)
		}
	}
	if o.Hits("/c") != 1 {
		t.Errorf("origin hits %d", o.Hits("/c"))
	}
}

// A HEAD miss keeps the upstream's own Cache-Status, as a GET miss does,
// and adds Sluice's member last.
func TestHeadMissKeepsUpstreamCacheStatus(t *testing.T) {
	o := newOrigin(t, func(ctx *fasthttp.RequestCtx, n int64) {
		ctx.Response.Header.Set("Cache-Control", "max-age=60")
		ctx.Response.Header.Set("Cache-Status", "provider-cdn; hit")
	})
	gw := gateway(t, o.URL, "{}")
	want := []string{"provider-cdn; hit", "sluice; fwd=miss"}
	r := testkit.Do(t, "HEAD", gw.URL+"/api/h", "")
	if got := r.Header.Values("Cache-Status"); fmt.Sprint(got) != fmt.Sprint(want) {
		t.Errorf("HEAD miss: Cache-Status %q, want %q", got, want)
	}
	want[1] = "sluice; fwd=miss; stored"
	if got := get(t, gw.URL+"/api/g").Header.Values("Cache-Status"); fmt.Sprint(got) != fmt.Sprint(want) {
		t.Errorf("GET miss: Cache-Status %q, want %q", got, want)
	}
}

// A stale answer of 64 KiB or more served in place of a large error answer
// arrives whole. (The error's body held the body budget; handing the
// stale body over to the budget's stream dropped it when it was the
// store's own bytes rather than the response's buffer: 200, 0 bytes.)
func TestStaleIfErrorLargeBodies(t *testing.T) {
	stale := strings.Repeat("s", 100<<10)
	o := newOrigin(t, func(ctx *fasthttp.RequestCtx, n int64) {
		if n > 1 {
			ctx.SetStatusCode(503)
			ctx.SetBodyString(strings.Repeat("d", 70<<10))
			return
		}
		ctx.Response.Header.Set("Cache-Control", "max-age=0")
		ctx.SetBodyString(stale)
	})
	gw := gateway(t, o.URL, "{stale_if_error: 1h}")
	if r := get(t, gw.URL+"/api/big"); r.Status != 200 || len(r.Body) != len(stale) {
		t.Fatalf("fill: %d, %d bytes", r.Status, len(r.Body))
	}
	for i := range 2 {
		r := get(t, gw.URL+"/api/big")
		if r.Status != 200 || string(r.Body) != stale || r.Header.Get("Cache-Status") != "sluice; fwd=stale; detail=stale-if-error" {
			t.Fatalf("stale %d: %d, %d bytes, %q; want the whole stale answer", i, r.Status, len(r.Body), r.Header.Get("Cache-Status"))
		}
	}
}
