package cache

import (
	"bytes"
	"net/http"
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
}

// parseCacheControl reads every Cache-Control line of h.
func parseCacheControl(h *fasthttp.ResponseHeader) directives {
	d := directives{maxAge: -1, sMaxAge: -1, swr: -1, sie: -1}
	for _, line := range h.PeekAll(fasthttp.HeaderCacheControl) {
		for len(line) > 0 {
			var item []byte
			if i := bytes.IndexByte(line, ','); i >= 0 {
				item, line = line[:i], line[i+1:]
			} else {
				item, line = line, nil
			}
			item = bytes.TrimSpace(item)
			name, arg, hasArg := bytes.Cut(item, []byte{'='})
			name = bytes.ToLower(bytes.TrimSpace(name))
			arg = bytes.Trim(bytes.TrimSpace(arg), `"`)
			secs := func() time.Duration {
				n, err := strconv.ParseInt(string(arg), 10, 64)
				if err != nil || n < 0 {
					return 0 // invalid delta-seconds: treat as stale (RFC 9111 4.2.1)
				}
				if n > 1<<31 {
					n = 1 << 31
				}
				return time.Duration(n) * time.Second
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
			case "max-age":
				d.maxAge = secs()
			case "s-maxage":
				d.sMaxAge = secs()
			case "stale-while-revalidate":
				d.swr = secs()
			case "stale-if-error":
				d.sie = secs()
			}
		}
	}
	return d
}

// heuristicallyCacheable are the statuses a cache may store without explicit
// freshness (RFC 9110 section 15.1): route ttl applies to these only.
func heuristicallyCacheable(status int) bool {
	switch status {
	case 200, 203, 204, 300, 301, 308, 404, 405, 410, 414, 501:
		return true
	}
	return false
}

// httpDate parses an HTTP date; ok is false when absent or invalid.
func httpDate(v []byte) (time.Time, bool) {
	if len(v) == 0 {
		return time.Time{}, false
	}
	t, err := http.ParseTime(string(v))
	return t, err == nil
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
	default:
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
	if v := h.Peek(fasthttp.HeaderAge); len(v) > 0 {
		if n, err := strconv.ParseInt(string(v), 10, 64); err == nil && n > 0 {
			age = time.Duration(n) * time.Second
		}
	}
	// The apparent age (now - Date) is not used: Date has a resolution of
	// a second and provider clocks drift, which would make short-lived
	// answers stale on arrival. Age is the upstream's Age header.
	return lifetime, max(age, 0), explicit
}
