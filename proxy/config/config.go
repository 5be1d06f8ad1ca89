package config

import (
	"fmt"
	"net"
	"net/url"
	"os"
	"reflect"
	"regexp"
	"slices"
	"strings"
	"time"

	"github.com/sluice-gw/sluice/proxy/httpx"
)

// Config is the whole gateway configuration (schema v1, see docs/configuration.md). It is
// produced by Load, which applies defaults, environment overrides and ${VAR}
// expansion, decodes strictly and validates. Plugin blocks stay raw maps here;
// each plugin decodes its own block when the pipeline is compiled.
type Config struct {
	Server    ServerConfig              `koanf:"server" json:"server"`
	Log       LogConfig                 `koanf:"log" json:"log"`
	Admin     AdminConfig               `koanf:"admin" json:"admin"`
	Cluster   ClusterConfig             `koanf:"cluster" json:"cluster"`
	Consumers map[string]ConsumerConfig `koanf:"consumers" json:"consumers,omitempty"`
	Plugins   PluginBlocks              `koanf:"plugins" json:"-"`
	Upstreams map[string]UpstreamConfig `koanf:"upstreams" json:"upstreams"`
	Routes    map[string]RouteConfig    `koanf:"routes" json:"routes"`
	// Sections holds the other top-level sections, raw: each belongs to a
	// plugin (cache: belongs to the cache plugin), which decodes and checks
	// it when the pipeline is compiled. A key no plugin owns is an error then.
	Sections map[string]any `koanf:",remain" json:"-"`

	fromEnv []envValue // values taken from the environment by ${VAR} (see Redact)
}

// Redact replaces, in s, every value the config took from the environment by
// ${VAR} with "${VAR}". /admin/config passes its output through it: whatever
// a plugin shows of its settings, a secret that came from the environment
// reads as the name of its variable.
func (c *Config) Redact(s string) string {
	for _, ev := range c.fromEnv {
		if len(ev.value) >= 4 { // shorter values would blot out ordinary text
			s = strings.ReplaceAll(s, ev.value, "${"+ev.name+"}")
		}
	}
	return redactSecretFiles(s)
}

// TopLevelKeys lists the sections the gateway itself owns.
func TopLevelKeys() []string {
	t := reflect.TypeFor[Config]()
	var keys []string
	for i := range t.NumField() {
		if name := tagName(t.Field(i)); name != "" {
			keys = append(keys, name)
		}
	}
	return keys
}

// PluginBlocks maps a plugin name to its raw YAML block. A nil block (written as
// "name:" or "name: {}") enables the plugin with its defaults.
type PluginBlocks map[string]map[string]any

// ServerConfig configures the proxy listener.
type ServerConfig struct {
	// Listen is the TCP address of the proxy listener. Default "127.0.0.1:8080".
	Listen string `koanf:"listen" json:"listen"`
	// ReadTimeout bounds reading one request (headers and body). Default 10s.
	ReadTimeout Duration `koanf:"read_timeout" json:"read_timeout"`
	// WriteTimeout bounds writing one response to the caller. Default 10s.
	WriteTimeout Duration `koanf:"write_timeout" json:"write_timeout"`
	// IdleTimeout is how long a keep-alive connection from a caller may stay idle. Default 60s.
	IdleTimeout Duration `koanf:"idle_timeout" json:"idle_timeout"`
	// MaxRequestBody is the largest request body accepted (413 above). Default 10MiB.
	MaxRequestBody Size `koanf:"max_request_body" json:"max_request_body"`
	// MaxHeaderSize is the largest request head (request line and headers)
	// accepted (431 above). Default 16KiB.
	MaxHeaderSize Size `koanf:"max_header_size" json:"max_header_size"`
	// MaxConnections caps concurrent caller connections. 0 (default) means 262144.
	MaxConnections int `koanf:"max_connections" json:"max_connections"`
	// MaxInflight caps requests being served at once; above it callers get
	// 503 overloaded with Retry-After. 0 (default) means no cap.
	MaxInflight int `koanf:"max_inflight" json:"max_inflight"`
	// DrainTimeout bounds how long SIGTERM/SIGINT waits for in-flight requests
	// before exiting. Default 15s.
	DrainTimeout Duration `koanf:"drain_timeout" json:"drain_timeout"`
	// MaxBodyMemory is the process-wide budget for request and response
	// bodies held in memory at once. A call whose body would take the gateway
	// over it gets 503 overloaded instead. Default 512MiB; it must be at
	// least every upstream's max_response_body.
	MaxBodyMemory Size `koanf:"max_body_memory" json:"max_body_memory"`
}

