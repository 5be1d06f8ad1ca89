package config_test

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/sluice-gw/sluice/internal/testkit"
	"github.com/sluice-gw/sluice/plugins"
	"github.com/sluice-gw/sluice/proxy"
	"github.com/sluice-gw/sluice/proxy/config"
)

// problems checks yaml like `sluice validate` and returns every problem as
// "path: message".
func problems(t *testing.T, yaml string) []string {
	t.Helper()
	var out []string
	for _, p := range testkit.ConfigProblems(t, yaml) {
		out = append(out, p.Error())
	}
	return out
}

const minimal = `
upstreams: {up: {url: "http://127.0.0.1:9"}}
routes: {r: {path: "/{p:*}", upstream: up}}
`

func TestExampleConfigIsValid(t *testing.T) {
	t.Parallel()
	cfg, err := config.Load("../../config.example.yaml")
	if err != nil {
		t.Fatal(err)
	}
	if err := proxy.Check(cfg, plugins.Registry()); err != nil {
		t.Fatal(err)
	}
}

func TestConfigDefaults(t *testing.T) {
	t.Parallel()
	cfg, err := config.LoadBytes([]byte(minimal))
	if err != nil {
		t.Fatal(err)
	}
	s, u := cfg.Server, cfg.Upstreams["up"]
	if s.Listen != "127.0.0.1:8080" || s.ReadTimeout.D() != 10*time.Second || s.MaxRequestBody != 10<<20 ||
		s.MaxHeaderSize != 16<<10 || s.DrainTimeout.D() != 15*time.Second || cfg.Admin.Listen != "127.0.0.1:9090" ||
		cfg.Log.Level != "info" || cfg.Log.Format != "json" || !cfg.Log.AccessLog {
		t.Errorf("server/log/admin defaults: %+v %+v %+v", s, cfg.Log, cfg.Admin)
	}
	if u.Timeout.D() != 30*time.Second || u.ConnectTimeout.D() != 5*time.Second || u.MaxConns != 512 ||
		u.IdleConnTimeout.D() != 10*time.Second || u.MaxResponseBody != 64<<20 {
		t.Errorf("upstream defaults: %+v", u)
	}
}

