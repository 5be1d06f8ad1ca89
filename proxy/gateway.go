package proxy

import (
	"context"
	"errors"
	"fmt"
	"github.com/sluice-gw/sluice/proxy/config"
	"io"
	"log/slog"
	"maps"
	"net"
	"net/http"
	"os"
	"reflect"
	"runtime/debug"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/valyala/fasthttp"
)

// Options configure a Gateway beyond its Config.
type Options struct {
	// Plugins are the plugins the config may use. Required.
	Plugins *Registry
	// ConfigPath is the file Reload reads. Empty: Reload fails.
	ConfigPath string
	// LogOutput receives the logs (JSON or text lines). Nil means os.Stdout.
	LogOutput io.Writer
	// Dial, if set, replaces TCP dialing to upstream targets (tests and
	// benchmarks use an in-memory listener). The address is the target's host:port.
	Dial fasthttp.DialFunc
	// Version is reported by /healthz and the startup log.
	Version string
}

// Gateway is the Sluice proxy: a compiled configuration behind an atomic
// pointer, the fasthttp server that serves it and the admin API.
type Gateway struct {
	opts    Options
	metrics *Metrics
	pools   *clientPools
	shared  sharedStore
	health  healthStore // target health across reloads (balance.go)

	state    atomic.Pointer[state]
	logLevel slog.LevelVar

	reloadMu sync.Mutex // one reload at a time
	ready    atomic.Bool
	draining atomic.Bool

	server  *fasthttp.Server
	started time.Time

	adminMu  sync.Mutex
	adminSrv []*http.Server

	serveMu   sync.Mutex      // orders Serve and Shutdown (edge.go)
	listeners []*edgeListener // proxy listeners being served
}

// New compiles cfg and returns a gateway ready to serve it. Every problem in
// cfg (plugins included) is reported in one *ConfigError.
func New(cfg *config.Config, opts Options) (*Gateway, error) {
	if opts.Plugins == nil {
		return nil, errors.New("proxy: Options.Plugins is required")
	}
	if opts.LogOutput == nil {
		opts.LogOutput = os.Stdout
	}
	g := &Gateway{opts: opts, metrics: NewMetrics(), pools: newClientPools(), started: time.Now()}
	g.shared.registry = g.metrics.Registry
	g.logLevel.Set(parseLevel(cfg.Log.Level))
	st, err := g.compile(cfg, g.pools)
	if err == nil {
		err = st.start()
	}
	if err != nil {
		st.close()
		st.dropCluster(nil)
		return nil, err
	}
	st.bindMetrics(g.metrics)
	g.metrics.bodies.setLimit(int64(cfg.Server.MaxBodyMemory))
	g.state.Store(st)
	g.server = g.newServer(&cfg.Server)
	return g, nil
}

// Check compiles cfg without serving it: plugin blocks are decoded and
// validated, plugins built (not started), routes registered. It returns every
// problem in one *ConfigError. This is `sluice validate`.
func Check(cfg *config.Config, plugins *Registry) error {
	g := &Gateway{opts: Options{Plugins: plugins, LogOutput: io.Discard}, metrics: NewMetrics()}
	g.shared.registry = g.metrics.Registry
	st, err := g.compile(cfg, newClientPools())
	st.close()
	st.dropCluster(nil)
	return err
}

// Metrics returns the gateway's metrics (its Prometheus registry).
func (g *Gateway) Metrics() *Metrics { return g.metrics }

// Config returns the configuration being served.
func (g *Gateway) Config() *config.Config { return g.state.Load().cfg }

// Logger returns the gateway's logger.
func (g *Gateway) Logger() *slog.Logger { return g.state.Load().log }

