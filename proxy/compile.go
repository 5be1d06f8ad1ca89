package proxy

import (
	"fmt"
	"github.com/sluice-gw/sluice/proxy/config"
	"log/slog"
	"maps"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/valyala/fasthttp"
)

// state is one compiled configuration: everything a request needs, built
// once when the config loads and swapped in atomically on reload. Requests
// read it through one atomic load and never see a half-applied config.
type state struct {
	cfg         *config.Config
	table       *routeTable
	routes      map[string]*Route
	upstreams   map[string]*Upstream
	unmatched   *routeMetrics
	log         *slog.Logger
	accessLog   bool
	maxInflight int64
	clientKeys  map[string]bool // pools this state uses
	cluster     *Cluster        // nil in single-node mode

	admin   map[string]AdminEndpoint // plugin admin endpoints by pattern
	reports []statusReport           // plugin sections of /admin/upstreams

	active   atomic.Int64 // requests being served with this state
	starters []Starter
	closers  []Closer
}

// Route is one compiled route: its pipeline, ending at the upstream call.
type Route struct {
	Name     string
	Upstream *Upstream
	// Deadline bounds the whole call (route deadline, else the upstream's).
	Deadline time.Duration

	st          *state
	stripPrefix string
	handler     Handler
	metrics     *routeMetrics
	plugins     []stagedPlugin
}

// decodedBlock is one plugin block as decoded at its place in the file:
// path is "plugins.NAME", "upstreams.U.plugins.NAME" or "routes.R.plugins.NAME".
type decodedBlock struct {
	path    string
	factory *Factory
	config  any
	enabled bool
	ok      bool // decoded and valid
}

// compile builds a state from a loaded config. It reports every problem it
// finds (unknown plugins, bad plugin blocks, route conflicts, unreadable TLS
// files) in one *ConfigError. pools supplies and records connection pools.
// Metric children are not touched: a state gets them from bindMetrics once
// it is going to serve, so that a rejected config leaves no series behind.
func (g *Gateway) compile(cfg *config.Config, pools *clientPools) (*state, error) {
	var p config.Problems
	st := &state{
		cfg:         cfg,
		table:       newRouteTable(),
		routes:      map[string]*Route{},
		upstreams:   map[string]*Upstream{},
		log:         g.logger(cfg.Log),
		accessLog:   cfg.Log.AccessLog,
		maxInflight: int64(cfg.Server.MaxInflight),
		clientKeys:  map[string]bool{},
		admin:       map[string]AdminEndpoint{},
	}
	var current *Cluster
	if cur := g.state.Load(); cur != nil {
		current = cur.cluster
	}
	st.cluster = clusterFor(cfg, current, st.log)

	for _, name := range slices.Sorted(maps.Keys(cfg.Upstreams)) {
		uc := cfg.Upstreams[name]
		u, err := g.buildUpstream(name, &uc, pools, st.clientKeys)
		if err != nil {
			p.AddErr("upstreams."+name, err)
			continue
		}
		if u != nil {
			u.logger = st.log
			if uc.HealthCheck != nil {
				u.checker = newHealthChecker(u, uc.HealthCheck)
				st.starters = append(st.starters, u.checker)
				st.closers = append(st.closers, u.checker)
			}
			st.upstreams[name] = u
		}
	}

	blocks := map[string]*decodedBlock{}
	g.decodeBlocks("plugins", cfg.Plugins, blocks, &p)
	for _, name := range slices.Sorted(maps.Keys(cfg.Upstreams)) {
		g.decodeBlocks("upstreams."+name+".plugins", cfg.Upstreams[name].Plugins, blocks, &p)
	}
	for _, name := range slices.Sorted(maps.Keys(cfg.Routes)) {
		g.decodeBlocks("routes."+name+".plugins", cfg.Routes[name].Plugins, blocks, &p)
	}

	for _, name := range slices.Sorted(maps.Keys(cfg.Routes)) {
		rc := cfg.Routes[name]
		if rc.Path == "" || rc.Path[0] != '/' {
			continue // reported by Config.validate
		}
		u := st.upstreams[rc.Upstream]
		if u == nil {
			// The upstream is missing or broken (reported already). Compile
			// the route anyway against a stand-in, so that its path conflicts
			// and plugin problems are reported in the same pass; the state is
			// rejected as a whole.
			u = &Upstream{Name: rc.Upstream}
		}
		rt := &Route{Name: name, Upstream: u, st: st, Deadline: rc.Deadline.D(), stripPrefix: rc.StripPrefix}
		if rt.Deadline == 0 {
			rt.Deadline = cfg.Upstreams[rc.Upstream].Deadline.D()
		}
		rt.plugins = g.buildPlugins(st, name, &rc, blocks, &p)
		for _, sp := range rt.plugins {
			if s, ok := sp.plugin.(Starter); ok {
				st.starters = append(st.starters, s)
			}
			if c, ok := sp.plugin.(Closer); ok {
				st.closers = append(st.closers, c)
			}
		}
		rt.handler = chain(rt.plugins, &upstreamCall{u: u, stripPrefix: rc.StripPrefix})
		if err := st.table.add(name, &rc, rt.serve); err != nil {
			p.AddErr("routes."+name+".path", err)
			continue
		}
		st.routes[name] = rt
	}
	return st, p.Err()
}

