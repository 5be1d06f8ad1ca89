package cache

import (
	"bytes"
	"strconv"
	"time"

	"github.com/valyala/fasthttp"
)

// directives are the response Cache-Control directives the cache acts on
// (RFC 9111 section 5.2.2, RFC 5861). Durations are -1 when absent.
type directives struct {
	noStore, private, noCache, public  bool
	mustRevalidate, proxyRevalidate    bool
	maxAge, sMaxAge, swr, sie          time.Duration
	qualifiedNoCache, qualifiedPrivate bool // no-cache="field", private="field"
	mustUnderstand                     bool
	targeted                           bool // read from a targeted field (RFC 9213): Expires does not apply
}

// parseCacheControl reads every Cache-Control line of h.
func parseCacheControl(h *fasthttp.ResponseHeader) directives {
	d := directives{maxAge: -1, sMaxAge: -1, swr: -1, sie: -1}
	for _, line := range h.PeekAll(fasthttp.HeaderCacheControl) {
		forEachDirective(line, func(name, arg []byte, hasArg bool) {
			secs := func() time.Duration {
				if n, ok := deltaSeconds(arg); ok {
					return n
				}
				return 0 // invalid delta-seconds: treat as stale (RFC 9111 4.2.1)
			}
			switch string(name) {
			case "no-store":
				d.noStore = true
			case "private":
				if hasArg {
					d.qualifiedPrivate = true
				} else {
					d.private = true
				}
			case "no-cache":
				if hasArg {
					d.qualifiedNoCache = true
				} else {
					d.noCache = true
				}
			case "public":
				d.public = true
			case "must-revalidate":
				d.mustRevalidate = true
			case "proxy-revalidate":
				d.proxyRevalidate = true
			case "must-understand":
				d.mustUnderstand = true
			case "max-age":
				d.maxAge = secs()
			case "s-maxage":
				d.sMaxAge = secs()
			case "stale-while-revalidate":
				d.swr = secs()
			case "stale-if-error":
				d.sie = secs()
			}
		})
	}
	return d
}

// forEachDirective calls fn with each directive of one Cache-Control (or
// targeted) field line, RFC 9111 section 5.2: its name lower-cased, its
// argument without quotes, and whether it had one.
func forEachDirective(line []byte, fn func(name, arg []byte, hasArg bool)) {
	for len(line) > 0 {
		var item []byte
		if i := bytes.IndexByte(line, ','); i >= 0 {
			item, line = line[:i], line[i+1:]
		} else {
			item, line = line, nil
		}
		name, arg, hasArg := bytes.Cut(bytes.TrimSpace(item), []byte{'='})
		fn(bytes.ToLower(bytes.TrimSpace(name)), bytes.Trim(bytes.TrimSpace(arg), `"`), hasArg)
	}
}

// deltaSeconds reads a delta-seconds argument (RFC 9111 section 1.2.2),
// capped at 2^31 seconds; ok is false when it is not a non-negative number.
func deltaSeconds(arg []byte) (d time.Duration, ok bool) {
	n, err := strconv.ParseInt(string(arg), 10, 64)
	if err != nil || n < 0 {
		return 0, false
	}
	return time.Duration(min(n, 1<<31)) * time.Second, true
}

// heuristicallyCacheable are the statuses a cache may store without explicit
// freshness (RFC 9110 section 15.1): route ttl applies to these only. 206 is
// one, but this cache stores only complete answers (see understood).
func heuristicallyCacheable(status int) bool {
	switch status {
	case 200, 203, 204, 206, 300, 301, 308, 404, 405, 410, 414, 501:
		return true
	}
	return false
}

// understood reports whether the cache understands a final status well
// enough to store an answer with it (RFC 9111 section 3): the statuses RFC
// 9110 and RFC 6585 (429) define. 206 and 304 are understood but never
// stored as such: partial content is not stored (a complete answer serves
// ranges), and a 304 only refreshes a stored answer.
func understood(status int) bool {
	switch {
	case status >= 200 && status <= 205, status >= 300 && status <= 303, status == 305,
		status == 307, status == 308, status >= 400 && status <= 417, status == 421, status == 422,
		status == 426, status == 429, status >= 500 && status <= 505:
		return true
	}
	return false
}

// freshness computes the lifetime and initial age of an answer received at
// now, as RFC 9111 sections 4.2.1 and 4.2.3 define them (without the
// apparent age, see below). explicit reports
// whether the answer itself carried freshness information.
func freshness(h *fasthttp.ResponseHeader, d *directives, now time.Time) (lifetime, age time.Duration, explicit bool) {
	date, hasDate := httpDate(h.Peek(fasthttp.HeaderDate))
	switch {
	case d.sMaxAge >= 0:
		lifetime, explicit = d.sMaxAge, true
	case d.maxAge >= 0:
		lifetime, explicit = d.maxAge, true
	case !d.targeted:
		if v := h.Peek(fasthttp.HeaderExpires); len(v) > 0 {
			explicit = true
			exp, ok := httpDate(v)
			if ok {
				base := now
				if hasDate {
					base = date
				}
				lifetime = max(exp.Sub(base), 0)
			} // an invalid Expires means already expired
		}
	}
	age = parseAge(h.Peek(fasthttp.HeaderAge))
	// The apparent age (now - Date) is not used: Date has a resolution of
	// a second and provider clocks drift, which would make short-lived
	// answers stale on arrival. Age is the upstream's Age header.
	return lifetime, max(age, 0), explicit
}

// parseAge reads an Age value (the first line, as fasthttp's Peek returns).
// RFC 9111 section 5.1: Age is a singleton, but a cache that finds a list
// SHOULD use its first member and discard the rest; a value that is then
// invalid (anything other than a non-negative integer) SHOULD be ignored,
// that is read as no Age at all. A value too large is capped at 2^31 s.
func parseAge(v []byte) time.Duration {
	if i := bytes.IndexByte(v, ','); i >= 0 {
		v = v[:i]
	}
	v = bytes.Trim(v, " \t")
	if len(v) == 0 {
		return 0
	}
	n := int64(0)
	for _, c := range v {
		if c < '0' || c > '9' {
			return 0
		}
		if n < 1<<31 {
			n = n*10 + int64(c-'0')
		}
	}
	return time.Duration(min(n, 1<<31)) * time.Second
}
