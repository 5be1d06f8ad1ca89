package config

import (
	"fmt"
	"strconv"
	"strings"
)

// Size is a number of bytes. In YAML it is written as a plain integer (bytes) or
// as a number with a unit: B, KB, MB, GB (powers of 1000) or KiB, MiB, GiB
// (powers of 1024), e.g. "10MiB". Units are case-insensitive.
type Size int64

var sizeUnits = []struct {
	suffix string
	mult   int64
}{
	// longest suffixes first so "kib" is not read as "b"
	{"kib", 1 << 10}, {"mib", 1 << 20}, {"gib", 1 << 30},
	{"kb", 1000}, {"mb", 1000 * 1000}, {"gb", 1000 * 1000 * 1000},
	{"b", 1},
}

// ParseSize parses "10MiB", "512KB", "1024" or "1024B".
func ParseSize(s string) (Size, error) {
	t := strings.TrimSpace(strings.ToLower(s))
	if t == "" {
		return 0, fmt.Errorf("empty size")
	}
	mult := int64(1)
	for _, u := range sizeUnits {
		if strings.HasSuffix(t, u.suffix) {
			mult = u.mult
			t = strings.TrimSpace(strings.TrimSuffix(t, u.suffix))
			break
		}
	}
	n, err := strconv.ParseFloat(t, 64)
	// ParseFloat also takes "nan", "inf" and hex floats ("0x1p10"): a size
	// is decimal digits with an optional fraction, nothing else.
	if err != nil || !plainDecimal(t) {
		return 0, fmt.Errorf("invalid size %q: want a byte count such as 1048576, \"512KiB\" or \"10MiB\"", s)
	}
	v := n * float64(mult)
	if v > float64(1<<62) {
		return 0, fmt.Errorf("size %q is too large", s)
	}
	return Size(v), nil
}

// plainDecimal reports whether s is digits with at most one '.' among them.
func plainDecimal(s string) bool {
	digits, dots := 0, 0
	for i := 0; i < len(s); i++ {
		switch c := s[i]; {
		case c >= '0' && c <= '9':
			digits++
		case c == '.':
			dots++
		default:
			return false
		}
	}
	return digits > 0 && dots <= 1
}

// String formats the size with the largest binary unit that divides it.
func (s Size) String() string {
	switch {
	case s >= 1<<30 && s%(1<<30) == 0:
		return strconv.FormatInt(int64(s)>>30, 10) + "GiB"
	case s >= 1<<20 && s%(1<<20) == 0:
		return strconv.FormatInt(int64(s)>>20, 10) + "MiB"
	case s >= 1<<10 && s%(1<<10) == 0:
		return strconv.FormatInt(int64(s)>>10, 10) + "KiB"
	}
	return strconv.FormatInt(int64(s), 10) + "B"
}

// MarshalText renders the size the way it is written in YAML.
func (s Size) MarshalText() ([]byte, error) { return []byte(s.String()), nil }
