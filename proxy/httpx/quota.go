package httpx

import (
	"slices"

	"github.com/valyala/fasthttp"
)

// Quota holds the values of the headers in which providers report their
// quota, as one pass over an answer's header found them (nil when absent;
// the first of repeated headers, as Peek would return). The values point
// into the header: valid until it changes.
//
// The usage metrics and the rate limiter's provider pause both read these
// headers on every answer. A Peek per name normalizes the name and scans
// the header again (~490 instructions each, seven per answer in the full
// chain); one pass that switches on the name's length costs a fraction.
type Quota struct {
	RateLimit  []byte // RateLimit (draft -07 and later: "default";r=..;t=..)
	Remaining  []byte // RateLimit-Remaining (drafts up to -06)
	Limit      []byte // RateLimit-Limit
	Reset      []byte // RateLimit-Reset
	XRemaining []byte // X-RateLimit-Remaining
	XLimit     []byte // X-RateLimit-Limit
	XReset     []byte // X-RateLimit-Reset
	RetryAfter []byte // Retry-After
}

// ScanQuota fills q from h in one pass. Names are matched without regard
// to case.
func ScanQuota(h *fasthttp.ResponseHeader, q *Quota) {
	*q = Quota{}
	var seen uint8 // one bit per field: the first of repeated headers wins
	for k, v := range h.All() {
		var dst *[]byte
		var bit uint8
		switch len(k) {
		case 9:
			dst, bit = match(k, "RateLimit", &q.RateLimit, 1)
		case 11:
			dst, bit = match(k, "Retry-After", &q.RetryAfter, 2)
		case 15:
			if dst, bit = match(k, "RateLimit-Limit", &q.Limit, 4); dst == nil {
				dst, bit = match(k, "RateLimit-Reset", &q.Reset, 8)
			}
		case 17:
			if dst, bit = match(k, "X-RateLimit-Limit", &q.XLimit, 16); dst == nil {
				dst, bit = match(k, "X-RateLimit-Reset", &q.XReset, 32)
			}
		case 19:
			dst, bit = match(k, "RateLimit-Remaining", &q.Remaining, 64)
		case 21:
			dst, bit = match(k, "X-RateLimit-Remaining", &q.XRemaining, 128)
		}
		if dst != nil && seen&bit == 0 {
			seen |= bit
			*dst = v
		}
	}
}

// CopyTo copies q's values into dst (appended) and points q at the copies,
// so that q outlives changes to the header it was read from; it returns
// dst grown. An answer without quota headers costs a few compares.
func (q *Quota) CopyTo(dst []byte) []byte {
	fields := [...]*[]byte{&q.RateLimit, &q.Remaining, &q.Limit, &q.Reset, &q.XRemaining, &q.XLimit, &q.XReset, &q.RetryAfter}
	n := 0
	for _, f := range fields {
		n += len(*f)
	}
	if n == 0 {
		return dst
	}
	dst = slices.Grow(dst, n) // no append below moves dst: the copies stay valid
	for _, f := range fields {
		if len(*f) > 0 {
			start := len(dst)
			dst = append(dst, *f...)
			*f = dst[start:len(dst):len(dst)]
		}
	}
	return dst
}

// match returns dst and bit when k is name, ASCII case ignored.
func match(k []byte, name string, dst *[]byte, bit uint8) (*[]byte, uint8) {
	for i := 0; i < len(k); i++ {
		c := k[i]
		if c >= 'A' && c <= 'Z' {
			c += 'a' - 'A'
		}
		d := name[i]
		if d >= 'A' && d <= 'Z' {
			d += 'a' - 'A'
		}
		if c != d {
			return nil, 0
		}
	}
	return dst, bit
}
