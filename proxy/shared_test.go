package proxy_test

import (
	"fmt"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/sluice-gw/sluice/internal/testkit"
	"github.com/sluice-gw/sluice/proxy"
	"github.com/sluice-gw/sluice/proxy/config"
	"github.com/valyala/fasthttp"
)

// events records what test plugins and their shared resources did, in order.
type events struct {
	mu  sync.Mutex
	log []string
}

func (e *events) add(s string) {
	e.mu.Lock()
	e.log = append(e.log, s)
	e.mu.Unlock()
}

func (e *events) list() []string {
	e.mu.Lock()
	defer e.mu.Unlock()
	return slices.Clone(e.log)
}

// count is how many times s was recorded.
func (e *events) count(s string) int {
	n := 0
	for _, x := range e.list() {
		if x == s {
			n++
		}
	}
	return n
}

// nth is the index of the n-th (from 1) event s; -1 when there is none.
func (e *events) nth(s string, n int) int {
	for i, x := range e.list() {
		if x == s {
			if n--; n == 0 {
				return i
			}
		}
	}
	return -1
}

// matching lists the events that start with prefix, in order.
func (e *events) matching(prefix string) []string {
	var out []string
	for _, x := range e.list() {
		if strings.HasPrefix(x, prefix) {
			out = append(out, x)
		}
	}
	return out
}

// lifeRes is a shared resource with Start and Close; a key ending in "!"
// fails to start.
type lifeRes struct {
	key string
	ev  *events
}

func (r *lifeRes) Start() error {
	r.ev.add("start " + r.key)
	if strings.HasSuffix(r.key, "!") {
		return fmt.Errorf("%s cannot start", r.key)
	}
	return nil
}

func (r *lifeRes) Close() error {
	r.ev.add("close " + r.key)
	return nil
}

// closeRes is a shared resource with Close but no Start.
type closeRes struct {
	key string
	ev  *events
}

func (r *closeRes) Close() error {
	r.ev.add("close-only " + r.key)
	return nil
}

// plainRes is a shared resource with no lifecycle; other is a second type
// shared under the same keys as lifeRes.
type (
	plainRes struct{ key string }
	otherRes struct{ key string }
)

// shareConfig is the config of the share probe plugin: which resources a
// route shares, in the order it asks for them.
type shareConfig struct {
	Res     []string `koanf:"res"`     // *lifeRes
	Closers []string `koanf:"closers"` // *closeRes
	Plain   []string `koanf:"plain"`   // *plainRes
	Other   []string `koanf:"other"`   // *otherRes, same keys as res may use
	Metric  string   `koanf:"metric"`  // a counter registered inside the share "metric"
	Outside bool     `koanf:"outside"` // register a collector outside any Share
}

// shareProbe records what each route got from Share, by route and key.
type shareProbe struct {
	ev  *events
	mu  sync.Mutex
	got map[string]any // "route/type/key" → value
}

func (p *shareProbe) value(route, typ, key string) any {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.got[route+"/"+typ+"/"+key]
}

