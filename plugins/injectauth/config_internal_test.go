package injectauth

import (
	"reflect"
	"testing"

	"github.com/sluice-gw/sluice/proxy/config"
)

// decoded decodes a block as the gateway does (config.DecodeBlock onto a
// new config), from YAML so that values have their YAML types.
func decoded(t *testing.T, yaml string) *Config {
	t.Helper()
	cfg, err := config.LoadBytes([]byte("upstreams: {up: {url: \"http://127.0.0.1:9\"}}\nroutes: {r: {path: \"/{p:*}\", upstream: up, plugins: {inject_auth: " + yaml + "}}}\n"))
	if err != nil {
		t.Fatal(err)
	}
	c := Factory.NewConfig().(*Config)
	if err := config.DecodeBlock(cfg.Routes["r"].Plugins["inject_auth"], c); err != nil {
		t.Fatal(err)
	}
	return c
}

// TestBlockDecodesOntoItsType: the core's decoder puts each block's keys
// in the struct of its type (the override's type defaulting to the main
// block's), with the type's defaults where a key is absent.
func TestBlockDecodesOntoItsType(t *testing.T) {
	c := decoded(t, `{type: hmac, secret: s3cret, sign: [method, body], consumers: {billing: {secret: other}, crm: {type: header, name: X-Key, keys: [a, b]}}}`)
	if err := c.Validate(); err != nil {
		t.Fatal(err)
	}
	want := &hmacCredential{Secret: "s3cret", Algorithm: "sha256", Header: "X-Signature", Sign: []string{"method", "body"}, Encoding: "hex"}
	if !reflect.DeepEqual(c.main.cred, want) {
		t.Errorf("main: %#v, want %#v", c.main.cred, want)
	}
	billing := &hmacCredential{Secret: "other", Algorithm: "sha256", Header: "X-Signature", Sign: allParts, Encoding: "hex"}
	if o := c.Consumers["billing"]; o == nil || o.typ != "" || !reflect.DeepEqual(o.cred, billing) {
		t.Errorf("billing: %#v, want type as written (none) and %#v", o, billing)
	}
	crm := &headerCredential{namedValue{Name: "X-Key", Keys: []config.Secret{"a", "b"}}}
	if o := c.Consumers["crm"]; o == nil || o.typ != TypeHeader || !reflect.DeepEqual(o.cred, crm) {
		t.Errorf("crm: %#v, want %#v", o, crm)
	}
	// Defaults that depend on other settings are settled at build: the
	// timestamp header only where the timestamp is signed.
	if s := c.main.cred.settle().(*hmacCredential); s.TimestampHeader != "" {
		t.Errorf("main: timestamp header %q without a signed timestamp", s.TimestampHeader)
	}
	if s := c.Consumers["billing"].cred.settle().(*hmacCredential); s.TimestampHeader != defaultTimestampHdr {
		t.Errorf("billing: timestamp header %q, want the default", s.TimestampHeader)
	}
}

// TestValidateChangesNothing: a config checked by Validate equals one
// decoded from the same block and not checked, valid or not.
func TestValidateChangesNothing(t *testing.T) {
	for _, yaml := range []string{
		`{type: bearer, token: a, consumers: {billing: {token: b}, crm: {type: basic, username: u, password: p}}}`,
		`{type: hmac, secret: s, algorithm: "", sign: []}`,
		`{type: oauth2_client_credentials, token_url: "http://127.0.0.1:9/t", client_id: a, client_secret: b, refresh_before: 0s}`,
		`{type: header, name: Host, value: v, consumers: {billing: {}}}`,
		`{type: bearer, token: a, name: X}`,
		`{type: digest}`,
	} {
		checked, fresh := decoded(t, yaml), decoded(t, yaml)
		_ = checked.Validate()
		if !reflect.DeepEqual(checked, fresh) {
			t.Errorf("%s: Validate changed the config:\n%#v\nwas\n%#v", yaml, checked, fresh)
		}
	}
}

// TestTypeKeys: the keys of each type are its struct's, in field order (the
// messages that say which keys a type uses list them so).
func TestTypeKeys(t *testing.T) {
	want := map[string][]string{
		TypeBearer: {"token", "keys"},
		TypeHeader: {"name", "value", "keys"},
		TypeQuery:  {"name", "value", "keys"},
		TypeBasic:  {"username", "password"},
		TypeOAuth2: {"token_url", "client_id", "client_secret", "scopes", "audience", "auth_style", "refresh_before"},
		TypeHMAC:   {"secret", "algorithm", "header", "timestamp_header", "sign", "encoding", "prefix"},
	}
	if !reflect.DeepEqual(typeKeys, want) {
		t.Errorf("typeKeys = %v, want %v", typeKeys, want)
	}
}
