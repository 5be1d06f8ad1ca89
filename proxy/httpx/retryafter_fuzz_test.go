package httpx_test

import (
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/sluice-gw/sluice/proxy/httpx"
)

// maxDelaySeconds is ParseRetryAfter's cap on delay-seconds.
const maxDelaySeconds = 1 << 31

// refRetryAfter is a slow reading of RFC 9110 §10.2.3: delay-seconds
// (1*DIGIT, capped) or an HTTP-date, as the delay from now; 0 otherwise.
// A signed value is not delay-seconds (and no HTTP-date either), and every
// delay is capped.
func refRetryAfter(v string, now time.Time) (d time.Duration, strict bool) {
	s := strings.TrimSpace(v)
	if s == "" {
		return 0, true
	}
	digits := true
	for i := 0; i < len(s); i++ {
		if s[i] < '0' || s[i] > '9' {
			digits = false
			break
		}
	}
	if digits {
		if len(strings.TrimLeft(s, "0")) > 18 {
			return maxDelaySeconds * time.Second, true
		}
		var n int64
		for i := 0; i < len(s); i++ {
			n = n*10 + int64(s[i]-'0')
		}
		return time.Duration(min(n, maxDelaySeconds)) * time.Second, true
	}
	if t, err := http.ParseTime(s); err == nil {
		return min(max(t.Sub(now), 0), maxDelaySeconds*time.Second), true
	}
	return 0, true
}

// FuzzParseRetryAfter: no panic, never a negative delay, delay-seconds never
// above the cap, and the same answer as the slow reading of the RFC.
func FuzzParseRetryAfter(f *testing.F) {
	for _, s := range []string{
		"", "0", "120", " 120 ", "\t7\r\n", "-5", "+5", "1e3", "0x10", "99999999999999999999", "2147483648",
		"999999999999999999", "00000000000000000000000000000000", "0000000000000000000000000000007", "Wed, 21 Oct 2015 07:28:00 GMT", "Sunday, 06-Nov-94 08:49:37 GMT",
		"Sun Nov  6 08:49:37 1994", "Fri, 31 Dec 9999 23:59:59 GMT", "Tue, 14 Nov 2023 22:13:50 GMT",
		"Tue, 14 Nov 2023 22:13:20 GMT", "\u00a05", "5\u0085",
	} {
		f.Add(s)
	}
	now := time.Unix(1_700_000_000, 0) // Tue, 14 Nov 2023 22:13:20 GMT
	f.Fuzz(func(t *testing.T, v string) {
		d := httpx.ParseRetryAfter([]byte(v), now)
		if d < 0 {
			t.Fatalf("%q: negative delay %v", v, d)
		}
		want, strict := refRetryAfter(v, now)
		if d > maxDelaySeconds*time.Second {
			t.Fatalf("%q: %v, more than the cap of %ds", v, d, maxDelaySeconds)
		}
		if strict && d != want {
			t.Fatalf("%q: %v, the RFC reading says %v", v, d, want)
		}
	})
}
