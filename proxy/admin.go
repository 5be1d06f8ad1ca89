package proxy

import (
	"crypto/subtle"
	"encoding/json"
	"errors"
	"io"
	"maps"
	"net"
	"net/http"
	"net/http/pprof"
	"net/netip"
	"slices"
	"sort"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus/promhttp"
	"github.com/sluice-gw/sluice/proxy/config"
)

// AdminHandler returns the admin API (fixed paths; docs/admin-api.md):
//
//	GET  /metrics          Prometheus text exposition of the gateway's registry
//	GET  /healthz          200 while the process runs
//	GET  /readyz           200 when serving, 503 before start and while draining
//	GET  /admin/config     effective config, secrets redacted
//	GET  /admin/upstreams  targets and their connection pools
//	POST /admin/reload     re-read the config file
//
// Only /metrics, /healthz and /readyz are open (Prometheus and the probes).
// Everything else (/admin/*, plugin endpoints, /debug/pprof/) needs the admin
// bearer token when admin.token is set; without one, reading endpoints are
// served only on a loopback connection and mutating ones are refused.
//
// Admin traffic is not hot-path: it uses net/http. Errors are problem+json.
func (g *Gateway) AdminHandler() http.Handler {
	mux := http.NewServeMux()
	mux.Handle("GET /metrics", promhttp.HandlerFor(g.metrics.Registry, promhttp.HandlerOpts{
		Registry:          g.metrics.Registry,
		EnableOpenMetrics: true,
	}))
	mux.HandleFunc("GET /healthz", g.adminHealthz)
	mux.HandleFunc("GET /readyz", g.adminReadyz)
	mux.HandleFunc("GET /admin/config", g.requireRead(g.adminConfig))
	mux.HandleFunc("GET /admin/upstreams", g.requireRead(g.adminUpstreams))
	mux.HandleFunc("POST /admin/reload", g.requireToken(g.adminReload))
	if g.state.Load().cfg.Admin.Pprof {
		mux.HandleFunc("GET /debug/pprof/", g.requireRead(pprof.Index))
		mux.HandleFunc("GET /debug/pprof/cmdline", g.requireRead(pprof.Cmdline))
		mux.HandleFunc("GET /debug/pprof/profile", g.requireRead(pprof.Profile))
		mux.HandleFunc("GET /debug/pprof/symbol", g.requireRead(pprof.Symbol))
		mux.HandleFunc("GET /debug/pprof/trace", g.requireRead(pprof.Trace))
	}
	// Everything else (plugin endpoints, and the 404/405 answers that would
	// tell which endpoints exist) is guarded like /admin/config.
	mux.HandleFunc("/", g.requireRead(func(w http.ResponseWriter, r *http.Request) {
		// Endpoints added by the plugins of the config now serving.
		st := g.state.Load()
		if e, ok := st.admin[r.Method+" "+r.URL.Path]; ok {
			if e.Mutating {
				g.requireToken(e.Handler)(w, r)
			} else {
				e.Handler(w, r)
			}
			return
		}
		code := CodeRouteNotFound
		for _, p := range []string{"/metrics", "/healthz", "/readyz", "/admin/config", "/admin/upstreams", "/admin/reload"} {
			if r.URL.Path == p {
				code = CodeMethodNotAllowed
			}
		}
		for pattern := range st.admin {
			if _, path, _ := strings.Cut(pattern, " "); path == r.URL.Path {
				code = CodeMethodNotAllowed
			}
		}
		writeAdminProblem(w, r, code.Status(), code, "no admin endpoint "+r.Method+" "+r.URL.Path)
	}))
	return withRequestID(mux)
}

// ServeAdmin serves the admin API on ln until Shutdown has drained the proxy
// (readiness reports draining meanwhile).
func (g *Gateway) ServeAdmin(ln net.Listener) error {
	srv := &http.Server{Handler: g.AdminHandler(), ReadHeaderTimeout: 5 * time.Second, ReadTimeout: 10 * time.Second, WriteTimeout: 30 * time.Second}
	g.adminMu.Lock()
	if g.draining.Load() {
		g.adminMu.Unlock()
		return nil
	}
	g.adminSrv = append(g.adminSrv, srv)
	g.adminMu.Unlock()
	err := srv.Serve(ln)
	if errors.Is(err, http.ErrServerClosed) || errors.Is(err, net.ErrClosed) {
		return nil
	}
	return err
}

func (g *Gateway) adminHealthz(w http.ResponseWriter, _ *http.Request) {
	writeJSON(w, http.StatusOK, map[string]any{"status": "ok", "version": g.opts.Version,
		"uptime_seconds": int(time.Since(g.started).Seconds())})
}

