package proxy_test

import (
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"

	"github.com/sluice-gw/sluice/internal/testkit"
	"github.com/sluice-gw/sluice/plugins"
	"github.com/sluice-gw/sluice/proxy"
	"github.com/sluice-gw/sluice/proxy/config"
)

// probeSection is the top-level "probe:" section of the sectioned test plugin.
type probeSection struct {
	Slots int    `koanf:"slots" json:"slots" reload:"restart"`
	Label string `koanf:"label" json:"label"`
}

func (s *probeSection) Defaults() { s.Slots, s.Label = 4, "default" }

func (s *probeSection) Validate() error {
	if s.Slots < 1 {
		return &config.FieldError{Path: "slots", Msg: "must be at least 1"}
	}
	return nil
}

// sectioned is a test plugin owning the "probe" section; it records the
// section each build is given.
type sectioned struct {
	mu   sync.Mutex
	seen []*probeSection
}

func (s *sectioned) last() *probeSection {
	s.mu.Lock()
	defer s.mu.Unlock()
	if len(s.seen) == 0 {
		return nil
	}
	return s.seen[len(s.seen)-1]
}

func (s *sectioned) registry() *proxy.Registry {
	return testkit.WithPlugin("retry", proxy.Define("sectioned", func(_ *struct{}, b *proxy.Build) (proxy.Plugin, error) {
		sec, _ := b.Section().(*probeSection)
		s.mu.Lock()
		s.seen = append(s.seen, sec)
		s.mu.Unlock()
		return passThrough{}, nil
	}, proxy.WithSection[probeSection]("probe")))
}

// problemsOf checks yaml with proxy.Check and returns its problems by path.
func problemsOf(t *testing.T, reg *proxy.Registry, yaml string) map[string]string {
	t.Helper()
	err := proxy.Check(mustLoad(t, yaml), reg)
	out := map[string]string{}
	if err == nil {
		return out
	}
	var ce *config.ConfigError
	if !errors.As(err, &ce) {
		t.Fatalf("Check: %v is not a *config.ConfigError", err)
	}
	for _, p := range ce.Problems {
		out[p.Path] = p.Msg
	}
	return out
}

// A plugin's section is decoded strictly and validated with key paths from
// the top of the file, even when no route uses the plugin.
func TestSectionIsCheckedEvenUnused(t *testing.T) {
	t.Parallel()
	reg := (&sectioned{}).registry()
	const noRoute = `
upstreams: {up: {url: "http://127.0.0.1:9"}}
routes: {r: {path: "/", upstream: up}}
`
	for _, tc := range []struct {
		section string
		want    map[string]string
	}{
		{`probe: {slts: 3}`, map[string]string{"probe.slts": `unknown key; did you mean "slots"?`}},
		{`probe: {slots: 0}`, map[string]string{"probe.slots": "must be at least 1"}},
		{`probe: {slots: many}`, map[string]string{"probe.slots": ""}},
		{`probe: [1, 2]`, map[string]string{"probe": "expected a map of settings"}},
		{`prob: {slots: 2}`, map[string]string{"prob": `unknown key; did you mean "probe"?`}},
		{`probe: {slots: 2, label: x}`, map[string]string{}},
		{`probe:`, map[string]string{}},
	} {
		got := problemsOf(t, reg, tc.section+noRoute)
		if len(got) != len(tc.want) {
			t.Errorf("%s: problems %v, want %v", tc.section, got, tc.want)
			continue
		}
		for path, msg := range tc.want {
			if m, ok := got[path]; !ok || !strings.Contains(m, msg) {
				t.Errorf("%s: problems %v, want %s: %q", tc.section, got, path, msg)
			}
		}
	}
}

