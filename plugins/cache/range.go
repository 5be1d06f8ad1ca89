package cache

import (
	"bytes"
)

// Outcomes of a Range header against a stored answer of a known length.
const (
	rangeIgnore        = iota // no Range, not bytes, invalid, or several ranges: send it all (200)
	rangeSatisfiable          // one range: 206 with Content-Range
	rangeUnsatisfiable        // 416 with Content-Range: bytes */size
)

// parseRange reads a Range value (RFC 9110 section 14.2) for a
// representation of size bytes. Only a single byte range is served: a
// syntactically invalid value, another unit and a list of several ranges
// are ignored (RFC 9110 section 14.2 lets a server ignore Range), which
// sends the whole answer. first and last are inclusive offsets.
func parseRange(v []byte, size int64) (first, last int64, outcome int) {
	unit, set, ok := bytes.Cut(v, []byte{'='})
	if !ok || !bytes.EqualFold(unit, []byte("bytes")) {
		return 0, 0, rangeIgnore
	}
	set = bytes.Trim(set, " \t")
	if len(set) == 0 || bytes.IndexByte(set, ',') >= 0 {
		return 0, 0, rangeIgnore
	}
	a, b, ok := bytes.Cut(set, []byte{'-'})
	if !ok {
		return 0, 0, rangeIgnore
	}
	if len(a) == 0 { // suffix-range: -N, the last N bytes
		n, ok := decimal(b)
		if !ok {
			return 0, 0, rangeIgnore
		}
		if n == 0 || size == 0 {
			return 0, 0, rangeUnsatisfiable
		}
		return max(size-n, 0), size - 1, rangeSatisfiable
	}
	first, ok = decimal(a)
	if !ok {
		return 0, 0, rangeIgnore
	}
	last = size - 1
	if len(b) > 0 {
		l, ok := decimal(b)
		if !ok || l < first {
			return 0, 0, rangeIgnore // last-pos before first-pos: invalid
		}
		last = min(l, size-1)
	}
	if first >= size {
		return 0, 0, rangeUnsatisfiable
	}
	return first, last, rangeSatisfiable
}

// decimal parses 1DIGIT+ (at most 18 digits: no overflow).
func decimal(b []byte) (int64, bool) {
	if len(b) == 0 || len(b) > 18 {
		return 0, false
	}
	n := int64(0)
	for _, c := range b {
		if c < '0' || c > '9' {
			return 0, false
		}
		n = n*10 + int64(c-'0')
	}
	return n, true
}

// appendContentRange appends "bytes first-last/size".
func appendContentRange(dst []byte, first, last, size int64) []byte {
	dst = append(dst, "bytes "...)
	dst = appendInt(dst, first)
	dst = append(dst, '-')
	dst = appendInt(dst, last)
	dst = append(dst, '/')
	return appendInt(dst, size)
}

func appendInt(dst []byte, n int64) []byte {
	var b [20]byte
	i := len(b)
	for {
		i--
		b[i] = byte('0' + n%10)
		n /= 10
		if n == 0 {
			break
		}
	}
	return append(dst, b[i:]...)
}
