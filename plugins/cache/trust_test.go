package cache_test

import (
	"fmt"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/sluice-gw/sluice/internal/testkit"
	"github.com/valyala/fasthttp"
)

// echoOrigin answers with what it received: the credentials, the request
// URI; cacheable only through the route's ttl.
func echoOrigin(t *testing.T) *origin {
	return newOrigin(t, func(ctx *fasthttp.RequestCtx, n int64) {
		fmt.Fprintf(ctx, "#%d uri=%s auth=%q cookie=%q xkey=%q apikey=%q", n, ctx.RequestURI(),
			ctx.Request.Header.Peek("Authorization"), ctx.Request.Header.Peek("Cookie"),
			ctx.Request.Header.Peek("X-Api-Key"), ctx.Request.Header.Peek("Api-Key"))
	})
}

const providerToken = "provider-secret-token-0123456789"

func twoRoutesYAML(url, private string) string {
	return fmt.Sprintf(`
log: {access_log: false}
consumers:
  billing: {keys: ["billing-key-0123456789"]}
upstreams: {up: {url: "%s"}}
routes:
  private:
    path: "/private/{p:*}"
    upstream: up
    strip_prefix: /private
    plugins: %s
  public:
    path: "/public/{p:*}"
    upstream: up
    strip_prefix: /public
    plugins: {cache: {ttl: 60s}}
`, url, private)
}

// A: an answer fetched on a route behind authenticate, with credentials
// injected by inject_auth, is never served on another route of the same
// upstream (the real authenticate and inject_auth plugins).
func TestRoutesNeverShareEntries(t *testing.T) {
	o := echoOrigin(t)
	gw := testkit.StartGateway(t, twoRoutesYAML(o.URL,
		`{authenticate: {}, inject_auth: {type: bearer, token: "`+providerToken+`"}, cache: {ttl: 60s}}`))
	priv := func() *testkit.Response {
		return get(t, gw.URL+"/private/echo", "X-Api-Key", "billing-key-0123456789")
	}
	if r := priv(); r.Status != 200 || !strings.Contains(string(r.Body), providerToken) || r.Header.Get("Cache-Status") != "sluice; fwd=miss; stored" {
		t.Fatalf("private: %d %q %q", r.Status, r.Body, r.Header.Get("Cache-Status"))
	}
	if r := priv(); r.Header.Get("Cache-Status") != "sluice; hit" {
		t.Fatalf("private again: %q, want a hit", r.Header.Get("Cache-Status"))
	}
	pub := get(t, gw.URL+"/public/echo")
	if pub.Header.Get("Cache-Status") == "sluice; hit" || strings.Contains(string(pub.Body), providerToken) || !strings.HasPrefix(string(pub.Body), "#2 ") {
		t.Errorf("anonymous public call got %q (Cache-Status %q): the private route's answer", pub.Body, pub.Header.Get("Cache-Status"))
	}
	if r := get(t, gw.URL+"/private/echo"); r.Status != 401 || strings.Contains(string(r.Body), providerToken) {
		t.Errorf("anonymous private call: %d %q", r.Status, r.Body)
	}

	t.Run("an unsafe method on one route invalidates the other's entries", func(t *testing.T) {
		if r := get(t, gw.URL+"/public/echo"); r.Header.Get("Cache-Status") != "sluice; hit" {
			t.Fatalf("public again: %q, want a hit", r.Header.Get("Cache-Status"))
		}
		if r := testkit.Do(t, "POST", gw.URL+"/public/echo?x=1", "{}"); r.Status != 200 {
			t.Fatalf("POST: %d", r.Status)
		}
		if r := priv(); r.Header.Get("Cache-Status") != "sluice; fwd=miss; stored" {
			t.Errorf("private after a POST on the public route: %q, want a miss", r.Header.Get("Cache-Status"))
		}
		if r := get(t, gw.URL+"/public/echo"); r.Header.Get("Cache-Status") != "sluice; fwd=miss; stored" {
			t.Errorf("public after its POST: %q, want a miss", r.Header.Get("Cache-Status"))
		}
	})

	t.Run("a reload that drops authenticate does not serve what it guarded", func(t *testing.T) {
		priv()
		testkit.WriteFile(t, gw.File, twoRoutesYAML(o.URL, `{cache: {ttl: 60s}}`))
		if err := gw.Reload(); err != nil {
			t.Fatal(err)
		}
		r := get(t, gw.URL+"/private/echo")
		if r.Header.Get("Cache-Status") == "sluice; hit" || strings.Contains(string(r.Body), providerToken) {
			t.Errorf("anonymous call after the reload got %q (Cache-Status %q)", r.Body, r.Header.Get("Cache-Status"))
		}
	})
}

