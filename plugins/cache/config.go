package cache

import (
	"fmt"
	"regexp"
	"slices"
	"strings"
	"time"

	"github.com/sluice-gw/sluice/proxy/config"
	"github.com/sluice-gw/sluice/proxy/httpx"
	"github.com/sluice-gw/sluice/proxy/jsonpointer"
)

// Config of the cache plugin for one route. The zero value caches only what
// the upstream marks cacheable (Cache-Control max-age/s-maxage or Expires).
type Config struct {
	// TTL is the freshness lifetime of answers that carry none (no max-age,
	// s-maxage or Expires). Default 0: such answers are not stored.
	TTL config.Duration `koanf:"ttl" json:"ttl,omitempty"`
	// Override ignores the upstream's Cache-Control and Expires and stores
	// every cacheable answer for TTL (which it requires). Answers with
	// Set-Cookie, and answers to requests carrying Authorization on a route
	// with partition none, are still never stored (not even when the answer
	// says public or s-maxage: override does not read them).
	Override bool `koanf:"override" json:"override,omitempty"`
	// StaleWhileRevalidate answers at once from an entry stale for up to this
	// long and refreshes it in the background (once). Default 0; an answer's
	// own stale-while-revalidate directive applies too (the larger wins).
	StaleWhileRevalidate config.Duration `koanf:"stale_while_revalidate" json:"stale_while_revalidate,omitempty"`
	// StaleIfError answers from an entry stale for up to this long when the
	// upstream fails (5xx, 429, timeout, unreachable, circuit open). Default
	// 0; an answer's own stale-if-error directive applies too.
	StaleIfError config.Duration `koanf:"stale_if_error" json:"stale_if_error,omitempty"`
	// Query selects what of the query string is part of the key: "all"
	// (default), "none", or a list of parameter names to keep.
	Query any `koanf:"query" json:"query,omitempty"`
	// Sorted sorts query parameters in the key, so that ?a=1&b=2 and
	// ?b=2&a=1 share an entry. Default true.
	Sorted bool `koanf:"sorted" json:"sorted"`
	// Partition keeps entries apart per caller: "auto" (default: per consumer
	// when inject_auth's credentials depend on the consumer, and per
	// credential when the request itself carries Authorization), "consumer"
	// (always per consumer), "none" (shared by all callers; a request carrying
	// Authorization is then stored only when the answer says public,
	// s-maxage or must-revalidate, RFC 9111 section 3.5).
	Partition string `koanf:"partition" json:"partition"`
	// CredentialHeaders are request headers that carry a caller's own
	// credentials, besides Authorization, Cookie and X-Api-Key (always
	// counted): ["Api-Key", "X-Auth-Token"]. With partition auto or
	// consumer, a request carrying any of them is kept apart by a hash of
	// all their values; with partition none, it is stored only when the
	// answer says public, s-maxage or must-revalidate.
	CredentialHeaders []string `koanf:"credential_headers" json:"credential_headers,omitempty"`
	// Tags are templates of tags given to entries stored by this route,
	// filled from the route's path parameters: ["customer:{id}"] (each
	// {name} must be a parameter of the route's path). The upstream's
	// Surrogate-Key and Cache-Tag headers add more.
	Tags []string `koanf:"tags" json:"tags,omitempty"`
	// Invalidate lists rules that purge tags when a request passes through
	// this route: {methods: [POST], path: "/v1/customers/{id}", tags: ["customer:{id}"]}.
	Invalidate []Rule `koanf:"invalidate" json:"invalidate,omitempty"`
	// Webhook turns the route into a signed invalidation endpoint: it
	// answers webhooks itself and never calls its upstream.
	Webhook *WebhookConfig `koanf:"webhook" json:"webhook,omitempty"`
	// Targets are targeted cache-control fields (RFC 9213) this cache obeys,
	// in order: ["Sluice-Cache-Control", "CDN-Cache-Control"]. The first one
	// an answer carries with a valid value decides its caching here, and its
	// Cache-Control and Expires are then ignored by this cache (they still
	// reach the caller). Default none: CDN-Cache-Control addresses the
	// provider's own CDN, which the provider can purge and Sluice cannot.
	Targets []string `koanf:"targets" json:"targets,omitempty"`
	// RequestDirectives is "ignore" (default) or "honor": whether callers'
	// Cache-Control request directives (no-cache, no-store, max-age,
	// max-stale, min-fresh, only-if-cached) apply. Ignored by default: one
	// caller of a shared gateway must not be able to send every request to
	// the provider (and spend the quota of all).
	RequestDirectives string `koanf:"request_directives" json:"request_directives,omitempty"`
	// Warm declares reads fetched at start and refreshed before they
	// expire, so that callers find them fresh (warm.go).
	Warm *WarmConfig `koanf:"warm" json:"warm,omitempty"`
}

