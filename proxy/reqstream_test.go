package proxy_test

import (
	"bufio"
	"crypto/sha256"
	"encoding/json"
	"fmt"
	"hash"
	"io"
	"net"
	"net/http"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/sluice-gw/sluice/internal/testkit"
)

// bodySink is a real net/http upstream that reads each request body to the
// end and answers with its length and SHA-256 (status from ?status=).
type bodySink struct {
	URL  string
	mu   sync.Mutex
	seen []string // "n sha" per request
}

func newBodySink(t *testing.T) *bodySink {
	t.Helper()
	s := &bodySink{}
	s.URL = testkit.ServeHTTP(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		h := sha256.New()
		n, err := io.Copy(h, r.Body)
		rec := fmt.Sprintf("%d %x", n, h.Sum(nil))
		if err != nil {
			rec = "error " + err.Error()
		}
		s.mu.Lock()
		s.seen = append(s.seen, rec)
		s.mu.Unlock()
		if st := r.URL.Query().Get("status"); st != "" {
			var code int
			fmt.Sscan(st, &code)
			w.WriteHeader(code)
		}
		_, _ = io.WriteString(w, rec)
	}))
	return s
}

func (s *bodySink) requests() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]string(nil), s.seen...)
}

// patternReader yields n bytes of a fixed pattern, hashing what it yields.
type patternReader struct {
	left int64
	h    hash.Hash
}

func newPattern(n int64) *patternReader { return &patternReader{left: n, h: sha256.New()} }

func (p *patternReader) Read(b []byte) (int, error) {
	if p.left <= 0 {
		return 0, io.EOF
	}
	if int64(len(b)) > p.left {
		b = b[:p.left]
	}
	for i := range b {
		b[i] = byte('a' + (p.left-int64(i))%26)
	}
	p.left -= int64(len(b))
	p.h.Write(b)
	return len(b), nil
}

// onlyReader hides the length of a reader, so net/http sends it chunked.
type onlyReader struct{ io.Reader }

// A 64 MiB body reaches a real upstream intact (sent with a length and
// chunked), while the gateway's heap grows far less than the body.
func TestLargeRequestBodyIsStreamed(t *testing.T) {
	sink := newBodySink(t)
	gw := testkit.StartGateway(t, fmt.Sprintf(`
log: {access_log: false}
server: {max_request_body: 128MiB, max_body_memory: 256MiB, stream_request_threshold: 1MiB}
upstreams: {up: {url: %q, timeout: 60s}}
routes: {r: {path: "/{p:*}", upstream: up}}
`, sink.URL))
	const size = 64 << 20
	for _, chunked := range []bool{false, true} {
		runtime.GC()
		var before runtime.MemStats
		runtime.ReadMemStats(&before)
		peak := before.HeapInuse
		stop := make(chan struct{})
		var wg sync.WaitGroup
		wg.Add(1)
		go func() { // sample the heap while the body passes
			defer wg.Done()
			var m runtime.MemStats
			// Every millisecond: a body held in memory would stay there far
			// longer. (Back to back, ReadMemStats stops the world so often
			// that the upload itself crawls: 2-4x slower, and under -race
			// past the client's timeout once the deadline sweeper's ticks
			// joined the contention.)
			tick := time.NewTicker(time.Millisecond)
			defer tick.Stop()
			for {
				select {
				case <-stop:
					return
				case <-tick.C:
				}
				runtime.ReadMemStats(&m)
				if m.HeapInuse > peak {
					peak = m.HeapInuse
				}
			}
		}()
		src := newPattern(size)
		var body io.Reader = src
		if chunked {
			body = onlyReader{src}
		}
		req, _ := http.NewRequest("POST", gw.URL+"/upload", body)
		if !chunked {
			req.ContentLength = size
		}
		resp, err := testkit.Client.Do(req)
		close(stop)
		wg.Wait()
		if err != nil {
			t.Fatal(err)
		}
		got, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		want := fmt.Sprintf("%d %x", size, src.h.Sum(nil))
		if resp.StatusCode != 200 || string(got) != want {
			t.Fatalf("chunked=%v: %d %q, want 200 %q", chunked, resp.StatusCode, got, want)
		}
		growth := int64(peak) - int64(before.HeapInuse)
		t.Logf("chunked=%v: 64 MiB passed; heap in use grew by at most %.1f MiB", chunked, float64(growth)/(1<<20))
		if growth > 16<<20 {
			t.Fatalf("chunked=%v: heap grew by %d bytes for a %d-byte body: it was buffered", chunked, growth, size)
		}
	}
	if v, _ := gw.Metrics(t).Value("sluice_body_memory_bytes"); v != 0 {
		t.Fatalf("body memory after the uploads = %v", v)
	}
}

