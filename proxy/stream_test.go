package proxy_test

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/sluice-gw/sluice/internal/testkit"
)

// sseUpstream is a real net/http server that answers text/event-stream,
// one event every `every`, flushed one by one, n events (n < 0: until the
// caller leaves). left counts requests whose caller went away mid-stream.
type sseUpstream struct {
	URL  string
	left atomic.Int32
	done atomic.Int32
}

func newSSEUpstream(t *testing.T, n int, every time.Duration) *sseUpstream {
	t.Helper()
	u := &sseUpstream{}
	u.URL = testkit.ServeHTTP(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/event-stream")
		w.Header().Set("Cache-Control", "no-cache")
		w.WriteHeader(200)
		f := w.(http.Flusher)
		f.Flush()
		for i := 0; n < 0 || i < n; i++ {
			select {
			case <-r.Context().Done():
				u.left.Add(1)
				return
			case <-time.After(every):
			}
			fmt.Fprintf(w, "id: %d\ndata: {\"n\":%d}\n\n", i, i)
			f.Flush()
		}
		u.done.Add(1)
	}))
	return u
}

// readEvents reads SSE events from r, noting when each arrived.
func readEvents(r io.Reader) (events []string, at []time.Time, err error) {
	sc := bufio.NewScanner(r)
	var cur strings.Builder
	for sc.Scan() {
		line := sc.Text()
		if line == "" {
			if cur.Len() > 0 {
				events = append(events, cur.String())
				at = append(at, time.Now())
				cur.Reset()
			}
			continue
		}
		cur.WriteString(line + "\n")
	}
	return events, at, sc.Err()
}

// Server-sent events reach the caller one by one as the provider sends
// them, not when the stream ends.
func TestSSEEventsArriveOneByOne(t *testing.T) {
	t.Parallel()
	up := newSSEUpstream(t, 10, 100*time.Millisecond)
	gw := testkit.StartGateway(t, fmt.Sprintf(`
log: {access_log: false}
upstreams: {up: {url: %q}}
routes: {r: {path: "/{p:*}", upstream: up}}
`, up.URL))
	start := time.Now()
	resp, err := http.Get(gw.URL + "/events")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != 200 || resp.Header.Get("Content-Type") != "text/event-stream" {
		t.Fatalf("head: %d %q", resp.StatusCode, resp.Header.Get("Content-Type"))
	}
	events, at, err := readEvents(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	if len(events) != 10 || events[9] != "id: 9\ndata: {\"n\":9}\n" {
		t.Fatalf("got %d events, last %q", len(events), events[len(events)-1])
	}
	// The first event came about 100 ms in, not after the whole second.
	if d := at[0].Sub(start); d > 600*time.Millisecond {
		t.Fatalf("first event after %v: the stream was buffered", d)
	}
	if d := at[9].Sub(at[0]); d < 700*time.Millisecond {
		t.Fatalf("events 0..9 arrived within %v: not as sent, 100 ms apart", d)
	}
	waitStreamOutcome(t, gw, "complete")
	m := gw.Metrics(t)
	if v, _ := m.Value("sluice_streamed_bytes_total", "route", "r"); v < float64(10*len("id: 0\ndata: {\"n\":0}\n\n")) {
		t.Fatalf("streamed bytes = %v", v)
	}
	if v, _ := m.Value("sluice_open_streams"); v != 0 {
		t.Fatalf("open streams after the end = %v", v)
	}
}

// A download larger than stream_threshold goes through whole, streamed,
// with or without a Content-Length.
func TestLargeAnswersStream(t *testing.T) {
	t.Parallel()
	const size = 24 << 20
	url := testkit.ServeHTTP(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		chunk := []byte(strings.Repeat("x", 64<<10))
		if r.URL.Path == "/chunked" {
			for range size / len(chunk) {
				_, _ = w.Write(chunk)
			}
			return
		}
		w.Header().Set("Content-Length", fmt.Sprint(size))
		for range size / len(chunk) {
			_, _ = w.Write(chunk)
		}
	}))
	gw := testkit.StartGateway(t, fmt.Sprintf(`
log: {access_log: false}
upstreams: {up: {url: %q, max_response_body: 64MiB, stream_threshold: 1MiB}}
routes: {r: {path: "/{p:*}", upstream: up}}
`, url))
	for _, path := range []string{"/length", "/chunked"} {
		resp, err := http.Get(gw.URL + path)
		if err != nil {
			t.Fatal(err)
		}
		n, err := io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		if err != nil || resp.StatusCode != 200 || n != size {
			t.Fatalf("%s: %d, %d bytes, %v", path, resp.StatusCode, n, err)
		}
	}
	testkit.Eventually(t, 5*time.Second, func() bool {
		v, _ := gw.Metrics(t).Value("sluice_upstream_streams_total", "upstream", "up", "outcome", "complete")
		return v == 2
	}, "both answers were streamed")
	if v, _ := gw.Metrics(t).Value("sluice_body_memory_bytes"); v != 0 {
		t.Fatalf("body memory after the streams = %v", v)
	}
}