// A reload that rotates the injected credential (same type, new token, or
// a new per-consumer override) starts the route over: an answer fetched
// with the old token is not served under the new one.
func TestRotatedCredentialStartsTheRouteOver(t *testing.T) {
	o := echoOrigin(t)
	block := func(token, override string) string {
		return `{authenticate: {}, inject_auth: {type: bearer, token: "` + token + `"` + override + `}, cache: {ttl: 60s}}`
	}
	gw := testkit.StartGateway(t, twoRoutesYAML(o.URL, block(providerToken, "")))
	priv := func() *testkit.Response {
		return get(t, gw.URL+"/private/echo", "X-Api-Key", "billing-key-0123456789")
	}
	priv()
	if r := priv(); r.Header.Get("Cache-Status") != "sluice; hit" {
		t.Fatalf("before the reload: %q, want a hit", r.Header.Get("Cache-Status"))
	}
	for _, c := range []struct{ name, token, override string }{
		{"new token", "rotated-provider-token-0123456", ""},
		{"new override", "rotated-provider-token-0123456", `, consumers: {billing: {token: "billing-provider-token-0123"}}`},
	} {
		testkit.WriteFile(t, gw.File, twoRoutesYAML(o.URL, block(c.token, c.override)))
		if err := gw.Reload(); err != nil {
			t.Fatal(err)
		}
		r := priv()
		if r.Header.Get("Cache-Status") == "sluice; hit" {
			t.Errorf("%s: the answer fetched under the old credential was served: %q", c.name, r.Body)
		}
	}
}

// B1: with partition auto, every credential header the caller passes
// through keeps its answers apart, not only Authorization.
func TestCredentialHeadersPartition(t *testing.T) {
	o := echoOrigin(t)
	gw := gateway(t, o.URL, "{ttl: 60s}")
	for _, h := range []string{"Cookie", "X-Api-Key", "Api-Key", "Authorization"} {
		t.Run(h, func(t *testing.T) {
			gw := gw
			if h == "Api-Key" { // not a default: configured
				gw = gateway(t, o.URL, "{ttl: 60s, credential_headers: [Api-Key]}")
			}
			url := gw.URL + "/api/" + h
			a1 := get(t, url, h, "alice-secret")
			a2 := get(t, url, h, "alice-secret")
			b := get(t, url, h, "bob-secret")
			anon := get(t, url)
			if a2.Header.Get("Cache-Status") != "sluice; hit" || string(a2.Body) != string(a1.Body) {
				t.Errorf("alice again: %q %q, want her own entry", a2.Body, a2.Header.Get("Cache-Status"))
			}
			for who, r := range map[string]*testkit.Response{"bob": b, "anonymous": anon} {
				if strings.Contains(string(r.Body), "alice") || r.Header.Get("Cache-Status") == "sluice; hit" {
					t.Errorf("%s got %q (Cache-Status %q): alice's answer", who, r.Body, r.Header.Get("Cache-Status"))
				}
			}
		})
	}
	t.Run("two lines of one header", func(t *testing.T) {
		get(t, gw.URL+"/api/lines", "Cookie", "s=alice")
		r := get(t, gw.URL+"/api/lines", "Cookie", "s=alice", "Cookie", "x=1")
		if r.Header.Get("Cache-Status") == "sluice; hit" {
			t.Errorf("a request with another Cookie line shares the entry: %q", r.Body)
		}
	})
	t.Run("partition none stores no answer to a credential unless it says public", func(t *testing.T) {
		gw := gateway(t, o.URL, "{ttl: 60s, partition: none}")
		get(t, gw.URL+"/api/none", "Cookie", "s=alice")
		if r := get(t, gw.URL+"/api/none", "Cookie", "s=bob"); r.Header.Get("Cache-Status") == "sluice; hit" || strings.Contains(string(r.Body), "alice") {
			t.Errorf("bob got %q (%q)", r.Body, r.Header.Get("Cache-Status"))
		}
	})
}

