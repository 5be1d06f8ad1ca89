package proxy

import (
	"fmt"
	"log/slog"
	"net/http"
	"slices"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/sluice-gw/sluice/proxy/config"
	"github.com/valyala/fasthttp"
)

// Handler serves one request; a non-nil error aborts the pipeline and is
// rendered once, at the route, as problem+json. Handlers must not keep ctx or
// ex after returning.
type Handler interface {
	Handle(ctx *fasthttp.RequestCtx, ex *Exchange) error
}

// Plugin is one stage of a route's pipeline. It calls next to go on; after next
// returns, ctx.Response holds the upstream's (or an inner stage's) response.
// A plugin is built once per route when the config loads and is shared by all
// requests of that route: it must be safe for concurrent use.
type Plugin interface {
	Handle(ctx *fasthttp.RequestCtx, ex *Exchange, next Handler) error
}

// Parts is what a plugin that works at several stages builds for one route:
// the handler of each of its parts, by part name ("" is the part placed
// where the factory itself is registered). A part left out (or nil) does
// nothing on that route and costs nothing: no link is made for it.
type Parts map[string]Plugin

// Factory describes one plugin: its YAML name, its config, the parts it
// fills in the pipeline, the top-level config section it may own, and how it
// is built. Make one with Define or DefineParts; plugins/plugins.go registers
// it. Every plugin is made the same way, once per route and config:
//
//  1. its config struct is made with its defaults (a Defaults() method on
//     the struct, if it has one): they come first, so that what the block
//     says (an explicit false or 0 included) wins;
//  2. the YAML block is decoded onto it strictly (koanf tags; unknown keys,
//     bad durations and sizes are errors naming the key);
//  3. Settle(), if the struct has it, fills the defaults that depend on
//     other settings (see Settler);
//  4. Validate() error, if the struct has it, checks it and changes nothing;
//     errors may be *config.FieldError/*config.ConfigError with key paths
//     relative to the block;
//  5. build makes the plugin for one route from the checked config and a
//     *Build.
//
// Building has no side effects (`sluice validate` builds every plugin
// without serving): anything that runs in the background or holds
// connections is a shared resource (Share), started and closed by the
// gateway.
type Factory struct {
	name      string
	parts     []string // part names; "" is the main part
	newConfig func() any
	build     func(cfg any, b *Build) (Parts, error)
	section   *section
}

// Name is the key of the plugin's block in YAML, e.g. "normalize_errors".
func (f *Factory) Name() string { return f.name }

// NewConfig returns a new config of the plugin with its defaults, for the
// block to be decoded onto (config.DecodeBlock).
func (f *Factory) NewConfig() any { return f.newConfig() }

// New builds the plugin's parts for one route from a decoded, validated
// config. The gateway calls it; tests that build a plugin outside a gateway
// use it with NewBuild.
func (f *Factory) New(cfg any, b *Build) (Parts, error) { return f.build(cfg, b) }

// An Option adds to a plugin's definition.
type Option func(*Factory)

// Define declares a plugin that runs at one place in the pipeline: the place
// of its line in the registry. C is its config struct.
func Define[C any](name string, build func(c *C, b *Build) (Plugin, error), opts ...Option) *Factory {
	return DefineParts(name, nil, func(c *C, b *Build) (Parts, error) {
		p, err := build(c, b)
		if err != nil {
			return nil, err
		}
		return Parts{"": p}, nil
	}, opts...)
}

// DefineParts declares a plugin whose one YAML block acts at several places
// in the pipeline (rate_limit: per-consumer limits before the cache, the
// provider's quota on every attempt). parts names the places besides the
// main one; the registry places each with Factory.Part.
func DefineParts[C any](name string, parts []string, build func(c *C, b *Build) (Parts, error), opts ...Option) *Factory {
	f := &Factory{
		name:      name,
		parts:     append([]string{""}, parts...),
		newConfig: newWithDefaults[C],
		build:     func(cfg any, b *Build) (Parts, error) { return build(cfg.(*C), b) },
	}
	for _, o := range opts {
		o(f)
	}
	return f
}

// newWithDefaults returns a new *T, with its Defaults() applied if it has
// that method: the first step of decoding a block or section.
func newWithDefaults[T any]() any {
	v := new(T)
	if d, ok := any(v).(interface{ Defaults() }); ok {
		d.Defaults()
	}
	return v
}

// Part is the place of one named part of a plugin, for the registry. The
// main part's place is the factory itself.
func (f *Factory) Part(name string) Place {
	if !slices.Contains(f.parts[1:], name) {
		panic(fmt.Sprintf("proxy: plugin %q has no part %q", f.name, name))
	}
	return place{f, name}
}

// A Place is one line of the registry: a plugin's main part (its *Factory)
// or another of its parts (Factory.Part).
type Place interface{ at() place }

