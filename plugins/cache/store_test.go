package cache

import (
	"fmt"
	"strings"
	"sync"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/sluice-gw/sluice/proxy/config"
)

// smallStore makes a store of maxSize bytes in shards shards.
func smallStore(t *testing.T, maxSize config.Size, shards int) *Store {
	t.Helper()
	return testStore(t, &Section{MaxSize: maxSize, MaxEntrySize: 1024, Shards: shards})
}

// testStore makes the store for cc, with its own metrics registry.
func testStore(tb testing.TB, cc *Section) *Store {
	tb.Helper()
	var s *Store
	m := newMetrics(prometheus.NewRegistry(), func() *Store { return s })
	s = newStore(cc, m)
	return s
}

// testEntry encodes a response entry for uri with tags and a body of n bytes.
func testEntry(uri string, n int, tags ...string) []byte {
	e := entry{status: 200, uri: []byte(uri), body: []byte(strings.Repeat("b", n))}
	return encodeEntry(nil, &e, nil, tags)
}

// checkBooks compares Bytes and the tag index with what the shards hold:
// Bytes is the sum of keys and values, and a key is indexed under a tag
// exactly when its entry carries the tag.
func checkBooks(t *testing.T, s *Store) {
	t.Helper()
	var sum int64
	want := map[string]map[string]struct{}{}
	for _, c := range s.sh {
		for k, v := range c.All() {
			sum += int64(len(k) + len(v))
			var e entry
			if len(v) > 0 && v[0] == kindResponse && decodeEntry(v, &e) == nil {
				forEachTag(e.tags, func(tag []byte) {
					if want[string(tag)] == nil {
						want[string(tag)] = map[string]struct{}{}
					}
					want[string(tag)][k] = struct{}{}
				})
			}
		}
	}
	if got := s.Bytes(); got != sum {
		t.Errorf("Bytes() = %d, the entries hold %d", got, sum)
	}
	s.tagMu.Lock()
	defer s.tagMu.Unlock()
	if fmt.Sprint(s.tags) != fmt.Sprint(want) {
		t.Errorf("tag index %v, the entries carry %v", s.tags, want)
	}
}

func TestStoreSetCopiesAndGetShares(t *testing.T) {
	s := smallStore(t, 1<<20, 1)
	val := testEntry("/a", 100)
	orig := string(val)
	if !s.set("k", val, nil) {
		t.Fatal("set refused a small entry")
	}
	for i := range val {
		val[i] = 0 // the caller reuses its buffer
	}
	got := s.get([]byte("k"))
	if string(got) != orig {
		t.Fatal("the stored entry changed with the caller's buffer: set must copy")
	}
	if again := s.get([]byte("k")); &again[0] != &got[0] {
		t.Error("get copied the entry: want the stored bytes")
	}
	if cap(got) != len(got) {
		t.Errorf("stored value has spare capacity (%d > %d): an append by a reader would write into shared memory", cap(got), len(got))
	}
	if s.get([]byte("missing")) != nil {
		t.Error("get of a missing key returned bytes")
	}
}

func TestStoreRefusesEntryLargerThanShard(t *testing.T) {
	s := smallStore(t, 1<<20, 4) // shards of 256KiB
	if s.Capacity() != 1<<20 {
		t.Errorf("Capacity() = %d, want max_size 1MiB", s.Capacity())
	}
	big := make([]byte, 256<<10) // with its key and overhead, over 256KiB
	if s.set("big", big, nil) {
		t.Error("set took an entry larger than a shard")
	}
	fits := make([]byte, 256<<10-entryOverhead-len("fits"))
	if !s.set("fits", fits, nil) {
		t.Error("set refused an entry of exactly a shard's bound")
	}
	if s.get([]byte("big")) != nil || s.get([]byte("fits")) == nil {
		t.Error("wrong entries stored")
	}
	checkBooks(t, s)
}

