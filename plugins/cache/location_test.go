package cache

import "testing"

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
