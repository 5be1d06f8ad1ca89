package proxy

import (
	"fmt"
	"log/slog"
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