func (g *Gateway) newServer(sc *config.ServerConfig) *fasthttp.Server {
	maxConns := sc.MaxConnections
	if maxConns <= 0 {
		maxConns = defaultMaxConnections
	}
	return &fasthttp.Server{
		Handler:               g.serve,
		ErrorHandler:          g.serveError,
		ExpectHandler:         g.expectContinue, // 413 before 100 Continue (edge.go)
		NoDefaultServerHeader: true,             // the upstream's Server header, if any, passes; none is invented
		NoDefaultContentType:  true,             // never invent a Content-Type
		LazyRequestTime:       true,             // durations use the monotonic clock (see clock.go)
		ReadTimeout:           sc.ReadTimeout.D(),
		WriteTimeout:          sc.WriteTimeout.D(),
		IdleTimeout:           sc.IdleTimeout.D(),
		MaxRequestBodySize:    int(sc.MaxRequestBody),
		ReadBufferSize:        int(sc.MaxHeaderSize),
		// server.max_connections is enforced by Serve's listener (problem+json
		// 503); fasthttp's own limit stays above it: a closed connection is
		// counted out a moment before its worker is.
		Concurrency:                  2 * maxConns,
		DisablePreParseMultipartForm: true, // bodies are forwarded as bytes
		CloseOnShutdown:              true,
		SecureErrorLogMessage:        true,
		TCPKeepalive:                 true,
		Logger:                       fasthttpLogger{g},
	}
}

// serve is the fasthttp handler: limits, routing, then the route's pipeline.
func (g *Gateway) serve(ctx *fasthttp.RequestCtx) {
	st := g.state.Load()
	st.active.Add(1)
	n := g.metrics.inflight.Add(1)
	switch {
	case st.maxInflight > 0 && n > st.maxInflight:
		st.reject(ctx, errOverloaded)
	case hasDotSegment(ctx.Request.URI().PathOriginal()):
		st.reject(ctx, errDotSegment)
	case !isHTTP1(ctx.Request.Header.Protocol()):
		st.reject(ctx, errHTTPVersion)
	case !validHost(ctx.Request.Header.Host(), ctx.Request.Header.IsHTTP11()):
		st.reject(ctx, errHost)
	default:
		if h := st.table.lookup(ctx); h != nil {
			h(ctx)
		} else {
			st.reject(ctx, st.notFound(ctx))
		}
	}
	g.metrics.inflight.Add(-1)
	st.active.Add(-1)
}

// serveError answers requests that fasthttp could not read: they never reach
// a route or an upstream.
func (g *Gateway) serveError(ctx *fasthttp.RequestCtx, err error) {
	st := g.state.Load()
	var e *Error
	var small *fasthttp.ErrSmallBuffer
	var netErr net.Error
	switch {
	case errors.Is(err, fasthttp.ErrBodyTooLarge):
		e = Errorf(CodeRequestTooLarge, "the request body is larger than %s (server.max_request_body)", st.cfg.Server.MaxRequestBody)
	case errors.As(err, &small):
		e = Errorf(CodeRequestTooLarge, "the request head is larger than %s (server.max_header_size)", st.cfg.Server.MaxHeaderSize)
		e.Status = fasthttp.StatusRequestHeaderFieldsTooLarge
	case errors.As(err, &netErr) && netErr.Timeout():
		e = NewError(CodeBadRequest, "the request was not received within server.read_timeout")
		e.Status = fasthttp.StatusRequestTimeout
	default:
		e = NewError(CodeBadRequest, "malformed HTTP request")
	}
	e.Err = err
	st.reject(ctx, e)
}

// reject answers a request that no route serves.
func (st *state) reject(ctx *fasthttp.RequestCtx, err *Error) {
	ex := acquireExchange()
	ex.begin(ctx, nil)
	st.writeError(ctx, ex, err)
	st.finish(ctx, ex, st.unmatched)
	releaseExchange(ex)
}

func (st *state) notFound(ctx *fasthttp.RequestCtx) *Error {
	if allow := st.table.allowed(ctx); len(allow) > 0 {
		e := Errorf(CodeMethodNotAllowed, "%s is not allowed here; allowed: %s", ctx.Method(), strings.Join(allow, ", "))
		e.Allow = strings.Join(allow, ", ")
		return e
	}
	return Errorf(CodeRouteNotFound, "no route matches %s %s", ctx.Method(), ctx.Request.URI().PathOriginal())
}

