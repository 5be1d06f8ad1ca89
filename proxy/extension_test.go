package proxy_test

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/sluice-gw/sluice/internal/testkit"
	"github.com/sluice-gw/sluice/proxy"
	"github.com/sluice-gw/sluice/proxy/config"
	"github.com/valyala/fasthttp"
)

// probe is a test plugin exercising what plugins can ask of the gateway:
// several stages, peers, admin endpoints, status sections, the cluster.
type probe struct {
	tracer
	peers   []proxy.ConsumerScoped
	cluster *proxy.Cluster
}

type probeConfig struct {
	Split bool `koanf:"split"`
}

func (c *probeConfig) VariesByConsumer() bool { return c.Split }

func probeRegistry(mu *sync.Mutex, log *[]string, built *[]*probe) *proxy.Registry {
	tr := func(name string) *tracer { return &tracer{name: name, mu: mu, log: log} }
	return testkit.WithStandIns(
		proxy.DefineParts("rate_limit", []string{"upstream_quota"}, func(c *probeConfig, b *proxy.Build) (proxy.Parts, error) {
			p := &probe{tracer: *tr("rate_limit"), peers: proxy.Peers[proxy.ConsumerScoped](b), cluster: b.Cluster}
			parts := proxy.Parts{"": p}
			if c.Split {
				parts = proxy.Parts{"": tr("rate_limit/caller"), "upstream_quota": tr("rate_limit/quota")}
			}
			b.HandleAdmin("POST /admin/probe", proxy.AdminEndpoint{Mutating: true, Handler: func(w http.ResponseWriter, _ *http.Request) {
				_, _ = w.Write([]byte("probed"))
			}})
			b.HandleAdmin("GET /admin/probe", proxy.AdminEndpoint{Handler: func(w http.ResponseWriter, _ *http.Request) {
				_, _ = w.Write([]byte("looked"))
			}})
			route := b.Route.Name
			b.ReportStatus("probe", func() any { return map[string]string{"route": route} })
			mu.Lock()
			*built = append(*built, p)
			mu.Unlock()
			return parts, nil
		}),
		proxy.Define("cache", func(*probeConfig, *proxy.Build) (proxy.Plugin, error) { return tr("cache"), nil }),
		proxy.Define("circuit_breaker", func(*probeConfig, *proxy.Build) (proxy.Plugin, error) { return tr("circuit_breaker"), nil }),
	)
}

