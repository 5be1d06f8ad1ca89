package cache

import (
	"encoding/binary"
	"errors"
)

// Entry kinds: a stored answer, or the marker of an answer that varies by
// request headers (the variants live under secondary keys).
const (
	kindResponse byte = 1
	kindVary     byte = 2
)

// Entry flags.
const (
	flagMustRevalidate byte = 1 << iota // no stale serving at all
	flagNoCache                         // revalidate before every use
)

// entry is a decoded stored answer. Slices point into the bytes returned by
// the store, which are the stored value itself (no copy, see Store.get):
// they stay valid after the entry is replaced or removed, and nothing may
// write into them.
type entry struct {
	status     int
	storedAt   int64 // unix nanoseconds
	initialAge int64 // nanoseconds, corrected age when stored
	lifetime   int64 // freshness lifetime, nanoseconds
	swr, sie   int64 // stale-while-revalidate, stale-if-error windows, nanoseconds
	flags      byte
	uri        []byte // the caller's request URI, for purges by key and prefix
	headers    []byte // encoded header list, see forEachHeader
	tags       []byte // encoded tag list, see forEachTag
	body       []byte
}

var errCorrupt = errors.New("cache: corrupt entry")

// encodeEntry appends the encoding of a response entry to dst.
func encodeEntry(dst []byte, e *entry, headers [][2][]byte, tags []string) []byte {
	dst = append(dst, kindResponse)
	dst = binary.LittleEndian.AppendUint16(dst, uint16(e.status))
	for _, v := range [...]int64{e.storedAt, e.initialAge, e.lifetime, e.swr, e.sie} {
		dst = binary.LittleEndian.AppendUint64(dst, uint64(v))
	}
	dst = append(dst, e.flags)
	dst = appendBytes16(dst, e.uri)
	dst = binary.LittleEndian.AppendUint16(dst, uint16(len(headers)))
	for _, kv := range headers {
		dst = appendBytes16(dst, kv[0])
		dst = binary.LittleEndian.AppendUint32(dst, uint32(len(kv[1])))
		dst = append(dst, kv[1]...)
	}
	dst = binary.LittleEndian.AppendUint16(dst, uint16(len(tags)))
	for _, t := range tags {
		dst = appendBytes16(dst, []byte(t))
	}
	return append(dst, e.body...)
}

func appendBytes16(dst, b []byte) []byte {
	if len(b) > 0xffff {
		b = b[:0xffff]
	}
	dst = binary.LittleEndian.AppendUint16(dst, uint16(len(b)))
	return append(dst, b...)
}

// Where the caller URI starts in each kind of entry: after the kind, the
// status, five int64 times and the flags of a response; after the kind
// and the nonce of a vary marker.
const (
	responseURIAt = 1 + 2 + 5*8 + 1
	varyURIAt     = 1 + 8
)

// decodeEntry decodes a response entry without copying or allocating.
func decodeEntry(b []byte, e *entry) error {
	if len(b) < responseURIAt || b[0] != kindResponse {
		return errCorrupt
	}
	e.status = int(binary.LittleEndian.Uint16(b[1:]))
	p := 3
	for _, f := range [...]*int64{&e.storedAt, &e.initialAge, &e.lifetime, &e.swr, &e.sie} {
		*f = int64(binary.LittleEndian.Uint64(b[p:]))
		p += 8
	}
	e.flags = b[p]
	p++
	var ok bool
	if e.uri, p, ok = read16(b, p); !ok {
		return errCorrupt
	}
	start := p
	if p+2 > len(b) {
		return errCorrupt
	}
	n := int(binary.LittleEndian.Uint16(b[p:]))
	p += 2
	for range n {
		if _, p, ok = read16(b, p); !ok || p+4 > len(b) {
			return errCorrupt
		}
		vl := int(binary.LittleEndian.Uint32(b[p:]))
		p += 4 + vl
		if p > len(b) {
			return errCorrupt
		}
	}
	e.headers = b[start:p]
	start = p
	if p+2 > len(b) {
		return errCorrupt
	}
	n = int(binary.LittleEndian.Uint16(b[p:]))
	p += 2
	for range n {
		if _, p, ok = read16(b, p); !ok {
			return errCorrupt
		}
	}
	e.tags = b[start:p]
	e.body = b[p:]
	return nil
}

func read16(b []byte, p int) ([]byte, int, bool) {
	if p+2 > len(b) {
		return nil, p, false
	}
	l := int(binary.LittleEndian.Uint16(b[p:]))
	p += 2
	if p+l > len(b) {
		return nil, p, false
	}
	return b[p : p+l], p + l, true
}

// headerIter walks an encoded header list (already checked by decodeEntry).
type headerIter struct {
	b    []byte
	n, p int
}

func newHeaderIter(b []byte) headerIter {
	return headerIter{b: b, n: int(binary.LittleEndian.Uint16(b)), p: 2}
}

func (it *headerIter) next() (k, v []byte, ok bool) {
	if it.n == 0 {
		return nil, nil, false
	}
	it.n--
	k, it.p, _ = read16(it.b, it.p)
	vl := int(binary.LittleEndian.Uint32(it.b[it.p:]))
	it.p += 4
	v = it.b[it.p : it.p+vl]
	it.p += vl
	return k, v, true
}

// forEachTag calls fn with each tag of an encoded tag list.
func forEachTag(b []byte, fn func(tag []byte)) {
	if len(b) < 2 {
		return
	}
	n := int(binary.LittleEndian.Uint16(b))
	p := 2
	for range n {
		var t []byte
		var ok bool
		if t, p, ok = read16(b, p); !ok {
			return
		}
		fn(t)
	}
}

// A vary marker: kind, nonce, caller URI, then the names of the request
// headers the answer varies by (lower case).
func encodeVary(dst []byte, nonce uint64, uri []byte, names []string) []byte {
	dst = append(dst, kindVary)
	dst = binary.LittleEndian.AppendUint64(dst, nonce)
	dst = appendBytes16(dst, uri)
	dst = binary.LittleEndian.AppendUint16(dst, uint16(len(names)))
	for _, n := range names {
		dst = appendBytes16(dst, []byte(n))
	}
	return dst
}

// varyMarker is a decoded vary marker.
type varyMarker struct {
	nonce uint64
	uri   []byte
	names []byte // encoded list, read with forEachTag
}

func decodeVary(b []byte, v *varyMarker) error {
	if len(b) < 1+8+2 || b[0] != kindVary {
		return errCorrupt
	}
	v.nonce = binary.LittleEndian.Uint64(b[1:])
	var ok bool
	var p int
	if v.uri, p, ok = read16(b, varyURIAt); !ok {
		return errCorrupt
	}
	v.names = b[p:]
	return nil
}

// entryURI returns the caller URI of any entry kind, reading only the
// start of b: it also works on a value cut after its URI (the shared tier's
// prefix purge reads no more of each entry).
func entryURI(b []byte) []byte {
	at := 0
	switch {
	case len(b) > 0 && b[0] == kindResponse:
		at = responseURIAt
	case len(b) > 0 && b[0] == kindVary:
		at = varyURIAt
	default:
		return nil
	}
	uri, _, _ := read16(b, at)
	return uri
}
