package cache

import (
	"fmt"
	"runtime"
	"testing"
	"time"
)

// BenchmarkStoreGC fills a 256MiB store (the default max_size and shards)
// with answers of 4KiB bodies and measures what the entries cost the Go
// heap and the garbage collector: the live heap they add, per entry beyond
// key and value, and one full collection with the store in memory (its wall
// time and its stop-the-world pauses). Run with GODEBUG=gctrace=1 to see
// the collector's own lines as well:
//
//	go test -run '^$' -bench StoreGC -benchtime 5x ./plugins/cache
func BenchmarkStoreGC(b *testing.B) {
	runtime.GC()
	var base runtime.MemStats
	runtime.ReadMemStats(&base)

	cc := &Section{}
	cc.Defaults()
	s := testStore(b, cc)
	body := make([]byte, 4<<10)
	hdrs := [][2][]byte{{[]byte("Content-Type"), []byte("application/json")}, {[]byte("ETag"), []byte(`"0123456789abcdef"`)}}
	// 5% more than the bound holds: every shard full, the rest evicted.
	for i, n := 0, 1; i < n; i++ {
		e := entry{status: 200, storedAt: time.Now().UnixNano(), lifetime: int64(time.Hour), uri: fmt.Appendf(nil, "/v1/items/%d?page=2", i), body: body}
		key := fmt.Sprintf("up\x00/v1/items/%d?page=2\x00p:0123456789abcdef", i)
		val := encodeEntry(nil, &e, hdrs, []string{"items"})
		if i == 0 {
			n = s.Capacity() / int(entryWeight(key, val)) * 105 / 100
		}
		s.set(key, val, []string{"items"})
	}
	runtime.GC()
	var full runtime.MemStats
	runtime.ReadMemStats(&full)
	live := int64(full.HeapAlloc) - int64(base.HeapAlloc)
	n := int64(s.Len())

	b.ResetTimer()
	var wall time.Duration
	var pause uint64
	for range b.N {
		var before, after runtime.MemStats
		runtime.ReadMemStats(&before)
		t0 := time.Now()
		runtime.GC()
		wall += time.Since(t0)
		runtime.ReadMemStats(&after)
		pause += after.PauseTotalNs - before.PauseTotalNs
	}
	b.StopTimer()
	b.ReportMetric(float64(n), "entries")
	b.ReportMetric(float64(s.Bytes())/(1<<20), "stored-MiB")
	b.ReportMetric(float64(live)/(1<<20), "live-heap-MiB")
	b.ReportMetric(float64(live-s.Bytes())/float64(n), "heap-B/entry-over-kv")
	b.ReportMetric(float64(wall.Microseconds())/float64(b.N), "gc-wall-µs")
	b.ReportMetric(float64(pause)/1e3/float64(b.N), "gc-stw-µs")
	b.ReportMetric(0, "ns/op")
	runtime.KeepAlive(s)
}
