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
// secret field is a config.Secret.
package injectauth

import (
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"reflect"
	"slices"
	"strings"
	"time"

	"github.com/sluice-gw/sluice/proxy"
	"github.com/sluice-gw/sluice/proxy/config"
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

// credential is the settings of one credential type: one struct per type
// (bearerCredential, headerCredential, queryCredential, basicCredential,
// oauth2Credential, hmacCredential), whose koanf tags are the keys the type
// accepts. A block is decoded strictly onto the struct of its type, made by
// newCredential with the type's defaults.
type credential interface {
	// kind is the type's name in YAML.
	kind() string
	// settle returns the credential with the defaults that depend on other
	// settings (or replace a value written empty) in place: a copy when any
	// is needed. check and newInjector are called on settled credentials.
	settle() credential
	// check reports the credential's problems at the key paths at makes. It
	// changes nothing.
	check(at func(key string) string, p *config.Problems)
	// newInjector builds the credential's injector for one route.
	newInjector(b *proxy.Build) (injector, error)
}

// newCredential returns the settings struct of type typ holding its
// defaults, or nil when typ is not a credential type.
func newCredential(typ string) credential {
	var c credential
	switch typ {
	case TypeBearer:
		c = &bearerCredential{}
	case TypeHeader:
		c = &headerCredential{}
	case TypeQuery:
		c = &queryCredential{}
	case TypeBasic:
		c = &basicCredential{}
	case TypeOAuth2:
		c = &oauth2Credential{}
	case TypeHMAC:
		c = &hmacCredential{}
	default:
		return nil
	}
	if d, ok := c.(interface{ Defaults() }); ok {
		d.Defaults()
	}
	return c
}

// typeKeys lists the keys of each type, in the order of its struct's fields,
// as the structs declare them.
var typeKeys = func() map[string][]string {
	m := map[string][]string{}
	for _, typ := range types {
		m[typ] = structKeys(reflect.TypeOf(newCredential(typ)).Elem())
	}
	return m
}()

// block is one credential block: the plugin's own or a consumer's override.
type block struct {
	// typ is the type as written; "" in an override means the main block's.
	typ string
	// cred holds the block's other keys, decoded onto the struct of its
	// (effective) type; nil when that type is missing or unknown.
	cred credential
}

// Config of the inject_auth plugin: one credential, and optionally another
// per consumer. The YAML block is flat: its type, the keys of that type and
// consumers, e.g. {type: bearer, token: "...", consumers: {billing: {...}}}.
//
// The block is decoded in two steps, both strict and with the core's decoder
// (config.DecodeBlock): type and consumers first, then the other keys onto
// the struct of the type, so that a key of another type is refused by the
// decoder itself. The core's decoder (mapstructure) hands the whole block to
// UnmarshalMapstructure, which does both; Validate only checks.
type Config struct {
	main block
	// Consumers overrides the credential for some consumers (as identified by
	// authenticate): {billing: {type: bearer, token: "..."}}. Each entry has
	// the shape of the main block; its type defaults to the main block's.
	// Consumers without an entry get the main credential. With overrides,
	// answers depend on the caller: the cache keeps consumers apart.
	Consumers map[string]*block
	// decodeErr holds the problems found while decoding, and foreignErr
	// the keys of another type that were refused; Validate reports them
	// (see UnmarshalMapstructure).
	decodeErr, foreignErr error
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

// UnmarshalMapstructure decodes the plugin's block (the core's decoder calls
// it: config.DecodeBlock). It picks each credential's struct by its type and
// decodes the block's other keys onto it strictly. It records the problems
// it finds for Validate instead of returning them, because an error returned
// here reaches the user as one message at the block's path, without the key
// paths the problems carry.
func (c *Config) UnmarshalMapstructure(in any) error {
	m, ok := in.(map[string]any)
	if !ok {
		return fmt.Errorf("expected a map of settings, got %T", in)
	}
	*c = Config{}
	var p, foreign config.Problems
	type rawBlock struct {
		Type     string         `koanf:"type"`
		Settings map[string]any `koanf:",remain"` // the type's keys
	}
	var raw struct {
		rawBlock  `koanf:",squash"`
		Consumers map[string]*rawBlock `koanf:"consumers"`
	}
	p.AddErr("", config.DecodeBlock(m, &raw))
	c.main = *decodeBlock(raw.Type, raw.Type, raw.Settings, "", &p, &foreign)
	if len(raw.Consumers) > 0 {
		c.Consumers = make(map[string]*block, len(raw.Consumers))
	}
	for _, name := range slices.Sorted(maps.Keys(raw.Consumers)) {
		o := raw.Consumers[name]
		if o == nil {
			c.Consumers[name] = nil // Validate: needs a credential
			continue
		}
		typ := o.Type
		if typ == "" {
			typ = raw.Type
		}
		c.Consumers[name] = decodeBlock(o.Type, typ, o.Settings, "consumers."+name, &p, &foreign)
	}
	c.decodeErr, c.foreignErr = p.Err(), foreign.Err()
	return nil
}

// decodeBlock decodes the keys of a block other than type (and consumers)
// onto the struct of type typ. written is the type as written in the block.
// Problems are recorded with prefix, the block's path: in p, or in foreign
// for the keys that belong to another type (reported with the checks, as
// mistakes in a block that decoded).
func decodeBlock(written, typ string, settings map[string]any, prefix string, p, foreign *config.Problems) *block {
	b := &block{typ: written, cred: newCredential(typ)}
	main := prefix == ""
	if b.cred == nil {
		// The type is missing or unknown (Validate says so): any type's key
		// may be meant; keys of none are reported.
		for _, key := range slices.Sorted(maps.Keys(settings)) {
			if len(typesWith(key)) == 0 {
				p.Add(joinPath(prefix, key), "unknown key"+config.Suggest(key, knownKeys("", main)))
			}
		}
		return b
	}
	err := config.DecodeBlock(settings, b.cred)
	var ce *config.ConfigError
	if !errors.As(err, &ce) {
		p.AddErr(prefix, err)
		return b
	}
	for _, fe := range ce.Problems {
		switch {
		case !strings.HasPrefix(fe.Msg, "unknown key"):
			p.Add(joinPath(prefix, fe.Path), fe.Msg)
		case len(typesWith(fe.Path)) > 0:
			foreign.Addf(joinPath(prefix, fe.Path), "does not apply to type %s (it uses %s)", typ, strings.Join(typeKeys[typ], ", "))
		default:
			p.Add(joinPath(prefix, fe.Path), "unknown key"+config.Suggest(fe.Path, knownKeys(typ, main)))
		}
	}
	return b
}

// typesWith lists the types that have the key.
func typesWith(key string) []string {
	var out []string
	for _, typ := range types {
		if slices.Contains(typeKeys[typ], key) {
			out = append(out, typ)
		}
	}
	return out
}

// knownKeys lists, sorted, the keys a block of type typ may hold (of every
// type when typ is ""); main: the plugin's own block, which has consumers.
func knownKeys(typ string, main bool) []string {
	keys := []string{"type"}
	if main {
		keys = append(keys, "consumers")
	}
	for _, t := range types {
		if typ == "" || t == typ {
			keys = append(keys, typeKeys[t]...)
		}
	}
	slices.Sort(keys)
	return slices.Compact(keys)
}

// Validate reports the problems found while decoding, or else the keys of
// another type and the problems of the main credential and of every
// override. It changes nothing.
func (c *Config) Validate() error {
	if c.decodeErr != nil {
		return c.decodeErr
	}
	var p config.Problems
	p.AddErr("", c.foreignErr)
	c.main.check("", c.main.typ, &p)
	for _, name := range slices.Sorted(maps.Keys(c.Consumers)) {
		o := c.Consumers[name]
		if o == nil {
			p.Add("consumers."+name, "needs a credential, e.g. {token: \"${TOKEN}\"}")
			continue
		}
		typ := o.typ
		if typ == "" {
			typ = c.main.typ
		}
		o.check("consumers."+name, typ, &p)
	}
	return p.Err()
}

// check checks a block whose effective type is typ; prefix is its path.
func (b *block) check(prefix, typ string, p *config.Problems) {
	at := func(key string) string { return joinPath(prefix, key) }
	switch {
	case typ == "":
		p.Addf(at("type"), "is required: one of %s", strings.Join(types, ", "))
	case b.cred == nil:
		p.Addf(at("type"), "unknown type %q: want one of %s", typ, strings.Join(types, ", "))
	default:
		b.cred.settle().check(at, p)
	}
}

// MarshalJSON shows the block as it is written, flat: its type and its
// type's settings, with their defaults (secrets redacted).
func (b *block) MarshalJSON() ([]byte, error) {
	typ := b.typ
	settings := []byte("{}")
	if b.cred != nil {
		typ = b.cred.kind()
		var err error
		if settings, err = json.Marshal(b.cred.settle()); err != nil {
			return nil, err
		}
	}
	head, err := json.Marshal(struct {
		Type string `json:"type"`
	}{typ})
	if err != nil {
		return nil, err
	}
	return joinObjects(head, settings), nil
}

// MarshalJSON shows the config for /admin/config as it is written: the main
// block's type and settings, and the overrides under consumers.
func (c *Config) MarshalJSON() ([]byte, error) {
	out, err := c.main.MarshalJSON()
	if err != nil || len(c.Consumers) == 0 {
		return out, err
	}
	consumers, err := json.Marshal(struct {
		Consumers map[string]*block `json:"consumers"`
	}{c.Consumers})
	if err != nil {
		return nil, err
	}
	return joinObjects(out, consumers), nil
}

// joinObjects returns the JSON object holding the members of objects a and b.
func joinObjects(a, b []byte) []byte {
	if len(b) <= 2 {
		return a
	}
	out := append(a[:len(a)-1:len(a)-1], ',')
	return append(out, b[1:]...)
}

func joinPath(prefix, key string) string {
	if prefix == "" {
		return key
	}
	return prefix + "." + key
}

// checkValueOrKeys checks the one secret (field: its key) or the pool of
// keys of a bearer, header or query credential.
func checkValueOrKeys(at func(string) string, field string, v config.Secret, keys []config.Secret, p *config.Problems) {
	switch {
	case v.IsSet() && len(keys) > 0:
		p.Addf(at(field), "set %s or keys, not both", field)
	case !v.IsSet() && len(keys) == 0:
		p.Addf(at(field), "is required (or keys, a pool); is its ${VAR} or file: source empty?")
	}
	for i, k := range keys {
		if !k.IsSet() {
			p.Addf(at(fmt.Sprintf("keys[%d]", i)), "is empty")
		}
	}
	for i, k := range pool(v, keys) {
		if strings.ContainsAny(k.Reveal(), "\r\n\x00") {
			key := at(field)
			if len(keys) > 0 {
				key = at(fmt.Sprintf("keys[%d]", i))
			}
			p.Add(key, "must not contain CR, LF or NUL")
		}
	}
}

// pool is the secrets a static credential takes turns with: v alone when it
// is set, else keys.
func pool(v config.Secret, keys []config.Secret) []config.Secret {
	if v.IsSet() {
		return []config.Secret{v}
	}
	return keys
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

// Plugin is the compiled plugin for one route.
type Plugin struct {
	main       injector
	byConsumer map[string]injector // nil without per-consumer overrides
}

var _ proxy.Plugin = (*Plugin)(nil)

func build(c *Config, b *proxy.Build) (proxy.Plugin, error) {
	var p config.Problems
	for _, name := range slices.Sorted(maps.Keys(c.Consumers)) {
		if _, ok := b.Consumers[name]; !ok {
			p.Addf("consumers."+name, "unknown consumer %q (not in the top-level consumers)", name)
		}
	}
	if err := p.Err(); err != nil {
		return nil, err
	}
	ia := &Plugin{}
	main, err := c.main.cred.settle().newInjector(b)
	if err != nil {
		return nil, err
	}
	ia.main = main
	if len(c.Consumers) > 0 {
		ia.byConsumer = map[string]injector{}
		for _, name := range slices.Sorted(maps.Keys(c.Consumers)) {
			in, err := c.Consumers[name].cred.settle().newInjector(b)
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

// Handle attaches the consumer's (or the route's) credential and calls next.
func (ia *Plugin) Handle(ctx *fasthttp.RequestCtx, ex *proxy.Exchange, next proxy.Handler) error {
	in := ia.main
	if ia.byConsumer != nil && ex.Consumer != "" {
		if o, ok := ia.byConsumer[ex.Consumer]; ok {
			in = o
		}
	}
	return in.inject(ctx, ex, next)
}

// structKeys lists the koanf keys of a struct, squashed structs included.
func structKeys(t reflect.Type) []string {
	var keys []string
	for i := range t.NumField() {
		f := t.Field(i)
		key, opts, _ := strings.Cut(f.Tag.Get("koanf"), ",")
		switch {
		case opts == "squash":
			keys = append(keys, structKeys(f.Type)...)
		case key != "":
			keys = append(keys, key)
		}
	}
	return keys
}