// serve runs one request through the route's pipeline and writes the answer.
func (rt *Route) serve(ctx *fasthttp.RequestCtx) {
	st := rt.st
	ex := acquireExchange()
	var head requestHead
	scanRequestHead(ctx.Request.Header.RawHeaders(), &head)
	ex.begin(ctx, &head)
	ex.Route, ex.Upstream = rt, rt.Upstream
	if rt.Deadline > 0 {
		ex.deadline = ex.startNano + int64(rt.Deadline)
	}
	switch {
	case head.badName:
		st.writeError(ctx, ex, errHeaderName)
	case head.expect != nil && !asciiEqualFold100Continue(head.expect):
		st.writeError(ctx, ex, errExpect)
	case head.hops&methodOverrides != 0:
		st.writeError(ctx, ex, errMethodOverride)
	case !rt.reserveRequestBody(ctx, ex):
		st.writeError(ctx, ex, errRequestBodyBudget)
	default:
		prepareRequest(ctx, ex, &head)
		if err := rt.run(ctx, ex); err != nil {
			st.writeError(ctx, ex, err)
		}
	}
	st.finish(ctx, ex, rt.metrics)
	ex.settleBodies(&ctx.Response)
	releaseExchange(ex)
}

// reserveRequestBody takes the request body's share of the body budget; a
// request without a body costs nothing.
func (rt *Route) reserveRequestBody(ctx *fasthttp.RequestCtx, ex *Exchange) bool {
	n := int64(len(ctx.Request.Body()))
	if n == 0 {
		return true
	}
	b := rt.Upstream.bodies
	if !b.take(n) {
		return false
	}
	ex.reqHeld, ex.budget = n, b
	return true
}

// run calls the pipeline; a panic in any stage becomes an internal_error.
func (rt *Route) run(ctx *fasthttp.RequestCtx, ex *Exchange) (err error) {
	defer func() {
		if r := recover(); r != nil {
			rt.st.log.Error("panic in pipeline", "route", rt.Name, "request_id", string(ex.requestID),
				"panic", fmt.Sprint(r), "stack", string(debug.Stack()))
			err = NewError(CodeInternalError, "internal error")
		}
	}()
	return rt.handler.Handle(ctx, ex)
}

var strAllow = []byte("Allow")

// writeError renders err as problem+json: the one place gateway errors are written.
func (st *state) writeError(ctx *fasthttp.RequestCtx, ex *Exchange, err error) {
	e := Classify(err)
	ex.Err = e
	p := ProblemFor(e, ctx, ex)
	p.Write(ctx, ex)
	if e.Allow != "" {
		ctx.Response.Header.SetBytesKV(strAllow, []byte(e.Allow))
	}
	if e.Authenticate != "" {
		ctx.Response.Header.Set("WWW-Authenticate", e.Authenticate)
	}
	if e.Code == CodeInternalError {
		st.log.Error("request failed", "code", e.Code.String(), "request_id", string(ex.requestID), "error", e.Error())
	} else if e.Err != nil && st.log.Enabled(context.Background(), slog.LevelDebug) {
		st.log.Debug("request failed", "code", e.Code.String(), "request_id", string(ex.requestID), "error", e.Error())
	}
}

// finish completes every response: X-Request-Id, metrics, access log.
func (st *state) finish(ctx *fasthttp.RequestCtx, ex *Exchange, rm *routeMetrics) {
	if len(ex.addHeader) > 0 {
		ex.applyResponseHeaders(&ctx.Response)
	}
	ctx.Response.Header.SetCanonical(strXRequestID, ex.requestID)
	status := ctx.Response.StatusCode()
	elapsed := since(ex.startNano)
	rm.countRequest(ctx.Method(), status)
	rm.duration.Observe(elapsed.Seconds())
	if ex.problem != 0 {
		rm.countError(ex.problem - 1)
	}
	if st.accessLog {
		st.logAccess(ctx, ex, rm, status, elapsed)
	}
}

