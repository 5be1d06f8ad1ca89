package proxy_test

import (
	"bufio"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/valyala/fasthttp"
)

// TestDirectRouteAnswersStartBlank: a route without plugins does not clear
// the response before its first attempt (the server hands it over blank).
// Nothing of one answer may reach the next on the same connection, sent one
// after the other or pipelined, after a HEAD or a GET.
func TestDirectRouteAnswersStartBlank(t *testing.T) {
	t.Parallel()
	gw, _ := gatewayFor(t, func(ctx *fasthttp.RequestCtx) {
		if string(ctx.Path()) == "/one" {
			ctx.SetStatusCode(201)
			ctx.Response.Header.Set("X-One", "1")
			ctx.Response.Header.Set("Set-Cookie", "a=b")
			ctx.Response.Header.SetContentType("text/x-one")
			ctx.Response.SetBodyString("one")
			return
		}
		ctx.Response.Header.SetNoDefaultContentType(true)
		ctx.Response.SetBodyString("two")
	}, `
log: {access_log: false}
upstreams:
  up: {url: "%[1]s"}
routes:
  direct: {path: "/{path:*}", upstream: up}
`)
	req := func(method, path string) string {
		return method + " " + path + " HTTP/1.1\r\nHost: gw.test\r\n\r\n"
	}
	check := func(t *testing.T, r *bufio.Reader, method, path string) {
		t.Helper()
		resp, err := http.ReadResponse(r, &http.Request{Method: method})
		if err != nil {
			t.Fatalf("%s %s: %v", method, path, err)
		}
		body, _ := io.ReadAll(resp.Body)
		_ = resp.Body.Close()
		if path == "/one" {
			if resp.StatusCode != 201 || resp.Header.Get("X-One") != "1" || resp.Header.Get("Set-Cookie") != "a=b" ||
				resp.Header.Get("Content-Type") != "text/x-one" {
				t.Fatalf("%s /one: %d %v", method, resp.StatusCode, resp.Header)
			}
			if want := map[string]string{"GET": "one", "HEAD": ""}[method]; string(body) != want {
				t.Fatalf("%s /one: body %q, want %q", method, body, want)
			}
			return
		}
		if resp.StatusCode != 200 || string(body) != "two" {
			t.Fatalf("%s /two after /one: %d %q", method, resp.StatusCode, body)
		}
		for _, k := range []string{"X-One", "Set-Cookie", "Content-Type"} {
			if v := resp.Header.Get(k); v != "" {
				t.Errorf("/two after /one carries %s: %q", k, v)
			}
		}
	}
	seq := [][2]string{{"GET", "/one"}, {"GET", "/two"}, {"HEAD", "/one"}, {"GET", "/two"}, {"GET", "/one"}, {"GET", "/two"}}
	t.Run("one after the other", func(t *testing.T) {
		conn := dial(t, gw.URL, 5*time.Second)
		r := bufio.NewReader(conn)
		for _, s := range seq {
			if _, err := io.WriteString(conn, req(s[0], s[1])); err != nil {
				t.Fatal(err)
			}
			check(t, r, s[0], s[1])
		}
	})
	t.Run("pipelined", func(t *testing.T) {
		conn := dial(t, gw.URL, 5*time.Second)
		var all strings.Builder
		for _, s := range seq {
			all.WriteString(req(s[0], s[1]))
		}
		if _, err := io.WriteString(conn, all.String()); err != nil {
			t.Fatal(err)
		}
		r := bufio.NewReader(conn)
		for _, s := range seq {
			check(t, r, s[0], s[1])
		}
	})
}