func (p *shareProbe) factory() *proxy.Factory {
	return proxy.Define("share_probe", func(c *shareConfig, b *proxy.Build) (proxy.Plugin, error) {
		route := b.Route.Name
		record := func(typ, key string, v any) {
			p.mu.Lock()
			p.got[route+"/"+typ+"/"+key] = v
			p.mu.Unlock()
		}
		for _, k := range c.Res {
			record("res", k, proxy.Share(b, k, func() *lifeRes { p.ev.add("create res " + k); return &lifeRes{key: k, ev: p.ev} }))
		}
		for _, k := range c.Closers {
			record("closer", k, proxy.Share(b, k, func() *closeRes { p.ev.add("create closer " + k); return &closeRes{key: k, ev: p.ev} }))
		}
		for _, k := range c.Plain {
			record("plain", k, proxy.Share(b, k, func() *plainRes { p.ev.add("create plain " + k); return &plainRes{key: k} }))
		}
		for _, k := range c.Other {
			record("other", k, proxy.Share(b, k, func() *otherRes { p.ev.add("create other " + k); return &otherRes{key: k} }))
		}
		if c.Metric != "" {
			var regErr error
			proxy.Share(b, "metric", func() prometheus.Counter {
				ctr := prometheus.NewCounter(prometheus.CounterOpts{Name: c.Metric, Help: "a test plugin's counter"})
				regErr = b.Registerer.Register(ctr)
				p.ev.add("create metric " + c.Metric)
				return ctr
			})
			if regErr != nil {
				return nil, regErr
			}
		}
		if c.Outside {
			err := b.Registerer.Register(prometheus.NewCounter(prometheus.CounterOpts{Name: "sluice_test_outside_total", Help: "x"}))
			p.ev.add(fmt.Sprintf("outside %v", err))
		}
		b.OnStart(func() { p.ev.add("onstart " + route) })
		return passThrough{}, nil
	})
}

// passThrough is a stage that only calls the next one.
type passThrough struct{}

func (passThrough) Handle(ctx *fasthttp.RequestCtx, ex *proxy.Exchange, next proxy.Handler) error {
	return next.Handle(ctx, ex)
}

func newShareProbe() *shareProbe { return &shareProbe{ev: &events{}, got: map[string]any{}} }

func mustLoad(t *testing.T, yaml string) *config.Config {
	t.Helper()
	cfg, err := config.LoadBytes([]byte(yaml))
	if err != nil {
		t.Fatalf("config: %v", err)
	}
	return cfg
}

func serveGateway(t *testing.T, reg *proxy.Registry, yaml string) *testkit.Gateway {
	t.Helper()
	return testkit.StartGateway(t, yaml, testkit.Options{Registry: reg})
}

// shareYAML is a config with routes a, b and c, each with its share_probe block.
func shareYAML(up string, a, b, c string) string {
	return fmt.Sprintf(`
log: {access_log: false}
upstreams: {up: {url: %q}}
routes:
  a: {path: "/a", upstream: up, plugins: {share_probe: %s}}
  b: {path: "/b", upstream: up, plugins: {share_probe: %s}}
  c: {path: "/c", upstream: up, plugins: {share_probe: %s}}
`, up, a, b, c)
}

func shareRegistry(p *shareProbe) *proxy.Registry { return testkit.WithPlugin("retry", p.factory()) }

