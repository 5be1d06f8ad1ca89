package proxy

import (
	"fmt"
	"github.com/sluice-gw/sluice/proxy/config"
	"log/slog"
)

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
