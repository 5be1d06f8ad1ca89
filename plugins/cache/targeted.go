package cache

import (
	"time"

	"github.com/dunglas/httpsfv"
	"github.com/valyala/fasthttp"
)

// responseDirectives returns the caching directives of an answer for this
// cache: those of the first configured targeted field (RFC 9213) the
// answer carries with a valid, non-empty value, else its Cache-Control.
func (c *Plugin) responseDirectives(h *fasthttp.ResponseHeader) directives {
	for _, name := range c.targets {
		if d, ok := targetedDirectives(h.PeekAll(name)); ok {
			return d
		}
	}
	return parseCacheControl(h)
}

// targetedDirectives reads a targeted cache-control field (RFC 9213
// section 2.1): a Structured Fields Dictionary (RFC 9651) whose members
// are the Cache-Control directives, valueless ones as Boolean true,
// delta-seconds as Integers and field-name lists as Strings. Parameters are
// ignored, and so are directives of another type and unknown ones. ok is
// false when the field is absent, empty or not a valid Dictionary: the
// cache then falls back to the next target, then to Cache-Control.
func targetedDirectives(lines [][]byte) (d directives, ok bool) {
	if len(lines) == 0 {
		return d, false
	}
	vals := make([]string, len(lines))
	for i, l := range lines {
		vals[i] = string(l)
	}
	dict, err := httpsfv.UnmarshalDictionary(vals)
	if err != nil || len(dict.Names()) == 0 {
		return d, false
	}
	d = directives{maxAge: -1, sMaxAge: -1, swr: -1, sie: -1, targeted: true}
	for _, name := range dict.Names() {
		m, _ := dict.Get(name)
		item, isItem := m.(httpsfv.Item)
		if !isItem {
			continue // an inner list is no directive value
		}
		on, isBool := item.Value.(bool)
		_, isString := item.Value.(string)
		secs := func(dst *time.Duration) {
			if n, isInt := item.Value.(int64); isInt {
				*dst = time.Duration(min(max(n, 0), 1<<31)) * time.Second
			}
		}
		switch name {
		case "no-store":
			d.noStore = d.noStore || isBool && on
		case "private":
			d.private = d.private || isBool && on
			d.qualifiedPrivate = d.qualifiedPrivate || isString
		case "no-cache":
			d.noCache = d.noCache || isBool && on
			d.qualifiedNoCache = d.qualifiedNoCache || isString
		case "public":
			d.public = d.public || isBool && on
		case "must-revalidate":
			d.mustRevalidate = d.mustRevalidate || isBool && on
		case "proxy-revalidate":
			d.proxyRevalidate = d.proxyRevalidate || isBool && on
		case "must-understand":
			d.mustUnderstand = d.mustUnderstand || isBool && on
		case "max-age":
			secs(&d.maxAge)
		case "s-maxage":
			secs(&d.sMaxAge)
		case "stale-while-revalidate":
			secs(&d.swr)
		case "stale-if-error":
			secs(&d.sie)
		}
	}
	return d, true
}