// LogConfig configures logging (log/slog).
type LogConfig struct {
	// Level is debug, info (default), warn or error.
	Level string `koanf:"level" json:"level"`
	// Format is json (default) or text.
	Format string `koanf:"format" json:"format"`
	// AccessLog writes one line per request. Default true.
	AccessLog bool `koanf:"access_log" json:"access_log"`
}

// AdminConfig configures the admin listener (/metrics, /healthz, /readyz, /admin/...).
type AdminConfig struct {
	// Listen is the admin address. Default "127.0.0.1:9090". Empty disables the admin listener.
	Listen string `koanf:"listen" json:"listen"`
	// Token is the bearer token every admin call but /metrics, /healthz and
	// /readyz needs; at least MinAdminTokenLen characters. Empty: mutating
	// calls are refused and the reading ones (/admin/config, /admin/upstreams,
	// plugin status, pprof) are served on loopback connections only.
	Token Secret `koanf:"token" json:"token"`
	// Pprof serves Go's profiler under /debug/pprof/ (CPU, heap, goroutines).
	// Default false. Profiles show no request data, but keep the admin
	// listener private when it is on.
	Pprof bool `koanf:"pprof" json:"pprof"`
}

// ClusterConfig makes several gateways share state. Absent (the default), a
// gateway keeps all its state in-process.
type ClusterConfig struct {
	// Redis is the server the gateways share; nil means single-node mode.
	Redis *RedisConfig `koanf:"redis" json:"redis,omitempty"`
}

// RedisConfig is the Redis server of cluster mode.
type RedisConfig struct {
	// Addr is host:port, e.g. "127.0.0.1:6379".
	Addr string `koanf:"addr" json:"addr"`
	// Password for AUTH; empty for none.
	Password Secret `koanf:"password" json:"password"`
	// DB is the database number. Default 0.
	DB int `koanf:"db" json:"db"`
	// KeyPrefix starts every key and channel name Sluice uses, so that
	// several clusters (or other software) can share one Redis. Default "sluice:".
	KeyPrefix string `koanf:"key_prefix" json:"key_prefix"`
	// DialTimeout bounds connecting; ReadTimeout and WriteTimeout bound one
	// command. A slow Redis must not stall requests: defaults 200ms, 100ms, 100ms.
	DialTimeout  Duration `koanf:"dial_timeout" json:"dial_timeout"`
	ReadTimeout  Duration `koanf:"read_timeout" json:"read_timeout"`
	WriteTimeout Duration `koanf:"write_timeout" json:"write_timeout"`
	// PoolSize caps open connections. Default 10 per CPU.
	PoolSize int `koanf:"pool_size" json:"pool_size,omitempty"`
}

// ConsumerConfig is one caller of the gateway (a backend service), known by
// its API keys. The authenticate plugin looks callers up by key.
type ConsumerConfig struct {
	// Keys are the consumer's API keys (several, so that a key can be rotated
	// without downtime). Each is at least MinConsumerKeyLen characters and
	// belongs to one consumer only. Use "${VAR}" or "file:/path" values.
	Keys []Secret `koanf:"keys" json:"keys"`
}

// MinConsumerKeyLen is the shortest consumer key accepted: a shorter key is
// guessable, so it is a config error rather than a warning nobody reads.
const MinConsumerKeyLen = 16

// MinAdminTokenLen is the shortest admin token accepted, as for consumer keys:
// "change-me" is a config error, not a guessable password.
const MinAdminTokenLen = 16

// AnonymousConsumer is the consumer name given to unauthenticated callers on
// routes with authenticate {anonymous: true}; no consumer may be named so.
const AnonymousConsumer = "anonymous"

