package proxy

import (
	"bufio"
	"bytes"
	"fmt"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/sluice-gw/sluice/proxy/config"
	"github.com/valyala/fasthttp"
	"github.com/valyala/fasthttp/fasthttputil"
)

// writtenTarget is the request target fasthttp writes for uri when the
// request's URI is parsed with path normalization off (what the upstream
// call did for every target before sentAsIs).
func writtenTarget(t *testing.T, uri []byte, parse bool) string {
	t.Helper()
	var req fasthttp.Request
	req.SetRequestURIBytes(uri)
	req.Header.SetHostBytes([]byte("provider.test"))
	if parse {
		req.URI().DisablePathNormalizing = true
	}
	var b bytes.Buffer
	w := bufio.NewWriter(&b)
	if err := req.Write(w); err != nil {
		t.Fatalf("%q: %v", uri, err)
	}
	_ = w.Flush()
	line, _, _ := bytes.Cut(b.Bytes(), []byte("\r\n"))
	return string(bytes.TrimSuffix(bytes.TrimPrefix(line, []byte("GET ")), []byte(" HTTP/1.1")))
}

// TestSentAsIsMatchesFasthttp: a target sentAsIs accepts is written exactly
// as fasthttp would write it after parsing; the others are told apart.
func TestSentAsIsMatchesFasthttp(t *testing.T) {
	cases := []struct {
		uri  string
		asIs bool
	}{
		{"/", true},
		{"/json", true},
		{"/v1/repos/a%2Fb/issues?state=open&q=a+b%20c", true},
		{"/a/../b/./c", true},
		{"/a%00b", true},
		{"/a??b", true},
		{"/x?", false},
		{"/x#frag", false},
		{"/x?y#frag", false},
		{"//host/x", false},
		{"//evil://x/y", false},
		{"/a\x01b", false},
		{"/a\x7fb", false},
		{"http://h/x", false},
		{"", false},
	}
	for _, c := range cases {
		if got := sentAsIs([]byte(c.uri)); got != c.asIs {
			t.Errorf("sentAsIs(%q) = %v, want %v", c.uri, got, c.asIs)
		}
		if c.asIs {
			if parsed := writtenTarget(t, []byte(c.uri), true); parsed != c.uri {
				t.Errorf("%q: fasthttp writes %q after parsing: not as is", c.uri, parsed)
			}
			if raw := writtenTarget(t, []byte(c.uri), false); raw != c.uri {
				t.Errorf("%q: unparsed, fasthttp writes %q", c.uri, raw)
			}
		} else if c.uri != "" && c.uri != "//host/x" && c.uri != "/a\x01b" && c.uri != "/a\x7fb" {
			// (parsing "//host/x" happens to give it back: sentAsIs leaves
			// every "//" target to the parser all the same)
			if parsed := writtenTarget(t, []byte(c.uri), true); parsed == c.uri {
				t.Errorf("%q: fasthttp writes it unchanged after parsing; sentAsIs could take it", c.uri)
			}
		}
	}
}

// TestServerHandsOverBlankResponse proves what Exchange.freshResponse relies
// on: the response the gateway's server hands to the handler is what
// ClearResponse makes of one, for every request on a connection, whatever
// the handler wrote into the answer before.
func TestServerHandsOverBlankResponse(t *testing.T) {
	srv := (&Gateway{}).newServer(&config.DefaultConfig().Server)
	// As written, and with a body (a default Content-Type would show).
	show := func(resp *fasthttp.Response) string {
		var withBody fasthttp.Response
		resp.CopyTo(&withBody)
		withBody.SetBodyString("{}")
		return resp.String() + "|" + withBody.String()
	}
	var blank fasthttp.Response
	ClearResponse(&blank)
	want := show(&blank)
	var seen []string
	srv.Handler = func(ctx *fasthttp.RequestCtx) {
		seen = append(seen, show(&ctx.Response))
		// leave as much behind as a handler can
		ctx.SetStatusCode(203)
		ctx.Response.Header.Set("X-Left", "behind")
		ctx.Response.Header.SetContentType("text/x-left")
		ctx.Response.Header.SetCookie(&fasthttp.Cookie{})
		ctx.Response.Header.Set("Set-Cookie", "a=b")
		ctx.Response.Header.Set("Server", "left")
		ctx.Response.Header.SetConnectionClose()
		ctx.Response.Header.ResetConnectionClose()
		ctx.Response.SetBodyString("left behind")
	}
	ln := fasthttputil.NewInmemoryListener()
	go func() { _ = srv.Serve(ln) }()
	defer func() { _ = srv.Shutdown() }()
	conn, err := ln.Dial()
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	reqs := "GET /a HTTP/1.1\r\nHost: x\r\n\r\nHEAD /b HTTP/1.1\r\nHost: x\r\n\r\nPOST /c HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n\r\nhiGET /d HTTP/1.1\r\nHost: x\r\n\r\n"
	if _, err := conn.Write([]byte(reqs)); err != nil {
		t.Fatal(err)
	}
	r := bufio.NewReader(conn)
	for i := 0; i < 4; i++ {
		var resp fasthttp.Response
		resp.SkipBody = i == 1
		if err := resp.Read(r); err != nil {
			t.Fatalf("answer %d: %v", i, err)
		}
	}
	if len(seen) != 4 {
		t.Fatalf("handler saw %d requests, want 4", len(seen))
	}
	for i, got := range seen {
		if got != want {
			t.Errorf("request %d: the handler got\n%q\nClearResponse makes\n%q", i, got, want)
		}
	}
}

