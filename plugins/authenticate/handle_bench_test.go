package authenticate_test

import (
	"testing"

	"github.com/sluice-gw/sluice/plugins/authenticate"
	"github.com/sluice-gw/sluice/proxy"
	"github.com/sluice-gw/sluice/proxy/config"
	"github.com/valyala/fasthttp"
)

type nopHandler struct{}

func (nopHandler) Handle(*fasthttp.RequestCtx, *proxy.Exchange) error { return nil }

// newDirect builds the plugin for a route as the gateway would, from
// allocYAML's 502 consumers.
func newDirect(tb testing.TB, block map[string]any) proxy.Plugin {
	cfg, err := config.LoadBytes([]byte(allocYAML))
	if err != nil {
		tb.Fatal(err)
	}
	c := authenticate.Factory.NewConfig()
	if err := config.DecodeBlock(block, c); err != nil {
		tb.Fatal(err)
	}
	b, _, release := proxy.NewBuild("r", "up")
	tb.Cleanup(release)
	b.Consumers = cfg.Consumers
	parts, err := authenticate.Factory.New(c, b)
	if err != nil {
		tb.Fatal(err)
	}
	return parts[""]
}

// BenchmarkHandle measures the plugin alone (no network): the header write
// that re-arms the request, then Handle; "baseline" is the header write only.
func BenchmarkHandle(b *testing.B) {
	p := newDirect(b, nil)
	for _, bc := range []struct{ name, header, value string }{
		{"baseline", "", ""},
		{"api-key", "X-Api-Key", crmKey},
		{"bearer", "Authorization", "Bearer " + billingKey},
		{"refused", "X-Api-Key", "wrong-key-0123456789abcdef"},
	} {
		b.Run(bc.name, func(b *testing.B) {
			var ctx fasthttp.RequestCtx
			ex := &proxy.Exchange{}
			b.ReportAllocs()
			for b.Loop() {
				if bc.header == "" {
					ctx.Request.Header.Set("X-Api-Key", crmKey)
					continue
				}
				ctx.Request.Header.Set(bc.header, bc.value)
				err := p.Handle(&ctx, ex, nopHandler{})
				if (err == nil) == (bc.name == "refused") {
					b.Fatalf("err = %v", err)
				}
			}
		})
	}
}
