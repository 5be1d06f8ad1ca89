package proxy

import (
	"fmt"
	"log/slog"
	"maps"
	"slices"
	"strings"
	"sync/atomic"
	"time"

	"github.com/sluice-gw/sluice/proxy/config"
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
	tracer      *tracer         // nil when tracing is off (tracing.go)
	stats       *tracingStats   // the gateway's span counters
	usage       *usageTable     // per-consumer usage series (usage.go)

	admin   map[string]AdminEndpoint // plugin admin endpoints by pattern
	reports []statusReport           // plugin sections of /admin/upstreams

	active   atomic.Int64 // requests being served with this state
	checkers []*healthChecker
	shared   *sharedStore
	held     []*sharedEntry // the shared resources this state holds, in the order taken (see Share)
	holds    map[*sharedEntry]bool
	sections map[string]any // plugin-owned top-level sections, decoded, by key
	onStart  []func()       // see Build.OnStart
	bg       background     // see Build.Background
}

// Route is one compiled route: its pipeline, ending at the upstream call.
type Route struct {
	Name     string
	Upstream *Upstream
	// Path is the route's path template, e.g. "/github/{path:*}".
	Path string
	// Methods the route accepts; empty means any.
	Methods []string
	// StripPrefix is removed from the request path before it goes upstream.
	StripPrefix string
	// Deadline bounds the whole call (route deadline, else the upstream's).
	Deadline time.Duration
	// Upgrade: the route tunnels Connection: Upgrade requests (tunnel.go).
	Upgrade bool
	// TunnelIdleTimeout closes an idle tunnel (default 5m).
	TunnelIdleTimeout time.Duration

	st      *state
	handler Handler
	direct  bool // handler is the upstream call itself: the route has no plugins
	metrics *routeMetrics
	plugins []builtPlugin
}

// decodedBlock is one plugin block as decoded at its place in the file:
// path is "plugins.NAME", "upstreams.U.plugins.NAME" or "routes.R.plugins.NAME".
type decodedBlock struct {
	path    string
	factory *Factory
	config  any
	enabled bool
	ok      bool           // decoded and valid
	raw     map[string]any // the block's keys, enabled left out (for profile merges)
	level   int            // levelTop, levelProfile, levelUpstream, levelRoute
}

// Where a plugin block was written, least specific first.
const (
	levelTop = iota
	levelProfile
	levelUpstream
	levelRoute
)

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
		shared:      &g.shared,
		stats:       &g.metrics.tracing,
	}
	var current *Cluster
	if cur := g.state.Load(); cur != nil {
		current = cur.cluster
	}
	st.cluster = clusterFor(cfg, current, st.log)

	for _, name := range slices.Sorted(maps.Keys(cfg.Upstreams)) {
		uc := cfg.Upstreams[name]
		u, err := g.buildUpstream(st, name, &uc, pools)
		if err != nil {
			p.AddErr("upstreams."+name, err)
			continue
		}
		if u != nil {
			u.logger = st.log
			if uc.HealthCheck != nil {
				u.checker = newHealthChecker(u, uc.HealthCheck)
				st.checkers = append(st.checkers, u.checker)
			}
			st.upstreams[name] = u
		}
	}

	st.sections = g.decodeSections(cfg.Sections, &p)
	blocks := map[string]*decodedBlock{}
	g.decodeBlocks("plugins", cfg.Plugins, blocks, &p)
	// A block on an upstream or a route is decoded with the keys of the
	// upstream's profile under it (see withProfile).
	underProfile := func(upstream string) func(string) map[string]any {
		profile := cfg.Upstreams[upstream].Profile
		return func(plugin string) map[string]any { return profileUnder(cfg, profile, plugin) }
	}
	for _, name := range slices.Sorted(maps.Keys(cfg.Upstreams)) {
		g.decodeBlocks("upstreams."+name+".plugins", cfg.Upstreams[name].Plugins, blocks, &p, underProfile(name))
	}
	for _, name := range slices.Sorted(maps.Keys(cfg.Routes)) {
		g.decodeBlocks("routes."+name+".plugins", cfg.Routes[name].Plugins, blocks, &p, underProfile(cfg.Routes[name].Upstream))
	}
	// Profiles: the ones declared in the file are checked whether used or
	// not, the built-in ones when an upstream uses them.
	for _, name := range cfg.ProfileNames() {
		_, declared := cfg.Profiles[name]
		used := false
		for _, uc := range cfg.Upstreams {
			used = used || uc.Profile == name
		}
		if !declared && !used {
			continue
		}
		pc, _ := cfg.Profile(name)
		g.decodeBlocks("profiles."+name+".plugins", pc.Plugins, blocks, &p)
		for _, plugin := range slices.Sorted(maps.Keys(pc.Defaults)) {
			if _, ok := g.opts.Plugins.Lookup(plugin); !ok {
				p.Add("profiles."+name+".defaults."+plugin, g.opts.Plugins.unknown(plugin))
			}
		}
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
		rt := &Route{Name: name, Upstream: u, st: st, Path: rc.Path, Methods: rc.Methods,
			StripPrefix: rc.StripPrefix, Deadline: rc.Deadline.D()}
		if rt.Deadline == 0 {
			rt.Deadline = u.Deadline
		}
		rt.Upgrade, rt.TunnelIdleTimeout = rc.Upgrade, rc.TunnelIdleTimeout.D()
		if rt.TunnelIdleTimeout == 0 {
			rt.TunnelIdleTimeout = defaultTunnelIdleTimeout
		}
		rt.plugins = g.buildPlugins(st, rt, &rc, blocks, &p)
		rt.handler = g.opts.Plugins.chain(rt.plugins, &upstreamCall{u: u, stripPrefix: rc.StripPrefix}, &p)
		_, rt.direct = rt.handler.(*upstreamCall)
		if err := st.table.add(name, &rc, rt.serve); err != nil {
			p.AddErr("routes."+name+".path", err)
			continue
		}
		st.routes[name] = rt
	}
	return st, cfg.Explain(p.Err())
}

