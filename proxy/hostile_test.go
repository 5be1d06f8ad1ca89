package proxy_test

// The hostile-input suite: exact bytes written on a raw TCP connection to a
// running gateway, whose only upstream is a testkit.Recorder that frames
// what it receives strictly (RFC 9112) and records it byte for byte.
//
// The rule every case checks: the gateway either refuses (a 4xx
// problem+json, nothing forwarded, no second answer read from left-over
// bytes) or forwards exactly the requests the case allows, each well framed
// (the Recorder read it without a framing error) and with exactly the body
// the case names, sent as HTTP/1.1 (the gateway's own version) with one Host,
// the upstream's, under the upstream's base path. A request for /smuggled
// must never reach the upstream.
//
// A failing case is a finding, not a flaky test: the log shows the bytes sent,
// the gateway's answer and the bytes the upstream received.

import (
	"bufio"
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/sluice-gw/sluice/internal/testkit"
)

// smuggled is a complete request that one reading of an ambiguous message
// turns into a second request. It must never reach the upstream.
const smuggled = "GET /smuggled HTTP/1.1\r\nHost: gw\r\n\r\n"

// chunk frames s as one chunk.
func chunk(s string) string { return fmt.Sprintf("%x\r\n%s\r\n", len(s), s) }

// outcome is what a case allows.
type outcome struct {
	refuse  bool  // a 4xx problem+json answer with nothing forwarded
	status  []int // with refuse: the allowed statuses (nil: any 4xx)
	closeOK bool  // the connection closed without an answer, nothing forwarded
	// forward lists the bodies of the requests the upstream may receive, in
	// order, each answered 200 to the caller; nil: forwarding is not allowed.
	forward []string
	// check inspects the forwarded requests (only called when forwarded).
	check func(t *testing.T, reqs []testkit.RawRequest)
}

type hostileCase struct {
	name string
	// server is the YAML of the gateway's server section; "" is hostileServer.
	server string
	raw    string
	// trickle writes raw one byte per 100ms (a slowloris caller).
	trickle bool
	// holdOpen keeps the caller's write side open after raw (default: the
	// caller half-closes, so the gateway reads EOF after the last byte).
	holdOpen bool
	want     outcome
}

const hostileServer = `{max_request_body: 1KiB, max_header_size: 8KiB, read_timeout: 2s}`

var (
	refuse        = outcome{refuse: true}
	refuseOrClose = outcome{refuse: true, closeOK: true}
)

// refuseOr allows a refusal or forwarding requests with these bodies.
func refuseOr(bodies ...string) outcome { return outcome{refuse: true, forward: bodies} }

// answer is one response the caller read.
type answer struct {
	status int
	ctype  string
	body   []byte
}

