package config_test

import (
	"strings"
	"testing"

	"github.com/sluice-gw/sluice/internal/testkit"
)

// A problem found when the pipeline is compiled (a plugin block, a
// plugin-owned section) names the environment variable that set its key,
// as one found while loading does.
func TestCompiledProblemsNameTheirEnvironmentVariable(t *testing.T) {
	t.Setenv("SLUICE_CACHE__MAX_SIZE", "100KiB")
	t.Setenv("SLUICE_PLUGINS__RETRY__ATTEMPTS", "50")
	probs := testkit.ConfigProblems(t, `
upstreams: {up: {url: "http://127.0.0.1:9"}}
routes: {r: {path: "/", upstream: up}}
plugins: {retry: {}}
`)
	want := map[string]string{
		"cache.max_size":         "(set by environment variable SLUICE_CACHE__MAX_SIZE)",
		"plugins.retry.attempts": "(set by environment variable SLUICE_PLUGINS__RETRY__ATTEMPTS)",
	}
	if len(probs) != len(want) {
		t.Fatalf("got %v, want problems at %v", probs, want)
	}
	for _, p := range probs {
		if !strings.HasSuffix(p.Msg, want[p.Path]) {
			t.Errorf("%s: %q does not end with %q", p.Path, p.Msg, want[p.Path])
		}
	}
}
