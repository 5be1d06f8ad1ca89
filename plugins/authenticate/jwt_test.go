package authenticate_test

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"encoding/base64"
	"encoding/json"
	"math/big"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"
	"github.com/sluice-gw/sluice/internal/testkit"
)

func b64(b []byte) string { return base64.RawURLEncoding.EncodeToString(b) }

func rsaJWK(kid string, k *rsa.PublicKey) map[string]any {
	return map[string]any{"kty": "RSA", "kid": kid, "use": "sig", "alg": "RS256", "n": b64(k.N.Bytes()), "e": b64(big.NewInt(int64(k.E)).Bytes())}
}

func ecJWK(kid string, k *ecdsa.PublicKey) map[string]any {
	p, err := k.Bytes() // 0x04 || X || Y
	if err != nil {
		panic(err)
	}
	return map[string]any{"kty": "EC", "kid": kid, "crv": "P-256", "x": b64(p[1:33]), "y": b64(p[33:])}
}

func jwks(t *testing.T, keys ...map[string]any) string {
	b, err := json.Marshal(map[string]any{"keys": keys})
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

func sign(t *testing.T, method jwt.SigningMethod, kid string, key any, claims jwt.MapClaims) string {
	t.Helper()
	tok := jwt.NewWithClaims(method, claims)
	if kid != "" {
		tok.Header["kid"] = kid
	}
	s, err := tok.SignedString(key)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func TestJWT(t *testing.T) {
	rsaKey, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	ecKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	otherRSA, _ := rsa.GenerateKey(rand.Reader, 2048)
	hsSecret := []byte("jwt-hs256-shared-secret-0123456789")

	dir := t.TempDir()
	file := filepath.Join(dir, "jwks.json")
	testkit.WriteFile(t, file, jwks(t, rsaJWK("rsa-1", &rsaKey.PublicKey)))
	var jwksCalls atomic.Int64
	jwksSrv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		jwksCalls.Add(1)
		_, _ = w.Write([]byte(jwks(t, ecJWK("ec-1", &ecKey.PublicKey))))
	}))
	defer jwksSrv.Close()

	up := testkit.NewUpstream(t, nil)
	gw := testkit.StartGateway(t, `
consumers:
  billing: {keys: ["`+billingKey+`"]}
  crm: {keys: ["`+crmKey+`"]}
upstreams:
  up: {url: "`+up.URL+`"}
routes:
  rs:
    path: "/rs/{p:*}"
    upstream: up
    plugins: {authenticate: {jwt: {jwks_file: "`+file+`", issuer: "https://idp.test", audience: sluice}}}
  es:
    path: "/es/{p:*}"
    upstream: up
    plugins: {authenticate: {jwt: {jwks_url: "`+jwksSrv.URL+`", consumer_claim: client_id}}}
  hs:
    path: "/hs/{p:*}"
    upstream: up
    plugins: {authenticate: {consumers: [billing], jwt: {secret: "`+string(hsSecret)+`"}}}
`)
	now := time.Now()
	good := jwt.MapClaims{"iss": "https://idp.test", "aud": "sluice", "sub": "billing", "exp": now.Add(time.Hour).Unix(), "iat": now.Unix()}
	with := func(k string, v any) jwt.MapClaims {
		c := jwt.MapClaims{}
		for kk, vv := range good {
			c[kk] = vv
		}
		if v == nil {
			delete(c, k)
		} else {
			c[k] = v
		}
		return c
	}
	cases := []struct {
		name, path, token string
		status            int
		consumer          string
	}{
		{"rs256 from file", "/rs/x", sign(t, jwt.SigningMethodRS256, "rsa-1", rsaKey, good), 200, "billing"},
		{"rs256 without kid", "/rs/x", sign(t, jwt.SigningMethodRS256, "", rsaKey, good), 200, "billing"},
		{"unknown subject accepted as-is", "/rs/x", sign(t, jwt.SigningMethodRS256, "rsa-1", rsaKey, with("sub", "svc-reports")), 200, "svc-reports"},
		{"reserved anonymous subject", "/rs/x", sign(t, jwt.SigningMethodRS256, "rsa-1", rsaKey, with("sub", "anonymous")), 401, ""},
		{"expired", "/rs/x", sign(t, jwt.SigningMethodRS256, "rsa-1", rsaKey, with("exp", now.Add(-time.Minute).Unix())), 401, ""},
		{"no exp", "/rs/x", sign(t, jwt.SigningMethodRS256, "rsa-1", rsaKey, with("exp", nil)), 401, ""},
		{"wrong issuer", "/rs/x", sign(t, jwt.SigningMethodRS256, "rsa-1", rsaKey, with("iss", "https://evil.test")), 401, ""},
		{"wrong audience", "/rs/x", sign(t, jwt.SigningMethodRS256, "rsa-1", rsaKey, with("aud", "other")), 401, ""},
		{"signed by another key", "/rs/x", sign(t, jwt.SigningMethodRS256, "rsa-1", otherRSA, good), 401, ""},
		{"unknown kid", "/rs/x", sign(t, jwt.SigningMethodRS256, "rsa-2", rsaKey, good), 401, ""},
		{"hs256 not allowed with jwks", "/rs/x", sign(t, jwt.SigningMethodHS256, "", hsSecret, good), 401, ""},
		{"alg none", "/rs/x", sign(t, jwt.SigningMethodNone, "", jwt.UnsafeAllowNoneSignatureType, good), 401, ""},
		{"consumer key still works", "/rs/x", billingKey, 200, "billing"},
		{"es256 from url, claim client_id", "/es/x", sign(t, jwt.SigningMethodES256, "ec-1", ecKey, with("client_id", "crm")), 200, "crm"},
		{"es256 missing claim", "/es/x", sign(t, jwt.SigningMethodES256, "ec-1", ecKey, good), 401, ""},
		{"hs256", "/hs/x", sign(t, jwt.SigningMethodHS256, "", hsSecret, good), 200, "billing"},
		{"hs256 consumer not allowed", "/hs/x", sign(t, jwt.SigningMethodHS256, "", hsSecret, with("sub", "crm")), 403, ""},
		{"hs256 unknown subject on restricted route", "/hs/x", sign(t, jwt.SigningMethodHS256, "", hsSecret, with("sub", "svc-x")), 403, ""},
		{"hs256 wrong secret", "/hs/x", sign(t, jwt.SigningMethodHS256, "", []byte("another-secret-0123456789abcdef"), good), 401, ""},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			rid := "jwt-" + strings.ReplaceAll(c.name, " ", "-")
			resp := testkit.Do(t, "GET", gw.URL+c.path, "", "Authorization", "Bearer "+c.token, "X-Request-Id", rid)
			if resp.Status != c.status {
				t.Fatalf("status %d, want %d: %s", resp.Status, c.status, resp.Body)
			}
			if c.status == 401 && !strings.Contains(resp.Header.Get("WWW-Authenticate"), "Bearer") {
				t.Errorf("WWW-Authenticate %q", resp.Header.Get("WWW-Authenticate"))
			}
			if c.status != 200 {
				return
			}
			if got := up.Last(t); got.Header.Get("Authorization") != "" {
				t.Error("the bearer token was forwarded")
			}
			for _, line := range strings.Split(gw.Logs.String(), "\n") {
				if strings.Contains(line, `"request_id":"`+rid+`"`) && !strings.Contains(line, `"consumer":"`+c.consumer+`"`) {
					t.Errorf("access log %s, want consumer %s", line, c.consumer)
				}
			}
		})
	}
	if jwksCalls.Load() < 1 {
		t.Error("the JWKS URL was never fetched")
	}
	if v, _ := gw.Metrics(t).Value("sluice_auth_failures_total", "route", "rs", "reason", "invalid_token"); v != 9 {
		t.Errorf("invalid_token failures on rs = %v, want 9", v)
	}
}

