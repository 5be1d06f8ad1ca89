package authenticate

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"maps"
	"testing"
)

func pointJWK(kid string, k *ecdsa.PublicKey) map[string]any {
	p, err := k.Bytes() // 0x04 || X || Y
	if err != nil {
		panic(err)
	}
	return map[string]any{"kty": "EC", "kid": kid, "crv": "P-256", "x": b64(p[1:33]), "y": b64(p[33:])}
}

func b64(b []byte) string { return base64.RawURLEncoding.EncodeToString(b) }

func keySetJSON(keys ...map[string]any) string {
	b, err := json.Marshal(map[string]any{"keys": keys})
	if err != nil {
		panic(err)
	}
	return string(b)
}

// EC keys of a JWKS: points off the curve and oversized coordinates are
// refused; a coordinate written without its leading zero bytes is the same key.
func TestParseJWKSEC(t *testing.T) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	good := pointJWK("k", &key.PublicKey)
	if ks, err := parseJWKS([]byte(keySetJSON(good))); err != nil || len(ks.all) != 1 || !key.PublicKey.Equal(ks.all[0]) {
		t.Fatalf("a valid P-256 key: %v", err)
	}
	x, _ := base64.RawURLEncoding.DecodeString(good["x"].(string))
	offCurve := maps.Clone(good)
	x2 := bytes.Clone(x)
	x2[31] ^= 1
	offCurve["x"] = b64(x2)
	long := maps.Clone(good)
	long["x"] = b64(append([]byte{0}, x...))
	for name, k := range map[string]map[string]any{"off the curve": offCurve, "33-byte x": long} {
		if _, err := parseJWKS([]byte(keySetJSON(k))); err == nil {
			t.Errorf("%s: accepted", name)
		} else {
			t.Logf("%s: %v", name, err)
		}
	}
	// A key whose X starts with a zero byte, written short: still accepted.
	for range 2000 {
		k, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		j := pointJWK("z", &k.PublicKey)
		xb, _ := base64.RawURLEncoding.DecodeString(j["x"].(string))
		if xb[0] != 0 {
			continue
		}
		j["x"] = b64(xb[1:])
		if ks, err := parseJWKS([]byte(keySetJSON(j))); err != nil || !k.PublicKey.Equal(ks.all[0]) {
			t.Fatalf("short x: %v", err)
		}
		return
	}
	t.Log("no key with a leading zero byte in X in 2000 tries") // probability about 0.0004
}
