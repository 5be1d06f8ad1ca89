package proxy

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/signal"
	"sync"
	"syscall"
	"time"

	"github.com/sluice-gw/sluice/proxy/config"
)

// Run serves cfg until SIGTERM or SIGINT (or ctx is done): the proxy on
// server.listen, the admin API on admin.listen. SIGHUP reloads the config file;
// so does a change to it or to a "file:" secret when reload.watch is on
// (watch.go). On SIGTERM/SIGINT it stops accepting, drains in-flight requests
// for at most server.drain_timeout, and returns nil.
func Run(ctx context.Context, cfg *config.Config, opts Options) error {
	g, err := New(cfg, opts)
	if err != nil {
		return err
	}
	ln, err := net.Listen("tcp", cfg.Server.Listen)
	if err != nil {
		return fmt.Errorf("server.listen: %w", err)
	}
	var adminLn net.Listener
	if cfg.Admin.Listen != "" {
		if adminLn, err = net.Listen("tcp", cfg.Admin.Listen); err != nil {
			ln.Close()
			return fmt.Errorf("admin.listen: %w", err)
		}
	}
	log := g.Logger()

	signals := make(chan os.Signal, 4)
	signal.Notify(signals, syscall.SIGHUP, syscall.SIGTERM, syscall.SIGINT)
	defer signal.Stop(signals)

	serveErr := make(chan error, 2)
	go func() { serveErr <- g.Serve(ln) }()
	if adminLn != nil {
		go func() {
			if err := g.ServeAdmin(adminLn); err != nil {
				serveErr <- fmt.Errorf("admin: %w", err)
			}
		}()
	}
	// The config watcher runs for as long as Run serves; it follows
	// reload.watch through reloads (watching nothing while it is off) and
	// asks this loop for its reloads, so that they never overlap SIGHUP's.
	watchReloads := make(chan watchReload, 1)
	watchCtx, cancelWatch := context.WithCancel(context.Background())
	watchDone := make(chan struct{})
	go func() {
		defer close(watchDone)
		newConfigWatcher(g, opts.ConfigPath, watchReloads).run(watchCtx)
	}()
	stopWatching := sync.OnceFunc(func() { cancelWatch(); <-watchDone })
	defer stopWatching()

	log.Info("sluice started", "version", opts.Version, "config", opts.ConfigPath, "listen", ln.Addr().String(), "admin", cfg.Admin.Listen,
		"routes", len(g.state.Load().routes), "upstreams", len(g.state.Load().upstreams))
	if adminLn != nil && !cfg.Admin.Token.IsSet() && !LoopbackListen(cfg.Admin.Listen) {
		log.Warn("admin.token is not set: on this non-loopback admin listener only /metrics, /healthz and /readyz answer; "+
			"/admin/* is served to loopback connections only", "admin", cfg.Admin.Listen)
	}

	for {
		select {
		case sig := <-signals:
			if sig == syscall.SIGHUP {
				g.Logger().Info("SIGHUP: reloading config", "file", opts.ConfigPath)
				_ = g.Reload() // logged and counted; the old config keeps serving
				continue
			}
			g.Logger().Info("draining", "signal", sig.String(), "drain_timeout", g.Config().Server.DrainTimeout.String())
		case rq := <-watchReloads:
			g.Logger().Info("reloading config", "trigger", "watch", "reason", rq.reason, "path", rq.path)
			_ = g.Reload() // as for SIGHUP
			continue
		case <-ctx.Done():
			g.Logger().Info("draining", "reason", "context done")
		case err := <-serveErr:
			if adminLn != nil {
				adminLn.Close()
			}
			return err
		}
		break
	}
	stopWatching() // no reloads while draining
	drain := g.Config().Server.DrainTimeout.D()
	sctx, cancel := context.WithTimeout(context.Background(), drain)
	defer cancel()
	start := time.Now()
	drained := make(chan error, 1)
	go func() { drained <- g.Shutdown(sctx) }()
	for waiting := true; waiting; {
		select {
		case err = <-drained:
			waiting = false
		case sig := <-signals:
			if sig == syscall.SIGHUP {
				continue // no reloads while draining
			}
			// A second SIGTERM/SIGINT (Ctrl-C twice) does not wait any longer.
			g.Logger().Warn("second signal while draining: exiting now", "signal", sig.String())
			return fmt.Errorf("stopped by a second %s before in-flight requests completed", sig)
		}
	}
	if adminLn != nil {
		adminLn.Close()
	}
	if errors.Is(err, context.DeadlineExceeded) {
		g.Logger().Warn("drain timeout reached; exiting with requests still in flight", "drain_timeout", drain.String())
		return nil
	}
	g.Logger().Info("stopped", "drained_in", time.Since(start).String())
	return err
}