// bindMetrics resolves the metric children of a compiled state.
func (st *state) bindMetrics(m *Metrics) {
	st.unmatched = newRouteMetrics(m, UnmatchedRoute, "")
	st.bindUsage(m)
	for _, u := range st.upstreams {
		u.metrics = newUpstreamMetrics(m, u.Name)
	}
	for _, rt := range st.routes {
		rt.metrics = newRouteMetrics(m, rt.Name, rt.Upstream.Name)
	}
}

func (g *Gateway) buildUpstream(st *state, name string, uc *config.UpstreamConfig, pools *clientPools) (*Upstream, error) {
	urls := uc.Targets
	if uc.URL != "" {
		urls = []string{uc.URL}
	}
	u := &Upstream{Name: name, Timeout: uc.Timeout.D(), Deadline: uc.Deadline.D(), leastInflight: uc.Balance == config.BalanceLeastInflight,
		outlier: outlierSettings{on: uc.Outlier.On(), consecutive: uc.Outlier.ConsecutiveFailures,
			ejectFor: uc.Outlier.EjectFor.D(), maxEjectFor: uc.Outlier.MaxEjectFor.D()},
		bodies: &g.metrics.bodies, streams: &g.metrics.open,
		forwarded: uc.ForwardedHeaders,
		maxBody:   int(uc.MaxResponseBody), streamThreshold: int(uc.StreamThreshold), streamIdle: uc.StreamIdleTimeout.D(), streamMax: uc.MaxStreamDuration.D(),
		writeTimeout: st.cfg.Server.WriteTimeout.D()}
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
		st.clientKeys[key] = true
		t.index = len(u.Targets)
		t.health = share(st, healthKey{name, raw}, func() *targetHealth { return &targetHealth{} })
		u.Targets = append(u.Targets, t)
	}
	if err := p.Err(); err != nil {
		return nil, err
	}
	return u, nil
}

// decodeBlocks decodes and validates every plugin block at one level of the
// file, once, recording the results by key path.
func (g *Gateway) decodeBlocks(prefix string, in config.PluginBlocks, out map[string]*decodedBlock, p *config.Problems, under ...func(plugin string) map[string]any) {
	for _, name := range slices.Sorted(maps.Keys(in)) {
		path := prefix + "." + name
		f, ok := g.opts.Plugins.Lookup(name)
		if !ok {
			p.Add(path, g.opts.Plugins.unknown(name))
			continue
		}
		db := &decodedBlock{path: path, factory: f, enabled: true, level: levelOf(prefix)}
		out[path] = db
		raw := map[string]any{}
		for k, v := range in[name] {
			raw[k] = v
		}
		defer func() { db.raw = raw }()
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
		if len(under) > 0 {
			raw = config.MergeBlocks(under[0](name), raw)
		}
		db.config, db.ok = decodeChecked(path, raw, f.newConfig, p)
	}
}

func levelOf(prefix string) int {
	switch {
	case strings.HasPrefix(prefix, "routes."):
		return levelRoute
	case strings.HasPrefix(prefix, "upstreams."):
		return levelUpstream
	case strings.HasPrefix(prefix, "profiles."):
		return levelProfile
	}
	return levelTop
}

// withProfile returns the block in effect for one plugin on an upstream
// that uses profile pc (named profile): db is the most specific block the
// file has for the plugin (nil if none). The profile's block for the plugin
// (under plugins:) lies above the top-level block and below the upstream's
// and the route's, key by key; its defaults fill the keys left unset, only
// where the file itself has an enabled block. Upstream and route blocks
// were merged when decoded (decodeBlocks); the top-level block is merged
// here, once per profile, and kept in blocks.
func (g *Gateway) withProfile(db *decodedBlock, name, profile string, pc config.ProfileConfig, blocks map[string]*decodedBlock, p *config.Problems) *decodedBlock {
	pdb := blocks["profiles."+profile+".plugins."+name]
	def, hasDef := pc.Defaults[name]
	switch {
	case db == nil:
		return pdb // the profile's own block, or nothing
	case db.level >= levelUpstream:
		return db
	case pdb != nil && (!pdb.ok || !pdb.enabled || !db.enabled || !db.ok):
		return pdb // the profile's block wins over the top level's whole
	case !db.enabled || !db.ok || (pdb == nil && !hasDef):
		return db
	}
	key := db.path + "\x00" + profile
	if m, done := blocks[key]; done {
		return m
	}
	raw := db.raw
	if pdb != nil {
		raw = config.MergeBlocks(db.raw, pdb.raw)
	}
	raw = config.MergeBlocks(def, raw)
	m := &decodedBlock{path: db.path, factory: db.factory, enabled: true, raw: raw, level: db.level}
	if m.config, m.ok = decodeChecked(db.path, raw, db.factory.newConfig, p); !m.ok {
		p.Addf(db.path, "the problems above are of this block merged with profile %q's block and defaults", profile)
	}
	blocks[key] = m
	return m
}

