package injectauth_test

import (
	"crypto/hmac"
	"crypto/sha256"
	"crypto/sha512"
	"encoding/base64"
	"encoding/hex"
	"hash"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/sluice-gw/sluice/internal/testkit"
)

// verify recomputes, on the provider's side, the signature documented in
// README from what the provider received.
func verify(r testkit.Recorded, secret string, newHash func() hash.Hash, parts []string, sigHeader, tsHeader, prefix string, b64 bool) (bool, string) {
	path, query, _ := strings.Cut(r.URI, "?")
	sum := sha256.Sum256(r.Body)
	values := map[string]string{
		"method": r.Method, "path": path, "query": query,
		"timestamp": r.Header.Get(tsHeader), "body": hex.EncodeToString(sum[:]),
	}
	var lines []string
	for _, p := range parts {
		lines = append(lines, values[p])
	}
	mac := hmac.New(newHash, []byte(secret))
	mac.Write([]byte(strings.Join(lines, "\n")))
	want := hex.EncodeToString(mac.Sum(nil))
	if b64 {
		want = base64.StdEncoding.EncodeToString(mac.Sum(nil))
	}
	return r.Header.Get(sigHeader) == prefix+want, strings.Join(lines, "\\n")
}

func TestHMACSignature(t *testing.T) {
	up := testkit.NewUpstream(t, nil)
	gw := testkit.StartGateway(t, consumers+`
upstreams:
  signing:
    url: "`+up.URL+`/api"
    plugins: {authenticate: {}}
routes:
  default:
    path: "/pay/{p:*}"
    upstream: signing
    strip_prefix: "/pay"
    plugins: {inject_auth: {type: hmac, secret: "hmac-signing-secret-1"}}
  custom:
    path: "/hook/{p:*}"
    upstream: signing
    strip_prefix: "/hook"
    plugins:
      inject_auth:
        type: hmac
        secret: "hmac-signing-secret-2"
        algorithm: sha512
        encoding: base64
        header: X-Hub-Signature
        timestamp_header: X-Hub-Time
        prefix: "sha512="
        sign: [method, path, timestamp, body]
  query-cred:
    path: "/q/{p:*}"
    upstream: signing
    strip_prefix: "/q"
    plugins: {inject_auth: {type: query, name: key, value: "query-secret"}}
`)
	before := time.Now().Unix()
	r := testkit.Do(t, "POST", gw.URL+"/pay/v1/charges?currency=eur&amount=100", `{"customer":"c_1"}`, "X-Api-Key", billingKey, "X-Signature", "forged")
	if r.Status != 200 {
		t.Fatalf("status %d: %s", r.Status, r.Body)
	}
	got := up.Last(t)
	if got.URI != "/api/v1/charges?currency=eur&amount=100" {
		t.Fatalf("upstream URI %q", got.URI)
	}
	if ok, sts := verify(got, "hmac-signing-secret-1", sha256.New, []string{"method", "path", "query", "timestamp", "body"}, "X-Signature", "X-Timestamp", "", false); !ok {
		t.Errorf("signature %q does not verify over %q", got.Header.Get("X-Signature"), sts)
	}
	if len(got.Header.Values("X-Signature")) != 1 {
		t.Error("the caller's X-Signature was forwarded beside the gateway's")
	}
	ts, err := strconv.ParseInt(got.Header.Get("X-Timestamp"), 10, 64)
	if err != nil || ts < before || ts > time.Now().Unix() {
		t.Errorf("X-Timestamp %q", got.Header.Get("X-Timestamp"))
	}

	// GET without body or query: empty query line, digest of the empty body.
	testkit.Do(t, "GET", gw.URL+"/pay/v1/balance", "", "X-Api-Key", billingKey)
	if ok, sts := verify(up.Last(t), "hmac-signing-secret-1", sha256.New, []string{"method", "path", "query", "timestamp", "body"}, "X-Signature", "X-Timestamp", "", false); !ok {
		t.Errorf("GET: signature does not verify over %q", sts)
	}

	testkit.Do(t, "PUT", gw.URL+"/hook/events/7", "payload", "X-Api-Key", billingKey)
	got = up.Last(t)
	if ok, sts := verify(got, "hmac-signing-secret-2", sha512.New, []string{"method", "path", "timestamp", "body"}, "X-Hub-Signature", "X-Hub-Time", "sha512=", true); !ok {
		t.Errorf("custom: signature %q does not verify over %q", got.Header.Get("X-Hub-Signature"), sts)
	}
	if got.Header.Get("X-Timestamp") != "" || got.Header.Get("X-Signature") != "" {
		t.Error("custom headers: defaults sent too")
	}
}