// TestHopOf: every hop-by-hop name is found in any case, and names that
// only share a length (or a prefix) with one are not.
func TestHopOf(t *testing.T) {
	for i, n := range hopNames {
		for _, v := range [][]byte{n, bytes.ToLower(n), bytes.ToUpper(n)} {
			if got := hopOf(v); got != 1<<i {
				t.Errorf("hopOf(%q) = %b, want %b", v, got, hopSet(1)<<i)
			}
		}
	}
	for _, n := range []string{"", "T", "TEE", "User-Agent", "Upgrades", "Trailers", "X-HTTP-Method-Overrides", "Content-Length",
		"Proxy-Connectio", "Keep-Alivf", "X-Api-Key", strings.Repeat("x", 40)} {
		if got := hopOf([]byte(n)); got != 0 {
			t.Errorf("hopOf(%q) = %b, want 0", n, got)
		}
	}
}

// TestNewRequestID: 32 lower-case hex digits, the process prefix then the
// counter, each id new, none allocating in a buffer with room.
func TestNewRequestID(t *testing.T) {
	var buf [32]byte
	a := string(newRequestID(buf[:0]))
	b := string(newRequestID(buf[:0]))
	prefix := fmt.Sprintf("%016x", idPrefix)
	for _, id := range []string{a, b} {
		if len(id) != 32 || id[:16] != prefix || strings.ToLower(id) != id {
			t.Fatalf("id %q: want 32 lower-case hex digits starting with %s", id, prefix)
		}
	}
	na, errA := strconv.ParseUint(a[16:], 16, 64)
	nb, errB := strconv.ParseUint(b[16:], 16, 64)
	if errA != nil || errB != nil || nb <= na { // (other tests may take ids in between)
		t.Fatalf("ids %q then %q: the counter must grow", a, b)
	}
	if !validRequestID([]byte(a)) {
		t.Fatalf("%q is no valid request id", a)
	}
	if allocs := testing.AllocsPerRun(100, func() { newRequestID(buf[:0]) }); allocs != 0 {
		t.Fatalf("newRequestID allocates %.0f times", allocs)
	}
}

// TestCurrentDate: the Date of an answer is the wall clock's second; it is
// formatted once per second and taken again once the second is over.
func TestCurrentDate(t *testing.T) {
	for try := 0; ; try++ {
		before := string(AppendHTTPDate(nil, time.Now()))
		got := string(currentDate(nanotime()))
		after := string(AppendHTTPDate(nil, time.Now()))
		if got == before || got == after {
			break
		}
		if before == after || try == 5 {
			t.Fatalf("currentDate = %q, the clock says %q", got, before)
		}
	}
	d := dateNow.Load()
	if again := currentDate(d.until - 1); &again[0] != &d.b[0] {
		t.Fatal("a reading within the second formatted the date again")
	}
	if d.until-d.from > int64(time.Second) || d.until <= d.from {
		t.Fatalf("a stamped second spans %v", time.Duration(d.until-d.from))
	}
	currentDate(d.until) // the second is over: read the clock again
	if dateNow.Load() == d {
		t.Fatal("the date was not taken again after its second ended")
	}
}

// FuzzSentAsIs: the target of an outbound request is built from the
// caller's raw path and query. Whenever sentAsIs lets fasthttp send it
// unparsed, what goes on the wire must be exactly what parsing it (the path
// as sent, not normalized) would have written.
func FuzzSentAsIs(f *testing.F) {
	for _, s := range []string{"/", "/json?a=b", "/a/../b", "/x?", "/x#f", "//h/x", "/a%2Fb", "/\xc3\xa9", "/a b", "/a\\b", "/?#", "/a?b?c"} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, uri []byte) {
		if !sentAsIs(uri) {
			return
		}
		if parsed, raw := writtenTarget(t, uri, true), writtenTarget(t, uri, false); parsed != raw || raw != string(uri) {
			t.Fatalf("%q: written %q unparsed, %q parsed", uri, raw, parsed)
		}
	})
}