// One value per type and key across routes and reloads; Start once, when
// the first config holding it starts; Close once, when the last config
// holding it retires (after its in-flight requests), or at shutdown.
func TestShareLifecycleAcrossRoutesAndReloads(t *testing.T) {
	t.Parallel()
	p := newShareProbe()
	hold := make(chan struct{})
	var holdOnce sync.Once
	release := func() { holdOnce.Do(func() { close(hold) }) }
	t.Cleanup(release)
	up := testkit.NewUpstream(t, func(ctx *fasthttp.RequestCtx) {
		if string(ctx.Path()) == "/c" {
			<-hold
		}
	})
	gw := serveGateway(t, shareRegistry(p), shareYAML(up.URL,
		`{res: [k1], other: [k1], plain: [p1]}`,
		`{res: [k1], other: [k1], plain: [p1]}`,
		`{res: [k2]}`))

	for _, ev := range []string{"create res k1", "create res k2", "create other k1", "create plain p1", "start k1", "start k2"} {
		if n := p.ev.count(ev); n != 1 {
			t.Errorf("%q happened %d times, want once: %v", ev, n, p.ev.list())
		}
	}
	k1 := p.value("a", "res", "k1")
	if k1 == nil || k1 != p.value("b", "res", "k1") {
		t.Fatalf("routes a and b got different values for key k1")
	}
	if p.value("c", "res", "k2") == k1 {
		t.Errorf("keys k1 and k2 gave the same value")
	}
	if o, ok := p.value("a", "other", "k1").(*otherRes); !ok || o.key != "k1" {
		t.Errorf("another type under key k1 got %#v", p.value("a", "other", "k1"))
	}
	if p.value("a", "plain", "p1") != p.value("b", "plain", "p1") {
		t.Errorf("a resource without lifecycle was not shared")
	}

	// A request on route c stays in flight with the first config.
	inflight := make(chan error, 1)
	go func() {
		resp, err := testkit.TryDo("GET", gw.URL+"/c", "")
		if err == nil && resp.Status != 200 {
			err = fmt.Errorf("status %d", resp.Status)
		}
		inflight <- err
	}()
	testkit.Eventually(t, 5*time.Second, func() bool { return up.Count() == 1 }, "the request on /c never reached the upstream")

	// Reload: k1 kept (same value, not started again), k2 dropped.
	if err := gw.Apply(mustLoad(t, shareYAML(up.URL, `{res: [k1]}`, `{res: [k1]}`, `{}`))); err != nil {
		t.Fatalf("reload: %v", err)
	}
	if v := p.value("a", "res", "k1"); v != k1 {
		t.Errorf("a reload that keeps key k1 made a new value")
	}
	if n := p.ev.count("create res k1") + p.ev.count("start k1"); n != 2 {
		t.Errorf("k1 created or started again on reload: %v", p.ev.list())
	}
	// The old config still serves the held request: nothing can be closed yet.
	if got := p.ev.matching("close"); len(got) != 0 {
		t.Errorf("closed while the old config has a request in flight: %v", got)
	}
	release()
	if err := <-inflight; err != nil {
		t.Fatalf("held request: %v", err)
	}
	testkit.Eventually(t, 5*time.Second, func() bool { return p.ev.count("close k2") == 1 }, "k2 was not closed after the old config retired")
	if n := p.ev.count("close k1"); n != 0 {
		t.Errorf("k1, still held by the new config, was closed %d times", n)
	}

	// Shutdown closes what the serving config holds, once.
	if err := gw.Stop(); err != nil {
		t.Fatalf("shutdown: %v", err)
	}
	if n, m := p.ev.count("close k1"), p.ev.count("close k2"); n != 1 || m != 1 {
		t.Errorf("after shutdown: close k1 ×%d, close k2 ×%d, want once each: %v", n, m, p.ev.list())
	}
	if n := p.ev.count("start k1"); n != 1 {
		t.Errorf("k1 started %d times", n)
	}
}

// Within one config, resources are closed in the reverse order they were
// acquired; resources without Start are closed on release.
func TestShareClosesInReverseOrder(t *testing.T) {
	t.Parallel()
	p := newShareProbe()
	up := testkit.NewUpstream(t, nil)
	gw := serveGateway(t, shareRegistry(p), shareYAML(up.URL, `{res: [x1, x2], closers: [x3]}`, `{res: [x4]}`, `{}`))
	if err := gw.Stop(); err != nil {
		t.Fatal(err)
	}
	// Routes build in name order: a acquires x1, x2, x3; b acquires x4.
	if got := strings.Join(p.ev.matching("close"), ", "); got != "close x4, close-only x3, close x2, close x1" {
		t.Errorf("close order: %s", got)
	}
	if got := strings.Join(p.ev.matching("start"), ", "); got != "start x1, start x2, start x4" {
		t.Errorf("start order: %s", got)
	}
}