func TestConfigProblemsNameTheirKey(t *testing.T) {
	t.Parallel()
	cases := []struct {
		name, yaml string
		want       string // one expected "path: message" prefix
	}{
		{"unknown top key", "servr: {}\n" + minimal, `servr: unknown key; did you mean "server"?`},
		{"unknown nested key", "server: {listn: x}\n" + minimal, `server.listn: unknown key; did you mean "listen"?`},
		{"unknown upstream key", `
upstreams: {up: {url: "http://127.0.0.1:9", timout: 1s}}
routes: {r: {path: "/", upstream: up}}`, `upstreams.up.timout: unknown key; did you mean "timeout"?`},
		{"duration without unit", "server: {read_timeout: 10}\n" + minimal, `server.read_timeout: invalid duration 10: missing unit`},
		{"bad duration", "server: {read_timeout: 10x}\n" + minimal, `server.read_timeout: invalid duration "10x"`},
		{"negative duration", "server: {read_timeout: -1s}\n" + minimal, `server.read_timeout: invalid duration "-1s": must not be negative`},
		{"bad size", "server: {max_request_body: 10XB}\n" + minimal, `server.max_request_body: invalid size "10XB"`},
		{"wrong type", "server: {max_inflight: lots}\n" + minimal, `server.max_inflight: expected an integer`},
		{"bad listen", "server: {listen: 8080}\n" + minimal, `server.listen: invalid address "8080"`},
		{"same listeners", "server: {listen: \"127.0.0.1:9\"}\nadmin: {listen: \"127.0.0.1:9\"}\n" + minimal, `admin.listen: must differ from server.listen`},
		{"bad level", "log: {level: loud}\n" + minimal, `log.level: unknown level "loud"`},
		{"missing upstream", `
upstreams: {github: {url: "https://api.github.com"}}
routes: {gh: {path: "/gh/{p:*}", upstream: gthub}}`, `routes.gh.upstream: unknown upstream "gthub"; did you mean "github"?`},
		{"url scheme", `
upstreams: {up: {url: "ftp://x"}}
routes: {r: {path: "/", upstream: up}}`, `upstreams.up.url: invalid URL "ftp://x": scheme must be http or https`},
		{"url credentials", `
upstreams: {up: {url: "https://user:hunter2@api.example.com"}}
routes: {r: {path: "/", upstream: up}}`, `upstreams.up.url: invalid URL "https://[redacted]@api.example.com": credentials in the URL are not allowed`},
		{"target url", `
upstreams: {up: {targets: ["http://a:1", "nope"]}}
routes: {r: {path: "/", upstream: up}}`, `upstreams.up.targets[1]: invalid URL "nope"`},
		{"url and targets", `
upstreams: {up: {url: "http://a:1", targets: ["http://b:1"]}}
routes: {r: {path: "/", upstream: up}}`, `upstreams.up: set url or targets, not both`},
		{"no url", `
upstreams: {up: {timeout: 1s}}
routes: {r: {path: "/", upstream: up}}`, `upstreams.up: needs url or targets`},
		{"path without slash", `
upstreams: {up: {url: "http://a:1"}}
routes: {r: {path: "api", upstream: up}}`, `routes.r.path: "api" must start with '/'`},
		{"strip prefix mismatch", `
upstreams: {up: {url: "http://a:1"}}
routes: {r: {path: "/api/{p:*}", upstream: up, strip_prefix: "/v1"}}`, `routes.r.strip_prefix: "/v1" is not a prefix`},
		{"lower-case method", `
upstreams: {up: {url: "http://a:1"}}
routes: {r: {path: "/", upstream: up, methods: [get]}}`, `routes.r.methods[0]: method "get" must be upper-case`},
		{"bad route name", `
upstreams: {up: {url: "http://a:1"}}
routes: {"Bad Name": {path: "/", upstream: up}}`, `routes.Bad Name: invalid name`},
		{"unknown plugin", "plugins: {normalise_errors: {}}\n" + minimal, `plugins.normalise_errors: unknown plugin "normalise_errors"; did you mean "normalize_errors"?`},
		{"plugin block not a map", `
upstreams: {up: {url: "http://a:1"}}
routes: {r: {path: "/", upstream: up, plugins: {headers: true}}}`, `routes.r.plugins.headers: expected a map`},
		{"enabled not bool", "plugins: {headers: {enabled: maybe}}\n" + minimal, `plugins.headers.enabled: expected true or false`},
		{"plugin key", "plugins: {normalize_errors: {mesage: /m}}\n" + minimal, `plugins.normalize_errors.mesage: unknown key; did you mean "message"?`},
		{"ca file", `
upstreams: {up: {url: "https://a:1", tls: {ca_file: /nonexistent/ca.pem}}}
routes: {r: {path: "/", upstream: up}}`, `upstreams.up.tls.ca_file: cannot read "/nonexistent/ca.pem"`},
		{"short admin token", "admin: {token: change-me}\n" + minimal, `admin.token: must be at least 16 characters, got 9`},
		{"unset variable", "admin: {token: \"${SLUICE_TEST_UNSET_VAR}\"}\n" + minimal, `admin.token: environment variable SLUICE_TEST_UNSET_VAR is not set`},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			t.Parallel()
			got := problems(t, c.yaml)
			for _, p := range got {
				if strings.HasPrefix(p, c.want) {
					return
				}
			}
			t.Errorf("want a problem starting %q, got:\n  %s", c.want, strings.Join(got, "\n  "))
		})
	}
}

func TestConfigReportsEveryProblem(t *testing.T) {
	t.Parallel()
	got := problems(t, `
server: {listn: x, read_timeout: 5}
log: {level: loud}
plugins: {normalise_errors: {}}
upstreams: {up: {url: "ftp://x", max_conns: many}}
routes:
  a: {path: "/x", upstream: gone}
  b: {path: "nope", upstream: up}
`)
	for _, want := range []string{"server.listn", "server.read_timeout", "log.level", "plugins.normalise_errors",
		"upstreams.up.url", "upstreams.up.max_conns", "routes.a.upstream", "routes.b.path"} {
		found := false
		for _, p := range got {
			found = found || strings.HasPrefix(p, want+":")
		}
		if !found {
			t.Errorf("no problem reported at %s; got:\n  %s", want, strings.Join(got, "\n  "))
		}
	}
}

