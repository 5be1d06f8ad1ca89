package config

import (
	"crypto/sha256"
	"fmt"
	"io"
	"log/slog"
	"maps"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"sync"
)

// Secret is a string that must never be printed: a token, a password, a key.
// Every way Go has to print or encode a value (String, GoString, fmt verbs,
// JSON, text, slog) yields "[redacted]" (or "" when the secret is empty, so an
// unset secret is visible as unset). Only Reveal returns the value; call it at
// the one place the value is sent on the wire.
type Secret string

const redacted = "[redacted]"

// Reveal returns the secret value.
func (s Secret) Reveal() string { return string(s) }

// IsSet reports whether the secret is non-empty.
func (s Secret) IsSet() bool { return s != "" }

func (s Secret) mask() string {
	if s == "" {
		return ""
	}
	return redacted
}

// String implements fmt.Stringer.
func (s Secret) String() string { return s.mask() }

// GoString implements fmt.GoStringer (%#v).
func (s Secret) GoString() string { return `"` + s.mask() + `"` }

// Format implements fmt.Formatter so that no verb (%s, %q, %v, %x...) prints the value.
func (s Secret) Format(f fmt.State, verb rune) {
	switch verb {
	case 'q':
		fmt.Fprintf(f, "%q", s.mask())
	default:
		_, _ = f.Write([]byte(s.mask()))
	}
}

// MarshalText implements encoding.TextMarshaler (used by JSON map keys, YAML...).
func (s Secret) MarshalText() ([]byte, error) { return []byte(s.mask()), nil }

// MarshalJSON implements json.Marshaler.
func (s Secret) MarshalJSON() ([]byte, error) { return []byte(`"` + s.mask() + `"`), nil }

// LogValue implements slog.LogValuer.
func (s Secret) LogValue() slog.Value { return slog.StringValue(s.mask()) }

// SecretFilePrefix marks a secret value read from a file: "file:/run/secrets/github"
// (a mounted Kubernetes or Docker secret). The file is read each time the
// config loads, so a reload picks up a rotated secret; one trailing newline
// is dropped.
const SecretFilePrefix = "file:"

// secretHook reads "file:/abs/path" values of Secret fields (in the main
// config and in plugin blocks) from their file. An unreadable or empty file
// is a config error at the field's key path; the message names the file,
// never its content.
func secretHook(_ reflect.Type, to reflect.Type, data any) (any, error) {
	if to != secretType {
		return data, nil
	}
	s, ok := data.(string)
	if !ok {
		return data, nil
	}
	path, isFile := strings.CutPrefix(s, SecretFilePrefix)
	if !isFile {
		return data, nil
	}
	if !filepath.IsAbs(path) {
		return nil, fmt.Errorf("secret file %q: want an absolute path, e.g. \"file:/run/secrets/token\"", path)
	}
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("cannot read secret file %q: %v", path, UnwrapPathErr(err))
	}
	v := strings.TrimSuffix(strings.TrimSuffix(string(b), "\n"), "\r")
	if v == "" {
		return nil, fmt.Errorf("secret file %q is empty", path)
	}
	secretFiles.remember(v, path)
	return Secret(v), nil
}

// secretFiles remembers the values read from secret files, so that
// Config.Redact blots them out wherever else a config value could echo one.
var secretFiles = &fileValues{m: map[string]string{}}

type fileValues struct {
	mu sync.Mutex
	m  map[string]string // value -> path
}

func (f *fileValues) remember(value, path string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.m[value] = path
}

// redactSecretFiles replaces every value read from a secret file with
// "file:PATH".
func redactSecretFiles(s string) string {
	secretFiles.mu.Lock()
	defer secretFiles.mu.Unlock()
	for v, path := range secretFiles.m {
		if len(v) >= 4 {
			s = strings.ReplaceAll(s, v, SecretFilePrefix+path)
		}
	}
	return s
}

// SecretFiles lists, sorted, the files the config's "file:/abs/path" values
// name: those of the main config, and those of plugin blocks and sections,
// which are read later, when the pipeline is compiled. The config watcher
// (reload.watch) watches them.
//
// It is every "file:/abs/path" string of the document after ${VAR}
// expansion and SLUICE_ overrides. That is enough: a secret is read from a
// file only for such a string of the document, wherever a plugin decodes it
// (plugins decode the blocks they are given, which are parts of the same
// document). It may name a few files more than were read, when a value that
// is not a secret happens to start with "file:/": watching one of those
// costs a reload that changes nothing, should that file change.
func (c *Config) SecretFiles() []string { return slices.Clone(c.secretFiles) }

// FileSum returns the SHA-256 of a file the config was read from, as Load
// read it: the config file (by its absolute path) and the files of
// SecretFiles (read just before the config was decoded; a plugin reads its
// secret files a moment later, when compiled). ok is false for a file that
// could not be read, or that is no regular file. The config watcher starts
// from these: what the serving config was made of.
func (c *Config) FileSum(path string) (sum [sha256.Size]byte, ok bool) {
	sum, ok = c.fileSums[path]
	return sum, ok
}

// hashFile returns the SHA-256 of a regular file's content. It reads
// nothing else: a "file:" value that is no secret could name a device or a
// pipe.
func hashFile(path string) (sum [sha256.Size]byte, ok bool) {
	f, err := os.Open(path)
	if err != nil {
		return sum, false
	}
	defer f.Close()
	if fi, err := f.Stat(); err != nil || !fi.Mode().IsRegular() {
		return sum, false
	}
	h := sha256.New()
	if _, err := io.Copy(h, f); err != nil {
		return sum, false
	}
	h.Sum(sum[:0])
	return sum, true
}

// secretFilePaths collects the absolute paths of the "file:" values in a
// document tree (see SecretFiles).
func secretFilePaths(tree any) []string {
	found := map[string]bool{}
	var walk func(any)
	walk = func(node any) {
		switch v := node.(type) {
		case map[string]any:
			for _, child := range v {
				walk(child)
			}
		case map[any]any:
			for _, child := range v {
				walk(child)
			}
		case []any:
			for _, child := range v {
				walk(child)
			}
		case string:
			if path, ok := strings.CutPrefix(v, SecretFilePrefix); ok && filepath.IsAbs(path) {
				found[filepath.Clean(path)] = true
			}
		}
	}
	walk(tree)
	return slices.Sorted(maps.Keys(found))
}
