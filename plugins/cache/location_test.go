package cache

import (
	"net"
	"strings"
	"testing"
)

// A Location names the target only with its host and port (or its host and
// no port); the base path comes off only at a segment end. The old code
// matched "://host" as a substring of the target URL and cut the base path
// as a plain prefix.
func TestLocationRelativeToTheTarget(t *testing.T) {
	for _, c := range []struct {
		loc, target string
		same        bool
	}{
		{"api.example.com", "api.example.com", true},
		{"API.example.com", "api.example.com", true},
		{"api.example.com", "api.example.com:8443", true},
		{"api.example.com:8443", "api.example.com:8443", true},
		{"api.example.com:9999", "api.example.com:8443", false},
		{"127.0.0.1:1", "127.0.0.1:2", false},
		{"api.example.com", "api.example.com.evil.net", false},
		{"example.com", "api.example.com", false},
		{"[::1]", "[::1]:8080", true},
	} {
		if got := sameHost(c.loc, c.target); got != c.same {
			t.Errorf("sameHost(%q, %q) = %v, want %v", c.loc, c.target, got, c.same)
		}
	}
}

// FuzzSameHost: a Location host from a provider is hostile bytes. No panic;
// a host always names itself; a host whose name differs from the target's
// (case aside) never names it.
func FuzzSameHost(f *testing.F) {
	for _, s := range []string{"api.example.com", "api.example.com:8443", "[::1]:8080", "[::1]", "", ":", "[", "a:b:c", "API.example.com.evil.net"} {
		f.Add(s, "api.example.com:8443")
	}
	f.Fuzz(func(t *testing.T, loc, target string) {
		if !sameHost(target, target) {
			t.Fatalf("sameHost(%q, itself) = false", target)
		}
		if !sameHost(loc, target) {
			return
		}
		name := func(s string) string {
			if h, _, err := net.SplitHostPort(s); err == nil {
				return strings.ToLower(h)
			}
			return strings.ToLower(strings.Trim(s, "[]"))
		}
		if name(loc) != name(target) {
			t.Fatalf("sameHost(%q, %q): different hosts %q and %q", loc, target, name(loc), name(target))
		}
	})
}