func (st *state) logAccess(ctx *fasthttp.RequestCtx, ex *Exchange, rm *routeMetrics, status int, elapsed time.Duration) {
	attrs := make([]slog.Attr, 0, 14)
	attrs = append(attrs,
		slog.String("route", rm.route),
		slog.String("upstream", rm.upstream),
		slog.String("method", string(ctx.Method())),
		slog.String("path", string(ex.Path())),
		slog.Int("status", status),
		slog.Float64("duration_ms", float64(elapsed.Microseconds())/1000),
		slog.Int("bytes_in", len(ctx.Request.Body())),
		slog.Int("bytes_out", len(ctx.Response.Body())),
		slog.String("request_id", string(ex.requestID)),
		slog.String("remote", string(appendRemoteIP(nil, ctx.RemoteAddr()))),
	)
	if ex.Attempts > 0 {
		attrs = append(attrs, slog.Int("attempts", ex.Attempts), slog.String("target", ex.Target.URL))
	}
	if ex.Consumer != "" {
		attrs = append(attrs, slog.String("consumer", ex.Consumer))
	}
	if ex.problem != 0 {
		attrs = append(attrs, slog.String("code", (ex.problem-1).String()))
	}
	st.log.LogAttrs(context.Background(), slog.LevelInfo, "access", attrs...)
}

// Serve serves proxy traffic on ln until Shutdown. Called after (or while)
// Shutdown runs, it closes ln and returns nil at once, leaving the gateway
// not ready. Connections beyond server.max_connections get 503 overloaded.
func (g *Gateway) Serve(ln net.Listener) error {
	el := newEdgeListener(ln, g.state.Load().cfg.Server.MaxConnections)
	if !g.trackListener(el) { // marks ready unless draining
		_ = el.Close()
		return nil
	}
	defer g.untrackListener(el)
	err := g.server.Serve(el)
	if isClosedErr(err) {
		return nil
	}
	return err
}

// Shutdown stops accepting connections and waits, at most until ctx is done,
// for in-flight requests to complete. Then it closes plugins and pools.
func (g *Gateway) Shutdown(ctx context.Context) error {
	g.stopServing() // draining, not ready, listeners closed (edge.go)
	err := g.server.ShutdownWithContext(ctx)
	g.adminMu.Lock()
	for _, srv := range g.adminSrv {
		_ = srv.Close()
	}
	g.adminMu.Unlock()
	st := g.state.Load()
	st.close()
	st.dropCluster(nil)
	for _, hc := range g.pools.release(nil) {
		hc.CloseIdleConnections()
	}
	return err
}

// Apply compiles cfg and, if it is valid, swaps it in atomically. Requests in
// flight finish with the config they started with; the old config's plugins
// are closed once they are done. Settings of the listeners themselves
// (server.*, admin.listen) need a restart: a change to them is logged.
func (g *Gateway) Apply(cfg *config.Config) error {
	g.reloadMu.Lock()
	defer g.reloadMu.Unlock()
	old := g.state.Load()
	st, err := g.compile(cfg, g.pools)
	if err == nil {
		err = st.start()
	}
	if err != nil {
		st.close()
		st.dropCluster(old)
		old.claimHealth() // a failed start may have claimed target health
		return g.rejectReload(err)
	}
	st.bindMetrics(g.metrics)
	g.metrics.bodies.setLimit(int64(cfg.Server.MaxBodyMemory))
	g.logLevel.Set(parseLevel(cfg.Log.Level))
	g.state.Store(st)
	g.metrics.reloads.WithLabelValues("success").Inc()
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
	g.health.keep(st.upstreams)
	go g.retire(old, st, g.pools.release(st.clientKeys))
	return nil
}

// Reload reads Options.ConfigPath again and applies it.
func (g *Gateway) Reload() error {
	if g.opts.ConfigPath == "" {
		return errors.New("no config file to reload from")
	}
	cfg, err := config.Load(g.opts.ConfigPath)
	if err != nil {
		return g.rejectReload(err)
	}
	return g.Apply(cfg)
}

// rejectReload counts and logs a rejected config and returns err.
func (g *Gateway) rejectReload(err error) error {
	g.metrics.reloads.WithLabelValues("failure").Inc()
	g.state.Load().log.Error("config reload rejected; the previous config keeps serving", "error", err.Error())
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
