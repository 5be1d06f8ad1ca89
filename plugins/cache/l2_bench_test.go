package cache_test

import (
	"bytes"
	"fmt"
	"strings"
	"testing"

	"github.com/sluice-gw/sluice/internal/testkit"
	"github.com/valyala/fasthttp"
)

// BenchmarkSharedHit measures a hit of the shared tier through the whole
// gateway: a miss in the gateway's own store, a lookup in Redis (a real
// redis-server on loopback), the entry put into the store, the answer
// served. The store holds 1MiB in one shard and the benchmark cycles
// through more keys than fit, so that every request misses there (the
// oldest entry is the one asked next) and hits in Redis; it fails on any
// other Cache-Status. shared_timeout is 1s: a load spike on a shared
// machine must not turn a lookup into a fallback mid-run.
func BenchmarkSharedHit(b *testing.B) {
	rd := testkit.StartRedis(b)
	im := testkit.NewInMemory(b, fmt.Sprintf(`
log: {access_log: false}
cluster: {redis: {addr: "%s"}}
cache: {max_size: 1MiB, max_entry_size: 4KiB, shards: 1, shared_timeout: 1s}
upstreams: {up: {url: "http://upstream.test"}}
routes:
  c: {path: "/c/{path:*}", upstream: up, strip_prefix: /c, plugins: {cache: {}}}
`, rd.Addr), func(ctx *fasthttp.RequestCtx) {
		ctx.Response.Header.SetContentType("application/json")
		ctx.Response.Header.Set("Cache-Control", "public, max-age=600")
		ctx.Response.SetBodyRaw(testkit.Body1K)
	})
	const keys = 4000 // about 1.2KiB each in the store: several times 1MiB
	uris := make([]string, keys)
	for i := range uris {
		uris[i] = fmt.Sprintf("http://gateway/c/items/%d?page=2", i)
	}
	req := fasthttp.AcquireRequest()
	resp := fasthttp.AcquireResponse()
	defer fasthttp.ReleaseRequest(req)
	defer fasthttp.ReleaseResponse(resp)
	do := func(uri string) string {
		req.SetRequestURI(uri)
		if err := im.Client.Do(req, resp); err != nil {
			b.Fatal(err)
		}
		if resp.StatusCode() != 200 || len(resp.Body()) != 1024 {
			b.Fatalf("%s: status %d, %d bytes", uri, resp.StatusCode(), len(resp.Body()))
		}
		return string(resp.Header.Peek("Cache-Status"))
	}
	for _, u := range uris { // into Redis (and the store, which keeps the last ones)
		if cs := do(u); !strings.HasPrefix(cs, "sluice-shared; fwd=miss; stored") {
			b.Fatalf("warming %s: Cache-Status %q", u, cs)
		}
	}
	sharedHit := []byte("sluice-shared; hit")
	i := 0
	b.ReportAllocs()
	for b.Loop() {
		req.SetRequestURI(uris[i])
		if err := im.Client.Do(req, resp); err != nil {
			b.Fatal(err)
		}
		if cs := resp.Header.Peek("Cache-Status"); !bytes.HasPrefix(cs, sharedHit) {
			b.Fatalf("%s: Cache-Status %q, want a hit of the shared tier", uris[i], cs)
		}
		if i++; i == keys {
			i = 0
		}
	}
}
