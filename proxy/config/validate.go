package config

import (
	"fmt"
	"net"
	"net/url"
	"os"
	"regexp"
	"strings"

	"github.com/sluice-gw/sluice/proxy/httpx"
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
	if s.StreamRequestThreshold < 0 {
		p.Addf("server.stream_request_threshold", "must not be negative, got %s", s.StreamRequestThreshold)
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
	// The largest request body held in memory: the whole of it, or with
	// request streaming on, what is read before streaming starts.
	switch held := s.MaxRequestBody; {
	case s.StreamRequestThreshold > 0 && s.StreamRequestThreshold < held:
		if s.MaxBodyMemory < s.StreamRequestThreshold {
			p.Addf("server.max_body_memory", "must be at least server.stream_request_threshold (%s), got %s", s.StreamRequestThreshold, s.MaxBodyMemory)
		}
	case s.MaxBodyMemory < held:
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

	if d := c.Reload.Debounce; d < MinReloadDebounce || d > MaxReloadDebounce {
		p.Addf("reload.debounce", "must be between %s and %s, got %s", MinReloadDebounce, MaxReloadDebounce, d)
	}

	if r := c.Cluster.Redis; r != nil {
		r.validate("cluster.redis", p)
	}
	c.Tracing.validate("tracing", p)
	c.validateConsumers(p)
	c.validateProfiles(p)

	for _, name := range sortedKeys(c.Upstreams) {
		u := c.Upstreams[name]
		u.validate("upstreams."+name, p)
		// Answers up to stream_threshold are read into memory; longer ones
		// are streamed, so max_response_body may be larger than the budget.
		if u.StreamThreshold > s.MaxBodyMemory {
			p.Addf("upstreams."+name+".stream_threshold", "%s is more than server.max_body_memory (%s): such an answer could never be read",
				u.StreamThreshold, s.MaxBodyMemory)
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
	if u.StreamThreshold < 0 {
		p.Add(key+".stream_threshold", "must not be negative")
	} else if u.StreamThreshold > 0 && u.MaxResponseBody > 0 && u.StreamThreshold > u.MaxResponseBody {
		p.Addf(key+".stream_threshold", "%s is above max_response_body %s: answers between the two would be refused instead of streamed", u.StreamThreshold, u.MaxResponseBody)
	}
	if u.StreamIdleTimeout < 0 {
		p.Add(key+".stream_idle_timeout", "must not be negative")
	}
	if u.MaxStreamDuration < 0 {
		p.Add(key+".max_stream_duration", "must not be negative")
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
	if r.TunnelIdleTimeout < 0 {
		p.Add(key+".tunnel_idle_timeout", "must not be negative")
	} else if r.TunnelIdleTimeout > 0 && !r.Upgrade {
		p.Add(key+".tunnel_idle_timeout", "is set but upgrade is not true: the route opens no tunnels")
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

func (t *TracingConfig) validate(key string, p *Problems) {
	if t.Sample < 0 || t.Sample > 1 || t.Sample != t.Sample {
		p.Addf(key+".sample", "must be between 0 and 1, got %v", t.Sample)
	}
	if t.Timeout <= 0 {
		p.Addf(key+".timeout", "must be a positive duration, got %s", t.Timeout)
	}
	if t.QueueSize < 1 {
		p.Addf(key+".queue_size", "must be at least 1, got %d", t.QueueSize)
	}
	if t.BatchSize < 1 || t.BatchSize > t.QueueSize {
		p.Addf(key+".batch_size", "must be between 1 and queue_size (%d), got %d", t.QueueSize, t.BatchSize)
	}
	if t.ServiceName == "" {
		p.Add(key+".service_name", "must not be empty")
	}
	for _, name := range sortedKeys(t.Headers) {
		if !httpx.ValidToken(name) {
			p.Addf(key+".headers."+name, "invalid header name %q", name)
		} else if v := t.Headers[name].Reveal(); strings.ContainsAny(v, "\r\n") {
			p.Add(key+".headers."+name, "must not contain line breaks")
		}
	}
	if t.Endpoint == "" {
		if t.Enabled {
			p.Add(key+".endpoint", "is required when tracing is enabled (the collector's OTLP/HTTP URL, e.g. http://127.0.0.1:4318/v1/traces)")
		}
		return
	}
	u, err := url.Parse(t.Endpoint)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		p.Addf(key+".endpoint", "invalid URL %q: want http(s)://host:port/path, e.g. http://127.0.0.1:4318/v1/traces", t.Endpoint)
	} else if u.User != nil {
		p.Add(key+".endpoint", "must not contain credentials: use tracing.headers")
	}
}
