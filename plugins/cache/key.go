package cache

import (
	"bytes"
	"crypto/sha256"
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
	digest [16]byte // store key digest (passed to bigcache's hasher: must not be on the stack)
}

var keyPool = sync.Pool{New: func() any { return &keyBuf{key: make([]byte, 0, 256), vkey: make([]byte, 0, 256)} }}

// appendQuery appends the query as the route keys it ("?" + params), or
// nothing when it keeps no parameter.
func (c *Cache) appendQuery(dst []byte, q []byte, kb *keyBuf) []byte {
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
		slices.SortFunc(kb.params, bytes.Compare)
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

// buildKey fills kb.key (upstream, path after strip_prefix, normalized
// query, partition) and kb.uri (caller path and normalized query).
func (c *Cache) buildKey(ctx *fasthttp.RequestCtx, path, query []byte, consumer string, kb *keyBuf) {
	kb.uri = c.appendQuery(append(kb.uri[:0], path...), query, kb)
	k := append(kb.key[:0], c.scope...)
	rel := kb.uri
	if c.stripPrefix != "" && bytes.HasPrefix(rel, c.stripPrefixB) {
		rel = rel[len(c.stripPrefixB):]
	}
	k = append(k, rel...)
	k = c.appendPartition(k, ctx, consumer)
	kb.key = k
}

// appendPartition appends the partition part of a key: the consumer when
// the route partitions by consumer, a hash of the request's own
// Authorization when it carries one (partition auto or consumer).
func (c *Cache) appendPartition(k []byte, ctx *fasthttp.RequestCtx, consumer string) []byte {
	k = append(k, 0)
	if c.byConsumer {
		k = append(append(k, "c:"...), consumer...)
	}
	if c.byCredential {
		if auth := ctx.Request.Header.PeekBytes(strAuthorization); len(auth) > 0 {
			sum := sha256.Sum256(auth)
			var hx [32]byte
			hex.Encode(hx[:], sum[:16])
			k = append(append(k, "|a:"...), hx[:]...)
		}
	}
	return k
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
		k = append(k, '=')
		k = append(k, ctx.Request.Header.PeekBytes(name)...)
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
