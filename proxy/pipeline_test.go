package proxy_test

import (
	"encoding/json"
	"fmt"
	"strings"
	"sync"
	"testing"

	"github.com/sluice-gw/sluice/internal/testkit"
	"github.com/sluice-gw/sluice/proxy"
	"github.com/valyala/fasthttp"
)

// tracer is a test plugin that records the order stages run in and can panic.
type tracer struct {
	name string
	mu   *sync.Mutex
	log  *[]string
}

type tracerConfig struct {
	PanicOn string `koanf:"panic_on"`
}

func (p *tracer) Handle(ctx *fasthttp.RequestCtx, ex *proxy.Exchange, next proxy.Handler) error {
	p.mu.Lock()
	*p.log = append(*p.log, p.name)
	p.mu.Unlock()
	if v := ctx.Request.Header.Peek("X-Panic"); string(v) == p.name {
		panic("boom in " + p.name)
	}
	ctx.Request.Header.Add("X-Trace", p.name)
	return next.Handle(ctx, ex)
}

// tracerRegistry registers tracer plugins under the fixed names of three
// stages, so that a test can check the order the gateway imposes.
func tracerRegistry(mu *sync.Mutex, log *[]string) *proxy.Registry {
	mk := func(name string) *proxy.Factory {
		return proxy.Define(name, func(*tracerConfig, *proxy.Build) (proxy.Plugin, error) {
			return &tracer{name: name, mu: mu, log: log}, nil
		})
	}
	return testkit.WithStandIns(mk("cache"), mk("authenticate"), mk("retry"))
}

func TestStageOrderIsFixedByTheGateway(t *testing.T) {
	t.Parallel()
	var mu sync.Mutex
	var order []string
	up := testkit.NewUpstream(t, nil)
	// YAML lists them in the "wrong" order on purpose, across levels.
	gw := testkit.StartGateway(t, fmt.Sprintf(`
log: {access_log: false}
plugins: {retry: {}}
upstreams: {up: {url: "%s", plugins: {cache: {}}}}
routes: {r: {path: "/{p:*}", upstream: up, plugins: {authenticate: {}}}}
`, up.URL), testkit.Options{Registry: tracerRegistry(&mu, &order)})
	if resp := testkit.Do(t, "GET", gw.URL+"/x", ""); resp.Status != 200 {
		t.Fatalf("status %d", resp.Status)
	}
	if got := strings.Join(order, ","); got != "authenticate,cache,retry" {
		t.Errorf("stages ran as %s, want authenticate,cache,retry", got)
	}
	if got := up.Last(t).Header.Values("X-Trace"); strings.Join(got, ",") != "authenticate,cache,retry" {
		t.Errorf("upstream saw X-Trace %v", got)
	}
}

func TestPanicBecomesInternalError(t *testing.T) {
	t.Parallel()
	var mu sync.Mutex
	var order []string
	up := testkit.NewUpstream(t, nil)
	gw := testkit.StartGateway(t, fmt.Sprintf(`
log: {access_log: false}
upstreams: {up: {url: "%s"}}
routes: {r: {path: "/{p:*}", upstream: up, plugins: {cache: {}}}}
`, up.URL), testkit.Options{Registry: tracerRegistry(&mu, &order)})

	resp := testkit.Do(t, "GET", gw.URL+"/x", "", "X-Panic", "cache", "X-Request-Id", "req-panic-1")
	p := testkit.WantProblem(t, resp, 500, "internal_error")
	if p["retryable"] != false || strings.Contains(string(resp.Body), "boom") {
		t.Errorf("panic details leaked or retryable set: %s", resp.Body)
	}
	logs := gw.Logs.String()
	if !strings.Contains(logs, `"msg":"panic in pipeline"`) || !strings.Contains(logs, `"request_id":"req-panic-1"`) || !strings.Contains(logs, "boom in cache") {
		t.Errorf("panic not logged with its request id:\n%s", logs)
	}
	if up.Count() != 0 {
		t.Errorf("the request reached the upstream after the panic")
	}
	if resp := testkit.Do(t, "GET", gw.URL+"/x", ""); resp.Status != 200 {
		t.Errorf("after a panic the gateway answered %d", resp.Status)
	}
}

func TestPluginMergeAndDisable(t *testing.T) {
	t.Parallel()
	up := testkit.NewUpstream(t, nil)
	gw := testkit.StartGateway(t, fmt.Sprintf(`
log: {access_log: false}
plugins:
  headers: {request: {set: {X-Level: top}}}
upstreams:
  up:
    url: "%s"
    plugins:
      headers: {request: {set: {X-Level: upstream}}}
  other: {url: "%s"}
routes:
  inherits-upstream: {path: "/a", upstream: up}
  own-block:         {path: "/b", upstream: up, plugins: {headers: {request: {set: {X-Level: route}}}}}
  inherits-top:      {path: "/c", upstream: other}
  switched-off:      {path: "/d", upstream: up, plugins: {headers: {enabled: false}}}
`, up.URL, up.URL))
	for path, want := range map[string]string{"/a": "upstream", "/b": "route", "/c": "top", "/d": ""} {
		if resp := testkit.Do(t, "GET", gw.URL+path, ""); resp.Status != 200 {
			t.Fatalf("%s: %d", path, resp.Status)
		}
		if got := up.Last(t).Header.Get("X-Level"); got != want {
			t.Errorf("%s: X-Level = %q, want %q", path, got, want)
		}
	}

	// /admin/config shows, per route, the block that applies and where it comes from.
	resp := testkit.Do(t, "GET", gw.AdminURL+"/admin/config", "")
	var cfg struct {
		Routes map[string]struct {
			Plugins map[string]struct {
				Source string `json:"source"`
			} `json:"plugins"`
		} `json:"routes"`
	}
	if err := json.Unmarshal(resp.Body, &cfg); err != nil {
		t.Fatalf("/admin/config: %v: %s", err, resp.Body)
	}
	for route, want := range map[string]string{
		"inherits-upstream": "upstreams.up.plugins.headers",
		"own-block":         "routes.own-block.plugins.headers",
		"inherits-top":      "plugins.headers",
		"switched-off":      "",
	} {
		if got := cfg.Routes[route].Plugins["headers"].Source; got != want {
			t.Errorf("%s: headers source %q, want %q", route, got, want)
		}
	}
}
