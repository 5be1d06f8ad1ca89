package proxy_test

import (
	"fmt"
	"io"
	"net"
	"net/http"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/sluice-gw/sluice/internal/testkit"
)

// Bytes a provider sends after its answer's end (more than its
// Content-Length) are never read as another caller's answer: the
// connection is checked before reuse and dropped.
func TestStrayBytesNeverBecomeTheNextAnswer(t *testing.T) {
	t.Parallel()
	up := testkit.NewFaultUpstream(t)
	gw := testkit.StartGateway(t, fmt.Sprintf(`
log: {access_log: false}
upstreams: {up: {url: %q}}
routes: {r: {path: "/{p:*}", upstream: up}}
`, up.URL))
	poison := "HTTP/1.1 200 OK\r\nCache-Control: public, max-age=600\r\nContent-Length: 6\r\n\r\nPOISON"
	up.Script(testkit.Fault{Trailing: poison, TrailingAfter: 200 * time.Millisecond})
	if r := testkit.Do(t, "GET", gw.URL+"/first", ""); r.Status != 200 || string(r.Body) != "ok" {
		t.Fatalf("first call: %d %q", r.Status, r.Body)
	}
	// Wait until the stray answer has reached the pooled connection.
	time.Sleep(400 * time.Millisecond)
	r := testkit.Do(t, "GET", gw.URL+"/second", "")
	if strings.Contains(string(r.Body), "POISON") || r.Header.Get("Cache-Control") != "" {
		t.Fatalf("second caller got the stray bytes as its answer: %d %q %v", r.Status, r.Body, r.Header)
	}
	if r.Status != 200 || string(r.Body) != "ok" {
		t.Fatalf("second call: %d %q", r.Status, r.Body)
	}
	if got := up.Hits(); got != 2 {
		t.Fatalf("provider saw %d requests, want 2", got)
	}
	if got := up.Conns(); got != 2 {
		t.Fatalf("provider saw %d connections, want 2 (the tainted one is not reused)", got)
	}
	if v, _ := gw.Metrics(t).Value("sluice_upstream_connections_discarded_total", "upstream", "up", "reason", "stale"); v != 1 {
		t.Fatalf("stale connections discarded = %v, want 1", v)
	}
}

// A provider that closes idle keep-alive connections (Node closes after
// 5 s, many load balancers after 60 s) never costs a request: a POST
// without an Idempotency-Key, which must not be resent, goes out on a live
// connection instead of failing on the dead pooled one.
func TestProviderClosedIdleConnectionLosesNoRequest(t *testing.T) {
	t.Parallel()
	up := testkit.NewFaultUpstream(t)
	up.SetIdleClose(300 * time.Millisecond)
	gw := testkit.StartGateway(t, fmt.Sprintf(`
log: {access_log: false}
upstreams: {up: {url: %q}}
routes: {r: {path: "/{p:*}", upstream: up}}
`, up.URL))
	for i := range 3 {
		if r := testkit.Do(t, "GET", gw.URL+"/warm", ""); r.Status != 200 {
			t.Fatalf("GET %d: %d %s", i, r.Status, r.Body)
		}
		time.Sleep(600 * time.Millisecond) // the provider closes the pooled connection
		if r := testkit.Do(t, "POST", gw.URL+"/charge", `{"amount":1}`, "Content-Type", "application/json"); r.Status != 200 {
			t.Fatalf("POST %d after the provider closed the idle connection: %d %s", i, r.Status, r.Body)
		}
		time.Sleep(600 * time.Millisecond)
	}
	posts := 0
	for _, r := range up.Requests() {
		if r.Method == "POST" {
			posts++
		}
	}
	if posts != 3 {
		t.Fatalf("provider saw %d POSTs, want 3", posts)
	}
}

// An over-limit chunked answer is refused at the limit: reading stops there
// and no resend reads it again.
func TestChunkedAnswerStopsAtTheLimit(t *testing.T) {
	t.Parallel()
	up := testkit.NewFaultUpstream(t)
	gw := testkit.StartGateway(t, fmt.Sprintf(`
log: {access_log: false}
upstreams: {up: {url: %q, max_response_body: 1MiB}}
routes: {r: {path: "/{p:*}", upstream: up}}
`, up.URL))
	up.SetDefault(testkit.Fault{ChunkedForever: true})
	r := testkit.Do(t, "GET", gw.URL+"/endless", "")
	testkit.WantProblem(t, r, 502, "upstream_error")
	if got := up.Hits(); got != 1 {
		t.Fatalf("provider was asked %d times for the over-limit answer, want 1", got)
	}
	// Under the limit, a chunked answer comes through whole.
	up.SetDefault(testkit.Fault{Chunked: 700 << 10})
	r = testkit.Do(t, "GET", gw.URL+"/big", "")
	if r.Status != 200 || len(r.Body) != 700<<10 || strings.Trim(string(r.Body), "x") != "" {
		t.Fatalf("chunked answer under the limit: %d, %d bytes", r.Status, len(r.Body))
	}
	if v, found := gw.Metrics(t).Value("sluice_body_memory_bytes"); !found || v != 0 {
		t.Fatalf("body memory after the calls = %v (found %v), want 0", v, found)
	}
}

