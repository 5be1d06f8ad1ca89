package cache_test

import (
	"bytes"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"sync/atomic"
	"testing"
	"time"

	"github.com/sluice-gw/sluice/internal/testkit"
	"github.com/sluice-gw/sluice/plugins/cache"
)

// teeBody is a body of n bytes that differ from one position to the next.
func teeBody(n int) []byte {
	b := make([]byte, n)
	for i := range b {
		b[i] = byte(i % 251)
	}
	return b
}

// teeOrigin is a real upstream serving cacheable answers: /len/N with a
// Content-Length, /chunked/N without, /cut/N (a Content-Length of N, cut
// after half), /events/N (text/event-stream). It counts requests per path.
func teeOrigin(t *testing.T) (url string, hits func(path string) int64) {
	var counts [4]atomic.Int64
	idx := map[string]int{"len": 0, "chunked": 1, "cut": 2, "events": 3}
	url = testkit.ServeHTTP(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		var kind string
		var n int
		if _, err := fmt.Sscanf(r.URL.Path, "/%s", &kind); err != nil {
			w.WriteHeader(400)
			return
		}
		for i := len(kind) - 1; i >= 0; i-- {
			if kind[i] == '/' {
				n, _ = strconv.Atoi(kind[i+1:])
				kind = kind[:i]
				break
			}
		}
		counts[idx[kind]].Add(1)
		body := teeBody(n)
		w.Header().Set("Cache-Control", "max-age=300")
		switch kind {
		case "len":
			w.Header().Set("Content-Length", strconv.Itoa(n))
			_, _ = w.Write(body)
		case "chunked":
			for off := 0; off < n; off += 64 << 10 {
				_, _ = w.Write(body[off:min(off+64<<10, n)])
				w.(http.Flusher).Flush()
			}
		case "cut":
			w.Header().Set("Content-Length", strconv.Itoa(n))
			_, _ = w.Write(body[:n/2])
			w.(http.Flusher).Flush()
			panic(http.ErrAbortHandler) // the provider breaks the body off
		case "events":
			w.Header().Set("Content-Type", "text/event-stream")
			w.Header().Set("Content-Length", strconv.Itoa(n))
			_, _ = w.Write(body)
		}
	}))
	return url, func(kind string) int64 { return counts[idx[kind]].Load() }
}

func teeGateway(t *testing.T, url string) *testkit.Gateway {
	return testkit.StartGateway(t, fmt.Sprintf(`
log: {access_log: false}
cache: {max_size: 64MiB, max_entry_size: 8MiB, shards: 4}
upstreams: {up: {url: %q, max_response_body: 64MiB, stream_threshold: 1MiB}}
routes: {r: {path: "/{p:*}", upstream: up, plugins: {cache: {}}}}
`, url))
}

// fetch GETs url and returns status, body, Cache-Status and the error
// reading the body.
func fetch(t *testing.T, url string) (int, []byte, string, error) {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	return resp.StatusCode, b, resp.Header.Get("Cache-Status"), err
}

func streams(t *testing.T, gw *testkit.Gateway, outcome string) float64 {
	v, _ := gw.Metrics(t).Value("sluice_upstream_streams_total", "upstream", "up", "outcome", outcome)
	return v
}

// A 3 MiB answer over stream_threshold (1 MiB) is streamed to the first
// caller and stored: the second GET is a hit with the same bytes, and the
// provider was called once. With a Content-Length and without.
func TestStreamedAnswerIsStored(t *testing.T) {
	url, hits := teeOrigin(t)
	gw := teeGateway(t, url)
	const size = 3 << 20
	want := teeBody(size)
	for i, kind := range []string{"len", "chunked"} {
		path := fmt.Sprintf("/%s/%d", kind, size)
		st, b, cs, err := fetch(t, gw.URL+path)
		if err != nil || st != 200 || !bytes.Equal(b, want) {
			t.Fatalf("%s first: %d, %d bytes, %v", path, st, len(b), err)
		}
		testkit.Eventually(t, 5*time.Second, func() bool { return streams(t, gw, "complete") == float64(i+1) },
			"the first answer was streamed")
		st, b, cs2, err := fetch(t, gw.URL+path)
		if err != nil || st != 200 || !bytes.Equal(b, want) {
			t.Fatalf("%s second: %d, %d bytes, %v", path, st, len(b), err)
		}
		if !bytes.Contains([]byte(cs2), []byte("hit")) {
			t.Fatalf("%s second Cache-Status = %q (first %q), want a hit", path, cs2, cs)
		}
		if h := hits(kind); h != 1 {
			t.Fatalf("%s: provider called %d times, want 1", path, h)
		}
	}
	if hw := cache.TeeHighWater(); hw < size || hw > 8<<20 {
		t.Fatalf("tee buffer high water = %d, want between %d and 8 MiB", hw, size)
	}
}

