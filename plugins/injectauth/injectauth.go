// Package injectauth is the inject_auth plugin: it attaches the provider's
// credentials to the request going upstream, so that the services behind the
// gateway never hold them. Types: bearer, header, query, basic (static
// secrets, optionally a round-robin pool of keys), oauth2_client_credentials
// (a token fetched, cached and refreshed by the gateway) and hmac (a request
// signature).
//
// It runs after the cache and outside retry and the circuit breaker: the
// credential is attached once per call and kept by every retry. It does not
// authenticate callers (authenticate does) and never shows a secret: every
// secret field is a proxy.Secret.
package injectauth

import (
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/sluice-gw/sluice/proxy"
	"github.com/sluice-gw/sluice/proxy/config"
	"github.com/sluice-gw/sluice/proxy/httpx"
	"github.com/valyala/fasthttp"
)

// The credential types.
const (
	TypeBearer            = "bearer"
	TypeHeader            = "header"
	TypeQuery             = "query"
	TypeBasic             = "basic"
	TypeOAuth2            = "oauth2_client_credentials"
	TypeHMAC              = "hmac"
	defaultRefreshBefore  = 60 * time.Second
	defaultHMACHeader     = "X-Signature"
	defaultTimestampHdr   = "X-Timestamp"
	defaultHMACAlgorithm  = "sha256"
	defaultHMACEncoding   = "hex"
	defaultOAuthAuthStyle = "header"
)

var types = []string{TypeBearer, TypeHeader, TypeQuery, TypeBasic, TypeOAuth2, TypeHMAC}

// Credential is one way of authenticating to the provider. Which fields
// apply depends on Type; setting a field another type uses is an error.
type Credential struct {
	// Type is bearer, header, query, basic, oauth2_client_credentials or hmac. Required.
	Type string `koanf:"type" json:"type"`

	// Token is the bearer token (type bearer): sent as "Authorization: Bearer TOKEN".
	Token config.Secret `koanf:"token" json:"token,omitempty"`
	// Name is the header (type header) or query parameter (type query) that carries Value.
	Name string `koanf:"name" json:"name,omitempty"`
	// Value is the header or query parameter value (types header, query).
	Value config.Secret `koanf:"value" json:"value,omitempty"`
	// Keys is a pool of tokens or values (types bearer, header, query) used
	// instead of Token/Value, one per request in turn (round-robin), so that
	// a per-key quota is multiplied.
	Keys []config.Secret `koanf:"keys" json:"keys,omitempty"`
	// Username and Password are sent as HTTP Basic credentials (type basic).
	Username string        `koanf:"username" json:"username,omitempty"`
	Password config.Secret `koanf:"password" json:"password,omitempty"`

	// OAuth2 client credentials (RFC 6749 §4.4).
	// TokenURL is the provider's token endpoint (http or https).
	TokenURL string `koanf:"token_url" json:"token_url,omitempty"`
	// ClientID and ClientSecret identify the gateway's OAuth2 app.
	ClientID     string        `koanf:"client_id" json:"client_id,omitempty"`
	ClientSecret config.Secret `koanf:"client_secret" json:"client_secret,omitempty"`
	// Scopes are requested space-separated in "scope"; none by default.
	Scopes []string `koanf:"scopes" json:"scopes,omitempty"`
	// Audience, when set, is sent as "audience" (Auth0 and others need it).
	Audience string `koanf:"audience" json:"audience,omitempty"`
	// AuthStyle is how the client authenticates to the token endpoint:
	// header (HTTP Basic, the default) or body (client_id and client_secret
	// form fields).
	AuthStyle string `koanf:"auth_style" json:"auth_style,omitempty"`
	// RefreshBefore is how long before its expiry a token is replaced, in the
	// background (with up to 10% jitter). Default 60s; for short-lived tokens
	// at most half their lifetime is used.
	RefreshBefore config.Duration `koanf:"refresh_before" json:"refresh_before,omitempty"`

	// HMAC request signing (see README for the exact string to sign).
	// Secret is the signing key.
	Secret config.Secret `koanf:"secret" json:"secret,omitempty"`
	// Algorithm is sha256 (default) or sha512.
	Algorithm string `koanf:"algorithm" json:"algorithm,omitempty"`
	// Header receives the signature. Default "X-Signature".
	Header string `koanf:"header" json:"header,omitempty"`
	// TimestampHeader receives the Unix time in seconds the request was
	// signed at. Default "X-Timestamp".
	TimestampHeader string `koanf:"timestamp_header" json:"timestamp_header,omitempty"`
	// Sign lists the signed parts, in this order: method, path, query,
	// timestamp, body (hex SHA-256 of the body). Default all five.
	Sign []string `koanf:"sign" json:"sign,omitempty"`
	// Encoding of the signature: hex (default) or base64.
	Encoding string `koanf:"encoding" json:"encoding,omitempty"`
	// Prefix is written before the signature, e.g. "sha256=". Default none.
	Prefix string `koanf:"prefix" json:"prefix,omitempty"`
}

