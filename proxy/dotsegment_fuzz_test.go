package proxy

import (
	"strings"
	"testing"
)

// refDotSegment is a slow, separate statement of hasDotSegment's rule: decode
// percent escapes (and overlong UTF-8 dots and slashes) until nothing changes,
// at most maxDecodeRounds times; then split at '/' and '\', cut ';'
// parameters and look for "." and "..".
func refDotSegment(p string) bool {
	cur := p
	for round := 0; ; round++ {
		var b strings.Builder
		changed := false
		for i := 0; i < len(cur); i++ {
			if cur[i] == '%' && i+2 < len(cur) && strings.IndexByte("0123456789abcdefABCDEF", cur[i+1]) >= 0 &&
				strings.IndexByte("0123456789abcdefABCDEF", cur[i+2]) >= 0 {
				var v byte
				for _, h := range cur[i+1 : i+3] {
					v <<= 4
					switch {
					case h >= 'a':
						v |= byte(h-'a') + 10
					case h >= 'A':
						v |= byte(h-'A') + 10
					default:
						v |= byte(h - '0')
					}
				}
				b.WriteByte(v)
				i += 2
				changed = true
				continue
			}
			b.WriteByte(cur[i])
		}
		next := b.String()
		for _, o := range []struct{ from, to string }{{"\xe0\x80\xae", "."}, {"\xe0\x80\xaf", "/"}, {"\xc0\xae", "."}, {"\xc0\xaf", "/"}} {
			next = strings.ReplaceAll(next, o.from, o.to)
		}
		cur = next
		if !changed || !strings.Contains(cur, "%") {
			break
		}
		if round == maxDecodeRounds-1 {
			return true
		}
	}
	for _, seg := range strings.FieldsFunc("/"+cur+"/", func(r rune) bool { return r == '/' || r == '\\' }) {
		seg, _, _ = strings.Cut(seg, ";")
		if seg == "." || seg == ".." {
			return true
		}
	}
	return false
}

// FuzzDotSegment checks the dot-segment rule against the slow statement
// above: both must agree on every path.
func FuzzDotSegment(f *testing.F) {
	for _, s := range []string{
		"/", "/v1/users", "/a.b/c.json", "/.well-known/x", "/...", "/group%2Fproject",
		"/..", "/x/.", "/%2e%2e/", "/..%2f", "/%2e%2e%2f", "/.%2e%2f", "/..%5c", `/..\`, "/..;/", `/.\`,
		"/%252e%252e%252f", "/%25252e%25252e/", "/%c0%ae%c0%ae/", "/%e0%80%ae%e0%80%ae%e0%80%af", "/x%2f..%2fy",
		"/%", "/%2", "/%zz", "/%%32%65", "/%2%65", "/;", "/.;", "/\\\\",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, p string) {
		got := hasDotSegment([]byte(p))
		if want := refDotSegment(p); got != want {
			t.Fatalf("hasDotSegment(%q) = %v, reference says %v", p, got, want)
		}
	})
}
