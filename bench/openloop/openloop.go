// Package openloop is an open-loop HTTP load generator: it sends requests at a
// fixed rate on a precomputed schedule and measures each request's latency from
// the time it was SUPPOSED to be sent, not from when a free connection let it
// go. A server that stalls for 100 ms therefore shows up as 100 ms (shrinking
// to 0) of latency for every request scheduled during the stall, as a user
// would see it; a closed-loop tool such as wrk stops sending while the server
// stalls and records only the few requests that were in flight (coordinated
// omission). This is the correction wrk2 makes.
//
// Latencies go into HdrHistogram histograms (github.com/HdrHistogram/hdrhistogram-go,
// 1 µs to 60 s, 3 significant digits), one per worker, merged at the end.
package openloop

import (
	"context"
	"errors"
	"fmt"
	"runtime"
	"sync"
	"sync/atomic"
	"time"

	"github.com/HdrHistogram/hdrhistogram-go"
	"github.com/valyala/fasthttp"
	"golang.org/x/sys/unix"
)

// Config is one open-loop run.
type Config struct {
	Addr     string        // host:port on loopback
	Path     string        // request path, e.g. "/json"
	Header   [][2]string   // extra request headers, sent on every request
	Rate     float64       // requests per second, > 0
	Duration time.Duration // how long requests are scheduled for, > 0
	Conns    int           // connections (and workers); default 128
	Timeout  time.Duration // per-request timeout; default 2 s
	// Drain bounds the wait for requests still queued or in flight once the
	// schedule has ended; default Timeout + 1 s. What is still unsent then
	// is counted in Result.Unsent, never as a latency.
	Drain time.Duration
}

// Result is what a run measured. Latency is from the intended send time;
// Service is from the moment the request was handed to a connection (what a
// closed-loop tool reports). Both are in microseconds.
type Result struct {
	Scheduled int64 // requests the schedule called for: Rate × Duration
	Completed int64 // answered with a 2xx status
	BadStatus int64 // answered with another status
	Errors    int64 // connection errors and timeouts
	Unsent    int64 // still queued when the drain time ran out
	Elapsed   time.Duration
	Latency   *hdrhistogram.Histogram
	Service   *hdrhistogram.Histogram
	// Lag is how late (µs) the generator queued each request after its
	// intended send time: the generator's own lateness (a busy load core,
	// the sleep's resolution), not the server's. It is part of Latency.
	Lag *hdrhistogram.Histogram
}

// Quantile returns the latency at q (0..100) in microseconds.
func (r *Result) Quantile(q float64) int64 { return r.Latency.ValueAtQuantile(q) }

// NewHistogram returns a histogram with the geometry every run uses, for
// merging results of several runs.
func NewHistogram() *hdrhistogram.Histogram { return hdrhistogram.New(1, 60_000_000, 3) }

