package cache

import (
	"bytes"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/sluice-gw/sluice/proxy/httpx"
	"github.com/valyala/fasthttp"
)

// formatDirectives writes d back as a Cache-Control value.
func formatDirectives(d directives) string {
	var parts []string
	for _, f := range []struct {
		on   bool
		name string
	}{{d.noStore, "no-store"}, {d.private, "private"}, {d.noCache, "no-cache"}, {d.public, "public"},
		{d.mustRevalidate, "must-revalidate"}, {d.proxyRevalidate, "proxy-revalidate"},
		{d.qualifiedNoCache, `no-cache="x"`}, {d.qualifiedPrivate, `private="x"`}} {
		if f.on {
			parts = append(parts, f.name)
		}
	}
	for _, f := range []struct {
		v    time.Duration
		name string
	}{{d.maxAge, "max-age"}, {d.sMaxAge, "s-maxage"}, {d.swr, "stale-while-revalidate"}, {d.sie, "stale-if-error"}} {
		if f.v >= 0 {
			parts = append(parts, fmt.Sprintf("%s=%d", f.name, f.v/time.Second))
		}
	}
	return strings.Join(parts, ", ")
}

// FuzzCacheControl: parsing any Cache-Control/Expires/Age/Date never
// panics, durations are absent (-1) or within [0, 2^31 s], freshness is
// never negative, the parse survives a round trip through its canonical
// form, and a no-store anywhere is never lost.
func FuzzCacheControl(f *testing.F) {
	now := time.Date(2026, 12, 1, 3, 0, 0, 0, time.UTC)
	for _, s := range []string{
		"max-age=60", "public, max-age=31536000, immutable", "private, max-age=0", "no-store",
		"no-cache", `no-cache="Set-Cookie"`, `private="Authorization", max-age=60`, "s-maxage=600, max-age=0",
		"max-age=60, stale-while-revalidate=30, stale-if-error=86400", "must-revalidate, max-age=0",
		"MAX-AGE=10", `max-age="60"`, "max-age=-1", "max-age=99999999999999999999", "max-age=1e3", "max-age=",
		"max-age=60,,, ,", `no-cache="a, b", max-age=5`, "max-age=60\x00no-store", "=,=,=", `"`, "no-store=1",
		"max-age=60, max-age=0", "proxy-revalidate, s-maxage=0",
	} {
		f.Add(s, "", "", "")
	}
	f.Add("", now.Add(time.Minute).Format(http.TimeFormat), "", now.Format(http.TimeFormat))
	f.Add("", "0", "", "")
	f.Add("", "Thu, 01 Jan 1970 00:00:00 GMT", "100", "not a date")
	f.Add("max-age=100", "", "30", "")
	f.Add("max-age=100", "", "-5", "")
	f.Add("max-age=100", "", "9223372036854775807", "")
	f.Fuzz(func(t *testing.T, cc, expires, age, date string) {
		var h fasthttp.ResponseHeader
		for _, line := range strings.Split(cc, "\n") {
			h.Add(fasthttp.HeaderCacheControl, line)
		}
		if expires != "" {
			h.Set(fasthttp.HeaderExpires, expires)
		}
		if age != "" {
			h.Set(fasthttp.HeaderAge, age)
		}
		if date != "" {
			h.Set(fasthttp.HeaderDate, date)
		}
		d := parseCacheControl(&h)
		for _, v := range []time.Duration{d.maxAge, d.sMaxAge, d.swr, d.sie} {
			if v != -1 && (v < 0 || v > (1<<31)*time.Second) {
				t.Fatalf("duration %v out of range for %q", v, cc)
			}
		}
		lifetime, a, _ := freshness(&h, &d, now)
		if lifetime < 0 || a < 0 {
			t.Fatalf("lifetime %v, age %v for %q/%q/%q", lifetime, a, cc, expires, age)
		}
		var h2 fasthttp.ResponseHeader
		h2.Set(fasthttp.HeaderCacheControl, formatDirectives(d))
		if d2 := parseCacheControl(&h2); d2 != d {
			t.Fatalf("round trip of %q: %+v, then %+v", cc, d, d2)
		}
		var h3 fasthttp.ResponseHeader
		h3.Set(fasthttp.HeaderCacheControl, strings.ReplaceAll(cc, "\n", ",")+", no-store")
		if !parseCacheControl(&h3).noStore {
			t.Fatalf("no-store lost after %q", cc)
		}
	})
}