// Check builds plugins (create runs) but starts nothing and closes only what
// needs no start; OnStart never runs.
func TestCheckStartsNothing(t *testing.T) {
	t.Parallel()
	p := newShareProbe()
	err := proxy.Check(mustLoad(t, shareYAML("http://127.0.0.1:9", `{res: [c1], closers: [c2]}`, `{}`, `{}`)), shareRegistry(p))
	if err != nil {
		t.Fatalf("Check: %v", err)
	}
	if p.ev.count("create res c1") != 1 || p.ev.count("create closer c2") != 1 {
		t.Errorf("Check did not build the plugins: %v", p.ev.list())
	}
	for _, pre := range []string{"start", "close c1", "onstart"} {
		if got := p.ev.matching(pre); len(got) != 0 {
			t.Errorf("Check ran %v", got)
		}
	}
	if n := p.ev.count("close-only c2"); n != 1 {
		t.Errorf("a resource without Start was closed %d times after Check, want once", n)
	}
}

// A config that Apply rejects, because it does not compile or because a
// resource fails to start, never starts what the serving config does not
// hold, runs no OnStart, and leaves the serving config's resources alone.
func TestRejectedConfigStartsNothing(t *testing.T) {
	t.Parallel()
	p := newShareProbe()
	up := testkit.NewUpstream(t, nil)
	gw := serveGateway(t, shareRegistry(p), shareYAML(up.URL, `{res: [s1]}`, `{}`, `{}`))
	if got := strings.Join(p.ev.list(), ", "); got != "create res s1, start s1, onstart a, onstart b, onstart c" {
		t.Fatalf("New: %s", got)
	}

	// Does not compile: route d names an unknown plugin.
	bad := shareYAML(up.URL, `{res: [s1, r1]}`, `{}`, `{}`) + `  d: {path: "/d", upstream: up, plugins: {share_probe: {res: [r2]}, nope: {}}}` + "\n"
	if err := gw.Apply(mustLoad(t, bad)); err == nil || !strings.Contains(err.Error(), `routes.d.plugins.nope: unknown plugin`) {
		t.Fatalf("Apply(bad): %v", err)
	}
	// Start fails: r4! cannot start; r3 started before it is closed again.
	failing := shareYAML(up.URL, `{res: [s1, r3, r4!]}`, `{}`, `{}`)
	if err := gw.Apply(mustLoad(t, failing)); err == nil || !strings.Contains(err.Error(), "r4! cannot start") {
		t.Fatalf("Apply(failing): %v", err)
	}
	want := "create res s1, start s1, onstart a, onstart b, onstart c, " +
		"create res r1, create res r2, " + // compiled, never started, not closed
		"create res r3, create res r4!, start r3, start r4!, close r3" // r4! failed: not closed
	if got := strings.Join(p.ev.list(), ", "); got != want {
		t.Errorf("events:\n got %s\nwant %s", got, want)
	}
	if resp := testkit.Do(t, "GET", gw.URL+"/a", ""); resp.Status != 200 {
		t.Errorf("serving config after rejected reloads: %d", resp.Status)
	}

	// A good reload after them: the keys are fresh again and start once.
	if err := gw.Apply(mustLoad(t, shareYAML(up.URL, `{res: [s1, r3]}`, `{}`, `{}`))); err != nil {
		t.Fatal(err)
	}
	if n := p.ev.count("start r3"); n != 2 || p.ev.count("create res r3") != 2 || p.ev.count("start s1") != 1 {
		t.Errorf("after the good reload: %v", p.ev.list())
	}
	// OnStart runs for the config that starts serving, after its resources started.
	if p.ev.count("onstart a") != 2 || p.ev.nth("onstart a", 2) < p.ev.nth("start r3", 2) {
		t.Errorf("OnStart of the good reload: %v", p.ev.list())
	}
	if err := gw.Stop(); err != nil {
		t.Fatal(err)
	}
	if n, m := p.ev.count("close s1"), p.ev.count("close r3"); n != 1 || m != 2 {
		t.Errorf("close s1 ×%d (want 1), close r3 ×%d (want 2: once per start): %v", n, m, p.ev.list())
	}
}