func TestEnvironment(t *testing.T) {
	dir := t.TempDir()
	file := filepath.Join(dir, "c.yaml")
	if err := os.WriteFile(file, []byte(`
server: {listen: "127.0.0.1:8080"}
admin: {token: "${ADM_TOK}"}
upstreams:
  up:
    url: "${UP_URL:-http://127.0.0.1:9}"
    plugins:
      headers: {request: {set: {X-Price: "$$5 ${PRICE_UNIT:-}"}}}
routes: {r: {path: "/{p:*}", upstream: up}}
`), 0o600); err != nil {
		t.Fatal(err)
	}
	t.Setenv("ADM_TOK", "tok-value-0123456789")
	t.Setenv("SLUICE_SERVER__LISTEN", "127.0.0.1:9999")
	t.Setenv("SLUICE_UPSTREAMS__UP__MAX_CONNS", "7")
	t.Setenv("SLUICE_UPSTREAMS__UP__TIMEOUT", "3s")
	t.Setenv("SLUICE_ADMIN_TOKEN", "not-an-override") // no "__": a plain variable, not a key
	cfg, err := config.Load(file)
	if err != nil {
		t.Fatal(err)
	}
	u := cfg.Upstreams["up"]
	if cfg.Server.Listen != "127.0.0.1:9999" || u.MaxConns != 7 || u.Timeout.D() != 3*time.Second {
		t.Errorf("overrides not applied: listen %s max_conns %d timeout %s", cfg.Server.Listen, u.MaxConns, u.Timeout)
	}
	if cfg.Admin.Token.Reveal() != "tok-value-0123456789" || u.URL != "http://127.0.0.1:9" {
		t.Errorf("expansion: token %q url %q", cfg.Admin.Token.Reveal(), u.URL)
	}
	set := u.Plugins["headers"]["request"].(map[string]any)["set"].(map[string]any)
	if set["X-Price"] != "$5 " {
		t.Errorf("$$ and empty default: %q", set["X-Price"])
	}

	t.Setenv("SLUICE_SERVER__READ_TIMEOUT", "soon")
	_, err = config.Load(file)
	if err == nil || !strings.Contains(err.Error(), "server.read_timeout") || !strings.Contains(err.Error(), "SLUICE_SERVER__READ_TIMEOUT") {
		t.Errorf("a bad override must name the key and the variable: %v", err)
	}
}

func TestSecretNeverPrints(t *testing.T) {
	t.Parallel()
	s := config.Secret("hunter2")
	for _, out := range []string{s.String(), fmt.Sprint(s), fmt.Sprintf("%v %s %q %x %#v %+v", s, s, s, s, s, s),
		fmt.Sprintf("%v", struct{ T config.Secret }{s})} {
		if strings.Contains(out, "hunter2") || strings.Contains(out, fmt.Sprintf("%x", "hunter2")) {
			t.Errorf("secret printed: %s", out)
		}
	}
	if b, _ := s.MarshalJSON(); string(b) != `"[redacted]"` {
		t.Errorf("JSON: %s", b)
	}
	if s.Reveal() != "hunter2" {
		t.Error("Reveal lost the value")
	}
}

func TestSizes(t *testing.T) {
	t.Parallel()
	for in, want := range map[string]config.Size{"1024": 1024, "10MiB": 10 << 20, "512kib": 512 << 10, "1GB": 1e9, "2KB": 2000, "7B": 7, "1.5KiB": 1536} {
		got, err := config.ParseSize(in)
		if err != nil || got != want {
			t.Errorf("ParseSize(%q) = %v, %v; want %v", in, got, err, want)
		}
	}
	for _, in := range []string{"", "MiB", "-1KiB", "10 XB", "ten", "nan", "NaN MiB", "inf", "+Inf", "0x1p10"} {
		if _, err := config.ParseSize(in); err == nil {
			t.Errorf("ParseSize(%q) accepted", in)
		}
	}
	if s := config.Size(10 << 20).String(); s != "10MiB" {
		t.Errorf("String = %s", s)
	}
}

func TestConfigMessagesNeverShowURLCredentials(t *testing.T) {
	t.Parallel()
	for _, url := range []string{"ftp://user:hunter2@x", "https://user:hunter2@", "http://user:hunter2@h/p?q=1", "http://user:hunter2@h:99999"} {
		got := problems(t, fmt.Sprintf("upstreams: {up: {url: %q}}\nroutes: {r: {path: /, upstream: up}}", url))
		if len(got) == 0 {
			t.Errorf("%s accepted", url)
		}
		for _, p := range got {
			if strings.Contains(p, "hunter2") {
				t.Errorf("%s: password in message %q", url, p)
			}
		}
	}
}

func TestUnsetVariableReportedOnce(t *testing.T) {
	t.Parallel()
	got := problems(t, `
upstreams: {up: {url: "${SLUICE_TEST_UNSET_URL}"}}
routes: {r: {path: /, upstream: up}}`)
	if len(got) != 1 || !strings.HasPrefix(got[0], "upstreams.up.url: environment variable SLUICE_TEST_UNSET_URL is not set") {
		t.Errorf("want one problem naming the variable, got %q", got)
	}
}