// FuzzVaryAndKey: Vary parsing never accepts "*" or a non-token name and
// returns sorted distinct lower-case names; the query forwarded upstream is
// exactly the key's (only kept parameters, normalizing it again changes
// nothing); variant keys tell different header lines apart.
func FuzzVaryAndKey(f *testing.F) {
	for _, s := range [][6]string{
		{"Accept-Encoding", "/api/x", "page=1&callback=EVIL", "page", "en", "en"},
		{"Accept-Language, Accept-Encoding", "/api/x", "b=2&a=1", "", "de", "de\nevil"},
		{"*", "/api/x", "page=1&page=2", "page", "", ""},
		{"accept, ACCEPT,  Accept ", "/api/", "a&&b=&=c", "a,b", "x", "x,y"},
		{"Origin, *", "/api/p", "page=1;callback=EVIL", "page", "a", "a\n"},
		{"X-Foo\x00", "/api/p", "%70age=1&page=2", "page", "", "\n"},
		{"", "/api/p", "sort=b&sort=a&x=1", "", "1", "1"},
	} {
		f.Add(s[0], s[1], s[2], s[3], s[4], s[5])
	}
	f.Fuzz(func(t *testing.T, vary, path, query, keep, v1, v2 string) {
		names, ok := parseVary([][]byte{[]byte(vary)})
		hasStar := false
		for _, n := range strings.Split(vary, ",") {
			n = strings.TrimSpace(n)
			if n == "*" {
				hasStar = true
			}
		}
		if hasStar && ok {
			t.Fatalf("Vary %q with * accepted: %q", vary, names)
		}
		for i, n := range names {
			if !httpx.ValidToken(n) || n != strings.ToLower(n) || (i > 0 && names[i-1] >= n) {
				t.Fatalf("Vary %q: names %q not sorted distinct lower-case tokens", vary, names)
			}
		}

		if len(path) == 0 || path[0] != '/' || strings.ContainsAny(path, "?\x00") || strings.Contains(query, "\x00") {
			return
		}
		c := &Plugin{scope: []byte("up\x00r\x00p\x00"), sorted: true, queryAll: keep == "", credHeaders: credentialNames(nil),
			byCredential: true, stripPrefix: "/api", stripPrefixB: []byte("/api")}
		for _, k := range strings.Split(keep, ",") {
			if k != "" {
				c.queryKeep = append(c.queryKeep, []byte(k))
			}
		}
		if !c.queryAll && len(c.queryKeep) == 0 {
			return
		}
		var ctx fasthttp.RequestCtx
		kb := &keyBuf{}
		c.buildKey(&ctx, []byte(path), []byte(query), "", kb)
		if !bytes.HasPrefix(kb.key, c.scope) {
			t.Fatalf("key %q lacks the scope", kb.key)
		}
		fwd := []byte(query)
		switch {
		case c.queryAll && kb.narrowed:
			t.Fatalf("query: all rewrote the forwarded query %q into %q", query, kb.query)
		case !c.queryAll && kb.narrowed == bytes.Equal(kb.query, []byte(query)):
			t.Fatalf("narrowed %v but forwarded %q for %q", kb.narrowed, kb.query, query)
		case kb.narrowed:
			fwd = bytes.Clone(kb.query)
		}
		for _, p := range bytes.Split(fwd, []byte{'&'}) {
			if len(fwd) == 0 || !kb.narrowed {
				break // nothing forwarded
			}
			name, _, _ := bytes.Cut(p, []byte{'='})
			if len(p) == 0 {
				t.Fatalf("empty parameter forwarded: %q", fwd)
			}
			if !c.queryAll && !bytes.Contains([]byte(","+keep+","), append(append([]byte{','}, name...), ',')) {
				t.Fatalf("parameter %q forwarded but not kept (%q)", name, keep)
			}
		}
		key := bytes.Clone(kb.key)
		kb2 := &keyBuf{}
		c.buildKey(&ctx, []byte(path), fwd, "", kb2)
		if !bytes.Equal(kb2.key, key) || kb2.narrowed {
			t.Fatalf("forwarding %q: key %q, the forwarded query keys %q (narrowed %v)", fwd, key, kb2.key, kb2.narrowed)
		}

		if strings.ContainsAny(v1+v2, "\r\x00") {
			return
		}
		var enc []byte
		enc = append(enc, 1, 0)
		enc = appendBytes16(enc, []byte("accept-language"))
		m := &varyMarker{nonce: 7, names: enc}
		variant := func(lines string) []byte {
			var r fasthttp.RequestCtx
			var ls []string
			if lines != "" {
				ls = strings.Split(lines, "\n")
			}
			for _, l := range ls {
				r.Request.Header.Add("Accept-Language", l)
			}
			got := r.Request.Header.PeekAll("Accept-Language")
			if len(got) != len(ls) {
				return nil // fasthttp drops or merges some values: not what this checks
			}
			for i := range got {
				if string(got[i]) != ls[i] {
					return nil
				}
			}
			kb.key = key
			variantKey(&r, kb, m)
			return bytes.Clone(kb.vkey)
		}
		k1, k2 := variant(v1), variant(v2)
		if k1 != nil && k2 != nil && (v1 == v2) != bytes.Equal(k1, k2) {
			t.Fatalf("lines %q and %q: variant keys %q and %q", v1, v2, k1, k2)
		}
	})
}