// Config of the inject_auth plugin: one credential, and optionally another
// per consumer.
type Config struct {
	Credential `koanf:",squash"`
	// Consumers overrides the credential for some consumers (as identified by
	// authenticate): {billing: {type: bearer, token: "..."}}. Each entry has
	// the shape of the main block; its type defaults to the main block's.
	// Consumers without an entry get the main credential. With overrides,
	// answers depend on the caller: the cache keeps consumers apart.
	Consumers map[string]*Credential `koanf:"consumers" json:"consumers,omitempty"`
}

var (
	_ proxy.ConsumerScoped = (*Config)(nil)
	_ proxy.AccessPolicy   = (*Config)(nil)
)

// AccessPolicy marks the config as one that decides which credentials the
// provider is sent.
func (*Config) AccessPolicy() {}

// VariesByConsumer reports whether the credential depends on the consumer.
func (c *Config) VariesByConsumer() bool { return len(c.Consumers) > 0 }

// Validate checks the main credential and every override, and fills defaults.
func (c *Config) Validate() error {
	var p config.Problems
	c.Credential.check("", &p)
	for _, name := range sortedKeys(c.Consumers) {
		o := c.Consumers[name]
		if o == nil {
			p.Add("consumers."+name, "needs a credential, e.g. {token: \"${TOKEN}\"}")
			continue
		}
		if o.Type == "" {
			o.Type = c.Type
		}
		o.check("consumers."+name, &p)
	}
	return p.Err()
}

func (c *Credential) check(prefix string, p *config.Problems) {
	at := func(key string) string {
		if prefix == "" {
			return key
		}
		return prefix + "." + key
	}
	if c.Type == "" {
		p.Addf(at("type"), "is required: one of %s", strings.Join(types, ", "))
		return
	}
	if !slices.Contains(types, c.Type) {
		p.Addf(at("type"), "unknown type %q: want one of %s", c.Type, strings.Join(types, ", "))
		return
	}
	// Fields each type uses; any other field set is a mistake worth reporting.
	uses := map[string][]string{
		TypeBearer: {"token", "keys"},
		TypeHeader: {"name", "value", "keys"},
		TypeQuery:  {"name", "value", "keys"},
		TypeBasic:  {"username", "password"},
		TypeOAuth2: {"token_url", "client_id", "client_secret", "scopes", "audience", "auth_style", "refresh_before"},
		TypeHMAC:   {"secret", "algorithm", "header", "timestamp_header", "sign", "encoding", "prefix"},
	}[c.Type]
	for key, set := range map[string]bool{
		"token": c.Token.IsSet(), "name": c.Name != "", "value": c.Value.IsSet(), "keys": len(c.Keys) > 0,
		"username": c.Username != "", "password": c.Password.IsSet(),
		"token_url": c.TokenURL != "", "client_id": c.ClientID != "", "client_secret": c.ClientSecret.IsSet(),
		"scopes": len(c.Scopes) > 0, "audience": c.Audience != "", "auth_style": c.AuthStyle != "", "refresh_before": c.RefreshBefore != 0,
		"secret": c.Secret.IsSet(), "algorithm": c.Algorithm != "", "header": c.Header != "", "timestamp_header": c.TimestampHeader != "",
		"sign": len(c.Sign) > 0, "encoding": c.Encoding != "", "prefix": c.Prefix != "",
	} {
		if set && !slices.Contains(uses, key) {
			p.Addf(at(key), "does not apply to type %s (it uses %s)", c.Type, strings.Join(uses, ", "))
		}
	}
	switch c.Type {
	case TypeBearer:
		c.checkValueOrKeys(at, "token", c.Token, p)
	case TypeHeader, TypeQuery:
		c.checkValueOrKeys(at, "value", c.Value, p)
		switch {
		case c.Name == "":
			p.Add(at("name"), "is required")
		case c.Type == TypeHeader && !httpx.ValidToken(c.Name):
			p.Addf(at("name"), "invalid header name %q", c.Name)
		case c.Type == TypeHeader && reservedHeader(c.Name):
			p.Addf(at("name"), "header %q cannot carry a credential here (the gateway owns it)", c.Name)
		}
	case TypeBasic:
		if c.Username == "" {
			p.Add(at("username"), "is required")
		} else if strings.ContainsAny(c.Username, ":\r\n") {
			p.Add(at("username"), "must not contain ':' or line breaks")
		}
		if !c.Password.IsSet() {
			p.Add(at("password"), "is required (is its ${VAR} or file: source empty?)")
		}
	case TypeOAuth2:
		c.checkOAuth2(at, p)
	case TypeHMAC:
		c.checkHMAC(at, p)
	}
}

