package testkit

import (
	"bufio"
	"fmt"
	"net"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

// Redis is a real redis-server started for one test on a free loopback
// port, with no persistence. Stop and Start let a test take it away and bring
// it back on the same address (cluster fallback and recovery).
type Redis struct {
	// Addr is "127.0.0.1:PORT".
	Addr string

	t   testing.TB
	bin string
	mu  sync.Mutex
	cmd *exec.Cmd
}

// StartRedis starts redis-server for the test and stops it at cleanup. A
// missing redis-server fails the test (see Tool).
func StartRedis(t testing.TB) *Redis {
	t.Helper()
	bin := Tool(t, "redis-server", "redis-server")
	r := &Redis{Addr: freeLoopbackAddr(t), t: t, bin: bin}
	r.Start()
	t.Cleanup(r.Stop)
	return r
}

// Start (re)starts the server on its address and waits until it answers PING.
func (r *Redis) Start() {
	r.t.Helper()
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.cmd != nil {
		return
	}
	_, port, _ := net.SplitHostPort(r.Addr)
	cmd := exec.Command(r.bin, "--bind", "127.0.0.1", "--port", port, "--save", "", "--appendonly", "no",
		"--protected-mode", "no", "--daemonize", "no", "--loglevel", "warning")
	cmd.Stdout, cmd.Stderr = nil, nil
	if err := cmd.Start(); err != nil {
		r.t.Fatalf("starting redis-server: %v", err)
	}
	r.cmd = cmd
	deadline := time.Now().Add(10 * time.Second)
	for {
		if err := r.ping(); err == nil {
			return
		} else if time.Now().After(deadline) {
			_ = cmd.Process.Kill()
			_ = cmd.Wait()
			r.cmd = nil
			r.t.Fatalf("redis-server on %s did not answer PING: %v", r.Addr, err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// Stop kills the server (SIGKILL: as abrupt as a crash) and waits for it to exit.
func (r *Redis) Stop() {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.cmd == nil {
		return
	}
	_ = r.cmd.Process.Kill()
	_ = r.cmd.Wait()
	r.cmd = nil
}

// Do sends one command in the inline protocol and returns the first line of
// the reply, e.g. Do("FLUSHALL") == "+OK". For test set-up and checks.
func (r *Redis) Do(args ...string) (string, error) {
	c, err := net.DialTimeout("tcp", r.Addr, time.Second)
	if err != nil {
		return "", err
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(2 * time.Second))
	var b strings.Builder
	fmt.Fprintf(&b, "*%d\r\n", len(args))
	for _, a := range args {
		fmt.Fprintf(&b, "$%d\r\n%s\r\n", len(a), a)
	}
	if _, err := c.Write([]byte(b.String())); err != nil {
		return "", err
	}
	line, err := bufio.NewReader(c).ReadString('\n')
	return strings.TrimRight(line, "\r\n"), err
}

// Subscribers returns how many clients are subscribed to channel (PUBSUB
// NUMSUB), reading the whole reply: Do returns its first line only, which
// for this command is the array header "*2", whatever the count.
func (r *Redis) Subscribers(channel string) (int, error) {
	c, err := net.DialTimeout("tcp", r.Addr, time.Second)
	if err != nil {
		return 0, err
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(2 * time.Second))
	if _, err := fmt.Fprintf(c, "*3\r\n$6\r\nPUBSUB\r\n$6\r\nNUMSUB\r\n$%d\r\n%s\r\n", len(channel), channel); err != nil {
		return 0, err
	}
	br := bufio.NewReader(c)
	var lines []string
	for range 4 { // *2, $len, channel, :count
		line, err := br.ReadString('\n')
		if err != nil {
			return 0, err
		}
		lines = append(lines, strings.TrimRight(line, "\r\n"))
	}
	if lines[0] != "*2" || lines[2] != channel || !strings.HasPrefix(lines[3], ":") {
		return 0, fmt.Errorf("unexpected PUBSUB NUMSUB reply %q", lines)
	}
	return strconv.Atoi(lines[3][1:])
}

func (r *Redis) ping() error {
	got, err := r.Do("PING")
	if err != nil {
		return err
	}
	if got != "+PONG" {
		return fmt.Errorf("PING answered %q", got)
	}
	return nil
}

// freeLoopbackAddr returns a loopback address with a port that was free a
// moment ago.
func freeLoopbackAddr(t testing.TB) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("listen: %v", err)
	}
	addr := ln.Addr().String()
	_ = ln.Close()
	return addr
}