// bindMetrics resolves the metric children of a compiled state.
func (st *state) bindMetrics(m *Metrics) {
	st.unmatched = newRouteMetrics(m, UnmatchedRoute, "")
	for _, u := range st.upstreams {
		u.metrics = newUpstreamMetrics(m, u.Name)
	}
	for _, rt := range st.routes {
		rt.metrics = newRouteMetrics(m, rt.Name, rt.Upstream.Name)
	}
}

// start starts the state's plugins; if one fails, those that hold resources
// are closed again.
func (st *state) start() error {
	st.claimHealth()
	for i, s := range st.starters {
		if err := s.Start(); err != nil {
			st.closeExcept(st.starters[i:])
			return fmt.Errorf("starting plugin: %w", err)
		}
	}
	return nil
}

// close closes the state's plugins.
func (st *state) close() { st.closeExcept(nil) }

// closeExcept closes the state's plugins but those in notStarted: a plugin
// whose Start was never called (or failed) is not closed, so every Close
// pairs with a successful Start. Closers without Start are always closed.
func (st *state) closeExcept(notStarted []Starter) {
	for _, c := range st.closers {
		if s, ok := c.(Starter); ok && slices.Contains(notStarted, s) {
			continue
		}
		if err := c.Close(); err != nil {
			st.log.Warn("closing plugin", "error", err.Error())
		}
	}
}

// dropCluster closes the state's Redis client unless other (the state that
// replaces it, or the one that keeps serving) uses the same client.
func (st *state) dropCluster(other *state) {
	if st == nil || st.cluster == nil || (other != nil && other.cluster == st.cluster) {
		return
	}
	st.cluster.close()
}

func (g *Gateway) buildUpstream(name string, uc *config.UpstreamConfig, pools *clientPools, keys map[string]bool) (*Upstream, error) {
	urls := uc.Targets
	if uc.URL != "" {
		urls = []string{uc.URL}
	}
	u := &Upstream{Name: name, Timeout: uc.Timeout.D(), leastInflight: uc.Balance == config.BalanceLeastInflight,
		outlier: outlierSettings{on: uc.Outlier.On(), consecutive: uc.Outlier.ConsecutiveFailures,
			ejectFor: uc.Outlier.EjectFor.D(), maxEjectFor: uc.Outlier.MaxEjectFor.D()},
		bodies: &g.metrics.bodies}
	var p config.Problems
	for _, raw := range urls {
		if config.CheckUpstreamURL(raw) != nil {
			return nil, nil // reported by Config.validate
		}
		key := clientKey(raw, uc)
		t, err := newTarget(raw, key, uc, pools, g.opts.Dial)
		if err != nil {
			p.AddErr("", err)
			continue
		}
		keys[key] = true
		t.index = len(u.Targets)
		t.health = g.health.get(name, raw)
		u.Targets = append(u.Targets, t)
	}
	if err := p.Err(); err != nil {
		return nil, err
	}
	return u, nil
}