// Rule purges tags when a request with one of Methods whose path matches
// Path passes through the route and the upstream answers 2xx or 3xx.
type Rule struct {
	// Methods the rule applies to. Default: POST, PUT, PATCH, DELETE.
	Methods []string `koanf:"methods" json:"methods,omitempty"`
	// Path is matched against the request path as the caller sent it;
	// {name} matches one segment, {name:*} the rest. Required.
	Path string `koanf:"path" json:"path"`
	// Tags are templates filled from Path's parameters. Required.
	Tags []string `koanf:"tags" json:"tags"`
}

// WebhookConfig configures a signed provider webhook that purges tags.
type WebhookConfig struct {
	// Secret is the HMAC-SHA256 key shared with the provider. Required.
	Secret config.Secret `koanf:"secret" json:"secret"`
	// Scheme is "generic" (default: Header holds hex(HMAC(secret, body)),
	// optionally prefixed "sha256=") or "timestamped" (Header holds
	// "t=UNIX,v1=HEX[,v1=HEX]" where HEX = hex(HMAC(secret, "UNIX." + body))).
	Scheme string `koanf:"scheme" json:"scheme"`
	// Header carries the signature. Default "X-Signature" (generic),
	// "Webhook-Signature" (timestamped).
	Header string `koanf:"header" json:"header"`
	// Tolerance is the replay window. Timestamped scheme: a timestamp older
	// than this is refused, and so is one more than min(tolerance, 30s)
	// ahead of the gateway's clock. Both schemes: a delivery accepted once
	// is refused (401) when it comes again within the window (its signature
	// is remembered that long; at most 65536 per route). Default 5m.
	Tolerance config.Duration `koanf:"tolerance" json:"tolerance"`
	// Tags are JSON pointers into the payload ("/data/object/customer") or
	// templates holding pointers in braces ("customer:{/data/object/customer}").
	// A pointer to an array yields one tag per element. Required.
	Tags []string `koanf:"tags" json:"tags"`
}

// Defaults sets sorted, partition: auto and request_directives: ignore.
func (c *Config) Defaults() { c.Sorted, c.Partition, c.RequestDirectives = true, "auto", "ignore" }

var (
	paramRE = regexp.MustCompile(`\{([A-Za-z_][A-Za-z0-9_]*)(:\*)?\}`)
)

// Validate checks the block; paths are relative to it.
func (c *Config) Validate() error {
	var p config.Problems
	if c.TTL < 0 {
		p.Add("ttl", "must not be negative")
	}
	if c.Override && c.TTL <= 0 {
		p.Add("override", "needs ttl: override replaces the upstream's freshness with ttl")
	}
	if c.StaleWhileRevalidate < 0 {
		p.Add("stale_while_revalidate", "must not be negative")
	}
	if c.StaleIfError < 0 {
		p.Add("stale_if_error", "must not be negative")
	}
	if _, _, err := c.queryMode(); err != nil {
		p.Add("query", err.Error())
	}
	switch c.Partition {
	case "auto", "consumer", "none":
	default:
		p.Addf("partition", "unknown value %q: want auto, consumer or none", c.Partition)
	}
	for i, h := range c.CredentialHeaders {
		if !httpx.ValidToken(h) {
			p.Addf(fmt.Sprintf("credential_headers[%d]", i), "invalid header name %q", h)
		}
	}
	for i, t := range c.Targets {
		key := fmt.Sprintf("targets[%d]", i)
		switch {
		case !httpx.ValidToken(t):
			p.Addf(key, "invalid header name %q", t)
		case strings.EqualFold(t, "Cache-Control"):
			p.Addf(key, "Cache-Control is what targets take precedence over: list only targeted fields, e.g. CDN-Cache-Control")
		case slices.ContainsFunc(c.Targets[:i], func(o string) bool { return strings.EqualFold(o, t) }):
			p.Addf(key, "%q is listed twice", t)
		}
	}
	switch c.RequestDirectives {
	case "ignore", "honor":
	default:
		p.Addf("request_directives", "unknown value %q: want ignore or honor", c.RequestDirectives)
	}
	for i, t := range c.Tags {
		if t == "" {
			p.Addf(fmt.Sprintf("tags[%d]", i), "must not be empty")
		}
	}
	for i, r := range c.Invalidate {
		key := fmt.Sprintf("invalidate[%d]", i)
		for j, m := range r.Methods {
			switch {
			case m != strings.ToUpper(m) || !httpx.ValidToken(m):
				p.Addf(fmt.Sprintf("%s.methods[%d]", key, j), "invalid method %q: use upper case, e.g. POST", m)
			case !isUnsafe([]byte(m)):
				p.Addf(fmt.Sprintf("%s.methods[%d]", key, j), "%s is a safe method: rules run only for unsafe ones (POST, PUT, PATCH, DELETE...)", m)
			}
		}
		if r.Path == "" || r.Path[0] != '/' {
			p.Addf(key+".path", "must start with '/', got %q", r.Path)
		}
		if len(r.Tags) == 0 {
			p.Add(key+".tags", "needs at least one tag template")
		}
		params := paramNames(r.Path)
		for j, t := range r.Tags {
			for _, m := range paramRE.FindAllStringSubmatch(t, -1) {
				if !slices.Contains(params, m[1]) {
					p.Addf(fmt.Sprintf("%s.tags[%d]", key, j), "{%s} is not a parameter of path %q", m[1], r.Path)
				}
			}
		}
	}
	if w := c.Webhook; w != nil {
		w.validate(&p)
	}
	if w := c.Warm; w != nil {
		w.validate(&p)
	}
	return p.Err()
}

