package httpx

import "github.com/valyala/fasthttp"

// Name is a header name in the form fasthttp stores names in ("X-Api-Key",
// "Content-Type"), made once when the config is compiled, so that the
// request path never normalizes a name again.
//
// fasthttp's PeekBytes, DelBytes, SetBytesKV and AddBytesKV copy the name
// given and normalize its case on every call (~200 instructions for a
// 15-byte name); the full plugin chain made seventeen such calls per
// request, ~3,700 instructions, more than any plugin's own work. fasthttp
// offers PeekCanonical and SetCanonical for names already normalized, and no
// counterpart for Del and Add: those turn normalizing off for the one call
// (the header's names were normalized when it was parsed, and Name's is), so
// only fasthttp's check of the name's bytes remains.
//
// The zero Name is empty and matches no header. A Name can only be made by
// NewName, which normalizes: a Name is always in stored form.
type Name struct {
	b []byte
	s string // the same bytes
}

// NewName normalizes name as fasthttp does ("x-api-key" -> "X-Api-Key");
// a name with a byte outside the token set stays as given, as fasthttp
// keeps such a name when it parses one.
func NewName(name string) Name {
	b := fasthttp.AppendNormalizedHeaderKey(nil, name)
	return Name{b, string(b)}
}

// Bytes returns the normalized name. The caller must not change it.
func (n Name) Bytes() []byte { return n.b }

// String returns the normalized name.
func (n Name) String() string { return n.s }

// Header is what fasthttp's request and response headers have in common
// for the operations by Name.
type Header interface {
	PeekCanonical(key []byte) []byte
	SetCanonical(key, value []byte)
	DelBytes(key []byte)
	AddBytesKV(key, value []byte)
	PeekAll(key string) [][]byte
	DisableNormalizing() bool
	EnableNormalizing() bool
}

var (
	_ Header = (*fasthttp.RequestHeader)(nil)
	_ Header = (*fasthttp.ResponseHeader)(nil)
)

// Peek returns the first value of n in h, nil if absent.
func (n Name) Peek(h Header) []byte { return h.PeekCanonical(n.b) }

// Set replaces the first value of n in h with v (or adds it). Values after
// the first stay: Del first to replace them all.
func (n Name) Set(h Header, v []byte) { h.SetCanonical(n.b, v) }

// PeekAll returns every value of n in h (fasthttp's PeekAll, with
// normalizing off for the call). The slice is h's: valid until h changes.
func (n Name) PeekAll(h Header) [][]byte {
	was := h.DisableNormalizing()
	v := h.PeekAll(n.s)
	if !was {
		h.EnableNormalizing()
	}
	return v
}

// Del removes every value of n from h.
func (n Name) Del(h Header) { DelCanonical(h, n.b) }

// Add adds a value of n to h, after any it has.
func (n Name) Add(h Header, v []byte) { AddCanonical(h, n.b, v) }

// DelCanonical is Name.Del for a key already in stored form (the bytes of
// a Name, or a name fasthttp parsed): fasthttp's DelBytes with normalizing
// off for the call.
func DelCanonical(h Header, key []byte) {
	was := h.DisableNormalizing()
	h.DelBytes(key)
	if !was {
		h.EnableNormalizing()
	}
}

// AddCanonical is Name.Add for a key already in stored form.
func AddCanonical(h Header, key, value []byte) {
	was := h.DisableNormalizing()
	h.AddBytesKV(key, value)
	if !was {
		h.EnableNormalizing()
	}
}
