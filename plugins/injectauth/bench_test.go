package injectauth_test

import (
	"testing"

	"github.com/sluice-gw/sluice/internal/testkit"
	"github.com/valyala/fasthttp"
)

func upstream1K(ctx *fasthttp.RequestCtx) {
	ctx.Response.Header.SetContentType("application/json")
	ctx.Response.SetBodyRaw(testkit.Body1K)
}

const benchYAML = `
log: {access_log: false}
` + consumers + `
upstreams:
  up: {url: "http://upstream.test", plugins: {authenticate: {}}}
routes:
  auth-only: {path: "/auth/{p:*}", upstream: up, strip_prefix: "/auth"}
  bearer:
    path: "/bearer/{p:*}"
    upstream: up
    strip_prefix: "/bearer"
    plugins: {inject_auth: {type: bearer, token: "sk_live_payments_secret"}}
  header:
    path: "/header/{p:*}"
    upstream: up
    strip_prefix: "/header"
    plugins: {inject_auth: {type: header, name: X-Provider-Key, value: "provider-header-secret"}}
  query:
    path: "/query/{p:*}"
    upstream: up
    strip_prefix: "/query"
    plugins: {inject_auth: {type: query, name: api_key, value: "provider-query-secret"}}
  basic:
    path: "/basic/{p:*}"
    upstream: up
    strip_prefix: "/basic"
    plugins: {inject_auth: {type: basic, username: acct, password: "basic-password-secret"}}
  pool:
    path: "/pool/{p:*}"
    upstream: up
    strip_prefix: "/pool"
    plugins: {inject_auth: {type: header, name: X-Key, keys: [pool-key-a, pool-key-b, pool-key-c]}}
  pc:
    path: "/pc/{p:*}"
    upstream: up
    strip_prefix: "/pc"
    plugins: {inject_auth: {type: bearer, token: shared-token, consumers: {billing: {token: billing-token}}}}
  hmac:
    path: "/hmac/{p:*}"
    upstream: up
    strip_prefix: "/hmac"
    plugins: {inject_auth: {type: hmac, secret: "hmac-signing-secret"}}
`

func BenchmarkInjectAuth(b *testing.B) {
	im := testkit.NewInMemory(b, benchYAML, upstream1K)
	for _, bc := range []struct{ name, path string }{
		{"authenticate-only", "/auth/v1/x"},
		{"bearer", "/bearer/v1/x"},
		{"header", "/header/v1/x"},
		{"query", "/query/v1/x?limit=5"},
		{"basic", "/basic/v1/x"},
		{"pool", "/pool/v1/x"},
		{"per-consumer", "/pc/v1/x"},
		{"hmac", "/hmac/v1/x?a=1"},
	} {
		b.Run(bc.name, func(b *testing.B) {
			req := fasthttp.AcquireRequest()
			resp := fasthttp.AcquireResponse()
			req.SetRequestURI("http://gateway" + bc.path)
			req.Header.SetMethod("POST")
			req.SetBodyString(`{"amount":100}`)
			b.ReportAllocs()
			for b.Loop() {
				req.Header.Set("X-Api-Key", billingKey)
				if err := im.Client.Do(req, resp); err != nil {
					b.Fatal(err)
				}
				if resp.StatusCode() != 200 {
					b.Fatalf("status %d", resp.StatusCode())
				}
			}
		})
	}
}
