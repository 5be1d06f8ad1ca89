package httpx_test

import (
	"testing"
	"time"

	"github.com/sluice-gw/sluice/proxy/httpx"
)

func TestParseRetryAfter(t *testing.T) {
	t.Parallel()
	now := time.Date(2026, 11, 26, 12, 0, 0, 0, time.UTC)
	for in, want := range map[string]time.Duration{
		"120":                           120 * time.Second,
		" 3 ":                           3 * time.Second,
		"0":                             0,
		"-5":                            0,
		"":                              0,
		"soon":                          0,
		"Thu, 26 Nov 2026 12:00:30 GMT": 30 * time.Second,
		"Thu, 26 Nov 2026 11:59:00 GMT": 0,                       // in the past
		"+5":                            0,                       // delay-seconds is digits only
		"99999999999999999999":          (1 << 31) * time.Second, // huge: the cap, not 0
		"Fri, 31 Dec 9999 23:59:59 GMT": (1 << 31) * time.Second,
	} {
		if got := httpx.ParseRetryAfter([]byte(in), now); got != want {
			t.Errorf("ParseRetryAfter(%q) = %v, want %v", in, got, want)
		}
	}
}
