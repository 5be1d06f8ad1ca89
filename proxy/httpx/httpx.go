// Package httpx holds the small pieces of HTTP grammar that the core, the
// config loader and plugins all need: RFC 9110 tokens, Retry-After values
// and status ranges. It depends on nothing else in Sluice.
package httpx

import (
	"bytes"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"time"
)

// TokenByte marks the bytes allowed in a header name (RFC 9110 token).
var TokenByte = AlnumAnd("!#$%&'*+-.^_`|~")

// AlnumAnd returns a byte table marking ASCII letters, digits and extra.
func AlnumAnd(extra string) (t [256]bool) {
	for i := 0; i < len(extra); i++ {
		t[extra[i]] = true
	}
	for c := '0'; c <= '9'; c++ {
		t[c] = true
	}
	for c := 'a'; c <= 'z'; c++ {
		t[c] = true
		t[c-'a'+'A'] = true
	}
	return t
}

// ValidToken reports whether s is an RFC 9110 token: a valid header name or
// method.
func ValidToken(s string) bool {
	if s == "" {
		return false
	}
	for i := 0; i < len(s); i++ {
		if !TokenByte[s[i]] {
			return false
		}
	}
	return true
}

// ParseRetryAfter reads a Retry-After value, delay-seconds or an HTTP-date
// (RFC 9110 §10.2.3), as the delay from now; 0 when absent, unreadable or in
// the past. Delay-seconds is digits only (no sign); any delay is capped at
// maxRetryAfter, so a huge one means "much later", never 0 or an overflow.
// Rate limiting, retries and error normalization all read it here.
func ParseRetryAfter(v []byte, now time.Time) time.Duration {
	v = bytes.TrimSpace(v)
	if len(v) == 0 {
		return 0
	}
	if v[0] >= '0' && v[0] <= '9' {
		var n int64
		for _, c := range v {
			if c < '0' || c > '9' {
				n = -1
				break
			}
			if n < maxRetryAfterSeconds {
				n = n*10 + int64(c-'0')
			}
		}
		if n >= 0 {
			return time.Duration(min(n, maxRetryAfterSeconds)) * time.Second
		}
	}
	if t, err := http.ParseTime(string(v)); err == nil {
		if d := t.Sub(now); d > 0 {
			return min(d, maxRetryAfterSeconds*time.Second)
		}
	}
	return 0
}

// maxRetryAfterSeconds caps a Retry-After delay (about 68 years).
const maxRetryAfterSeconds = 1 << 31

// ParseStatusSpec reads a status code ("503") or class ("5xx") and returns
// the inclusive range of statuses it covers. The circuit breaker, retry and
// health checks all read status lists here.
func ParseStatusSpec(s string) (lo, hi int, err error) {
	s = strings.TrimSpace(strings.ToLower(s))
	if len(s) == 3 && s[1:] == "xx" && s[0] >= '1' && s[0] <= '5' {
		lo = int(s[0]-'0') * 100
		return lo, lo + 99, nil
	}
	n, convErr := strconv.Atoi(s)
	if convErr != nil || n < 100 || n > 599 {
		return 0, 0, fmt.Errorf("invalid status %q: want a code from 100 to 599 or a class such as \"5xx\"", s)
	}
	return n, n, nil
}