// FuzzWebhookVerify: a signature is accepted only when it is the HMAC of
// the secret over the body (generic) or over "t." + body with t in the
// window and at most the clock skew ahead (timestamped); a valid one is
// always accepted; nothing panics.
func FuzzWebhookVerify(f *testing.F) {
	secret := []byte("whsec_test")
	now := time.Unix(1_764_558_000, 0)
	mac := func(msg string) string {
		m := hmac.New(sha256.New, secret)
		m.Write([]byte(msg))
		return hex.EncodeToString(m.Sum(nil))
	}
	body := `{"data":{"object":{"customer":"cus_1"}}}`
	ts := strconv.FormatInt(now.Unix(), 10)
	for _, s := range []string{
		mac(body), "sha256=" + mac(body), strings.ToUpper(mac(body)), " " + mac(body) + " ", "",
		"t=" + ts + ",v1=" + mac(ts+"."+body),
		"t=" + ts + ",v1=00,v1=" + mac(ts+"."+body),
		"t=" + strconv.FormatInt(now.Unix()+290, 10) + ",v1=" + mac(strconv.FormatInt(now.Unix()+290, 10)+"."+body),
		"t=" + strconv.FormatInt(now.Unix()-600, 10) + ",v1=" + mac(strconv.FormatInt(now.Unix()-600, 10)+"."+body),
		"t=-1,v1=" + mac("-1."+body), "t=99999999999999999999,v1=00", "t=,v1=", "v1=" + mac(body), "t=" + ts,
		"t=" + ts + ",t=" + ts + ",v1=" + mac(ts+"."+body), "t= " + ts + ",v1=" + mac(ts+"."+body), "zz", "sha256=",
	} {
		f.Add(s, body, true)
		f.Add(s, body, false)
	}
	f.Fuzz(func(t *testing.T, sig, body string, timestamped bool) {
		w := &webhook{secret: secret, timestamped: timestamped, tolerance: 5 * time.Minute,
			now: func() time.Time { return now }, seen: newSeenSet(4)}
		_, expires, ok := w.verify([]byte(sig), []byte(body))
		if !timestamped {
			want := mac(body)
			s := strings.TrimPrefix(strings.TrimSpace(sig), "sha256=")
			if ok != strings.EqualFold(s, want) {
				t.Fatalf("generic %q over %q: accepted %v", sig, body, ok)
			}
			if ok && !expires.Equal(now.Add(w.tolerance)) {
				t.Fatalf("replay window ends %v", expires)
			}
			return
		}
		if !ok {
			return
		}
		// Accepted: some t=, in the window, signs the body with the secret.
		found := false
		for _, part := range strings.Split(sig, ",") {
			k, v, _ := strings.Cut(strings.TrimSpace(part), "=")
			if k != "t" {
				continue
			}
			n, err := strconv.ParseInt(v, 10, 64)
			if err != nil {
				continue
			}
			d := now.Sub(time.Unix(n, 0))
			if d > w.tolerance || d < -maxFutureSkew {
				t.Fatalf("%q accepted with t %d (%v from now)", sig, n, d)
			}
			for _, p2 := range strings.Split(sig, ",") {
				k2, v2, _ := strings.Cut(strings.TrimSpace(p2), "=")
				if k2 == "v1" && strings.EqualFold(v2, mac(v+"."+body)) {
					found = true
				}
			}
		}
		if !found {
			t.Fatalf("%q accepted over %q without a valid signature", sig, body)
		}
	})
}

// The seen-set refuses a replay within the window, accepts it after, and
// stays within its bound.
func TestSeenSet(t *testing.T) {
	s := newSeenSet(3)
	now := time.Unix(1000, 0)
	k := func(b byte) (m [32]byte) { m[0] = b; return }
	if !s.add(k(1), now.Add(time.Minute), now) || s.add(k(1), now.Add(time.Minute), now.Add(30*time.Second)) {
		t.Fatal("replay within the window accepted")
	}
	if !s.add(k(1), now.Add(3*time.Minute), now.Add(2*time.Minute)) {
		t.Fatal("refused after the window")
	}
	for i := range byte(10) {
		s.add(k(10+i), now.Add(time.Hour), now.Add(2*time.Minute))
	}
	if len(s.m) > 3 || len(s.order) > 3 {
		t.Fatalf("%d remembered, %d in order, bound 3", len(s.m), len(s.order))
	}
	if s.add(k(19), now.Add(time.Hour), now.Add(3*time.Minute)) {
		t.Fatal("the newest was forgotten")
	}
}
