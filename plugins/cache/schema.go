package cache

import (
	"github.com/invopop/jsonschema"
	"github.com/sluice-gw/sluice/proxy"
)

// JSONSchemaExtend describes query for the JSON Schema (proxy.ConfigSchema):
// its field is untyped because it is a word or a list (see queryMode).
func (Config) JSONSchemaExtend(s *jsonschema.Schema) {
	old, _ := s.Properties.Get("query")
	one := uint64(1)
	q := proxy.SchemaEnum("all", "none")
	q.AnyOf = append(q.AnyOf, &jsonschema.Schema{Type: "array", MinItems: &one,
		Items: &jsonschema.Schema{Type: "string", MinLength: &one}})
	q.Description = old.Description
	s.Properties.Set("query", q)
}
