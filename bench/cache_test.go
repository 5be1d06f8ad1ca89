package bench

import (
	"strconv"
	"sync/atomic"
	"testing"

	"github.com/sluice-gw/sluice/internal/testkit"
	"github.com/valyala/fasthttp"
)

const cacheYAML = `
log: {access_log: false}
cache: {max_size: 64MiB}
upstreams:
  up: {url: "http://upstream.test"}
routes:
  cached:
    path: "/c/{path:*}"
    upstream: up
    strip_prefix: "/c"
    plugins:
      cache: {stale_while_revalidate: 1h}
`

// cacheOrigin answers /json (fresh for 60s), /stale (already stale: max-age=0
// with a validator, served stale while it revalidates) and anything else
// with a unique, cacheable answer (miss+store).
func cacheOrigin(ctx *fasthttp.RequestCtx) {
	ctx.Response.Header.SetContentType("application/json")
	switch string(ctx.Path()) {
	case "/stale":
		ctx.Response.Header.Set("Cache-Control", "max-age=0")
		ctx.Response.Header.Set("ETag", `"v1"`)
		if string(ctx.Request.Header.Peek("If-None-Match")) == `"v1"` {
			ctx.SetStatusCode(304)
			return
		}
	default:
		ctx.Response.Header.Set("Cache-Control", "public, max-age=60")
	}
	ctx.Response.SetBodyRaw(testkit.Body1K)
}

// BenchmarkCacheHit answers from the cache: the upstream is not called.
func BenchmarkCacheHit(b *testing.B) {
	im := testkit.NewInMemory(b, cacheYAML, cacheOrigin)
	run(b, im.Client, "http://gateway/c/json?page=2&per_page=50", 200)
}

// BenchmarkCacheStale answers from a stale entry (stale-while-revalidate);
// the background refresh runs once at a time.
func BenchmarkCacheStale(b *testing.B) {
	im := testkit.NewInMemory(b, cacheYAML, cacheOrigin)
	run(b, im.Client, "http://gateway/c/stale", 200)
}

// BenchmarkCacheMissStore misses on a new key every time, calls the upstream
// and stores the answer.
func BenchmarkCacheMissStore(b *testing.B) {
	im := testkit.NewInMemory(b, cacheYAML, cacheOrigin)
	req := fasthttp.AcquireRequest()
	resp := fasthttp.AcquireResponse()
	defer fasthttp.ReleaseRequest(req)
	defer fasthttp.ReleaseResponse(resp)
	var n atomic.Int64
	b.ReportAllocs()
	for b.Loop() {
		req.SetRequestURI("http://gateway/c/item/" + strconv.FormatInt(n.Add(1), 10))
		if err := im.Client.Do(req, resp); err != nil {
			b.Fatal(err)
		}
		if resp.StatusCode() != 200 {
			b.Fatalf("status %d", resp.StatusCode())
		}
	}
}
