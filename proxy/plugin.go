package proxy

import (
	"fmt"
	"github.com/sluice-gw/sluice/proxy/config"
	"log/slog"
	"net/http"
	"slices"
	"strings"

	"github.com/prometheus/client_golang/prometheus"
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

// Optional plugin lifecycle. Building a plugin must have no side effects
// (validate builds every plugin without starting anything).
type (
	// Starter is implemented by plugins that run something in the background
	// (a token refresher, a subscription). Start is called once the pipeline
	// that holds the plugin is about to serve.
	Starter interface{ Start() error }
	// Closer is implemented by plugins that hold resources. Close is called
	// when the pipeline that holds the plugin has been replaced by a reload
	// and its in-flight requests are done, or at shutdown.
	Closer interface{ Close() error }
)

// Stage fixes where a plugin runs in a route's pipeline. The order is the
// gateway's, not the YAML's, so that a config cannot, say, put caching in
// front of authentication. Lower stages run first (outermost).
type Stage int

// The stages, outermost first (DESIGN.md, "Request lifecycle").
const (
	StageNormalizeErrors Stage = 100 // sees every upstream answer last
	StageAuthenticate    Stage = 200
	StageRateLimit       Stage = 300
	StageHeaders         Stage = 400 // request edits before cache keys, response edits on hits too
	StageCache           Stage = 500
	StageInjectAuth      Stage = 600
	StageRetry           Stage = 700
	StageCircuitBreaker  Stage = 800
	// StageUpstreamQuota runs once per attempt, right before the call leaves
	// for the provider (inside retry and the circuit breaker): limits that
	// guard a provider's quota count here, after the cache.
	StageUpstreamQuota Stage = 850
)

// Part is one piece of a plugin that works at more than one stage.
type Part struct {
	Stage  Stage
	Plugin Plugin
}

// MultiStage is implemented by a plugin whose one YAML block acts at several
// stages (rate_limit: per-consumer limits before the cache, per-upstream
// limits per attempt). Its parts are placed at their own stages instead of
// the plugin at its factory's; Start/Close are still called on the plugin.
type MultiStage interface{ Parts() []Part }

// Factory describes one plugin: its YAML name, its stage, its config and its
// constructor. Each plugin package exports one; plugins/plugins.go lists them.
type Factory struct {
	// Name is the key of the plugin's block in YAML, e.g. "normalize_errors".
	Name string
	// Stage is where the plugin runs.
	Stage Stage
	// NewConfig returns a pointer to a new config struct holding the plugin's
	// defaults. The YAML block is decoded onto it strictly (koanf tags). If it
	// has a Validate() error method, that is called after decoding; errors may
	// be *ConfigError/*FieldError with paths relative to the block.
	NewConfig func() any
	// New builds the plugin for one route from its decoded, validated config.
	New func(cfg any, b *Build) (Plugin, error)
}

// Build is what a plugin constructor gets to know about the route it is built
// for. It is only valid during New.
type Build struct {
	// Route and Upstream are the names of the route and its upstream.
	Route, Upstream string
	// Logger is the logger of the config being compiled (its level and format).
	Logger *slog.Logger
	// Registerer registers plugin metrics; it is the gateway's own registry.
	// Register a collector once per process: use Shared to keep it.
	Registerer prometheus.Registerer
	// Shared returns the value stored under key, creating it with create the
	// first time. Values live as long as the gateway, across reloads: use it
	// for state that must survive a reload (metric vectors, breaker state).
	Shared func(key string, create func() any) any
	// Config is the whole configuration being compiled (read-only): global
	// sections such as consumers and cache live here.
	Config *config.Config
	// Cluster is the Redis-backed state shared with other gateways; nil in
	// single-node mode.
	Cluster *Cluster

	peers   map[string]any
	admin   map[string]AdminEndpoint
	reports *[]statusReport
}

// Peer returns the decoded config of another plugin in effect on the same
// route, or nil when that plugin is not on the route. A plugin whose
// behaviour depends on another's settings (the cache partitions by consumer
// when inject_auth's credentials depend on the caller) asks here.
func (b *Build) Peer(name string) any { return b.peers[name] }

// AdminEndpoint is an admin API call added by a plugin (for example
// POST /admin/cache/purge). Mutating endpoints need the admin bearer token.
type AdminEndpoint struct {
	Mutating bool
	Handler  http.HandlerFunc
}

// HandleAdmin adds an admin endpoint; pattern is a net/http ServeMux pattern
// with a method, e.g. "POST /admin/cache/purge". Several routes' plugins may
// register the same pattern: the last one built wins, so register a handler
// that acts on shared (not per-route) state. The endpoint lives as long as a
// config that registers it serves.
func (b *Build) HandleAdmin(pattern string, e AdminEndpoint) { b.admin[pattern] = e }

// ReportStatus adds a section to the upstream's entry in GET /admin/upstreams
// (breaker state, limiter state...). status is called on each admin request
// and must be safe for concurrent use. Sections are keyed by name; routes
// that share one upstream-wide state may all report it: the first one wins.
func (b *Build) ReportStatus(name string, status func() any) {
	*b.reports = append(*b.reports, statusReport{upstream: b.Upstream, name: name, status: status})
}

type statusReport struct {
	upstream, name string
	status         func() any
}

// ConsumerScoped is implemented by plugin configs whose effect on the
// upstream's answer depends on the calling consumer (per-consumer
// credentials). Plugins that share answers between callers (the cache) keep
// them apart per consumer on routes where a peer's config says so.
type ConsumerScoped interface{ VariesByConsumer() bool }

// Validator is implemented by plugin configs that check themselves.
type Validator interface{ Validate() error }

// Registry holds the known plugins by name.
type Registry struct {
	byName map[string]*Factory
}

// NewRegistry returns a registry of the given plugins. It panics on a
// duplicate or incomplete factory: that is a programming error.
func NewRegistry(factories ...*Factory) *Registry {
	r := &Registry{byName: map[string]*Factory{}}
	for _, f := range factories {
		if f.Name == "" || f.NewConfig == nil || f.New == nil {
			panic(fmt.Sprintf("proxy: incomplete plugin factory %q", f.Name))
		}
		if _, dup := r.byName[f.Name]; dup {
			panic(fmt.Sprintf("proxy: plugin %q registered twice", f.Name))
		}
		r.byName[f.Name] = f
	}
	return r
}

// Lookup returns the factory registered under name.
func (r *Registry) Lookup(name string) (*Factory, bool) {
	f, ok := r.byName[name]
	return f, ok
}

// Names lists the registered plugin names, sorted.
func (r *Registry) Names() []string {
	names := make([]string, 0, len(r.byName))
	for n := range r.byName {
		names = append(names, n)
	}
	slices.Sort(names)
	return names
}

func (r *Registry) unknown(name string) string {
	return fmt.Sprintf("unknown plugin %q%s", name, config.Suggest(name, r.Names()))
}

// link joins a plugin to the rest of the chain. A compiled pipeline is a
// linked list of links ending at the upstream call: walking it allocates nothing.
type link struct {
	p    Plugin
	next Handler
}

func (l *link) Handle(ctx *fasthttp.RequestCtx, ex *Exchange) error {
	return l.p.Handle(ctx, ex, l.next)
}

// stagedPlugin is a built plugin with its place in the pipeline.
type stagedPlugin struct {
	name   string
	stage  Stage
	plugin Plugin
	config any // decoded config, for /admin/config
	source string
	parts  []Part // set when the plugin is MultiStage
}

// chain links plugins in stage order in front of terminal. A MultiStage
// plugin contributes each of its parts at the part's stage.
func chain(plugins []stagedPlugin, terminal Handler) Handler {
	type placed struct {
		stage Stage
		name  string
		p     Plugin
	}
	var all []placed
	for _, sp := range plugins {
		if sp.parts == nil {
			all = append(all, placed{sp.stage, sp.name, sp.plugin})
			continue
		}
		for _, part := range sp.parts {
			all = append(all, placed{part.Stage, sp.name, part.Plugin})
		}
	}
	slices.SortStableFunc(all, func(a, b placed) int {
		if a.stage != b.stage {
			return int(a.stage - b.stage)
		}
		return strings.Compare(a.name, b.name)
	})
	h := terminal
	for i := len(all) - 1; i >= 0; i-- {
		h = &link{p: all[i].p, next: h}
	}
	return h
}