// The process-wide body budget holds whatever callers do: concurrent big
// answers that would not fit together get 503 overloaded, the others come
// through, and every byte reserved is given back.
func TestBodyBudgetHolds(t *testing.T) {
	t.Parallel()
	up := testkit.NewFaultUpstream(t)
	up.SetDefault(testkit.Fault{Chunked: 3 << 20})
	gw := testkit.StartGateway(t, fmt.Sprintf(`
log: {access_log: false}
server: {max_body_memory: 10MiB, max_request_body: 1MiB}
upstreams: {up: {url: %q, max_response_body: 4MiB, stream_threshold: 4MiB}}
routes: {r: {path: "/{p:*}", upstream: up}}
`, up.URL))
	const callers = 8
	var wg sync.WaitGroup
	statuses := make([]int, callers)
	for i := range callers {
		wg.Go(func() {
			r, err := testkit.TryDo("GET", gw.URL+"/big", "")
			if err != nil {
				t.Errorf("caller %d: %v", i, err)
				return
			}
			statuses[i] = r.Status
			if r.Status == 200 && len(r.Body) != 3<<20 {
				t.Errorf("caller %d: 200 with %d bytes", i, len(r.Body))
			}
			if r.Status != 200 && r.Status != 503 {
				t.Errorf("caller %d: status %d, want 200 or 503", i, r.Status)
			}
		})
	}
	wg.Wait()
	ok := 0
	for _, s := range statuses {
		if s == 200 {
			ok++
		}
	}
	if ok == 0 {
		t.Fatalf("no caller got its answer: %v", statuses)
	}
	// 3 MiB answers grow to a 4 MiB buffer each: at most two fit in 10 MiB at once.
	if ok == callers {
		t.Logf("all %d answers fitted one after the other (no overlap this run)", callers)
	}
	testkit.Eventually(t, 5*time.Second, func() bool {
		v, _ := gw.Metrics(t).Value("sluice_body_memory_bytes")
		return v == 0
	}, "every reserved byte is given back")
	if v, _ := gw.Metrics(t).Value("sluice_body_memory_refusals_total"); v != float64(callers-ok) {
		t.Fatalf("refusals counted %v, want %d", v, callers-ok)
	}
}

// A caller that hangs up while the provider hangs gives back its
// max_inflight slot, and the provider's connection is closed, instead of
// both being held until the upstream timeout.
func TestCallerHangUpEndsTheAttempt(t *testing.T) {
	t.Parallel()
	up := testkit.NewFaultUpstream(t)
	up.SetDefault(testkit.Fault{Hang: true})
	gw := testkit.StartGateway(t, fmt.Sprintf(`
log: {access_log: false}
server: {max_inflight: 4}
upstreams: {up: {url: %q, timeout: 30s}}
routes: {r: {path: "/{p:*}", upstream: up}}
`, up.URL))
	const callers = 4
	for range callers {
		c := gw.Dial(t, 0)
		if _, err := c.Write([]byte("GET /hang HTTP/1.1\r\nHost: gw\r\n\r\n")); err != nil {
			t.Fatal(err)
		}
		time.AfterFunc(200*time.Millisecond, func() { c.Close() }) // the caller's own timeout
	}
	testkit.Eventually(t, 10*time.Second, func() bool { return up.Abandoned() == callers },
		"the gateway closes the provider connection of every caller that left")
	testkit.Eventually(t, 5*time.Second, func() bool {
		v, _ := gw.Metrics(t).Value("sluice_inflight_requests")
		return v == 0
	}, "every max_inflight slot is given back")
	// Callers leaving say nothing about the provider: no attempt is counted
	// as failed (SluiceUpstreamFailing reads conn_error and timeout), and the
	// target's health is untouched.
	for _, outcome := range []string{"conn_error", "timeout"} {
		if v, _ := gw.Metrics(t).Value("sluice_upstream_duration_seconds", "upstream", "up", "outcome", outcome); v != 0 {
			t.Fatalf("callers hanging up counted %v attempts as %s", v, outcome)
		}
	}
	up.SetDefault(testkit.OK)
	if r := testkit.Do(t, "GET", gw.URL+"/after", ""); r.Status != 200 {
		t.Fatalf("after the callers left: %d %s", r.Status, r.Body)
	}
}