// Run sends Rate requests per second for Duration and returns when every
// request has completed, failed or the drain time has run out. It stops early
// when ctx is done.
func Run(ctx context.Context, c Config) (*Result, error) {
	if c.Rate <= 0 || c.Duration <= 0 {
		return nil, fmt.Errorf("openloop: rate (%v) and duration (%v) must be positive", c.Rate, c.Duration)
	}
	if runtime.GOMAXPROCS(0) < 2 {
		// The dispatcher holds a P while it sleeps in nanosleep(2); with one
		// P the workers would wait for the runtime to take it back.
		return nil, errors.New("openloop: needs GOMAXPROCS >= 2 (it may run on one CPU)")
	}
	if c.Addr == "" {
		return nil, errors.New("openloop: no address")
	}
	if c.Path == "" {
		c.Path = "/"
	}
	if c.Conns <= 0 {
		c.Conns = 128
	}
	if c.Timeout <= 0 {
		c.Timeout = 2 * time.Second
	}
	if c.Drain <= 0 {
		c.Drain = c.Timeout + time.Second
	}
	total := int64(c.Rate * c.Duration.Seconds())
	if total < 1 {
		return nil, fmt.Errorf("openloop: rate %v over %v schedules no request", c.Rate, c.Duration)
	}
	client := &fasthttp.HostClient{
		Addr:                          c.Addr,
		MaxConns:                      c.Conns,
		ReadTimeout:                   c.Timeout,
		WriteTimeout:                  c.Timeout,
		MaxIdleConnDuration:           time.Minute,
		NoDefaultUserAgentHeader:      true,
		DisableHeaderNamesNormalizing: true,
		DisablePathNormalizing:        true,
	}
	defer client.CloseIdleConnections()

	// Each token is a request's intended send time, in ns since start.
	queue := make(chan int64, 1<<16)
	res := &Result{Scheduled: total, Latency: NewHistogram(), Service: NewHistogram(), Lag: NewHistogram()}
	var completed, bad, failed, unsent atomic.Int64
	drainCtx, cancelDrain := context.WithCancel(context.Background())
	defer cancelDrain()

	start := time.Now()
	var wg sync.WaitGroup
	hists := make([][2]*hdrhistogram.Histogram, c.Conns)
	for w := range c.Conns {
		lat, svc := NewHistogram(), NewHistogram()
		hists[w] = [2]*hdrhistogram.Histogram{lat, svc}
		wg.Add(1)
		go func() {
			defer wg.Done()
			req, resp := fasthttp.AcquireRequest(), fasthttp.AcquireResponse()
			defer fasthttp.ReleaseRequest(req)
			defer fasthttp.ReleaseResponse(resp)
			req.SetRequestURI(c.Path)
			req.Header.SetHost(c.Addr)
			for _, h := range c.Header {
				req.Header.Set(h[0], h[1])
			}
			for intended := range queue {
				if drainCtx.Err() != nil {
					unsent.Add(1)
					continue
				}
				sent := time.Since(start)
				err := client.Do(req, resp) // bounded by ReadTimeout and WriteTimeout
				done := time.Since(start)
				switch {
				case err != nil:
					failed.Add(1)
					continue
				case resp.StatusCode() < 200 || resp.StatusCode() > 299:
					bad.Add(1)
				default:
					completed.Add(1)
				}
				_ = lat.RecordValue(max(int64(done)-intended, 0) / 1e3)
				_ = svc.RecordValue(int64(done-sent) / 1e3)
			}
		}()
	}

	// The schedule: request i is due at start + i/Rate. The dispatcher wakes,
	// queues every request that is due, and sleeps until the next one; a late
	// wake-up queues several at once, each still stamped with its own time.
	// Go's timers wake up to 1 ms late here (the netpoller sleeps in whole
	// milliseconds), so the dispatcher sleeps in nanosleep(2) on its own
	// thread with a 1 ns timer slack: tens of microseconds late, measured in
	// Result.Lag.
	var i int64
	stopped := func() bool {
		runtime.LockOSThread()
		defer runtime.UnlockOSThread()
		_ = unix.Prctl(unix.PR_SET_TIMERSLACK, 1, 0, 0, 0)
		interval := float64(time.Second) / c.Rate
		for i < total {
			now := int64(time.Since(start))
			for ; i < total; i++ {
				due := int64(float64(i) * interval)
				if due > now {
					break
				}
				_ = res.Lag.RecordValue((now - due) / 1e3)
				select {
				case queue <- due:
				case <-ctx.Done():
					return true
				}
			}
			if ctx.Err() != nil {
				return true
			}
			if i < total {
				if next := time.Duration(float64(i)*interval) - time.Since(start); next > 0 {
					ts := unix.NsecToTimespec(int64(next))
					_ = unix.Nanosleep(&ts, nil)
				}
			}
		}
		return false
	}()
	close(queue)
	if stopped {
		unsent.Add(total - i)
	}

	finished := make(chan struct{})
	go func() { wg.Wait(); close(finished) }()
	select {
	case <-finished:
	case <-time.After(c.Drain):
		cancelDrain()
		<-finished // each worker finishes its request (bounded by Timeout) and skips the rest
	case <-ctx.Done():
		cancelDrain()
		<-finished
	}
	res.Elapsed = time.Since(start)
	for _, h := range hists {
		res.Latency.Merge(h[0])
		res.Service.Merge(h[1])
	}
	res.Completed, res.BadStatus, res.Errors, res.Unsent = completed.Load(), bad.Load(), failed.Load(), unsent.Load()
	if err := ctx.Err(); err != nil {
		return res, err
	}
	return res, nil
}
