package cache_test

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/sluice-gw/sluice/internal/testkit"
	"github.com/valyala/fasthttp"
)

// TestClusterInvalidation runs two gateways sharing a real Redis: an
// invalidation on one removes the entry on the other; after Redis went away
// and came back, each gateway drops its whole cache.
func TestClusterInvalidation(t *testing.T) {
	rd := testkit.StartRedis(t)
	o := newOrigin(t, func(ctx *fasthttp.RequestCtx, n int64) {
		if !ctx.IsGet() {
			return
		}
		ctx.Response.Header.Set("Cache-Control", "max-age=600")
		ctx.Response.Header.Set("Surrogate-Key", "k"+strings.TrimPrefix(string(ctx.Path()), "/"))
		fmt.Fprintf(ctx, "%s=%d", ctx.Path(), n)
	})
	yaml := fmt.Sprintf(`
log: {access_log: false}
admin: {token: admintoken-0123456789}
cluster: {redis: {addr: "%s"}}
upstreams: {up: {url: "%s"}}
routes:
  r: {path: "/api/{path:*}", upstream: up, strip_prefix: /api, plugins: {cache: {}}}
`, rd.Addr, o.URL)
	g1 := testkit.StartGateway(t, yaml)
	g2 := testkit.StartGateway(t, yaml)
	hit := func(g *testkit.Gateway, p string) bool {
		return get(t, g.URL+"/api"+p).Header.Get("Cache-Status") == "sluice; hit"
	}
	warm := func(paths ...string) {
		for _, p := range paths {
			for _, g := range []*testkit.Gateway{g1, g2} {
				get(t, g.URL+"/api"+p)
				if !hit(g, p) {
					t.Fatalf("%s not cached", p)
				}
			}
		}
	}
	// Subscriptions are made in Start: wait until both are listening.
	testkit.Eventually(t, 5*time.Second, func() bool {
		n, _ := rd.Subscribers("sluice:cache:invalidate")
		return n == 2
	}, "both gateways subscribed")

	warm("/a", "/b", "/c")
	testkit.Do(t, "PUT", g1.URL+"/api/a", "{}") // method invalidation on g1
	testkit.Eventually(t, 5*time.Second, func() bool { return !hit(g2, "/a") }, "g2 drops /a after g1's PUT")

	r := testkit.Do(t, "POST", g2.AdminURL+"/admin/cache/purge", `{"tags":["kb"]}`, "Authorization", "Bearer admintoken-0123456789")
	if r.Status != 200 {
		t.Fatalf("purge: %d %s", r.Status, r.Body)
	}
	testkit.Eventually(t, 5*time.Second, func() bool { return !hit(g1, "/b") }, "g1 drops /b after g2's tag purge")
	if !hit(g1, "/c") || !hit(g2, "/c") {
		t.Error("/c was dropped: invalidations must name what they remove")
	}
	if v, _ := g1.Metrics(t).Value("sluice_cache_invalidations_total", "source", "cluster"); v < 1 {
		t.Errorf("g1 counted %v remote invalidations", v)
	}

	// Redis goes away: both keep serving from their local cache...
	rd.Stop()
	if !hit(g1, "/c") || !hit(g2, "/c") {
		t.Error("a gateway stopped serving its cache while Redis was down")
	}
	// ...and drop everything once the subscription is back, since they may
	// have missed invalidations meanwhile.
	rd.Start()
	for _, g := range []*testkit.Gateway{g1, g2} {
		testkit.Eventually(t, 10*time.Second, func() bool {
			v, _ := g.Metrics(t).Value("sluice_cache_invalidations_total", "source", "resync")
			return v >= 1
		}, "resync after Redis came back")
		if hit(g, "/c") {
			t.Error("entry survived a resync")
		}
	}
	// Invalidations flow again after the reconnect.
	warm("/d")
	testkit.Eventually(t, 5*time.Second, func() bool {
		testkit.Do(t, "POST", g1.AdminURL+"/admin/cache/purge", `{"keys":["/api/d"]}`, "Authorization", "Bearer admintoken-0123456789")
		return !hit(g2, "/d")
	}, "g2 drops /d after g1's purge")
}

