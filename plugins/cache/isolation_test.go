package cache_test

import (
	"fmt"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/sluice-gw/sluice/internal/testkit"
	"github.com/sluice-gw/sluice/proxy"
	"github.com/valyala/fasthttp"
)

// Stand-ins for authenticate and inject_auth (built by other plugins): the
// caller's X-Api-Key names the consumer, and each consumer's own provider
// token is injected after the cache, as inject_auth does.
type authConfig struct{}

type authenticate struct{}

func (authenticate) Handle(ctx *fasthttp.RequestCtx, ex *proxy.Exchange, next proxy.Handler) error {
	ex.Consumer = string(ctx.Request.Header.Peek("X-Api-Key"))
	ctx.Request.Header.Del("X-Api-Key")
	if ex.Consumer == "" {
		return proxy.NewError(proxy.CodeUnauthorized, "no key")
	}
	return next.Handle(ctx, ex)
}

type injectConfig struct {
	PerConsumer bool `koanf:"per_consumer"`
}

func (c *injectConfig) VariesByConsumer() bool { return c.PerConsumer }

type inject struct{ perConsumer bool }

func (p inject) Handle(ctx *fasthttp.RequestCtx, ex *proxy.Exchange, next proxy.Handler) error {
	tok := "shared-token"
	if p.perConsumer {
		tok = "token-of-" + ex.Consumer
	}
	ctx.Request.Header.Set("Authorization", "Bearer "+tok)
	return next.Handle(ctx, ex)
}

func isolationRegistry() *proxy.Registry {
	return testkit.WithStandIns(
		proxy.Define("authenticate", func(*authConfig, *proxy.Build) (proxy.Plugin, error) { return authenticate{}, nil }),
		proxy.Define("inject_auth", func(c *injectConfig, _ *proxy.Build) (proxy.Plugin, error) {
			return inject{perConsumer: c.PerConsumer}, nil
		}),
	)
}

// accountOrigin answers with the data of the account its token belongs to,
// marked cacheable (providers often do: max-age without private).
func accountOrigin(t *testing.T) *origin {
	return newOrigin(t, func(ctx *fasthttp.RequestCtx, n int64) {
		ctx.Response.Header.Set("Cache-Control", "max-age=60")
		fmt.Fprintf(ctx, "account of %s #%d", ctx.Request.Header.Peek("Authorization"), n)
	})
}

func TestCrossConsumerIsolation(t *testing.T) {
	o := accountOrigin(t)
	for _, tc := range []struct {
		name, plugins string
		shared        bool
	}{
		{"auto partitions when inject_auth varies by consumer", "{authenticate: {}, inject_auth: {per_consumer: true}, cache: {}}", false},
		{"auto shares when the credential is the same for all", "{authenticate: {}, inject_auth: {per_consumer: false}, cache: {}}", true},
		{"partition consumer always partitions", "{authenticate: {}, inject_auth: {per_consumer: false}, cache: {partition: consumer}}", false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			yaml := fmt.Sprintf(`
log: {access_log: false}
upstreams: {up: {url: "%s"}}
routes: {r: {path: "/{p:*}", upstream: up, plugins: %s}}
`, o.URL, tc.plugins)
			gw := testkit.StartGateway(t, yaml, testkit.Options{Registry: isolationRegistry()})
			a1 := get(t, gw.URL+"/me", "X-Api-Key", "alice")
			b1 := get(t, gw.URL+"/me", "X-Api-Key", "bob")
			a2 := get(t, gw.URL+"/me", "X-Api-Key", "alice")
			b2 := get(t, gw.URL+"/me", "X-Api-Key", "bob")
			if string(a1.Body) != string(a2.Body) || string(b1.Body) != string(b2.Body) {
				t.Errorf("repeated reads not cached: %q/%q, %q/%q", a1.Body, a2.Body, b1.Body, b2.Body)
			}
			if got := string(a1.Body) == string(b1.Body); got != tc.shared {
				t.Errorf("alice got %q, bob got %q: shared = %v, want %v", a1.Body, b1.Body, got, tc.shared)
			}
		})
	}
}