// Answers over max_entry_size are streamed whole and not stored (the copy
// of the one without a Content-Length stops at max_entry_size); event
// streams are never stored; a body the provider cuts is not stored.
func TestStreamedAnswerNotStored(t *testing.T) {
	url, hits := teeOrigin(t)
	gw := teeGateway(t, url)
	const big = 10 << 20
	for _, path := range []string{fmt.Sprintf("/len/%d", big), fmt.Sprintf("/chunked/%d", big), "/events/2097152"} {
		n, _ := strconv.Atoi(path[bytes.LastIndexByte([]byte(path), '/')+1:])
		want := teeBody(n)
		for range 2 {
			st, b, _, err := fetch(t, gw.URL+path)
			if err != nil || st != 200 || !bytes.Equal(b, want) {
				t.Fatalf("%s: %d, %d bytes, %v", path, st, len(b), err)
			}
		}
	}
	for _, kind := range []string{"len", "chunked", "events"} {
		if h := hits(kind); h != 2 {
			t.Fatalf("%s: provider called %d times, want 2 (nothing stored)", kind, h)
		}
	}
	if hw := cache.TeeHighWater(); hw > 8<<20 {
		t.Fatalf("tee buffer high water = %d, over max_entry_size", hw)
	}

	path := "/cut/3145728"
	for i := range 2 {
		_, b, _, err := fetch(t, gw.URL+path)
		if err == nil || len(b) >= 3<<20 {
			t.Fatalf("cut %d: %d bytes, %v; want a broken body", i, len(b), err)
		}
		testkit.Eventually(t, 5*time.Second, func() bool { return streams(t, gw, "upstream_cut") == float64(i+1) },
			"the stream is counted upstream_cut")
	}
	if h := hits("cut"); h != 2 {
		t.Fatalf("cut: provider called %d times, want 2 (nothing stored)", h)
	}
}

// A streamed answer the tee stores reaches the shared tier too: another
// gateway of the cluster, with an empty store of its own, answers it from
// Redis with the same bytes, and the provider is called once.
func TestStreamedAnswerReachesSharedTier(t *testing.T) {
	rd := testkit.StartRedis(t)
	url, hits := teeOrigin(t)
	yaml := fmt.Sprintf(`
log: {access_log: false}
cluster: {redis: {addr: %q}}
cache: {max_size: 64MiB, max_entry_size: 8MiB, shards: 4, shared_timeout: 10s}
upstreams: {up: {url: %q, max_response_body: 64MiB, stream_threshold: 1MiB}}
routes: {r: {path: "/{p:*}", upstream: up, plugins: {cache: {}}}}
`, rd.Addr, url)
	g1 := testkit.StartGateway(t, yaml)
	g2 := testkit.StartGateway(t, yaml)
	// Over stream_threshold, and small enough that the race detector on a
	// loaded machine reads it from Redis well within shared_timeout (which
	// is long here: this test is about what is stored, not how fast).
	const size = 3 << 19
	want := teeBody(size)
	path := fmt.Sprintf("/chunked/%d", size)
	st, b, _, err := fetch(t, g1.URL+path)
	if err != nil || st != 200 || !bytes.Equal(b, want) {
		t.Fatalf("first: %d, %d bytes, %v", st, len(b), err)
	}
	testkit.Eventually(t, 5*time.Second, func() bool { return streams(t, g1, "complete") == 1 },
		"the first answer was streamed")
	testkit.Eventually(t, 5*time.Second, func() bool {
		v, _ := g1.Metrics(t).Value("sluice_cache_shared_writes_total", "result", "stored")
		return v == 1
	}, "the streamed answer was written to the shared tier")
	st, b, cs, err := fetch(t, g2.URL+path)
	if err != nil || st != 200 || !bytes.Equal(b, want) {
		t.Fatalf("other gateway: %d, %d bytes, %v", st, len(b), err)
	}
	if !bytes.HasPrefix([]byte(cs), []byte("sluice-shared; hit")) {
		t.Fatalf("other gateway's Cache-Status = %q, want the shared tier's hit", cs)
	}
	if h := hits("chunked"); h != 1 {
		t.Fatalf("provider called %d times, want 1", h)
	}
}
