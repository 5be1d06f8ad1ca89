package proxy_test

import (
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/sluice-gw/sluice/internal/testkit"
	"github.com/valyala/fasthttp"
)

const reloadYAML = `
log: {access_log: false}
upstreams:
  up: {url: "%s", timeout: 5s}
routes:
  r:
    path: "/{p:*}"
    upstream: up
    plugins:
      headers: {response: {set: {X-Generation: "%d"}}}
`

func TestReloadUnderLoadLosesNothing(t *testing.T) {
	t.Parallel()
	up := testkit.NewUpstream(t, nil)
	gw := testkit.StartGateway(t, fmt.Sprintf(reloadYAML, up.URL, 0))

	stop := make(chan struct{})
	var ok, failed atomic.Int64
	var firstErr atomic.Value
	var wg sync.WaitGroup
	for range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; i < 100000; i++ { // bounded; stopped by the test long before
				select {
				case <-stop:
					return
				default:
				}
				resp, err := testkit.TryDo("GET", gw.URL+"/x", "")
				if err != nil || resp.Status != 200 {
					failed.Add(1)
					if err == nil {
						err = fmt.Errorf("status %d: %s", resp.Status, resp.Body)
					}
					firstErr.CompareAndSwap(nil, err.Error())
					continue
				}
				ok.Add(1)
			}
		}()
	}
	for gen := 1; gen <= 20; gen++ {
		testkit.WriteFile(t, gw.File, fmt.Sprintf(reloadYAML, up.URL, gen))
		if err := gw.Reload(); err != nil {
			t.Fatalf("reload %d: %v", gen, err)
		}
		time.Sleep(20 * time.Millisecond)
	}
	close(stop)
	wg.Wait()

	if n := failed.Load(); n != 0 {
		t.Fatalf("%d of %d requests failed during 20 reloads; first: %v", n, n+ok.Load(), firstErr.Load())
	}
	if ok.Load() < 100 {
		t.Fatalf("only %d requests ran during the reloads", ok.Load())
	}
	if got := testkit.Do(t, "GET", gw.URL+"/x", "").Header.Get("X-Generation"); got != "20" {
		t.Errorf("after 20 reloads X-Generation = %q, want 20", got)
	}
	m := gw.Metrics(t)
	if v, _ := m.Value("sluice_config_reloads_total", "result", "success"); v != 20 {
		t.Errorf("reloads_total{success} = %v, want 20", v)
	}
	// pools survive reloads that don't change the upstream: connections stay few
	remotes := map[string]bool{}
	for _, r := range up.Requests() {
		remotes[r.Remote] = true
	}
	if len(remotes) > 16 {
		t.Errorf("%d upstream connections for 8 callers across 20 reloads: pools were not reused", len(remotes))
	}
	t.Logf("%d requests, 0 failed, %d upstream connections", ok.Load(), len(remotes))
}

func TestBadReloadKeepsOldConfig(t *testing.T) {
	t.Parallel()
	up := testkit.NewUpstream(t, nil)
	gw := testkit.StartGateway(t, fmt.Sprintf(reloadYAML, up.URL, 1))

	testkit.WriteFile(t, gw.File, fmt.Sprintf(reloadYAML, up.URL, 2)+`
  broken: {path: "/b", upstream: nowhere}
`)
	err := gw.Reload()
	if err == nil || !strings.Contains(err.Error(), `routes.broken.upstream: unknown upstream "nowhere"`) {
		t.Fatalf("reload error = %v", err)
	}
	resp := testkit.Do(t, "GET", gw.URL+"/x", "")
	if resp.Status != 200 || resp.Header.Get("X-Generation") != "1" {
		t.Errorf("after a rejected reload: %d, generation %q", resp.Status, resp.Header.Get("X-Generation"))
	}
	m := gw.Metrics(t)
	if v, _ := m.Value("sluice_config_reloads_total", "result", "failure"); v != 1 {
		t.Errorf("reloads_total{failure} = %v, want 1", v)
	}
	if !strings.Contains(gw.Logs.String(), "config reload rejected") {
		t.Errorf("rejection not logged")
	}

	// A config that loads but does not compile (an unknown plugin) is
	// rejected too, and leaves no series for its new route behind.
	testkit.WriteFile(t, gw.File, fmt.Sprintf(reloadYAML, up.URL, 3)+`
  fresh: {path: "/f", upstream: up, plugins: {nope: {}}}
`)
	if err := gw.Reload(); err == nil || !strings.Contains(err.Error(), `routes.fresh.plugins.nope: unknown plugin`) {
		t.Fatalf("reload error = %v", err)
	}
	m = gw.Metrics(t)
	if v, _ := m.Value("sluice_config_reloads_total", "result", "failure"); v != 2 {
		t.Errorf("reloads_total{failure} = %v, want 2", v)
	}
	if _, found := m.Value("sluice_request_duration_seconds", "route", "fresh"); found {
		t.Errorf("the rejected config left series for its route behind")
	}
}