// UpstreamConfig is one provider API.
type UpstreamConfig struct {
	// URL is the provider's base URL (http or https), e.g. "https://api.github.com".
	// A path in it is prepended to every forwarded path. Exactly one of URL and Targets.
	URL string `koanf:"url" json:"url,omitempty"`
	// Targets are several base URLs, load balanced (see Balance).
	Targets []string `koanf:"targets" json:"targets,omitempty"`
	// Balance is how an attempt picks a target: round_robin (default) or
	// least_inflight (the target with the fewest requests in flight).
	// Retries go to a different target than the attempt before when there
	// are several.
	Balance string `koanf:"balance" json:"balance,omitempty"`
	// Outlier ejects, for a while, a target that fails repeatedly (passive
	// health). It acts only when there are several targets.
	Outlier OutlierConfig `koanf:"outlier" json:"outlier"`
	// HealthCheck probes every target in the background (active health);
	// nil (default) means no probes.
	HealthCheck *HealthCheckConfig `koanf:"health_check" json:"health_check,omitempty"`
	// Timeout bounds one attempt: sending the request and reading the whole response. Default 30s.
	Timeout Duration `koanf:"timeout" json:"timeout"`
	// Deadline bounds a whole call to this upstream: every attempt and the
	// waits between them (retries, queueing for a rate limit, waiting for a
	// collapsed cache fill). Default twice Timeout. A route's deadline wins.
	Deadline Duration `koanf:"deadline" json:"deadline"`
	// ConnectTimeout bounds establishing a TCP (and TLS) connection. Default 5s.
	ConnectTimeout Duration `koanf:"connect_timeout" json:"connect_timeout"`
	// MaxConns caps open connections per target. Default 512.
	MaxConns int `koanf:"max_conns" json:"max_conns"`
	// IdleConnTimeout closes pooled keep-alive connections idle for longer. Default 10s.
	IdleConnTimeout Duration `koanf:"idle_conn_timeout" json:"idle_conn_timeout"`
	// MaxResponseBody is the largest upstream response body read (502 above). Default 64MiB.
	MaxResponseBody Size `koanf:"max_response_body" json:"max_response_body"`
	// TLS configures https targets.
	TLS TLSConfig `koanf:"tls" json:"tls"`
	// Plugins apply to every route of this upstream; a route's own block for
	// the same plugin replaces this one.
	Plugins PluginBlocks `koanf:"plugins" json:"-"`
}

// OutlierConfig is passive health: targets that fail in a row are taken out
// of the rotation for a while. A failure is a 5xx answer, a timeout or a
// connection error; any other answer resets the count.
type OutlierConfig struct {
	// Enabled switches ejection on or off. Default true (it only acts on
	// upstreams with several targets).
	Enabled *bool `koanf:"enabled" json:"enabled,omitempty"`
	// ConsecutiveFailures ejects a target after that many failures in a row. Default 5.
	ConsecutiveFailures int `koanf:"consecutive_failures" json:"consecutive_failures"`
	// EjectFor is how long the first ejection lasts; each ejection that
	// follows a failure right after the target came back doubles it. Default 30s.
	EjectFor Duration `koanf:"eject_for" json:"eject_for"`
	// MaxEjectFor caps the doubling. Default 5m.
	MaxEjectFor Duration `koanf:"max_eject_for" json:"max_eject_for"`
}

// On reports whether ejection is switched on.
func (o *OutlierConfig) On() bool { return o.Enabled == nil || *o.Enabled }

// HealthCheckConfig is active health: a GET of Path on every target every
// Interval. A target that fails UnhealthyAfter checks in a row is taken out
// of the rotation until it passes HealthyAfter checks in a row; a passing
// check also ends a passive ejection early.
type HealthCheckConfig struct {
	// Path is requested on each target (after the target URL's own path), e.g. "/health". Required.
	Path string `koanf:"path" json:"path"`
	// Interval between two checks of one target. Default 10s.
	Interval Duration `koanf:"interval" json:"interval"`
	// Timeout bounds one check. Default 2s (and at most Interval).
	Timeout Duration `koanf:"timeout" json:"timeout"`
	// HealthyStatuses are the answers that pass, as codes (200) or classes
	// ("2xx"). Default ["2xx", "3xx"].
	HealthyStatuses []string `koanf:"healthy_statuses" json:"healthy_statuses"`
	// UnhealthyAfter failed checks in a row mark a target down. Default 2.
	UnhealthyAfter int `koanf:"unhealthy_after" json:"unhealthy_after"`
	// HealthyAfter passed checks in a row bring a down target back. Default 1.
	HealthyAfter int `koanf:"healthy_after" json:"healthy_after"`
}