// A resource without Start that a rejected config made is closed once:
// route a acquires q1 (Close only) before route b's q2! fails to start.
func TestRejectedStartClosesCloseOnlyResourceOnce(t *testing.T) {
	t.Parallel()
	p := newShareProbe()
	up := testkit.NewUpstream(t, nil)
	gw := serveGateway(t, shareRegistry(p), shareYAML(up.URL, `{}`, `{}`, `{}`))
	if err := gw.Apply(mustLoad(t, shareYAML(up.URL, `{closers: [q1]}`, `{res: [q2!]}`, `{}`))); err == nil {
		t.Fatal("a config whose start fails was applied")
	}
	if n := p.ev.count("close-only q1"); n != 1 {
		t.Errorf("the Close-only resource of a rejected config was closed %d times, want once: %v", n, p.ev.list())
	}
}

// gathered reports whether the registry exports a family named name.
func gathered(t *testing.T, g *proxy.Gateway, name string) bool {
	t.Helper()
	fams, err := g.Metrics().Registry.Gather()
	if err != nil {
		t.Fatalf("gather: %v", err)
	}
	for _, f := range fams {
		if f.GetName() == name {
			return true
		}
	}
	return false
}

// Collectors registered inside a Share show in /metrics and are
// unregistered with the resource, so that the plugin can come back.
func TestShareCollectorsFollowTheResource(t *testing.T) {
	t.Parallel()
	p := newShareProbe()
	up := testkit.NewUpstream(t, nil)
	const metric = "sluice_test_probe_total"
	with := shareYAML(up.URL, `{metric: `+metric+`}`, `{metric: `+metric+`}`, `{}`)
	gw := serveGateway(t, shareRegistry(p), with)
	if !gathered(t, gw.Gateway, metric) {
		t.Fatalf("%s not in the gateway's registry", metric)
	}
	resp := testkit.Do(t, "GET", gw.AdminURL+"/metrics", "")
	if !strings.Contains(string(resp.Body), metric) {
		t.Errorf("/metrics does not show %s", metric)
	}
	if n := p.ev.count("create metric " + metric); n != 1 {
		t.Errorf("metric share created %d times for two routes", n)
	}

	// Dropped everywhere: unregistered once the old config retires.
	if err := gw.Apply(mustLoad(t, shareYAML(up.URL, `{}`, `{}`, `{}`))); err != nil {
		t.Fatal(err)
	}
	testkit.Eventually(t, 5*time.Second, func() bool { return !gathered(t, gw.Gateway, metric) }, "the collector stayed registered after its resource was released")

	// Back again: registered anew, no duplicate registration.
	if err := gw.Apply(mustLoad(t, with)); err != nil {
		t.Fatalf("adding the plugin back: %v", err)
	}
	if !gathered(t, gw.Gateway, metric) || p.ev.count("create metric "+metric) != 2 {
		t.Errorf("the collector was not registered again: %v", p.ev.list())
	}
}

// Registering a collector outside a Share is refused with an error.
func TestRegisterOutsideShareIsRefused(t *testing.T) {
	t.Parallel()
	p := newShareProbe()
	err := proxy.Check(mustLoad(t, shareYAML("http://127.0.0.1:9", `{outside: true}`, `{}`, `{}`)), shareRegistry(p))
	if err != nil {
		t.Fatalf("Check: %v", err)
	}
	got := p.ev.matching("outside")
	if len(got) != 1 || !strings.Contains(got[0], "register plugin collectors inside proxy.Share") {
		t.Errorf("Register outside Share: %v", got)
	}
}

// blockingClose is a resource whose Close, if proceed is set, says it is
// closing and waits until the test lets it go.
type blockingClose struct {
	closing chan struct{}
	proceed chan struct{}
}

func (b *blockingClose) Close() error {
	if b.proceed != nil {
		close(b.closing)
		<-b.proceed
	}
	return nil
}