// Reading an over-limit chunked answer allocates about twice the limit
// (the buffer doubles up to limit+1), once: no resend reads it again, even
// with retries on. (Not parallel: it counts the process's allocations.)
func TestOverLimitChunkedAnswerAllocatesAboutTheLimit(t *testing.T) {
	up := testkit.NewFaultUpstream(t)
	up.SetDefault(testkit.Fault{ChunkedForever: true})
	gw := testkit.StartGateway(t, fmt.Sprintf(`
log: {access_log: false}
upstreams: {up: {url: %q, max_response_body: 8MiB, stream_threshold: 8MiB}}
routes: {r: {path: "/{p:*}", upstream: up, plugins: {retry: {attempts: 3, backoff: 1ms}}}}
`, up.URL))
	up.Script(testkit.OK)
	testkit.Do(t, "GET", gw.URL+"/warm-up", "") // pools, buffers, metric children
	hits := up.Hits()
	var before, after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	r := testkit.Do(t, "GET", gw.URL+"/endless", "")
	runtime.ReadMemStats(&after)
	testkit.WantProblem(t, r, 502, "upstream_error")
	if got := up.Hits() - hits; got != 1 {
		t.Fatalf("the over-limit answer was requested %d times, want 1", got)
	}
	const limit = 8 << 20
	if alloc := after.TotalAlloc - before.TotalAlloc; alloc > 5*limit/2 {
		t.Fatalf("one over-limit answer allocated %d MiB, want at most 2.5x the %d MiB limit", alloc>>20, limit>>20)
	} else {
		t.Logf("one over-limit answer allocated %.1f MiB (limit 8 MiB)", float64(alloc)/(1<<20))
	}
}

// The caller check while waiting for the head shortens the read deadline;
// the body then gets the attempt's whole timeout again.
func TestSlowBodyGetsTheWholeTimeout(t *testing.T) {
	t.Parallel()
	up := testkit.NewFaultUpstream(t)
	up.SetDefault(testkit.Fault{Chunked: 4 * 32 << 10, ChunkEvery: 300 * time.Millisecond})
	gw := testkit.StartGateway(t, fmt.Sprintf(`
log: {access_log: false}
upstreams: {up: {url: %q, timeout: 10s}}
routes: {r: {path: "/{p:*}", upstream: up}}
`, up.URL))
	r := testkit.Do(t, "GET", gw.URL+"/slow", "")
	if r.Status != 200 || len(r.Body) != 4*32<<10 {
		t.Fatalf("slow body: %d, %d bytes: %.200s", r.Status, len(r.Body), r.Body)
	}
}

// The reproduction as a new user ran it: a provider (here Go's own
// net/http server, as Node's) closes keep-alive connections idle for 1 s;
// GET, wait 2 s, POST without an Idempotency-Key, three times. Every POST
// reaches the provider once and is answered 200.
func TestIdleClosingProviderGetWaitPost(t *testing.T) {
	t.Parallel()
	var posts atomic.Int32
	srv := &http.Server{
		IdleTimeout: time.Second,
		Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if r.Method == "POST" {
				posts.Add(1)
			}
			_, _ = io.Copy(io.Discard, r.Body)
			_, _ = w.Write([]byte("ok"))
		}),
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go func() { _ = srv.Serve(ln) }()
	t.Cleanup(func() { _ = srv.Close() })
	gw := testkit.StartGateway(t, fmt.Sprintf(`
log: {access_log: false}
upstreams: {up: {url: "http://%s"}}
routes: {r: {path: "/{p:*}", upstream: up}}
`, ln.Addr()))
	for i := range 3 {
		if r := testkit.Do(t, "GET", gw.URL+"/items", ""); r.Status != 200 {
			t.Fatalf("GET %d: %d %s", i, r.Status, r.Body)
		}
		time.Sleep(2 * time.Second)
		if r := testkit.Do(t, "POST", gw.URL+"/charge", `{"amount":1}`, "Content-Type", "application/json"); r.Status != 200 {
			t.Fatalf("POST %d after 2 s idle: %d %s", i, r.Status, r.Body)
		}
	}
	if n := posts.Load(); n != 3 {
		t.Fatalf("provider saw %d POSTs, want 3", n)
	}
	if v, _ := gw.Metrics(t).Value("sluice_upstream_connections_discarded_total", "upstream", "up", "reason", "stale"); v < 3 {
		t.Fatalf("stale connections discarded = %v, want at least 3 (one per POST)", v)
	}
}
