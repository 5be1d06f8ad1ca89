package proxy_test

import (
	"bufio"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/sluice-gw/sluice/internal/testkit"
	"github.com/valyala/fasthttp"
)

func TestRequestLimits(t *testing.T) {
	t.Parallel()
	gw, up := gatewayFor(t, nil, `
log: {access_log: false}
server:
  max_request_body: 1KiB
  max_header_size: 4KiB
upstreams: {up: {url: "%[1]s"}}
routes: {r: {path: "/{p:*}", upstream: up}}
`)
	t.Run("body too large", func(t *testing.T) {
		resp := testkit.Do(t, "POST", gw.URL+"/x", strings.Repeat("a", 2048))
		p := testkit.WantProblem(t, resp, 413, "request_too_large")
		if !strings.Contains(p["detail"].(string), "1KiB") {
			t.Errorf("detail does not name the limit: %v", p["detail"])
		}
	})
	t.Run("head too large", func(t *testing.T) {
		resp := testkit.Do(t, "GET", gw.URL+"/x", "", "X-Big", strings.Repeat("b", 8<<10))
		testkit.WantProblem(t, resp, 431, "request_too_large")
	})
	t.Run("malformed", func(t *testing.T) {
		for _, raw := range []string{
			"GARBAGE\r\n\r\n",
			"GET /x HTTP/1.1\r\nHost: gw\r\nContent-Length: abc\r\n\r\n",
			"GET /x HTTP/1.1\r\nHost: gw\r\nBad Header Name: x\r\n\r\n",
		} {
			out := rawRequest(t, gw.URL, raw)
			if !strings.HasPrefix(out, "400\n") || !strings.Contains(out, `"code":"bad_request"`) {
				t.Errorf("%q: want a 400 bad_request problem, got %s", raw, out)
			}
		}
	})
	t.Run("limits never reach the upstream", func(t *testing.T) {
		if n := up.Count(); n != 0 {
			t.Errorf("upstream received %d requests", n)
		}
	})
}

func TestMaxInflightOverloaded(t *testing.T) {
	t.Parallel()
	release := make(chan struct{})
	entered := make(chan struct{}, 16)
	gw, _ := gatewayFor(t, func(ctx *fasthttp.RequestCtx) {
		entered <- struct{}{}
		<-release
	}, `
log: {access_log: false}
server: {max_inflight: 2}
upstreams: {up: {url: "%[1]s"}}
routes: {r: {path: "/{p:*}", upstream: up}}
`)
	var wg sync.WaitGroup
	statuses := make(chan int, 2)
	for range 2 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			resp, err := testkit.TryDo("GET", gw.URL+"/slow", "")
			if err != nil {
				statuses <- -1
				return
			}
			statuses <- resp.Status
		}()
	}
	<-entered // both slots taken
	<-entered
	resp := testkit.Do(t, "GET", gw.URL+"/third", "")
	p := testkit.WantProblem(t, resp, 503, "overloaded")
	if resp.Header.Get("Retry-After") != "1" || p["retryable"] != true {
		t.Errorf("Retry-After = %q, retryable = %v", resp.Header.Get("Retry-After"), p["retryable"])
	}
	close(release)
	wg.Wait()
	close(statuses)
	for s := range statuses {
		if s != 200 {
			t.Errorf("a request inside the limit got %d", s)
		}
	}
	if resp := testkit.Do(t, "GET", gw.URL+"/after", ""); resp.Status != 200 {
		t.Errorf("after the burst: %d", resp.Status)
	}
}

func TestKeepAliveFromCaller(t *testing.T) {
	t.Parallel()
	gw, _ := gatewayFor(t, nil, `
log: {access_log: false}
upstreams: {up: {url: "%[1]s"}}
routes: {r: {path: "/{p:*}", upstream: up}}
`)
	conn := dial(t, gw.URL, 3*time.Second)
	br := bufio.NewReader(conn)
	// pipelined: two requests written at once, answered in order
	if _, err := conn.Write([]byte("GET /1 HTTP/1.1\r\nHost: gw\r\n\r\nGET /2 HTTP/1.1\r\nHost: gw\r\nConnection: close\r\n\r\n")); err != nil {
		t.Fatal(err)
	}
	for i := range 2 {
		resp, err := http.ReadResponse(br, nil)
		if err != nil {
			t.Fatalf("response %d: %v", i, err)
		}
		resp.Body.Close()
		if resp.StatusCode != 200 {
			t.Fatalf("response %d: %d", i, resp.StatusCode)
		}
		if i == 1 && !resp.Close {
			t.Errorf("the caller's Connection: close was not honoured")
		}
	}
}

func TestSlowCallerGets408(t *testing.T) {
	t.Parallel()
	gw, up := gatewayFor(t, nil, `
log: {access_log: false}
server: {read_timeout: 200ms}
upstreams: {up: {url: "%[1]s"}}
routes: {r: {path: "/{p:*}", upstream: up}}
`)
	conn := dial(t, gw.URL, 3*time.Second)
	if _, err := conn.Write([]byte("GET /x HTTP/1.1\r\nHost: gw\r\nX-Half: ")); err != nil {
		t.Fatal(err)
	}
	resp, err := http.ReadResponse(bufio.NewReader(conn), nil)
	if err != nil {
		t.Fatalf("no answer to a request that never completed: %v", err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != 408 || resp.Header.Get("Content-Type") != "application/problem+json" {
		t.Errorf("status %d, content type %q", resp.StatusCode, resp.Header.Get("Content-Type"))
	}
	if up.Count() != 0 {
		t.Errorf("the incomplete request reached the upstream")
	}
}