// TLSConfig configures TLS to an upstream.
type TLSConfig struct {
	// CAFile is a PEM bundle of the CAs trusted for this upstream instead of
	// the system roots. Default: the system roots.
	CAFile string `koanf:"ca_file" json:"ca_file,omitempty"`
	// ServerName overrides the name verified in the certificate (and sent as SNI).
	ServerName string `koanf:"server_name" json:"server_name,omitempty"`
	// InsecureSkipVerify turns certificate verification off. For tests only.
	InsecureSkipVerify bool `koanf:"insecure_skip_verify" json:"insecure_skip_verify,omitempty"`
	// CertFile and KeyFile are a client certificate for providers that require mutual TLS.
	CertFile string `koanf:"cert_file" json:"cert_file,omitempty"`
	KeyFile  string `koanf:"key_file" json:"key_file,omitempty"`
}

// RouteConfig maps caller requests to an upstream.
type RouteConfig struct {
	// Path is a fasthttp/router pattern: "/github/{path:*}", "/v1/users/{id}".
	Path string `koanf:"path" json:"path"`
	// Methods the route accepts. Empty means any method, including unusual ones.
	Methods []string `koanf:"methods" json:"methods,omitempty"`
	// Host restricts the route to requests whose Host header (without port)
	// equals it, case-insensitively. Empty matches any host.
	Host string `koanf:"host" json:"host,omitempty"`
	// Upstream names the upstream that serves the route.
	Upstream string `koanf:"upstream" json:"upstream"`
	// Deadline bounds the whole call, as the upstream's deadline does, for
	// this route. Default: the upstream's.
	Deadline Duration `koanf:"deadline" json:"deadline,omitempty"`
	// StripPrefix is removed from the start of the request path before it is
	// appended to the upstream's base path.
	StripPrefix string `koanf:"strip_prefix" json:"strip_prefix,omitempty"`
	// Plugins for this route; each block replaces the upstream's and the
	// top-level block of the same plugin. {enabled: false} switches one off.
	Plugins PluginBlocks `koanf:"plugins" json:"-"`
}

// DefaultConfig returns a Config holding every default. Load decodes the file
// on top of it.
func DefaultConfig() *Config {
	return &Config{
		Server: ServerConfig{
			Listen:         "127.0.0.1:8080",
			ReadTimeout:    Duration(10 * time.Second),
			WriteTimeout:   Duration(10 * time.Second),
			IdleTimeout:    Duration(60 * time.Second),
			MaxRequestBody: 10 << 20,
			MaxHeaderSize:  16 << 10,
			DrainTimeout:   Duration(15 * time.Second),
			MaxBodyMemory:  512 << 20,
		},
		Log:   LogConfig{Level: "info", Format: "json", AccessLog: true},
		Admin: AdminConfig{Listen: "127.0.0.1:9090"},
	}
}

// upstreamDefaults fills the zero fields of an upstream with defaults. Applied
// after decoding because upstreams live in a map.
func (u *UpstreamConfig) applyDefaults() {
	if u.Timeout == 0 {
		u.Timeout = Duration(30 * time.Second)
	}
	if u.Deadline == 0 {
		u.Deadline = 2 * u.Timeout
	}
	if u.ConnectTimeout == 0 {
		u.ConnectTimeout = Duration(5 * time.Second)
	}
	if u.MaxConns == 0 {
		u.MaxConns = 512
	}
	if u.IdleConnTimeout == 0 {
		u.IdleConnTimeout = Duration(10 * time.Second)
	}
	if u.MaxResponseBody == 0 {
		u.MaxResponseBody = 64 << 20
	}
	if u.Balance == "" {
		u.Balance = BalanceRoundRobin
	}
	o := &u.Outlier
	if o.ConsecutiveFailures == 0 {
		o.ConsecutiveFailures = 5
	}
	if o.EjectFor == 0 {
		o.EjectFor = Duration(30 * time.Second)
	}
	if o.MaxEjectFor == 0 {
		o.MaxEjectFor = max(Duration(5*time.Minute), o.EjectFor)
	}
	if h := u.HealthCheck; h != nil {
		if h.Interval == 0 {
			h.Interval = Duration(10 * time.Second)
		}
		if h.Timeout == 0 {
			h.Timeout = min(Duration(2*time.Second), h.Interval)
		}
		if h.HealthyStatuses == nil {
			h.HealthyStatuses = []string{"2xx", "3xx"}
		}
		if h.UnhealthyAfter == 0 {
			h.UnhealthyAfter = 2
		}
		if h.HealthyAfter == 0 {
			h.HealthyAfter = 1
		}
	}
}

