package proxy

import (
	"bufio"
	"bytes"
	"crypto/tls"
	"io"
	"net"
	"testing"
)

// The kernel path of a download is taken only from a plain TCP provider
// connection (bare or under the gateway's wrapper) into a writer that takes
// a reader; TLS and other connections are copied.
func TestSpliceableOnlyFromTCP(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	c, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	wrapped, _ := wrapUpstreamConn(c, nil)
	// The wrapper's Close: it also leaves the deadline sweeper.
	defer wrapped.Close()
	var rf bytes.Buffer // has ReadFrom
	for _, tc := range []struct {
		name string
		conn net.Conn
		w    io.Writer
		want bool
	}{
		{"tcp", c, &rf, true},
		{"wrapped tcp", wrapped, &rf, true},
		{"tls", tls.Client(wrapped, &tls.Config{}), &rf, false},
		{"writer without ReadFrom", wrapped, struct{ io.Writer }{&rf}, false},
	} {
		s := &upstreamStream{conn: tc.conn}
		up, w := s.spliceable(tc.w)
		if got := up != nil && w != nil; got != tc.want {
			t.Errorf("%s: spliceable = %v, want %v", tc.name, got, tc.want)
		}
	}
}

// readFromConn is a connection whose ReadFrom is recorded.
type readFromConn struct {
	net.Conn
	readFrom int
}

func (c *readFromConn) Write(p []byte) (int, error) { return len(p), nil }

func (c *readFromConn) ReadFrom(r io.Reader) (int64, error) {
	c.readFrom++
	return io.Copy(io.Discard, r)
}

// The kernel path needs the caller connection's ReadFrom to be reached
// through the gateway's wrapper: fasthttp's bufio.Writer hands a reader to
// its connection's ReadFrom only when the connection has one.
func TestEdgeConnPassesReadFromOn(t *testing.T) {
	under := &readFromConn{}
	w := bufio.NewWriter(&edgeConn{Conn: under})
	n, err := w.ReadFrom(&io.LimitedReader{R: bytes.NewReader(make([]byte, 1<<20)), N: 1 << 20})
	if err != nil || n != 1<<20 {
		t.Fatalf("ReadFrom: %d, %v", n, err)
	}
	if under.readFrom != 1 {
		t.Fatalf("the connection's ReadFrom was called %d times, want 1: a download through this wrapper cannot be spliced", under.readFrom)
	}
}