// runHostile starts a Recorder and a gateway in front of it, writes c.raw,
// reads every answer until the gateway closes (bounded), lets the gateway
// settle and checks the outcome.
func runHostile(t *testing.T, c hostileCase) {
	t.Helper()
	rec := testkit.NewRecorder(t)
	server := c.server
	if server == "" {
		server = hostileServer
	}
	gw := testkit.StartGateway(t, fmt.Sprintf(`
log: {access_log: false}
server: %s
upstreams: {up: {url: "%s/base"}}
routes: {r: {path: "/{p:*}", upstream: up}}
`, server, rec.URL))

	conn := gw.Dial(t, 15*time.Second)
	got := make(chan []byte, 1)
	go func() { b, _ := io.ReadAll(conn); got <- b }() // until EOF, error or the deadline
	var out []byte
	if c.trickle {
		tick := time.NewTicker(100 * time.Millisecond)
	trickle:
		for i := 0; i < len(c.raw); i++ {
			if _, err := conn.Write([]byte{c.raw[i]}); err != nil {
				break // the gateway closed: fine
			}
			select {
			case out = <-got: // answered or closed before the head was complete
				got <- out
				break trickle
			case <-tick.C:
			}
		}
		tick.Stop()
	} else if _, err := conn.Write([]byte(c.raw)); err != nil {
		t.Logf("write: %v (the gateway closed early)", err)
	}
	if !c.holdOpen {
		_ = conn.(*net.TCPConn).CloseWrite()
	}
	out = <-got
	time.Sleep(100 * time.Millisecond) // settle: anything still in flight reaches the recorder

	answers := parseAnswers(t, out)
	reqs := rec.Requests()
	// Shown on failure and with -v.
	if len(c.raw) <= 4096 {
		t.Logf("sent %q", c.raw)
	}
	t.Logf("gateway answered %q", out)
	for _, r := range reqs {
		if len(r.Raw) <= 4096 {
			t.Logf("upstream received (conn %d) %q", r.Conn, r.Raw)
		}
	}
	for _, e := range rec.Errors() {
		t.Errorf("the upstream received a request it cannot frame: %s", e)
	}
	for _, r := range reqs {
		if strings.Contains(r.Target, "smuggled") || bytes.Contains(r.Body, []byte("smuggled")) && !slices.Contains(c.want.forward, string(r.Body)) {
			t.Errorf("a smuggled request reached the upstream: %q", r.Raw)
		}
	}
	statuses := make([]int, len(answers))
	for i, a := range answers {
		statuses[i] = a.status
	}
	t.Logf("outcome: answers %v, forwarded %d", statuses, len(reqs))
	w := c.want
	switch {
	case len(reqs) == 0 && len(answers) == 0:
		if !w.closeOK {
			t.Errorf("no answer and nothing forwarded; want a 4xx problem+json")
		}
	case len(reqs) == 0:
		a := answers[0]
		switch {
		case !w.refuse:
			t.Errorf("refused with %d %s; want it forwarded", a.status, a.body)
		case a.status < 400 || a.status > 499 && !slices.Contains(w.status, a.status):
			t.Errorf("answered %d with nothing forwarded; want a 4xx", a.status)
		case w.status != nil && !slices.Contains(w.status, a.status):
			t.Errorf("status %d, want one of %v", a.status, w.status)
		case a.ctype != "application/problem+json":
			t.Errorf("refusal Content-Type %q, want application/problem+json", a.ctype)
		}
		if len(answers) > 1 {
			t.Errorf("%d answers to one refused request: the gateway read left-over bytes as another request", len(answers))
		}
	default:
		if w.forward == nil {
			t.Fatalf("forwarded %d request(s); want it refused", len(reqs))
		}
		if len(reqs) != len(w.forward) {
			t.Fatalf("the upstream received %d requests, want %d", len(reqs), len(w.forward))
		}
		for i, r := range reqs {
			if string(r.Body) != w.forward[i] {
				t.Errorf("request %d: upstream body %q, want %q", i, r.Body, w.forward[i])
			}
			if hosts := r.Values("Host"); len(hosts) != 1 || hosts[0] != rec.Addr {
				t.Errorf("request %d: upstream Host %q, want exactly %q", i, hosts, rec.Addr)
			}
			if r.Proto != "HTTP/1.1" { // RFC 9110 6.2: an intermediary sends its own version
				t.Errorf("request %d: forwarded as %s, want the gateway's own HTTP/1.1", i, r.Proto)
			}
			if !strings.HasPrefix(r.Target, "/base/") {
				t.Errorf("request %d: upstream target %q is not under /base/", i, r.Target)
			}
		}
		if len(answers) != len(reqs) {
			t.Errorf("%d answers for %d forwarded requests: the gateway read left-over bytes as another request", len(answers), len(reqs))
		}
		for i, a := range answers {
			if a.status != 200 || string(a.body) != "ok" {
				t.Errorf("answer %d: %d %q, want the upstream's 200 ok", i, a.status, a.body)
			}
		}
		if w.check != nil {
			w.check(t, reqs)
		}
	}
}

