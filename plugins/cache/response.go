package cache

import (
	"bytes"
	"slices"
	"strings"
	"time"

	"github.com/sluice-gw/sluice/proxy"
	"github.com/sluice-gw/sluice/proxy/httpx"
	"github.com/valyala/fasthttp"
)

// skipStored lists response headers never stored: the gateway sets them per
// answer (Age, X-Request-Id, Content-Length), or they must not be shared.
func skipStored(k []byte) bool {
	switch strings.ToLower(string(k)) {
	case "age", "x-request-id", "content-length", "set-cookie", "transfer-encoding", "connection", "keep-alive":
		return true
	}
	return false
}

// storeResponse stores the upstream's answer in ctx.Response under the keys
// in kb when RFC 9111 and the route's settings allow it.
func (c *Plugin) storeResponse(ctx *fasthttp.RequestCtx, ex *proxy.Exchange, kb *keyBuf) bool {
	if ctx.Response.IsBodyStream() {
		// A streamed answer (longer than the upstream's stream_threshold,
		// or an event stream) is not read here: reading it would hold it
		// whole in memory. A fill stores it as it passes (tee.go).
		return false
	}
	if !ex.FromUpstream {
		return false // an inner stage's own answer, not the provider's
	}
	return c.storeAnswer(ctx, ex.Path(), kb, ctx.Response.Body(), nil, false)
}

// storeAnswer stores the answer whose head is in ctx.Response, with body,
// for the request at path. With dry it stores nothing and reports whether
// the head allows storing (the body's size aside). ownCS is the
// Cache-Status value this cache already added to the head (a streamed
// answer's): not stored.
func (c *Plugin) storeAnswer(ctx *fasthttp.RequestCtx, path []byte, kb *keyBuf, body, ownCS []byte, dry bool) bool {
	resp := &ctx.Response
	h := &resp.Header
	status := resp.StatusCode()
	// RFC 9111 section 3: a final status the cache understands. Partial
	// content is not stored (ranges are served from complete answers), and
	// a 304 only refreshes what is stored.
	if !understood(status) || status == fasthttp.StatusNotModified || status == fasthttp.StatusPartialContent {
		return false
	}
	if len(h.PeekAll(fasthttp.HeaderSetCookie)) > 0 {
		return false
	}
	if c.honorRequest && requestNoStore(&ctx.Request.Header) {
		return false // RFC 9111 section 5.2.1.5
	}
	d := c.responseDirectives(h)
	now := time.Now()
	e := entry{status: status, storedAt: now.UnixNano(), uri: kb.uri}
	// RFC 9111 section 3.5: a request with credentials the cache does not
	// keep apart (partition none) may be shared only if the answer says so.
	// Any credential header of the caller's counts, and Authorization an
	// inner stage (inject_auth) added.
	shared := !c.byCredential && (kb.callerCred || len(hdrAuthorization.Peek(&ctx.Request.Header)) > 0)
	if c.override {
		// Override ignores the answer's directives, public and s-maxage
		// included: it never makes an answer to such a request shared.
		if shared || !heuristicallyCacheable(status) || status == fasthttp.StatusPartialContent {
			return false
		}
		e.lifetime = c.ttl
	} else {
		if d.mustUnderstand {
			// RFC 9111 section 5.2.2.3: a cache that understands the
			// status (checked above) ignores no-store.
			d.noStore = false
		}
		if d.noStore || d.private || d.qualifiedPrivate {
			return false
		}
		lifetime, age, explicit := freshness(h, &d, now)
		if d.qualifiedNoCache {
			// no-cache="field": the named fields may not be reused without
			// revalidation. Handled as plain no-cache (RFC 9111 5.2.2.4
			// allows it), never as nothing: they are often per caller.
			d.noCache = true
		}
		if d.noCache {
			explicit = true // stored, revalidated before every use (needs a validator, below)
		}
		// RFC 9111 section 3: any understood status with explicit
		// freshness; heuristic freshness (the route's ttl) only for the
		// heuristically cacheable statuses or an answer marked public
		// (RFC 9111 section 4.2.2).
		switch {
		case explicit:
			e.lifetime, e.initialAge = int64(lifetime), int64(age)
		case !explicit && c.ttl > 0 && (heuristicallyCacheable(status) || d.public):
			e.lifetime, e.initialAge = c.ttl, int64(age)
		default:
			return false
		}
		if d.noCache {
			e.flags |= flagNoCache
		}
		if d.mustRevalidate || d.proxyRevalidate {
			e.flags |= flagMustRevalidate
		}
		if d.swr > 0 {
			e.swr = int64(d.swr)
		}
		if d.sie > 0 {
			e.sie = int64(d.sie)
		}
		if shared && !d.public && d.sMaxAge < 0 && !d.mustRevalidate {
			return false
		}
	}
	validators := len(hdrETag.Peek(h)) > 0 || len(hdrLastModified.Peek(h)) > 0
	if e.flags&flagNoCache != 0 && !validators {
		return false // every use needs a revalidation it could not make
	}
	if e.lifetime-e.initialAge <= 0 && !validators && (e.flags&flagMustRevalidate != 0 || max(e.swr, c.swr, e.sie, c.sie) == 0) {
		return false // stale on arrival, and no way to use it stale
	}
	names, ok := parseVary(h.PeekAll(fasthttp.HeaderVary))
	if !ok {
		return false
	}
	if dry {
		return true
	}

	var hdrs [][2][]byte
	dated := false
	for k, v := range h.All() {
		if skipStored(k) {
			continue
		}
		if ownCS != nil && bytes.Equal(v, ownCS) && bytes.EqualFold(k, strCacheStatus) {
			ownCS = nil // the line this cache added, not the provider's
			continue
		}
		dated = dated || bytes.EqualFold(k, strDate)
		hdrs = append(hdrs, [2][]byte{bytes.Clone(k), bytes.Clone(v)})
	}
	if !dated {
		// RFC 9110 section 6.6.1: a recipient that caches an answer without
		// Date records the time it was received as its Date.
		hdrs = append(hdrs, [2][]byte{strDate, proxy.AppendHTTPDate(nil, now)})
	}
	tags := c.entryTags(path)
	tags = append(tags, resourceTag(c.upstream, string(c.relPath(kb.uri))))
	for _, v := range h.PeekAll("Surrogate-Key") {
		tags = append(tags, strings.Fields(string(v))...)
	}
	for _, v := range h.PeekAll("Cache-Tag") {
		for _, t := range strings.Split(string(v), ",") {
			if t = strings.TrimSpace(t); t != "" {
				tags = append(tags, t)
			}
		}
	}
	e.body = body
	buf := encodeEntry(make([]byte, 0, len(e.body)+512), &e, hdrs, tags)
	key := kb.key
	var marker []byte // a new vary marker to store first
	if len(names) > 0 {
		var v varyMarker
		nonce := uint64(0)
		if old := c.store.get(kb.key); old != nil && decodeVary(old, &v) == nil && sameNames(v.names, names) {
			nonce = v.nonce
		} else {
			nonce = newNonce()
			marker = encodeVary(nil, nonce, kb.uri, names)
		}
		var enc []byte
		for _, n := range names {
			enc = appendBytes16(enc, []byte(n))
		}
		enc = append([]byte{byte(len(names)), byte(len(names) >> 8)}, enc...)
		variantKey(ctx, kb, &varyMarker{nonce: nonce, names: enc})
		key = kb.vkey
	}
	if len(buf)+len(key)+entryOverhead > c.maxEntry {
		return false
	}
	if marker != nil && !c.store.set(string(kb.key), marker, nil) {
		return false
	}
	return c.store.set(string(key), buf, tags)
}

