package proxy_test

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"go/ast"
	"go/parser"
	"go/token"
	"io"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"

	"github.com/knadh/koanf/parsers/yaml"
	"github.com/santhosh-tekuri/jsonschema/v6"
	"github.com/sluice-gw/sluice/plugins"
	"github.com/sluice-gw/sluice/proxy"
	"github.com/sluice-gw/sluice/proxy/config"
	"github.com/sluice-gw/sluice/proxy/internal/schemadoc"
	yamlv3 "go.yaml.in/yaml/v3"
)

const schemaFile = "../docs/config.schema.json"

var schemaOnce = sync.OnceValues(func() ([]byte, error) { return proxy.ConfigSchema(plugins.Registry()) })

// configSchema returns the schema of the built-in plugins, as JSON and compiled.
func configSchema(t *testing.T) (doc map[string]any, compiled *jsonschema.Schema) {
	t.Helper()
	raw, err := schemaOnce()
	if err != nil {
		t.Fatal(err)
	}
	v, err := jsonschema.UnmarshalJSON(bytes.NewReader(raw))
	if err != nil {
		t.Fatal(err)
	}
	c := jsonschema.NewCompiler()
	if err := c.AddResource("sluice.schema.json", v); err != nil {
		t.Fatal(err)
	}
	sch, err := c.Compile("sluice.schema.json") // checked against the 2020-12 meta-schema
	if err != nil {
		t.Fatalf("the schema does not compile: %v", err)
	}
	return v.(map[string]any), sch
}

// instance turns a YAML document into the JSON value the schema validates,
// read by the loader's own YAML parser.
func instance(t *testing.T, doc []byte) any {
	t.Helper()
	raw, err := yaml.Parser().Unmarshal(doc)
	if err != nil {
		t.Fatalf("yaml: %v", err)
	}
	b, err := json.Marshal(jsonable(raw))
	if err != nil {
		t.Fatal(err)
	}
	v, err := jsonschema.UnmarshalJSON(bytes.NewReader(b))
	if err != nil {
		t.Fatal(err)
	}
	return v
}

func jsonable(v any) any {
	switch v := v.(type) {
	case map[string]any:
		out := make(map[string]any, len(v))
		for k, x := range v {
			out[k] = jsonable(x)
		}
		return out
	case map[any]any:
		out := make(map[string]any, len(v))
		for k, x := range v {
			out[fmt.Sprint(k)] = jsonable(x)
		}
		return out
	case []any:
		out := make([]any, len(v))
		for i, x := range v {
			out[i] = jsonable(x)
		}
		return out
	}
	return v
}

// loaderErr is what `sluice validate` says of doc: the loader's problems and
// those found building every plugin.
func loaderErr(doc []byte) error {
	cfg, err := config.LoadBytes(doc)
	var ce *config.ConfigError
	if err != nil && !errors.As(err, &ce) {
		return err
	}
	return proxy.Validate(cfg, err, plugins.Registry())
}

func TestConfigSchemaFileIsCurrent(t *testing.T) {
	want, err := schemaOnce()
	if err != nil {
		t.Fatal(err)
	}
	got, err := os.ReadFile(schemaFile)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, want) {
		t.Fatalf("docs/config.schema.json differs from proxy.ConfigSchema(plugins.Registry()): regenerate it with\n" +
			"\tgo run ./cmd/sluice config schema > docs/config.schema.json")
	}
}

