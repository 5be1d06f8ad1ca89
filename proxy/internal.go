package proxy

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"runtime/debug"
	"sync"
	"time"

	"github.com/valyala/fasthttp"
)

// Internal requests are requests the gateway makes on its own behalf while a
// config serves (a cache warming its declared paths): no caller sent them,
// so they start inside a route's pipeline, at a stage a plugin chooses,
// rather than at its head. This file is the core's side of them: how a
// plugin learns the rest of its chain (Chained), how it runs work for as
// long as its config serves (Build.Background), and how it sends a request
// down the route (Route.Internal).

// Chained is implemented by plugins that send requests of their own down
// the rest of the pipeline, outside a caller's request (the cache's
// warming). Chained is called once per part when the route's pipeline is
// linked, before the config starts (also for a config that is only
// checked: keep the handler, start nothing). next is the rest of the
// pipeline after the part, ending at the upstream call; it is valid for as
// long as the config is.
type Chained interface{ Chained(next Handler) }

// HandlerFunc adapts a function to a Handler.
type HandlerFunc func(ctx *fasthttp.RequestCtx, ex *Exchange) error

// Handle calls f.
func (f HandlerFunc) Handle(ctx *fasthttp.RequestCtx, ex *Exchange) error { return f(ctx, ex) }

// Background adds run to the work the config being built does while it
// serves. run starts on a goroutine of its own once the config serves
// (after it is swapped in, so that Route.Internal may be called; never for
// a config that is only checked or is rejected). ctx is cancelled when the
// config stops serving: at once when a reload replaces it, or at shutdown.
// The gateway waits for run to return before it closes the config's shared
// resources, so run may use what the route's plugins share until then. run
// must return soon after ctx is done.
func (b *Build) Background(run func(ctx context.Context)) {
	b.st.bg.runs = append(b.st.bg.runs, run)
}

// background is the work of one state that runs while it serves.
type background struct {
	runs   []func(ctx context.Context)
	mu     sync.Mutex
	cancel context.CancelFunc // set once started
	wg     sync.WaitGroup
}

// start runs the state's background work; it is called once the state
// serves (its metrics bound).
func (bg *background) start(log *slog.Logger) {
	if len(bg.runs) == 0 {
		return
	}
	ctx, cancel := context.WithCancel(context.Background())
	bg.mu.Lock()
	bg.cancel = cancel
	bg.mu.Unlock()
	for _, run := range bg.runs {
		bg.wg.Go(func() {
			defer func() { // background work never takes the process down
				if r := recover(); r != nil {
					log.Error("panic in background work", "panic", fmt.Sprint(r), "stack", string(debug.Stack()))
				}
			}()
			run(ctx)
		})
	}
}

// stop tells the state's background work to end, without waiting.
func (bg *background) stop() {
	bg.mu.Lock()
	if bg.cancel != nil {
		bg.cancel()
	}
	bg.mu.Unlock()
}

// wait stops the background work and waits until it has returned.
func (bg *background) wait() {
	bg.stop()
	bg.wg.Wait()
}

// errNotServing refuses an internal request on a route that is not part of
// a serving config.
var errNotServing = errors.New("proxy: internal request on a route that is not part of a serving config")

// Internal sends req down the route from h, a stage of the route's
// pipeline (a plugin's successor, see Chained; h itself when the plugin
// wraps it), and copies the answer to resp. It is a request the gateway
// makes on its own behalf: it has no caller (ex.Consumer is "" until h
// sets it, and no X-Forwarded-* headers are added), a new X-Request-Id
// unless req carries a valid one, and the route's deadline counted from
// now (or ctx's deadline, when sooner). Exchange.Internal reports it to
// the stages it passes. It counts in neither sluice_requests_total nor
// sluice_request_duration_seconds (the upstream call it makes counts in
// the upstream metrics like any other); with log.access_log, it is logged
// as an access line with internal=true.
//
// The error is what h returned (a panic in h becomes an internal_error);
// a gateway error is not rendered into resp. Internal returns ctx's error
// at once if ctx is done; a call under way is bounded by the deadline, not
// cancelled. Call it while the route's config serves (from Background).
func (rt *Route) Internal(ctx context.Context, req *fasthttp.Request, resp *fasthttp.Response, h Handler) (err error) {
	st := rt.st
	if st == nil || rt.metrics == nil { // metrics are bound once the config is going to serve
		return errNotServing
	}
	if err := ctx.Err(); err != nil {
		return err
	}
	st.active.Add(1) // a retiring config closes its plugins only after this
	defer st.active.Add(-1)

	rctx := new(fasthttp.RequestCtx)
	rctx.Init(req, nil, nil) // copies req
	rctx.Response.Header.SetNoDefaultContentType(true)
	rctx.Request.Header.SetNoDefaultContentType(true)
	ex := acquireExchange()
	ex.internal = true
	ex.begin(rctx, nil)
	ex.Route, ex.Upstream = rt, rt.Upstream
	if rt.Deadline > 0 {
		ex.deadline = ex.startNano + int64(rt.Deadline)
	}
	if d, ok := ctx.Deadline(); ok {
		if dn := ex.startNano + int64(time.Until(d)); ex.deadline == 0 || dn < ex.deadline {
			ex.deadline = dn
		}
	}
	defer func() {
		ex.settleBodies(&rctx.Response)
		releaseExchange(ex)
	}()
	if !rt.reserveRequestBody(rctx, ex) {
		return errRequestBodyBudget
	}
	err = runInternal(rt, rctx, ex, h)
	if err == nil {
		rctx.Response.CopyTo(resp)
	}
	if st.accessLog {
		st.logInternal(rctx, ex, err)
	}
	return err
}

// runInternal calls h; a panic becomes an internal_error, as in Route.run.
func runInternal(rt *Route, ctx *fasthttp.RequestCtx, ex *Exchange, h Handler) (err error) {
	defer func() {
		if r := recover(); r != nil {
			rt.st.log.Error("panic in pipeline", "route", rt.Name, "request_id", string(ex.requestID), "internal", true,
				"panic", fmt.Sprint(r), "stack", string(debug.Stack()))
			err = NewError(CodeInternalError, "internal error")
		}
	}()
	return h.Handle(ctx, ex)
}

// logInternal writes the access line of an internal request.
func (st *state) logInternal(ctx *fasthttp.RequestCtx, ex *Exchange, err error) {
	status := ctx.Response.StatusCode()
	if err != nil {
		status = Classify(err).Status
	}
	attrs := make([]slog.Attr, 0, 12)
	attrs = append(attrs,
		slog.String("route", ex.Route.Name),
		slog.String("upstream", ex.Upstream.Name),
		slog.String("method", string(ctx.Method())),
		slog.String("path", string(ex.Path())),
		slog.Int("status", status),
		slog.Float64("duration_ms", float64(ex.Elapsed().Microseconds())/1000),
		bytesOut(&ctx.Response),
		slog.String("request_id", string(ex.requestID)),
		slog.Bool("internal", true),
	)
	if ex.Attempts > 0 {
		attrs = append(attrs, slog.Int("attempts", ex.Attempts), slog.String("target", ex.Target.URL))
	}
	if ex.Consumer != "" {
		attrs = append(attrs, slog.String("consumer", ex.Consumer))
	}
	if err != nil {
		attrs = append(attrs, slog.String("code", Classify(err).Code.String()))
	}
	st.log.LogAttrs(context.Background(), slog.LevelInfo, "access", attrs...)
}

// Internal reports whether the exchange is an internal request (see
// Route.Internal): one the gateway makes on its own behalf, with no caller.
func (ex *Exchange) Internal() bool { return ex.internal }