func TestReloadSaysWhatNeedsARestart(t *testing.T) {
	t.Parallel()
	release := make(chan struct{})
	defer close(release)
	up := testkit.NewUpstream(t, func(*fasthttp.RequestCtx) { <-release })
	const yaml = `
log: {access_log: false}
server: {max_inflight: %d, read_timeout: %s}
upstreams: {up: {url: "%s"}}
routes: {r: {path: "/{p:*}", upstream: up}}
`
	gw := testkit.StartGateway(t, fmt.Sprintf(yaml, 0, "10s", up.URL))
	testkit.WriteFile(t, gw.File, fmt.Sprintf(yaml, 1, "5s", up.URL))
	if err := gw.Reload(); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(gw.Logs.String(), `"keys":"server.read_timeout"`) {
		t.Errorf("no restart warning naming server.read_timeout (and only it):\n%s", gw.Logs.String())
	}
	// max_inflight applies at once: one request held, the next is refused.
	go func() { _, _ = testkit.TryDo("GET", gw.URL+"/held", "") }()
	testkit.Eventually(t, 2*time.Second, func() bool { return up.Count() == 1 }, "the first request never reached the upstream")
	testkit.WantProblem(t, testkit.Do(t, "GET", gw.URL+"/second", ""), 503, "overloaded")
}

func TestReloadRemovesRouteSeries(t *testing.T) {
	t.Parallel()
	up := testkit.NewUpstream(t, nil)
	two := `
log: {access_log: false}
upstreams: {up: {url: "%s"}}
routes:
  keep: {path: "/keep", upstream: up}
  gone: {path: "/gone", upstream: up}
`
	gw := testkit.StartGateway(t, fmt.Sprintf(two, up.URL))
	testkit.Do(t, "GET", gw.URL+"/keep", "")
	testkit.Do(t, "GET", gw.URL+"/gone", "")
	if _, found := gw.Metrics(t).Value("sluice_requests_total", "route", "gone"); !found {
		t.Fatal("no series for route gone before the reload")
	}
	testkit.WriteFile(t, gw.File, strings.Replace(fmt.Sprintf(two, up.URL), "  gone: {path: \"/gone\", upstream: up}\n", "", 1))
	if err := gw.Reload(); err != nil {
		t.Fatal(err)
	}
	m := gw.Metrics(t)
	if _, found := m.Value("sluice_requests_total", "route", "gone"); found {
		t.Error("series of a removed route still exported")
	}
	if v, _ := m.Value("sluice_requests_total", "route", "keep"); v != 1 {
		t.Errorf("series of a kept route = %v, want 1", v)
	}
	testkit.WantProblem(t, testkit.Do(t, "GET", gw.URL+"/gone", ""), 404, "route_not_found")
}

// admin.pprof is read when the admin listener starts: a reload that
// changes it says that it needs a restart.
func TestReloadSaysPprofNeedsARestart(t *testing.T) {
	t.Parallel()
	up := testkit.NewUpstream(t, nil)
	const yaml = `
log: {access_log: false}
admin: {pprof: %t}
upstreams: {up: {url: "%s"}}
routes: {r: {path: "/{p:*}", upstream: up}}
`
	gw := testkit.StartGateway(t, fmt.Sprintf(yaml, false, up.URL))
	testkit.WriteFile(t, gw.File, fmt.Sprintf(yaml, true, up.URL))
	if err := gw.Reload(); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(gw.Logs.String(), `"keys":"admin.pprof"`) {
		t.Errorf("no restart warning naming admin.pprof:\n%s", gw.Logs.String())
	}
}