func TestJWTConfigErrors(t *testing.T) {
	t.Parallel()
	route := func(jwtBlock string) string {
		return `
upstreams: {up: {url: "http://127.0.0.1:9"}}
routes: {r: {path: "/{p:*}", upstream: up, plugins: {authenticate: {jwt: ` + jwtBlock + `}}}}
`
	}
	const at = "routes.r.plugins.authenticate.jwt"
	cases := []struct{ name, block, path, msg string }{
		{"no key source", `{issuer: x}`, at, "exactly one of"},
		{"two sources", `{secret: s, jwks_file: /x}`, at, "exactly one of"},
		{"bad algorithm", `{secret: s, algorithms: [HS512]}`, at + ".algorithms[0]", "unsupported"},
		{"rs256 with secret", `{secret: s, algorithms: [RS256]}`, at + ".algorithms[0]", "needs a JWKS"},
		{"missing jwks file", `{jwks_file: /nonexistent/jwks.json}`, at + ".jwks_file", "cannot read"},
		{"bad url", `{jwks_url: "ftp://x"}`, at + ".jwks_url", "invalid URL"},
		{"url credentials", `{jwks_url: "https://u:hunter2pass@idp.test/jwks"}`, at + ".jwks_url", "[redacted]@idp.test"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			t.Parallel()
			testkit.WantOneProblem(t, testkit.ConfigProblems(t, route(c.block)), c.path, c.msg)
		})
	}
}