func (g *Gateway) adminReadyz(w http.ResponseWriter, _ *http.Request) {
	switch {
	case g.draining.Load():
		writeJSON(w, http.StatusServiceUnavailable, map[string]string{"status": "draining"})
	case !g.ready.Load():
		writeJSON(w, http.StatusServiceUnavailable, map[string]string{"status": "starting"})
	default:
		writeJSON(w, http.StatusOK, map[string]string{"status": "ready"})
	}
}

// adminConfig shows the effective configuration. Every plugin block is shown
// as its plugin decoded it (typed, with Secret fields redacted), per route
// with the block that applies and where it comes from.
func (g *Gateway) adminConfig(w http.ResponseWriter, _ *http.Request) {
	st := g.state.Load()
	type pluginView struct {
		Source string `json:"source"`
		Config any    `json:"config"`
	}
	type routeView struct {
		config.RouteConfig
		Plugins map[string]pluginView `json:"plugins"`
	}
	routes := map[string]routeView{}
	for name, rc := range st.cfg.Routes {
		rv := routeView{RouteConfig: rc, Plugins: map[string]pluginView{}}
		if rt := st.routes[name]; rt != nil {
			for _, bp := range rt.plugins {
				rv.Plugins[bp.name] = pluginView{Source: bp.source, Config: bp.config}
			}
		}
		routes[name] = rv
	}
	view := map[string]any{
		"server":    st.cfg.Server,
		"log":       st.cfg.Log,
		"admin":     st.cfg.Admin,
		"cluster":   st.cfg.Cluster,
		"consumers": st.cfg.Consumers, // keys are Secrets: shown as [redacted]
		"upstreams": st.cfg.Upstreams,
		"routes":    routes,
	}
	for key, sec := range st.sections { // plugin-owned sections, as decoded
		view[key] = sec
	}
	out, err := json.MarshalIndent(view, "", "  ")
	if err != nil {
		writeAdminProblem(w, nil, http.StatusInternalServerError, CodeInternalError, "cannot render the config")
		return
	}
	// Strings inside JSON are escaped; values from the environment are
	// replaced in the escaped text as well as raw.
	text := st.cfg.Redact(string(out))
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	_, _ = io.WriteString(w, text+"\n")
}

func (g *Gateway) adminUpstreams(w http.ResponseWriter, _ *http.Request) {
	st := g.state.Load()
	type targetView struct {
		URL   string `json:"url"`
		Conns int    `json:"open_conns"`
		TargetHealth
	}
	type upstreamView struct {
		Name    string         `json:"name"`
		Timeout string         `json:"timeout"`
		Balance string         `json:"balance"`
		Routes  []string       `json:"routes"`
		Targets []targetView   `json:"targets"`
		Status  map[string]any `json:"status,omitempty"` // plugin sections (breaker, limiter...)
	}
	var out []upstreamView
	for _, name := range slices.Sorted(maps.Keys(st.upstreams)) {
		u := st.upstreams[name]
		uv := upstreamView{Name: name, Timeout: u.Timeout.String(), Balance: st.cfg.Upstreams[name].Balance, Routes: []string{}}
		for rn, rt := range st.routes {
			if rt.Upstream == u {
				uv.Routes = append(uv.Routes, rn)
			}
		}
		sort.Strings(uv.Routes)
		for _, t := range u.Targets {
			uv.Targets = append(uv.Targets, targetView{URL: t.URL, Conns: t.client.ConnsCount(), TargetHealth: t.Health()})
		}
		for _, rep := range st.reports {
			if rep.upstream != name {
				continue
			}
			if uv.Status == nil {
				uv.Status = map[string]any{}
			}
			if _, dup := uv.Status[rep.name]; !dup {
				uv.Status[rep.name] = rep.status()
			}
		}
		out = append(out, uv)
	}
	writeJSON(w, http.StatusOK, map[string]any{"upstreams": out})
}

func (g *Gateway) adminReload(w http.ResponseWriter, r *http.Request) {
	err := g.Reload()
	if err == nil {
		writeJSON(w, http.StatusOK, map[string]any{"result": "success", "routes": len(g.state.Load().routes)})
		return
	}
	p := &Problem{Status: http.StatusUnprocessableEntity, Code: CodeBadRequest,
		Detail: "the new config was rejected; the previous config keeps serving"}
	var ce *config.ConfigError
	if errors.As(err, &ce) {
		for _, cp := range ce.Problems {
			p.Problems = append(p.Problems, Finding{Message: cp.Error()})
		}
	} else {
		p.Problems = []Finding{{Message: err.Error()}}
	}
	writeAdminProblemOf(w, r, p)
}

