// Command stream measures response streaming through the gateway against a
// direct connection to the same provider, on loopback: a large download
// (throughput and the gateway's resident memory growth), server-sent events
// (the latency each event gains through the gateway, p50/p99) and many
// concurrent idle event streams (the gateway's memory per stream). It
// starts the provider in this process, runs the given sluice binary
// against it and samples the gateway's VmRSS from /proc (Linux).
//
//	go build -o /tmp/sluice ./cmd/sluice
//	go run ./bench/stream -sluice /tmp/sluice -download 1GiB -events 1000 -streams 1000
package main

import (
	"bufio"
	"flag"
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

func main() {
	bin := flag.String("sluice", "", "path of the sluice binary to measure")
	download := flag.Int64("download", 1<<30, "bytes of the download (0: skip)")
	events := flag.Int("events", 1000, "server-sent events in the latency run (0: skip)")
	every := flag.Duration("every", 10*time.Millisecond, "interval between events")
	streams := flag.Int("streams", 1000, "concurrent idle event streams (0: skip)")
	flag.Parse()
	if *bin == "" {
		log.Fatal("-sluice is required")
	}

	up, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		log.Fatal(err)
	}
	var held atomic.Int32
	go func() { _ = http.Serve(up, provider(*every, &held)) }()
	direct := "http://" + up.Addr().String()

	gwAddr, adminAddr := freeAddr(), freeAddr()
	dir, err := os.MkdirTemp("", "streambench")
	if err != nil {
		log.Fatal(err)
	}
	defer os.RemoveAll(dir)
	cfg := fmt.Sprintf(`server: {listen: %q}
admin: {listen: %q}
log: {access_log: false, level: error}
upstreams: {up: {url: %q, max_response_body: 4GiB, timeout: 60s, max_conns: 20000}}
routes: {r: {path: "/{p:*}", upstream: up}}
`, gwAddr, adminAddr, direct)
	file := filepath.Join(dir, "sluice.yaml")
	if err := os.WriteFile(file, []byte(cfg), 0o600); err != nil {
		log.Fatal(err)
	}
	cmd := exec.Command(*bin, "-config", file)
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		log.Fatal(err)
	}
	defer func() { _ = cmd.Process.Kill(); _ = cmd.Wait() }()
	waitUp(gwAddr)
	gw := "http://" + gwAddr
	pid := cmd.Process.Pid
	fmt.Printf("gateway pid %d, rss at start %d KiB\n", pid, rssKiB(pid))

	if *download > 0 {
		for _, target := range []struct{ name, url string }{{"direct", direct}, {"sluice", gw}} {
			base := rssKiB(pid)
			peak := base
			stop := sample(pid, &peak)
			start := time.Now()
			n := get(target.url + "/download?n=" + strconv.FormatInt(*download, 10))
			d := time.Since(start)
			stop()
			if n != *download {
				log.Fatalf("%s download: %d bytes, want %d", target.name, n, *download)
			}
			fmt.Printf("download %s: %d MiB in %v = %.0f MiB/s; gateway rss %d -> peak %d KiB (growth %d KiB)\n",
				target.name, n>>20, d.Round(time.Millisecond), float64(n)/(1<<20)/d.Seconds(), base, peak, peak-base)
		}
	}

	if *events > 0 {
		lat := map[string][]time.Duration{}
		for _, target := range []struct{ name, url string }{{"direct", direct}, {"sluice", gw}} {
			lat[target.name] = sseLatencies(target.url+"/events?n="+strconv.Itoa(*events), *events)
		}
		d, s := lat["direct"], lat["sluice"]
		fmt.Printf("sse %d events every %v: direct p50 %v p99 %v; sluice p50 %v p99 %v; added p50 %v p99 %v\n",
			*events, *every, pct(d, 50), pct(d, 99), pct(s, 50), pct(s, 99), pct(s, 50)-pct(d, 50), pct(s, 99)-pct(d, 99))
	}

	if *streams > 0 {
		base := rssKiB(pid)
		var conns []net.Conn
		for i := range *streams {
			c, err := net.Dial("tcp", gwAddr)
			if err != nil {
				log.Fatalf("stream %d: %v", i, err)
			}
			conns = append(conns, c)
			if _, err := io.WriteString(c, "GET /idle HTTP/1.1\r\nHost: gw\r\n\r\n"); err != nil {
				log.Fatal(err)
			}
		}
		ok := 0
		for _, c := range conns {
			_ = c.SetReadDeadline(time.Now().Add(30 * time.Second))
			br := bufio.NewReader(c)
			line, err := br.ReadString('\n')
			if err == nil && strings.HasPrefix(line, "HTTP/1.1 200") {
				ok++
			}
		}
		time.Sleep(time.Second)
		rss := rssKiB(pid)
		fmt.Printf("idle streams: %d open (%d at the provider); gateway rss %d -> %d KiB: %.1f KiB per stream\n",
			ok, held.Load(), base, rss, float64(rss-base)/float64(max(ok, 1)))
		for _, c := range conns {
			c.Close()
		}
		deadline := time.Now().Add(10 * time.Second)
		for held.Load() > 0 && time.Now().Before(deadline) {
			time.Sleep(50 * time.Millisecond)
		}
		fmt.Printf("after the callers left: %d provider streams still held after %v\n", held.Load(), 10*time.Second-time.Until(deadline).Round(time.Millisecond))
	}
}

