package ratelimit

import (
	"strconv"
	"strings"
	"testing"
	"time"
)

// A provider's far-off reset pauses for maxPause, never for nothing or a
// wrapped-around time: t with 15 digits overflowed Duration(t)*time.Second,
// and a reset of 1e19 or +Inf overflowed the int64 conversion.
func TestProviderPauseIsBounded(t *testing.T) {
	now := time.Unix(1_700_000_000, 0)
	for _, tc := range []struct {
		name                string
		status              int
		ra, rl, xrem, xrest string
		remaining           int64
		want                time.Duration
	}{
		{"RateLimit t of 15 digits", 200, "", `"q";r=0;t=999999999999999`, "", "", 0, maxPause},
		{"RateLimit t that wraps to a small pause", 200, "", `"q";r=0;t=18446744074`, "", "", 0, maxPause},
		{"RateLimit t of an hour", 200, "", `"q";r=0;t=3600`, "", "", 0, time.Hour},
		{"X-RateLimit-Reset 1e19 (milliseconds beyond int64)", 200, "", "", "0", "1e19", 0, maxPause},
		{"X-RateLimit-Reset +Inf", 200, "", "", "0", "+Inf", 0, maxPause},
		{"X-RateLimit-Reset NaN is unreadable: 1s", 200, "", "", "0", "NaN", 0, time.Second},
		{"X-RateLimit-Reset in the past", 200, "", "", "0", "1600000000", 0, 0},
		{"X-RateLimit-Reset 30s as Unix milliseconds", 200, "", "", "0", "1700000030000", 0, 30 * time.Second},
		{"429 with a Retry-After of 68 years", 429, "2147483648", "", "", "", -1, maxPause},
	} {
		rem, got := providerPause(tc.status, []byte(tc.ra), []byte(tc.rl), []byte(tc.xrem), []byte(tc.xrest), nil, nil, now)
		if got != tc.want || rem != tc.remaining {
			t.Errorf("%s: pause %v remaining %d, want %v and %d", tc.name, got, rem, tc.want, tc.remaining)
		}
	}
}

// FuzzProviderPause: whatever a provider sends, the pause is within
// [0, maxPause], the quota is -1 or more, a 429 always pauses, and a
// RateLimit item at r=0 pauses at least its t (capped).
func FuzzProviderPause(f *testing.F) {
	for _, s := range [][7]string{
		{"429", "", "", "", "", "", ""},
		{"503", "Wed, 21 Oct 2015 07:28:00 GMT", "", "", "", "", ""},
		{"200", "", `"q";r=0;t=999999999999999`, "", "", "", ""},
		{"200", "", `"a";r=5;t=2, "b";r=0;t=60`, "", "", "", ""},
		{"200", "", "", "0", "1e19", "", ""},
		{"200", "", "", "0", "+Inf", "", ""},
		{"200", "", "", "0", "NaN", "", ""},
		{"200", "", "", "0", "-1e400", "", ""},
		{"200", "", "", "", "", "0", "1700000030000"},
		{"429", "99999999999999999999", "", "", "", "", ""},
	} {
		st, _ := strconv.Atoi(s[0])
		f.Add(st, s[1], s[2], s[3], s[4], s[5], s[6])
	}
	now := time.Unix(1_700_000_000, 0)
	f.Fuzz(func(t *testing.T, status int, ra, rl, xrem, xreset, drem, dreset string) {
		rem, d := providerPause(status, []byte(ra), []byte(rl), []byte(xrem), []byte(xreset), []byte(drem), []byte(dreset), now)
		if d < 0 || d > maxPause {
			t.Fatalf("pause %v outside [0, %v]", d, maxPause)
		}
		if rem < -1 {
			t.Fatalf("remaining %d", rem)
		}
		if status == 429 && d < time.Second {
			t.Fatalf("a 429 paused %v, want at least 1s", d)
		}
		if r, tt, ok := parseRateLimit([]byte(rl)); len(rl) > 0 && ok {
			if rem != r {
				t.Fatalf("remaining %d, RateLimit says %d", rem, r)
			}
			if want := min(time.Duration(min(tt, 1<<20))*time.Second, maxPause); r == 0 && d < want {
				t.Fatalf("RateLimit %q: paused %v, want at least %v", rl, d, want)
			}
		}
	})
}

// FuzzParseRateLimit: any bytes, no panic, consistent results.
func FuzzParseRateLimit(f *testing.F) {
	for _, s := range []string{
		`"default";r=0;t=30`, `"a";r=5;t=2, "b";r=0;t=60`, `"a;b,c";r=0;t=7, x;r=3`, `"a";r=-1;t=5, "b";r=2;t=1`,
		`"a";r=1x;t=5`, `"x";t=3`, `garbage`, `"\"";r=0;t=1`, `"\`, `";r=0;t=9`, `a;r=999999999999999;t=999999999999999`,
		`a;r=0000000000000001`, `,,,;;;===`,
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, v []byte) {
		r, tt, ok := parseRateLimit(v)
		if ok != (r >= 0) || r < -1 || tt < 0 {
			t.Fatalf("%q: r=%d t=%d ok=%v", v, r, tt, ok)
		}
		if r != 0 && tt != 0 {
			t.Fatalf("%q: t=%d although no item has r=0 (r=%d)", v, tt, r)
		}
		if r > 999999999999999 || tt > 999999999999999 {
			t.Fatalf("%q: more than 15 digits: r=%d t=%d", v, r, tt)
		}
	})
}

// sfString writes s as a structured-field string: printable ASCII, with
// '"' and '\' escaped (RFC 8941 §3.3.3); other bytes are dropped.
func sfString(s string) string {
	var b strings.Builder
	b.WriteByte('"')
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c < 0x20 || c > 0x7e {
			continue
		}
		if c == '"' || c == '\\' {
			b.WriteByte('\\')
		}
		b.WriteByte(c)
	}
	b.WriteByte('"')
	return b.String()
}

// FuzzRateLimitItems builds a valid RateLimit field of two items (names
// with any separators inside quotes) and checks parseRateLimit against the
// plain rule: the least r, and the longest t among the items with r=0.
func FuzzRateLimitItems(f *testing.F) {
	f.Add("min", uint32(5), uint32(30), "day", uint32(0), uint32(3600))
	f.Add(`a;b,c"\`, uint32(0), uint32(7), `,;=`, uint32(0), uint32(9))
	f.Add("", uint32(1), uint32(0), "x", uint32(2), uint32(1))
	f.Fuzz(func(t *testing.T, n1 string, r1, t1 uint32, n2 string, r2, t2 uint32) {
		v := sfString(n1) + ";r=" + strconv.FormatUint(uint64(r1), 10) + ";t=" + strconv.FormatUint(uint64(t1), 10) +
			", " + sfString(n2) + ";t=" + strconv.FormatUint(uint64(t2), 10) + ";r=" + strconv.FormatUint(uint64(r2), 10)
		wantR := int64(min(r1, r2))
		var wantT int64
		if r1 == 0 {
			wantT = int64(t1)
		}
		if r2 == 0 {
			wantT = max(wantT, int64(t2))
		}
		r, tt, ok := parseRateLimit([]byte(v))
		if !ok || r != wantR || tt != wantT {
			t.Fatalf("%s: got r=%d t=%d ok=%v, want r=%d t=%d", v, r, tt, ok, wantR, wantT)
		}
	})
}