// B2: parameters the key drops never reach the provider, so they cannot
// poison the entry of the parameters it keeps.
func TestDroppedQueryParametersAreNotForwarded(t *testing.T) {
	o := echoOrigin(t)
	for _, tc := range []struct {
		block, poison, clean, forwarded string
	}{
		{"{ttl: 60s, query: [page]}", "/api/q1?page=1&callback=EVIL", "/api/q1?page=1", "/q1?page=1"},
		{"{ttl: 60s, query: none}", "/api/q2?callback=EVIL", "/api/q2", "/q2"},
		// Every parameter is in the key: the query goes out as sent, and the
		// same parameters in another order share the entry.
		{"{ttl: 60s}", "/api/q3?b=EVIL&a=1", "/api/q3?a=1&b=EVIL", "/q3?b=EVIL&a=1"},
	} {
		t.Run(tc.block, func(t *testing.T) {
			gw := gateway(t, o.URL, tc.block)
			first := get(t, gw.URL+tc.poison)
			if !strings.Contains(string(first.Body), "uri="+tc.forwarded+" ") {
				t.Errorf("the provider got %q, want uri=%s", first.Body, tc.forwarded)
			}
			second := get(t, gw.URL+tc.clean)
			if second.Header.Get("Cache-Status") != "sluice; hit" || string(second.Body) != string(first.Body) {
				t.Errorf("clean request: %q %q, want the same entry", second.Body, second.Header.Get("Cache-Status"))
			}
		})
	}
	t.Run("repeated parameters keep their order", func(t *testing.T) {
		gw := gateway(t, o.URL, "{ttl: 60s}")
		a := get(t, gw.URL+"/api/s?sort=a&sort=b")
		b := get(t, gw.URL+"/api/s?sort=b&sort=a")
		if b.Header.Get("Cache-Status") == "sluice; hit" || !strings.Contains(string(b.Body), "uri=/s?sort=b&sort=a ") {
			t.Errorf("?sort=b&sort=a got %q (%q) after %q", b.Body, b.Header.Get("Cache-Status"), a.Body)
		}
	})
	t.Run("inject_auth query credentials still follow", func(t *testing.T) {
		gw := testkit.StartGateway(t, fmt.Sprintf(`
log: {access_log: false}
upstreams: {up: {url: "%s"}}
routes:
  r: {path: "/api/{p:*}", upstream: up, strip_prefix: /api, plugins: {inject_auth: {type: query, name: key, value: k123}, cache: {ttl: 60s, query: [page]}}}
`, o.URL))
		r := get(t, gw.URL+"/api/q4?page=2&callback=EVIL")
		if !strings.Contains(string(r.Body), "uri=/q4?page=2&key=k123 ") {
			t.Errorf("the provider got %q, want uri=/q4?page=2&key=k123", r.Body)
		}
	})
}

// C: a request carrying a method-override header is refused by the
// gateway before the cache: it is never answered from a stored entry, never
// stored, and never reaches the provider.
func TestMethodOverrideIsNeverCached(t *testing.T) {
	o := echoOrigin(t)
	gw := gateway(t, o.URL, "{ttl: 60s}")
	for _, h := range []string{"X-HTTP-Method-Override", "X-HTTP-Method", "X-Method-Override"} {
		t.Run(h, func(t *testing.T) {
			url := gw.URL + "/api/" + h
			get(t, url) // stored
			ov := get(t, url, h, "DELETE")
			if ov.Status != 400 || ov.Header.Get("Cache-Status") != "" {
				t.Errorf("override: %d, Cache-Status %q, want 400 from the gateway", ov.Status, ov.Header.Get("Cache-Status"))
			}
			if r := get(t, url); r.Header.Get("Cache-Status") != "sluice; hit" {
				t.Errorf("plain GET after the refused override: %q, want a hit", r.Header.Get("Cache-Status"))
			}
		})
	}
	if n := o.Count(); n != 3 {
		t.Errorf("the provider got %d requests, want 3 (one plain GET per path)", n)
	}
}