// Balance modes (UpstreamConfig.Balance).
const (
	BalanceRoundRobin    = "round_robin"
	BalanceLeastInflight = "least_inflight"
)

var nameRE = regexp.MustCompile(`^[a-z0-9][a-z0-9_-]*$`)

// validate checks everything that can be checked without building the
// pipeline (plugins are checked when compiled). Problems are recorded in p.
func (c *Config) validate(p *Problems) {
	s := &c.Server
	if _, _, err := net.SplitHostPort(s.Listen); err != nil {
		p.Addf("server.listen", "invalid address %q: want host:port, e.g. \"127.0.0.1:8080\"", s.Listen)
	}
	for _, d := range []struct {
		key string
		v   Duration
	}{{"server.read_timeout", s.ReadTimeout}, {"server.write_timeout", s.WriteTimeout}, {"server.idle_timeout", s.IdleTimeout}, {"server.drain_timeout", s.DrainTimeout}} {
		if d.v <= 0 {
			p.Addf(d.key, "must be a positive duration, got %s", d.v)
		}
	}
	if s.MaxRequestBody <= 0 {
		p.Add("server.max_request_body", "must be positive")
	}
	if s.MaxHeaderSize < 1024 {
		p.Addf("server.max_header_size", "must be at least 1KiB, got %s", s.MaxHeaderSize)
	}
	if s.MaxConnections < 0 {
		p.Add("server.max_connections", "must not be negative")
	}
	if s.MaxInflight < 0 {
		p.Add("server.max_inflight", "must not be negative")
	}
	if s.MaxBodyMemory < s.MaxRequestBody {
		p.Addf("server.max_body_memory", "must be at least server.max_request_body (%s), got %s", s.MaxRequestBody, s.MaxBodyMemory)
	}

	switch c.Log.Level {
	case "debug", "info", "warn", "error":
	default:
		p.Addf("log.level", "unknown level %q: want debug, info, warn or error", c.Log.Level)
	}
	switch c.Log.Format {
	case "json", "text":
	default:
		p.Addf("log.format", "unknown format %q: want json or text", c.Log.Format)
	}

	if c.Admin.Listen != "" {
		if _, _, err := net.SplitHostPort(c.Admin.Listen); err != nil {
			p.Addf("admin.listen", "invalid address %q: want host:port", c.Admin.Listen)
		} else if c.Admin.Listen == s.Listen {
			p.Add("admin.listen", "must differ from server.listen")
		}
	}
	if t := c.Admin.Token; t.IsSet() && len(t.Reveal()) < MinAdminTokenLen {
		p.Addf("admin.token", "must be at least %d characters, got %d", MinAdminTokenLen, len(t.Reveal()))
	}

	if r := c.Cluster.Redis; r != nil {
		r.validate("cluster.redis", p)
	}
	c.validateConsumers(p)

	for _, name := range sortedKeys(c.Upstreams) {
		u := c.Upstreams[name]
		u.validate("upstreams."+name, p)
		if u.MaxResponseBody > s.MaxBodyMemory {
			p.Addf("upstreams."+name+".max_response_body", "%s is more than server.max_body_memory (%s): such an answer could never be read",
				u.MaxResponseBody, s.MaxBodyMemory)
		}
		if !nameRE.MatchString(name) {
			p.Addf("upstreams."+name, "invalid name: use lower-case letters, digits, '-' and '_' (names become metric labels)")
		}
	}
	for _, name := range sortedKeys(c.Routes) {
		r := c.Routes[name]
		key := "routes." + name
		if !nameRE.MatchString(name) {
			p.Addf(key, "invalid name: use lower-case letters, digits, '-' and '_' (names become metric labels)")
		}
		r.validate(key, c.Upstreams, p)
	}
}