type place struct {
	f    *Factory
	part string
}

func (p place) at() place    { return p }
func (f *Factory) at() place { return place{f, ""} }

// section is a top-level config section that a plugin owns.
type section struct {
	key       string
	newConfig func() any
}

// WithSection gives the plugin the top-level config section key (say
// "cache:" for the store every cache block shares). S is its struct, made,
// decoded and checked as a plugin block is (Defaults, strict decoding,
// Validate); the section is checked even where no route uses the plugin.
// Fields tagged `reload:"restart"` apply at the next start: a reload that
// changes them says so in the log. Build.Section returns it.
func WithSection[S any](key string) Option {
	return func(f *Factory) {
		f.section = &section{key: key, newConfig: newWithDefaults[S]}
	}
}

// Validator is implemented by plugin configs (and sections) that check
// themselves. Validate must not change the config.
type Validator interface{ Validate() error }

// Settler is implemented by plugin configs (and sections) with defaults that
// depend on other settings (retry's methods depend on idempotency_key):
// Settle fills the fields the block left unset, after decoding and before
// Validate, so that /admin/config shows what is in effect.
type Settler interface{ Settle() }

// Build is what a plugin is told about the route it is built for. It is
// only valid during the build.
type Build struct {
	// Route is the route being built: its name, path template, methods and
	// strip prefix. Its pipeline is not linked yet.
	Route *Route
	// Upstream is the route's upstream, compiled: its targets (base URLs,
	// connection pools), timeout and deadline.
	Upstream *Upstream
	// Consumers are the callers the config knows, by name (read-only).
	Consumers map[string]config.ConsumerConfig
	// Logger is the logger of the config being compiled (its level and format).
	Logger *slog.Logger
	// Registerer registers plugin metrics in the gateway's registry. Register
	// collectors inside a Share: they are unregistered with the resource.
	Registerer prometheus.Registerer
	// Cluster is the Redis-backed state shared with other gateways; nil in
	// single-node mode.
	Cluster *Cluster
	// ConfigDir is the directory of the config file (config.Config.Dir):
	// relative file paths in a block are relative to it.
	ConfigDir string

	st      *state
	section any
	peers   []any // the effective configs of the route's plugins, in pipeline order
}

// OnStart adds fn to what runs when the config being built starts serving,
// after its shared resources have started; never for a config that is only
// checked or is rejected. It is the moment to point shared state at this
// config's settings (its logger, say) without disturbing the one serving.
func (b *Build) OnStart(fn func()) { b.st.onStart = append(b.st.onStart, fn) }

// Section returns the plugin's decoded top-level section (see WithSection),
// or nil when it declares none.
func (b *Build) Section() any { return b.section }

// Peers returns the configs of the plugins in effect on the route being
// built (its own included) that implement T, in pipeline order. A plugin
// whose behaviour depends on what others do asks by capability, never by
// name: the cache keeps answers apart per consumer where a ConsumerScoped
// config says the answer depends on the caller.
func Peers[T any](b *Build) []T {
	var out []T
	for _, c := range b.peers {
		if t, ok := c.(T); ok {
			out = append(out, t)
		}
	}
	return out
}

// ConsumerScoped is implemented by plugin configs whose effect on the
// upstream's answer depends on the calling consumer (per-consumer
// credentials).
type ConsumerScoped interface{ VariesByConsumer() bool }

// AccessPolicy is implemented by plugin configs that decide who may call a
// route or what the provider is sent on the caller's behalf (authentication,
// credentials, request headers). Plugins that share answers between calls
// keep them apart where such configs differ.
type AccessPolicy interface{ AccessPolicy() }

// AdminEndpoint is an admin API call added by a plugin (for example
// POST /admin/cache/purge). Mutating endpoints need the admin bearer token.
type AdminEndpoint struct {
	Mutating bool
	Handler  http.HandlerFunc
}

// HandleAdmin adds an admin endpoint: "METHOD /admin/path", e.g.
// "POST /admin/cache/purge", matched exactly. Several routes' plugins may
// register the same one: the last one built wins, so register a handler
// that acts on shared (not per-route) state. The endpoint lives as long as a
// config that registers it serves.
func (b *Build) HandleAdmin(pattern string, e AdminEndpoint) { b.st.admin[pattern] = e }

// ReportStatus adds a section to the upstream's entry in GET /admin/upstreams
// (breaker state, limiter state...). status is called on each admin request
// and must be safe for concurrent use. Sections are keyed by name; routes
// that share one upstream-wide state may all report it: the first one wins.
func (b *Build) ReportStatus(name string, status func() any) {
	b.st.reports = append(b.st.reports, statusReport{upstream: b.Upstream.Name, name: name, status: status})
}

type statusReport struct {
	upstream, name string
	status         func() any
}
