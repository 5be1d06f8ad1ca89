package proxy

import (
	"crypto/rand"
	"encoding/binary"
	"sync/atomic"
)

// validRequestID accepts 1 to 200 visible ASCII characters: enough for UUIDs,
// trace ids and the like, never a header-splitting or log-forging value.
func validRequestID(id []byte) bool {
	if len(id) == 0 || len(id) > 200 {
		return false
	}
	for _, c := range id {
		if c < 0x21 || c > 0x7e {
			return false
		}
	}
	return true
}

var (
	idPrefix  uint64
	idCounter atomic.Uint64
)

func init() {
	var b [16]byte
	_, _ = rand.Read(b[:])
	idPrefix = binary.LittleEndian.Uint64(b[:8])
	idCounter.Store(binary.LittleEndian.Uint64(b[8:]))
}

// newRequestID appends a 32-hex-digit id: a per-process random prefix and a
// counter, unique without coordination and free of allocation.
func newRequestID(dst []byte) []byte {
	n := idCounter.Add(1)
	dst = appendHex64(dst, idPrefix)
	return appendHex64(dst, n)
}

func appendHex64(dst []byte, v uint64) []byte {
	for shift := 60; shift >= 0; shift -= 4 {
		dst = append(dst, hexDigits[(v>>uint(shift))&0xf])
	}
	return dst
}