// rawUpstream answers every request with the bytes of answer (a head and
// whatever body), then waits hold and closes.
func rawUpstream(t *testing.T, answer string, hold time.Duration) (url string, closed *atomic.Int32) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	closed = new(atomic.Int32)
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				br := bufio.NewReader(c)
				if _, err := http.ReadRequest(br); err != nil {
					return
				}
				_, _ = io.WriteString(c, answer)
				_ = c.SetReadDeadline(time.Now().Add(hold))
				if _, err := br.ReadByte(); err == io.EOF {
					closed.Add(1) // the gateway closed its side
				}
			}()
		}
	}()
	return "http://" + ln.Addr().String(), closed
}

// A stream the provider breaks off (closes mid-body, sends a malformed
// chunk) or stalls: the caller gets the bytes so far and then a closed
// connection (the status was sent already); the stream is counted with its
// outcome and logged.
func TestStreamFaults(t *testing.T) {
	t.Parallel()
	head := "HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nTransfer-Encoding: chunked\r\n\r\n"
	event := "data: one\n\n"
	chunk := fmt.Sprintf("%x\r\n%s\r\n", len(event), event)
	for _, tc := range []struct {
		name, answer, outcome string
		hold                  time.Duration
	}{
		{"cut", head + chunk, "upstream_cut", 0},
		{"malformed", head + chunk + "zz\r\nnot a chunk\r\n", "upstream_cut", 2 * time.Second},
		{"stall", head + chunk, "idle_timeout", 10 * time.Second},
		// A long answer framed by its length (a download), cut and stalled.
		{"length-cut", "HTTP/1.1 200 OK\r\nContent-Length: 2097152\r\n\r\n" + event, "upstream_cut", 0},
		{"length-stall", "HTTP/1.1 200 OK\r\nContent-Length: 2097152\r\n\r\n" + event, "idle_timeout", 10 * time.Second},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			url, _ := rawUpstream(t, tc.answer, tc.hold)
			gw := testkit.StartGateway(t, fmt.Sprintf(`
log: {access_log: false}
upstreams: {up: {url: %q, stream_idle_timeout: 300ms}}
routes: {r: {path: "/{p:*}", upstream: up}}
`, url))
			resp, err := http.Get(gw.URL + "/events")
			if err != nil {
				t.Fatal(err)
			}
			body, err := io.ReadAll(resp.Body)
			resp.Body.Close()
			// A chunked stream is flushed chunk by chunk: the caller has every
			// byte passed on. A length-framed one is written through the
			// server's 4 KiB write buffer, whose last bytes a cut may drop.
			if resp.StatusCode != 200 || string(body) != event && !(strings.HasPrefix(tc.name, "length") && strings.HasPrefix(event, string(body))) {
				t.Fatalf("caller got %d %q", resp.StatusCode, body)
			}
			if err == nil {
				t.Fatalf("the caller's body ended cleanly; want a broken stream (the provider's fault cannot be hidden as a complete answer)")
			}
			waitStreamOutcome(t, gw, tc.outcome)
			if !strings.Contains(gw.Logs.String(), `"msg":"stream ended early"`) || !strings.Contains(gw.Logs.String(), tc.outcome) {
				t.Fatalf("no log line for the broken stream: %s", gw.Logs.String())
			}
		})
	}
}

// max_stream_duration ends a stream that never ends by itself.
func TestStreamMaxDuration(t *testing.T) {
	t.Parallel()
	up := newSSEUpstream(t, -1, 50*time.Millisecond)
	gw := testkit.StartGateway(t, fmt.Sprintf(`
log: {access_log: false}
upstreams: {up: {url: %q, max_stream_duration: 500ms}}
routes: {r: {path: "/{p:*}", upstream: up}}
`, up.URL))
	start := time.Now()
	resp, err := http.Get(gw.URL + "/events")
	if err != nil {
		t.Fatal(err)
	}
	events, _, _ := readEvents(resp.Body)
	resp.Body.Close()
	if d := time.Since(start); d > 3*time.Second || len(events) < 3 {
		t.Fatalf("stream lasted %v with %d events, want about 500ms", d, len(events))
	}
	waitStreamOutcome(t, gw, "max_duration")
	testkit.Eventually(t, 5*time.Second, func() bool { return up.left.Load() == 1 }, "the provider's connection is closed")
}