func (w *WebhookConfig) validate(p *config.Problems) {
	if !w.Secret.IsSet() {
		p.Add("webhook.secret", "is required")
	}
	switch w.Scheme {
	case "":
		w.Scheme = "generic"
	case "generic", "timestamped":
	default:
		p.Addf("webhook.scheme", "unknown scheme %q: want generic or timestamped", w.Scheme)
	}
	if w.Header == "" {
		w.Header = "X-Signature"
		if w.Scheme == "timestamped" {
			w.Header = "Webhook-Signature"
		}
	} else if !httpx.ValidToken(w.Header) {
		p.Addf("webhook.header", "invalid header name %q", w.Header)
	}
	if w.Tolerance == 0 {
		w.Tolerance = config.Duration(5 * time.Minute)
	} else if w.Tolerance < 0 {
		p.Add("webhook.tolerance", "must not be negative")
	}
	if len(w.Tags) == 0 {
		p.Add("webhook.tags", "needs at least one JSON pointer, e.g. \"/data/object/id\"")
	}
	for i, t := range w.Tags {
		if _, err := parseTagTemplate(t); err != nil {
			p.Addf(fmt.Sprintf("webhook.tags[%d]", i), "%v", err)
		}
	}
}

// queryMode returns how the query takes part in the key: all (keep nil,
// all true), none (keep nil, all false) or a list of names to keep.
func (c *Config) queryMode() (keep []string, all bool, err error) {
	switch q := c.Query.(type) {
	case nil:
		return nil, true, nil
	case string:
		switch q {
		case "all":
			return nil, true, nil
		case "none":
			return nil, false, nil
		}
		return nil, false, fmt.Errorf("unknown value %q: want all, none or a list of parameter names", q)
	case []any:
		for _, v := range q {
			s, ok := v.(string)
			if !ok || s == "" {
				return nil, false, fmt.Errorf("list entries must be parameter names, got %v", v)
			}
			keep = append(keep, s)
		}
		if len(keep) == 0 {
			return nil, false, fmt.Errorf("an empty list keeps nothing: write none")
		}
		return keep, false, nil
	}
	return nil, false, fmt.Errorf("want all, none or a list of parameter names, got %v", c.Query)
}

func paramNames(path string) []string {
	var out []string
	for _, m := range paramRE.FindAllStringSubmatch(path, -1) {
		out = append(out, m[1])
	}
	return out
}

// tagTemplate is a webhook tag: literal parts and JSON pointers.
type tagTemplate struct {
	parts []tagPart
}

type tagPart struct {
	lit string
	ptr *jsonpointer.Pointer
}

// parseTagTemplate parses "/a/b" (a bare pointer) or "x:{/a/b}".
func parseTagTemplate(s string) (tagTemplate, error) {
	if strings.HasPrefix(s, "/") {
		ptr, err := jsonpointer.Parse(s)
		if err != nil {
			return tagTemplate{}, err
		}
		return tagTemplate{parts: []tagPart{{ptr: &ptr}}}, nil
	}
	var t tagTemplate
	rest := s
	for rest != "" {
		i := strings.IndexByte(rest, '{')
		if i < 0 {
			t.parts = append(t.parts, tagPart{lit: rest})
			break
		}
		j := strings.IndexByte(rest[i:], '}')
		if j < 0 {
			return tagTemplate{}, fmt.Errorf("unclosed '{' in %q", s)
		}
		if i > 0 {
			t.parts = append(t.parts, tagPart{lit: rest[:i]})
		}
		ptr, err := jsonpointer.Parse(rest[i+1 : i+j])
		if err != nil {
			return tagTemplate{}, err
		}
		if ptr.IsZero() {
			return tagTemplate{}, fmt.Errorf("empty pointer in %q", s)
		}
		t.parts = append(t.parts, tagPart{ptr: &ptr})
		rest = rest[i+j+1:]
	}
	if len(t.parts) == 0 || !slices.ContainsFunc(t.parts, func(p tagPart) bool { return p.ptr != nil }) {
		return tagTemplate{}, fmt.Errorf("%q holds no JSON pointer: write \"/path\" or \"prefix:{/path}\"", s)
	}
	return t, nil
}
