package proxy_test

import (
	"context"
	"fmt"
	"io"
	"slices"
	"strings"
	"sync"
	"testing"

	"github.com/sluice-gw/sluice/internal/testkit"
	"github.com/sluice-gw/sluice/plugins"
	"github.com/sluice-gw/sluice/proxy"
)

// mustPanic fails the test unless fn panics with a message containing want.
func mustPanic(t *testing.T, want string, fn func()) {
	t.Helper()
	defer func() {
		t.Helper()
		r := recover()
		if r == nil {
			t.Errorf("no panic, want one saying %q", want)
			return
		}
		if msg := fmt.Sprint(r); !strings.Contains(msg, want) {
			t.Errorf("panic %q, want one saying %q", msg, want)
		}
	}()
	fn()
}

func nop(name string, opts ...proxy.Option) *proxy.Factory {
	return proxy.Define(name, func(*struct{}, *proxy.Build) (proxy.Plugin, error) { return passThrough{}, nil }, opts...)
}

func nopParts(name string, parts ...string) *proxy.Factory {
	return proxy.DefineParts(name, parts, func(*struct{}, *proxy.Build) (proxy.Parts, error) { return nil, nil })
}

type secA struct{}

func TestRegistryRejectsProgrammingErrors(t *testing.T) {
	t.Parallel()
	two := nopParts("two", "late")
	mustPanic(t, `two plugins named "x"`, func() { proxy.NewRegistry(nop("x"), nop("x")) })
	mustPanic(t, `part "" of plugin "x" placed twice`, func() { f := nop("x"); proxy.NewRegistry(f, f) })
	mustPanic(t, `part "late" of plugin "two" placed twice`, func() { proxy.NewRegistry(two, two.Part("late"), two.Part("late")) })
	mustPanic(t, `part "late" of plugin "two" is not placed`, func() { proxy.NewRegistry(two) })
	mustPanic(t, `part "" of plugin "two" is not placed`, func() { proxy.NewRegistry(two.Part("late")) })
	mustPanic(t, `both own section "shared"`, func() {
		proxy.NewRegistry(nop("a", proxy.WithSection[secA]("shared")), nop("b", proxy.WithSection[secA]("shared")))
	})
	for _, key := range []string{"server", "log", "admin", "cluster", "consumers", "plugins", "upstreams", "routes"} {
		mustPanic(t, fmt.Sprintf(`plugin "a" claims the gateway's own section %q`, key), func() {
			proxy.NewRegistry(nop("a", proxy.WithSection[secA](key)))
		})
	}
	mustPanic(t, `incomplete plugin factory ""`, func() { proxy.NewRegistry(new(proxy.Factory)) })
	mustPanic(t, `plugin "two" has no part "early"`, func() { two.Part("early") })
	mustPanic(t, `plugin "x" has no part ""`, func() { nop("x").Part("") })
	mustPanic(t, `no plugin "nope" to replace`, func() { plugins.Registry().Replace(nop("nope")) })
	// Two sections with different keys, and one plugin's parts around another: fine.
	r := proxy.NewRegistry(nop("a", proxy.WithSection[secA]("sa")), two, nop("b", proxy.WithSection[secA]("sb")), two.Part("late"))
	if got := strings.Join(r.Stages(), ","); got != "a,two,b,two.late" {
		t.Errorf("Stages() = %s", got)
	}
	if got := strings.Join(r.Names(), ","); got != "a,b,two" {
		t.Errorf("Names() = %s", got)
	}
	if f, ok := r.Lookup("two"); !ok || f != two {
		t.Errorf("Lookup(two) = %v %v", f, ok)
	}
	if _, ok := r.Lookup("late"); ok {
		t.Errorf("a part is looked up as a plugin")
	}
}

// The built-in pipeline's places, by name, outermost first.
func TestBuiltInStages(t *testing.T) {
	t.Parallel()
	want := []string{"normalize_errors", "authenticate", "rate_limit", "idempotency", "headers", "contract", "cache", "contract.responses", "inject_auth", "retry",
		"circuit_breaker", "rate_limit.upstream_quota"}
	if got := plugins.Registry().Stages(); !slices.Equal(got, want) {
		t.Errorf("Stages() = %v, want %v", got, want)
	}
}