// A caller that leaves an idle stream closes the provider's connection
// within the caller check's half second, not at the idle timeout.
func TestCallerLeavingIdleStreamClosesUpstream(t *testing.T) {
	t.Parallel()
	up := newSSEUpstream(t, -1, time.Hour) // head, then silence
	gw := testkit.StartGateway(t, fmt.Sprintf(`
log: {access_log: false}
upstreams: {up: {url: %q}}
routes: {r: {path: "/{p:*}", upstream: up}}
`, up.URL))
	c := gw.Dial(t, 0)
	if _, err := io.WriteString(c, "GET /events HTTP/1.1\r\nHost: gw\r\n\r\n"); err != nil {
		t.Fatal(err)
	}
	head := make([]byte, 12)
	if _, err := io.ReadFull(c, head); err != nil || string(head) != "HTTP/1.1 200" {
		t.Fatalf("head %q %v", head, err)
	}
	testkit.Eventually(t, 5*time.Second, func() bool {
		v, _ := gw.Metrics(t).Value("sluice_open_streams")
		return v == 1
	}, "one open stream")
	left := time.Now()
	c.Close()
	testkit.Eventually(t, 5*time.Second, func() bool { return up.left.Load() == 1 }, "the provider's connection is closed")
	if d := time.Since(left); d > 2*time.Second {
		t.Fatalf("provider connection closed %v after the caller left", d)
	}
	waitStreamOutcome(t, gw, "caller_gone")
}

// Shutting the gateway down ends open streams at once.
func TestDrainEndsStreams(t *testing.T) {
	t.Parallel()
	up := newSSEUpstream(t, -1, 100*time.Millisecond)
	gw := testkit.StartGateway(t, fmt.Sprintf(`
log: {access_log: false}
upstreams: {up: {url: %q}}
routes: {r: {path: "/{p:*}", upstream: up}}
`, up.URL))
	resp, err := http.Get(gw.URL + "/events")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	got := make(chan int, 1)
	go func() { ev, _, _ := readEvents(resp.Body); got <- len(ev) }()
	time.Sleep(300 * time.Millisecond)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	start := time.Now()
	_ = gw.Gateway.Shutdown(ctx)
	select {
	case n := <-got:
		if n == 0 {
			t.Fatal("no event before the drain")
		}
	case <-time.After(3 * time.Second):
		t.Fatal("the stream outlived the drain")
	}
	if d := time.Since(start); d > 3*time.Second {
		t.Fatalf("shutdown took %v", d)
	}
	testkit.Eventually(t, 5*time.Second, func() bool { return up.left.Load() == 1 }, "the provider's connection is closed")
}

// A streamed body is still bounded by max_response_body: an endless one is
// cut there (the caller has its status already, so it gets a broken body),
// and counted too_large.
func TestStreamCutAtMaxResponseBody(t *testing.T) {
	t.Parallel()
	up := testkit.NewFaultUpstream(t)
	up.SetDefault(testkit.Fault{ChunkedForever: true})
	gw := testkit.StartGateway(t, fmt.Sprintf(`
log: {access_log: false}
upstreams: {up: {url: %q, max_response_body: 4MiB, stream_threshold: 256KiB}}
routes: {r: {path: "/{p:*}", upstream: up}}
`, up.URL))
	resp, err := http.Get(gw.URL + "/endless")
	if err != nil {
		t.Fatal(err)
	}
	n, err := io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 || err == nil || n > 4<<20 || n < 3<<20 {
		t.Fatalf("caller got %d, %d bytes, %v; want 200, a broken body of at most 4 MiB", resp.StatusCode, n, err)
	}
	waitStreamOutcome(t, gw, "too_large")
	if h := up.Hits(); h != 1 {
		t.Fatalf("provider asked %d times, want 1", h)
	}
}

// The cache passes a streamed answer on without storing it (storing would
// hold it whole in memory); a short one on the same route is stored.
func TestCachePassesStreamsThrough(t *testing.T) {
	t.Parallel()
	var hits atomic.Int32
	url := testkit.ServeHTTP(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		hits.Add(1)
		w.Header().Set("Cache-Control", "public, max-age=600")
		if r.URL.Path == "/events" {
			w.Header().Set("Content-Type", "text/event-stream")
			w.(http.Flusher).Flush() // chunked, as event streams are
			_, _ = io.WriteString(w, "data: a\n\n")
			return
		}
		_, _ = io.WriteString(w, "short")
	}))
	gw := testkit.StartGateway(t, fmt.Sprintf(`
log: {access_log: false}
upstreams: {up: {url: %q}}
routes: {r: {path: "/{p:*}", upstream: up, plugins: {cache: {}}}}
`, url))
	for range 2 {
		r := testkit.Do(t, "GET", gw.URL+"/events", "")
		if r.Status != 200 || string(r.Body) != "data: a\n\n" {
			t.Fatalf("event stream: %d %q", r.Status, r.Body)
		}
	}
	if n := hits.Load(); n != 2 {
		t.Fatalf("provider asked %d times for the streamed answer, want 2 (never stored)", n)
	}
	for range 2 {
		if r := testkit.Do(t, "GET", gw.URL+"/short", ""); r.Status != 200 || string(r.Body) != "short" {
			t.Fatalf("short answer: %d %q", r.Status, r.Body)
		}
	}
	if n := hits.Load(); n != 3 {
		t.Fatalf("provider asked %d times in all, want 3 (the short answer stored)", n)
	}
}

