//go:build !race

package proxy_test

import (
	"net"
	"strings"
	"testing"

	"github.com/sluice-gw/sluice/internal/testkit"
	"github.com/valyala/fasthttp"
)

func upstreamJSON(ctx *fasthttp.RequestCtx) {
	ctx.Response.Header.SetContentType("application/json")
	ctx.Response.SetBodyRaw(testkit.Body1K)
}

const allocYAML = `
log: {access_log: false}
upstreams:
  up: {url: "http://upstream.test"}
routes:
  static: {path: "/json", upstream: up}
  catchall: {path: "/api/{path:*}", upstream: up, strip_prefix: "/api"}
`

// TestPassThroughAllocs asserts the pass-through budget: proxying a request
// through a route without plugins allocates nothing, counted over the whole
// process (client, gateway and upstream).
func TestPassThroughAllocs(t *testing.T) {
	im := testkit.NewInMemory(t, allocYAML, upstreamJSON)
	for _, uri := range []string{"http://gateway/json", "http://gateway/api/v1/items?limit=10"} {
		req := fasthttp.AcquireRequest()
		resp := fasthttp.AcquireResponse()
		req.SetRequestURI(uri)
		do := func() {
			if err := im.Client.Do(req, resp); err != nil {
				t.Fatal(err)
			}
			if resp.StatusCode() != 200 || len(resp.Body()) != 1024 {
				t.Fatalf("%s: status %d, %d bytes", uri, resp.StatusCode(), len(resp.Body()))
			}
		}
		for range 100 { // warm pools, metric children, buffers
			do()
		}
		if n := testing.AllocsPerRun(1000, do); n != 0 {
			t.Errorf("%s: %v allocs per request, want 0", uri, n)
		}
	}
}

// TestPassThroughAllocsOverTCP is the same budget over real loopback
// sockets, where every reused upstream connection is checked before use
// (transport.go): the check allocates nothing either.
func TestPassThroughAllocsOverTCP(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &fasthttp.Server{Handler: upstreamJSON, NoDefaultServerHeader: true, NoDefaultDate: true}
	go func() { _ = srv.Serve(ln) }()
	t.Cleanup(func() { _ = srv.Shutdown() })
	gw := testkit.StartGateway(t, `
log: {access_log: false}
upstreams:
  up: {url: "http://`+ln.Addr().String()+`"}
routes:
  static: {path: "/json", upstream: up}
`)
	client := &fasthttp.HostClient{Addr: strings.TrimPrefix(gw.URL, "http://"), MaxConns: 16}
	req := fasthttp.AcquireRequest()
	resp := fasthttp.AcquireResponse()
	req.SetRequestURI(gw.URL + "/json")
	do := func() {
		if err := client.Do(req, resp); err != nil {
			t.Fatal(err)
		}
		if resp.StatusCode() != 200 || len(resp.Body()) != 1024 {
			t.Fatalf("status %d, %d bytes", resp.StatusCode(), len(resp.Body()))
		}
	}
	for range 100 {
		do()
	}
	if n := testing.AllocsPerRun(1000, do); n != 0 {
		t.Errorf("%v allocs per request over TCP, want 0", n)
	}
}