// parseAnswers reads every final HTTP response in b.
func parseAnswers(t *testing.T, b []byte) []answer {
	t.Helper()
	var out []answer
	br := bufio.NewReader(bytes.NewReader(b))
	for {
		if _, err := br.Peek(1); err != nil {
			return out
		}
		resp, err := http.ReadResponse(br, nil)
		if err != nil {
			t.Errorf("answer %d is not HTTP: %v", len(out), err)
			return out
		}
		body, err := io.ReadAll(resp.Body)
		resp.Body.Close()
		if err != nil {
			t.Errorf("answer %d body: %v", len(out), err)
		}
		if resp.StatusCode >= 100 && resp.StatusCode <= 199 {
			continue // an interim answer (100 Continue) before the final one
		}
		a := answer{status: resp.StatusCode, ctype: resp.Header.Get("Content-Type"), body: body}
		if a.ctype == "application/problem+json" {
			var p map[string]any
			if err := json.Unmarshal(body, &p); err != nil || p["status"] != float64(a.status) || p["code"] == nil {
				t.Errorf("answer %d: not a problem document: %s", len(out), body)
			}
		}
		out = append(out, a)
	}
}

func runHostileTable(t *testing.T, cases []hostileCase) {
	names := map[string]bool{}
	for _, c := range cases {
		if names[c.name] {
			t.Fatalf("duplicate case %q", c.name)
		}
		names[c.name] = true
		t.Run(c.name, func(t *testing.T) {
			t.Parallel()
			runHostile(t, c)
		})
	}
}

