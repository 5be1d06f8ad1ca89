package proxy

import (
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
	defer c.Close()
	wrapped, _ := wrapUpstreamConn(c, nil)
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
