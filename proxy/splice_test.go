package proxy_test

import (
	"context"
	"crypto/sha256"
	"fmt"
	"io"
	"net"
	"net/http"
	"sync/atomic"
	"testing"
	"time"

	"github.com/sluice-gw/sluice/internal/testkit"
)

// slowDownload is a real net/http provider answering a 64 MiB body with its
// length, 256 KiB at a time every `every` (0: as fast as it can); gone
// counts answers whose caller (the gateway) went away before the end.
type slowDownload struct {
	URL     string
	gone    atomic.Int32
	written atomic.Int64 // body bytes the provider's writes have taken
}

const downloadSize = 64 << 20

func newSlowDownload(t *testing.T, every time.Duration) *slowDownload {
	t.Helper()
	d := &slowDownload{}
	block := make([]byte, 256<<10)
	for i := range block {
		block[i] = byte(i * 7)
	}
	d.URL = testkit.ServeHTTP(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Length", fmt.Sprint(downloadSize))
		for left := downloadSize; left > 0; left -= len(block) {
			n, err := w.Write(block)
			d.written.Add(int64(n))
			if err != nil {
				d.gone.Add(1)
				return
			}
			if every > 0 {
				w.(http.Flusher).Flush()
				select {
				case <-r.Context().Done():
					d.gone.Add(1)
					return
				case <-time.After(every):
				}
			}
		}
	}))
	return d
}

// A download framed by its length goes from the provider's socket to the
// caller's inside the kernel (splice) once the first read's bytes are
// passed on: every byte arrives, in order, and the provider connection is
// reused afterwards.
func TestDownloadArrivesWhole(t *testing.T) {
	t.Parallel()
	up := newSlowDownload(t, 0)
	gw := testkit.StartGateway(t, fmt.Sprintf(`
log: {access_log: false}
upstreams: {up: {url: %q, max_response_body: 1GiB}}
routes: {r: {path: "/{p:*}", upstream: up}}
`, up.URL))
	direct := sha256.New()
	want := get(t, up.URL+"/d", direct)
	for i := range 2 {
		h := sha256.New()
		if n := get(t, gw.URL+"/d", h); n != want || string(h.Sum(nil)) != string(direct.Sum(nil)) {
			t.Fatalf("download %d: %d bytes, digest differs: %v", i, n, string(h.Sum(nil)) != string(direct.Sum(nil)))
		}
	}
	testkit.Eventually(t, 5*time.Second, func() bool {
		v, _ := gw.Metrics(t).Value("sluice_upstream_streams_total", "upstream", "up", "outcome", "complete")
		return v == 2
	}, "both downloads complete")
	if v, _ := gw.Metrics(t).Value("sluice_streamed_bytes_total", "route", "r"); v != 2*downloadSize {
		t.Fatalf("streamed bytes = %v, want %d", v, 2*downloadSize)
	}
}

func get(t *testing.T, url string, h io.Writer) int64 {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	n, err := io.Copy(h, resp.Body)
	if err != nil || resp.StatusCode != 200 {
		t.Fatalf("%s: %d after %d bytes: %v", url, resp.StatusCode, n, err)
	}
	return n
}

// The faults of a download on the kernel path end it as on the copying
// path: a caller that leaves, the maximum duration, a drain. Each closes the
// provider's connection and is counted with its outcome.
func TestDownloadFaults(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name, cfg, outcome string
		end                func(gw *testkit.Gateway, c net.Conn)
	}{
		{"caller_gone", "", "caller_gone", func(_ *testkit.Gateway, c net.Conn) { c.Close() }},
		{"max_duration", ", max_stream_duration: 700ms", "max_duration", nil},
		{"drain", "", "drained", func(gw *testkit.Gateway, _ net.Conn) {
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			_ = gw.Gateway.Shutdown(ctx)
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			up := newSlowDownload(t, 50*time.Millisecond) // 64 MiB would take 13 s
			gw := testkit.StartGateway(t, fmt.Sprintf(`
log: {access_log: false}
upstreams: {up: {url: %q, max_response_body: 1GiB%s}}
routes: {r: {path: "/{p:*}", upstream: up}}
`, up.URL, tc.cfg))
			c := gw.Dial(t, 0)
			if _, err := io.WriteString(c, "GET /d HTTP/1.1\r\nHost: gw\r\n\r\n"); err != nil {
				t.Fatal(err)
			}
			buf := make([]byte, 1<<20) // read past the first provider read
			if _, err := io.ReadAtLeast(c, buf, 1<<20); err != nil {
				t.Fatalf("the download did not start: %v", err)
			}
			start := time.Now()
			if tc.end != nil {
				tc.end(gw, c)
			} else {
				go func() { _, _ = io.Copy(io.Discard, c) }()
			}
			testkit.Eventually(t, 5*time.Second, func() bool { return up.gone.Load() == 1 }, "the provider's connection is closed")
			if d := time.Since(start); d > 3*time.Second {
				t.Fatalf("the provider's connection was closed %v after the end, want within the caller check's half second", d)
			}
			if tc.outcome == "drained" {
				return // the metrics endpoint is gone with the gateway
			}
			waitStreamOutcome(t, gw, tc.outcome)
		})
	}
}

// A caller that reads one byte a second holds the download back instead of
// making the gateway buffer it: the provider's writes stall once the socket
// buffers between them are full, and when one write to the caller cannot
// finish within server.write_timeout the gateway gives up on it (caller_gone)
// and closes the provider's connection.
func TestSlowCallerBackpressure(t *testing.T) {
	t.Parallel()
	up := newSlowDownload(t, 0)
	gw := testkit.StartGateway(t, fmt.Sprintf(`
log: {access_log: false}
server: {write_timeout: 1s}
upstreams: {up: {url: %q, max_response_body: 1GiB}}
routes: {r: {path: "/{p:*}", upstream: up}}
`, up.URL))
	c := gw.Dial(t, 0)
	if err := c.(*net.TCPConn).SetReadBuffer(64 << 10); err != nil {
		t.Fatal(err)
	}
	if _, err := io.WriteString(c, "GET /d HTTP/1.1\r\nHost: gw\r\n\r\n"); err != nil {
		t.Fatal(err)
	}
	one := make([]byte, 1)
	var read int
	start := time.Now()
	for time.Since(start) < 15*time.Second {
		_ = c.SetReadDeadline(time.Now().Add(2 * time.Second))
		if _, err := c.Read(one); err != nil {
			break // the gateway closed the connection
		}
		read++
		if up.gone.Load() == 1 {
			break
		}
		time.Sleep(time.Second)
	}
	testkit.Eventually(t, 5*time.Second, func() bool { return up.gone.Load() == 1 }, "the provider's connection is closed")
	if w := up.written.Load(); w >= downloadSize/2 {
		t.Fatalf("the provider wrote %d of %d bytes to a caller that read %d: no backpressure", w, downloadSize, read)
	}
	waitStreamOutcome(t, gw, "caller_gone")
	t.Logf("caller read %d bytes one a second; the provider wrote %d KiB before the gateway gave up after %v",
		read, up.written.Load()>>10, time.Since(start).Round(time.Millisecond))
}
