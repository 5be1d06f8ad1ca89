package proxy_test

import (
	"bufio"
	"fmt"
	"net"
	"net/http"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/sluice-gw/sluice/internal/testkit"
	"github.com/valyala/fasthttp"
)

// gatewayFor starts an upstream with h and a gateway whose YAML is format
// with the upstream URL substituted for every %[1]s.
func gatewayFor(t *testing.T, h fasthttp.RequestHandler, format string) (*testkit.Gateway, *testkit.Upstream) {
	t.Helper()
	up := testkit.NewUpstream(t, h)
	gw := testkit.StartGateway(t, fmt.Sprintf(format, up.URL))
	return gw, up
}

// dial opens a TCP connection to a gateway's base URL; every read and write
// on it fails after d. It is closed at the end of the test.
func dial(t *testing.T, baseURL string, d time.Duration) net.Conn {
	t.Helper()
	conn, err := net.Dial("tcp", strings.TrimPrefix(baseURL, "http://"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	_ = conn.SetDeadline(time.Now().Add(d))
	return conn
}

// rawRequest writes raw bytes on a new TCP connection to the gateway and
// returns the answer's status, headers and start of body.
func rawRequest(t *testing.T, baseURL, raw string) string {
	t.Helper()
	conn := dial(t, baseURL, 2*time.Second)
	if _, err := conn.Write([]byte(raw)); err != nil {
		t.Fatal(err)
	}
	resp, err := http.ReadResponse(bufio.NewReader(conn), nil)
	if err != nil {
		t.Fatalf("reading response to %q: %v", raw, err)
	}
	defer resp.Body.Close()
	var b strings.Builder
	fmt.Fprintf(&b, "%d\n", resp.StatusCode)
	for k, v := range resp.Header {
		fmt.Fprintf(&b, "%s: %s\n", k, strings.Join(v, ","))
	}
	buf := make([]byte, 64<<10)
	n, _ := resp.Body.Read(buf)
	b.Write(buf[:n])
	return b.String()
}

func TestForwardsRequestFaithfully(t *testing.T) {
	t.Parallel()
	gw, up := gatewayFor(t, nil, `
log: {access_log: false}
upstreams:
  up: {url: "%[1]s/base/v2", forwarded_headers: true}
routes:
  gh:
    path: "/github/{path:*}"
    upstream: up
    strip_prefix: "/github"
`)
	cases := []struct {
		name       string
		method     string
		target     string // raw request target sent by the caller
		body       string
		wantURI    string // as the upstream must receive it
		wantBody   string
		extraHeads string
	}{
		{name: "get with raw query", method: "GET", target: "/github/repos/a%2Fb/issues?state=open&q=a+b%20c&x=%E2%9C%93", wantURI: "/base/v2/repos/a%2Fb/issues?state=open&q=a+b%20c&x=%E2%9C%93"},
		{name: "post body", method: "POST", target: "/github/repos/x", body: `{"title":"hi"}`, wantURI: "/base/v2/repos/x", wantBody: `{"title":"hi"}`},
		{name: "unusual method", method: "PROPFIND", target: "/github/dav/", wantURI: "/base/v2/dav/"},
		{name: "prefix only", method: "GET", target: "/github/", wantURI: "/base/v2/"},
		// fasthttp drops an empty query ("?" with nothing after it); equivalent for every server we know.
		{name: "empty query", method: "DELETE", target: "/github/x?", wantURI: "/base/v2/x"},
		// A fragment is no part of a request target: fasthttp's URI drops it.
		{name: "fragment", method: "GET", target: "/github/frag?x=1#part", wantURI: "/base/v2/frag?x=1"},
		{name: "absolute-form target", method: "GET", target: "http://caller.internal:8080/github/abs?x=1", wantURI: "/base/v2/abs?x=1"},
		{name: "repeated headers", method: "GET", target: "/github/h", wantURI: "/base/v2/h", extraHeads: "X-Multi: a\r\nX-Multi: b\r\n"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			raw := fmt.Sprintf("%s %s HTTP/1.1\r\nHost: caller.internal:8080\r\nUser-Agent: svc/1.0\r\nX-Custom: keep-me\r\n%sContent-Length: %d\r\nConnection: close\r\n\r\n%s",
				c.method, c.target, c.extraHeads, len(c.body), c.body)
			out := rawRequest(t, gw.URL, raw)
			if !strings.HasPrefix(out, "200\n") {
				t.Fatalf("answer: %s", out)
			}
			var got testkit.Recorded
			for _, r := range up.Requests() {
				if r.URI == c.wantURI && r.Method == c.method {
					got = r
				}
			}
			if got.Method == "" {
				t.Fatalf("upstream never received %s %s; got %+v", c.method, c.wantURI, up.Requests())
			}
			if string(got.Body) != c.wantBody {
				t.Errorf("body = %q, want %q", got.Body, c.wantBody)
			}
			if got.Host != strings.TrimPrefix(up.URL, "http://") {
				t.Errorf("Host = %q, want the upstream's %q", got.Host, strings.TrimPrefix(up.URL, "http://"))
			}
			if got.Header.Get("User-Agent") != "svc/1.0" || got.Header.Get("X-Custom") != "keep-me" {
				t.Errorf("caller headers not forwarded: %v", got.Header)
			}
			if got.Header.Get("X-Forwarded-Host") != "caller.internal:8080" || got.Header.Get("X-Forwarded-Proto") != "http" ||
				got.Header.Get("X-Forwarded-For") != "127.0.0.1" {
				t.Errorf("forwarded headers: XFH=%q XFP=%q XFF=%q", got.Header.Get("X-Forwarded-Host"),
					got.Header.Get("X-Forwarded-Proto"), got.Header.Get("X-Forwarded-For"))
			}
			if c.body != "" && got.Header.Get("Content-Type") != "" {
				t.Errorf("Content-Type %q invented for a body sent without one", got.Header.Get("Content-Type"))
			}
			if c.extraHeads != "" && strings.Join(got.Header.Values("X-Multi"), ",") != "a,b" {
				t.Errorf("X-Multi = %q, want both values", got.Header.Values("X-Multi"))
			}
			if got.Header.Get("Connection") != "" {
				t.Errorf("caller's Connection: close was forwarded")
			}
		})
	}
}

func TestForwardedForAppends(t *testing.T) {
	t.Parallel()
	gw, up := gatewayFor(t, nil, `
log: {access_log: false}
upstreams: {up: {url: "%[1]s", forwarded_headers: true}}
routes: {r: {path: "/{p:*}", upstream: up}}
`)
	resp := testkit.Do(t, "GET", gw.URL+"/x", "", "X-Forwarded-For", "10.1.2.3")
	if resp.Status != 200 {
		t.Fatalf("status %d", resp.Status)
	}
	if got := up.Last(t).Header.Get("X-Forwarded-For"); got != "10.1.2.3, 127.0.0.1" {
		t.Errorf("X-Forwarded-For = %q, want the caller's chain then the caller", got)
	}
}

// Without forwarded_headers (the default) the provider learns nothing of the
// caller's address or of the host name it called: the gateway adds no
// X-Forwarded-* header and passes those a caller sent as sent, repeated
// ones included. X-Request-Id is still sent exactly once, and a caller's
// Connection header cannot name it away.
func TestNoForwardedHeadersByDefault(t *testing.T) {
	t.Parallel()
	gw, up := gatewayFor(t, nil, `
log: {access_log: false}
upstreams: {up: {url: "%[1]s"}}
routes: {r: {path: "/{p:*}", upstream: up}}
`)
	for _, c := range []struct {
		path, heads string
		want        map[string][]string
	}{
		{"/plain", "", map[string][]string{"X-Forwarded-For": nil, "X-Forwarded-Proto": nil, "X-Forwarded-Host": nil}},
		{"/callers", "X-Forwarded-For: 10.1.2.3\r\nX-Forwarded-For: 10.4.5.6\r\nX-Forwarded-Proto: https\r\nX-Request-Id: a\r\nX-Request-Id: b\r\n",
			map[string][]string{"X-Forwarded-For": {"10.1.2.3", "10.4.5.6"}, "X-Forwarded-Proto": {"https"}, "X-Forwarded-Host": nil, "X-Request-Id": {"a"}}},
		{"/named", "Connection: keep-alive, X-Request-Id\r\nX-Request-Id: c\r\n", map[string][]string{"X-Request-Id": {"c"}, "X-Forwarded-For": nil}},
	} {
		out := rawRequest(t, gw.URL, "GET "+c.path+" HTTP/1.1\r\nHost: caller.internal:8080\r\n"+c.heads+"\r\n")
		if !strings.HasPrefix(out, "200\n") {
			t.Fatalf("%s: answer:\n%s", c.path, out)
		}
		var got http.Header
		for _, r := range up.Requests() {
			if r.URI == c.path {
				got = r.Header
			}
		}
		if got == nil {
			t.Fatalf("%s: the upstream never got it", c.path)
		}
		for name, want := range c.want {
			if v := got.Values(name); !slices.Equal(v, want) {
				t.Errorf("%s: upstream got %s %q, want %q", c.path, name, v, want)
			}
		}
		if ids := got.Values("X-Request-Id"); len(ids) != 1 {
			t.Errorf("%s: X-Request-Id %q, want exactly one", c.path, ids)
		}
	}
}

func TestHopByHopHeadersStripped(t *testing.T) {
	t.Parallel()
	gw, up := gatewayFor(t, func(ctx *fasthttp.RequestCtx) {
		h := &ctx.Response.Header
		h.Set("Connection", "X-Up-Secret")
		h.Set("X-Up-Secret", "leak")
		h.Set("Keep-Alive", "timeout=5")
		h.Set("Proxy-Authenticate", "Basic")
		h.Set("Upgrade", "h2c")
		h.Set("X-Up-Normal", "fine")
		ctx.SetBodyString("ok")
	}, `
log: {access_log: false}
upstreams: {up: {url: "%[1]s"}}
routes: {r: {path: "/{p:*}", upstream: up}}
`)
	raw := "GET /x HTTP/1.1\r\nHost: gw\r\nConnection: keep-alive, X-Hop-Me\r\nX-Hop-Me: 1\r\nKeep-Alive: 30\r\n" +
		"Proxy-Connection: keep-alive\r\nProxy-Authorization: Basic c2VjcmV0\r\nTE: trailers\r\nUpgrade: websocket\r\nX-End-To-End: yes\r\n\r\n"
	out := rawRequest(t, gw.URL, raw)
	got := up.Last(t).Header
	for _, h := range []string{"X-Hop-Me", "Keep-Alive", "Proxy-Connection", "Proxy-Authorization", "Te", "Upgrade", "Connection"} {
		if v := got.Get(h); v != "" {
			t.Errorf("request header %s forwarded upstream: %q", h, v)
		}
	}
	if got.Get("X-End-To-End") != "yes" {
		t.Errorf("end-to-end header lost")
	}
	for _, h := range []string{"X-Up-Secret", "Keep-Alive", "Proxy-Authenticate", "Upgrade"} {
		if strings.Contains(out, h+":") {
			t.Errorf("response header %s returned to caller:\n%s", h, out)
		}
	}
	if !strings.Contains(out, "X-Up-Normal: fine") {
		t.Errorf("end-to-end response header lost:\n%s", out)
	}
}

func TestUpstreamConnectionCloseDoesNotCloseCaller(t *testing.T) {
	t.Parallel()
	gw, _ := gatewayFor(t, func(ctx *fasthttp.RequestCtx) {
		ctx.Response.SetConnectionClose()
		ctx.SetBodyString("bye")
	}, `
log: {access_log: false}
upstreams: {up: {url: "%[1]s"}}
routes: {r: {path: "/{p:*}", upstream: up}}
`)
	conn := dial(t, gw.URL, 3*time.Second)
	br := bufio.NewReader(conn)
	for i := range 3 { // three requests on one caller connection
		if _, err := conn.Write([]byte("GET /x HTTP/1.1\r\nHost: gw\r\n\r\n")); err != nil {
			t.Fatalf("request %d: %v", i, err)
		}
		resp, err := http.ReadResponse(br, nil)
		if err != nil {
			t.Fatalf("request %d: %v", i, err)
		}
		resp.Body.Close()
		if resp.Close {
			t.Fatalf("request %d: caller connection closed because the upstream's was", i)
		}
	}
}

var hexID = regexp.MustCompile(`^[0-9a-f]{32}$`)

func TestRequestID(t *testing.T) {
	t.Parallel()
	gw, up := gatewayFor(t, func(ctx *fasthttp.RequestCtx) {
		ctx.Response.Header.Set("X-Request-Id", "upstream-own-id")
	}, `
log: {access_log: false}
upstreams: {up: {url: "%[1]s"}}
routes: {r: {path: "/{p:*}", upstream: up}}
`)
	t.Run("generated", func(t *testing.T) {
		a := testkit.Do(t, "GET", gw.URL+"/a", "")
		b := testkit.Do(t, "GET", gw.URL+"/a", "")
		ida, idb := a.Header.Get("X-Request-Id"), b.Header.Get("X-Request-Id")
		if !hexID.MatchString(ida) || !hexID.MatchString(idb) || ida == idb {
			t.Fatalf("ids %q %q: want two distinct 32-hex ids", ida, idb)
		}
	})
	t.Run("kept and forwarded", func(t *testing.T) {
		resp := testkit.Do(t, "GET", gw.URL+"/kept", "", "X-Request-Id", "trace-abc-123")
		if got := resp.Header.Get("X-Request-Id"); got != "trace-abc-123" {
			t.Errorf("response X-Request-Id = %q", got)
		}
		for _, r := range up.Requests() {
			if r.URI == "/kept" && r.Header.Get("X-Request-Id") != "trace-abc-123" {
				t.Errorf("upstream got X-Request-Id %q", r.Header.Get("X-Request-Id"))
			}
		}
	})
	t.Run("invalid replaced", func(t *testing.T) {
		resp := testkit.Do(t, "GET", gw.URL+"/bad", "", "X-Request-Id", strings.Repeat("x", 300))
		if got := resp.Header.Get("X-Request-Id"); !hexID.MatchString(got) {
			t.Errorf("an over-long id was not replaced: %q", got)
		}
	})
}

func TestHeadRequest(t *testing.T) {
	t.Parallel()
	gw, _ := gatewayFor(t, func(ctx *fasthttp.RequestCtx) {
		ctx.Response.Header.SetContentType("application/json")
		ctx.SetBodyString(`{"a":1}`)
	}, `
log: {access_log: false}
upstreams: {up: {url: "%[1]s"}}
routes: {r: {path: "/{p:*}", upstream: up}}
`)
	resp := testkit.Do(t, "HEAD", gw.URL+"/x", "")
	if resp.Status != 200 || len(resp.Body) != 0 {
		t.Fatalf("HEAD: status %d, %d body bytes", resp.Status, len(resp.Body))
	}
	if resp.Header.Get("Content-Type") != "application/json" {
		t.Errorf("Content-Type = %q", resp.Header.Get("Content-Type"))
	}
}

func TestLargeBodiesBothWays(t *testing.T) {
	t.Parallel()
	big := strings.Repeat("0123456789abcdef", 256<<10/16*8) // 2 MiB
	gw, up := gatewayFor(t, func(ctx *fasthttp.RequestCtx) {
		ctx.SetBody(ctx.Request.Body())
	}, `
log: {access_log: false}
server: {max_request_body: 4MiB}
upstreams: {up: {url: "%[1]s"}}
routes: {r: {path: "/{p:*}", upstream: up}}
`)
	resp := testkit.Do(t, "PUT", gw.URL+"/echo", big)
	if resp.Status != 200 || string(resp.Body) != big {
		t.Fatalf("echo: status %d, %d bytes back of %d", resp.Status, len(resp.Body), len(big))
	}
	if len(up.Last(t).Body) != len(big) {
		t.Errorf("upstream got %d bytes", len(up.Last(t).Body))
	}
}
