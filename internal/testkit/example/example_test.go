package example_test

import (
	"fmt"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/sluice-gw/sluice/internal/testkit"
	"github.com/sluice-gw/sluice/internal/testkit/example"
)

// pipeline is the built-in pipeline with the greeter right after the cache:
// the one line a new plugin adds to plugins/plugins.go.
var pipeline = testkit.WithPlugin("cache", example.Factory)

func TestNewPluginAtItsOwnStageWithItsOwnSection(t *testing.T) {
	up := testkit.NewUpstream(t, nil)
	gw := testkit.StartGateway(t, fmt.Sprintf(`
log: {access_log: false}
admin: {token: "admin-secret-123"}
greeter: {greeting: hi}
upstreams: {up: {url: "%s"}}
routes:
  r: {path: "/{p:*}", upstream: up, plugins: {greeter: {name: world}, cache: {ttl: 60s, override: true}}}
`, up.URL), testkit.Options{Registry: pipeline})

	if got := pipeline.Stages(); strings.Join(got, ",") != "normalize_errors,authenticate,rate_limit,idempotency,headers,contract,cache,greeter,contract.responses,inject_auth,retry,circuit_breaker,rate_limit.upstream_quota" {
		t.Fatalf("pipeline: %v", got)
	}
	first := testkit.Do(t, "GET", gw.URL+"/a", "")
	if first.Status != 200 || first.Header.Get("X-Greeting") != "hi world" {
		t.Fatalf("first call: %d, X-Greeting %q", first.Status, first.Header.Get("X-Greeting"))
	}
	// The second call is a cache hit: it ends at the cache, which runs
	// before the greeter, so the greeter sees one call, not two. (The hit
	// replays the stored answer, stamp included.)
	second := testkit.Do(t, "GET", gw.URL+"/a", "")
	if second.Header.Get("Cache-Status") == "" || !strings.Contains(second.Header.Get("Cache-Status"), "hit") {
		t.Fatalf("second call was not a hit: Cache-Status %q", second.Header.Get("Cache-Status"))
	}
	if n, _ := gw.Metrics(t).Value("sluice_example_greetings_total", "route", "r"); n != 1 {
		t.Errorf("greeter saw %v calls; want 1 (the hit stops at the cache)", n)
	}

	// The section is the plugin's: /admin/config shows it decoded, and a
	// reload that changes its restart-only field says so.
	cfg := testkit.Do(t, "GET", gw.AdminURL+"/admin/config", "", "Authorization", "Bearer admin-secret-123")
	if !strings.Contains(string(cfg.Body), `"greeting": "hi"`) {
		t.Errorf("/admin/config does not show the greeter section: %s", cfg.Body)
	}
	old, err := os.ReadFile(gw.File)
	if err != nil {
		t.Fatal(err)
	}
	testkit.WriteFile(t, gw.File, strings.Replace(string(old), "greeting: hi", "greeting: hey", 1))
	if err := gw.Gateway.Reload(); err != nil {
		t.Fatal(err)
	}
	testkit.Eventually(t, 2*time.Second, func() bool {
		return strings.Contains(gw.Logs.String(), "greeter.greeting")
	}, "a reload that changed greeter.greeting did not say it needs a restart")
}

func TestNewPluginSectionAndBlockErrorsNameTheirKeys(t *testing.T) {
	probs := testkit.ConfigProblemsWith(t, pipeline, `
greeter: {greeting: ""}
upstreams: {up: {url: "http://127.0.0.1:9"}}
routes: {r: {path: "/", upstream: up, plugins: {greeter: {}}}}
`)
	want := map[string]string{
		"greeter.greeting":              "must not be empty",
		"routes.r.plugins.greeter.name": "required",
	}
	if len(probs) != len(want) {
		t.Errorf("got %d problems, want %d: %v", len(probs), len(want), probs)
	}
	for _, p := range probs {
		if msg, ok := want[p.Path]; !ok || !strings.Contains(p.Msg, msg) {
			t.Errorf("unexpected problem %s: %s", p.Path, p.Msg)
		}
	}
	// Decoded strictly, like every block.
	testkit.WantOneProblem(t, testkit.ConfigProblemsWith(t, pipeline, "greeter: {colour: blue}\n"), "greeter.colour", "unknown key")
	// Decoded strictly, like every block.
	testkit.WantOneProblem(t, testkit.ConfigProblemsWith(t, pipeline, "greeter: {colour: blue}\n"), "greeter.colour", "unknown key")
	// Without the plugin registered, its section is an unknown key.
	probs = testkit.ConfigProblems(t, "greeter: {greeting: hi}\n")
	testkit.WantOneProblem(t, probs, "greeter", "unknown key")
}
