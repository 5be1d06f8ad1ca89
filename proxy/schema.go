package proxy

//go:generate go run schema_comments_gen.go

import (
	"bytes"
	"encoding/json"
	"fmt"
	"maps"
	"path"
	"reflect"
	"slices"
	"strings"

	"github.com/invopop/jsonschema"
	"github.com/sluice-gw/sluice/proxy/config"
)

// SchemaEnvPattern matches a ${VAR} reference (or ${VAR:-default}). The
// loader expands them before it decodes anything, so the JSON Schema accepts
// a string holding one wherever a number, a boolean, a duration or a size
// goes: what the variable will hold is not known while editing.
const SchemaEnvPattern = `\$\{[A-Za-z_][A-Za-z0-9_]*(:-[^}]*)?\}`

// Patterns of the values the loader reads from strings (see proxy/config:
// durationHook, ParseSize, and mapstructure's weakly typed decoding of
// numbers and booleans written as strings).
const (
	durationPattern = `^\s*\+?(0|(([0-9]+(\.[0-9]*)?|\.[0-9]+)(ns|us|µs|μs|ms|s|m|h))+)\s*$`
	sizePattern     = `^\s*([0-9]+(\.[0-9]*)?|\.[0-9]+)([eE][+-]?[0-9]+)?\s*([kKmMgG][iI]?[bB]|[bB])?\s*$`
	intPattern      = `^[+-]?[0-9]+$`
	floatPattern    = `^[+-]?([0-9]+(\.[0-9]*)?|\.[0-9]+)([eE][+-]?[0-9]+)?$`
	boolPattern     = `^(1|t|T|TRUE|true|True|0|f|F|FALSE|false|False)?$`
	// A host:port address: something, a colon, a port (net.SplitHostPort).
	addrPattern = `:[^:]*$`
	// A secret read from a file needs an absolute path: "file:/run/secrets/x".
	relativeSecretFile = `^file:([^/$]|$)`
)

var (
	durationType     = reflect.TypeFor[config.Duration]()
	sizeType         = reflect.TypeFor[config.Size]()
	secretType       = reflect.TypeFor[config.Secret]()
	pluginBlocksType = reflect.TypeFor[config.PluginBlocks]()
	configPkg        = reflect.TypeFor[config.Config]().PkgPath()
)

// ConfigSchema returns the JSON Schema (draft 2020-12, indented, ending in a
// newline) of the whole configuration file as the loader reads it with the
// plugins of reg: the gateway's own sections, the top-level sections the
// plugins own (cache:) and, wherever the file has plugins:, one property per
// registered plugin with the schema of its block. It is generated from the
// structs the loader decodes into (koanf keys, Go doc comments as
// descriptions), so it cannot drift from them. `sluice config schema`
// prints it; docs/config.schema.json is a copy for editors.
//
// The schema is strict where the loader is: an unknown key, in a section, a
// plugin block or a route, fails it, and so does an unknown plugin name. It
// is as lenient as the loader where the loader is lenient: a value written
// "${VAR}", a number where a string goes, "a, b" or a single value where a
// list goes, null (the default) for any key, any keys in a block with
// enabled: false.
//
// It uses only keywords that draft-07 tools understand too (no
// unevaluatedProperties, no $dynamicRef), for editors whose YAML support
// stops at draft-07.
func ConfigSchema(reg *Registry) ([]byte, error) {
	b := newSchemaBuilder()
	root, err := b.build(reg)
	if err != nil {
		return nil, err
	}
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false)
	enc.SetIndent("", "  ")
	if err := enc.Encode(root); err != nil {
		return nil, fmt.Errorf("config schema: %w", err)
	}
	return buf.Bytes(), nil
}

// SchemaEnum returns the schema of a key whose value is one of values, a
// ${VAR} reference, or null (the default). Plugin configs use it in their
// JSONSchemaExtend for keys their struct types as a plain string.
func SchemaEnum(values ...string) *jsonschema.Schema {
	enum := make([]any, len(values))
	for i, v := range values {
		enum[i] = v
	}
	return &jsonschema.Schema{AnyOf: []*jsonschema.Schema{
		{Type: "string", Enum: enum},
		envString(),
		{Type: "null"},
	}}
}

type schemaBuilder struct {
	r    *jsonschema.Reflector
	defs jsonschema.Definitions
}

func newSchemaBuilder() *schemaBuilder {
	b := &schemaBuilder{defs: jsonschema.Definitions{}}
	b.r = &jsonschema.Reflector{
		Anonymous:                  true,
		FieldNameTag:               "koanf",
		RequiredFromJSONSchemaTags: true, // nothing is required: every key has a default or an env override
		Mapper:                     b.mapType,
		Namer:                      schemaName,
		CommentMap:                 configComments,
	}
	return b
}

