// Package headers is the headers plugin: it sets, adds and removes request
// headers before the request goes upstream, and response headers before the
// answer goes back to the caller.
//
// Request edits run after authentication and rate limiting and before the
// cache, so cache keys see the edited request. Response edits apply to
// answers that come back through the pipeline (upstream answers and cache
// hits), not to errors the gateway itself produces.
package headers

import (
	"encoding/json"
	"fmt"
	"slices"
	"strings"

	"github.com/sluice-gw/sluice/proxy"
	"github.com/sluice-gw/sluice/proxy/config"
	"github.com/sluice-gw/sluice/proxy/httpx"
	"github.com/valyala/fasthttp"
)

// Ops are the edits of one direction. They apply in the order remove, set, add.
type Ops struct {
	// Set replaces a header (or adds it when absent): {X-Api-Version: "2024-06-01"}.
	Set map[string]string `koanf:"set" json:"set,omitempty"`
	// Add appends a value, keeping the values already there.
	Add map[string]string `koanf:"add" json:"add,omitempty"`
	// Remove deletes headers by name (case-insensitive).
	Remove []string `koanf:"remove" json:"remove,omitempty"`
}

// Config of the headers plugin.
type Config struct {
	// Request edits the request sent upstream.
	Request Ops `koanf:"request" json:"request"`
	// Response edits the answer returned to the caller.
	Response Ops `koanf:"response" json:"response"`
}

// MarshalJSON shows the edits in /admin/config with the values of
// credential-like headers (Authorization, Cookie, *token*, *key*...) redacted.
func (o Ops) MarshalJSON() ([]byte, error) {
	mask := func(m map[string]string) map[string]string {
		if m == nil {
			return nil
		}
		out := make(map[string]string, len(m))
		for k, v := range m {
			if sensitive(k) {
				v = config.Secret(v).String()
			}
			out[k] = v
		}
		return out
	}
	return json.Marshal(struct {
		Set    map[string]string `json:"set,omitempty"`
		Add    map[string]string `json:"add,omitempty"`
		Remove []string          `json:"remove,omitempty"`
	}{mask(o.Set), mask(o.Add), o.Remove})
}

// sensitive reports whether a header carries a credential.
func sensitive(name string) bool {
	n := strings.ToLower(name)
	switch n {
	case "authorization", "proxy-authorization", "cookie", "set-cookie":
		return true
	}
	for _, w := range []string{"token", "secret", "key", "password", "passwd", "auth", "signature", "session", "credential"} {
		if strings.Contains(n, w) {
			return true
		}
	}
	return false
}

// Headers the plugin must not touch: they frame the message or belong to the
// connection, or the gateway owns them.
var forbidden = map[string]string{
	"content-length":    "it is computed from the body",
	"transfer-encoding": "it is set by the gateway",
	"connection":        "it is hop-by-hop",
	"keep-alive":        "it is hop-by-hop",
	"te":                "it is hop-by-hop",
	"trailer":           "it is hop-by-hop",
	"upgrade":           "it is hop-by-hop",
	"proxy-connection":  "it is hop-by-hop",
	"host":              "it is set from the upstream's url",
	"x-request-id":      "the gateway sets it",
}

// Validate checks header names and values.
func (c *Config) Validate() error {
	var p config.Problems
	c.Request.validate("request", true, &p)
	c.Response.validate("response", false, &p)
	return p.Err()
}

func (o *Ops) validate(dir string, request bool, p *config.Problems) {
	check := func(key, name string, set bool) {
		if !httpx.ValidToken(name) {
			p.Addf(key, "invalid header name %q", name)
			return
		}
		lower := strings.ToLower(name)
		why, bad := forbidden[lower]
		if lower == "host" && !request {
			bad = false
		}
		if lower == "x-request-id" && !set {
			bad = false // removing it upstream is allowed; the response always gets it back
		}
		if bad {
			p.Addf(key, "header %q cannot be changed here: %s", name, why)
		}
	}
	for name, v := range o.Set {
		check(dir+".set."+name, name, true)
		if strings.ContainsAny(v, "\r\n\x00") {
			p.Addf(dir+".set."+name, "value must not contain CR, LF or NUL")
		}
	}
	for name, v := range o.Add {
		check(dir+".add."+name, name, true)
		if strings.ContainsAny(v, "\r\n\x00") {
			p.Addf(dir+".add."+name, "value must not contain CR, LF or NUL")
		}
	}
	for i, name := range o.Remove {
		check(fmt.Sprintf("%s.remove[%d]", dir, i), name, false)
	}
}

// Factory registers the plugin.
var Factory = proxy.Define("headers", build)

func build(c *Config, _ *proxy.Build) (proxy.Plugin, error) {
	return &Plugin{request: compile(&c.Request), response: compile(&c.Response)}, nil
}

var _ proxy.AccessPolicy = (*Config)(nil)

// AccessPolicy marks the config as one that decides what the provider is
// sent: answers fetched with different header edits are kept apart.
func (*Config) AccessPolicy() {}

// kv is one precomputed edit.
type kv struct {
	name  httpx.Name
	value []byte
}

// edits are the names normalized once, here, so that applying them
// normalizes nothing (see httpx.Name).
type edits struct {
	remove   []httpx.Name
	set, add []kv
}

func compile(o *Ops) edits {
	var e edits
	for _, name := range o.Remove {
		e.remove = append(e.remove, httpx.NewName(name))
	}
	for _, name := range sortedKeys(o.Set) {
		// Set replaces every value: Name.Set alone replaces only the first
		// of repeated headers, so the name is removed first.
		e.remove = append(e.remove, httpx.NewName(name))
		e.set = append(e.set, kv{httpx.NewName(name), []byte(o.Set[name])})
	}
	for _, name := range sortedKeys(o.Add) {
		e.add = append(e.add, kv{httpx.NewName(name), []byte(o.Add[name])})
	}
	return e
}

// Plugin is the compiled plugin for one route.
type Plugin struct {
	request, response edits
}

var _ proxy.Plugin = (*Plugin)(nil)

// Handle edits the request, calls the rest of the pipeline, then edits the answer.
func (h *Plugin) Handle(ctx *fasthttp.RequestCtx, ex *proxy.Exchange, next proxy.Handler) error {
	h.request.apply(&ctx.Request.Header)
	if err := next.Handle(ctx, ex); err != nil {
		return err
	}
	h.response.apply(&ctx.Response.Header)
	return nil
}

// apply makes the edits in the order remove, set, add.
func (e *edits) apply(h httpx.Header) {
	for _, n := range e.remove {
		n.Del(h)
	}
	for _, kv := range e.set {
		kv.name.Set(h, kv.value)
	}
	for _, kv := range e.add {
		kv.name.Add(h, kv.value)
	}
}

func sortedKeys(m map[string]string) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	return keys
}
