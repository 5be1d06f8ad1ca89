package proxy_test

import (
	"fmt"
	"testing"

	"github.com/sluice-gw/sluice/internal/testkit"
	"github.com/sluice-gw/sluice/proxy"
	"github.com/sluice-gw/sluice/proxy/httpx"
	"github.com/valyala/fasthttp"
)

// stamper adds response headers through the exchange, then refuses the call
// when asked to: the headers must reach the caller either way.
type stamper struct{}

var (
	hdrState = httpx.NewName("x-state") // sent as X-State
	hdrOther = httpx.NewName("X-Other")
)

func (stamper) Handle(ctx *fasthttp.RequestCtx, ex *proxy.Exchange, next proxy.Handler) error {
	ex.AddResponseHeader(hdrState, []byte("one"))
	ex.AddResponseHeader(hdrOther, []byte("a"))
	ex.AddResponseHeader(hdrState, []byte("two"))
	ex.AddResponseHeader(hdrOther, []byte("b"))
	if len(ctx.Request.Header.Peek("X-Refuse")) > 0 {
		return proxy.NewError(proxy.CodeForbidden, "refused")
	}
	return next.Handle(ctx, ex)
}

func TestAddResponseHeaderReachesAnswersAndErrors(t *testing.T) {
	t.Parallel()
	reg := testkit.WithStandIns(proxy.Define("authenticate", func(*tracerConfig, *proxy.Build) (proxy.Plugin, error) { return stamper{}, nil }))
	up := testkit.NewUpstream(t, nil)
	gw := testkit.StartGateway(t, fmt.Sprintf(`
log: {access_log: false}
upstreams: {up: {url: "%s"}}
routes: {r: {path: "/{p:*}", upstream: up, plugins: {authenticate: {}}}}
`, up.URL), testkit.Options{Registry: reg})
	for _, refuse := range []bool{false, true} {
		h := []string{}
		if refuse {
			h = append(h, "X-Refuse", "1")
		}
		resp := testkit.Do(t, "GET", gw.URL+"/x", "", h...)
		if refuse {
			testkit.WantProblem(t, resp, 403, "forbidden")
		} else if resp.Status != 200 {
			t.Fatalf("status %d", resp.Status)
		}
		// values of one name go out as one list-valued field line
		if got := resp.Header.Values("X-State"); len(got) != 1 || got[0] != "one, two" {
			t.Errorf("refuse=%v: X-State %q, want [\"one, two\"]", refuse, got)
		}
		if got := resp.Header.Values("X-Other"); len(got) != 1 || got[0] != "a, b" {
			t.Errorf("refuse=%v: X-Other %q, want [\"a, b\"] (interleaved with X-State)", refuse, got)
		}
	}
}