// TestJWKSURLRotation: the URL key set is fetched again in the background, so
// a token signed with a key published later is accepted without a reload.
func TestJWKSURLRotation(t *testing.T) {
	oldKey, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	newKey, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	var rotated atomic.Bool
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if rotated.Load() {
			_, _ = w.Write([]byte(jwks(t, ecJWK("new", &newKey.PublicKey))))
			return
		}
		_, _ = w.Write([]byte(jwks(t, ecJWK("old", &oldKey.PublicKey))))
	}))
	defer srv.Close()
	up := testkit.NewUpstream(t, nil)
	gw := testkit.StartGateway(t, `
upstreams: {up: {url: "`+up.URL+`"}}
routes: {r: {path: "/{p:*}", upstream: up, plugins: {authenticate: {jwt: {jwks_url: "`+srv.URL+`", jwks_refresh: 1s}}}}}
`)
	claims := jwt.MapClaims{"sub": "svc", "exp": time.Now().Add(time.Hour).Unix()}
	oldTok := sign(t, jwt.SigningMethodES256, "old", oldKey, claims)
	newTok := sign(t, jwt.SigningMethodES256, "new", newKey, claims)
	if r := testkit.Do(t, "GET", gw.URL+"/x", "", "Authorization", "Bearer "+oldTok); r.Status != 200 {
		t.Fatalf("old key: %d", r.Status)
	}
	if r := testkit.Do(t, "GET", gw.URL+"/x", "", "Authorization", "Bearer "+newTok); r.Status != 401 {
		t.Fatalf("new key before it is published: %d", r.Status)
	}
	rotated.Store(true)
	testkit.Eventually(t, 10*time.Second, func() bool {
		r, err := testkit.TryDo("GET", gw.URL+"/x", "", "Authorization", "Bearer "+newTok)
		return err == nil && r.Status == 200
	}, "the rotated key was never picked up")
	if r := testkit.Do(t, "GET", gw.URL+"/x", "", "Authorization", "Bearer "+oldTok); r.Status != 401 {
		t.Errorf("old key after rotation: %d, want 401", r.Status)
	}
}

// Routes that name the same JWKS URL share one key set: one download at
// start and one refresher, not one per route.
func TestJWKSURLSharedByRoutes(t *testing.T) {
	t.Parallel()
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	var calls atomic.Int64
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		calls.Add(1)
		_, _ = w.Write([]byte(jwks(t, ecJWK("k1", &key.PublicKey))))
	}))
	defer srv.Close()
	up := testkit.NewUpstream(t, nil)
	gw := testkit.StartGateway(t, `
upstreams: {up: {url: "`+up.URL+`"}}
plugins: {authenticate: {jwt: {jwks_url: "`+srv.URL+`"}}}
routes:
  a: {path: "/a/{p:*}", upstream: up}
  b: {path: "/b/{p:*}", upstream: up}
  c: {path: "/c/{p:*}", upstream: up}
`)
	tok := sign(t, jwt.SigningMethodES256, "k1", key, jwt.MapClaims{"sub": "svc", "exp": time.Now().Add(time.Hour).Unix()})
	for _, p := range []string{"/a/x", "/b/x", "/c/x"} {
		if r := testkit.Do(t, "GET", gw.URL+p, "", "Authorization", "Bearer "+tok); r.Status != 200 {
			t.Fatalf("%s: %d %s", p, r.Status, r.Body)
		}
	}
	if n := calls.Load(); n != 1 {
		t.Errorf("the JWKS URL was fetched %d times for 3 routes, want 1", n)
	}
}
