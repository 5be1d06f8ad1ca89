package config_test

import (
	"bytes"
	"errors"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/sluice-gw/sluice/plugins"
	"github.com/sluice-gw/sluice/proxy"
	"github.com/sluice-gw/sluice/proxy/config"
)

// yamlPosition matches the position a YAML parse error gives ("[3:7]", "line 3").
var yamlPosition = regexp.MustCompile(`\[\d+:\d+\]|line \d+`)

// FuzzLoadConfig: loading a config from bytes never panics; an error is
// either a YAML parse error naming its position or a *ConfigError whose every
// problem names a key path; a config that loads also compiles (Check) without
// panicking.
func FuzzLoadConfig(f *testing.F) {
	seeds, _ := filepath.Glob("../bench/*.yaml")
	seeds = append(seeds, "../../config.example.yaml")
	for _, name := range seeds {
		b, err := os.ReadFile(name)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
	}
	for _, s := range []string{
		"", "{}", "[]", "server: 1", "admin: {token: change-me}", "admin: {token: \"${NOPE_UNSET}\"}",
		"server: {listen: 8080}\n", "routes: {r: {path: api, upstream: x}}", "upstreams: {up: {url: \"ftp://x\"}}",
		"plugins: {headers: true}", "a: [1, {b: *x}]", "server:\n  read_timeout: -1s\n", "\t- x",
		"cluster: {redis: {addr: \"\"}}", "cache: {max_size: 1KB}", "consumers: {c: {keys: [short]}}",
	} {
		f.Add([]byte(s))
	}
	registry := plugins.Registry()
	f.Fuzz(func(t *testing.T, doc []byte) {
		// Files are read by file: secrets and ca_file; a device or /proc
		// file could block or never end: not a config the fuzzer should open.
		for _, p := range []string{"/dev", "/proc", "/sys", "file:"} {
			if bytes.Contains(doc, []byte(p)) {
				t.Skip()
			}
		}
		cfg, err := config.LoadBytes(doc)
		if err == nil {
			if cfg == nil {
				t.Fatal("nil config without an error")
			}
			if !bytes.Contains(doc, []byte("cluster")) { // Check would make a Redis client
				_ = proxy.Check(cfg, registry) // must not panic
			}
			return
		}
		var ce *config.ConfigError
		if !errors.As(err, &ce) {
			// The YAML parser names the position of most syntax errors
			// ("line 3"); a few carry none ("unknown anchor 'x' referenced", a
			// tab starting a line), which the library does not expose.
			if !strings.HasPrefix(err.Error(), "config: yaml: ") {
				t.Fatalf("error is neither a ConfigError nor a YAML syntax error: %v", err)
			}
			if !yamlPosition.MatchString(err.Error()) && !knownUnpositioned(err.Error()) {
				t.Logf("YAML error without a position: %v", err)
			}
			return
		}
		if len(ce.Problems) == 0 {
			t.Fatalf("ConfigError without problems")
		}
		for _, p := range ce.Problems {
			if p.Path == "" {
				t.Fatalf("problem without a key path: %q (document %q)", p.Msg, doc)
			}
		}
	})
}

func knownUnpositioned(msg string) bool {
	return strings.Contains(msg, "unknown anchor") || strings.Contains(msg, "cannot start any token")
}
