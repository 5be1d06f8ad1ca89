// Command stream measures streaming through the gateway against a direct
// connection to the same provider and against nginx, on loopback: a large
// download and a large upload (throughput and the proxy's resident memory
// growth), server-sent events (the latency each event gains through the
// proxy, p50/p99) and many concurrent idle event streams (the gateway's
// memory per stream). It starts the provider in this process, runs the
// given sluice binary (and nginx with buffering off, if installed) against
// it and samples resident memory from /proc (Linux).
//
//	go build -o /tmp/sluice ./cmd/sluice
//	go run ./bench/stream -sluice /tmp/sluice -download 1073741824 -upload 1073741824 -events 1000 -streams 1000
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

	"github.com/sluice-gw/sluice/bench/internal/loopback"
)

func main() {
	bin := flag.String("sluice", "", "path of the sluice binary to measure")
	download := flag.Int64("download", 1<<30, "bytes of the download (0: skip)")
	events := flag.Int("events", 1000, "server-sent events in the latency run (0: skip)")
	every := flag.Duration("every", 10*time.Millisecond, "interval between events")
	streams := flag.Int("streams", 1000, "concurrent idle event streams (0: skip)")
	upload := flag.Int64("upload", 1<<30, "bytes of the upload (0: skip)")
	nginxBin := flag.String("nginx", "nginx", "nginx binary to measure beside the gateway (\"\": skip; Debian package nginx-light)")
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
	cfg := fmt.Sprintf(`server: {listen: %q, max_request_body: 4GiB, stream_request_threshold: 1MiB, max_body_memory: 64MiB, read_timeout: 60s}
admin: {listen: %q}
log: {access_log: false, level: error}
upstreams: {up: {url: %q, max_response_body: 4GiB, timeout: 60s, max_conns: 20000}}
routes: {r: {path: "/{p:*}", upstream: up, deadline: 600s}}
`, gwAddr, adminAddr, direct)
	cmd, err := loopback.StartSluice(*bin, dir, cfg, gwAddr)
	if err != nil {
		log.Fatal(err)
	}
	defer func() { _ = cmd.Process.Kill(); _ = cmd.Wait() }()
	gw := "http://" + gwAddr
	pid := cmd.Process.Pid
	fmt.Printf("gateway pid %d, rss at start %d KiB\n", pid, rssKiB(pid))

	targets := []target{{name: "direct", url: direct}, {name: "sluice", url: gw, pid: pid}}
	if *nginxBin != "" {
		if path, err := exec.LookPath(*nginxBin); err != nil {
			fmt.Printf("nginx: %v; measuring without it (apt-get install -y nginx-light)\n", err)
		} else {
			ng, stop := startNginx(path, dir, up.Addr().String())
			defer stop()
			targets = append(targets, ng)
		}
	}

	for _, run := range []struct {
		name string
		n    int64
		do   func(url string, n int64) int64
	}{{"download", *download, func(url string, n int64) int64 { return get(url + "/download?n=" + strconv.FormatInt(n, 10)) }},
		{"upload", *upload, post}} {
		if run.n <= 0 {
			continue
		}
		var directTook time.Duration
		for _, tg := range targets {
			base := tg.rss()
			peak := base
			cpu0 := tg.cpu()
			stop := sample(tg.rss, &peak)
			start := time.Now()
			n := run.do(tg.url, run.n)
			d := time.Since(start)
			stop()
			cpu := tg.cpu() - cpu0
			if n != run.n {
				log.Fatalf("%s %s: %d bytes, want %d", tg.name, run.name, n, run.n)
			}
			if tg.pid == 0 {
				directTook = d
				fmt.Printf("%s %s: %d MiB in %v = %.0f MiB/s\n", run.name, tg.name, n>>20, d.Round(time.Millisecond), float64(n)/(1<<20)/d.Seconds())
				continue
			}
			fmt.Printf("%s %s: %d MiB in %v = %.0f MiB/s (%.2fx direct's time); its CPU %v (%.2f s per GiB); rss %d -> peak %d KiB (growth %d KiB)\n",
				run.name, tg.name, n>>20, d.Round(time.Millisecond), float64(n)/(1<<20)/d.Seconds(), d.Seconds()/directTook.Seconds(),
				cpu, cpu.Seconds()/(float64(n)/(1<<30)), base, peak, peak-base)
		}
	}

	if *events > 0 {
		var d []time.Duration
		for _, tg := range targets {
			lat := sseLatencies(tg.url+"/events?n="+strconv.Itoa(*events), *events)
			if tg.pid == 0 {
				d = lat
				fmt.Printf("sse %d events every %v: direct p50 %v p99 %v\n", *events, *every, pct(d, 50), pct(d, 99))
				continue
			}
			fmt.Printf("sse %d events every %v: %s p50 %v p99 %v; added over direct p50 %v p99 %v\n",
				*events, *every, tg.name, pct(lat, 50), pct(lat, 99), pct(lat, 50)-pct(d, 50), pct(lat, 99)-pct(d, 99))
		}
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
		case "/upload":
			n, err := io.Copy(io.Discard, r.Body)
			if err != nil {
				http.Error(w, err.Error(), http.StatusBadRequest)
				return
			}
			fmt.Fprint(w, n)
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

// post uploads n bytes (with a Content-Length) to url's /upload and
// returns how many the provider says it read.
func post(url string, n int64) int64 {
	req, err := http.NewRequest("POST", url+"/upload", io.LimitReader(zeros{}, n))
	if err != nil {
		log.Fatal(err)
	}
	req.ContentLength = n
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		log.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	got, err := strconv.ParseInt(string(b), 10, 64)
	if err != nil || resp.StatusCode != 200 {
		log.Fatalf("%s/upload: %d %s", url, resp.StatusCode, b)
	}
	return got
}

type zeros struct{}

func (zeros) Read(p []byte) (int, error) {
	clear(p)
	return len(p), nil
}

// target is what a run measures: the provider directly (pid 0), the
// gateway, or nginx (pid is its master; its memory is the master's and the
// workers').
type target struct {
	name, url string
	pid       int
}

func (t target) rss() int64 {
	if t.pid == 0 {
		return 0
	}
	return rssTree(t.pid)
}

// cpu is the CPU time (user + system) the target's processes have used so
// far, from /proc/<pid>/stat: the gateway's cost of a run, whatever the
// other processes on the machine did meanwhile.
func (t target) cpu() time.Duration {
	if t.pid == 0 {
		return 0
	}
	var ticks int64
	for _, pid := range append([]int{t.pid}, children(t.pid)...) {
		b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
		if err != nil {
			continue
		}
		f := strings.Fields(string(b[strings.LastIndexByte(string(b), ')')+1:]))
		if len(f) > 12 { // fields 14 and 15 of stat: utime, stime
			u, _ := strconv.ParseInt(f[11], 10, 64)
			s, _ := strconv.ParseInt(f[12], 10, 64)
			ticks += u + s
		}
	}
	return time.Duration(ticks) * time.Second / clockTicks
}

// clockTicks is USER_HZ, the unit of /proc/<pid>/stat times: 100 on Linux
// (getconf CLK_TCK).
const clockTicks = 100

// startNginx runs nginx (one worker) as a streaming reverse proxy to the
// provider at up, with buffering off both ways, as one would put it in front
// of an event or upload API.
func startNginx(bin, dir, up string) (target, func()) {
	addr := freeAddr()
	conf := fmt.Sprintf(`daemon off;
worker_processes 1;
pid %[1]s/nginx.pid;
error_log %[1]s/nginx-error.log error;
events { worker_connections 4096; }
http {
	access_log off;
	client_body_temp_path %[1]s/body;
	proxy_temp_path %[1]s/proxy;
	upstream provider { server %[2]s; keepalive 16; }
	server {
		listen %[3]s;
		location / {
			proxy_pass http://provider;
			proxy_http_version 1.1;
			proxy_set_header Connection "";
			proxy_buffering off;
			proxy_request_buffering off;
			client_max_body_size 0;
			proxy_read_timeout 600s;
		}
	}
}
`, dir, up, addr)
	file := filepath.Join(dir, "nginx.conf")
	if err := os.WriteFile(file, []byte(conf), 0o600); err != nil {
		log.Fatal(err)
	}
	cmd := exec.Command(bin, "-c", file, "-p", dir, "-e", filepath.Join(dir, "nginx-error.log"))
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		log.Fatal(err)
	}
	waitUp(addr)
	return target{name: "nginx", url: "http://" + addr, pid: cmd.Process.Pid}, func() { _ = cmd.Process.Kill(); _ = cmd.Wait() }
}

// rssTree is the resident memory of pid and its children, in KiB.
func rssTree(pid int) int64 {
	total := rssKiB(pid)
	for _, c := range children(pid) {
		total += rssKiB(c)
	}
	return total
}

// children are the processes whose parent is pid.
func children(pid int) []int {
	var out []int
	ents, _ := os.ReadDir("/proc")
	for _, e := range ents {
		child, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", child))
		if err != nil {
			continue
		}
		// pid (comm) state ppid ...: comm may hold spaces, so read after its ')'
		f := strings.Fields(string(b[strings.LastIndexByte(string(b), ')')+1:]))
		if len(f) > 1 && f[1] == strconv.Itoa(pid) {
			out = append(out, child)
		}
	}
	return out
}

// sample records the highest value of rss in *peak every 10 ms until stop.
func sample(rss func() int64, peak *int64) (stop func()) {
	done := make(chan struct{})
	var wg sync.WaitGroup
	wg.Go(func() {
		for {
			select {
			case <-done:
				return
			case <-time.After(10 * time.Millisecond):
				*peak = max(*peak, rss())
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
	addr, err := loopback.FreeAddr()
	if err != nil {
		log.Fatal(err)
	}
	return addr
}

func waitUp(addr string) {
	if err := loopback.WaitUp(addr, 5*time.Second); err != nil {
		log.Fatal(err)
	}
}
