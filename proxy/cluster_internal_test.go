package proxy

import (
	"context"
	"net"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/sluice-gw/sluice/proxy/config"
)

// countingClient is the client newCluster would make for addr (the same
// options, defaults applied), with its dialer wrapped to count attempts.
func countingClient(t *testing.T, addr string) (*redis.Client, *atomic.Int32) {
	t.Helper()
	cfg, err := config.LoadBytes([]byte("cluster:\n  redis:\n    addr: " + addr + "\n"))
	if err != nil {
		t.Fatal(err)
	}
	opt := redisOptions(cfg.Cluster.Redis)
	var dials atomic.Int32
	var d net.Dialer
	opt.Dialer = func(ctx context.Context, network, addr string) (net.Conn, error) {
		dials.Add(1)
		return d.DialContext(ctx, network, addr)
	}
	c := redis.NewClient(opt)
	t.Cleanup(func() { _ = c.Close() })
	return c, &dials
}

// A Redis that refuses, drops the connection attempt, or accepts and never
// answers costs a request one dial attempt (bounded by dial_timeout), never
// go-redis's default of five with back-off. Counted, not timed.
func TestRedisOutageCostsOneDial(t *testing.T) {
	t.Run("refused", func(t *testing.T) {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		addr := ln.Addr().String()
		_ = ln.Close() // nothing listens there now: every dial is refused
		c, dials := countingClient(t, addr)
		if err := c.Ping(context.Background()).Err(); err == nil {
			t.Fatal("PING to a closed port succeeded")
		}
		if n := dials.Load(); n != 1 {
			t.Errorf("%d dial attempts for one command against a refusing Redis, want 1", n)
		}
	})

	t.Run("dropped", func(t *testing.T) {
		// A listening socket with a backlog of 0 that never accepts: once
		// its queue is full the kernel drops further SYNs, as a firewall
		// dropping packets would, and a dial waits for its timeout.
		fd, err := syscall.Socket(syscall.AF_INET, syscall.SOCK_STREAM, 0)
		if err != nil {
			t.Skipf("socket: %v", err)
		}
		t.Cleanup(func() { _ = syscall.Close(fd) })
		if err := syscall.Bind(fd, &syscall.SockaddrInet4{Addr: [4]byte{127, 0, 0, 1}}); err != nil {
			t.Fatal(err)
		}
		if err := syscall.Listen(fd, 0); err != nil {
			t.Fatal(err)
		}
		sa, err := syscall.Getsockname(fd)
		if err != nil {
			t.Fatal(err)
		}
		addr := (&net.TCPAddr{IP: net.IPv4(127, 0, 0, 1), Port: sa.(*syscall.SockaddrInet4).Port}).String()
		full := false
		for range 16 { // fill the queue; bounded
			conn, err := net.DialTimeout("tcp", addr, 300*time.Millisecond)
			if err != nil {
				full = true
				break
			}
			t.Cleanup(func() { _ = conn.Close() })
		}
		if !full {
			t.Skip("the kernel kept accepting connections into a backlog of 0; cannot simulate dropped SYNs here")
		}
		c, dials := countingClient(t, addr)
		if err := c.Ping(context.Background()).Err(); err == nil {
			t.Fatal("PING to a socket that drops SYNs succeeded")
		}
		if n := dials.Load(); n != 1 {
			t.Errorf("%d dial attempts for one command against a Redis that drops packets, want 1", n)
		}
	})

	t.Run("silent", func(t *testing.T) {
		// Accepts the connection and never answers: the handshake fails on
		// read_timeout, and nothing is tried again.
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		done := make(chan struct{})
		go func() {
			defer close(done)
			var held []net.Conn
			defer func() {
				for _, c := range held {
					_ = c.Close()
				}
			}()
			for {
				c, err := ln.Accept()
				if err != nil {
					return
				}
				held = append(held, c)
			}
		}()
		t.Cleanup(func() { _ = ln.Close(); <-done })
		c, dials := countingClient(t, ln.Addr().String())
		if err := c.Ping(context.Background()).Err(); err == nil {
			t.Fatal("PING to a silent server succeeded")
		}
		if n := dials.Load(); n != 1 {
			t.Errorf("%d dial attempts against a silent Redis, want 1", n)
		}
	})
}