// provider answers /download?n= with n bytes (Content-Length), /events?n=
// with n events, each carrying the time it was sent, and /idle with an
// event stream that stays silent until the caller leaves.
func provider(every time.Duration, held *atomic.Int32) http.Handler {
	block := []byte(strings.Repeat("x", 256<<10))
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		n, _ := strconv.ParseInt(r.URL.Query().Get("n"), 10, 64)
		switch r.URL.Path {
		case "/download":
			w.Header().Set("Content-Length", strconv.FormatInt(n, 10))
			for left := n; left > 0; {
				k := min(left, int64(len(block)))
				if _, err := w.Write(block[:k]); err != nil {
					return
				}
				left -= k
			}
		case "/events":
			w.Header().Set("Content-Type", "text/event-stream")
			f := w.(http.Flusher)
			f.Flush()
			for i := range n {
				time.Sleep(every)
				fmt.Fprintf(w, "id: %d\ndata: %d\n\n", i, time.Now().UnixNano())
				f.Flush()
			}
		case "/idle":
			held.Add(1)
			defer held.Add(-1)
			w.Header().Set("Content-Type", "text/event-stream")
			w.(http.Flusher).Flush()
			<-r.Context().Done()
		}
	})
}

// sseLatencies reads n events from url and returns, for each, the time from
// the provider writing it to this caller having it whole.
func sseLatencies(url string, n int) []time.Duration {
	resp, err := http.Get(url)
	if err != nil {
		log.Fatal(err)
	}
	defer resp.Body.Close()
	out := make([]time.Duration, 0, n)
	sc := bufio.NewScanner(resp.Body)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), "data: "); ok {
			sent, _ := strconv.ParseInt(v, 10, 64)
			out = append(out, time.Duration(time.Now().UnixNano()-sent))
		}
	}
	if len(out) != n {
		log.Fatalf("%s: %d events, want %d (%v)", url, len(out), n, sc.Err())
	}
	return out
}

func pct(d []time.Duration, p int) time.Duration {
	s := slices.Clone(d)
	slices.Sort(s)
	return s[(len(s)-1)*p/100].Round(time.Microsecond)
}

func get(url string) int64 {
	resp, err := http.Get(url)
	if err != nil {
		log.Fatal(err)
	}
	defer resp.Body.Close()
	n, err := io.Copy(io.Discard, resp.Body)
	if err != nil || resp.StatusCode != 200 {
		log.Fatalf("%s: %d after %d bytes: %v", url, resp.StatusCode, n, err)
	}
	return n
}

// sample records the highest VmRSS of pid in *peak every 10 ms until stop.
func sample(pid int, peak *int64) (stop func()) {
	done := make(chan struct{})
	var wg sync.WaitGroup
	wg.Go(func() {
		for {
			select {
			case <-done:
				return
			case <-time.After(10 * time.Millisecond):
				*peak = max(*peak, rssKiB(pid))
			}
		}
	})
	return func() { close(done); wg.Wait() }
}

// rssKiB is the process's resident set size now, from /proc.
func rssKiB(pid int) int64 {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return -1
	}
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, "VmRSS:"); ok {
			n, _ := strconv.ParseInt(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(v), "kB")), 10, 64)
			return n
		}
	}
	return -1
}

func freeAddr() string {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		log.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().String()
}

func waitUp(addr string) {
	for range 100 {
		if c, err := net.Dial("tcp", addr); err == nil {
			c.Close()
			return
		}
		time.Sleep(50 * time.Millisecond)
	}
	log.Fatal("the gateway did not start")
}