func TestConfigSchemaShape(t *testing.T) {
	a, err := proxy.ConfigSchema(plugins.Registry())
	if err != nil {
		t.Fatal(err)
	}
	b, err := proxy.ConfigSchema(plugins.Registry())
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(a, b) {
		t.Fatal("two calls gave different schemas")
	}
	if !bytes.HasSuffix(a, []byte("}\n")) || !bytes.HasPrefix(a, []byte("{\n  \"")) {
		t.Fatalf("want indented JSON ending in a newline, got %q...%q", a[:10], a[len(a)-10:])
	}
	doc, _ := configSchema(t)
	if doc["$schema"] != "https://json-schema.org/draft/2020-12/schema" {
		t.Fatalf("$schema = %v", doc["$schema"])
	}
	// Every plugin of the registry has a block schema, and nothing else does.
	defs := doc["$defs"].(map[string]any)
	pluginProps := defs["plugins"].(map[string]any)["properties"].(map[string]any)
	if got, want := slices.Sorted(maps.Keys(pluginProps)), plugins.Registry().Names(); !slices.Equal(got, want) {
		t.Fatalf("plugins: properties %v, registry %v", got, want)
	}
}

func TestSchemaCommentsAreCurrent(t *testing.T) {
	want, err := schemadoc.Generate("..")
	if err != nil {
		t.Fatal(err)
	}
	got, err := os.ReadFile("schema_comments.go")
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, want) {
		t.Fatal("proxy/schema_comments.go is stale (a config struct's doc comment changed): run\n\tgo generate ./proxy\n" +
			"then regenerate docs/config.schema.json:\n\tgo run ./cmd/sluice config schema > docs/config.schema.json")
	}
}

func TestExampleConfigModeline(t *testing.T) {
	b, err := os.ReadFile("../config.example.yaml")
	if err != nil {
		t.Fatal(err)
	}
	first, _, _ := bytes.Cut(b, []byte("\n"))
	const want = "# yaml-language-server: $schema=./docs/config.schema.json"
	if string(first) != want {
		t.Fatalf("config.example.yaml starts with %q, want %q", first, want)
	}
	// The path is relative to the file.
	if _, err := os.Stat(filepath.Join("..", strings.TrimPrefix(want, "# yaml-language-server: $schema="))); err != nil {
		t.Fatal(err)
	}
}

// repoConfigs returns every gateway config kept in the repository: the
// YAML files with upstreams: and the config embedded in the k8s manifest.
func repoConfigs(t *testing.T) map[string][]byte {
	t.Helper()
	out := map[string][]byte{}
	for _, pattern := range []string{"../*.yaml", "../*/*.yaml", "../*/*/*.yaml"} {
		files, err := filepath.Glob(pattern)
		if err != nil {
			t.Fatal(err)
		}
		for _, f := range files {
			b, err := os.ReadFile(f)
			if err != nil {
				t.Fatal(err)
			}
			if bytes.HasPrefix(b, []byte("upstreams:")) || bytes.Contains(b, []byte("\nupstreams:")) {
				out[f] = b
			}
		}
	}
	// deploy/k8s/sluice.yaml holds the config in a ConfigMap.
	const manifest = "../deploy/k8s/sluice.yaml"
	delete(out, manifest)
	f, err := os.Open(manifest)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	dec := yamlv3.NewDecoder(f)
	for {
		var obj struct {
			Kind string            `yaml:"kind"`
			Data map[string]string `yaml:"data"`
		}
		if err := dec.Decode(&obj); errors.Is(err, io.EOF) {
			break
		} else if err != nil {
			t.Fatalf("%s: %v", manifest, err)
		}
		for key, v := range obj.Data {
			if obj.Kind == "ConfigMap" && strings.Contains(v, "upstreams:") {
				out[manifest+" ConfigMap "+key] = []byte(v)
			}
		}
	}
	for _, want := range []string{"../config.example.yaml", manifest + " ConfigMap config.yaml"} {
		if out[want] == nil {
			t.Fatalf("no config found at %s (found %v)", want, slices.Sorted(maps.Keys(out)))
		}
	}
	return out
}

// TestRepositoryConfigsValidate: every config in the repository is valid to
// the loader and to the schema.
func TestRepositoryConfigsValidate(t *testing.T) {
	_, sch := configSchema(t)
	t.Setenv("SLUICE_ADMIN_TOKEN", "an-admin-token-0123456789") // the k8s config requires it
	configs := repoConfigs(t)
	for _, name := range slices.Sorted(maps.Keys(configs)) {
		doc := configs[name]
		if err := loaderErr(doc); err != nil {
			t.Errorf("%s: the loader refuses it: %v", name, err)
		}
		if err := sch.Validate(instance(t, doc)); err != nil {
			t.Errorf("%s: the schema refuses it: %v", name, err)
		}
	}
	t.Logf("%d configs: %v", len(configs), slices.Sorted(maps.Keys(configs)))
}

