package loopback

import (
	"net"
	"strings"
	"testing"
	"time"
)

func TestWaitUp(t *testing.T) {
	addr, err := FreeAddr()
	if err != nil {
		t.Fatal(err)
	}
	if err := WaitUp(addr, 200*time.Millisecond); err == nil || !strings.Contains(err.Error(), addr) {
		t.Fatalf("WaitUp on a closed port: %v, want an error naming %s", err, addr)
	}
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	if err := WaitUp(addr, time.Second); err != nil {
		t.Fatalf("WaitUp on a listening port: %v", err)
	}
}
