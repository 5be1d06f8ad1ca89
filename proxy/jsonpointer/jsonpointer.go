// Package jsonpointer evaluates RFC 6901 JSON pointers ("/error/message",
// "/errors/0/code") against documents decoded by encoding/json. Pointers are
// parsed once, at config load; evaluation walks the decoded document.
package jsonpointer

import (
	"fmt"
	"strconv"
	"strings"
)

// Pointer is a parsed JSON pointer. The zero value (or Parse("")) points at
// the whole document.
type Pointer struct {
	raw    string
	tokens []string
}

// Parse parses s. It must be empty or start with '/'; "~0" and "~1" are the
// escapes of '~' and '/'. Any other '~' is an error.
func Parse(s string) (Pointer, error) {
	if s == "" {
		return Pointer{}, nil
	}
	if s[0] != '/' {
		return Pointer{}, fmt.Errorf("invalid JSON pointer %q: must start with '/' (e.g. \"/error/message\")", s)
	}
	parts := strings.Split(s[1:], "/")
	for i, p := range parts {
		if strings.Contains(strings.NewReplacer("~0", "", "~1", "").Replace(p), "~") {
			return Pointer{}, fmt.Errorf("invalid JSON pointer %q: '~' must be followed by 0 or 1", s)
		}
		parts[i] = strings.NewReplacer("~1", "/", "~0", "~").Replace(p)
	}
	return Pointer{raw: s, tokens: parts}, nil
}

// String returns the pointer as written.
func (p Pointer) String() string { return p.raw }

// IsZero reports whether p points at the whole document.
func (p Pointer) IsZero() bool { return p.raw == "" }

// Eval returns the value p points at in doc (as produced by json.Unmarshal
// into an any), and whether it exists.
func (p Pointer) Eval(doc any) (any, bool) {
	cur := doc
	for _, tok := range p.tokens {
		switch v := cur.(type) {
		case map[string]any:
			next, ok := v[tok]
			if !ok {
				return nil, false
			}
			cur = next
		case []any:
			if tok == "" || (len(tok) > 1 && tok[0] == '0') {
				return nil, false
			}
			i, err := strconv.Atoi(tok)
			if err != nil || i < 0 || i >= len(v) {
				return nil, false
			}
			cur = v[i]
		default:
			return nil, false
		}
	}
	return cur, true
}