// TestExampleConfigKeysDescribed walks config.example.yaml and checks that
// each key it uses is a property of the schema, with a description (or a
// free key of a map, such as an upstream's name), not merely tolerated.
func TestExampleConfigKeysDescribed(t *testing.T) {
	doc, _ := configSchema(t)
	b, err := os.ReadFile("../config.example.yaml")
	if err != nil {
		t.Fatal(err)
	}
	w := &describer{defs: doc["$defs"].(map[string]any)}
	w.walk("", []any{doc}, instance(t, b))
	if w.keys < 100 {
		t.Fatalf("walked only %d keys", w.keys)
	}
	for _, p := range w.problems {
		t.Error(p)
	}
	t.Logf("%d keys of config.example.yaml described by the schema", w.keys)
}

type describer struct {
	defs     map[string]any
	keys     int
	problems []string
}

// expand returns the schemas that apply to a value under s: s itself,
// what it refers to and its subschemas (anyOf, allOf, oneOf, then, else).
func (w *describer) expand(schemas []any) []map[string]any {
	var out []map[string]any
	var add func(any)
	add = func(s any) {
		m, ok := s.(map[string]any)
		if !ok {
			return
		}
		out = append(out, m)
		if ref, ok := m["$ref"].(string); ok {
			add(w.defs[strings.TrimPrefix(ref, "#/$defs/")])
		}
		for _, k := range []string{"anyOf", "allOf", "oneOf"} {
			for _, sub := range asList(m[k]) {
				add(sub)
			}
		}
		add(m["then"])
		add(m["else"])
	}
	for _, s := range schemas {
		add(s)
	}
	return out
}

func asList(v any) []any { l, _ := v.([]any); return l }

// hasDescription reports whether a property has a description of its own
// or from the definition it refers to (editors show that one then).
func (w *describer) hasDescription(p map[string]any) bool {
	for p != nil {
		if d, _ := p["description"].(string); d != "" {
			return true
		}
		ref, _ := p["$ref"].(string)
		p, _ = w.defs[strings.TrimPrefix(ref, "#/$defs/")].(map[string]any)
	}
	return false
}

func (w *describer) walk(path string, schemas []any, v any) {
	switch v := v.(type) {
	case map[string]any:
		for _, key := range slices.Sorted(maps.Keys(v)) {
			w.keys++
			kp := strings.TrimPrefix(path+"."+key, ".")
			var next []any
			described := false
			for _, s := range w.expand(schemas) {
				if props, ok := s["properties"].(map[string]any); ok {
					if p, ok := props[key].(map[string]any); ok {
						next = append(next, p)
						described = described || w.hasDescription(p)
					}
				}
			}
			if next == nil {
				// A map's own keys (upstream names): only an explicit schema counts.
				for _, s := range w.expand(schemas) {
					if ap, ok := s["additionalProperties"].(map[string]any); ok {
						next = append(next, ap)
						described = true
					}
				}
			}
			if next == nil || !described {
				w.problems = append(w.problems, fmt.Sprintf("%s: no described property in the schema", kp))
				continue
			}
			w.walk(kp, next, v[key])
		}
	case []any:
		var items []any
		for _, s := range w.expand(schemas) {
			if it, ok := s["items"]; ok {
				items = append(items, it)
			}
		}
		for i, x := range v {
			w.walk(fmt.Sprintf("%s[%d]", path, i), items, x)
		}
	}
}

