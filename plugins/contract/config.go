package contract

import (
	"path/filepath"
	"strings"

	"github.com/sluice-gw/sluice/proxy/config"
)

// Config of contract.
type Config struct {
	// Spec is the provider's OpenAPI 3 document (YAML or JSON), as
	// "file:PATH". A relative PATH is relative to the config file's
	// directory. The document is read and compiled when the config loads
	// (and at every reload): a document that does not parse, does not
	// validate or has a reference that does not resolve is a config error.
	Spec string `koanf:"spec" json:"spec"`
	// Requests is what happens to a call that does not match the document:
	// enforce (default: answered 400 contract_violation, the provider is not
	// called), report (forwarded, counted and logged) or off (not checked).
	Requests string `koanf:"requests" json:"requests"`
	// Responses is report (default: the provider's answers are checked
	// against the document, sampled, and drift is counted and logged) or
	// off.
	Responses string `koanf:"responses" json:"responses"`
	// Sample is the share of answers checked when responses is report,
	// from 0 to 1 (0.1: one answer in ten). Default 1.
	Sample float64 `koanf:"sample" json:"sample"`
	// MaxBody is the largest body (request or answer) whose content is
	// checked; a larger one has its parameters, status and headers checked
	// but not its body, and is counted in
	// sluice_contract_unchecked_total{reason="body_too_large"}. Default 1MiB.
	MaxBody config.Size `koanf:"max_body" json:"max_body"`
}

// Modes.
const (
	ModeEnforce = "enforce"
	ModeReport  = "report"
	ModeOff     = "off"
)

// Defaults sets the defaults above.
func (c *Config) Defaults() {
	*c = Config{Requests: ModeEnforce, Responses: ModeReport, Sample: 1, MaxBody: 1 << 20}
}

// Validate checks the settings; the document itself is read when the
// plugin is built.
func (c *Config) Validate() error {
	var p config.Problems
	path, ok := strings.CutPrefix(c.Spec, config.SecretFilePrefix)
	switch {
	case c.Spec == "":
		p.Add("spec", `is required: the provider's OpenAPI document, e.g. "file:openapi/stripe.yaml"`)
	case !ok || path == "":
		p.Addf("spec", `want "file:PATH" (the OpenAPI document's file), got %q`, c.Spec)
	}
	switch c.Requests {
	case ModeEnforce, ModeReport, ModeOff:
	default:
		p.Addf("requests", "unknown mode %q: want enforce, report or off", c.Requests)
	}
	switch c.Responses {
	case ModeReport, ModeOff:
	default:
		p.Addf("responses", "unknown mode %q: want report or off", c.Responses)
	}
	if c.Sample < 0 || c.Sample > 1 {
		p.Addf("sample", "must be between 0 and 1 (the share of answers checked), got %v", c.Sample)
	}
	if c.MaxBody <= 0 {
		p.Add("max_body", "must be a positive size, e.g. 1MiB")
	}
	return p.Err()
}

// specPath returns the document's path: the spec value without "file:",
// joined to dir when relative.
func (c *Config) specPath(dir string) string {
	path := strings.TrimPrefix(c.Spec, config.SecretFilePrefix)
	if !filepath.IsAbs(path) && dir != "" {
		path = filepath.Join(dir, path)
	}
	return filepath.Clean(path)
}