func TestMultiStagePluginPeersAdminAndStatus(t *testing.T) {
	t.Parallel()
	var mu sync.Mutex
	var order []string
	var built []*probe
	up := testkit.NewUpstream(t, nil)
	gw := testkit.StartGateway(t, fmt.Sprintf(`
log: {access_log: false}
admin: {token: "admin-secret-123"}
upstreams: {up: {url: "%s"}}
routes:
  r: {path: "/{p:*}", upstream: up, plugins: {rate_limit: {split: true}, cache: {split: true}, circuit_breaker: {}}}
`, up.URL), testkit.Options{Registry: probeRegistry(&mu, &order, &built)})

	if resp := testkit.Do(t, "GET", gw.URL+"/x", ""); resp.Status != 200 {
		t.Fatalf("status %d", resp.Status)
	}
	if got := strings.Join(order, ","); got != "rate_limit/caller,cache,circuit_breaker,rate_limit/quota" {
		t.Errorf("stages ran as %s", got)
	}
	mu.Lock()
	p := built[len(built)-1]
	mu.Unlock()
	// Peers by capability: the probe's own config and the cache's (both
	// split: true) say the answer depends on the caller; circuit_breaker's
	// (split: false) is one too, in pipeline order.
	if len(p.peers) != 3 || !p.peers[0].VariesByConsumer() || !p.peers[1].VariesByConsumer() || p.peers[2].VariesByConsumer() {
		t.Errorf("Peers[ConsumerScoped] = %#v, want rate_limit's, cache's and circuit_breaker's configs in pipeline order", p.peers)
	}
	if p.cluster != nil {
		t.Errorf("single-node config got a cluster")
	}

	if resp := testkit.Do(t, "GET", gw.AdminURL+"/admin/probe", "", "Authorization", "Bearer admin-secret-123"); resp.Status != 200 || string(resp.Body) != "looked" {
		t.Errorf("GET plugin endpoint: %d %s", resp.Status, resp.Body)
	}
	if resp := testkit.Do(t, "POST", gw.AdminURL+"/admin/probe", ""); resp.Status != 401 {
		t.Errorf("mutating plugin endpoint without token: %d, want 401", resp.Status)
	}
	if resp := testkit.Do(t, "POST", gw.AdminURL+"/admin/probe", "", "Authorization", "Bearer admin-secret-123"); resp.Status != 200 || string(resp.Body) != "probed" {
		t.Errorf("mutating plugin endpoint with token: %d %s", resp.Status, resp.Body)
	}
	if resp := testkit.Do(t, "DELETE", gw.AdminURL+"/admin/probe", "", "Authorization", "Bearer admin-secret-123"); resp.Status != 405 {
		t.Errorf("wrong method on plugin endpoint: %d, want 405", resp.Status)
	}

	resp := testkit.Do(t, "GET", gw.AdminURL+"/admin/upstreams", "", "Authorization", "Bearer admin-secret-123")
	var view struct {
		Upstreams []struct {
			Name   string                       `json:"name"`
			Status map[string]map[string]string `json:"status"`
		} `json:"upstreams"`
	}
	if err := json.Unmarshal(resp.Body, &view); err != nil || len(view.Upstreams) != 1 {
		t.Fatalf("/admin/upstreams: %v %s", err, resp.Body)
	}
	if got := view.Upstreams[0].Status["probe"]["route"]; got != "r" {
		t.Errorf("status section: %s", resp.Body)
	}
}

// A route's deadline bounds the whole call: an attempt gets what is left of
// it, not the upstream's whole timeout.
func TestRouteDeadlineBoundsTheAttempt(t *testing.T) {
	t.Parallel()
	release := make(chan struct{})
	t.Cleanup(func() { close(release) })
	up := testkit.NewUpstream(t, func(ctx *fasthttp.RequestCtx) {
		select {
		case <-release:
		case <-time.After(5 * time.Second):
		}
	})
	gw := testkit.StartGateway(t, fmt.Sprintf(`
log: {access_log: false}
upstreams: {up: {url: "%s", timeout: 10s}}
routes:
  r: {path: "/{p:*}", upstream: up, deadline: 300ms}
`, up.URL))
	start := time.Now()
	resp := testkit.Do(t, "GET", gw.URL+"/slow", "")
	took := time.Since(start)
	testkit.WantProblem(t, resp, 504, "upstream_timeout")
	if took > 4*time.Second {
		t.Errorf("the call took %v: the 300ms deadline did not bound the 10s attempt", took)
	}
}

func TestClusterConfigErrors(t *testing.T) {
	t.Parallel()
	probs := testkit.ConfigProblems(t, `
cluster: {redis: {addr: "localhost", db: 42}}
cache: {max_size: 10KiB}
upstreams: {up: {url: "http://127.0.0.1:1", timeout: 10s, deadline: 1s}}
routes: {r: {path: "/", upstream: up, deadline: -1s}}
`)
	want := map[string]string{
		"cluster.redis.addr":    `invalid address "localhost"`,
		"cluster.redis.db":      "between 0 and 15",
		"cache.max_size":        "at least 1MiB",
		"upstreams.up.deadline": "shorter than timeout",
		"routes.r.deadline":     "must not be negative",
	}
	if len(probs) != len(want) {
		t.Errorf("got %d problems, want %d: %v", len(probs), len(want), probs)
	}
	for _, p := range probs {
		if msg, ok := want[p.Path]; !ok || !strings.Contains(p.Msg, msg) {
			t.Errorf("unexpected problem %s: %s", p.Path, p.Msg)
		}
	}
}