func TestStoreReplacementKeepsBooks(t *testing.T) {
	s := smallStore(t, 1<<20, 1)
	s.set("k", testEntry("/a", 100, "a", "both"), []string{"a", "both"})
	s.set("k", testEntry("/a", 300, "b", "both"), []string{"b", "both"})
	if want := int64(len("k") + len(testEntry("/a", 300, "b", "both"))); s.Bytes() != want {
		t.Errorf("Bytes() = %d after a replacement, want %d", s.Bytes(), want)
	}
	checkBooks(t, s)
	if n := s.apply(&Invalidation{Tags: []string{"a"}}); n != 0 {
		t.Errorf("purging the replaced value's tag removed %d entries", n)
	}
	if n := s.apply(&Invalidation{Tags: []string{"both"}}); n != 1 {
		t.Errorf("purging a tag of the new value removed %d entries, want 1", n)
	}
	if s.Len() != 0 || s.Bytes() != 0 {
		t.Errorf("after the purge: %d entries, %d bytes", s.Len(), s.Bytes())
	}
	checkBooks(t, s)
}

func TestStoreEvictionsCountedAndBounded(t *testing.T) {
	s := smallStore(t, 1<<20, 2)
	const n = 400 // 400 x 8KiB through 1MiB
	for i := range n {
		tag := fmt.Sprintf("t%d", i%7)
		if !s.set(fmt.Sprintf("key-%d", i), testEntry(fmt.Sprintf("/item/%d", i), 8<<10, tag), []string{tag}) {
			t.Fatalf("set %d refused", i)
		}
	}
	ev := testutil.ToFloat64(s.m.evictions)
	t.Logf("%d entries, %d bytes, %v evictions", s.Len(), s.Bytes(), ev)
	if int(ev)+s.Len() != n {
		t.Errorf("%v evictions + %d entries != %d stored", ev, s.Len(), n)
	}
	if s.Len() == 0 || s.Bytes()+int64(s.Len()*entryOverhead) > int64(s.Capacity()) {
		t.Errorf("%d entries of %d bytes (plus %d each) over a bound of %d", s.Len(), s.Bytes(), entryOverhead, s.Capacity())
	}
	checkBooks(t, s)
	if got := s.apply(&Invalidation{All: true}); got == 0 || s.Len() != 0 || s.Bytes() != 0 {
		t.Errorf("purge all: %d removed, %d left, %d bytes", got, s.Len(), s.Bytes())
	}
	if testutil.ToFloat64(s.m.evictions) != ev {
		t.Error("a purge counted as evictions")
	}
	checkBooks(t, s)
}

func TestStoreDeleteMatching(t *testing.T) {
	s := smallStore(t, 1<<20, 4)
	for _, u := range []string{"/a/1", "/a/2", "/ab", "/b/1"} {
		s.set("key"+u, testEntry(u, 10), nil)
	}
	s.set("vary/a/3", encodeVary(nil, 1, []byte("/a/3"), []string{"accept"}), nil)
	if n := s.apply(&Invalidation{Prefix: "/a/"}); n != 3 {
		t.Errorf("prefix /a/ removed %d entries, want 3 (two answers, one vary marker)", n)
	}
	if n := s.apply(&Invalidation{URIs: []string{"/b/1"}}); n != 1 {
		t.Errorf("uri /b/1 removed %d entries, want 1", n)
	}
	if s.Len() != 1 || s.get([]byte("key/ab")) == nil {
		t.Errorf("%d entries left, want /ab only", s.Len())
	}
	checkBooks(t, s)
}

// TestStoreConcurrentBooks sets, replaces, deletes and purges a few keys
// from several goroutines, with evictions: afterwards Bytes and the tag
// index agree exactly with the entries (run with -race).
func TestStoreConcurrentBooks(t *testing.T) {
	s := smallStore(t, 1<<20, 2)
	var wg sync.WaitGroup
	for g := range 4 {
		wg.Go(func() {
			for i := range 600 {
				k := fmt.Sprintf("key-%d", (i*7+g)%40)
				tags := []string{fmt.Sprintf("t%d", (i+g)%5), "all"}
				switch i % 10 {
				case 7:
					s.del(k)
				case 8:
					s.apply(&Invalidation{Tags: tags[:1]})
				case 9:
					if i%100 == 99 {
						s.apply(&Invalidation{Prefix: "/item/1"})
					}
				default:
					s.set(k, testEntry("/item/"+k, (i%5)*20<<10, tags...), tags)
				}
				if b := s.get([]byte(k)); b != nil && b[0] != kindResponse {
					t.Error("corrupt entry read")
				}
			}
		})
	}
	wg.Wait()
	checkBooks(t, s)
	t.Logf("%d entries, %d bytes, %v evictions", s.Len(), s.Bytes(), testutil.ToFloat64(s.m.evictions))
}
