package proxy

import (
	"errors"
	"net"
	"os"
	"testing"
	"time"
)

// lazyPair is a loopback TCP connection whose near end has lazy deadlines
// (as edgeConn and upstreamConn do), and its far end.
func lazyPair(t *testing.T) (near *upstreamConn, far net.Conn) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	accepted := make(chan net.Conn, 1)
	go func() {
		c, _ := ln.Accept()
		accepted <- c
	}()
	c, err := wrapUpstreamConn(net.Dial("tcp", ln.Addr().String()))
	if err != nil {
		t.Fatal(err)
	}
	far = <-accepted
	if far == nil {
		t.Fatal("accept failed")
	}
	t.Cleanup(func() { c.Close(); far.Close() })
	return c.(*upstreamConn), far
}

// A lazy deadline ends a blocked read as the runtime's timer would: with a
// timeout error, not before the deadline.
func TestLazyDeadlineEndsBlockedRead(t *testing.T) {
	c, _ := lazyPair(t)
	start := time.Now()
	deadline := start.Add(200 * time.Millisecond) // beyond nearDeadline: lazy
	if err := c.SetReadDeadline(deadline); err != nil {
		t.Fatal(err)
	}
	if c.dl.rd.real.Load() {
		t.Fatal("a deadline 200ms ahead was set on the socket, not kept lazily")
	}
	var b [1]byte
	_, err := c.Read(b[:])
	var ne net.Error
	if !errors.As(err, &ne) || !ne.Timeout() || !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("read ended with %v, want a deadline timeout", err)
	}
	if ended := time.Now(); ended.Before(deadline) {
		t.Fatalf("read ended %v before its deadline", deadline.Sub(ended))
	}
}

// After a lazy deadline fired, a new deadline further ahead (or none)
// clears the real one the sweeper set: the next read waits for its data.
func TestLazyDeadlineRearmedAfterFiring(t *testing.T) {
	c, far := lazyPair(t)
	var b [1]byte
	for i, next := range []time.Time{time.Now().Add(time.Hour), {}} {
		if err := c.SetReadDeadline(time.Now().Add(40 * time.Millisecond)); err != nil {
			t.Fatal(err)
		}
		if _, err := c.Read(b[:]); !errors.Is(err, os.ErrDeadlineExceeded) {
			t.Fatalf("round %d: first read: %v, want a timeout", i, err)
		}
		if err := c.SetReadDeadline(next); err != nil {
			t.Fatal(err)
		}
		go func() {
			time.Sleep(3 * deadlineTick) // a sweep or more passes while the read waits
			_, _ = far.Write([]byte{'x'})
		}()
		if n, err := c.Read(b[:]); n != 1 || err != nil {
			t.Fatalf("round %d: read after re-arming: %d, %v (the fired deadline was not cleared)", i, n, err)
		}
	}
}

// A deadline that is near or past is set on the socket at once: a read
// interrupted with SetReadDeadline(time.Now()) ends now, not a tick later.
func TestNearDeadlineIsExact(t *testing.T) {
	c, _ := lazyPair(t)
	if err := c.SetReadDeadline(time.Now()); err != nil {
		t.Fatal(err)
	}
	if !c.dl.rd.real.Load() {
		t.Fatal("a past deadline was kept lazily")
	}
	var b [1]byte
	if _, err := c.Read(b[:]); !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("read: %v, want a timeout", err)
	}
	// A later deadline far ahead replaces it: the socket's is cleared.
	if err := c.SetReadDeadline(time.Now().Add(time.Hour)); err != nil {
		t.Fatal(err)
	}
	if c.dl.rd.real.Load() {
		t.Fatal("the exact deadline was not cleared by a lazy one")
	}
}

// Cleared before it passes, a lazy deadline never fires.
func TestLazyDeadlineClearedDoesNotFire(t *testing.T) {
	c, far := lazyPair(t)
	if err := c.SetWriteDeadline(time.Now().Add(50 * time.Millisecond)); err != nil {
		t.Fatal(err)
	}
	if err := c.SetWriteDeadline(time.Time{}); err != nil {
		t.Fatal(err)
	}
	time.Sleep(100 * time.Millisecond)
	if _, err := c.Write([]byte("x")); err != nil {
		t.Fatalf("write after the deadline was cleared: %v", err)
	}
	var b [1]byte
	if _, err := far.Read(b[:]); err != nil {
		t.Fatal(err)
	}
}

// Many sets racing the sweeper: a read whose deadline is an hour ahead
// never times out, whatever the sweeper did with the deadlines before it.
func TestLazyDeadlineRacesSweeper(t *testing.T) {
	c, far := lazyPair(t)
	var b [1]byte
	for i := range 200 {
		// Deadlines that pass around the time the sweeper looks.
		_ = c.SetReadDeadline(time.Now().Add(nearDeadline + time.Duration(i%7)*time.Millisecond))
		time.Sleep(time.Duration(i%5) * 5 * time.Millisecond)
		_ = c.SetReadDeadline(time.Now().Add(time.Hour))
		if _, err := far.Write([]byte{'x'}); err != nil {
			t.Fatal(err)
		}
		if n, err := c.Read(b[:]); n != 1 || err != nil {
			t.Fatalf("round %d: %d, %v", i, n, err)
		}
	}
}

// A set far ahead (the per-request case) allocates nothing.
func TestLazyDeadlineSetAllocs(t *testing.T) {
	c, _ := lazyPair(t)
	n := testing.AllocsPerRun(1000, func() {
		_ = c.SetReadDeadline(time.Now().Add(time.Minute))
		_ = c.SetWriteDeadline(time.Now().Add(time.Minute))
	})
	if n != 0 {
		t.Fatalf("%v allocations per two sets", n)
	}
}

// Closed connections leave the sweeper, which then ends.
func TestSweeperEndsWithItsConnections(t *testing.T) {
	c, _ := lazyPair(t)
	if !c.dl.watched.Load() {
		t.Fatal("an upstream connection is not watched")
	}
	c.Close()
	if c.dl.watched.Load() {
		t.Fatal("a closed connection is still watched")
	}
	for i := 0; ; i++ {
		sweep.mu.Lock()
		running, n := sweep.running, len(sweep.conns)
		sweep.mu.Unlock()
		if !running {
			break
		}
		if n == 0 && i > 100 {
			t.Fatal("the sweeper runs on with no connection to watch")
		}
		if i > 1000 {
			t.Skip("other tests' connections are still open")
		}
		time.Sleep(deadlineTick)
	}
}
