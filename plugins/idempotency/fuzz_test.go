package idempotency

import (
	"bytes"
	"testing"
)

// ValidKey accepts exactly 1..max bytes of 0x20-0x7e.
func FuzzValidKey(f *testing.F) {
	for _, s := range []string{"", "order-1", "a b", "ab\x01", "ключ", string(bytes.Repeat([]byte("k"), 300))} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, key []byte) {
		got := ValidKey(key, 255)
		want := len(key) >= 1 && len(key) <= 255
		for _, c := range key {
			want = want && c >= 0x20 && c <= 0x7e
		}
		if got != want {
			t.Fatalf("ValidKey(%q) = %v, want %v", key, got, want)
		}
	})
}

// Stored answers come back from Redis as they went in; any other bytes
// are an error, never a panic.
func FuzzDecodeAnswer(f *testing.F) {
	a := &answer{status: 201, header: [][2]string{{"Content-Type", "application/json"}, {"X-A", ""}}, body: []byte(`{"id":1}`)}
	f.Add(a.encode([32]byte{1})[33:])
	f.Add([]byte{})
	f.Add([]byte{0xff, 0xff, 0xff})
	f.Fuzz(func(t *testing.T, b []byte) {
		got, err := decodeAnswer(b)
		if err != nil {
			return
		}
		again, err := decodeAnswer(got.encode([32]byte{})[33:])
		if err != nil || again.status != got.status || len(again.header) != len(got.header) || !bytes.Equal(again.body, got.body) {
			t.Fatalf("round trip of %q: %+v vs %+v (%v)", b, got, again, err)
		}
	})
}
