package proxy

import (
	"errors"
	"maps"
	"reflect"
	"slices"
	"strings"
	"time"

	"github.com/sluice-gw/sluice/proxy/config"
	"github.com/valyala/fasthttp"
)

// Apply compiles cfg and, if it is valid, swaps it in atomically. Requests in
// flight finish with the config they started with; the old config's plugins
// are closed once they are done. Settings of the listeners themselves
// (server.*, admin.listen) need a restart: a change to them is logged.
func (g *Gateway) Apply(cfg *config.Config) error {
	g.reloadMu.Lock()
	defer g.reloadMu.Unlock()
	old := g.state.Load()
	st, err := g.prepare(cfg, old)
	if err != nil {
		old.claimHealth() // a failed start may have claimed target health
		return g.rejectReload(cfg, err)
	}
	st.bindMetrics(g.metrics)
	g.metrics.bodies.setLimit(int64(cfg.Server.MaxBodyMemory))
	g.logLevel.Set(parseLevel(cfg.Log.Level))
	g.state.Store(st)
	old.bg.stop() // the old config's background work ends; retire waits for it
	st.bg.start(st.log)
	g.metrics.reloads.WithLabelValues("success").Inc()
	g.rejected.Store(nil)
	g.reloaded.notify()
	for name, ort := range old.routes {
		if nrt, ok := st.routes[name]; !ok {
			g.metrics.forgetRoute(name)
		} else if nrt.Upstream.Name != ort.Upstream.Name {
			g.metrics.forgetRouteUpstream(name, ort.Upstream.Name)
		}
	}
	if restart := append(restartNeeded(old.cfg, cfg), restartSections(old.sections, st.sections)...); len(restart) > 0 {
		st.log.Warn("config reloaded, but these settings apply only after a restart", "keys", strings.Join(restart, ", "))
	}
	st.log.Info("config reloaded", "routes", len(st.routes), "upstreams", len(st.upstreams))
	go g.retire(old, st, g.pools.release(st.clientKeys))
	return nil
}

// prepare compiles cfg and starts it, ready to be swapped in. A config that
// fails either is let go again: its shared resources are released and its
// Redis client closed unless serving (the state that keeps serving, or nil)
// uses the same.
func (g *Gateway) prepare(cfg *config.Config, serving *state) (*state, error) {
	st, err := g.compile(cfg, g.pools)
	if err == nil {
		err = st.start()
	}
	if err != nil {
		st.close()
		st.dropCluster(serving)
		return nil, err
	}
	return st, nil
}

// Reload reads Options.ConfigPath again and applies it.
func (g *Gateway) Reload() error {
	if g.opts.ConfigPath == "" {
		return errors.New("no config file to reload from")
	}
	cfg, err := config.Load(g.opts.ConfigPath)
	if err != nil {
		return g.rejectReload(cfg, err) // cfg is nil if the file could not be read or parsed
	}
	return g.Apply(cfg)
}

// rejectReload counts and logs a rejected config and returns err. The
// config watcher is told: it watches the secret files cfg names too, so
// that one that was missing is seen when it arrives.
func (g *Gateway) rejectReload(cfg *config.Config, err error) error {
	g.metrics.reloads.WithLabelValues("failure").Inc()
	g.state.Load().log.Error("config reload rejected; the previous config keeps serving", "error", err.Error())
	g.rejected.Store(cfg)
	g.reloaded.notify()
	return err
}

// retire waits until no request uses old, then closes its plugins and the
// idle connections of pools no longer used.
func (g *Gateway) retire(old, successor *state, pools []*fasthttp.HostClient) {
	deadline := time.Now().Add(10 * time.Minute)
	for old.active.Load() > 0 && time.Now().Before(deadline) {
		time.Sleep(50 * time.Millisecond)
	}
	old.close()
	old.dropCluster(successor)
	for _, hc := range pools {
		hc.CloseIdleConnections()
	}
}

// restartNeeded lists the changed keys that configure the listeners
// themselves; they apply at the next start. (max_inflight and drain_timeout
// are read per request and at shutdown: they apply at once.)
func restartNeeded(a, b *config.Config) []string {
	var keys []string
	x, y := a.Server, b.Server
	for _, f := range []struct {
		key     string
		changed bool
	}{
		{"server.listen", x.Listen != y.Listen},
		{"server.read_timeout", x.ReadTimeout != y.ReadTimeout},
		{"server.write_timeout", x.WriteTimeout != y.WriteTimeout},
		{"server.idle_timeout", x.IdleTimeout != y.IdleTimeout},
		{"server.max_request_body", x.MaxRequestBody != y.MaxRequestBody},
		{"server.stream_request_threshold", x.StreamRequestThreshold != y.StreamRequestThreshold},
		{"server.max_header_size", x.MaxHeaderSize != y.MaxHeaderSize},
		{"server.max_connections", x.MaxConnections != y.MaxConnections},
		{"admin.listen", a.Admin.Listen != b.Admin.Listen},
		{"admin.pprof", a.Admin.Pprof != b.Admin.Pprof},
	} {
		if f.changed {
			keys = append(keys, f.key)
		}
	}
	return keys
}

// restartSections lists the changed fields of plugin-owned sections that
// are tagged `reload:"restart"` (see WithSection).
func restartSections(a, b map[string]any) []string {
	var keys []string
	for _, key := range slices.Sorted(maps.Keys(b)) {
		x, y := reflect.ValueOf(a[key]), reflect.ValueOf(b[key])
		if !x.IsValid() || x.Type() != y.Type() {
			continue
		}
		x, y = x.Elem(), y.Elem()
		for i := range y.NumField() {
			f := y.Type().Field(i)
			if f.Tag.Get("reload") != "restart" {
				continue
			}
			if !reflect.DeepEqual(x.Field(i).Interface(), y.Field(i).Interface()) {
				name, _, _ := strings.Cut(f.Tag.Get("koanf"), ",")
				keys = append(keys, key+"."+name)
			}
		}
	}
	return keys
}

// start makes the state ready to serve: it claims target health, starts the
// shared resources no serving state has started yet, then the health checks.
func (st *state) start() error {
	st.claimHealth()
	if err := st.shared.start(st.held); err != nil {
		return err
	}
	t, err := newTracer(&st.cfg.Tracing, st.stats, st.log)
	if err != nil {
		var p config.Problems
		p.AddErr("tracing.endpoint", err)
		return p.Err()
	}
	st.tracer = t
	for _, fn := range st.onStart {
		fn()
	}
	for _, c := range st.checkers {
		c.start()
	}
	return nil
}

// close stops the state's health checks and lets go of its shared
// resources: those no other state holds are closed. A state that never
// started (rejected, or only checked) is closed the same way.
func (st *state) close() {
	st.bg.wait()
	st.tracer.shutdown()
	for _, c := range st.checkers {
		c.stop()
	}
	if err := st.shared.release(st.held); err != nil {
		st.log.Warn("closing plugin resources", "error", err.Error())
	}
	st.held = nil
}

// dropCluster closes the state's Redis client unless other (the state that
// replaces it, or the one that keeps serving) uses the same client.
func (st *state) dropCluster(other *state) {
	if st == nil || st.cluster == nil || (other != nil && other.cluster == st.cluster) {
		return
	}
	st.cluster.close()
}
