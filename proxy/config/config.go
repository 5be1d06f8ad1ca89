package config

import (
	"reflect"
	"strings"
	"time"
)

// Config is the whole gateway configuration (schema v1, see docs/configuration.md). It is
// produced by Load, which applies defaults, environment overrides and ${VAR}
// expansion, decodes strictly and validates. Plugin blocks stay raw maps here;
// each plugin decodes its own block when the pipeline is compiled.
type Config struct {
	// Server configures the proxy listener, where callers send their calls.
	Server ServerConfig `koanf:"server" json:"server"`
	// Log configures logging and the access log.
	Log LogConfig `koanf:"log" json:"log"`
	// Admin configures the admin listener (/metrics, /healthz, /readyz, /admin/...).
	Admin AdminConfig `koanf:"admin" json:"admin"`
	// Cluster makes several gateways share state through Redis. Absent: one node.
	Cluster ClusterConfig `koanf:"cluster" json:"cluster"`
	// Reload makes the gateway reload by itself when its config file or a
	// file: secret changes. Off by default.
	Reload ReloadConfig `koanf:"reload" json:"reload"`
	// Tracing exports OpenTelemetry spans over OTLP/HTTP and takes part in
	// W3C Trace Context. Off by default.
	Tracing TracingConfig `koanf:"tracing" json:"tracing"`
	// Consumers are the callers of the gateway (backend services) by name,
	// each known by its API keys.
	Consumers map[string]ConsumerConfig `koanf:"consumers" json:"consumers,omitempty"`
	// Plugins are the plugin blocks that apply to every route, by plugin
	// name; an upstream's or a route's block for the same plugin replaces one.
	Plugins PluginBlocks `koanf:"plugins" json:"-"`
	// Upstreams are the provider APIs by name (lower-case letters, digits,
	// '-' and '_').
	Upstreams map[string]UpstreamConfig `koanf:"upstreams" json:"upstreams"`
	// Routes map caller requests to upstreams, by name (lower-case letters,
	// digits, '-' and '_').
	Routes map[string]RouteConfig `koanf:"routes" json:"routes"`
	// Profiles are provider profiles declared here, by name, besides the
	// built-in ones (stripe, github, openai, slack, twilio); one named like a
	// built-in replaces it. An upstream uses one with profile: NAME.
	Profiles map[string]ProfileConfig `koanf:"profiles" json:"profiles,omitempty"`
	// Sections holds the other top-level sections, raw: each belongs to a
	// plugin (cache: belongs to the cache plugin), which decodes and checks
	// it when the pipeline is compiled. A key no plugin owns is an error then.
	Sections map[string]any `koanf:",remain" json:"-"`

	fromEnv     []envValue          // values taken from the environment by ${VAR} (see Redact)
	envKeys     map[string]string   // key paths set by SLUICE_* overrides, and the variable (see Explain)
	secretFiles []string            // see SecretFiles
	fileSums    map[string][32]byte // see FileSum
	dir         string              // see Dir
}

// Dir is the directory of the config file Load read, absolute; "" for a
// config from LoadBytes. Plugins resolve the relative file paths of their
// blocks against it (contract's spec).
func (c *Config) Dir() string { return c.dir }

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
	// StreamRequestThreshold: a request body longer than this (or sent
	// chunked and longer than this) is streamed to the upstream instead of
	// held in memory; plugins then do not see it and it is never sent twice.
	// max_request_body still holds. 0 (the default) turns request streaming
	// off: with it on, fasthttp's streaming read costs every request with a
	// body 2 allocations, so it is for routes that take large uploads.
	StreamRequestThreshold Size `koanf:"stream_request_threshold" json:"stream_request_threshold"`
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

// ReloadConfig makes the gateway reload by itself when the config file or a
// "file:" secret changes on disk, as SIGHUP does. It applies at reload:
// switching watch on or off, or changing debounce, takes effect with the
// config that says so.
type ReloadConfig struct {
	// Watch turns watching on. Default false.
	Watch bool `koanf:"watch" json:"watch"`
	// Debounce is how long the files must stay unchanged before the reload:
	// the changes of a burst (an editor's save, a Kubernetes volume update)
	// make one reload. Default 1s; from MinReloadDebounce to MaxReloadDebounce.
	Debounce Duration `koanf:"debounce" json:"debounce"`
}

