package cache_test

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/sluice-gw/sluice/internal/testkit"
	"github.com/sluice-gw/sluice/plugins/cache"
	"github.com/valyala/fasthttp"
)

func sign(secret, msg string) string {
	m := hmac.New(sha256.New, []byte(secret))
	m.Write([]byte(msg))
	return hex.EncodeToString(m.Sum(nil))
}

func webhookGateway(t *testing.T) (*testkit.Gateway, *origin) {
	o := newOrigin(t, func(ctx *fasthttp.RequestCtx, n int64) {
		ctx.Response.Header.Set("Cache-Control", "max-age=60")
		fmt.Fprintf(ctx, "%s=%d", ctx.Path(), n)
	})
	yaml := fmt.Sprintf(`
log: {access_log: false}
upstreams: {up: {url: "%s"}}
routes:
  customers:
    path: "/v1/customers/{id}"
    upstream: up
    plugins: {cache: {tags: ["customer:{id}"]}}
  hook-generic:
    path: "/hooks/generic"
    upstream: up
    plugins: {cache: {webhook: {secret: s3cret, tags: ["customer:{/data/customer}", "/extra"]}}}
  hook-stripe:
    path: "/hooks/stripe"
    upstream: up
    plugins: {cache: {webhook: {secret: whsec, scheme: timestamped, header: Stripe-Signature, tolerance: 5m, tags: ["customer:{/data/object/customer}"]}}}
`, o.URL)
	return testkit.StartGateway(t, yaml), o
}

func TestWebhookGeneric(t *testing.T) {
	gw, o := webhookGateway(t)
	get(t, gw.URL+"/v1/customers/1")
	get(t, gw.URL+"/v1/customers/2")
	payload := `{"data":{"customer":"1"},"extra":["customer:9"]}`
	for _, tc := range []struct{ name, sig string }{
		{"missing", ""},
		{"wrong secret", sign("other", payload)},
		{"not hex", "zz"},
		{"over another body", sign("s3cret", payload+" ")},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var hdr []string
			if tc.sig != "" {
				hdr = []string{"X-Signature", tc.sig}
			}
			r := testkit.Do(t, "POST", gw.URL+"/hooks/generic", payload, hdr...)
			if r.Status != 401 || !strings.Contains(string(r.Body), `"code":"unauthorized"`) || r.Header.Get("Content-Type") != "application/problem+json" {
				t.Errorf("%d %s %s, want 401 unauthorized problem+json", r.Status, r.Header.Get("Content-Type"), r.Body)
			}
		})
	}
	if r := get(t, gw.URL+"/v1/customers/1"); r.Header.Get("Cache-Status") != "sluice; hit" {
		t.Fatal("a rejected webhook purged something")
	}
	r := testkit.Do(t, "POST", gw.URL+"/hooks/generic", payload, "X-Signature", "sha256="+sign("s3cret", payload))
	if r.Status != 200 || !strings.Contains(string(r.Body), `"purged":1`) || !strings.Contains(string(r.Body), `customer:9`) {
		t.Fatalf("signed webhook: %d %s", r.Status, r.Body)
	}
	if r := get(t, gw.URL+"/v1/customers/1"); string(r.Body) != "/v1/customers/1=2" {
		t.Errorf("customer 1 not purged: %q", r.Body)
	}
	if r := get(t, gw.URL+"/v1/customers/2"); r.Header.Get("Cache-Status") != "sluice; hit" {
		t.Error("customer 2 purged too")
	}
	if o.Hits("/hooks/generic") != 0 {
		t.Error("the webhook route called its upstream")
	}
	if r := testkit.Do(t, "POST", gw.URL+"/hooks/generic", "not json", "X-Signature", sign("s3cret", "not json")); r.Status != 400 {
		t.Errorf("bad JSON: %d", r.Status)
	}
	if r := get(t, gw.URL+"/hooks/generic"); r.Status != 405 {
		t.Errorf("GET on a webhook: %d, want 405", r.Status)
	}
	if r := get(t, gw.AdminURL+"/admin/config"); r.Status != 200 || strings.Contains(string(r.Body), "s3cret") || !strings.Contains(string(r.Body), "webhook") {
		t.Errorf("/admin/config must show the webhook with its secret redacted: %d", r.Status)
	}
	if strings.Contains(gw.Logs.String(), "s3cret") {
		t.Error("the secret is in the logs")
	}
	if v, _ := gw.Metrics(t).Value("sluice_cache_invalidations_total", "source", "webhook"); v != 1 {
		t.Errorf("webhook invalidations %v, want 1", v)
	}
}