// max_request_body holds for streamed bodies: a length over it is refused
// before anything is read or forwarded; a chunked body going over it is cut
// off with 413.
func TestStreamedRequestBodyOverMax(t *testing.T) {
	sink := newBodySink(t)
	gw := testkit.StartGateway(t, fmt.Sprintf(`
log: {access_log: false}
server: {max_request_body: 4MiB, stream_request_threshold: 64KiB}
upstreams: {up: {url: %q}}
routes: {r: {path: "/{p:*}", upstream: up}}
`, sink.URL))

	// With request streaming on, the server starts reading the body before
	// the 413, so the client may see the connection reset while it still
	// writes; when it gets the answer, it is the 413.
	req0, _ := http.NewRequest("POST", gw.URL+"/len", newPattern(5<<20))
	req0.ContentLength = 5 << 20
	if resp0, err := testkit.Client.Do(req0); err == nil {
		b0, _ := io.ReadAll(resp0.Body)
		resp0.Body.Close()
		wantProblem(t, resp0.StatusCode, b0, 413, "request_too_large", "server.max_request_body")
	} else {
		t.Logf("the gateway closed while the client wrote: %v", err)
	}
	if n := len(sink.requests()); n != 0 {
		t.Fatalf("a body announced over max_request_body reached the upstream (%d requests)", n)
	}

	req, _ := http.NewRequest("POST", gw.URL+"/chunked", onlyReader{newPattern(5 << 20)})
	resp, err := testkit.Client.Do(req)
	if err == nil { // the gateway may close while the client still writes
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		wantProblem(t, resp.StatusCode, b, 413, "request_too_large", "cut off")
	}
	testkit.Eventually(t, 5e9, func() bool { return len(sink.requests()) == 1 }, "the upstream saw the cut-off body")
	if got := sink.requests()[0]; strings.HasPrefix(got, "5242880 ") {
		t.Fatalf("the upstream received the whole over-limit body: %s", got)
	}
	// the gateway still serves
	r := testkit.Do(t, "POST", gw.URL+"/after", "small")
	if r.Status != 200 {
		t.Fatalf("after: %d %s", r.Status, r.Body)
	}
}

func wantProblem(t *testing.T, status int, body []byte, wantStatus int, code, detailHas string) {
	t.Helper()
	var p struct{ Code, Detail string }
	if err := json.Unmarshal(body, &p); err != nil || status != wantStatus || p.Code != code || !strings.Contains(p.Detail, detailHas) {
		t.Fatalf("got %d %s; want %d %s with %q in the detail", status, body, wantStatus, code, detailHas)
	}
}

// Bodies at or under the threshold are read into memory as before: a plugin
// reading the body (contract) checks them, and retry resends them. Above it,
// retry does not resend and says why.
func TestStreamedRequestBodyIsNotRetried(t *testing.T) {
	sink := newBodySink(t)
	gw := testkit.StartGateway(t, fmt.Sprintf(`
log: {access_log: false}
server: {stream_request_threshold: 1KiB}
upstreams:
  up:
    url: %q
    plugins: {retry: {attempts: 3, backoff: 1ms, methods: [POST], on: [503], budget: 1, min_retries: 100}}
routes: {r: {path: "/{p:*}", upstream: up}}
`, sink.URL))
	small := strings.Repeat("s", 1024) // exactly the threshold: buffered
	r := testkit.Do(t, "POST", gw.URL+"/x?status=503", small, "Idempotency-Key", "k1")
	if r.Status != 503 || len(sink.requests()) != 3 {
		t.Fatalf("small body: %d after %d attempts, want 503 after 3", r.Status, len(sink.requests()))
	}
	for _, s := range sink.requests() {
		if !strings.HasPrefix(s, "1024 ") {
			t.Fatalf("a resent small body arrived as %q", s)
		}
	}

	big := strings.Repeat("b", 1025) // one byte over: streamed, sent once
	r = testkit.Do(t, "POST", gw.URL+"/x?status=503", big, "Idempotency-Key", "k2")
	if r.Status != 503 || len(sink.requests()) != 4 {
		t.Fatalf("streamed body: %d after %d attempts in all, want 503 after 1 more", r.Status, len(sink.requests()))
	}
	if got := sink.requests()[3]; !strings.HasPrefix(got, "1025 ") {
		t.Fatalf("streamed body arrived as %q", got)
	}
	if v, _ := gw.Metrics(t).Value("sluice_retries_not_sent_total", "upstream", "up", "reason", "body_streamed"); v != 1 {
		t.Fatalf("sluice_retries_not_sent_total{body_streamed} = %v, want 1", v)
	}
}

