package testkit

import (
	"context"
	"net"
	"testing"
	"time"

	"github.com/sluice-gw/sluice/plugins"
	"github.com/sluice-gw/sluice/proxy"
	"github.com/sluice-gw/sluice/proxy/config"
	"github.com/valyala/fasthttp"
	"github.com/valyala/fasthttp/fasthttputil"
)

// InMemory is a gateway and its upstream connected by in-memory listeners:
// the real server, router, pipeline and upstream client, without the kernel's
// loopback. Benchmarks and allocation tests use it.
type InMemory struct {
	Gateway *proxy.Gateway
	// Client sends requests to the gateway (Addr "gateway").
	Client *fasthttp.HostClient
	// Direct sends requests straight to the upstream, for baselines.
	Direct *fasthttp.HostClient
}

// UpstreamHost is the host:port to use in YAML for the in-memory upstream.
const UpstreamHost = "upstream.test:80"

// NewInMemory starts the upstream handler h and a gateway built from yaml,
// where upstream URLs must point at http://upstream.test (UpstreamHost).
func NewInMemory(tb testing.TB, yaml string, h fasthttp.RequestHandler) *InMemory {
	tb.Helper()
	upLn := fasthttputil.NewInmemoryListener()
	up := &fasthttp.Server{Handler: h, NoDefaultServerHeader: true, NoDefaultDate: true}
	go func() { _ = up.Serve(upLn) }()

	cfg, err := config.LoadBytes([]byte(yaml))
	if err != nil {
		tb.Fatalf("config: %v", err)
	}
	g, err := proxy.New(cfg, proxy.Options{
		Plugins:   plugins.Registry(),
		LogOutput: discard{},
		Dial:      func(string) (net.Conn, error) { return upLn.Dial() },
	})
	if err != nil {
		tb.Fatalf("gateway: %v", err)
	}
	gwLn := fasthttputil.NewInmemoryListener()
	done := make(chan struct{})
	go func() { _ = g.Serve(gwLn); close(done) }()
	tb.Cleanup(func() {
		_ = g.Shutdown(tbContext(tb))
		<-done
		_ = up.Shutdown()
	})
	return &InMemory{
		Gateway: g,
		// The caller looks like a TCP peer on loopback, as in production.
		Client: &fasthttp.HostClient{Addr: "gateway", Dial: func(string) (net.Conn, error) { return gwLn.DialWithLocalAddr(callerAddr) },
			MaxConns: 1024, ReadTimeout: 10 * time.Second},
		Direct: &fasthttp.HostClient{Addr: "upstream", Dial: func(string) (net.Conn, error) { return upLn.Dial() },
			MaxConns: 1024, ReadTimeout: 10 * time.Second},
	}
}

var callerAddr = &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1), Port: 40000}

type discard struct{}

func (discard) Write(p []byte) (int, error) { return len(p), nil }

func tbContext(tb testing.TB) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	tb.Cleanup(cancel)
	return ctx
}
