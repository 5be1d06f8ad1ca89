package cache

import (
	"bytes"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"slices"
	"sync"

	"github.com/valyala/fasthttp"
)

// keyBuf is the per-request scratch space for keys, pooled.
type keyBuf struct {
	key    []byte   // primary key
	vkey   []byte   // secondary (variant) key
	uri    []byte   // normalized caller URI
	params [][]byte // query parameters while normalizing
	cred   []byte   // the request's credential header values while hashing
	// query is the normalized query (without '?', a slice of uri) and
	// narrowed reports whether the key dropped parameters the caller sent:
	// the request forwarded on a miss then carries query instead (what is
	// not in the key never reaches the provider).
	query      []byte
	narrowed   bool
	callerCred bool // the caller's request carried a credential header
}

var keyPool = sync.Pool{New: func() any { return &keyBuf{key: make([]byte, 0, 256), vkey: make([]byte, 0, 256)} }}

// appendQuery appends the query as the route keys it ("?" + params), or
// nothing when it keeps no parameter.
func (c *Plugin) appendQuery(dst []byte, q []byte, kb *keyBuf) []byte {
	if len(q) == 0 || (!c.queryAll && len(c.queryKeep) == 0) {
		return dst
	}
	if c.queryAll && !c.sorted {
		return append(append(dst, '?'), q...)
	}
	kb.params = kb.params[:0]
	for len(q) > 0 {
		var p []byte
		if i := bytes.IndexByte(q, '&'); i >= 0 {
			p, q = q[:i], q[i+1:]
		} else {
			p, q = q, nil
		}
		if len(p) == 0 {
			continue
		}
		if !c.queryAll {
			name := p
			if i := bytes.IndexByte(p, '='); i >= 0 {
				name = p[:i]
			}
			keep := false
			for _, k := range c.queryKeep {
				if bytes.Equal(k, name) {
					keep = true
					break
				}
			}
			if !keep {
				continue
			}
		}
		kb.params = append(kb.params, p)
	}
	if len(kb.params) == 0 {
		return dst
	}
	if c.sorted {
		// By name only, stable: repeated parameters keep their order
		// (?sort=a&sort=b and ?sort=b&sort=a may mean different things).
		slices.SortStableFunc(kb.params, compareParamNames)
	}
	for i, p := range kb.params {
		if i == 0 {
			dst = append(dst, '?')
		} else {
			dst = append(dst, '&')
		}
		dst = append(dst, p...)
	}
	return dst
}

// compareParamNames orders query parameters ("name=value") by name.
func compareParamNames(a, b []byte) int {
	if i := bytes.IndexByte(a, '='); i >= 0 {
		a = a[:i]
	}
	if i := bytes.IndexByte(b, '='); i >= 0 {
		b = b[:i]
	}
	return bytes.Compare(a, b)
}

// buildKey fills kb.key (scope: upstream, route and the route's
// credential policy; path after strip_prefix, normalized query, partition),
// kb.uri (caller path and normalized query) and kb.query/kb.narrowed.
func (c *Plugin) buildKey(ctx *fasthttp.RequestCtx, path, query []byte, consumer string, kb *keyBuf) {
	kb.uri = c.appendQuery(append(kb.uri[:0], path...), query, kb)
	kb.query = nil
	if len(kb.uri) > len(path) {
		kb.query = kb.uri[len(path)+1:]
	}
	// Only a key that drops parameters changes what is forwarded: with all of
	// them in the key, the provider gets the query as the caller sent it (in
	// its order, which a caller's own request signature may cover).
	kb.narrowed = !c.queryAll && !bytes.Equal(kb.query, query)
	kb.callerCred = !c.byCredential && c.hasCredentials(&ctx.Request.Header) // only partition none asks
	k := append(kb.key[:0], c.scope...)
	rel := kb.uri
	if c.stripPrefix != "" && bytes.HasPrefix(rel, c.stripPrefixB) {
		rel = rel[len(c.stripPrefixB):]
	}
	k = append(k, rel...)
	k = c.appendPartition(k, ctx, consumer, kb)
	kb.key = k
}

// appendPartition appends the partition part of a key: the consumer when
// the route partitions by consumer, a hash of the request's own
// credential headers (Authorization, Cookie, X-Api-Key and
// credential_headers) when it carries any (partition auto or consumer).
func (c *Plugin) appendPartition(k []byte, ctx *fasthttp.RequestCtx, consumer string, kb *keyBuf) []byte {
	k = append(k, 0)
	if c.byConsumer {
		// Length-prefixed: no consumer name can run into what follows.
		k = binary.LittleEndian.AppendUint16(append(k, "c:"...), uint16(len(consumer)))
		k = append(k, consumer...)
	}
	if c.byCredential {
		if kb.cred = c.appendCredentials(kb.cred[:0], &ctx.Request.Header); len(kb.cred) > 0 {
			sum := sha256.Sum256(kb.cred)
			var hx [32]byte
			hex.Encode(hx[:], sum[:16])
			k = append(append(k, "|a:"...), hx[:]...)
		}
	}
	return k
}

// appendCredentials appends every value of every credential header the
// request carries, each with its header's index in the list (so that the
// same value under two names differs); nothing when it carries none.
func (c *Plugin) appendCredentials(dst []byte, h *fasthttp.RequestHeader) []byte {
	for i, name := range c.credHeaders {
		for _, v := range name.PeekAll(h) {
			dst = append(dst, byte(i), byte(i>>8))
			dst = binary.LittleEndian.AppendUint32(dst, uint32(len(v)))
			dst = append(dst, v...)
		}
	}
	return dst
}

// hasCredentials reports whether the request carries a credential header.
func (c *Plugin) hasCredentials(h *fasthttp.RequestHeader) bool {
	for _, name := range c.credHeaders {
		if len(name.PeekAll(h)) > 0 {
			return true
		}
	}
	return false
}

// variantKey fills kb.vkey: the primary key, the marker's nonce and the
// request's values of the headers the answer varies by.
func variantKey(ctx *fasthttp.RequestCtx, kb *keyBuf, v *varyMarker) {
	k := append(kb.vkey[:0], kb.key...)
	k = append(k, 1)
	k = appendHex64(k, v.nonce)
	forEachTag(v.names, func(name []byte) {
		k = append(k, 0)
		k = append(k, name...)
		// Every line of the header, each with its length: the upstream
		// saw them all, so a second line must not share the first's entry.
		for _, line := range ctx.Request.Header.PeekAll(b2s(name)) {
			k = append(k, '=')
			k = binary.LittleEndian.AppendUint32(k, uint32(len(line)))
			k = append(k, line...)
		}
	})
	kb.vkey = k
}

func appendHex64(dst []byte, v uint64) []byte {
	const digits = "0123456789abcdef"
	for shift := 60; shift >= 0; shift -= 4 {
		dst = append(dst, digits[(v>>uint(shift))&0xf])
	}
	return dst
}