func (c *Config) validateConsumers(p *Problems) {
	owner := map[Secret]string{} // key -> "consumers.NAME.keys[i]"
	for _, name := range sortedKeys(c.Consumers) {
		key := "consumers." + name
		switch {
		case !nameRE.MatchString(name):
			p.Addf(key, "invalid name: use lower-case letters, digits, '-' and '_' (names become metric labels)")
		case name == AnonymousConsumer:
			p.Addf(key, "the name %q is reserved for unauthenticated callers (authenticate {anonymous: true})", name)
		}
		keys := c.Consumers[name].Keys
		if len(keys) == 0 {
			p.Add(key+".keys", "needs at least one key")
		}
		for i, k := range keys {
			kp := fmt.Sprintf("%s.keys[%d]", key, i)
			switch {
			case !k.IsSet():
				p.Add(kp, "is empty (is its ${VAR} or file: source empty?)")
				continue
			case len(k.Reveal()) < MinConsumerKeyLen:
				p.Addf(kp, "is %d characters long: use at least %d (a short key can be guessed)", len(k.Reveal()), MinConsumerKeyLen)
				continue
			case strings.ContainsAny(k.Reveal(), " \t\r\n,"):
				p.Add(kp, "must not contain spaces, commas or line breaks (it travels in a header)")
				continue
			}
			if other, dup := owner[k]; dup {
				p.Addf(kp, "the same key is also %s: a key must identify one consumer", other)
				continue
			}
			owner[k] = kp
		}
	}
}

func (u *UpstreamConfig) validate(key string, p *Problems) {
	switch {
	case u.URL == "" && len(u.Targets) == 0:
		p.Add(key, "needs url or targets")
	case u.URL != "" && len(u.Targets) > 0:
		p.Add(key, "set url or targets, not both")
	case u.URL != "":
		if err := CheckUpstreamURL(u.URL); err != nil {
			p.Addf(key+".url", "%v", err)
		}
	default:
		for i, t := range u.Targets {
			if err := CheckUpstreamURL(t); err != nil {
				p.Addf(fmt.Sprintf("%s.targets[%d]", key, i), "%v", err)
			}
		}
	}
	if u.Timeout < 0 {
		p.Add(key+".timeout", "must not be negative")
	}
	if u.Deadline < 0 {
		p.Add(key+".deadline", "must not be negative")
	} else if u.Deadline > 0 && u.Deadline < u.Timeout {
		p.Addf(key+".deadline", "%s is shorter than timeout %s: an attempt could never use its whole timeout", u.Deadline, u.Timeout)
	}
	if u.ConnectTimeout < 0 {
		p.Add(key+".connect_timeout", "must not be negative")
	}
	if u.IdleConnTimeout < 0 {
		p.Add(key+".idle_conn_timeout", "must not be negative")
	}
	if u.MaxConns < 0 {
		p.Add(key+".max_conns", "must not be negative")
	}
	if u.MaxResponseBody < 0 {
		p.Add(key+".max_response_body", "must not be negative")
	}
	if (u.TLS.CertFile == "") != (u.TLS.KeyFile == "") {
		p.Add(key+".tls", "cert_file and key_file go together")
	}
	switch u.Balance {
	case BalanceRoundRobin, BalanceLeastInflight:
	default:
		p.Addf(key+".balance", "unknown mode %q: want round_robin or least_inflight", u.Balance)
	}
	o := &u.Outlier
	if o.ConsecutiveFailures < 1 {
		p.Add(key+".outlier.consecutive_failures", "must be at least 1 (use outlier.enabled: false to switch ejection off)")
	}
	if o.EjectFor < 0 {
		p.Add(key+".outlier.eject_for", "must be a positive duration")
	}
	if o.MaxEjectFor < o.EjectFor {
		p.Addf(key+".outlier.max_eject_for", "%s is shorter than eject_for %s", o.MaxEjectFor, o.EjectFor)
	}
	if h := u.HealthCheck; h != nil {
		hk := key + ".health_check"
		if h.Path == "" || h.Path[0] != '/' || strings.ContainsAny(h.Path, " \r\n#") {
			p.Addf(hk+".path", "want an absolute path such as \"/health\", got %q", h.Path)
		}
		if h.Interval <= 0 {
			p.Add(hk+".interval", "must be a positive duration")
		}
		if h.Timeout <= 0 {
			p.Add(hk+".timeout", "must be a positive duration")
		} else if h.Timeout > h.Interval {
			p.Addf(hk+".timeout", "%s is longer than interval %s", h.Timeout, h.Interval)
		}
		if len(h.HealthyStatuses) == 0 {
			p.Add(hk+".healthy_statuses", "must list at least one status")
		}
		for i, st := range h.HealthyStatuses {
			if _, _, err := httpx.ParseStatusSpec(st); err != nil {
				p.Addf(fmt.Sprintf("%s.healthy_statuses[%d]", hk, i), "%v", err)
			}
		}
		if h.UnhealthyAfter < 1 {
			p.Add(hk+".unhealthy_after", "must be at least 1")
		}
		if h.HealthyAfter < 1 {
			p.Add(hk+".healthy_after", "must be at least 1")
		}
	}
}