// Replace puts a stand-in at the places of the plugin it replaces; the
// replaced plugin's parts the stand-in lacks are left out.
func TestReplaceKeepsPositions(t *testing.T) {
	t.Parallel()
	base := plugins.Registry()
	standIn := nop("cache")
	r := base.Replace(standIn)
	if !slices.Equal(r.Stages(), base.Stages()) {
		t.Errorf("Replace(cache) stages %v, want %v", r.Stages(), base.Stages())
	}
	if f, _ := r.Lookup("cache"); f != standIn {
		t.Errorf("Lookup(cache) is not the stand-in")
	}
	if f, _ := base.Lookup("cache"); f == standIn {
		t.Errorf("Replace changed the registry it was called on")
	}
	// rate_limit has two parts; a one-part stand-in takes the first place only.
	r = base.Replace(nop("rate_limit"))
	want := slices.DeleteFunc(slices.Clone(base.Stages()), func(s string) bool { return s == "rate_limit.upstream_quota" })
	if !slices.Equal(r.Stages(), want) {
		t.Errorf("Replace(rate_limit) stages %v, want %v", r.Stages(), want)
	}
	// A stand-in with both parts keeps both places.
	r = base.Replace(nopParts("rate_limit", "upstream_quota"))
	if !slices.Equal(r.Stages(), base.Stages()) {
		t.Errorf("Replace(rate_limit with both parts) stages %v", r.Stages())
	}
	// A stand-in with a part the original does not place cannot be placed.
	mustPanic(t, `part "extra" of plugin "cache" is not placed`, func() { base.Replace(nopParts("cache", "extra")) })
	// WithPlugin inserts right after the named place.
	r = testkit.WithPlugin("retry", nop("fresh"))
	i := slices.Index(r.Stages(), "retry")
	if i < 0 || i+1 >= len(r.Stages()) || r.Stages()[i+1] != "fresh" {
		t.Errorf("WithPlugin(retry) stages %v", r.Stages())
	}
}

// A plugin that builds a part it does not declare is a programming error,
// reported as a problem of its block: New, Apply and Check refuse the
// config, and a reload (SIGHUP) never crashes the process on it.
func TestUndeclaredPartIsAProblemOfTheBlock(t *testing.T) {
	t.Parallel()
	var mu sync.Mutex
	var log []string
	reg := testkit.WithStandIns(proxy.DefineParts("cache", nil, func(*struct{}, *proxy.Build) (proxy.Parts, error) {
		return proxy.Parts{"": &tracer{name: "cache", mu: &mu, log: &log}, "bogus": &tracer{name: "bogus", mu: &mu, log: &log}}, nil
	}))
	cfg := mustLoad(t, `
log: {access_log: false}
upstreams: {up: {url: "http://127.0.0.1:9"}}
routes: {r: {path: "/", upstream: up, plugins: {cache: {}}}}
`)
	const want = `routes.r.plugins.cache: plugin "cache" built a part "bogus" it does not declare`
	if _, err := proxy.New(cfg, proxy.Options{Plugins: reg, LogOutput: io.Discard}); err == nil || !strings.Contains(err.Error(), want) {
		t.Errorf("New: %v, want %s", err, want)
	}
	if err := proxy.Check(cfg, reg); err == nil || !strings.Contains(err.Error(), want) {
		t.Errorf("Check: %v, want %s", err, want)
	}
	good := mustLoad(t, `
log: {access_log: false}
upstreams: {up: {url: "http://127.0.0.1:9"}}
routes: {r: {path: "/", upstream: up}}
`)
	g, err := proxy.New(good, proxy.Options{Plugins: reg, LogOutput: io.Discard})
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = g.Shutdown(context.Background()) }()
	if err := g.Apply(cfg); err == nil || !strings.Contains(err.Error(), want) {
		t.Errorf("Apply: %v, want %s", err, want)
	}
}

// A part left nil (a nil interface or a nil pointer) adds no stage: the
// pipeline still works and the plugin's other part runs.
func TestNilPartIsNotLinked(t *testing.T) {
	t.Parallel()
	var mu sync.Mutex
	var log []string
	tr := func(name string) *tracer { return &tracer{name: name, mu: &mu, log: &log} }
	reg := testkit.WithStandIns(
		proxy.DefineParts("rate_limit", []string{"upstream_quota"}, func(c *struct {
			NilPointer bool `koanf:"nil_pointer"`
		}, _ *proxy.Build) (proxy.Parts, error) {
			if c.NilPointer {
				return proxy.Parts{"": (*tracer)(nil), "upstream_quota": tr("quota")}, nil
			}
			return proxy.Parts{"": nil, "upstream_quota": tr("quota")}, nil
		}),
		proxy.Define("cache", func(*struct{}, *proxy.Build) (proxy.Plugin, error) { return nil, nil }),
		proxy.Define("retry", func(*struct{}, *proxy.Build) (proxy.Plugin, error) { return tr("retry"), nil }),
	)
	up := testkit.NewUpstream(t, nil)
	gw := testkit.StartGateway(t, fmt.Sprintf(`
log: {access_log: false}
upstreams: {up: {url: %q}}
routes:
  a: {path: "/a", upstream: up, plugins: {rate_limit: {}, cache: {}, retry: {}}}
  b: {path: "/b", upstream: up, plugins: {rate_limit: {nil_pointer: true}, cache: {}, retry: {}}}
`, up.URL), testkit.Options{Registry: reg})
	for _, path := range []string{"/a", "/b"} {
		mu.Lock()
		log = nil
		mu.Unlock()
		if resp := testkit.Do(t, "GET", gw.URL+path, ""); resp.Status != 200 || string(resp.Body) != "ok" {
			t.Fatalf("%s: %d %s", path, resp.Status, resp.Body)
		}
		mu.Lock()
		got := strings.Join(log, ",")
		mu.Unlock()
		if got != "retry,quota" {
			t.Errorf("%s: stages ran as %q, want retry,quota", path, got)
		}
		if got := up.Last(t).Header.Values("X-Trace"); strings.Join(got, ",") != "retry,quota" {
			t.Errorf("%s: upstream saw X-Trace %v", path, got)
		}
	}
}