func TestWebhookTimestamped(t *testing.T) {
	gw, _ := webhookGateway(t)
	get(t, gw.URL+"/v1/customers/cus_1")
	payload := `{"type":"customer.updated","data":{"object":{"customer":"cus_1"}}}`
	header := func(ts int64, secret string) string {
		t := strconv.FormatInt(ts, 10)
		return "t=" + t + ",v1=" + sign(secret, t+"."+payload)
	}
	now := time.Now().Unix()
	for _, tc := range []struct{ name, sig string }{
		{"stale timestamp", header(now-600, "whsec")},
		{"future timestamp", header(now+600, "whsec")},
		{"wrong secret", header(now, "nope")},
		{"no v1", "t=" + strconv.FormatInt(now, 10)},
		{"timestamp swapped", "t=" + strconv.FormatInt(now-1, 10) + ",v1=" + sign("whsec", strconv.FormatInt(now, 10)+"."+payload)},
		{"generic form", sign("whsec", payload)},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := testkit.Do(t, "POST", gw.URL+"/hooks/stripe", payload, "Stripe-Signature", tc.sig)
			if r.Status != 401 || !strings.Contains(string(r.Body), `"code":"unauthorized"`) {
				t.Errorf("%d %s, want 401 unauthorized", r.Status, r.Body)
			}
		})
	}
	if r := get(t, gw.URL+"/v1/customers/cus_1"); r.Header.Get("Cache-Status") != "sluice; hit" {
		t.Fatal("a rejected webhook purged something")
	}
	// Several v1 signatures (secret rotation): one matching is enough.
	sig := "t=" + strconv.FormatInt(now, 10) + ",v1=" + sign("old", "x") + ",v1=" + sign("whsec", strconv.FormatInt(now, 10)+"."+payload)
	r := testkit.Do(t, "POST", gw.URL+"/hooks/stripe", payload, "Stripe-Signature", sig)
	if r.Status != 200 || !strings.Contains(string(r.Body), `"purged":1`) {
		t.Fatalf("signed webhook: %d %s", r.Status, r.Body)
	}
	if r := get(t, gw.URL+"/v1/customers/cus_1"); r.Header.Get("Cache-Status") == "sluice; hit" {
		t.Error("not purged")
	}
}

func TestOnInvalidateAndInvalidate(t *testing.T) {
	o := newOrigin(t, func(ctx *fasthttp.RequestCtx, n int64) {
		ctx.Response.Header.Set("Cache-Control", "max-age=60")
		ctx.Response.Header.Set("Cache-Tag", "a, b")
		fmt.Fprintf(ctx, "n=%d", n)
	})
	gw := gateway(t, o.URL, "{}")
	var mu sync.Mutex
	var seen []cache.Invalidation
	cancel := cache.OnInvalidate(func(inv cache.Invalidation) {
		mu.Lock()
		seen = append(seen, inv)
		mu.Unlock()
	})
	defer cancel()
	get(t, gw.URL+"/api/x")
	if n := cache.Invalidate(cache.Invalidation{Tags: []string{"b"}}); n < 1 {
		t.Errorf("Invalidate removed %d entries", n)
	}
	if r := get(t, gw.URL+"/api/x"); string(r.Body) != "n=2" {
		t.Errorf("after Invalidate: %q", r.Body)
	}
	testkit.Do(t, "DELETE", gw.URL+"/api/x", "")
	mu.Lock()
	defer mu.Unlock()
	var sources []string
	for _, s := range seen {
		sources = append(sources, s.Source)
	}
	if !strings.Contains(strings.Join(sources, ","), "hook") || !strings.Contains(strings.Join(sources, ","), "method") {
		t.Errorf("hook saw %v, want hook and method", sources)
	}
	if v, _ := gw.Metrics(t).Value("sluice_cache_invalidations_total", "source", "hook"); v < 1 {
		t.Errorf("hook invalidations %v", v)
	}
}
