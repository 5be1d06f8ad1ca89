package main

import (
	"bytes"
	"encoding/json"
	"os"
	"testing"
)

// TestPrintConfigSchema: `sluice config schema` prints the schema that
// docs/config.schema.json holds, as one JSON document.
func TestPrintConfigSchema(t *testing.T) {
	var out bytes.Buffer
	if err := printConfigSchema(&out); err != nil {
		t.Fatal(err)
	}
	var doc struct {
		Schema     string                     `json:"$schema"`
		Properties map[string]json.RawMessage `json:"properties"`
	}
	if err := json.Unmarshal(out.Bytes(), &doc); err != nil {
		t.Fatalf("not JSON: %v", err)
	}
	if doc.Schema != "https://json-schema.org/draft/2020-12/schema" {
		t.Errorf("$schema = %q", doc.Schema)
	}
	for _, key := range []string{"server", "upstreams", "routes", "plugins", "cache"} {
		if doc.Properties[key] == nil {
			t.Errorf("no property %q", key)
		}
	}
	committed, err := os.ReadFile("../../docs/config.schema.json")
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(out.Bytes(), committed) {
		t.Fatal("docs/config.schema.json is stale: go run ./cmd/sluice config schema > docs/config.schema.json")
	}
}