func sameNames(enc []byte, names []string) bool {
	i := 0
	same := true
	forEachTag(enc, func(n []byte) {
		if i >= len(names) || string(n) != names[i] {
			same = false
		}
		i++
	})
	return same && i == len(names)
}

// entryTags fills the route's tag templates from the path parameters
// (matched against the route's path pattern).
func (c *Plugin) entryTags(path []byte) []string {
	if len(c.tags) == 0 {
		return nil
	}
	params, _ := c.pattern.match(string(path))
	return fill(c.tags, params, nil)
}

// parseVary returns the sorted, lower-case, distinct field names of the
// Vary lines, or ok false when the answer varies by "*" or by a name that
// is not a valid field name (such an answer is never stored).
func parseVary(lines [][]byte) (names []string, ok bool) {
	for _, line := range lines {
		for _, n := range strings.Split(string(line), ",") {
			n = strings.ToLower(strings.TrimSpace(n))
			if n == "" {
				continue
			}
			if n == "*" || !httpx.ValidToken(n) {
				return nil, false
			}
			if !slices.Contains(names, n) {
				names = append(names, n)
			}
		}
	}
	slices.Sort(names)
	return names, true
}

// relPath returns the path of a caller URI relative to the upstream (after
// strip_prefix, without the query), as Resource names it.
func (c *Plugin) relPath(uri []byte) []byte {
	if i := bytes.IndexByte(uri, '?'); i >= 0 {
		uri = uri[:i]
	}
	if c.stripPrefix != "" && bytes.HasPrefix(uri, c.stripPrefixB) {
		uri = uri[len(c.stripPrefixB):]
	}
	return uri
}