// Vary: every line of a varying header is part of the variant.
func TestVaryCountsEveryLine(t *testing.T) {
	o := newOrigin(t, func(ctx *fasthttp.RequestCtx, n int64) {
		ctx.Response.Header.Set("Cache-Control", "max-age=60")
		ctx.Response.Header.Set("Vary", "Accept-Language")
		fmt.Fprintf(ctx, "%q-%d", ctx.Request.Header.PeekAll("Accept-Language"), n)
	})
	gw := gateway(t, o.URL, "{}")
	get(t, gw.URL+"/api/v", "Accept-Language", "en", "Accept-Language", "evil")
	if r := get(t, gw.URL+"/api/v", "Accept-Language", "en"); r.Header.Get("Cache-Status") == "sluice; hit" || strings.Contains(string(r.Body), "evil") {
		t.Errorf("Accept-Language: en got %q (%q)", r.Body, r.Header.Get("Cache-Status"))
	}
}

// D: an accepted webhook delivery is refused when it comes again, and a
// timestamp from the future is refused beyond a small clock skew.
func TestWebhookReplays(t *testing.T) {
	gw, _ := webhookGateway(t)
	t.Run("generic", func(t *testing.T) {
		payload := `{"data":{"customer":"7"},"id":"evt_1"}`
		sig := sign("s3cret", payload)
		if r := testkit.Do(t, "POST", gw.URL+"/hooks/generic", payload, "X-Signature", sig); r.Status != 200 {
			t.Fatalf("first delivery: %d %s", r.Status, r.Body)
		}
		for _, s := range []string{sig, "sha256=" + sig, strings.ToUpper(sig)} {
			r := testkit.Do(t, "POST", gw.URL+"/hooks/generic", payload, "X-Signature", s)
			if r.Status != 401 || !strings.Contains(string(r.Body), "replay") || r.Header.Get("Content-Type") != "application/problem+json" {
				t.Errorf("replay %q: %d %s", s, r.Status, r.Body)
			}
		}
	})
	t.Run("timestamped", func(t *testing.T) {
		payload := `{"type":"customer.updated","data":{"object":{"customer":"cus_9"}}}`
		header := func(ts int64) string {
			t := strconv.FormatInt(ts, 10)
			return "t=" + t + ",v1=" + sign("whsec", t+"."+payload)
		}
		now := time.Now().Unix()
		sig := header(now)
		if r := testkit.Do(t, "POST", gw.URL+"/hooks/stripe", payload, "Stripe-Signature", sig); r.Status != 200 {
			t.Fatalf("first delivery: %d %s", r.Status, r.Body)
		}
		for i := range 3 {
			if r := testkit.Do(t, "POST", gw.URL+"/hooks/stripe", payload, "Stripe-Signature", sig); r.Status != 401 {
				t.Errorf("replay %d: %d %s", i, r.Status, r.Body)
			}
		}
		if r := testkit.Do(t, "POST", gw.URL+"/hooks/stripe", payload, "Stripe-Signature", header(now+290)); r.Status != 401 {
			t.Errorf("290 s in the future: %d %s", r.Status, r.Body)
		}
		if r := testkit.Do(t, "POST", gw.URL+"/hooks/stripe", payload, "Stripe-Signature", header(now+5)); r.Status != 200 {
			t.Errorf("5 s ahead (clock skew): %d %s", r.Status, r.Body)
		}
	})
}

// An answer whose no-cache names fields (often per caller: a session) is
// never reused without asking the provider.
func TestQualifiedNoCacheIsNotReusedUnrevalidated(t *testing.T) {
	o := newOrigin(t, func(ctx *fasthttp.RequestCtx, n int64) {
		ctx.Response.Header.Set("Cache-Control", `max-age=60, no-cache="X-Session"`)
		ctx.Response.Header.Set("X-Session", fmt.Sprintf("session-%d", n))
		fmt.Fprintf(ctx, "n=%d", n)
	})
	gw := gateway(t, o.URL, "{}")
	get(t, gw.URL+"/api/s")
	if r := get(t, gw.URL+"/api/s"); r.Header.Get("Cache-Status") == "sluice; hit" || r.Header.Get("X-Session") != "session-2" {
		t.Errorf("second caller: %q, X-Session %q: the first caller's", r.Header.Get("Cache-Status"), r.Header.Get("X-Session"))
	}
}
