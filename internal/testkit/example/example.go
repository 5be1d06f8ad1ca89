// Package example is a small plugin that shows everything a new plugin
// needs and nothing more: its own place in the pipeline, its own block on
// routes, its own top-level config section, and state shared across
// routes and reloads. It is registered by one line (see example_test.go,
// where testkit.WithPlugin stands for the line in plugins/plugins.go).
//
// It stamps every answer that reaches it with "X-Greeting: <greeting>
// <name>" and counts the calls it saw per route; placed after the cache,
// it sees only the calls that go upstream.
//
//	greeter: {greeting: hello}          # top-level section, owned by the plugin
//	routes:
//	  r: {..., plugins: {greeter: {name: world}}}
package example

import (
	"sync/atomic"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/sluice-gw/sluice/proxy"
	"github.com/sluice-gw/sluice/proxy/config"
	"github.com/sluice-gw/sluice/proxy/httpx"
	"github.com/valyala/fasthttp"
)

// Factory declares the plugin: its block name, how to build it, and the
// top-level section it owns.
var Factory = proxy.Define("greeter", build, proxy.WithSection[Section]("greeter"))

// Section is the top-level "greeter:" section.
type Section struct {
	// Greeting starts every stamp. Default "hello". Applies at the next start.
	Greeting string `koanf:"greeting" json:"greeting" reload:"restart"`
}

// Defaults sets the greeting.
func (s *Section) Defaults() { s.Greeting = "hello" }

// Validate checks the section (and changes nothing).
func (s *Section) Validate() error {
	var p config.Problems
	if s.Greeting == "" {
		p.Add("greeting", "must not be empty")
	}
	return p.Err()
}

// Config is the plugin's block on a route, upstream or the top level.
type Config struct {
	// Name ends the stamp. Required.
	Name string `koanf:"name" json:"name"`
}

// Validate checks the block.
func (c *Config) Validate() error {
	var p config.Problems
	if c.Name == "" {
		p.Add("name", "required: whom to greet")
	}
	return p.Err()
}

// counter is shared by every route's greeter and kept across reloads; its
// collector is registered once and unregistered when no config uses it.
type counter struct{ calls *prometheus.CounterVec }

func build(c *Config, b *proxy.Build) (proxy.Plugin, error) {
	sec := b.Section().(*Section)
	n := proxy.Share(b, struct{}{}, func() *counter {
		cv := prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "sluice_example_greetings_total",
			Help: "Answers the example plugin stamped, by route.",
		}, []string{"route"})
		b.Registerer.MustRegister(cv)
		return &counter{calls: cv}
	})
	return &Plugin{stamp: []byte(sec.Greeting + " " + c.Name), calls: n.calls.WithLabelValues(b.Route.Name)}, nil
}

// Plugin is the greeter of one route.
type Plugin struct {
	stamp []byte
	calls prometheus.Counter
	seen  atomic.Int64
}

// hdrGreeting is the header name, normalized once here (see httpx.Name).
var hdrGreeting = httpx.NewName("X-Greeting")

// Handle lets the call go on, then stamps the answer.
func (p *Plugin) Handle(ctx *fasthttp.RequestCtx, ex *proxy.Exchange, next proxy.Handler) error {
	err := next.Handle(ctx, ex)
	if err == nil {
		hdrGreeting.Set(&ctx.Response.Header, p.stamp)
		p.calls.Inc()
		p.seen.Add(1)
	}
	return err
}
