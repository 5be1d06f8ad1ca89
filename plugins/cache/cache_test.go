package cache_test

import (
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/sluice-gw/sluice/internal/testkit"
	"github.com/valyala/fasthttp"
)

// origin is a real upstream whose answers a test scripts per path.
type origin struct {
	*testkit.Upstream
	hits    sync.Map // path -> *atomic.Int64
	handler func(ctx *fasthttp.RequestCtx, n int64)
}

func newOrigin(t *testing.T, h func(ctx *fasthttp.RequestCtx, n int64)) *origin {
	o := &origin{handler: h}
	o.Upstream = testkit.NewUpstream(t, func(ctx *fasthttp.RequestCtx) {
		c, _ := o.hits.LoadOrStore(string(ctx.Path()), new(atomic.Int64))
		n := c.(*atomic.Int64).Add(1)
		o.handler(ctx, n)
	})
	return o
}

// Hits counts requests the origin received for path.
func (o *origin) Hits(path string) int64 {
	c, ok := o.hits.Load(path)
	if !ok {
		return 0
	}
	return c.(*atomic.Int64).Load()
}

func gateway(t *testing.T, upstream, cacheBlock string, extra ...string) *testkit.Gateway {
	t.Helper()
	yaml := fmt.Sprintf(`
log: {access_log: false, level: debug}
admin: {token: admintoken-0123456789}
%s
upstreams: {up: {url: "%s"}}
routes:
  r: {path: "/api/{path:*}", upstream: up, strip_prefix: /api, plugins: {cache: %s}}
`, strings.Join(extra, "\n"), upstream, cacheBlock)
	return testkit.StartGateway(t, yaml)
}

func get(t *testing.T, url string, hdr ...string) *testkit.Response {
	t.Helper()
	return testkit.Do(t, "GET", url, "", hdr...)
}

func TestFreshnessRules(t *testing.T) {
	o := newOrigin(t, func(ctx *fasthttp.RequestCtx, n int64) {
		switch string(ctx.Path()) {
		case "/maxage":
			ctx.Response.Header.Set("Cache-Control", "max-age=60")
		case "/smaxage":
			ctx.Response.Header.Set("Cache-Control", "max-age=0, s-maxage=60")
		case "/expires":
			ctx.Response.Header.Set("Expires", time.Now().Add(time.Minute).UTC().Format(http.TimeFormat))
		case "/expired":
			ctx.Response.Header.Set("Expires", time.Now().Add(-time.Minute).UTC().Format(http.TimeFormat))
		case "/nostore":
			ctx.Response.Header.Set("Cache-Control", "no-store, max-age=60")
		case "/private":
			ctx.Response.Header.Set("Cache-Control", "private, max-age=60")
		case "/none":
		case "/zero":
			ctx.Response.Header.Set("Cache-Control", "max-age=0")
		case "/cookie":
			ctx.Response.Header.Set("Cache-Control", "max-age=60")
			ctx.Response.Header.Set("Set-Cookie", "s=1")
		case "/500":
			ctx.Response.Header.Set("Cache-Control", "max-age=60")
			ctx.SetStatusCode(500)
		case "/599":
			ctx.Response.Header.Set("Cache-Control", "max-age=60")
			ctx.SetStatusCode(599)
		case "/aged":
			ctx.Response.Header.Set("Cache-Control", "max-age=100")
			ctx.Response.Header.Set("Age", "30")
		}
		fmt.Fprintf(ctx, "n=%d", n)
	})
	gw := gateway(t, o.URL, "{}")
	for _, tc := range []struct {
		path   string
		cached bool
	}{
		{"/maxage", true}, {"/smaxage", true}, {"/expires", true}, {"/expired", false},
		{"/nostore", false}, {"/private", false}, {"/none", false}, {"/zero", false},
		{"/cookie", false}, {"/aged", true},
		// RFC 9111 section 3: any status the cache understands, with
		// explicit freshness; never one it does not know.
		{"/500", true}, {"/599", false},
	} {
		t.Run(tc.path, func(t *testing.T) {
			first := get(t, gw.URL+"/api"+tc.path)
			second := get(t, gw.URL+"/api"+tc.path)
			if string(first.Body) != "n=1" {
				t.Fatalf("first body %q", first.Body)
			}
			wantCS := "sluice; fwd=miss"
			if tc.cached {
				wantCS = "sluice; fwd=miss; stored"
			}
			if got := first.Header.Get("Cache-Status"); got != wantCS {
				t.Errorf("first Cache-Status %q, want %q", got, wantCS)
			}
			if tc.cached {
				if string(second.Body) != "n=1" || second.Header.Get("Cache-Status") != "sluice; hit" || o.Hits(tc.path) != 1 {
					t.Errorf("second: body %q, Cache-Status %q, origin hits %d; want a hit", second.Body, second.Header.Get("Cache-Status"), o.Hits(tc.path))
				}
				if second.Header.Get("Age") == "" {
					t.Error("a hit carries no Age")
				}
			} else if string(second.Body) != "n=2" || o.Hits(tc.path) != 2 {
				t.Errorf("second: body %q, origin hits %d; want no caching", second.Body, o.Hits(tc.path))
			}
		})
	}
	t.Run("age counts the upstream's Age", func(t *testing.T) {
		r := get(t, gw.URL+"/api/aged")
		if age, _ := strconv.Atoi(r.Header.Get("Age")); age < 30 || age > 40 {
			t.Errorf("Age %q, want about 30", r.Header.Get("Age"))
		}
	})
	m := gw.Metrics(t)
	if v, _ := m.Value("sluice_cache_requests_total", "route", "r", "result", "hit"); v != 6 {
		t.Errorf("hits counted %v, want 6", v)
	}
}
