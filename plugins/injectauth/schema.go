package injectauth

import (
	"slices"

	"github.com/invopop/jsonschema"
	"github.com/sluice-gw/sluice/proxy"
)

// The JSON Schema of the block (proxy.ConfigSchema). Config's fields do not
// describe the YAML (UnmarshalMapstructure decodes it by its type), so the
// schema is reflected from blockShape instead: the keys of every type,
// with those of another type than the one written refused. (The shapes are
// never encoded: json:"-" keeps the embedded types' keys from clashing.)

// JSONSchemaAlias makes the schema of the block blockShape's.
func (Config) JSONSchemaAlias() any { return blockShape{} }

// blockShape is the inject_auth block as written: a credential type, the
// keys of that type, and optionally another credential per consumer.
type blockShape struct {
	// Type is the credential type: bearer, header, query, basic,
	// oauth2_client_credentials or hmac. Required.
	Type             string `koanf:"type"`
	bearerCredential `koanf:",squash" json:"-"`
	namedValue       `koanf:",squash" json:"-"`
	basicCredential  `koanf:",squash" json:"-"`
	oauth2Credential `koanf:",squash" json:"-"`
	hmacCredential   `koanf:",squash" json:"-"`
	// Consumers overrides the credential for some consumers (as identified
	// by authenticate): {billing: {type: bearer, token: "..."}}. Each entry
	// has the shape of the main block without consumers; its type defaults
	// to the main block's.
	Consumers map[string]overrideShape `koanf:"consumers"`
}

// overrideShape is a consumer's own credential, under consumers.
type overrideShape struct {
	// Type is the credential type of this consumer. Default: the main block's.
	Type             string `koanf:"type"`
	bearerCredential `koanf:",squash" json:"-"`
	namedValue       `koanf:",squash" json:"-"`
	basicCredential  `koanf:",squash" json:"-"`
	oauth2Credential `koanf:",squash" json:"-"`
	hmacCredential   `koanf:",squash" json:"-"`
}

// JSONSchemaExtend lists the types and refuses, for each, the keys of the
// others, in the block and in the overrides that have no type of their own.
func (blockShape) JSONSchemaExtend(s *jsonschema.Schema) {
	setTypeEnum(s)
	for _, typ := range types {
		then := onlyKeysOf(typ)
		then.Properties.Set("consumers", &jsonschema.Schema{AdditionalProperties: &jsonschema.Schema{
			If:   &jsonschema.Schema{Type: "object", Not: &jsonschema.Schema{Required: []string{"type"}}},
			Then: onlyKeysOf(typ),
		}})
		s.AllOf = append(s.AllOf, &jsonschema.Schema{If: isType(typ), Then: then})
	}
}

// JSONSchemaExtend lists the types and refuses, for each, the keys of the
// others.
func (overrideShape) JSONSchemaExtend(s *jsonschema.Schema) {
	setTypeEnum(s)
	for _, typ := range types {
		s.AllOf = append(s.AllOf, &jsonschema.Schema{If: isType(typ), Then: onlyKeysOf(typ)})
	}
}

func setTypeEnum(s *jsonschema.Schema) {
	old, _ := s.Properties.Get("type")
	enum := proxy.SchemaEnum(types...)
	enum.Description = old.Description
	s.Properties.Set("type", enum)
}

// isType matches a block whose type is typ.
func isType(typ string) *jsonschema.Schema {
	s := &jsonschema.Schema{Type: "object", Required: []string{"type"}, Properties: jsonschema.NewProperties()}
	s.Properties.Set("type", &jsonschema.Schema{Const: typ})
	return s
}

// onlyKeysOf refuses the keys of every type but typ.
func onlyKeysOf(typ string) *jsonschema.Schema {
	s := &jsonschema.Schema{Properties: jsonschema.NewProperties()}
	for _, other := range types {
		for _, key := range typeKeys[other] {
			if !slices.Contains(typeKeys[typ], key) {
				s.Properties.Set(key, jsonschema.FalseSchema)
			}
		}
	}
	return s
}