// TestHostileFraming: request smuggling and malformed framing.
func TestHostileFraming(t *testing.T) {
	t.Parallel()
	const post = "POST /a HTTP/1.1\r\nHost: gw\r\n"
	// teEarly ends after "abc" when read as chunked; read by its
	// Content-Length it also holds the smuggled request.
	teEarly := "3\r\nabc\r\n0\r\n\r\n" + smuggled
	chunkedABC := "3\r\nabc\r\n0\r\n\r\n"
	runHostileTable(t, []hostileCase{
		{name: "CL then TE (CL.TE)", want: refuseOr("abc"),
			raw: fmt.Sprintf(post+"Content-Length: %d\r\nTransfer-Encoding: chunked\r\n\r\n%s", len(teEarly), teEarly)},
		{name: "TE then CL (TE.CL)", want: refuseOr(smuggled),
			raw: post + "Transfer-Encoding: chunked\r\nContent-Length: 3\r\n\r\n" + chunk(smuggled) + "0\r\n\r\n"},
		{name: "two equal Content-Length", want: refuseOr("abc"),
			raw: post + "Content-Length: 3\r\nContent-Length: 3\r\n\r\nabc"},
		{name: "two Content-Length, smaller first", want: refuse,
			raw: fmt.Sprintf(post+"Content-Length: 3\r\nContent-Length: %d\r\n\r\nabc%s", 3+len(smuggled), smuggled)},
		{name: "two Content-Length, larger first", want: refuse,
			raw: fmt.Sprintf(post+"Content-Length: %d\r\nContent-Length: 3\r\n\r\nabc%s", 3+len(smuggled), smuggled)},
		{name: "Content-Length list 3, 3", want: refuseOr("abc"),
			raw: post + "Content-Length: 3, 3\r\n\r\nabc"},
		{name: "Content-Length with plus sign", want: refuse,
			raw: post + "Content-Length: +3\r\n\r\nabc" + smuggled},
		{name: "negative Content-Length", want: refuse,
			raw: post + "Content-Length: -1\r\n\r\nabc" + smuggled},
		{name: "TE chunked, identity", want: outcome{refuse: true, status: []int{400, 501}},
			raw: post + "Transfer-Encoding: chunked, identity\r\n\r\n" + chunkedABC},
		{name: "TE xchunked", want: outcome{refuse: true, status: []int{400, 501}},
			raw: post + "Transfer-Encoding: xchunked\r\n\r\n" + chunkedABC},
		{name: "TE xchunked with CL", want: outcome{refuse: true, status: []int{400, 501}},
			raw: fmt.Sprintf(post+"Content-Length: %d\r\nTransfer-Encoding: xchunked\r\n\r\n%s", len(teEarly), teEarly)},
		{name: "TE chunked with tab and mixed case", want: refuseOr("abc"),
			raw: post + "Transfer-Encoding:\t ChUnKeD\r\n\r\n" + chunkedABC},
		{name: "TE chunked with trailing whitespace", want: refuseOr("abc"),
			raw: post + "Transfer-Encoding: chunked \t\r\n\r\n" + chunkedABC},
		{name: "TE with vertical tab before chunked", want: outcome{refuse: true, status: []int{400, 501}},
			raw: post + "Transfer-Encoding: \x0bchunked\r\n\r\n" + chunkedABC},
		{name: "TE with a space before the colon, and CL", want: refuse,
			raw: fmt.Sprintf(post+"Content-Length: %d\r\nTransfer-Encoding : chunked\r\n\r\n%s", len(teEarly), teEarly)},
		{name: "CL with a space before the colon", want: refuse,
			raw: fmt.Sprintf(post+"Content-Length : %d\r\n\r\nabc%s", 3+len(smuggled), smuggled)},
		{name: "TE hidden in an obs-fold continuation, with CL", want: refuseOr(teEarly),
			raw: fmt.Sprintf(post+"Content-Length: %d\r\nX-Pad: a\r\n Transfer-Encoding: chunked\r\n\r\n%s", len(teEarly), teEarly)},
		{name: "TE value on an obs-fold continuation", want: refuseOr("abc"),
			raw: post + "Transfer-Encoding:\r\n chunked\r\n\r\n" + chunkedABC},
		{name: "chunk extension", want: refuseOr("abc"),
			raw: post + "Transfer-Encoding: chunked\r\n\r\n3;name=value;q=\"x\"\r\nabc\r\n0\r\n\r\n"},
		{name: "negative chunk size", want: refuse,
			raw: post + "Transfer-Encoding: chunked\r\n\r\n-3\r\nabc\r\n0\r\n\r\n"},
		{name: "chunk size overflowing 64 bits to 3", want: refuse,
			raw: post + "Transfer-Encoding: chunked\r\n\r\n10000000000000003\r\nabc\r\n0\r\n\r\n"},
		{name: "chunk size with 0x prefix", want: refuse,
			raw: post + "Transfer-Encoding: chunked\r\n\r\n0x3\r\nabc\r\n0\r\n\r\n"},
		{name: "chunk longer than its size", want: refuse,
			raw: post + "Transfer-Encoding: chunked\r\n\r\n3\r\nabcd\r\n0\r\n\r\n"},
		{name: "last chunk without the final CRLF, then EOF", want: refuseOrClose,
			raw: post + "Transfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n"},
		{name: "last chunk without the final CRLF, request line as trailer", want: refuseOr("abc"),
			raw: post + "Transfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n" + smuggled},
		{name: "bare LF line endings", want: refuseOr(""),
			raw: "GET /a HTTP/1.1\nHost: gw\n\n"},
		{name: "bare LF line endings with Content-Length", want: refuseOr("abc"),
			raw: "POST /a HTTP/1.1\nHost: gw\nContent-Length: 3\n\nabc"},
		{name: "bare LF in chunked framing", want: refuseOr("abc"),
			raw: post + "Transfer-Encoding: chunked\r\n\r\n3\nabc\n0\n\n"},
		{name: "bare CR ending a header line", want: refuseOr("abc"),
			raw: post + "X-A: 1\rContent-Length: 40\r\nContent-Length: 3\r\n\r\nabc"},
		{name: "bare CR in the request line", want: refuseOr(""),
			raw: "GET /a\r HTTP/1.1\r\nHost: gw\r\n\r\n"},
		{name: "NUL in a header value", want: refuseOr(""),
			raw: "GET /a HTTP/1.1\r\nHost: gw\r\nX-A: a\x00b\r\n\r\n"},
		{name: "control bytes in a header value", want: refuseOr(""),
			raw: "GET /a HTTP/1.1\r\nHost: gw\r\nX-A: a\x01\x1b\x7fb\r\n\r\n"},
		{name: "NUL in the request target", want: refuseOr(""),
			raw: "GET /a\x00b HTTP/1.1\r\nHost: gw\r\n\r\n"},
		{name: "control byte in the method", want: refuseOr(""),
			raw: "G\x01T /a HTTP/1.1\r\nHost: gw\r\n\r\n"},
		{name: "header name with a space", want: refuse,
			raw: "GET /a HTTP/1.1\r\nHost: gw\r\nX Injected: 1\r\n\r\n"},
		{name: "absolute-form target with another host", want: outcome{refuse: true, forward: []string{""},
			check: func(t *testing.T, reqs []testkit.RawRequest) {
				if reqs[0].Target != "/base/a" {
					t.Errorf("upstream target %q, want /base/a", reqs[0].Target)
				}
			}},
			raw: "GET http://evil.example/a HTTP/1.1\r\nHost: gw\r\n\r\n"},
		{name: "two Host headers", want: refuse,
			raw: "GET /a HTTP/1.1\r\nHost: gw\r\nHost: evil.example\r\n\r\n"},
		{name: "Host with userinfo", want: refuse,
			raw: "GET /a HTTP/1.1\r\nHost: user@evil.example\r\n\r\n"},
		{name: "HTTP-1.0 keep-alive, two pipelined requests", want: outcome{forward: []string{"abc", ""}},
			raw: "POST /a HTTP/1.0\r\nConnection: keep-alive\r\nContent-Length: 3\r\n\r\nabcGET /b HTTP/1.0\r\n\r\n"},
		{name: "HTTP-1.0 keep-alive with TE and CL", want: refuseOr("abc"),
			raw: fmt.Sprintf("POST /a HTTP/1.0\r\nConnection: keep-alive\r\nContent-Length: %d\r\nTransfer-Encoding: chunked\r\n\r\n%s", len(teEarly), teEarly)},
		{name: "HTTP-1.3 request line", want: refuseOr("abc"),
			raw: "POST /a HTTP/1.3\r\nHost: gw\r\nContent-Length: 3\r\n\r\nabc"},
		{name: "HTTP-2.0 in an HTTP-1 request line", want: outcome{refuse: true, status: []int{400, 505}},
			raw: "GET /a HTTP/2.0\r\nHost: gw\r\n\r\n"},
		{name: "HTTP-0.9 request line", want: outcome{refuse: true, closeOK: true, forward: []string{""}},
			raw: "GET /a\r\n\r\n"},
		{name: "Connection names Content-Length", want: refuseOr("abc"),
			raw: post + "Connection: Content-Length\r\nContent-Length: 3\r\n\r\nabc"},
		{name: "Connection names Transfer-Encoding", want: refuseOr("abc"),
			raw: post + "Connection: Transfer-Encoding\r\nTransfer-Encoding: chunked\r\n\r\n" + chunkedABC},
		{name: "Connection names Host", want: refuseOr(""),
			raw: "GET /a HTTP/1.1\r\nHost: gw\r\nConnection: keep-alive, Host\r\n\r\n"},
		{name: "request hidden in a body", want: outcome{forward: []string{smuggled}},
			raw: fmt.Sprintf(post+"Content-Length: %d\r\n\r\n%s", len(smuggled), smuggled)},
		{name: "pipelined request after a body (control)", want: outcome{forward: []string{"abc", ""}},
			raw: post + "Content-Length: 3\r\n\r\nabcGET /b HTTP/1.1\r\nHost: gw\r\n\r\n"},
	})
}