// With cluster.redis set, plugins get a client for it; a reload that keeps
// the settings keeps the client, and the secret password stays redacted.
func TestClusterGivesPluginsRedis(t *testing.T) {
	t.Parallel()
	rd := testkit.StartRedis(t)
	var mu sync.Mutex
	var order []string
	var built []*probe
	up := testkit.NewUpstream(t, nil)
	gw := testkit.StartGateway(t, fmt.Sprintf(`
log: {access_log: false}
cluster: {redis: {addr: "%s", key_prefix: "t1:"}}
upstreams: {up: {url: "%s"}}
routes: {r: {path: "/{p:*}", upstream: up, plugins: {rate_limit: {}}}}
`, rd.Addr, up.URL), testkit.Options{Registry: probeRegistry(&mu, &order, &built)})
	mu.Lock()
	c := built[len(built)-1].cluster
	mu.Unlock()
	if c == nil {
		t.Fatal("no cluster given to the plugin")
	}
	if c.Key("x") != "t1:x" || c.NodeID == "" {
		t.Errorf("Key/NodeID: %q %q", c.Key("x"), c.NodeID)
	}
	if err := c.Ping(time.Second); err != nil {
		t.Fatalf("ping through the plugin's client: %v", err)
	}
	if err := gw.Gateway.Reload(); err != nil {
		t.Fatalf("reload: %v", err)
	}
	mu.Lock()
	again := built[len(built)-1].cluster
	mu.Unlock()
	if again != c {
		t.Errorf("an unchanged cluster.redis got a new client on reload")
	}
	if err := again.Ping(time.Second); err != nil {
		t.Errorf("client after reload: %v", err)
	}
}

// lifecycle is a test plugin's shared resource that records Start and Close
// and can fail to start.
type lifecycle struct {
	name string
	fail bool
	mu   *sync.Mutex
	log  *[]string
}

func (l *lifecycle) Start() error {
	l.mu.Lock()
	defer l.mu.Unlock()
	*l.log = append(*l.log, "start "+l.name)
	if l.fail {
		return fmt.Errorf("%s cannot start", l.name)
	}
	return nil
}

func (l *lifecycle) Close() error {
	l.mu.Lock()
	defer l.mu.Unlock()
	*l.log = append(*l.log, "close "+l.name)
	return nil
}

// When a plugin fails to start, those started before it are closed and the
// others are not: every Close pairs with a successful Start.
func TestFailedStartClosesOnlyStartedPlugins(t *testing.T) {
	t.Parallel()
	var mu sync.Mutex
	var log []string
	mk := func(name string, fail bool) *proxy.Factory {
		return proxy.Define(name, func(_ *struct{}, b *proxy.Build) (proxy.Plugin, error) {
			proxy.Share(b, name, func() *lifecycle { return &lifecycle{name: name, fail: fail, mu: &mu, log: &log} })
			return &tracer{name: name, mu: &mu, log: &log}, nil
		})
	}
	reg := testkit.WithStandIns(mk("authenticate", false), mk("cache", true), mk("retry", false))
	cfg, err := config.LoadBytes([]byte(`
log: {access_log: false}
upstreams: {up: {url: "http://127.0.0.1:9"}}
routes: {r: {path: "/", upstream: up, plugins: {authenticate: {}, cache: {}, retry: {}}}}
`))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := proxy.New(cfg, proxy.Options{Plugins: reg, LogOutput: io.Discard}); err == nil || !strings.Contains(err.Error(), "cache cannot start") {
		t.Fatalf("New: %v, want the start failure", err)
	}
	mu.Lock()
	defer mu.Unlock()
	if got := strings.Join(log, ", "); got != "start authenticate, start cache, close authenticate" {
		t.Errorf("lifecycle: %s", got)
	}
}