// TestSchemaPropertiesDescribed: every key the schema lists has a
// description for editors to show (the Go doc comment of its field).
func TestSchemaPropertiesDescribed(t *testing.T) {
	doc, _ := configSchema(t)
	w := &describer{defs: doc["$defs"].(map[string]any)}
	var missing []string
	check := func(where string, s map[string]any) {
		props, _ := s["properties"].(map[string]any)
		for key, p := range props {
			pm, ok := p.(map[string]any)
			if !ok || pm["const"] != nil {
				continue // false: a key refused in a branch; const: a condition
			}
			if !w.hasDescription(pm) {
				missing = append(missing, where+"."+key)
			}
		}
	}
	check("(root)", doc)
	for name, def := range doc["$defs"].(map[string]any) {
		check(name, def.(map[string]any))
	}
	slices.Sort(missing)
	if len(missing) > 0 {
		t.Fatalf("keys without a description (document their fields, then go generate ./proxy): %v", missing)
	}
}

// base is a small valid config the cases below change.
const schemaBase = `
upstreams:
  api:
    url: "http://127.0.0.1:1"
routes:
  r:
    path: "/r/{path:*}"
    upstream: api
`

// withBase returns the base config with s merged into it, s winning.
func withBase(s string) []byte {
	base, err := yaml.Parser().Unmarshal([]byte(schemaBase))
	if err != nil {
		panic(err)
	}
	over, err := yaml.Parser().Unmarshal([]byte(s))
	if err != nil {
		panic(fmt.Sprintf("case %q: %v", s, err))
	}
	b, err := yamlv3.Marshal(merge(base, over))
	if err != nil {
		panic(err)
	}
	return b
}

func merge(dst, src map[string]any) map[string]any {
	for k, v := range src {
		d, dok := dst[k].(map[string]any)
		s, sok := v.(map[string]any)
		if dok && sok {
			dst[k] = merge(d, s)
		} else {
			dst[k] = v
		}
	}
	return dst
}

