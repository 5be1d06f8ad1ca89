package cache

import (
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"hash"
	"net/textproto"
	"reflect"
	"slices"
	"strings"

	"github.com/sluice-gw/sluice/proxy"
	"github.com/sluice-gw/sluice/proxy/httpx"
)

// routeScope returns the start of every key of the route's entries:
// "upstream\x00route\x00policy\x00". Routes never share entries: two routes
// to one upstream may differ in who may call them (authenticate) and with
// which credentials the provider is called (inject_auth), so an answer one
// fetched is served only on that route. policy is a digest of the configs
// in effect on the route that are an access policy (proxy.AccessPolicy:
// authenticate, inject_auth and headers today): a reload that
// changes them (say, drops authenticate or swaps the injected token) starts
// the route over with new entries instead of serving ones fetched under
// the old policy. Secrets enter only through the digest.
//
// Invalidation still reaches every route of an upstream: see Resource.
func routeScope(b *proxy.Build) []byte {
	h := sha256.New()
	for _, policy := range proxy.Peers[proxy.AccessPolicy](b) {
		v := reflect.ValueOf(policy)
		h.Write([]byte(v.Type().String()))
		h.Write([]byte{0})
		writeValue(h, v, 0)
		h.Write([]byte{0})
	}
	sum := h.Sum(nil)
	var hx [16]byte
	hex.Encode(hx[:], sum[:8])
	k := append([]byte(b.Upstream.Name), 0)
	k = append(append(k, b.Route.Name...), 0)
	return append(append(k, hx[:]...), 0)
}

// writeValue writes a deterministic encoding of v to h: every field,
// element and map entry (keys sorted), with string values as they are
// (proxy.Secret included: reflect reads the value, not its redacted form).
func writeValue(h hash.Hash, v reflect.Value, depth int) {
	var n [8]byte
	num := func(x uint64) {
		binary.LittleEndian.PutUint64(n[:], x)
		h.Write(n[:])
	}
	if depth > 32 || !v.IsValid() {
		h.Write([]byte{'!'})
		return
	}
	h.Write([]byte{byte(v.Kind())})
	switch v.Kind() {
	case reflect.Pointer, reflect.Interface:
		if v.IsNil() {
			return
		}
		writeValue(h, v.Elem(), depth+1)
	case reflect.String:
		num(uint64(v.Len()))
		h.Write([]byte(v.String()))
	case reflect.Bool:
		if v.Bool() {
			num(1)
		} else {
			num(0)
		}
	case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64:
		num(uint64(v.Int()))
	case reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64, reflect.Uintptr:
		num(v.Uint())
	case reflect.Float32, reflect.Float64:
		num(uint64(int64(v.Float() * 1e9)))
	case reflect.Slice, reflect.Array:
		num(uint64(v.Len()))
		for i := range v.Len() {
			writeValue(h, v.Index(i), depth+1)
		}
	case reflect.Struct:
		num(uint64(v.NumField()))
		for i := range v.NumField() {
			h.Write([]byte(v.Type().Field(i).Name))
			writeValue(h, v.Field(i), depth+1)
		}
	case reflect.Map:
		type kv struct {
			k string
			v reflect.Value
		}
		var entries []kv
		for it := v.MapRange(); it.Next(); {
			kh := sha256.New()
			writeValue(kh, it.Key(), depth+1)
			entries = append(entries, kv{string(kh.Sum(nil)), it.Value()})
		}
		slices.SortFunc(entries, func(a, b kv) int { return strings.Compare(a.k, b.k) })
		num(uint64(len(entries)))
		for _, e := range entries {
			h.Write([]byte(e.k))
			writeValue(h, e.v, depth+1)
		}
	default: // funcs, channels: not settings
	}
}

// defaultCredentialHeaders are the request headers that carry a caller's
// credentials; credential_headers adds more.
var defaultCredentialHeaders = []string{"Authorization", "Cookie", "X-Api-Key"}

// credentialNames is credentialHeaders as names for the request path.
func credentialNames(extra []string) []httpx.Name {
	var out []httpx.Name
	for _, n := range credentialHeaders(extra) {
		out = append(out, httpx.NewName(n))
	}
	return out
}

// credentialHeaders returns the defaults and extra, canonical and distinct.
func credentialHeaders(extra []string) []string {
	var out []string
	for _, n := range append(slices.Clone(defaultCredentialHeaders), extra...) {
		n = textproto.CanonicalMIMEHeaderKey(n)
		if !slices.Contains(out, n) {
			out = append(out, n)
		}
	}
	return out
}
