package proxy_test

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/sluice-gw/sluice/internal/testkit"
	"github.com/sluice-gw/sluice/proxy"
	"github.com/valyala/fasthttp"
)

// warmProbe stands in for the cache: it learns its successor (Chained) and,
// while its config serves, sends one internal request down it.
type warmProbe struct {
	next proxy.Handler
	mu   sync.Mutex
	seen []string // what the background work saw, in order
}

func (p *warmProbe) Handle(ctx *fasthttp.RequestCtx, ex *proxy.Exchange, next proxy.Handler) error {
	return next.Handle(ctx, ex)
}

func (p *warmProbe) Chained(next proxy.Handler) { p.next = next }

func (p *warmProbe) note(s string) {
	p.mu.Lock()
	p.seen = append(p.seen, s)
	p.mu.Unlock()
}

func (p *warmProbe) log() []string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return append([]string(nil), p.seen...)
}

type warmProbeConfig struct {
	Path string `koanf:"path"`
}

func warmProbeRegistry(built chan<- *warmProbe) *proxy.Registry {
	return testkit.WithStandIns(proxy.Define("cache", func(c *warmProbeConfig, b *proxy.Build) (proxy.Plugin, error) {
		p := &warmProbe{}
		rt := b.Route
		b.Background(func(ctx context.Context) {
			req, resp := fasthttp.AcquireRequest(), fasthttp.AcquireResponse()
			defer fasthttp.ReleaseRequest(req)
			defer fasthttp.ReleaseResponse(resp)
			req.SetRequestURI(c.Path)
			err := rt.Internal(ctx, req, resp, proxy.HandlerFunc(func(fctx *fasthttp.RequestCtx, ex *proxy.Exchange) error {
				p.note(fmt.Sprintf("internal=%v consumer=%q path=%s", ex.Internal(), ex.Consumer, ex.Path()))
				return p.next.Handle(fctx, ex)
			}))
			p.note(fmt.Sprintf("err=%v status=%d body=%s", err, resp.StatusCode(), resp.Body()))
			<-ctx.Done()
			p.note("stopped")
			// Once the config no longer serves, an internal request is refused.
			p.note(fmt.Sprintf("after stop: %v", rt.Internal(ctx, req, resp, p.next)))
		})
		built <- p
		return p, nil
	}))
}

// A plugin's internal request runs the pipeline after it (inject_auth,
// the upstream call) and not the stages before it (authenticate), counts
// in no route metric, is logged as internal, and stops with its config.
func TestInternalRequestRunsTheRestOfThePipeline(t *testing.T) {
	up := testkit.NewUpstream(t, func(ctx *fasthttp.RequestCtx) { ctx.SetBodyString("warm") })
	built := make(chan *warmProbe, 4)
	yaml := fmt.Sprintf(`
log: {access_log: true}
consumers: {app: {keys: ["app-key-0123456789"]}}
upstreams: {up: {url: "%s"}}
routes:
  r:
    path: "/api/{p:*}"
    upstream: up
    strip_prefix: /api
    plugins:
      authenticate: {}
      cache: {path: "/api/items/1"}
      inject_auth: {type: header, name: X-Provider-Key, value: "provider-secret-value"}
`, up.URL)
	gw := testkit.StartGateway(t, yaml, testkit.Options{Registry: warmProbeRegistry(built)})
	p := <-built
	testkit.Eventually(t, 5*time.Second, func() bool { return len(p.log()) >= 2 }, "the internal request did not complete")
	got := p.log()
	if got[0] != `internal=true consumer="" path=/api/items/1` {
		t.Errorf("the stage after the plugin saw %s", got[0])
	}
	if got[1] != "err=<nil> status=200 body=warm" {
		t.Errorf("internal request: %s", got[1])
	}
	if up.Count() != 1 {
		t.Fatalf("upstream saw %d requests, want 1", up.Count())
	}
	r := up.Last(t)
	if r.URI != "/items/1" || r.Header.Get("X-Provider-Key") != "provider-secret-value" {
		t.Errorf("upstream saw %s with X-Provider-Key %q: want strip_prefix applied and the credential injected", r.URI, r.Header.Get("X-Provider-Key"))
	}
	if r.Header.Get("X-Request-Id") == "" || r.Header.Get("X-Forwarded-For") != "" {
		t.Errorf("X-Request-Id %q, X-Forwarded-For %q: want an id and no caller address", r.Header.Get("X-Request-Id"), r.Header.Get("X-Forwarded-For"))
	}
	// No caller: no route metric counts it; the upstream call counts.
	m := gw.Metrics(t)
	if v, ok := m.Value("sluice_requests_total", "route", "r"); ok && v != 0 {
		t.Errorf("sluice_requests_total{route=r} = %v, want no internal request counted", v)
	}
	if v, _ := m.Value("sluice_upstream_duration_seconds", "upstream", "up", "outcome", "ok"); v != 1 {
		t.Errorf("upstream outcome ok observed %v times, want 1", v)
	}
	logs := gw.Logs.String()
	if !strings.Contains(logs, `"internal":true`) || !strings.Contains(logs, `"path":"/api/items/1"`) {
		t.Errorf("no internal access line in the log:\n%s", logs)
	}
	if strings.Contains(logs, "provider-secret-value") {
		t.Error("the injected credential is in the log")
	}

	// A reload stops the old config's background work at once and starts
	// the new one's.
	if err := gw.Reload(); err != nil {
		t.Fatal(err)
	}
	p2 := <-built
	testkit.Eventually(t, 5*time.Second, func() bool { return len(p.log()) == 4 }, "the old config's background work did not stop")
	if got := p.log()[3]; !strings.HasPrefix(got, "after stop: context canceled") {
		t.Errorf("internal request after stop: %s", got)
	}
	testkit.Eventually(t, 5*time.Second, func() bool { return len(p2.log()) >= 2 }, "the new config's background work did not run")
	if err := gw.Stop(); err != nil {
		t.Fatal(err)
	}
	if got := p2.log(); len(got) != 4 || got[2] != "stopped" {
		t.Errorf("at shutdown the background work saw %q, want it stopped before Shutdown returned", got)
	}
}

// A route outside a serving gateway refuses internal requests.
func TestInternalRequestNeedsAServingConfig(t *testing.T) {
	b, _, release := proxy.NewBuild("r", "up")
	defer release()
	req, resp := fasthttp.AcquireRequest(), fasthttp.AcquireResponse()
	defer fasthttp.ReleaseRequest(req)
	defer fasthttp.ReleaseResponse(resp)
	err := b.Route.Internal(context.Background(), req, resp, proxy.HandlerFunc(func(*fasthttp.RequestCtx, *proxy.Exchange) error {
		t.Error("the handler ran")
		return nil
	}))
	if err == nil || errors.Is(err, context.Canceled) {
		t.Errorf("err = %v, want a refusal", err)
	}
}