// TestHostileLimits: oversized and slow input.
func TestHostileLimits(t *testing.T) {
	t.Parallel()
	const post = "POST /a HTTP/1.1\r\nHost: gw\r\n"
	const slow = `{max_request_body: 1KiB, max_header_size: 8KiB, read_timeout: 300ms}`
	var many strings.Builder
	many.WriteString("GET /a HTTP/1.1\r\nHost: gw\r\n")
	for range 10000 {
		many.WriteString("h:1\r\n")
	}
	many.WriteString("\r\n")
	runHostileTable(t, []hostileCase{
		{name: "head larger than max_header_size", want: outcome{refuse: true, status: []int{431}},
			raw: "GET /a HTTP/1.1\r\nHost: gw\r\nX-Big: " + strings.Repeat("b", 16<<10) + "\r\n\r\n"},
		{name: "body larger than max_request_body", want: outcome{refuse: true, status: []int{413}},
			raw: post + "Content-Length: 2048\r\n\r\n" + strings.Repeat("a", 2048)},
		{name: "Expect 100-continue, body larger than max_request_body", want: outcome{refuse: true, status: []int{413, 417}},
			raw: post + "Expect: 100-continue\r\nContent-Length: 2048\r\n\r\n" + strings.Repeat("a", 2048)},
		{name: "chunked body larger than max_request_body", want: outcome{refuse: true, status: []int{413}},
			raw: post + "Transfer-Encoding: chunked\r\n\r\n" + chunk(strings.Repeat("a", 800)) + chunk(strings.Repeat("a", 800)) + "0\r\n\r\n"},
		{name: "slowloris head", server: slow, trickle: true, holdOpen: true,
			want: outcome{refuse: true, status: []int{408}, closeOK: true},
			raw:  "GET /a HTTP/1.1\r\nHost: gw\r\nX-Slow: " + strings.Repeat("s", 40) + "\r\n\r\n"},
		{name: "body stops midway, then EOF", want: refuseOrClose,
			raw: post + "Content-Length: 100\r\n\r\nabc"},
		{name: "body stops midway, connection held", server: slow, holdOpen: true,
			want: outcome{refuse: true, status: []int{408}, closeOK: true},
			raw:  post + "Content-Length: 100\r\n\r\nabc"},
		{name: "chunked body stops midway, then EOF", want: refuseOrClose,
			raw: post + "Transfer-Encoding: chunked\r\n\r\n10\r\nabc"},
		{name: "10000 headers within the size limit",
			server: `{max_request_body: 1KiB, max_header_size: 128KiB, read_timeout: 2s}`,
			want: outcome{refuse: true, status: []int{400, 431}, forward: []string{""},
				check: func(t *testing.T, reqs []testkit.RawRequest) {
					if n := len(reqs[0].Values("h")); n != 10000 {
						t.Errorf("the upstream received %d of the 10000 headers", n)
					}
				}},
			raw: many.String()},
	})
}

