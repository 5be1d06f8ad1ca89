package proxy

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"github.com/sluice-gw/sluice/proxy/config"
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

	state    atomic.Pointer[state]
	logLevel slog.LevelVar

	reloadMu sync.Mutex                    // one reload at a time
	reloaded reloadNotice                  // wakes the config watcher (watch.go)
	rejected atomic.Pointer[config.Config] // the last config a reload rejected, nil after one succeeds
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
	st, err := g.prepare(cfg, nil)
	if err != nil {
		return nil, err
	}
	st.bindMetrics(g.metrics)
	g.metrics.bodies.setLimit(int64(cfg.Server.MaxBodyMemory))
	g.state.Store(st)
	st.bg.start(st.log)
	g.server = g.newServer(&cfg.Server)
	return g, nil
}

// Check compiles cfg without serving it: plugin blocks are decoded and
// validated, plugins built (not started), routes registered. It returns every
// problem in one *ConfigError (see Validate for a whole file).
func Check(cfg *config.Config, plugins *Registry) error {
	g := &Gateway{opts: Options{Plugins: plugins, LogOutput: io.Discard}, metrics: NewMetrics()}
	g.shared.registry = g.metrics.Registry
	st, err := g.compile(cfg, newClientPools())
	st.close()
	st.dropCluster(nil)
	return err
}

// Validate returns every problem of a config file in one *config.ConfigError,
// sorted by key path: the loader's (loadErr, as config.Load returned it with
// cfg) and, when the file could be read, Check's. A loadErr that is not a
// list of problems (the file cannot be read or parsed) is returned as is.
// This is `sluice validate`.
func Validate(cfg *config.Config, loadErr error, plugins *Registry) error {
	var ce *config.ConfigError
	if loadErr != nil && !errors.As(loadErr, &ce) {
		return loadErr
	}
	var p config.Problems
	p.AddErr("", loadErr)
	if cfg != nil {
		p.AddErr("", Check(cfg, plugins))
	}
	return p.Err()
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
		NoDefaultDate:         true,             // keep the origin's (or a stored) Date; finish adds one when missing (date.go)
		LazyRequestTime:       true,             // durations use the monotonic clock (see clock.go)
		ReadTimeout:           sc.ReadTimeout.D(),
		WriteTimeout:          sc.WriteTimeout.D(),
		IdleTimeout:           sc.IdleTimeout.D(),
		MaxRequestBodySize:    int(sc.MaxRequestBody),
		// Only with stream_request_threshold: fasthttp then hands the
		// handler a body stream; reserveRequestBody reads the bodies at or
		// under the threshold into memory as before (reqstream.go).
		StreamRequestBody: sc.StreamRequestThreshold > 0,
		ReadBufferSize:    int(sc.MaxHeaderSize),
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
	g.stopServing()           // draining, not ready, listeners closed (edge.go)
	g.metrics.open.drainAll() // open streams and tunnels end now
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

// logger builds the gateway's logger for a log config. The level is shared
// (g.logLevel), so a reload changes it for every logger at once.
func (g *Gateway) logger(lc config.LogConfig) *slog.Logger {
	opts := &slog.HandlerOptions{Level: &g.logLevel}
	var h slog.Handler
	if lc.Format == "text" {
		h = slog.NewTextHandler(g.opts.LogOutput, opts)
	} else {
		h = slog.NewJSONHandler(g.opts.LogOutput, opts)
	}
	return slog.New(h)
}

func parseLevel(s string) slog.Level {
	switch s {
	case "debug":
		return slog.LevelDebug
	case "warn":
		return slog.LevelWarn
	case "error":
		return slog.LevelError
	}
	return slog.LevelInfo
}

// fasthttpLogger routes fasthttp's own messages (connection errors and the
// like) to the gateway's logger at debug level.
type fasthttpLogger struct{ g *Gateway }

func (l fasthttpLogger) Printf(format string, args ...any) {
	l.g.state.Load().log.Debug(fmt.Sprintf(format, args...), "component", "fasthttp")
}
