package cache_test

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/sluice-gw/sluice/proxy/proxytest"
	"github.com/valyala/fasthttp"
)

// TestClusterInvalidation runs two gateways sharing a real Redis: an
// invalidation on one removes the entry on the other; after Redis went away
// and came back, each gateway drops its whole cache.
func TestClusterInvalidation(t *testing.T) {
	rd := proxytest.StartRedis(t)
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
	g1 := proxytest.StartGateway(t, yaml)
	g2 := proxytest.StartGateway(t, yaml)
	hit := func(g *proxytest.Gateway, p string) bool {
		return get(t, g.URL+"/api"+p).Header.Get("Cache-Status") == "sluice; hit"
	}
	warm := func(paths ...string) {
		for _, p := range paths {
			for _, g := range []*proxytest.Gateway{g1, g2} {
				get(t, g.URL+"/api"+p)
				if !hit(g, p) {
					t.Fatalf("%s not cached", p)
				}
			}
		}
	}
	// Subscriptions are made in Start: wait until both are listening.
	proxytest.Eventually(t, 5*time.Second, func() bool {
		out, _ := rd.Do("PUBSUB", "NUMSUB", "sluice:cache:invalidate")
		return strings.Contains(out, "2")
	}, "both gateways subscribed")

	warm("/a", "/b", "/c")
	proxytest.Do(t, "PUT", g1.URL+"/api/a", "{}") // method invalidation on g1
	proxytest.Eventually(t, 5*time.Second, func() bool { return !hit(g2, "/a") }, "g2 drops /a after g1's PUT")

	r := proxytest.Do(t, "POST", g2.AdminURL+"/admin/cache/purge", `{"tags":["kb"]}`, "Authorization", "Bearer admintoken-0123456789")
	if r.Status != 200 {
		t.Fatalf("purge: %d %s", r.Status, r.Body)
	}
	proxytest.Eventually(t, 5*time.Second, func() bool { return !hit(g1, "/b") }, "g1 drops /b after g2's tag purge")
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
	for _, g := range []*proxytest.Gateway{g1, g2} {
		proxytest.Eventually(t, 10*time.Second, func() bool {
			v, _ := g.Metrics(t).Value("sluice_cache_invalidations_total", "source", "resync")
			return v >= 1
		}, "resync after Redis came back")
		if hit(g, "/c") {
			t.Error("entry survived a resync")
		}
	}
	// Invalidations flow again after the reconnect.
	warm("/d")
	proxytest.Eventually(t, 5*time.Second, func() bool {
		proxytest.Do(t, "POST", g1.AdminURL+"/admin/cache/purge", `{"keys":["/api/d"]}`, "Authorization", "Bearer admintoken-0123456789")
		return !hit(g2, "/d")
	}, "g2 drops /d after g1's purge")
}
