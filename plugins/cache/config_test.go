package cache_test

import (
	"fmt"
	"strings"
	"testing"

	"github.com/sluice-gw/sluice/internal/testkit"
	"github.com/valyala/fasthttp"
)

func TestConfigErrorsNameTheirKey(t *testing.T) {
	base := `
upstreams: {up: {url: "http://127.0.0.1:1"}}
routes: {r: {path: "/{p:*}", upstream: up, plugins: {cache: %s}}}
%s`
	for _, tc := range []struct{ block, global, path, msg string }{
		{"{}", "", "", ""},
		{"{ttl: -1s}", "", "routes.r.plugins.cache.ttl", "negative"},
		{"{override: true}", "", "routes.r.plugins.cache.override", "needs ttl"},
		{"{query: some}", "", "routes.r.plugins.cache.query", "unknown value"},
		{"{query: []}", "", "routes.r.plugins.cache.query", "write none"},
		{"{partition: everyone}", "", "routes.r.plugins.cache.partition", "auto, consumer or none"},
		{"{credential_headers: [Api-Key, \"bad header\"]}", "", "routes.r.plugins.cache.credential_headers[1]", "invalid header name"},
		{"{credential_headers: [Api-Key, x-auth-token]}", "", "", ""},
		{"{targets: [Sluice-Cache-Control, \"bad name\"]}", "", "routes.r.plugins.cache.targets[1]", "invalid header name"},
		{"{targets: [cache-control]}", "", "routes.r.plugins.cache.targets[0]", "targeted fields"},
		{"{targets: [CDN-Cache-Control, cdn-cache-control]}", "", "routes.r.plugins.cache.targets[1]", "listed twice"},
		{"{targets: [Sluice-Cache-Control, CDN-Cache-Control]}", "", "", ""},
		{"{request_directives: obey}", "", "routes.r.plugins.cache.request_directives", "ignore or honor"},
		{"{request_directives: honor}", "", "", ""},
		{"{stale_if_error: -1s}", "", "routes.r.plugins.cache.stale_if_error", "negative"},
		{"{ttl: 10}", "", "routes.r.plugins.cache.ttl", ""},
		{"{tll: 1m}", "", "routes.r.plugins.cache", "tll"},
		{"{invalidate: [{path: x, tags: [a]}]}", "", "routes.r.plugins.cache.invalidate[0].path", "must start with '/'"},
		{"{invalidate: [{path: \"/a/{id}\", tags: []}]}", "", "routes.r.plugins.cache.invalidate[0].tags", "at least one"},
		{"{invalidate: [{path: \"/a/{id}\", tags: [\"c:{nope}\"]}]}", "", "routes.r.plugins.cache.invalidate[0].tags[0]", "{nope} is not a parameter"},
		{"{invalidate: [{methods: [post], path: /a, tags: [x]}]}", "", "routes.r.plugins.cache.invalidate[0].methods[0]", "upper case"},
		{"{invalidate: [{methods: [POST, GET], path: /a, tags: [x]}]}", "", "routes.r.plugins.cache.invalidate[0].methods[1]", "safe method"},
		{"{invalidate: [{methods: [HEAD], path: /a, tags: [x]}]}", "", "routes.r.plugins.cache.invalidate[0].methods[0]", "safe method"},
		{"{invalidate: [{methods: [OPTIONS], path: /a, tags: [x]}]}", "", "routes.r.plugins.cache.invalidate[0].methods[0]", "safe method"},
		{"{invalidate: [{methods: [TRACE], path: /a, tags: [x]}]}", "", "routes.r.plugins.cache.invalidate[0].methods[0]", "safe method"},
		{"{tags: [\"c:{nope}\"]}", "", "routes.r.plugins.cache.tags[0]", "{nope} is not a parameter"},
		{"{tags: [fixed, \"c:{p}\", \"c:{p}:{q}\"]}", "", "routes.r.plugins.cache.tags[2]", "{q} is not a parameter"},
		{"{tags: [\"c:{p}\"]}", "", "", ""},
		{"{webhook: {tags: [/a]}}", "", "routes.r.plugins.cache.webhook.secret", "required"},
		{"{webhook: {secret: s, scheme: hmac, tags: [/a]}}", "", "routes.r.plugins.cache.webhook.scheme", "generic or timestamped"},
		{"{webhook: {secret: s, tags: [nopointer]}}", "", "routes.r.plugins.cache.webhook.tags[0]", "no JSON pointer"},
		{"{webhook: {secret: s, tags: [\"/a~2\"]}}", "", "routes.r.plugins.cache.webhook.tags[0]", "'~'"},
		{"{webhook: {secret: s}}", "", "routes.r.plugins.cache.webhook.tags", "at least one"},
		{"{}", "cache: {max_size: 64MiB, shards: 3}", "cache.shards", "power of two"},
		{"{}", "cache: {max_size: 4MiB, max_entry_size: 2MiB, shards: 4}", "cache.max_entry_size", "does not fit"},
		{"{}", "cache: {max_entry_size: 10}", "cache.max_entry_size", "at least 1KiB"},
	} {
		t.Run(tc.path+" "+tc.block, func(t *testing.T) {
			probs := testkit.ConfigProblems(t, fmt.Sprintf(base, tc.block, tc.global))
			if tc.path == "routes.r.plugins.cache.ttl" && tc.msg == "" {
				if len(probs) != 1 || !strings.HasPrefix(probs[0].Path, tc.path) {
					t.Errorf("got %v", probs)
				}
				return
			}
			if tc.path == "routes.r.plugins.cache" {
				if len(probs) != 1 || !strings.Contains(probs[0].Error(), tc.msg) {
					t.Errorf("got %v", probs)
				}
				return
			}
			testkit.WantOneProblem(t, probs, tc.path, tc.msg)
		})
	}
}

