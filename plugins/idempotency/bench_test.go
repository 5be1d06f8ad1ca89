package idempotency_test

import (
	"fmt"
	"strings"
	"testing"

	"github.com/sluice-gw/sluice/internal/testkit"
	"github.com/valyala/fasthttp"
)

// BenchmarkReplay: the gateway answering a repeated keyed POST from the
// in-process store, end to end over loopback (client included).
func BenchmarkReplay(b *testing.B) {
	up := testkit.NewUpstream(b, func(ctx *fasthttp.RequestCtx) { ctx.SetBodyString(`{"id":"ch_1"}`) })
	gw := testkit.StartGateway(b, gatewayYAML(up.URL, "", "{}"))
	c := &fasthttp.HostClient{Addr: strings.TrimPrefix(gw.URL, "http://")}
	defer c.CloseIdleConnections()
	req, resp := fasthttp.AcquireRequest(), fasthttp.AcquireResponse()
	defer fasthttp.ReleaseRequest(req)
	defer fasthttp.ReleaseResponse(resp)
	req.SetRequestURI(gw.URL + "/charges")
	req.Header.SetMethod("POST")
	req.Header.Set("Idempotency-Key", "bench-key")
	req.SetBodyString(`{"amount":100}`)
	if err := c.Do(req, resp); err != nil || resp.StatusCode() != 200 {
		b.Fatal(err, resp.StatusCode())
	}
	b.ReportAllocs()
	b.ResetTimer()
	for b.Loop() {
		if err := c.Do(req, resp); err != nil {
			b.Fatal(err)
		}
	}
	b.StopTimer()
	if string(resp.Header.Peek("Idempotent-Replayed")) != "true" || up.Count() != 1 {
		b.Fatalf("not replayed: provider calls %d", up.Count())
	}
}

// BenchmarkUnkeyedPost: a POST without a key through a route with the
// plugin, against the same route without it (the plugin's cost).
func BenchmarkUnkeyedPost(b *testing.B) {
	for _, block := range []string{"{}", "{enabled: false}"} {
		b.Run(fmt.Sprint("idempotency=", block), func(b *testing.B) {
			up := testkit.NewUpstream(b, func(ctx *fasthttp.RequestCtx) { ctx.SetBodyString(`{"id":"ch_1"}`) })
			gw := testkit.StartGateway(b, gatewayYAML(up.URL, "", block))
			c := &fasthttp.HostClient{Addr: strings.TrimPrefix(gw.URL, "http://")}
			defer c.CloseIdleConnections()
			req, resp := fasthttp.AcquireRequest(), fasthttp.AcquireResponse()
			defer fasthttp.ReleaseRequest(req)
			defer fasthttp.ReleaseResponse(resp)
			req.SetRequestURI(gw.URL + "/charges")
			req.Header.SetMethod("POST")
			req.SetBodyString(`{"amount":100}`)
			b.ReportAllocs()
			for b.Loop() {
				if err := c.Do(req, resp); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