// schemaName names the $defs of structs: the config's own by their name
// ("UpstreamConfig"), a plugin's with its package ("cache.Config").
func schemaName(t reflect.Type) string {
	switch {
	case t.Name() == "" || t.PkgPath() == "":
		return ""
	case t.PkgPath() == configPkg:
		return t.Name()
	}
	return path.Base(t.PkgPath()) + "." + t.Name()
}

// reflect returns the schema of t, its struct definitions added to b.defs.
func (b *schemaBuilder) reflect(t reflect.Type) *jsonschema.Schema {
	s := b.r.ReflectFromType(t)
	maps.Copy(b.defs, s.Definitions)
	s.Definitions, s.Version, s.ID = nil, "", ""
	return s
}

// mapType gives the config's value types and Go's scalar, slice and map
// types the shapes the loader accepts for them (invopop's Mapper; nil lets
// invopop reflect the type, as it does structs).
func (b *schemaBuilder) mapType(t reflect.Type) *jsonschema.Schema {
	switch t {
	case durationType:
		return durationSchema()
	case sizeType:
		return sizeSchema()
	case secretType:
		return secretSchema()
	case pluginBlocksType:
		return &jsonschema.Schema{Ref: "#/$defs/plugins"}
	}
	switch t.Kind() {
	case reflect.String:
		return textSchema()
	case reflect.Bool:
		return scalarSchema("boolean", boolPattern, "want true or false, or a ${VAR} reference")
	case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64,
		reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64:
		return scalarSchema("integer", intPattern, "want a whole number, or a ${VAR} reference")
	case reflect.Float32, reflect.Float64:
		return scalarSchema("number", floatPattern, "want a number, or a ${VAR} reference")
	case reflect.Slice:
		// A list, or a single item: the loader reads "a, b" as a list and
		// lifts a single value (or a single map) into one.
		return &jsonschema.Schema{AnyOf: []*jsonschema.Schema{
			{Type: "array", Items: b.reflect(t.Elem())},
			b.reflect(t.Elem()),
		}}
	case reflect.Map:
		if t.Key().Kind() != reflect.String {
			return nil
		}
		s := &jsonschema.Schema{Extras: typeList("object", "null")}
		if t.Elem().Kind() != reflect.Interface {
			s.AdditionalProperties = b.reflect(t.Elem())
		}
		return s
	}
	return nil
}

func typeList(types ...string) map[string]any { return map[string]any{"type": types} }

func envString() *jsonschema.Schema {
	return &jsonschema.Schema{Type: "string", Pattern: SchemaEnvPattern}
}

// textSchema is a string key. The loader keeps a number or a boolean
// written there as written (retry's on: [503, timeout]).
func textSchema() *jsonschema.Schema {
	return &jsonschema.Schema{Extras: typeList("string", "number", "boolean", "null")}
}

// scalarSchema is a number or boolean key: the value itself, the same
// written as a string, or a ${VAR} reference.
func scalarSchema(typ, pattern, msg string) *jsonschema.Schema {
	s := &jsonschema.Schema{Pattern: pattern + "|" + SchemaEnvPattern, Extras: typeList(typ, "string", "null")}
	s.Extras["patternErrorMessage"] = msg
	return s
}

func durationSchema() *jsonschema.Schema {
	str := &jsonschema.Schema{Type: "string", Pattern: durationPattern + "|" + SchemaEnvPattern,
		Extras: map[string]any{"patternErrorMessage": `want a duration with a unit, such as "250ms", "10s" or "1m30s"`}}
	return &jsonschema.Schema{AnyOf: []*jsonschema.Schema{str, {Type: "integer", Const: 0}, {Type: "null"}}}
}

func sizeSchema() *jsonschema.Schema {
	s := &jsonschema.Schema{Pattern: sizePattern + "|" + SchemaEnvPattern, Minimum: "0",
		Extras: typeList("integer", "string", "null")}
	s.Extras["patternErrorMessage"] = `want a byte count such as 1048576, or a size such as "512KiB" or "10MiB"`
	return s
}

// secretSchema is a secret: a string, usually "${VAR}" or "file:/abs/path".
func secretSchema() *jsonschema.Schema {
	s := textSchema()
	s.Not = &jsonschema.Schema{Type: "string", Pattern: relativeSecretFile}
	return s
}

func addrSchema(emptyOK bool) *jsonschema.Schema {
	pattern := addrPattern + "|" + SchemaEnvPattern
	if emptyOK {
		pattern = "^$|" + pattern
	}
	str := &jsonschema.Schema{Type: "string", Pattern: pattern,
		Extras: map[string]any{"patternErrorMessage": `want host:port, e.g. "127.0.0.1:8080"`}}
	return &jsonschema.Schema{AnyOf: []*jsonschema.Schema{str, {Type: "null"}}}
}

