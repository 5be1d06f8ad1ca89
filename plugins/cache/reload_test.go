package cache_test

import (
	"fmt"
	"strings"
	"testing"

	"github.com/sluice-gw/sluice/internal/testkit"
	"github.com/valyala/fasthttp"
)

// The store lives across reloads; max_size and shards apply at the next start.
func TestReloadKeepsTheStore(t *testing.T) {
	o := newOrigin(t, func(ctx *fasthttp.RequestCtx, n int64) {
		ctx.Response.Header.Set("Cache-Control", "max-age=600")
		fmt.Fprintf(ctx, "n=%d", n)
	})
	conf := func(size, route string) string {
		return fmt.Sprintf(`
log: {access_log: false}
cache: {max_size: %s}
upstreams: {up: {url: "%s"}}
routes:
  r: {path: "/api/{path:*}", upstream: up, strip_prefix: /api, plugins: {cache: {}}}
  %s
`, size, o.URL, route)
	}
	gw := testkit.StartGateway(t, conf("16MiB", ""))
	get(t, gw.URL+"/api/x")
	testkit.WriteFile(t, gw.File, conf("16MiB", `r2: {path: "/other/{path:*}", upstream: up, strip_prefix: /other, plugins: {cache: {}}}`))
	if err := gw.Reload(); err != nil {
		t.Fatal(err)
	}
	if r := get(t, gw.URL+"/api/x"); r.Header.Get("Cache-Status") != "sluice; hit" {
		t.Errorf("after reload: %q, want the entry kept", r.Header.Get("Cache-Status"))
	}
	// Same upstream, same path: routes never share entries (each has its
	// own callers and credentials), the new route fetches its own.
	if r := get(t, gw.URL+"/other/x"); r.Header.Get("Cache-Status") != "sluice; fwd=miss; stored" || string(r.Body) != "n=2" {
		t.Errorf("second route of the upstream: %q %q, want its own entry", r.Header.Get("Cache-Status"), r.Body)
	}
	testkit.WriteFile(t, gw.File, conf("32MiB", ""))
	if err := gw.Reload(); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(gw.Logs.String(), "cache.max_size") {
		t.Error("a max_size change is not reported as needing a restart")
	}
	if r := get(t, gw.URL+"/api/x"); r.Header.Get("Cache-Status") != "sluice; hit" {
		t.Errorf("after a max_size reload: %q", r.Header.Get("Cache-Status"))
	}
}