func TestScalarsKeepTheirText(t *testing.T) {
	t.Parallel()
	cfg, err := config.LoadBytes([]byte(`
upstreams: {up: {url: "http://127.0.0.1:9"}}
routes: {r: {path: /, upstream: up, methods: "GET, POST", plugins: {headers: {request: {set: {X-Debug: true, X-Api-Version: 2024-06-01, X-N: 10}}}}}}
`))
	if err != nil {
		t.Fatal(err)
	}
	if err := proxy.Check(cfg, plugins.Registry()); err != nil {
		t.Fatal(err)
	}
	if m := cfg.Routes["r"].Methods; len(m) != 2 || m[0] != "GET" || m[1] != "POST" {
		t.Errorf("methods from a comma list = %q", m)
	}
	// and on the wire: see the headers plugin tests; here the decoder's output
	gotProblems := problems(t, `
upstreams: {up: {url: "http://127.0.0.1:9"}}
routes: {r: {path: /, upstream: up, plugins: {headers: {request: {remove: [X-A, {bad: 1}]}}}}}
`)
	found := false
	for _, p := range gotProblems {
		found = found || strings.HasPrefix(p, "routes.r.plugins.headers.request.remove[1]: ")
	}
	if !found {
		t.Errorf("list element path not in name[i] form: %q", gotProblems)
	}
}

// Streamed answers are not held in memory: max_response_body may exceed
// the body budget, stream_threshold (what is read whole) may not.
func TestStreamThresholdWithinBodyBudget(t *testing.T) {
	if _, err := config.LoadBytes([]byte("upstreams: {up: {url: \"http://127.0.0.1:1\", max_response_body: 4GiB}}\nroutes: {r: {path: /x, upstream: up}}\n")); err != nil {
		t.Fatalf("a 4GiB max_response_body with the default budget: %v", err)
	}
	_, err := config.LoadBytes([]byte("server: {max_body_memory: 16MiB}\nupstreams: {up: {url: \"http://127.0.0.1:1\", max_response_body: 4GiB, stream_threshold: 32MiB}}\nroutes: {r: {path: /x, upstream: up}}\n"))
	if err == nil || !strings.Contains(err.Error(), "upstreams.up.stream_threshold: 32MiB is more than server.max_body_memory (16MiB)") {
		t.Fatalf("stream_threshold over the budget: %v", err)
	}
	_, err = config.LoadBytes([]byte("upstreams: {up: {url: \"http://127.0.0.1:1\", max_response_body: 1MiB, stream_threshold: 2MiB}}\nroutes: {r: {path: /x, upstream: up}}\n"))
	if err == nil || !strings.Contains(err.Error(), "upstreams.up.stream_threshold: 2MiB is above max_response_body 1MiB") {
		t.Fatalf("stream_threshold over max_response_body: %v", err)
	}
}

// With request streaming on, a request body is held in memory only up to
// server.stream_request_threshold: an upload gateway may allow bodies far
// larger than its body budget. With it off, the whole body is held.
func TestMaxRequestBodyWithinBodyBudget(t *testing.T) {
	const routes = "upstreams: {up: {url: \"http://127.0.0.1:1\"}}\nroutes: {r: {path: /x, upstream: up}}\n"
	if _, err := config.LoadBytes([]byte("server: {max_request_body: 4GiB, max_body_memory: 64MiB, stream_request_threshold: 1MiB}\n" + routes)); err != nil {
		t.Fatalf("4GiB uploads streamed past 1MiB with a 64MiB budget: %v", err)
	}
	_, err := config.LoadBytes([]byte("server: {max_request_body: 4GiB, max_body_memory: 64MiB}\n" + routes))
	if err == nil || !strings.Contains(err.Error(), "server.max_body_memory: must be at least server.max_request_body (4GiB), got 64MiB") {
		t.Fatalf("4GiB bodies held whole with a 64MiB budget: %v", err)
	}
	_, err = config.LoadBytes([]byte("server: {max_request_body: 4GiB, max_body_memory: 64MiB, stream_request_threshold: 128MiB}\n" + routes))
	if err == nil || !strings.Contains(err.Error(), "server.max_body_memory: must be at least server.stream_request_threshold (128MiB), got 64MiB") {
		t.Fatalf("a threshold over the budget: %v", err)
	}
}
