package cache

import (
	"bytes"
	"time"

	"github.com/valyala/fasthttp"
)

// reqDirectives are a caller's Cache-Control request directives (RFC 9111
// section 5.2.1), read only with request_directives: honor. Durations are
// -1 when absent.
type reqDirectives struct {
	noCache, noStore, onlyIfCached bool
	maxAge, minFresh, maxStale     time.Duration
	anyStale                       bool // max-stale without a value
}

var strCacheControl = []byte("Cache-Control")

// parseRequestDirectives reads every Cache-Control line of a request. An
// invalid delta-seconds makes its directive count as absent, except for
// max-age, where it counts as 0 (the stricter reading).
func parseRequestDirectives(h *fasthttp.RequestHeader) (r reqDirectives) {
	r.maxAge, r.minFresh, r.maxStale = -1, -1, -1
	h.VisitAll(func(k, line []byte) {
		if !bytes.EqualFold(k, strCacheControl) {
			return
		}
		forEachDirective(line, func(name, arg []byte, hasArg bool) {
			secs := func() time.Duration {
				if n, ok := deltaSeconds(arg); ok {
					return n
				}
				return -1
			}
			switch string(name) {
			case "no-cache":
				r.noCache = true
			case "no-store":
				r.noStore = true
			case "only-if-cached":
				r.onlyIfCached = true
			case "max-age":
				if r.maxAge = secs(); r.maxAge < 0 {
					r.maxAge = 0
				}
			case "min-fresh":
				r.minFresh = secs()
			case "max-stale":
				if !hasArg {
					r.anyStale = true
				} else {
					r.maxStale = secs()
				}
			}
		})
	})
	return r
}

// requestNoStore reports whether the request says no-store.
func requestNoStore(h *fasthttp.RequestHeader) bool {
	return parseRequestDirectives(h).noStore
}

// What a request's directives allow of a stored answer.
const (
	useAsUsual = iota // no directive about freshness: the cache's own rules
	useFresh          // a fresh enough hit
	useStale          // stale, but within the caller's max-stale
	useForward        // not without asking the upstream (revalidate or fetch)
)

// requestUse applies request directives to an entry of the given age
// (RFC 9111 sections 5.2.1.1 to 5.2.1.4).
func requestUse(r *reqDirectives, e *entry, age int64) int {
	if !r.noCache && r.maxAge < 0 && r.minFresh < 0 && r.maxStale < 0 && !r.anyStale {
		return useAsUsual
	}
	if r.noCache || e.flags&flagNoCache != 0 || r.maxAge >= 0 && age > int64(r.maxAge) {
		return useForward
	}
	left := e.lifetime - age // freshness left
	if left > 0 && (r.minFresh < 0 || left >= int64(r.minFresh)) {
		return useFresh
	}
	if left <= 0 && e.flags&flagMustRevalidate == 0 && (r.anyStale || r.maxStale >= 0 && -left <= int64(r.maxStale)) {
		return useStale
	}
	return useForward
}
