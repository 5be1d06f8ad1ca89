package bench

import (
	"net"
	"testing"

	"github.com/sluice-gw/sluice/internal/testkit"
	"github.com/valyala/fasthttp"
	"github.com/valyala/fasthttp/fasthttputil"
)

// origin answers like the peerbench upstream: 1 KiB of JSON on /json,
// a provider-style JSON error on /fail.
func origin(ctx *fasthttp.RequestCtx) {
	if string(ctx.Path()) == "/fail" {
		ctx.SetStatusCode(503)
		ctx.Response.Header.SetContentType("application/json")
		ctx.Response.Header.Set("Retry-After", "3")
		ctx.Response.SetBodyString(`{"error":{"message":"service unavailable","code":"unavailable"}}`)
		return
	}
	ctx.Response.Header.SetContentType("application/json")
	ctx.Response.Header.Set("Cache-Control", "public, max-age=60")
	ctx.Response.SetBodyRaw(testkit.Body1K)
}

const benchYAML = `
log: {access_log: false}
consumers:
  bench: {keys: ["bench-key-0123456789"]}
upstreams:
  up: {url: "http://upstream.test"}
routes:
  static: {path: "/json", upstream: up}
  catchall: {path: "/api/{path:*}", upstream: up, strip_prefix: "/api"}
  chain:
    path: "/chain/{path:*}"
    upstream: up
    strip_prefix: "/chain"
    plugins:
      normalize_errors: {message: "/error/message", code: "/error/code"}
      headers:
        request: {set: {X-Client: sluice, X-Api-Version: "2024-06-01"}, remove: [Cookie]}
        response: {set: {X-Served-By: sluice}, remove: [Server]}
  full:
    path: "/full/{path:*}"
    upstream: up
    strip_prefix: "/full"
    plugins:
      normalize_errors: {message: "/error/message", code: "/error/code"}
      authenticate: {}
      rate_limit:
        limits:
          - {rate: 1000000, burst: 1000000, key: consumer}
          - {rate: 1000000, burst: 1000000, key: upstream}
        respect_upstream: true
      headers:
        request: {set: {X-Client: sluice}, remove: [Cookie]}
        response: {set: {X-Served-By: sluice}}
      inject_auth: {type: bearer, token: "bench-provider-token"}
      retry: {attempts: 3}
      circuit_breaker: {consecutive_failures: 5}
`

func run(b *testing.B, c *fasthttp.HostClient, uri string, wantStatus int) {
	req := fasthttp.AcquireRequest()
	defer fasthttp.ReleaseRequest(req)
	runReq(b, c, req, uri, wantStatus)
}

func runReq(b *testing.B, c *fasthttp.HostClient, req *fasthttp.Request, uri string, wantStatus int) {
	resp := fasthttp.AcquireResponse()
	defer fasthttp.ReleaseResponse(resp)
	req.SetRequestURI(uri)
	b.ReportAllocs()
	for b.Loop() {
		if err := c.Do(req, resp); err != nil {
			b.Fatal(err)
		}
		if resp.StatusCode() != wantStatus {
			b.Fatalf("%s: status %d, want %d", uri, resp.StatusCode(), wantStatus)
		}
	}
}

// BenchmarkDirect is the floor: the client talks to the origin, no gateway.
func BenchmarkDirect(b *testing.B) {
	im := testkit.NewInMemory(b, benchYAML, origin)
	run(b, im.Direct, "http://upstream/json", 200)
}

// BenchmarkPassThrough proxies a static route without plugins.
func BenchmarkPassThrough(b *testing.B) {
	im := testkit.NewInMemory(b, benchYAML, origin)
	run(b, im.Client, "http://gateway/json", 200)
}

// BenchmarkPassThroughCatchAll proxies a {path:*} route with strip_prefix and a query.
func BenchmarkPassThroughCatchAll(b *testing.B) {
	im := testkit.NewInMemory(b, benchYAML, origin)
	run(b, im.Client, "http://gateway/api/json?page=2&per_page=50", 200)
}

// BenchmarkChain runs normalize_errors and headers (request and response edits).
func BenchmarkChain(b *testing.B) {
	im := testkit.NewInMemory(b, benchYAML, origin)
	run(b, im.Client, "http://gateway/chain/json", 200)
}

// BenchmarkFullChain runs every plugin but the cache, as a caller with a
// consumer key: authenticate, two rate limits, headers, inject_auth, retry,
// circuit_breaker and normalize_errors (the budget: within 2x of pass-through).
func BenchmarkFullChain(b *testing.B) {
	im := testkit.NewInMemory(b, benchYAML, origin)
	req := fasthttp.AcquireRequest()
	defer fasthttp.ReleaseRequest(req)
	req.Header.Set("X-Api-Key", "bench-key-0123456789")
	runReq(b, im.Client, req, "http://gateway/full/json", 200)
}

// BenchmarkErrorRouteNotFound is the gateway's own error path: 404 problem+json.
func BenchmarkErrorRouteNotFound(b *testing.B) {
	im := testkit.NewInMemory(b, benchYAML, origin)
	run(b, im.Client, "http://gateway/nowhere", 404)
}

// BenchmarkErrorNormalized is an upstream 503 rewritten by normalize_errors.
func BenchmarkErrorNormalized(b *testing.B) {
	im := testkit.NewInMemory(b, benchYAML, origin)
	run(b, im.Client, "http://gateway/chain/fail", 503)
}

// BenchmarkBareFasthttpProxy is the least a fasthttp proxy can do: one
// handler calling HostClient.Do, nothing else (no routing, no header hygiene,
// no metrics). The gateway's overhead is measured against it.
func BenchmarkBareFasthttpProxy(b *testing.B) {
	upLn := fasthttputil.NewInmemoryListener()
	up := &fasthttp.Server{Handler: origin}
	go func() { _ = up.Serve(upLn) }()
	defer func() { _ = up.Shutdown() }()

	hc := &fasthttp.HostClient{Addr: "upstream", Dial: func(string) (net.Conn, error) { return upLn.Dial() }, MaxConns: 1024}
	gwLn := fasthttputil.NewInmemoryListener()
	srv := &fasthttp.Server{Handler: func(ctx *fasthttp.RequestCtx) {
		if err := hc.Do(&ctx.Request, &ctx.Response); err != nil {
			ctx.Error(err.Error(), 502)
		}
	}}
	go func() { _ = srv.Serve(gwLn) }()
	defer func() { _ = srv.Shutdown() }()

	c := &fasthttp.HostClient{Addr: "gateway", Dial: func(string) (net.Conn, error) { return gwLn.Dial() }, MaxConns: 1024}
	run(b, c, "http://gateway/json", 200)
}