// TestHostilePaths holds the path-encoding cases of the dot-segment rule
// (PENDING: the table is written against the rule being implemented now;
// until it lands, the refused cases that use encoded separators, '\' or
// ';' fail, by design). The rule: a path whose segments, after
// percent-decoding (repeated while '%' sequences decode) and splitting at '/', '\' and ';',
// include "." or ".." is refused with 400 problem+json, nothing forwarded.
// Paths without such a segment are forwarded unchanged.
func TestHostilePaths(t *testing.T) {
	t.Parallel()
	bad := outcome{refuse: true, status: []int{400}}
	verbatim := func(path string) outcome {
		return outcome{forward: []string{""}, check: func(t *testing.T, reqs []testkit.RawRequest) {
			if reqs[0].Target != "/base"+path {
				t.Errorf("upstream target %q, want %q", reqs[0].Target, "/base"+path)
			}
		}}
	}
	get := func(path string) string { return "GET " + path + " HTTP/1.1\r\nHost: gw\r\n\r\n" }
	var cases []hostileCase
	for _, p := range []string{
		"/a/../b",
		"/a/./b",
		"/a/%2e%2e/b",
		"/a/%2E%2e/b",
		"/a/..%2fb",
		"/a/%2e%2e%2fb",
		"/a/.%2e%2fb",
		"/a/..%5cb",
		"/a/..\\b",
		"/a/..;/b",
		"/a/%252e%252e%252fb",
		"/a/%25252e%25252e/b",
		"/a/.\\b",
		"/a/b/..",
		"/a/%2e",
	} {
		cases = append(cases, hostileCase{name: "refused " + p, raw: get(p), want: bad})
	}
	// Overlong UTF-8 for '.': the decoded bytes are not '.', so the rule does
	// not refuse it; what matters is that it is never turned into "..".
	overlong := "/a/%c0%ae%c0%ae/b"
	ov := verbatim(overlong)
	ov.refuse = true
	cases = append(cases, hostileCase{name: "overlong UTF-8 dots " + overlong, raw: get(overlong), want: ov})
	// Controls: look like dot segments but are not.
	for _, p := range []string{"/a/...", "/a/.well-known/x", "/a/b.c", "/a/b%2ec", "/a/..b", "/a/b.."} {
		cases = append(cases, hostileCase{name: "forwarded " + p, raw: get(p), want: verbatim(p)})
	}
	runHostileTable(t, cases)
}