// Without authenticate, callers may pass their own provider credentials
// through; the default partition keeps them apart by a hash of the header,
// and partition none follows RFC 9111 section 3.5.
func TestCallerAuthorization(t *testing.T) {
	o := accountOrigin(t)
	pub := newOrigin(t, func(ctx *fasthttp.RequestCtx, n int64) {
		ctx.Response.Header.Set("Cache-Control", "public, max-age=60")
		fmt.Fprintf(ctx, "public #%d", n)
	})
	t.Run("auto: per credential", func(t *testing.T) {
		gw := gateway(t, o.URL, "{}")
		a1 := get(t, gw.URL+"/api/me", "Authorization", "Bearer A")
		b1 := get(t, gw.URL+"/api/me", "Authorization", "Bearer B")
		a2 := get(t, gw.URL+"/api/me", "Authorization", "Bearer A")
		if string(a1.Body) == string(b1.Body) || string(a1.Body) != string(a2.Body) {
			t.Errorf("A %q, B %q, A again %q", a1.Body, b1.Body, a2.Body)
		}
	})
	t.Run("none: not stored unless the answer says it may be shared", func(t *testing.T) {
		gw := gateway(t, o.URL, "{partition: none}")
		get(t, gw.URL+"/api/me2", "Authorization", "Bearer A")
		if r := get(t, gw.URL+"/api/me2", "Authorization", "Bearer B"); r.Header.Get("Cache-Status") == "sluice; hit" {
			t.Errorf("B got A's answer: %q", r.Body)
		}
		gw = gateway(t, pub.URL, "{partition: none}")
		get(t, gw.URL+"/api/p", "Authorization", "Bearer A")
		if r := get(t, gw.URL+"/api/p", "Authorization", "Bearer B"); r.Header.Get("Cache-Status") != "sluice; hit" {
			t.Errorf("a public answer is shared: %q", r.Header.Get("Cache-Status"))
		}
	})
}

// breaker stands in for circuit_breaker: while open it fails every call
// with circuit_open, as the real one does.
type breaker struct{ open *atomic.Bool }

type breakerConfig struct{}

func (b breaker) Handle(ctx *fasthttp.RequestCtx, ex *proxy.Exchange, next proxy.Handler) error {
	if b.open.Load() {
		return proxy.NewError(proxy.CodeCircuitOpen, "circuit open")
	}
	return next.Handle(ctx, ex)
}

func TestStaleIfErrorWhileTheCircuitIsOpen(t *testing.T) {
	o := newOrigin(t, func(ctx *fasthttp.RequestCtx, n int64) {
		ctx.Response.Header.Set("Cache-Control", "max-age=1, stale-if-error=60")
		fmt.Fprintf(ctx, "n=%d", n)
	})
	open := new(atomic.Bool)
	reg := testkit.WithStandIns(proxy.Define("circuit_breaker", func(*breakerConfig, *proxy.Build) (proxy.Plugin, error) { return breaker{open: open}, nil }))
	gw := testkit.StartGateway(t, fmt.Sprintf(`
log: {access_log: false}
upstreams: {up: {url: "%s"}}
routes: {r: {path: "/{p:*}", upstream: up, plugins: {cache: {}, circuit_breaker: {}}}}
`, o.URL), testkit.Options{Registry: reg})
	get(t, gw.URL+"/x")
	time.Sleep(1100 * time.Millisecond)
	open.Store(true)
	r := get(t, gw.URL+"/x")
	if r.Status != 200 || string(r.Body) != "n=1" || r.Header.Get("Cache-Status") != "sluice; fwd=stale; detail=stale-if-error" {
		t.Errorf("got %d %q %q, want the stale entry (the answer's own stale-if-error)", r.Status, r.Body, r.Header.Get("Cache-Status"))
	}
	if r := get(t, gw.URL+"/never-cached"); r.Status != 503 || !strings.Contains(string(r.Body), "circuit_open") {
		t.Errorf("without an entry: %d %s, want 503 circuit_open", r.Status, r.Body)
	}
}

// Override ignores the answer's directives, but never makes an answer to a
// request carrying Authorization shared between callers (partition none).
func TestOverrideKeepsCallersApart(t *testing.T) {
	o := accountOrigin(t)
	gw := gateway(t, o.URL, "{ttl: 1m, override: true, partition: none}")
	a := get(t, gw.URL+"/api/me", "Authorization", "Bearer alice")
	if cs := a.Header.Get("Cache-Status"); cs != "sluice; fwd=miss" {
		t.Errorf("alice: Cache-Status %q, want an unstored miss", cs)
	}
	b := get(t, gw.URL+"/api/me", "Authorization", "Bearer bob")
	if b.Header.Get("Cache-Status") == "sluice; hit" || strings.Contains(string(b.Body), "alice") {
		t.Errorf("bob got %q (%q): alice's answer", b.Body, b.Header.Get("Cache-Status"))
	}
	// Without Authorization, override still shares.
	get(t, gw.URL+"/api/open")
	if r := get(t, gw.URL+"/api/open"); r.Header.Get("Cache-Status") != "sluice; hit" {
		t.Errorf("no Authorization: %q, want a hit", r.Header.Get("Cache-Status"))
	}
}
