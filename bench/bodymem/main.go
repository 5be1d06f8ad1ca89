// Command bodymem measures the gateway's peak resident memory while callers
// fetch answers that are larger than max_response_body, chunked and without
// end: the case where an unbounded reader, or one without a process-wide
// budget, grows without limit. It starts a provider that streams such
// answers on loopback, runs the given sluice binary against it, fires the
// calls and reports the gateway's VmHWM (Linux).
//
//	go build -o /tmp/sluice ./cmd/sluice
//	go run ./bench/bodymem -sluice /tmp/sluice -callers 8 -rounds 3
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
	"strings"
	"sync"
	"time"

	"github.com/sluice-gw/sluice/bench/internal/loopback"
)

func main() {
	bin := flag.String("sluice", "", "path of the sluice binary to measure")
	callers := flag.Int("callers", 8, "concurrent callers")
	rounds := flag.Int("rounds", 3, "rounds of concurrent calls")
	limit := flag.String("max-response-body", "64MiB", "upstreams.up.max_response_body")
	budget := flag.String("max-body-memory", "", "server.max_body_memory (empty: the default; builds without the key need empty)")
	flag.Parse()
	if *bin == "" {
		log.Fatal("-sluice is required")
	}

	up, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		log.Fatal(err)
	}
	go serveEndless(up)

	gwAddr, adminAddr := freeAddr(), freeAddr()
	dir, err := os.MkdirTemp("", "bodymem")
	if err != nil {
		log.Fatal(err)
	}
	defer os.RemoveAll(dir)
	server := fmt.Sprintf("server: {listen: %q}\n", gwAddr)
	if *budget != "" {
		server = fmt.Sprintf("server: {listen: %q, max_body_memory: %s}\n", gwAddr, *budget)
	}
	cfg := server + fmt.Sprintf(`admin: {listen: %q}
log: {access_log: false, level: error}
upstreams: {up: {url: "http://%s", max_response_body: %s, timeout: 60s}}
routes: {r: {path: "/{p:*}", upstream: up}}
`, adminAddr, up.Addr(), *limit)
	cmd, err := loopback.StartSluice(*bin, dir, cfg, gwAddr)
	if err != nil {
		log.Fatal(err)
	}
	defer func() { _ = cmd.Process.Kill(); _ = cmd.Wait() }()

	statuses := map[int]int{}
	var mu sync.Mutex
	client := &http.Client{Timeout: 120 * time.Second}
	for range *rounds {
		var wg sync.WaitGroup
		for range *callers {
			wg.Go(func() {
				resp, err := client.Get("http://" + gwAddr + "/big")
				if err != nil {
					log.Printf("call: %v", err)
					return
				}
				_, _ = io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
				mu.Lock()
				statuses[resp.StatusCode]++
				mu.Unlock()
			})
		}
		wg.Wait()
	}
	fmt.Printf("callers=%d rounds=%d max_response_body=%s max_body_memory=%s statuses=%v peak_rss=%s\n",
		*callers, *rounds, *limit, orDefault(*budget), statuses, vmHWM(cmd.Process.Pid))
}

func orDefault(s string) string {
	if s == "" {
		return "(default)"
	}
	return s
}

// serveEndless answers every request with a chunked body that never ends,
// until the gateway closes the connection.
func serveEndless(ln net.Listener) {
	frame := []byte(fmt.Sprintf("%x\r\n%s\r\n", 64<<10, strings.Repeat("x", 64<<10)))
	for {
		c, err := ln.Accept()
		if err != nil {
			return
		}
		go func() {
			defer c.Close()
			br := bufio.NewReader(c)
			for {
				line, err := br.ReadString('\n')
				if err != nil {
					return
				}
				if line == "\r\n" {
					break
				}
			}
			if _, err := io.WriteString(c, "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"); err != nil {
				return
			}
			for {
				_ = c.SetWriteDeadline(time.Now().Add(30 * time.Second))
				if _, err := c.Write(frame); err != nil {
					return
				}
			}
		}()
	}
}

func freeAddr() string {
	addr, err := loopback.FreeAddr()
	if err != nil {
		log.Fatal(err)
	}
	return addr
}

// vmHWM is the process's peak resident set size, from /proc.
func vmHWM(pid int) string {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return "unknown: " + err.Error()
	}
	for _, line := range strings.Split(string(b), "\n") {
		if strings.HasPrefix(line, "VmHWM:") {
			return strings.TrimSpace(strings.TrimPrefix(line, "VmHWM:"))
		}
	}
	return "unknown"
}
