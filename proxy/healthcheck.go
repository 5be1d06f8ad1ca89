package proxy

import (
	"strconv"
	"sync"
	"time"

	"github.com/sluice-gw/sluice/proxy/config"
	"github.com/sluice-gw/sluice/proxy/httpx"
	"github.com/valyala/fasthttp"
)

// healthChecker probes the targets of one upstream (health_check): one
// goroutine per upstream, started with the config that holds it and stopped
// when that config is retired. Only the checker of the config now serving
// changes a target's state (targetHealth.owner), so that the old config's
// checker, still draining, cannot undo the new one's verdict.
type healthChecker struct {
	u        *Upstream
	path     string
	interval time.Duration
	timeout  time.Duration
	healthy  [600]bool
	downN    int64 // failed checks in a row that mark a target down
	upN      int64 // passed checks in a row that bring it back

	once    sync.Once
	stopCh  chan struct{}
	done    chan struct{}
	started bool
}

func newHealthChecker(u *Upstream, hc *config.HealthCheckConfig) *healthChecker {
	c := &healthChecker{u: u, path: hc.Path, interval: hc.Interval.D(), timeout: hc.Timeout.D(),
		downN: int64(hc.UnhealthyAfter), upN: int64(hc.HealthyAfter),
		stopCh: make(chan struct{}), done: make(chan struct{})}
	for _, s := range hc.HealthyStatuses {
		lo, hi, _ := httpx.ParseStatusSpec(s) // validated
		for i := lo; i <= hi && i < len(c.healthy); i++ {
			c.healthy[i] = true
		}
	}
	return c
}

// start runs the first round of checks at once, then one every interval.
func (c *healthChecker) start() {
	c.started = true
	go c.loop()
}

// stop stops the checks and waits for a round in progress (bounded by the
// check timeout).
func (c *healthChecker) stop() {
	c.once.Do(func() { close(c.stopCh) })
	if c.started {
		<-c.done
	}
}

func (c *healthChecker) loop() {
	defer close(c.done)
	tick := time.NewTicker(c.interval)
	defer tick.Stop()
	for {
		c.round()
		select {
		case <-c.stopCh:
			return
		case <-tick.C:
		}
	}
}

// round checks every target concurrently.
func (c *healthChecker) round() {
	var wg sync.WaitGroup
	for _, t := range c.u.Targets {
		wg.Go(func() { c.check(t) })
	}
	wg.Wait()
}

var strHealthUA = []byte("sluice-health-check")

func (c *healthChecker) check(t *Target) {
	req := fasthttp.AcquireRequest()
	resp := fasthttp.AcquireResponse()
	defer fasthttp.ReleaseRequest(req)
	defer fasthttp.ReleaseResponse(resp)
	uri := append(append([]byte(nil), t.basePath...), c.path...)
	req.SetRequestURIBytes(uri)
	req.Header.SetHostBytes(t.host)
	req.Header.SetUserAgentBytes(strHealthUA)
	if t.scheme[len(t.scheme)-1] == 's' {
		req.URI().SetSchemeBytes(strHTTPS)
	}
	err := t.client.DoTimeout(req, resp, c.timeout)
	pass := err == nil && c.healthy[min(resp.StatusCode(), len(c.healthy)-1)]
	h := t.health
	if h.owner.Load() != c {
		return // a newer config owns this target's health now
	}
	log := c.u.log()
	if pass {
		h.checkFails.Store(0)
		if h.checkPasses.Add(1) >= c.upN && h.down.Load() {
			h.down.Store(false)
			log.Info("target up: health check passed", "upstream", c.u.Name, "target", t.URL)
		}
		if h.ejectedUntil.Load() != 0 {
			h.ejectedUntil.Store(0)
			h.failures.Store(0)
			log.Info("ejection ended early: health check passed", "upstream", c.u.Name, "target", t.URL)
		}
		return
	}
	h.checkPasses.Store(0)
	if h.checkFails.Add(1) >= c.downN && !h.down.Load() {
		h.down.Store(true)
		why := "status " + strconv.Itoa(resp.StatusCode())
		if err != nil {
			why = Classify(&transportError{err}).Code.String()
		}
		log.Warn("target down: health check failed", "upstream", c.u.Name, "target", t.URL, "path", c.path, "result", why)
	}
}

// claimHealth makes st's checkers the owners of their targets' health. A
// target whose upstream no longer has health checks is no longer down.
func (st *state) claimHealth() {
	for _, u := range st.upstreams {
		for _, t := range u.Targets {
			t.health.owner.Store(u.checker)
			if u.checker == nil {
				t.health.down.Store(false)
				t.health.checkFails.Store(0)
				t.health.checkPasses.Store(0)
			}
		}
	}
}
