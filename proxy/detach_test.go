package proxy_test

import (
	"fmt"
	"testing"
	"time"

	"github.com/sluice-gw/sluice/internal/testkit"
	"github.com/sluice-gw/sluice/proxy"
	"github.com/valyala/fasthttp"
)

// detacher answers the caller at once and repeats the request in the
// background through the rest of the pipeline, as a stale-while-revalidate
// refresh does.
type detacher struct{ done chan string }

type detacherConfig struct{}

func (d *detacher) Handle(ctx *fasthttp.RequestCtx, ex *proxy.Exchange, next proxy.Handler) error {
	ex.Consumer = "alice"
	bctx := new(fasthttp.RequestCtx)
	bctx.Init(&ctx.Request, nil, nil)
	bex := ex.Detach()
	go func() {
		defer bex.Release()
		err := next.Handle(bctx, bex)
		d.done <- fmt.Sprintf("%v|%s|%s|%d|%v|%v|%s", err, bex.Consumer, bex.RawURI(), bctx.Response.StatusCode(),
			bex.HasDeadline(), bex.Remaining() > 0 && bex.Remaining() <= time.Second, bex.Route.Name)
	}()
	ctx.SetStatusCode(202)
	return nil
}

func TestDetachedExchangeGoesThroughThePipeline(t *testing.T) {
	up := testkit.NewUpstream(t, nil)
	d := &detacher{done: make(chan string, 1)}
	reg := testkit.WithStandIns(proxy.Define("cache", func(*detacherConfig, *proxy.Build) (proxy.Plugin, error) { return d, nil }))
	gw := testkit.StartGateway(t, fmt.Sprintf(`
upstreams: {up: {url: "%s"}}
routes: {r: {path: "/{p:*}", upstream: up, deadline: 1s, plugins: {cache: {}}}}
`, up.URL), testkit.Options{Registry: reg})
	if r := testkit.Do(t, "GET", gw.URL+"/x?y=1", ""); r.Status != 202 {
		t.Fatalf("caller got %d", r.Status)
	}
	select {
	case got := <-d.done:
		if want := "<nil>|alice|/x?y=1|200|true|true|r"; got != want {
			t.Errorf("detached call: %s, want %s", got, want)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("the detached call never finished")
	}
	if up.Last(t).URI != "/x?y=1" {
		t.Errorf("upstream got %q", up.Last(t).URI)
	}
}