// validSchemaCases are configs the loader accepts, written the ways it
// tolerates: the schema must accept them all.
func validSchemaCases(t *testing.T) map[string][]byte {
	secret := filepath.Join(t.TempDir(), "token")
	if err := os.WriteFile(secret, []byte("a-token-of-sixteen-chars-or-more\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	return map[string][]byte{
		"base":          withBase(""),
		"null sections": withBase("server:\nlog:\nadmin:\ncluster:\ncache:\nplugins:\nconsumers:\n"),
		"null values": withBase(`
server: {listen: , read_timeout: , max_request_body: , max_connections: }
log: {access_log: , level: }
`),
		"env references in every kind of value": withBase(`
server:
  listen: "${SCHEMA_TEST_LISTEN:-127.0.0.1:8080}"
  read_timeout: "${SCHEMA_TEST_RT:-5s}"
  max_request_body: "${SCHEMA_TEST_MRB:-1MiB}"
  max_connections: "${SCHEMA_TEST_MC:-100}"
log:
  level: "${SCHEMA_TEST_LEVEL:-debug}"
  access_log: "${SCHEMA_TEST_AL:-false}"
plugins:
  circuit_breaker: {failure_ratio: "${SCHEMA_TEST_FR:-0.5}"}
  cache: {query: "${SCHEMA_TEST_Q:-none}"}
`),
		"quoted numbers and booleans": withBase(`
server: {max_inflight: "10", max_connections: "+20"}
log: {access_log: "False"}
plugins:
  circuit_breaker: {failure_ratio: ".5", min_requests: "7"}
`),
		"numbers and booleans where strings go": withBase(`
plugins:
  headers: {request: {set: {X-Version: 2, X-Flag: true}}}
  retry: {on: [502, 503, timeout]}
  circuit_breaker: {failure_statuses: [503, "5xx"]}
`),
		"zero durations and byte counts": withBase(`
server: {max_request_body: 1048576, max_header_size: 2048}
upstreams:
  api2: {url: "http://127.0.0.1:2", timeout: 0, max_response_body: 1048576}
`),
		"sizes and durations with spaces and units": withBase(`
server: {max_request_body: " 10 mib ", read_timeout: "1m30s", max_body_memory: 1GB, idle_timeout: 1.5h}
`),
		"a single value or a comma list where a list goes": withBase(`
routes:
  one: {path: /one, upstream: api, methods: GET}
  two: {path: /two, upstream: api, methods: "GET, POST"}
plugins:
  retry: {on: 503}
`),
		"a single map where a list of maps goes": withBase(`
routes:
  c:
    path: "/v1/customers/{id}"
    upstream: api
    plugins:
      cache: {invalidate: {path: "/v1/customers/{id}", tags: ["customer:{id}"]}}
`),
		"nil plugin blocks": withBase(`
plugins: {normalize_errors: , retry: , circuit_breaker: {}}
`),
		"a disabled block's other keys are not checked": withBase(`
plugins: {retry: {}}
routes:
  off: {path: /off, upstream: api, plugins: {retry: {enabled: false, attempts: many, bogus: 1}}}
`),
		"every plugin at every level": withBase(`
consumers:
  billing: {keys: ["billing-key-0123456789"]}
plugins:
  normalize_errors: {message: /message, code: /code, keep_body: true, max_parse: 64KiB}
  authenticate: {consumers: [billing], anonymous: false}
upstreams:
  api3:
    url: "https://127.0.0.1:3"
    targets: []
    balance: least_inflight
    outlier: {enabled: false, consecutive_failures: 3, eject_for: 10s, max_eject_for: 1m}
    health_check: {path: /health, interval: 5s, timeout: 1s, healthy_statuses: [200, 3xx], unhealthy_after: 2, healthy_after: 1}
    tls: {server_name: api.example, insecure_skip_verify: true}
    plugins:
      rate_limit: {rate: 10, per: 1s, burst: 20, key: upstream, respect_upstream: true, mode: queue, max_wait: 1s}
      circuit_breaker: {consecutive_failures: 5, window: 10s, open_for: 30s, max_open_for: 5m, half_open_requests: 1}
routes:
  all:
    path: "/all/{id}"
    methods: [GET, POST]
    host: api.internal
    upstream: api3
    deadline: 30s
    strip_prefix: /all
    plugins:
      authenticate: {jwt: {secret: "a-jwt-secret-that-is-long-enough-0123456789", algorithms: [HS256], leeway: 5s}}
      rate_limit: {limits: [{rate: 5, key: consumer}, {rate: 0.5, per: 2s, key: "header:X-Tenant", name: tenant}]}
      headers: {response: {remove: Server, add: {X-Via: sluice}}}
      cache: {ttl: 60s, query: [page, per_page], partition: consumer, credential_headers: [Api-Key], tags: ["item:{id}"]}
      inject_auth: {type: header, name: X-Api-Key, keys: ["k1", "k2"]}
      retry: {attempts: 2, backoff: 50ms, methods: [GET], idempotency_key: generate, budget: 0.1}
  hook:
    path: /hook
    methods: POST
    upstream: api
    plugins:
      cache: {webhook: {secret: "webhook-secret-0123456789", scheme: timestamped, tolerance: 5m, tags: ["item:{/data/id}"]}}
`),
		"inject_auth types and overrides": withBase(`
consumers:
  billing: {keys: ["billing-key-0123456789"]}
  other: {keys: ["other-key-0123456789ab"]}
routes:
  bearer:
    path: /bearer
    upstream: api
    plugins:
      authenticate: {}
      inject_auth:
        type: bearer
        token: main-token
        consumers:
          billing: {token: billing-token}
          other: {type: basic, username: u, password: p}
  query: {path: /query, upstream: api, plugins: {inject_auth: {type: query, name: api_key, value: v}}}
  basic: {path: /basic, upstream: api, plugins: {inject_auth: {type: basic, username: 1234, password: "${SCHEMA_TEST_PW:-pw}"}}}
  oauth:
    path: /oauth
    upstream: api
    plugins:
      inject_auth: {type: oauth2_client_credentials, token_url: "http://127.0.0.1:4/token", client_id: app, client_secret: s, scopes: "read, write", auth_style: body, refresh_before: 30s}
  hmac:
    path: /hmac
    upstream: api
    plugins:
      inject_auth: {type: hmac, secret: s, algorithm: sha512, header: X-Sig, sign: [method, path, body], encoding: base64, prefix: "sha512="}
`),
		"secrets from files": withBase(fmt.Sprintf(`
admin: {token: "file:%s"}
`, secret)),
		"admin listener off": withBase(`
admin: {listen: ""}
`),
	}
}

func TestSchemaAcceptsWhatTheLoaderAccepts(t *testing.T) {
	_, sch := configSchema(t)
	cases := validSchemaCases(t)
	for _, name := range slices.Sorted(maps.Keys(cases)) {
		doc := cases[name]
		if err := loaderErr(doc); err != nil {
			t.Errorf("%s: the loader refuses it, fix the case: %v", name, err)
			continue
		}
		if err := sch.Validate(instance(t, doc)); err != nil {
			t.Errorf("%s: the schema refuses a config the loader accepts: %v", name, err)
		}
	}
}

// invalidSchemaCases are configs the loader refuses, with a word of its
// message: the schema must refuse them too.
var invalidSchemaCases = []struct {
	name, doc, loaderSays string
}{
	{"unknown top-level key", "servre: {}\n", "servre: unknown key"},
	{"unknown key in server", "server: {listn: \":1\"}\n", "server.listn: unknown key"},
	{"unknown key in an upstream", "upstreams: {api: {url: \"http://127.0.0.1:1\", timout: 1s}}\n", "upstreams.api.timout: unknown key"},
	{"unknown key in a route", "routes: {r: {path: /r, upstream: api, strip: /r}}\n", "routes.r.strip: unknown key"},
	{"unknown key in a top-level plugin block", "plugins: {retry: {attempt: 2}}\n", "plugins.retry.attempt: unknown key"},
	{"unknown key in an upstream's plugin block", "upstreams: {api: {url: \"http://127.0.0.1:1\", plugins: {circuit_breaker: {open: 1s}}}}\n", "upstreams.api.plugins.circuit_breaker.open: unknown key"},
	{"unknown key in a route's plugin block", "routes: {r: {path: /r, upstream: api, plugins: {cache: {ttll: 1s}}}}\n", "routes.r.plugins.cache.ttll: unknown key"},
	{"unknown key deep in a plugin block", "plugins: {headers: {request: {sett: {A: b}}}}\n", "plugins.headers.request.sett: unknown key"},
	{"unknown key inside cache:", "cache: {max_sise: 1MiB}\n", "cache.max_sise: unknown key"},
	{"unknown key in cluster.redis", "cluster: {redis: {addr: \"127.0.0.1:1\", database: 1}}\n", "cluster.redis.database: unknown key"},
	{"unknown plugin", "plugins: {retyr: {}}\n", `unknown plugin "retyr"`},
	{"unknown plugin on a route", "routes: {r: {path: /r, upstream: api, plugins: {cahce: {}}}}\n", `unknown plugin "cahce"`},
	{"key of another inject_auth type", "plugins: {inject_auth: {type: bearer, token: t, name: X-Key}}\n", "does not apply to type bearer"},
	{"key of another type in an override", "consumers: {billing: {keys: [\"billing-key-0123456789\"]}}\nplugins: {inject_auth: {type: bearer, token: t, consumers: {billing: {value: v}}}}\n", "does not apply to type bearer"},
	{"unknown key in inject_auth", "plugins: {inject_auth: {type: bearer, tokn: t}}\n", "tokn: unknown key"},
	{"listen is not an address", "server: {listen: 5}\n", "server.listen"},
	{"duration in words", "server: {read_timeout: ten seconds}\n", "server.read_timeout"},
	{"duration without a unit", "server: {read_timeout: 10}\n", "missing unit"},
	{"negative duration", "plugins: {retry: {backoff: -1s}}\n", "must not be negative"},
	{"size in words", "server: {max_request_body: ten megs}\n", "server.max_request_body"},
	{"integer in words", "server: {max_connections: many}\n", "server.max_connections"},
	{"enabled is not a boolean", "plugins: {retry: {enabled: \"yes\"}}\n", "plugins.retry.enabled"},
	{"unknown log level", "log: {level: verbose}\n", "log.level"},
	{"unknown balance mode", "upstreams: {api: {url: \"http://127.0.0.1:1\", balance: random}}\n", "upstreams.api.balance"},
	{"unknown cache query mode", "plugins: {cache: {query: some}}\n", "plugins.cache.query"},
	{"secret file with a relative path", "admin: {token: \"file:run/secrets/token\"}\n", "admin.token"},
	{"a plugin block that is not a map", "plugins: {retry: 3}\n", "plugins.retry"},
	{"a section that is not a map", "cache: 64MiB\n", "cache"},
}

func TestSchemaRefusesWhatTheLoaderRefuses(t *testing.T) {
	_, sch := configSchema(t)
	for _, c := range invalidSchemaCases {
		doc := withBase(c.doc)
		err := loaderErr(doc)
		if err == nil || !strings.Contains(err.Error(), c.loaderSays) {
			t.Errorf("%s: the loader says %v, want a problem with %q: fix the case", c.name, err, c.loaderSays)
			continue
		}
		if sch.Validate(instance(t, doc)) == nil {
			t.Errorf("%s: the schema accepts a config the loader refuses (%v)", c.name, err)
		}
	}
}

// TestSchemaAgreesOnTestConfigs takes the YAML configs written in the
// repository's own tests (Go string literals with upstreams: or routes:),
// and checks that the schema accepts each one the loader and the plugins
// accept, and refuses each one the loader refuses for an unknown key.
func TestSchemaAgreesOnTestConfigs(t *testing.T) {
	_, sch := configSchema(t)
	var files []string
	for _, pattern := range []string{"*_test.go", "../plugins/*/*_test.go", "../proxy/config/*_test.go", "../cmd/sluice/*_test.go", "../internal/testkit/*/*_test.go"} {
		m, err := filepath.Glob(pattern)
		if err != nil {
			t.Fatal(err)
		}
		files = append(files, m...)
	}
	fset := token.NewFileSet()
	var accepted, refused, skipped int
	for _, name := range files {
		f, err := parser.ParseFile(fset, name, nil, 0)
		if err != nil {
			t.Fatal(err)
		}
		ast.Inspect(f, func(n ast.Node) bool {
			lit, ok := n.(*ast.BasicLit)
			if !ok || lit.Kind != token.STRING {
				return true
			}
			s, err := strconv.Unquote(lit.Value)
			if err != nil || !(strings.Contains(s, "upstreams:") || strings.Contains(s, "routes:")) || strings.Contains(s, "%") {
				return true
			}
			where := fset.Position(lit.Pos()).String()
			doc := []byte(s)
			if _, err := yaml.Parser().Unmarshal(doc); err != nil {
				skipped++ // a fragment, not a document
				return true
			}
			lerr := loaderErr(doc)
			serr := sch.Validate(instance(t, doc))
			switch {
			case lerr == nil:
				accepted++
				if serr != nil {
					t.Errorf("%s: the schema refuses a config the loader accepts: %v", where, serr)
				}
			case strings.Contains(lerr.Error(), "unknown key") || strings.Contains(lerr.Error(), "unknown plugin"):
				refused++
				if serr == nil {
					t.Errorf("%s: the schema accepts a config the loader refuses: %v", where, lerr)
				}
			default:
				skipped++ // refused for a reason a schema cannot see (a missing upstream...)
			}
			return true
		})
	}
	t.Logf("test configs: %d accepted by both, %d refused by both for an unknown key, %d other", accepted, refused, skipped)
	if accepted < 20 || refused < 3 {
		t.Fatalf("too few test configs found (%d accepted, %d refused): did the tests move?", accepted, refused)
	}
}