func (r *RedisConfig) applyDefaults() {
	if r.KeyPrefix == "" {
		r.KeyPrefix = "sluice:"
	}
	if r.DialTimeout == 0 {
		r.DialTimeout = Duration(200 * time.Millisecond)
	}
	if r.ReadTimeout == 0 {
		r.ReadTimeout = Duration(100 * time.Millisecond)
	}
	if r.WriteTimeout == 0 {
		r.WriteTimeout = Duration(100 * time.Millisecond)
	}
}

func (r *RedisConfig) validate(key string, p *Problems) {
	if r.Addr == "" {
		p.Add(key+".addr", "is required (host:port) when cluster.redis is set")
	} else if _, _, err := net.SplitHostPort(r.Addr); err != nil {
		p.Addf(key+".addr", "invalid address %q: want host:port, e.g. \"127.0.0.1:6379\"", r.Addr)
	}
	if r.DB < 0 || r.DB > 15 {
		p.Addf(key+".db", "must be between 0 and 15, got %d", r.DB)
	}
	for _, d := range []struct {
		k string
		v Duration
	}{{"dial_timeout", r.DialTimeout}, {"read_timeout", r.ReadTimeout}, {"write_timeout", r.WriteTimeout}} {
		if d.v < 0 {
			p.Add(key+"."+d.k, "must not be negative")
		}
	}
	if r.PoolSize < 0 {
		p.Add(key+".pool_size", "must not be negative")
	}
}

// UnwrapPathErr returns the cause of a file error without the path (the key
// that names the file is shown instead).
func UnwrapPathErr(err error) error {
	if pe, ok := err.(*os.PathError); ok {
		return pe.Err
	}
	return err
}

// CheckUpstreamURL accepts http(s)://host[:port][/base/path] and nothing
// else. Its messages show the URL with any credentials masked.
func CheckUpstreamURL(raw string) error {
	if err := CheckHTTPURL(raw); err != nil {
		return err
	}
	if u, _ := url.Parse(raw); u.RawQuery != "" || u.Fragment != "" {
		return fmt.Errorf("invalid URL %q: no query or fragment allowed", raw)
	}
	return nil
}

// CheckHTTPURL accepts an absolute http(s) URL with a host and without
// credentials (URLs are logged and shown: credentials belong in secrets).
// Plugins check the URLs they call (token endpoints, key sets) with it. Its
// messages show the URL with any credentials masked.
func CheckHTTPURL(raw string) error {
	shown := maskUserinfo(raw)
	u, err := url.Parse(raw)
	if err != nil {
		return fmt.Errorf("invalid URL %q: cannot parse it", shown)
	}
	if u.User != nil {
		return fmt.Errorf("invalid URL %q: credentials in the URL are not allowed (URLs are logged and shown)", shown)
	}
	if u.Scheme != "http" && u.Scheme != "https" {
		return fmt.Errorf("invalid URL %q: scheme must be http or https", shown)
	}
	if u.Host == "" || u.Hostname() == "" {
		return fmt.Errorf("invalid URL %q: no host", shown)
	}
	if port := u.Port(); port != "" {
		if _, err := net.LookupPort("tcp", port); err != nil {
			return fmt.Errorf("invalid URL %q: bad port %q", shown, port)
		}
	}
	return nil
}