// TracingConfig configures W3C Trace Context and span export (OTLP/HTTP).
// Off (the default), the caller's traceparent and tracestate pass through
// untouched and nothing else is done. It applies at reload.
type TracingConfig struct {
	// Enabled turns tracing on. Default false.
	Enabled bool `koanf:"enabled" json:"enabled"`
	// Endpoint is the collector's OTLP/HTTP traces URL, e.g.
	// "http://127.0.0.1:4318/v1/traces". Required when enabled.
	Endpoint string `koanf:"endpoint" json:"endpoint,omitempty"`
	// Sample is the share of new traces that are recorded and exported,
	// from 0 to 1. Default 1.
	Sample float64 `koanf:"sample" json:"sample"`
	// ParentBased follows the sampled flag of the caller's traceparent when
	// there is one (OpenTelemetry's ParentBased sampler); sample then
	// applies to calls that start a trace. False: sample applies to every
	// call. Default true.
	ParentBased bool `koanf:"parent_based" json:"parent_based"`
	// ServiceName is the service.name of the exported spans. Default "sluice".
	ServiceName string `koanf:"service_name" json:"service_name"`
	// Timeout bounds one export to the collector. Default 5s.
	Timeout Duration `koanf:"timeout" json:"timeout"`
	// QueueSize is how many finished spans may wait for export; beyond it
	// spans are dropped and counted (sluice_tracing_spans_dropped_total).
	// Default 2048.
	QueueSize int `koanf:"queue_size" json:"queue_size"`
	// BatchSize is the most spans sent in one export. Default 512; at most queue_size.
	BatchSize int `koanf:"batch_size" json:"batch_size"`
	// Headers are sent with every export (a collector's API key). Values
	// are secrets: use "${VAR}" or "file:/path"; they are never shown.
	Headers map[string]Secret `koanf:"headers" json:"headers,omitempty"`
}

// Bounds of reload.debounce.
const (
	MinReloadDebounce = Duration(10 * time.Millisecond)
	MaxReloadDebounce = Duration(time.Minute)
)

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
	// ForwardedHeaders sends the upstream X-Forwarded-For (the caller's
	// chain, if any, then the caller's address), X-Forwarded-Proto and
	// X-Forwarded-Host, replacing any the caller sent: for an internal
	// service that wants to know who called. Off (default), the gateway adds
	// none, so a third-party provider does not learn the addresses and host
	// names of your services, and X-Forwarded-* headers a caller sent pass as
	// sent.
	ForwardedHeaders bool `koanf:"forwarded_headers" json:"forwarded_headers,omitempty"`
	// Timeout bounds one attempt: sending the request and reading the whole
	// response; for a streamed response, sending the request and reading its
	// head (see StreamThreshold). Default 30s.
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
	// MaxResponseBody is the largest upstream response body passed on: 502
	// when a Content-Length above it is announced or a body read whole goes
	// over it; a streamed body that goes over it is cut there. Streamed
	// bodies are not held in memory, so a route for large downloads can
	// raise it freely. Default 64MiB.
	MaxResponseBody Size `koanf:"max_response_body" json:"max_response_body"`
	// StreamThreshold decides which responses are streamed to the caller as
	// they arrive instead of read whole first: one whose Content-Length is
	// above it, and a chunked (or close-delimited) one that has not ended
	// after that many bytes. Responses of an event type (text/event-stream,
	// application/x-ndjson, application/stream+json, application/jsonl) are
	// always streamed, from their first byte. At most max_response_body.
	// Default 1MiB (max_response_body when that is smaller).
	StreamThreshold Size `koanf:"stream_threshold" json:"stream_threshold"`
	// StreamIdleTimeout ends a streamed response when the provider sends
	// nothing for that long. Default 5m.
	StreamIdleTimeout Duration `koanf:"stream_idle_timeout" json:"stream_idle_timeout"`
	// MaxStreamDuration ends a streamed response that lasts longer,
	// counted from its head. 0 (default): no limit.
	MaxStreamDuration Duration `koanf:"max_stream_duration" json:"max_stream_duration,omitempty"`
	// TLS configures https targets.
	TLS TLSConfig `koanf:"tls" json:"tls"`
	// Profile names a provider profile (built in, or declared under
	// profiles:) whose plugin blocks apply to this upstream's routes as
	// defaults: the upstream's and the route's own blocks override them key
	// by key. Empty (default): none.
	Profile string `koanf:"profile" json:"profile,omitempty"`
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
	// Upgrade lets the route tunnel "Connection: Upgrade" requests (WebSocket
	// and other upgrades except h2c): the handshake runs the pipeline, then a
	// 101 from the provider turns the connection into a byte tunnel. Without
	// it such a request is refused (upgrade_not_allowed). Default false.
	Upgrade bool `koanf:"upgrade" json:"upgrade,omitempty"`
	// TunnelIdleTimeout closes a tunnel when no byte has passed either way
	// for this long. Only with upgrade: true. Default 5m.
	TunnelIdleTimeout Duration `koanf:"tunnel_idle_timeout" json:"tunnel_idle_timeout,omitempty"`
	// Plugins for this route; each block replaces the upstream's and the
	// top-level block of the same plugin. {enabled: false} switches one off.
	Plugins PluginBlocks `koanf:"plugins" json:"-"`
}

// Balance modes (UpstreamConfig.Balance).
const (
	BalanceRoundRobin    = "round_robin"
	BalanceLeastInflight = "least_inflight"
)