// requireToken guards mutating calls with the admin bearer token. Without a
// configured token they are refused (403), a wrong or missing one gets 401.
func (g *Gateway) requireToken(next http.HandlerFunc) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		token := g.state.Load().cfg.Admin.Token
		if !token.IsSet() {
			writeAdminProblem(w, r, http.StatusForbidden, CodeForbidden, "admin.token is not configured: mutating admin calls are disabled")
			return
		}
		if !g.checkToken(w, r, token) {
			return
		}
		next(w, r)
	}
}

// requireRead guards the reading admin endpoints (config, upstreams, plugin
// status, pprof): with admin.token set they need it like mutating calls;
// without one they are served only on a loopback connection, never silently
// to the network.
func (g *Gateway) requireRead(next http.HandlerFunc) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		token := g.state.Load().cfg.Admin.Token
		if !token.IsSet() {
			if !loopbackConn(r) {
				writeAdminProblem(w, r, http.StatusForbidden, CodeForbidden,
					"admin.token is not configured: this admin endpoint is served only on a loopback admin listener")
				return
			}
		} else if !g.checkToken(w, r, token) {
			return
		}
		next(w, r)
	}
}

// checkToken compares the bearer token in constant time; on a mismatch it
// writes 401 and returns false. It is the one admin token check.
func (g *Gateway) checkToken(w http.ResponseWriter, r *http.Request, token config.Secret) bool {
	got, ok := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
	if !ok || subtle.ConstantTimeCompare([]byte(strings.TrimSpace(got)), []byte(token.Reveal())) != 1 {
		w.Header().Set("WWW-Authenticate", `Bearer realm="sluice-admin"`)
		writeAdminProblem(w, r, http.StatusUnauthorized, CodeUnauthorized, "a valid admin bearer token is required")
		return false
	}
	return true
}

// loopbackConn reports whether r arrived on a loopback address of this host
// (the admin listener is 127.0.0.1/::1, or the caller connected to it
// through the loopback interface).
func loopbackConn(r *http.Request) bool {
	addr, _ := r.Context().Value(http.LocalAddrContextKey).(net.Addr)
	return isLoopbackAddr(addr)
}

func isLoopbackAddr(addr net.Addr) bool {
	switch a := addr.(type) {
	case nil:
		return false
	case *net.TCPAddr:
		return a.IP.IsLoopback()
	}
	host := addr.String()
	if h, _, err := net.SplitHostPort(host); err == nil {
		host = h
	}
	return loopbackIP(host)
}

// LoopbackListen reports whether a listen address (host:port) binds only
// loopback interfaces: an IP literal that is loopback, or "localhost".
func LoopbackListen(listen string) bool {
	host, _, err := net.SplitHostPort(listen)
	return err == nil && (host == "localhost" || loopbackIP(host))
}

func loopbackIP(host string) bool {
	ip, err := netip.ParseAddr(host)
	return err == nil && ip.Unmap().IsLoopback()
}

func writeAdminProblem(w http.ResponseWriter, r *http.Request, status int, code Code, detail string) {
	writeAdminProblemOf(w, r, &Problem{Status: status, Code: code, Detail: detail})
}

// writeAdminProblemOf writes p with the proxy's encoder, so an admin error has
// the same members in the same order as a proxy error, request_id included
// (the one withRequestID put on the response).
func writeAdminProblemOf(w http.ResponseWriter, r *http.Request, p *Problem) {
	body := p.appendJSON(nil, []byte(instance(r)), []byte(w.Header().Get(headerRequestID)))
	w.Header().Set("Content-Type", ProblemContentType)
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(p.Status)
	_, _ = w.Write(append(body, '\n'))
}

// headerRequestID is the header the proxy reads a caller's request id from
// and answers with; the admin API does the same.
var headerRequestID = string(strXRequestID)

// withRequestID gives every admin answer an X-Request-Id: the caller's when
// it is a valid one, a new one otherwise, as the proxy does.
func withRequestID(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		id := []byte(r.Header.Get(headerRequestID))
		if !validRequestID(id) {
			id = newRequestID(nil)
		}
		w.Header().Set(headerRequestID, string(id))
		next.ServeHTTP(w, r)
	})
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(status)
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	_ = enc.Encode(v)
}

func instance(r *http.Request) string {
	if r == nil {
		return ""
	}
	return r.URL.Path
}