// maskUserinfo replaces "user:password@" after the scheme with
// "[redacted]@", without needing the URL to parse.
func maskUserinfo(raw string) string {
	rest, scheme := raw, ""
	if i := strings.Index(raw, "://"); i >= 0 {
		scheme, rest = raw[:i+3], raw[i+3:]
	}
	end := len(rest)
	if i := strings.IndexAny(rest, "/?#"); i >= 0 {
		end = i
	}
	if at := strings.LastIndexByte(rest[:end], '@'); at >= 0 {
		return scheme + redacted + rest[at:]
	}
	return raw
}

func (r *RouteConfig) validate(key string, ups map[string]UpstreamConfig, p *Problems) {
	switch {
	case r.Path == "":
		p.Add(key+".path", "is required")
	case !strings.HasPrefix(r.Path, "/"):
		p.Addf(key+".path", "%q must start with '/'", r.Path)
	case !balancedBraces(r.Path):
		p.Addf(key+".path", "%q has unbalanced '{' '}'", r.Path)
	}
	if r.Upstream == "" {
		p.Add(key+".upstream", "is required")
	} else if _, ok := ups[r.Upstream]; !ok {
		p.Addf(key+".upstream", "unknown upstream %q%s", r.Upstream, Suggest(r.Upstream, sortedKeys(ups)))
	}
	seen := map[string]bool{}
	for i, m := range r.Methods {
		if !httpx.ValidToken(m) {
			p.Addf(fmt.Sprintf("%s.methods[%d]", key, i), "invalid method %q", m)
			continue
		}
		if m != strings.ToUpper(m) {
			p.Addf(fmt.Sprintf("%s.methods[%d]", key, i), "method %q must be upper-case (methods are case-sensitive)", m)
		}
		if seen[m] {
			p.Addf(fmt.Sprintf("%s.methods[%d]", key, i), "duplicate method %q", m)
		}
		seen[m] = true
	}
	if r.Deadline < 0 {
		p.Add(key+".deadline", "must not be negative")
	}
	if r.Host != "" {
		if strings.ContainsAny(r.Host, "/:* ") {
			p.Addf(key+".host", "invalid host %q: want a plain host name such as \"api.internal\" (no port, scheme or wildcard)", r.Host)
		}
	}
	if r.StripPrefix != "" {
		static := r.Path
		if i := strings.IndexByte(static, '{'); i >= 0 {
			static = static[:i]
		}
		switch {
		case !strings.HasPrefix(r.StripPrefix, "/"):
			p.Addf(key+".strip_prefix", "%q must start with '/'", r.StripPrefix)
		case !strings.HasPrefix(static, r.StripPrefix):
			p.Addf(key+".strip_prefix", "%q is not a prefix of every path the route matches (path %q)", r.StripPrefix, r.Path)
		}
	}
}

func balancedBraces(s string) bool {
	depth := 0
	for _, c := range s {
		switch c {
		case '{':
			depth++
		case '}':
			if depth--; depth < 0 {
				return false
			}
		}
	}
	return depth == 0
}

// Suggest returns `; did you mean "x"?` for the closest known name, if any is close.
func Suggest(name string, known []string) string {
	best, bestD := "", 3
	for _, k := range known {
		if d := editDistance(name, k); d < bestD {
			best, bestD = k, d
		}
	}
	if best == "" {
		if len(known) == 0 {
			return " (none are defined)"
		}
		return fmt.Sprintf(" (known: %s)", strings.Join(known, ", "))
	}
	return fmt.Sprintf("; did you mean %q?", best)
}

func editDistance(a, b string) int {
	prev := make([]int, len(b)+1)
	cur := make([]int, len(b)+1)
	for j := range prev {
		prev[j] = j
	}
	for i := 1; i <= len(a); i++ {
		cur[0] = i
		for j := 1; j <= len(b); j++ {
			cost := 1
			if a[i-1] == b[j-1] {
				cost = 0
			}
			cur[j] = min(prev[j]+1, cur[j-1]+1, prev[j-1]+cost)
		}
		prev, cur = cur, prev
	}
	return prev[len(b)]
}

func sortedKeys[V any](m map[string]V) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	return keys
}
