package cache

import (
	"bytes"
	"testing"
	"time"

	"github.com/valyala/fasthttp"
)

// FuzzSharedValue feeds arbitrary bytes to what reads values from Redis
// (hostile input): unwrapShared, validStored, decodeEntry and the walks
// of what they accept. It must never panic; an accepted entry decodes to
// what encodes back to the same bytes, and a value made for one key is
// never accepted for another.
func FuzzSharedValue(f *testing.F) {
	var sh l2
	key := []byte("up\x00r\x000123456789abcdef\x00/items/1\x00")
	k := sh.key(key)
	e := entry{status: 200, storedAt: time.Now().UnixNano(), lifetime: int64(time.Minute), uri: []byte("/api/items/1")}
	good := encodeEntry(nil, &e, [][2][]byte{{[]byte("Content-Type"), []byte("application/json")}, {[]byte("ETag"), []byte(`"v1"`)}},
		[]string{"item:1", resourceTag("up", "/items/1")})
	good = append(good, `{"id":1}`...)
	f.Add(wrapShared(&k, good))
	f.Add(wrapShared(&k, encodeVary(nil, 42, []byte("/api/items/1"), []string{"accept-language", "x-tenant"})))
	f.Add(wrapShared(&k, good[:len(good)/2]))
	f.Add(wrapShared(&k, []byte{kindResponse}))
	f.Add(wrapShared(&k, []byte{kindVary, 1, 2, 3}))
	f.Add([]byte("\x01not an entry"))
	f.Add([]byte{})
	f.Fuzz(func(t *testing.T, v []byte) {
		b := unwrapShared(&k, v)
		if b == nil {
			return
		}
		other := sh.key(append(bytes.Clone(key), 'x'))
		if unwrapShared(&other, v) != nil {
			t.Fatal("a value made for one key was accepted for another")
		}
		if !validStored(b) {
			_ = entryURI(b) // never panics on what Redis holds
			return
		}
		switch b[0] {
		case kindResponse:
			var d entry
			if err := decodeEntry(b, &d); err != nil {
				t.Fatalf("validStored accepted what decodeEntry refuses: %v", err)
			}
			var hdrs [][2][]byte
			it := newHeaderIter(d.headers)
			for k, v, ok := it.next(); ok; k, v, ok = it.next() {
				hdrs = append(hdrs, [2][]byte{k, v})
			}
			tags := entryTagList(&d)
			again := encodeEntry(nil, &d, hdrs, tags)
			if !bytes.Equal(again, b) {
				t.Fatalf("decoded entry encodes to other bytes:\n%q\n%q", b, again)
			}
			// The prefix purge reads only the start of an entry.
			if u := entryURI(b[:min(len(b), responseURIAt+2+len(d.uri))]); !bytes.Equal(u, d.uri) {
				t.Fatalf("entryURI of the entry's start = %q, want %q", u, d.uri)
			}
		case kindVary:
			var m varyMarker
			if err := decodeVary(b, &m); err != nil {
				t.Fatal(err)
			}
			var ctx fasthttp.RequestCtx
			ctx.Request.Header.Set("Accept-Language", "ko")
			kb := &keyBuf{key: bytes.Clone(key)}
			variantKey(&ctx, kb, &m)
			if !bytes.HasPrefix(kb.vkey, key) {
				t.Fatal("a variant key does not start with its primary key")
			}
		}
	})
}