// decodeBlocks decodes and validates every plugin block at one level of the
// file, once, recording the results by key path.
func (g *Gateway) decodeBlocks(prefix string, in config.PluginBlocks, out map[string]*decodedBlock, p *config.Problems) {
	for _, name := range slices.Sorted(maps.Keys(in)) {
		path := prefix + "." + name
		f, ok := g.opts.Plugins.Lookup(name)
		if !ok {
			p.Add(path, g.opts.Plugins.unknown(name))
			continue
		}
		db := &decodedBlock{path: path, factory: f, enabled: true}
		out[path] = db
		raw := map[string]any{}
		for k, v := range in[name] {
			raw[k] = v
		}
		if v, has := raw["enabled"]; has {
			b, isBool := v.(bool)
			if !isBool {
				p.Addf(path+".enabled", "expected true or false, got %v", v)
				continue
			}
			db.enabled = b
			delete(raw, "enabled")
			if !b {
				db.ok = true
				continue // a disabled block's other keys are not checked
			}
		}
		cfg := f.NewConfig()
		if err := config.DecodeBlock(raw, cfg); err != nil {
			p.AddErr(path, err)
			continue
		}
		if v, isV := cfg.(Validator); isV {
			if err := v.Validate(); err != nil {
				p.AddErr(path, err)
				continue
			}
		}
		db.config = cfg
		db.ok = true
	}
}

// buildPlugins builds one route's plugins: for each plugin name, the route's
// block wins over the upstream's, which wins over the top level's.
func (g *Gateway) buildPlugins(st *state, route string, rc *config.RouteConfig, blocks map[string]*decodedBlock, p *config.Problems) []stagedPlugin {
	cfg := st.cfg
	var names []string
	for _, level := range []config.PluginBlocks{cfg.Plugins, cfg.Upstreams[rc.Upstream].Plugins, rc.Plugins} {
		for n := range level {
			if !slices.Contains(names, n) {
				names = append(names, n)
			}
		}
	}
	slices.Sort(names)
	effective := map[string]*decodedBlock{}
	peers := map[string]any{}
	for _, name := range names {
		var db *decodedBlock
		for _, path := range []string{
			"routes." + route + ".plugins." + name,
			"upstreams." + rc.Upstream + ".plugins." + name,
			"plugins." + name,
		} {
			if db = blocks[path]; db != nil {
				break
			}
		}
		if db == nil || !db.ok || !db.enabled {
			continue // unknown or invalid (reported) or switched off
		}
		effective[name] = db
		peers[name] = db.config
	}
	var out []stagedPlugin
	for _, name := range names {
		db := effective[name]
		if db == nil {
			continue
		}
		b := &Build{
			Route:      route,
			Upstream:   rc.Upstream,
			Logger:     st.log,
			Registerer: g.metrics.Registry,
			Shared:     g.shared.get,
			Config:     cfg,
			Cluster:    st.cluster,
			peers:      peers,
			admin:      st.admin,
			reports:    &st.reports,
		}
		pl, err := db.factory.New(db.config, b)
		if err != nil {
			p.AddErr(db.path, fmt.Errorf("route %s: %w", route, err))
			continue
		}
		sp := stagedPlugin{name: name, stage: db.factory.Stage, plugin: pl, config: db.config, source: db.path}
		if ms, ok := pl.(MultiStage); ok {
			sp.parts = ms.Parts()
		}
		out = append(out, sp)
	}
	return out
}

// sharedStore keeps values that live across reloads (see Build.Shared).
type sharedStore struct {
	mu sync.Mutex
	m  map[string]any
}

func (s *sharedStore) get(key string, create func() any) any {
	s.mu.Lock()
	defer s.mu.Unlock()
	if v, ok := s.m[key]; ok {
		return v
	}
	if s.m == nil {
		s.m = map[string]any{}
	}
	v := create()
	s.m[key] = v
	return v
}

// clientPools holds the upstream connection pools by settings, so that a
// reload reuses warm pools whose settings did not change.
type clientPools struct {
	mu sync.Mutex
	m  map[string]*fasthttp.HostClient
}

func newClientPools() *clientPools { return &clientPools{m: map[string]*fasthttp.HostClient{}} }

func (c *clientPools) get(key string) *fasthttp.HostClient {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.m[key]
}

func (c *clientPools) put(key string, hc *fasthttp.HostClient) *fasthttp.HostClient {
	c.mu.Lock()
	defer c.mu.Unlock()
	if old, ok := c.m[key]; ok {
		return old
	}
	c.m[key] = hc
	return hc
}

// release removes the pools no longer in keep and returns them, so that
// their idle connections can be closed once no request uses them.
func (c *clientPools) release(keep map[string]bool) []*fasthttp.HostClient {
	c.mu.Lock()
	defer c.mu.Unlock()
	var out []*fasthttp.HostClient
	for k, hc := range c.m {
		if !keep[k] {
			out = append(out, hc)
			delete(c.m, k)
		}
	}
	return out
}