// TestRecorderFramesStrictly checks the suite's upstream itself: what it
// records for well-framed requests, and that it reports every framing a
// lenient reader might read differently (the suite relies on it to see a
// badly framed forward).
func TestRecorderFramesStrictly(t *testing.T) {
	t.Parallel()
	send := func(t *testing.T, raw string) *testkit.Recorder {
		t.Helper()
		rec := testkit.NewRecorder(t)
		conn, err := net.Dial("tcp", rec.Addr)
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close()
		_ = conn.SetDeadline(time.Now().Add(5 * time.Second))
		if _, err := io.WriteString(conn, raw); err != nil {
			t.Fatal(err)
		}
		_ = conn.(*net.TCPConn).CloseWrite()
		_, _ = io.ReadAll(conn) // the recorder answers, then sees EOF and closes
		return rec
	}
	t.Run("well framed", func(t *testing.T) {
		first := "POST /a HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\n\r\nabc"
		second := "POST /b HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: Chunked\r\n\r\n2;e=1\r\nde\r\n1\r\nf\r\n0\r\nT: 1\r\n\r\n"
		rec := send(t, first+second)
		reqs := rec.Requests()
		if errs := rec.Errors(); len(errs) != 0 || len(reqs) != 2 {
			t.Fatalf("requests %d, errors %q", len(reqs), errs)
		}
		if string(reqs[0].Raw) != first || string(reqs[0].Body) != "abc" || reqs[0].Target != "/a" || reqs[0].Chunked {
			t.Errorf("first: %+v", reqs[0])
		}
		if string(reqs[1].Raw) != second || string(reqs[1].Body) != "def" || !reqs[1].Chunked || reqs[1].Values("host")[0] != "x" {
			t.Errorf("second: %+v", reqs[1])
		}
	})
	const get = "GET /a HTTP/1.1\r\nHost: x\r\n"
	for _, raw := range []string{
		get + "Content-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
		get + "Content-Length: 3\r\nContent-Length: 3\r\n\r\nabc",
		get + "Content-Length: +3\r\n\r\nabc",
		get + "Transfer-Encoding: xchunked\r\n\r\n0\r\n\r\n",
		get + "Transfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
		get + "Transfer-Encoding: chunked\r\n\r\n0x3\r\nabc\r\n0\r\n\r\n",
		get + "Transfer-Encoding: chunked\r\n\r\n3\r\nabcd\r\n0\r\n\r\n",
		get + "Transfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n",
		get + "Content-Length: 10\r\n\r\nabc",
		"GET /a HTTP/1.1\nHost: x\r\n\r\n",
		"GET /a HTTP/1.1\r\nHost: x\rY: 1\r\n\r\n",
		get + "X: a\x00b\r\n\r\n",
		get + "X: a\r\n b\r\n\r\n",
		get + "X : a\r\n\r\n",
		get + "X Y: a\r\n\r\n",
		"GET /a\r\n\r\n",
		"GET  /a HTTP/1.1\r\n\r\n",
		"GET /a HTTP/2.0\r\n\r\n",
	} {
		t.Run(fmt.Sprintf("%q", raw), func(t *testing.T) {
			rec := send(t, raw)
			if errs := rec.Errors(); len(errs) != 1 || rec.Count() != 0 {
				t.Errorf("errors %q, requests %d; want exactly one framing error", errs, rec.Count())
			}
		})
	}
}