// When the attempt with a streamed body fails with a gateway error that
// retry.on would retry, the problem+json says why it was not retried.
func TestStreamedRequestBodyRetryRefusalInProblem(t *testing.T) {
	gw := testkit.StartGateway(t, fmt.Sprintf(`
log: {access_log: false}
server: {stream_request_threshold: 1KiB}
upstreams:
  up:
    url: "http://%s"
    plugins: {retry: {attempts: 3, backoff: 1ms, methods: [POST], on: [conn_error], budget: 1, min_retries: 100}}
routes: {r: {path: "/{p:*}", upstream: up}}
`, testkit.ClosedAddr(t)))
	r := testkit.Do(t, "POST", gw.URL+"/x", strings.Repeat("b", 4096), "Idempotency-Key", "k")
	wantProblem(t, r.Status, r.Body, 502, "upstream_unreachable", "not retried: the request body was streamed")
	if v, _ := gw.Metrics(t).Value("sluice_retries_not_sent_total", "upstream", "up", "reason", "body_streamed"); v != 1 {
		t.Fatalf("sluice_retries_not_sent_total{body_streamed} = %v, want 1", v)
	}
	// a small body is retried as before (and fails the same way, 3 attempts)
	r = testkit.Do(t, "POST", gw.URL+"/x", "small", "Idempotency-Key", "k2")
	wantProblem(t, r.Status, r.Body, 502, "upstream_unreachable", "")
	if strings.Contains(string(r.Body), "not retried") {
		t.Fatalf("small body: %s", r.Body)
	}
	if v, _ := gw.Metrics(t).Value("sluice_retries_total", "upstream", "up", "reason", "conn_error"); v != 2 {
		t.Fatalf("sluice_retries_total{conn_error} = %v, want 2", v)
	}
}

// stream_request_threshold: 0 turns request streaming off: bodies are read
// whole as before, and max_request_body is enforced by the server.
func TestRequestStreamingOff(t *testing.T) {
	sink := newBodySink(t)
	gw := testkit.StartGateway(t, fmt.Sprintf(`
log: {access_log: false}
server: {max_request_body: 2MiB, stream_request_threshold: 0}
upstreams: {up: {url: %q}}
routes: {r: {path: "/{p:*}", upstream: up}}
`, sink.URL))
	body := strings.Repeat("z", 1500<<10)
	r := testkit.Do(t, "POST", gw.URL+"/x", body)
	if r.Status != 200 || !strings.HasPrefix(string(r.Body), fmt.Sprintf("%d ", len(body))) {
		t.Fatalf("%d %.80s", r.Status, r.Body)
	}
	status, b := postHeadOnly(t, gw.URL, "/x", 3<<20)
	wantProblem(t, status, b, 413, "request_too_large", "server.max_request_body")
}

// postHeadOnly sends the head of a POST announcing length body bytes, and
// none of the body, and reads the answer: a body announced over
// max_request_body must be refused before any of it is read. (Sending the
// body too makes the test racy: the gateway answers and closes while the
// client still writes, and the client may see the reset before the answer.)
func postHeadOnly(t *testing.T, base, path string, length int) (int, []byte) {
	t.Helper()
	conn, err := net.Dial("tcp", strings.TrimPrefix(base, "http://"))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	fmt.Fprintf(conn, "POST %s HTTP/1.1\r\nHost: gateway\r\nContent-Type: application/octet-stream\r\nContent-Length: %d\r\n\r\n", path, length)
	resp, err := http.ReadResponse(bufio.NewReader(conn), nil)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, b
}

// With request streaming on, a caller that announces an over-limit body and
// asks to continue gets the 413 from its head alone, without sending a byte
// of the body, and nothing reaches the provider (the streamed read must not
// hold the caller until server.read_timeout).
func TestStreamedRequestOverMaxRefusedBeforeContinue(t *testing.T) {
	sink := newBodySink(t)
	gw := testkit.StartGateway(t, fmt.Sprintf(`
log: {access_log: false}
server: {max_request_body: 4MiB, stream_request_threshold: 64KiB, read_timeout: 30s}
upstreams: {up: {url: %q}}
routes: {r: {path: "/{p:*}", upstream: up}}
`, sink.URL))
	c := gw.Dial(t, 10*time.Second)
	if _, err := io.WriteString(c, "POST /up HTTP/1.1\r\nHost: gw\r\nContent-Length: 5242880\r\nExpect: 100-continue\r\n\r\n"); err != nil {
		t.Fatal(err)
	}
	resp, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil {
		t.Fatalf("no answer to the head: %v", err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	wantProblem(t, resp.StatusCode, b, 413, "request_too_large", "server.max_request_body")
	if n := len(sink.requests()); n != 0 {
		t.Fatalf("the upstream saw %d requests", n)
	}
}