// profileUnder returns the raw keys a profile lays under a block written on
// an upstream or a route: its block for the plugin (unless that switches
// the plugin off) with its defaults under it.
func profileUnder(cfg *config.Config, profile, plugin string) map[string]any {
	pc, ok := cfg.Profile(profile)
	if profile == "" || !ok {
		return nil
	}
	var under map[string]any
	if blk, has := pc.Plugins[plugin]; has {
		if on, isBool := blk["enabled"].(bool); !isBool || on {
			under = maps.Clone(blk)
			delete(under, "enabled")
		}
	}
	return config.MergeBlocks(pc.Defaults[plugin], under)
}

// decodeSections decodes the plugin-owned top-level sections; a top-level
// key that neither the gateway nor a plugin owns is an error.
func (g *Gateway) decodeSections(raw map[string]any, p *config.Problems) map[string]any {
	reg := g.opts.Plugins
	out := map[string]any{}
	for key, f := range reg.keys {
		block, isMap := raw[key].(map[string]any)
		if raw[key] != nil && !isMap {
			p.Addf(key, "expected a map of settings, got %v", raw[key])
			continue
		}
		if v, ok := decodeChecked(key, block, f.section.newConfig, p); ok {
			out[key] = v
		}
	}
	known := append(config.TopLevelKeys(), slices.Collect(maps.Keys(reg.keys))...)
	slices.Sort(known)
	for _, key := range slices.Sorted(maps.Keys(raw)) {
		if reg.keys[key] == nil {
			p.Add(key, "unknown key"+config.Suggest(key, known))
		}
	}
	return out
}

// decodeChecked makes a plugin config or section with its defaults, decodes
// raw onto it strictly and validates it (see Factory).
func decodeChecked(path string, raw map[string]any, newConfig func() any, p *config.Problems) (any, bool) {
	cfg := newConfig()
	if err := config.DecodeBlock(raw, cfg); err != nil {
		p.AddErr(path, err)
		return nil, false
	}
	if s, ok := cfg.(Settler); ok {
		s.Settle()
	}
	if v, isV := cfg.(Validator); isV {
		if err := v.Validate(); err != nil {
			p.AddErr(path, err)
			return nil, false
		}
	}
	return cfg, true
}

// buildPlugins builds one route's plugins: for each plugin name, the route's
// block wins over the upstream's, which wins over the top level's. Plugins
// are built, and see each other's configs (Peers), in pipeline order.
func (g *Gateway) buildPlugins(st *state, rt *Route, rc *config.RouteConfig, blocks map[string]*decodedBlock, p *config.Problems) []builtPlugin {
	cfg, reg := st.cfg, g.opts.Plugins
	profile := cfg.Upstreams[rc.Upstream].Profile
	pc, hasProfile := cfg.Profile(profile)
	var effective []*decodedBlock
	for _, f := range reg.order {
		if f.part != "" {
			continue
		}
		name := f.f.name
		var db *decodedBlock
		for _, path := range []string{
			"routes." + rt.Name + ".plugins." + name,
			"upstreams." + rc.Upstream + ".plugins." + name,
			"plugins." + name,
		} {
			if db = blocks[path]; db != nil {
				break
			}
		}
		if hasProfile && profile != "" {
			db = g.withProfile(db, name, profile, pc, blocks, p)
		}
		if db != nil && db.ok && db.enabled {
			effective = append(effective, db) // else unknown or invalid (reported) or switched off
		}
	}
	peers := make([]any, len(effective))
	for i, db := range effective {
		peers[i] = db.config
	}
	var out []builtPlugin
	for _, db := range effective {
		b := &Build{
			Route:      rt,
			Upstream:   rt.Upstream,
			Consumers:  cfg.Consumers,
			Logger:     st.log,
			Registerer: sharedRegisterer{&g.shared},
			Cluster:    st.cluster,
			ConfigDir:  cfg.Dir(),
			st:         st,
			peers:      peers,
		}
		if sec := db.factory.section; sec != nil {
			b.section = st.sections[sec.key]
			if b.section == nil {
				continue // the section is invalid (reported)
			}
		}
		parts, err := db.factory.build(db.config, b)
		if err != nil {
			p.AddErr(db.path, fmt.Errorf("route %s: %w", rt.Name, err))
			continue
		}
		out = append(out, builtPlugin{name: db.factory.name, parts: parts, config: db.config, source: db.path})
	}
	return out
}