// FuzzGatewayFraming writes arbitrary bytes at a running gateway in front of
// a strict Recorder. Whatever arrives, the gateway never forwards a request
// the Recorder cannot frame, every forwarded request goes to the upstream's
// own Host under the upstream's base path, each forwarded request is
// answered with the upstream's 200 (no forward without its answer, no
// answer invented), and every other answer is a problem+json.
func FuzzGatewayFraming(f *testing.F) {
	const post = "POST /a HTTP/1.1\r\nHost: gw\r\n"
	teEarly := "3\r\nabc\r\n0\r\n\r\n" + smuggled
	for _, seed := range []string{
		"GET /a HTTP/1.1\r\nHost: gw\r\n\r\n",
		fmt.Sprintf(post+"Content-Length: %d\r\nTransfer-Encoding: chunked\r\n\r\n%s", len(teEarly), teEarly),
		post + "Transfer-Encoding: chunked\r\nContent-Length: 3\r\n\r\n" + chunk(smuggled) + "0\r\n\r\n",
		fmt.Sprintf(post+"Content-Length: 3\r\nContent-Length: %d\r\n\r\nabc%s", 3+len(smuggled), smuggled),
		post + "Transfer-Encoding: chunked, identity\r\n\r\n3\r\nabc\r\n0\r\n\r\n",
		fmt.Sprintf(post+"Content-Length: %d\r\nX-Pad: a\r\n Transfer-Encoding: chunked\r\n\r\n%s", len(teEarly), teEarly),
		post + "Transfer-Encoding: chunked\r\n\r\n10000000000000003\r\nabc\r\n0\r\n\r\n",
		post + "Transfer-Encoding: chunked\r\n\r\n3;x=y\r\nabc\r\n0\r\nT: 1\r\n\r\n",
		"POST /a HTTP/1.1\nHost: gw\nContent-Length: 3\n\nabc",
		post + "X-A: 1\rContent-Length: 40\r\nContent-Length: 3\r\n\r\nabc",
		"GET /a\x00b HTTP/1.1\r\nHost: gw\r\nX-A: a\x01b\r\n\r\n",
		"GET http://evil.example/a HTTP/1.1\r\nHost: gw\r\nHost: evil\r\n\r\n",
		"POST /a HTTP/1.0\r\nConnection: keep-alive\r\nContent-Length: 3\r\n\r\nabcGET /b HTTP/1.0\r\n\r\n",
		"GET /a\r\n\r\n",
		"GET /a/..%2fb HTTP/1.1\r\nHost: gw\r\n\r\n",
		"POST /a HTTP/1.3\r\nHost: gw\r\nContent-Length: 3\r\n\r\nabc",
		"GET /a HTTP/1.1\r\nHost: user@evil.example\r\n\r\n",
	} {
		f.Add([]byte(seed))
	}
	rec := testkit.NewRecorder(f)
	gw := testkit.StartGateway(f, fmt.Sprintf(`
log: {access_log: false}
server: %s
upstreams: {up: {url: "%s/base"}}
routes: {r: {path: "/{p:*}", upstream: up}}
`, hostileServer, rec.URL))
	addr := strings.TrimPrefix(gw.URL, "http://")
	f.Fuzz(func(t *testing.T, raw []byte) {
		before, errsBefore := rec.Count(), len(rec.Errors())
		conn, err := net.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close()
		_ = conn.SetDeadline(time.Now().Add(10 * time.Second)) // bounds the input
		_, _ = conn.Write(raw)                                 // the gateway may close early
		_ = conn.(*net.TCPConn).CloseWrite()
		out, err := io.ReadAll(conn)
		if err != nil {
			t.Fatalf("the gateway did not close after EOF: %v", err)
		}
		// The gateway answers only after the upstream answered, and the
		// recorder records before answering: nothing is still in flight.
		for _, e := range rec.Errors()[errsBefore:] {
			t.Fatalf("the upstream received a request it cannot frame: %s\nsent %q", e, raw)
		}
		reqs := rec.Requests()[before:]
		for _, r := range reqs {
			if hosts := r.Values("Host"); len(hosts) != 1 || hosts[0] != rec.Addr || !strings.HasPrefix(r.Target, "/base/") {
				t.Fatalf("forwarded %q for %q", r.Raw, raw)
			}
		}
		answers := parseAnswers(t, out)
		ok := 0
		for _, a := range answers {
			switch {
			case a.status == 200 && string(a.body) == "ok":
				ok++
			case a.ctype != "application/problem+json":
				t.Fatalf("answer %d %q is neither the upstream's nor a problem; sent %q", a.status, a.body, raw)
			}
		}
		if ok != len(reqs) {
			t.Fatalf("%d requests forwarded, %d upstream answers returned; sent %q, got %q", len(reqs), ok, raw, out)
		}
	})
}