// While a released resource is still closing, a reload that asks for its
// key again must not collide with its collectors.
func TestReacquireWhileClosingRegistersAgain(t *testing.T) {
	t.Parallel()
	const metric = "sluice_test_closing_total"
	var mu sync.Mutex
	var first *blockingClose
	f := proxy.Define("share_probe", func(c *struct {
		On bool `koanf:"on"`
	}, b *proxy.Build) (proxy.Plugin, error) {
		if !c.On {
			return passThrough{}, nil
		}
		var regErr error
		proxy.Share(b, "k", func() *blockingClose {
			regErr = b.Registerer.Register(prometheus.NewCounter(prometheus.CounterOpts{Name: metric, Help: "x"}))
			mu.Lock()
			defer mu.Unlock()
			r := &blockingClose{}
			if first == nil { // only the first one blocks in Close
				r.closing, r.proceed = make(chan struct{}), make(chan struct{})
				first = r
			}
			return r
		})
		return passThrough{}, regErr
	})
	up := testkit.NewUpstream(t, nil)
	yaml := func(on bool) string {
		return fmt.Sprintf("log: {access_log: false}\nupstreams: {up: {url: %q}}\nroutes: {a: {path: \"/a\", upstream: up, plugins: {share_probe: {on: %v}}}}\n", up.URL, on)
	}
	gw := serveGateway(t, testkit.WithPlugin("retry", f), yaml(true))
	mu.Lock()
	proceed, closing := first.proceed, first.closing
	mu.Unlock()
	var once sync.Once
	let := func() { once.Do(func() { close(proceed) }) }
	defer let()
	if err := gw.Apply(mustLoad(t, yaml(false))); err != nil {
		t.Fatal(err)
	}
	select {
	case <-closing:
	case <-time.After(10 * time.Second):
		t.Fatal("the released resource was never closed")
	}
	err := gw.Apply(mustLoad(t, yaml(true)))
	let()
	if err != nil {
		t.Errorf("re-adding the plugin while its old resource closes: %v", err)
	}
}

// NewBuild gives a plugin's parts a Build outside a gateway: Share works,
// start starts, release closes and unregisters.
func TestNewBuildStartAndRelease(t *testing.T) {
	t.Parallel()
	ev := &events{}
	b, start, release := proxy.NewBuild("r1", "u1")
	if b.Route.Name != "r1" || b.Upstream.Name != "u1" || b.Route.Upstream != b.Upstream {
		t.Errorf("NewBuild route/upstream: %+v %+v", b.Route, b.Upstream)
	}
	newCounter := func() prometheus.Counter {
		return prometheus.NewCounter(prometheus.CounterOpts{Name: "sluice_test_newbuild_total", Help: "x"})
	}
	if err := b.Registerer.Register(newCounter()); err == nil {
		t.Errorf("Register outside Share succeeded")
	}
	var regErr error
	r := proxy.Share(b, "k", func() *lifeRes {
		regErr = b.Registerer.Register(newCounter())
		return &lifeRes{key: "k", ev: ev}
	})
	if regErr != nil {
		t.Fatalf("Register inside Share: %v", regErr)
	}
	if again := proxy.Share(b, "k", func() *lifeRes { t.Error("created twice"); return nil }); again != r {
		t.Errorf("Share gave another value for the same key")
	}
	if len(ev.list()) != 0 {
		t.Errorf("something ran before start: %v", ev.list())
	}
	if err := start(); err != nil {
		t.Fatal(err)
	}
	release()
	if got := strings.Join(ev.list(), ", "); got != "start k, close k" {
		t.Errorf("lifecycle: %s", got)
	}
	// Released: the key is fresh again, and its collector was unregistered:
	// registering it anew is no duplicate.
	created := false
	proxy.Share(b, "k", func() *lifeRes {
		created = true
		regErr = b.Registerer.Register(newCounter())
		return &lifeRes{key: "k", ev: ev}
	})
	if !created || regErr != nil {
		t.Errorf("after release: created again %v, register: %v", created, regErr)
	}
}