// TestMemoryBoundedUnderChurn stores many distinct answers, several times
// cache.max_size in total: the store stays within its limit and counts
// every entry it evicts. One answer requested all along stays in memory
// (the store evicts what is least likely to be used again: W-TinyLFU).
func TestMemoryBoundedUnderChurn(t *testing.T) {
	body := strings.Repeat("x", 16<<10)
	o := newOrigin(t, func(ctx *fasthttp.RequestCtx, n int64) {
		ctx.Response.Header.Set("Cache-Control", "max-age=600")
		ctx.SetBodyString(body)
	})
	gw := gateway(t, o.URL, "{}", "cache: {max_size: 2MiB, max_entry_size: 64KiB}")
	const N = 600 // 600 x 16KiB = 9.4MiB through a 2MiB cache
	hot := gw.URL + "/api/hot"
	get(t, hot)
	hotMisses := 0
	for i := range N {
		r := get(t, fmt.Sprintf("%s/api/item/%d", gw.URL, i))
		if r.Status != 200 || len(r.Body) != len(body) {
			t.Fatalf("request %d: %d, %d bytes", i, r.Status, len(r.Body))
		}
		if !strings.HasSuffix(r.Header.Get("Cache-Status"), "; stored") {
			t.Fatalf("request %d: %q, want it stored", i, r.Header.Get("Cache-Status"))
		}
		if r := get(t, hot); r.Header.Get("Cache-Status") != "sluice; hit" {
			hotMisses++
		}
	}
	m := gw.Metrics(t)
	bytes, _ := m.Value("sluice_cache_bytes")
	entries, _ := m.Value("sluice_cache_entries")
	evictions, _ := m.Value("sluice_cache_evictions_total")
	capacity, _ := m.Value("sluice_cache_capacity_bytes")
	t.Logf("bytes %v, entries %v, evictions %v, hot misses %d", bytes, entries, evictions, hotMisses)
	if capacity != 2<<20 {
		t.Errorf("capacity %v, want max_size 2MiB", capacity)
	}
	if bytes > 2<<20 || bytes == 0 {
		t.Errorf("store holds %v bytes, limit 2MiB", bytes)
	}
	if entries == 0 || entries*16*1024 > 2*1024*1024 {
		t.Errorf("%v entries of 16KiB in a 2MiB store", entries)
	}
	// Every entry stored (N items and the hot one) is either still there
	// or was evicted, and counted.
	if evictions+entries != N+1 {
		t.Errorf("evictions %v + entries %v, want %v", evictions, entries, N+1)
	}
	if hotMisses > 0 {
		t.Errorf("the answer requested after every other one missed %d times", hotMisses)
	}
	t.Run("answers larger than max_entry_size pass through unstored", func(t *testing.T) {
		big := newOrigin(t, func(ctx *fasthttp.RequestCtx, n int64) {
			ctx.Response.Header.Set("Cache-Control", "max-age=600")
			ctx.SetBodyString(strings.Repeat("y", 100<<10))
		})
		gw := gateway(t, big.URL, "{}", "cache: {max_size: 2MiB, max_entry_size: 64KiB}")
		get(t, gw.URL+"/api/big")
		if r := get(t, gw.URL+"/api/big"); len(r.Body) != 100<<10 || r.Header.Get("Cache-Status") != "sluice; fwd=miss" || big.Hits("/big") != 2 {
			t.Errorf("%d bytes, %q, origin hits %d", len(r.Body), r.Header.Get("Cache-Status"), big.Hits("/big"))
		}
	})
}

// An answer within max_entry_size is stored (max_entry_size fits in a
// shard, its allowance for the key and per-entry overhead included), and
// "stored" means the next request is a hit. The store refusing a larger
// entry is TestStoreRefusesEntryLargerThanShard.
func TestStoredOnlyWhenStored(t *testing.T) {
	sizes := map[string]int{"/big": 1<<20 - 4096, "/small": 10 << 10}
	o := newOrigin(t, func(ctx *fasthttp.RequestCtx, n int64) {
		ctx.Response.Header.Set("Cache-Control", "max-age=600")
		ctx.SetBodyString(strings.Repeat("z", sizes[string(ctx.Path())]))
	})
	for _, p := range []string{"/big", "/small"} {
		// A store of its own each: two entries would not both fit.
		gw := gateway(t, o.URL, "{}", "cache: {max_size: 1MiB, max_entry_size: 1MiB, shards: 1}")
		first := get(t, gw.URL+"/api"+p)
		second := get(t, gw.URL+"/api"+p)
		if len(first.Body) != sizes[p] || len(second.Body) != sizes[p] {
			t.Fatalf("%s: bodies of %d and %d bytes, want %d", p, len(first.Body), len(second.Body), sizes[p])
		}
		stored := strings.HasSuffix(first.Header.Get("Cache-Status"), "; stored")
		hit := second.Header.Get("Cache-Status") == "sluice; hit"
		if !stored || !hit {
			t.Errorf("%s: first %q, then %q: want stored, then a hit", p, first.Header.Get("Cache-Status"), second.Header.Get("Cache-Status"))
		}
	}
}