// An unsafe method on one route of a gateway invalidates the entries every
// route to that upstream stored, on every gateway of the cluster (routes do
// not share entries; Invalidation.Resources reaches them all).
func TestClusterInvalidationReachesEveryRoute(t *testing.T) {
	rd := testkit.StartRedis(t)
	o := newOrigin(t, func(ctx *fasthttp.RequestCtx, n int64) {
		ctx.Response.Header.Set("Cache-Control", "max-age=600")
		fmt.Fprintf(ctx, "%s=%d", ctx.Path(), n)
	})
	yaml := fmt.Sprintf(`
log: {access_log: false}
cluster: {redis: {addr: "%s"}}
upstreams: {up: {url: "%s"}}
routes:
  a: {path: "/a/{path:*}", upstream: up, strip_prefix: /a, plugins: {cache: {}}}
  b: {path: "/b/{path:*}", upstream: up, strip_prefix: /b, plugins: {cache: {query: none}}}
`, rd.Addr, o.URL)
	g1 := testkit.StartGateway(t, yaml)
	g2 := testkit.StartGateway(t, yaml)
	testkit.Eventually(t, 5*time.Second, func() bool {
		n, _ := rd.Subscribers("sluice:cache:invalidate")
		return n == 2
	}, "both gateways subscribed")
	hit := func(url string) bool { return get(t, url).Header.Get("Cache-Status") == "sluice; hit" }
	urls := []string{g1.URL + "/a/items/1?x=1", g1.URL + "/b/items/1", g2.URL + "/a/items/1", g2.URL + "/b/items/1?y=2"}
	for _, u := range urls {
		get(t, u)
		if !hit(u) {
			t.Fatalf("%s not cached", u)
		}
	}
	if r := testkit.Do(t, "DELETE", g1.URL+"/a/items/1", ""); r.Status != 200 {
		t.Fatalf("DELETE: %d", r.Status)
	}
	for _, u := range urls {
		testkit.Eventually(t, 5*time.Second, func() bool { return !hit(u) }, u+" dropped after a DELETE on route a of g1")
	}
	other := g2.URL + "/b/items/2"
	get(t, other)
	if !hit(other) {
		t.Error("another resource was dropped too")
	}
}

// A webhook delivery accepted by one gateway of a cluster is refused as a
// replay by the others.
func TestClusterWebhookReplay(t *testing.T) {
	rd := testkit.StartRedis(t)
	o := newOrigin(t, func(ctx *fasthttp.RequestCtx, n int64) {})
	yaml := fmt.Sprintf(`
log: {access_log: false}
cluster: {redis: {addr: "%s"}}
upstreams: {up: {url: "%s"}}
routes:
  hook: {path: "/hook", upstream: up, plugins: {cache: {webhook: {secret: s3cret, tags: ["/id"]}}}}
`, rd.Addr, o.URL)
	g1 := testkit.StartGateway(t, yaml)
	g2 := testkit.StartGateway(t, yaml)
	payload := `{"id":"evt_42"}`
	sig := sign("s3cret", payload)
	if r := testkit.Do(t, "POST", g1.URL+"/hook", payload, "X-Signature", sig); r.Status != 200 {
		t.Fatalf("first delivery: %d %s", r.Status, r.Body)
	}
	if r := testkit.Do(t, "POST", g2.URL+"/hook", payload, "X-Signature", sig); r.Status != 401 || !strings.Contains(string(r.Body), "replay") {
		t.Errorf("replay to another gateway: %d %s", r.Status, r.Body)
	}
	other := `{"id":"evt_43"}`
	if r := testkit.Do(t, "POST", g2.URL+"/hook", other, "X-Signature", sign("s3cret", other)); r.Status != 200 {
		t.Errorf("a new delivery to the other gateway: %d %s", r.Status, r.Body)
	}
}
