package proxy

import (
	"bufio"
	"io"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/valyala/fasthttp"
)

// fasthttp closes a response's body stream once, but calls Close and then
// CloseWithError on a stream that has both. A stream must end exactly once,
// through CloseWithError (which carries the write error): with a Close as
// well, it ended first without the error, went back to the pool, and was
// then ended again, by which time another request could have taken it (the
// race detector saw start and finish of two requests on one stream).
func TestStreamEndsOnceThroughCloseWithError(t *testing.T) {
	var s any = new(upstreamStream)
	if _, ok := s.(io.Closer); ok {
		t.Fatal("upstreamStream has a Close method: fasthttp would end the stream twice")
	}
	if _, ok := s.(fasthttp.ReadCloserWithError); !ok {
		t.Fatal("upstreamStream is not a fasthttp.ReadCloserWithError: it would never end")
	}

	m := NewMetrics()
	u := &Upstream{Name: "up", metrics: newUpstreamMetrics(m, "up"), bodies: &m.bodies, streams: &m.open}
	var head fasthttp.Response
	head.Header.SetContentLength(-1)
	st := acquireStream(bufio.NewReader(strings.NewReader("5\r\nhello\r\n0\r\n\r\n")), &head)
	releases := 0
	st.u, st.release = u, func(bool) { releases++ }
	var resp fasthttp.Response
	resp.SetBodyStream(st, -1)
	if err := resp.CloseBodyStream(); err != nil {
		t.Fatal(err)
	}
	if releases != 1 {
		t.Errorf("the stream ended %d times, want once", releases)
	}
	if got := testutil.ToFloat64(u.metrics.streams[streamDiscarded]); got != 1 {
		t.Errorf("outcome discarded counted %v times, want 1 (closed before its end)", got)
	}
}