// schemaRefinements narrow keys of the gateway's own sections that the
// struct types as a plain string to the values Config.validate accepts, so
// that an editor offers them. ConfigSchema fails if one names a key that no
// longer exists.
var schemaRefinements = []struct {
	def, key string
	schema   func() *jsonschema.Schema
}{
	{"ServerConfig", "listen", func() *jsonschema.Schema { return addrSchema(false) }},
	{"AdminConfig", "listen", func() *jsonschema.Schema { return addrSchema(true) }},
	{"RedisConfig", "addr", func() *jsonschema.Schema { return addrSchema(false) }},
	{"LogConfig", "level", func() *jsonschema.Schema { return SchemaEnum("debug", "info", "warn", "error") }},
	{"LogConfig", "format", func() *jsonschema.Schema { return SchemaEnum("json", "text") }},
	{"UpstreamConfig", "balance", func() *jsonschema.Schema {
		return SchemaEnum(config.BalanceRoundRobin, config.BalanceLeastInflight, "")
	}},
}

const enabledDescription = "false switches the plugin off where this block applies " +
	"(a route's block wins over its upstream's, which wins over the top level's); " +
	"the block's other keys are then not checked. Default true."

func (b *schemaBuilder) build(reg *Registry) (*jsonschema.Schema, error) {
	configType := reflect.TypeFor[config.Config]()
	if ref := b.reflect(configType); ref.Ref != "#/$defs/Config" {
		return nil, fmt.Errorf("config schema: unexpected root %q", ref.Ref)
	}
	root := b.defs["Config"]
	delete(b.defs, "Config")
	// Config.Sections collects the plugin-owned sections (",remain"): they
	// are listed by key below instead.
	for i := range configType.NumField() {
		if f := configType.Field(i); strings.Contains(f.Tag.Get("koanf"), ",remain") {
			if _, found := root.Properties.Delete(f.Name); !found {
				return nil, fmt.Errorf("config schema: no property for field %s", f.Name)
			}
		}
	}
	for _, key := range slices.Sorted(maps.Keys(reg.keys)) {
		t := reflect.TypeOf(reg.keys[key].section.newConfig())
		s := b.reflect(t)
		s.Description = typeComment(t)
		root.Properties.Set(key, s)
	}

	plugins := &jsonschema.Schema{
		Description: "Plugin blocks by plugin name. Each enables the plugin; a block with " +
			"nothing in it (\"name:\" or \"name: {}\") enables it with its defaults.",
		Properties:           jsonschema.NewProperties(),
		AdditionalProperties: jsonschema.FalseSchema,
		Extras:               typeList("object", "null"),
	}
	for _, name := range reg.Names() {
		f := reg.byName[name]
		t := reflect.TypeOf(f.NewConfig())
		ref := b.reflect(t)
		def := b.defs[strings.TrimPrefix(ref.Ref, "#/$defs/")]
		if def == nil || def.Properties == nil {
			return nil, fmt.Errorf("config schema: plugin %s: its config %s is not described as an object", name, t)
		}
		if _, taken := def.Properties.Get("enabled"); taken {
			return nil, fmt.Errorf("config schema: plugin %s: its config has a key enabled, which the gateway reserves", name)
		}
		def.Properties.Set("enabled", &jsonschema.Schema{Type: "boolean", Description: enabledDescription})
		// {enabled: false, ...}: the other keys are not checked.
		off := &jsonschema.Schema{Type: "object", Required: []string{"enabled"}, Properties: jsonschema.NewProperties()}
		off.Properties.Set("enabled", &jsonschema.Schema{Const: false})
		block := &jsonschema.Schema{Description: typeComment(t), If: off, Then: jsonschema.TrueSchema, Else: ref}
		b.defs["plugin."+name] = block
		plugins.Properties.Set(name, &jsonschema.Schema{Ref: "#/$defs/plugin." + name})
	}

	// Struct keys may be null ("server:" with nothing under it): the
	// defaults stay.
	for _, def := range b.defs {
		if def.Type == "object" {
			def.Type = ""
			def.Extras = typeList("object", "null")
		}
	}
	root.Type = ""
	root.Extras = typeList("object", "null")
	for _, r := range schemaRefinements {
		def := b.defs[r.def]
		if def == nil {
			return nil, fmt.Errorf("config schema: refinement of %s.%s: no such definition", r.def, r.key)
		}
		old, ok := def.Properties.Get(r.key)
		if !ok {
			return nil, fmt.Errorf("config schema: refinement of %s.%s: no such key", r.def, r.key)
		}
		s := r.schema()
		s.Description = old.Description
		def.Properties.Set(r.key, s)
	}
	b.defs["plugins"] = plugins

	root.Version = jsonschema.Version
	root.Title = "Sluice configuration"
	root.Description = "The configuration file of the Sluice gateway (docs/configuration.md). " +
		"Generated by `sluice config schema`."
	root.Definitions = b.defs
	return root, nil
}

func typeComment(t reflect.Type) string {
	for t.Kind() == reflect.Pointer {
		t = t.Elem()
	}
	return configComments[t.PkgPath()+"."+t.Name()]
}