func (c *Credential) checkValueOrKeys(at func(string) string, field string, v config.Secret, p *config.Problems) {
	switch {
	case v.IsSet() && len(c.Keys) > 0:
		p.Addf(at(field), "set %s or keys, not both", field)
	case !v.IsSet() && len(c.Keys) == 0:
		p.Addf(at(field), "is required (or keys, a pool); is its ${VAR} or file: source empty?")
	}
	vals := c.Keys
	if v.IsSet() {
		vals = []config.Secret{v}
	}
	for i, k := range c.Keys {
		if !k.IsSet() {
			p.Addf(at(fmt.Sprintf("keys[%d]", i)), "is empty")
		}
	}
	for i, k := range vals {
		if strings.ContainsAny(k.Reveal(), "\r\n\x00") {
			key := at(field)
			if len(c.Keys) > 0 {
				key = at(fmt.Sprintf("keys[%d]", i))
			}
			p.Add(key, "must not contain CR, LF or NUL")
		}
	}
}

func reservedHeader(name string) bool {
	switch strings.ToLower(name) {
	case "host", "content-length", "transfer-encoding", "connection", "x-request-id":
		return true
	}
	return false
}

// Factory registers the plugin.
var Factory = proxy.Define("inject_auth", build)

// injector attaches one credential to a request and calls next.
type injector interface {
	inject(ctx *fasthttp.RequestCtx, ex *proxy.Exchange, next proxy.Handler) error
}

// InjectAuth is the compiled plugin for one route.
type InjectAuth struct {
	main       injector
	byConsumer map[string]injector // nil without per-consumer overrides
}

var _ proxy.Plugin = (*InjectAuth)(nil)

func build(c *Config, b *proxy.Build) (proxy.Plugin, error) {
	var p config.Problems
	for _, name := range sortedKeys(c.Consumers) {
		if _, ok := b.Consumers[name]; !ok {
			p.Addf("consumers."+name, "unknown consumer %q (not in the top-level consumers)", name)
		}
	}
	if err := p.Err(); err != nil {
		return nil, err
	}
	ia := &InjectAuth{}
	main, err := newInjector(&c.Credential, b)
	if err != nil {
		return nil, err
	}
	ia.main = main
	if len(c.Consumers) > 0 {
		ia.byConsumer = map[string]injector{}
		for _, name := range sortedKeys(c.Consumers) {
			in, err := newInjector(c.Consumers[name], b)
			if err != nil {
				var fe *config.FieldError
				if errors.As(err, &fe) {
					fe.Path = "consumers." + name + "." + fe.Path
					return nil, fe
				}
				return nil, &config.FieldError{Path: "consumers." + name, Msg: err.Error()}
			}
			ia.byConsumer[name] = in
		}
	}
	return ia, nil
}

func newInjector(c *Credential, b *proxy.Build) (injector, error) {
	switch c.Type {
	case TypeBearer, TypeHeader, TypeQuery, TypeBasic:
		return newStatic(c), nil
	case TypeOAuth2:
		return newOAuth2(c, b)
	case TypeHMAC:
		return newHMAC(c)
	}
	return nil, &config.FieldError{Path: "type", Msg: "unknown type " + c.Type}
}

// Handle attaches the consumer's (or the route's) credential and calls next.
func (ia *InjectAuth) Handle(ctx *fasthttp.RequestCtx, ex *proxy.Exchange, next proxy.Handler) error {
	in := ia.main
	if ia.byConsumer != nil && ex.Consumer != "" {
		if o, ok := ia.byConsumer[ex.Consumer]; ok {
			in = o
		}
	}
	return in.inject(ctx, ex, next)
}

func sortedKeys[V any](m map[string]V) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	return keys
}