// normalize_errors rewrites a streamed error answer (longer than
// stream_threshold), reading no more than max_parse of it.
func TestNormalizeErrorsReadsAStreamedErrorUpToMaxParse(t *testing.T) {
	t.Parallel()
	pad := strings.Repeat(" ", 300<<10)
	body := `{"error":{"message":"quota gone","code":"Q1"}}` + pad
	url := testkit.ServeHTTP(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		w.Header().Set("Content-Length", fmt.Sprint(len(body)))
		w.WriteHeader(500)
		_, _ = io.WriteString(w, body)
	}))
	for _, tc := range []struct{ maxParse, detail, outcome string }{
		{"1MiB", "quota gone", "complete"},                                       // read to its end
		{"64KiB", "upstream up answered 500 Internal Server Error", "discarded"}, // not parsed, rest dropped
	} {
		gw := testkit.StartGateway(t, fmt.Sprintf(`
log: {access_log: false}
upstreams: {up: {url: %q, stream_threshold: 64KiB}}
routes: {r: {path: "/{p:*}", upstream: up, plugins: {normalize_errors: {message: "/error/message", code: "/error/code", max_parse: %s}}}}
`, url, tc.maxParse))
		r := testkit.Do(t, "GET", gw.URL+"/x", "")
		p := testkit.WantProblem(t, r, 500, "upstream_error")
		if p["detail"] != tc.detail {
			t.Fatalf("max_parse %s: detail %q, want %q", tc.maxParse, p["detail"], tc.detail)
		}
		waitStreamOutcome(t, gw, tc.outcome)
	}
}

// An HTTP/1.0 caller cannot read chunked framing: an event stream (no
// length) reaches it read whole, with its length, not chunked.
func TestStreamToHTTP10Caller(t *testing.T) {
	t.Parallel()
	up := newSSEUpstream(t, 3, 20*time.Millisecond)
	gw := testkit.StartGateway(t, fmt.Sprintf(`
log: {access_log: false}
upstreams: {up: {url: %q}}
routes: {r: {path: "/{p:*}", upstream: up}}
`, up.URL))
	c := gw.Dial(t, 10*time.Second)
	if _, err := io.WriteString(c, "GET /events HTTP/1.0\r\nHost: gw\r\n\r\n"); err != nil {
		t.Fatal(err)
	}
	raw, _ := io.ReadAll(c)
	want := "\r\n\r\nid: 0\ndata: {\"n\":0}\n\nid: 1\ndata: {\"n\":1}\n\nid: 2\ndata: {\"n\":2}\n\n"
	if !strings.HasSuffix(string(raw), want) || strings.Contains(string(raw), "Transfer-Encoding") {
		t.Fatalf("HTTP/1.0 caller got %q", raw)
	}
}

// A stream that ends after a silence longer than server.write_timeout
// still ends cleanly: the caller's write deadline is renewed for the last
// chunk, not only for data.
func TestStreamEndsCleanlyAfterSilence(t *testing.T) {
	t.Parallel()
	url := testkit.ServeHTTP(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/event-stream")
		_, _ = io.WriteString(w, "data: a\n\n")
		w.(http.Flusher).Flush()
		time.Sleep(700 * time.Millisecond)
	}))
	gw := testkit.StartGateway(t, fmt.Sprintf(`
log: {access_log: false}
server: {write_timeout: 300ms}
upstreams: {up: {url: %q}}
routes: {r: {path: "/{p:*}", upstream: up}}
`, url))
	resp, err := http.Get(gw.URL + "/events")
	if err != nil {
		t.Fatal(err)
	}
	body, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	if err != nil || string(body) != "data: a\n\n" {
		t.Fatalf("caller got %q, %v; want the whole stream, ended cleanly", body, err)
	}
}

// waitStreamOutcome waits until the gateway has counted one stream of the
// upstream "up" that ended with outcome.
func waitStreamOutcome(t *testing.T, gw *testkit.Gateway, outcome string) {
	t.Helper()
	testkit.Eventually(t, 5*time.Second, func() bool {
		v, _ := gw.Metrics(t).Value("sluice_upstream_streams_total", "upstream", "up", "outcome", outcome)
		return v == 1
	}, "one stream counted "+outcome)
}