// A top-level key that neither the gateway nor a plugin owns is an unknown
// key, with a suggestion from every known key (plugin sections included).
func TestUnknownTopLevelKeySuggests(t *testing.T) {
	t.Parallel()
	got := problemsOf(t, plugins.Registry(), `
cahce: {max_size: 64MiB}
upstreams: {up: {url: "http://127.0.0.1:9"}}
routes: {r: {path: "/", upstream: up}}
`)
	if msg := got["cahce"]; len(got) != 1 || msg != `unknown key; did you mean "cache"?` {
		t.Errorf("problems %v", got)
	}
	got = problemsOf(t, plugins.Registry(), `
servr: {}
upstreams: {up: {url: "http://127.0.0.1:9"}}
routes: {r: {path: "/", upstream: up}}
`)
	if msg := got["servr"]; len(got) != 1 || msg != `unknown key; did you mean "server"?` {
		t.Errorf("problems %v", got)
	}
}

// The section reaches build with its defaults; a reload that changes a
// field tagged reload:"restart" says so, one that changes another field
// does not; /admin/config shows the section as decoded.
func TestSectionDefaultsReloadAndAdmin(t *testing.T) {
	t.Parallel()
	s := &sectioned{}
	up := testkit.NewUpstream(t, nil)
	yaml := func(section string) string {
		return fmt.Sprintf(`
log: {access_log: false}
%s
upstreams: {up: {url: %q}}
routes: {r: {path: "/{p:*}", upstream: up, plugins: {sectioned: {}}}}
`, section, up.URL)
	}
	gw := testkit.StartGateway(t, yaml(`probe: {label: first}`), testkit.Options{Registry: s.registry()})
	if sec := s.last(); sec == nil || *sec != (probeSection{Slots: 4, Label: "first"}) {
		t.Fatalf("build got section %+v, want slots 4 (default), label first", sec)
	}
	if resp := testkit.Do(t, "GET", gw.URL+"/x", ""); resp.Status != 200 {
		t.Fatalf("status %d", resp.Status)
	}

	resp := testkit.Do(t, "GET", gw.AdminURL+"/admin/config", "")
	var view struct {
		Probe *probeSection `json:"probe"`
	}
	if err := json.Unmarshal(resp.Body, &view); err != nil || view.Probe == nil || *view.Probe != (probeSection{Slots: 4, Label: "first"}) {
		t.Errorf("/admin/config probe section: %v %s", err, resp.Body)
	}

	const warning = "apply only after a restart"
	testkit.WriteFile(t, gw.File, yaml(`probe: {label: second}`))
	if err := gw.Reload(); err != nil {
		t.Fatal(err)
	}
	if sec := s.last(); sec == nil || sec.Label != "second" {
		t.Errorf("after reload build got %+v", sec)
	}
	if strings.Contains(gw.Logs.String(), warning) {
		t.Errorf("a change to an untagged field logged a restart warning:\n%s", gw.Logs.String())
	}
	testkit.WriteFile(t, gw.File, yaml(`probe: {label: second, slots: 8}`))
	if err := gw.Reload(); err != nil {
		t.Fatal(err)
	}
	logs := gw.Logs.String()
	if strings.Count(logs, warning) != 1 || !strings.Contains(logs, `"keys":"probe.slots"`) {
		t.Errorf("no restart warning naming probe.slots (and only it):\n%s", logs)
	}
	resp = testkit.Do(t, "GET", gw.AdminURL+"/admin/config", "")
	view.Probe = nil
	if err := json.Unmarshal(resp.Body, &view); err != nil || view.Probe == nil || *view.Probe != (probeSection{Slots: 8, Label: "second"}) {
		t.Errorf("/admin/config after reload: %v %s", err, resp.Body)
	}
}

// A route using a plugin whose section is invalid reports the section only:
// the plugin is not built against a missing section.
func TestInvalidSectionIsReportedOnce(t *testing.T) {
	t.Parallel()
	s := &sectioned{}
	got := problemsOf(t, s.registry(), `
probe: {slots: -1}
upstreams: {up: {url: "http://127.0.0.1:9"}}
routes: {r: {path: "/", upstream: up, plugins: {sectioned: {}}}}
`)
	if len(got) != 1 || !strings.Contains(got["probe.slots"], "must be at least 1") {
		t.Errorf("problems %v", got)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if len(s.seen) != 0 {
		t.Errorf("the plugin was built without its section: %v", s.seen)
	}
}
