package cache_test

import (
	"fmt"
	"net/http"
	"net/http/httptest"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/sluice-gw/sluice/internal/testkit"
	"github.com/valyala/fasthttp"
)

// netOrigin is a real net/http upstream: unlike fasthttp's server it lets a
// handler send any Date, or none.
type netOrigin struct {
	URL  string
	mu   sync.Mutex
	hits map[string]int
}

func newNetOrigin(t *testing.T, h func(w http.ResponseWriter, r *http.Request, n int)) *netOrigin {
	o := &netOrigin{hits: map[string]int{}}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		o.mu.Lock()
		o.hits[r.URL.Path]++
		n := o.hits[r.URL.Path]
		o.mu.Unlock()
		h(w, r, n)
	}))
	t.Cleanup(srv.Close)
	o.URL = srv.URL
	return o
}

func (o *netOrigin) Hits(path string) int {
	o.mu.Lock()
	defer o.mu.Unlock()
	return o.hits[path]
}

// Only the three HTTP-date forms are valid (RFC 9110 section 5.6.7); an
// invalid Expires means already expired (RFC 9111 section 5.3).
func TestStrictHTTPDates(t *testing.T) {
	future := time.Now().Add(time.Hour).UTC()
	o := newOrigin(t, func(ctx *fasthttp.RequestCtx, n int64) {
		switch string(ctx.Path()) {
		case "/doubled":
			ctx.Response.Header.Set("Expires", "Thu, 18  Aug  2050 02:01:18 GMT")
		case "/onedigit":
			ctx.Response.Header.Set("Expires", "Thu, 18 Aug 2050 2:01:18 GMT")
		case "/lowercase":
			ctx.Response.Header.Set("Expires", "thu, 18 aug 2050 02:01:18 gmt")
		case "/imf":
			ctx.Response.Header.Set("Expires", future.Format(http.TimeFormat))
		case "/rfc850":
			ctx.Response.Header.Set("Expires", future.Format("Monday, 02-Jan-06 15:04:05 GMT"))
		case "/asctime":
			ctx.Response.Header.Set("Expires", future.Format(time.ANSIC))
		}
		fmt.Fprintf(ctx, "n=%d", n)
	})
	gw := gateway(t, o.URL, "{}")
	for path, cached := range map[string]bool{"/doubled": false, "/onedigit": false, "/lowercase": false, "/imf": true, "/rfc850": true, "/asctime": true} {
		get(t, gw.URL+"/api"+path)
		r := get(t, gw.URL+"/api"+path)
		if got := r.Header.Get("Cache-Status") == "sluice; hit"; got != cached || o.Hits(path) != map[bool]int64{true: 1, false: 2}[cached] {
			t.Errorf("%s: Cache-Status %q, origin hits %d; want cached=%v", path, r.Header.Get("Cache-Status"), o.Hits(path), cached)
		}
	}
}

// Age: the first member of a list counts (RFC 9111 section 5.1), an
// invalid value is ignored.
func TestAgeFirstMember(t *testing.T) {
	o := newOrigin(t, func(ctx *fasthttp.RequestCtx, n int64) {
		ctx.Response.Header.Set("Cache-Control", "max-age=3600")
		switch string(ctx.Path()) {
		case "/list":
			ctx.Response.Header.Set("Age", "7200, 0")
		case "/invalid":
			ctx.Response.Header.Set("Age", "soon")
		}
		fmt.Fprintf(ctx, "n=%d", n)
	})
	gw := gateway(t, o.URL, "{}")
	get(t, gw.URL+"/api/list")
	if r := get(t, gw.URL+"/api/list"); string(r.Body) != "n=2" || o.Hits("/list") != 2 {
		t.Errorf("Age 7200, 0 with max-age=3600: %q, origin hits %d; want stale on arrival (not reused)", r.Body, o.Hits("/list"))
	}
	get(t, gw.URL+"/api/invalid")
	r := get(t, gw.URL+"/api/invalid")
	if age, err := strconv.Atoi(r.Header.Get("Age")); r.Header.Get("Cache-Status") != "sluice; hit" || err != nil || age > 5 {
		t.Errorf("invalid Age: %q, Age %q; want a hit, the invalid Age ignored", r.Header.Get("Cache-Status"), r.Header.Get("Age"))
	}
}

// A hit carries the Date stored with the answer, not the time of the hit;
// an answer stored without Date gets the time it was received.
func TestHitKeepsStoredDate(t *testing.T) {
	const originDate = "Tue, 15 Nov 1994 08:12:31 GMT"
	o := newNetOrigin(t, func(w http.ResponseWriter, r *http.Request, n int) {
		w.Header().Set("Cache-Control", "max-age=60")
		if r.URL.Path == "/dated" {
			w.Header().Set("Date", originDate)
		} else {
			w.Header()["Date"] = nil
		}
		fmt.Fprintf(w, "n=%d", n)
	})
	gw := gateway(t, o.URL, "{}")
	miss := get(t, gw.URL+"/api/dated")
	hit := get(t, gw.URL+"/api/dated")
	if miss.Header.Get("Date") != originDate || hit.Header.Get("Cache-Status") != "sluice; hit" || fmt.Sprint(hit.Header.Values("Date")) != "["+originDate+"]" {
		t.Errorf("miss Date %q; hit %q Date %q; want the origin's Date on both", miss.Header.Get("Date"), hit.Header.Get("Cache-Status"), hit.Header.Values("Date"))
	}
	first := get(t, gw.URL+"/api/undated")
	time.Sleep(1100 * time.Millisecond) // Date has a resolution of a second
	again := get(t, gw.URL+"/api/undated")
	if first.Header.Get("Date") == "" || again.Header.Get("Date") != first.Header.Get("Date") || again.Header.Get("Cache-Status") != "sluice; hit" {
		t.Errorf("undated: Date %q then %q (%s); want the time it was received on both", first.Header.Get("Date"), again.Header.Get("Date"), again.Header.Get("Cache-Status"))
	}
}

// targets: the first targeted field present with a valid value decides,
// and Cache-Control still reaches the caller (RFC 9213).
func TestTargetedCacheControl(t *testing.T) {
	o := newOrigin(t, func(ctx *fasthttp.RequestCtx, n int64) {
		ctx.Response.Header.Set("Cache-Control", "no-store")
		switch string(ctx.Path()) {
		case "/sluice":
			ctx.Response.Header.Set("CDN-Cache-Control", "no-store")
			ctx.Response.Header.Set("Sluice-Cache-Control", "max-age=60")
		case "/cdn":
			ctx.Response.Header.Set("CDN-Cache-Control", "max-age=60, stale-if-error;x=1")
		case "/invalid": // not a Dictionary: ignored, Cache-Control applies
			ctx.Response.Header.Set("Sluice-Cache-Control", "max-age=6 0")
		case "/expires": // a targeted field applies: Expires is ignored too
			ctx.Response.Header.Del("Cache-Control")
			ctx.Response.Header.Set("Expires", time.Now().Add(time.Hour).UTC().Format(http.TimeFormat))
			ctx.Response.Header.Set("CDN-Cache-Control", "no-cache=?0, public")
		}
		fmt.Fprintf(ctx, "n=%d", n)
	})
	gw := gateway(t, o.URL, "{targets: [Sluice-Cache-Control, CDN-Cache-Control]}")
	plain := gateway(t, o.URL, "{}")
	for _, tc := range []struct {
		gw     *testkit.Gateway
		path   string
		cached bool
	}{{gw, "/sluice", true}, {gw, "/cdn", true}, {gw, "/invalid", false}, {gw, "/expires", false}, {plain, "/cdn", false}} {
		before := o.Hits(tc.path)
		get(t, tc.gw.URL+"/api"+tc.path)
		r := get(t, tc.gw.URL+"/api"+tc.path)
		if got := o.Hits(tc.path)-before == 1; got != tc.cached || r.Header.Get("Cache-Control") != "no-store" && tc.path != "/expires" {
			t.Errorf("%s: origin hits %d, Cache-Control %q; want cached=%v and Cache-Control passed on", tc.path, o.Hits(tc.path)-before, r.Header.Get("Cache-Control"), tc.cached)
		}
	}
}

// If-Modified-Since on a hit (RFC 9110 sections 13.1.3, 13.2.2): after
// If-None-Match, compared with Last-Modified; a 304 carries only the
// fields of RFC 9110 section 15.4.5.
func TestIfModifiedSinceOnHit(t *testing.T) {
	lm := time.Now().Add(-time.Hour).UTC().Truncate(time.Second)
	o := newNetOrigin(t, func(w http.ResponseWriter, r *http.Request, n int) {
		w.Header().Set("Cache-Control", "max-age=60")
		w.Header().Set("Content-Type", "text/plain")
		w.Header().Set("ETag", `"v1"`)
		if r.URL.Path == "/lm" {
			w.Header().Set("Last-Modified", lm.Format(http.TimeFormat))
		}
		fmt.Fprintf(w, "n=%d", n)
	})
	gw := gateway(t, o.URL, "{}")
	get(t, gw.URL+"/api/lm")
	get(t, gw.URL+"/api/date")
	for _, tc := range []struct {
		path   string
		hdr    []string
		status int
	}{
		{"/lm", []string{"If-Modified-Since", lm.Format(http.TimeFormat)}, 304},
		{"/lm", []string{"If-Modified-Since", lm.Add(time.Minute).Format(time.ANSIC)}, 304},
		{"/lm", []string{"If-Modified-Since", lm.Add(-time.Second).Format(http.TimeFormat)}, 200},
		{"/lm", []string{"If-Modified-Since", "yesterday"}, 200},
		{"/lm", []string{"If-Modified-Since", lm.Format(http.TimeFormat), "If-None-Match", `"v0"`}, 200},
		{"/lm", []string{"If-Modified-Since", time.Now().Add(time.Hour).UTC().Format(http.TimeFormat)}, 200},
		// no Last-Modified: the stored Date (now, about) counts
		{"/date", []string{"If-Modified-Since", time.Now().Add(-time.Hour).UTC().Format(http.TimeFormat)}, 200},
		{"/date", []string{"If-Modified-Since", time.Now().UTC().Format(http.TimeFormat)}, 304},
	} {
		r := get(t, gw.URL+"/api"+tc.path, tc.hdr...)
		if r.Status != tc.status || r.Header.Get("Cache-Status") != "sluice; hit" {
			t.Errorf("%s %q: %d %q, want %d from the cache", tc.path, tc.hdr, r.Status, r.Header.Get("Cache-Status"), tc.status)
		}
		if r.Status == 304 && (r.Header.Get("ETag") != `"v1"` || r.Header.Get("Date") == "" || r.Header.Get("Content-Type") != "" || r.Header.Get("Last-Modified") != "" || len(r.Body) != 0) {
			t.Errorf("%s %q: 304 headers %v body %q", tc.path, tc.hdr, r.Header, r.Body)
		}
	}
	if o.Hits("/lm") != 1 || o.Hits("/date") != 1 {
		t.Errorf("origin hits %d, %d; want 1 each", o.Hits("/lm"), o.Hits("/date"))
	}
}

// Range on a hit: one byte range is 206 with Content-Range, an
// unsatisfiable one 416, several are ignored (200); If-Range needs a
// strong ETag match. A Range miss is passed through and its 206 not stored.
func TestRangeFromStoredAnswer(t *testing.T) {
	o := newOrigin(t, func(ctx *fasthttp.RequestCtx, n int64) {
		ctx.Response.Header.Set("Cache-Control", "max-age=60")
		ctx.Response.Header.Set("ETag", `"r1"`)
		if rng := ctx.Request.Header.Peek("Range"); string(ctx.Path()) == "/partial" && len(rng) > 0 {
			ctx.SetStatusCode(206)
			ctx.Response.Header.Set("Content-Range", "bytes 0-1/10")
			ctx.SetBodyString("01")
			return
		}
		ctx.SetBodyString("0123456789")
	})
	gw := gateway(t, o.URL, "{}")
	get(t, gw.URL+"/api/full")
	for _, tc := range []struct {
		hdr          []string
		status       int
		body, crange string
	}{
		{[]string{"Range", "bytes=2-4"}, 206, "234", "bytes 2-4/10"},
		{[]string{"Range", "bytes=7-"}, 206, "789", "bytes 7-9/10"},
		{[]string{"Range", "bytes=-3"}, 206, "789", "bytes 7-9/10"},
		{[]string{"Range", "bytes=5-100"}, 206, "56789", "bytes 5-9/10"},
		{[]string{"Range", "bytes=10-"}, 416, "", "bytes */10"},
		{[]string{"Range", "bytes=-0"}, 416, "", "bytes */10"},
		{[]string{"Range", "bytes=1-2,4-5"}, 200, "0123456789", ""},
		{[]string{"Range", "bytes=4-2"}, 200, "0123456789", ""},
		{[]string{"Range", "items=1-2"}, 200, "0123456789", ""},
		{[]string{"Range", "bytes=2-4", "If-Range", `"r1"`}, 206, "234", "bytes 2-4/10"},
		{[]string{"Range", "bytes=2-4", "If-Range", `"r0"`}, 200, "0123456789", ""},
		{[]string{"Range", "bytes=2-4", "If-Range", `W/"r1"`}, 200, "0123456789", ""},
	} {
		r := get(t, gw.URL+"/api/full", tc.hdr...)
		if r.Status != tc.status || string(r.Body) != tc.body || r.Header.Get("Content-Range") != tc.crange || r.Header.Get("Cache-Status") != "sluice; hit" {
			t.Errorf("%q: %d %q Content-Range %q (%s); want %d %q %q", tc.hdr, r.Status, r.Body, r.Header.Get("Content-Range"), r.Header.Get("Cache-Status"), tc.status, tc.body, tc.crange)
		}
	}
	if o.Hits("/full") != 1 {
		t.Errorf("origin hits %d, want 1", o.Hits("/full"))
	}
	for range 2 {
		if r := get(t, gw.URL+"/api/partial", "Range", "bytes=0-1"); r.Status != 206 || string(r.Body) != "01" {
			t.Errorf("range miss: %d %q, want the origin's 206", r.Status, r.Body)
		}
	}
	if o.Hits("/partial") != 2 {
		t.Errorf("origin hits %d for /partial, want 2: a 206 is not stored", o.Hits("/partial"))
	}
}

// request_directives: honor applies the caller's Cache-Control (RFC 9111
// section 5.2.1); the default ignores it.
func TestRequestDirectives(t *testing.T) {
	o := newOrigin(t, func(ctx *fasthttp.RequestCtx, n int64) {
		ctx.Response.Header.Set("Cache-Control", "max-age=1")
		if string(ctx.Path()) == "/long" {
			ctx.Response.Header.Set("Cache-Control", "max-age=600")
		}
		fmt.Fprintf(ctx, "n=%d", n)
	})
	ignoring := gateway(t, o.URL, "{}")
	get(t, ignoring.URL+"/api/ign")
	if r := get(t, ignoring.URL+"/api/ign", "Cache-Control", "no-cache"); r.Header.Get("Cache-Status") != "sluice; hit" {
		t.Errorf("ignore: no-cache gave %q, want a hit", r.Header.Get("Cache-Status"))
	}
	gw := gateway(t, o.URL, "{request_directives: honor}")
	if r := get(t, gw.URL+"/api/long", "Cache-Control", "only-if-cached"); true {
		testkit.WantProblem(t, r, 504, "not_cached")
	}
	if o.Hits("/long") != 0 {
		t.Errorf("only-if-cached reached the origin")
	}
	get(t, gw.URL+"/api/long")
	for _, tc := range []struct {
		cc, cs string
		hits   int64
	}{
		{"only-if-cached", "sluice; hit", 1},
		{"max-age=3600", "sluice; hit", 1},
		{"no-cache", "sluice; fwd=stale; stored", 2},
		{"max-age=0", "sluice; fwd=stale; stored", 3},
		{"min-fresh=3600", "sluice; fwd=stale; stored", 4},
		{"min-fresh=10", "sluice; hit", 4},
	} {
		r := get(t, gw.URL+"/api/long", "Cache-Control", tc.cc)
		if r.Header.Get("Cache-Status") != tc.cs || o.Hits("/long") != tc.hits {
			t.Errorf("%s: %q, origin hits %d; want %q, %d", tc.cc, r.Header.Get("Cache-Status"), o.Hits("/long"), tc.cs, tc.hits)
		}
	}
	get(t, gw.URL+"/api/short")
	time.Sleep(1100 * time.Millisecond)
	if r := get(t, gw.URL+"/api/short", "Cache-Control", "max-stale=60"); r.Header.Get("Cache-Status") != "sluice; hit; detail=max-stale" || string(r.Body) != "n=1" {
		t.Errorf("max-stale: %q %q, want the stale entry", r.Header.Get("Cache-Status"), r.Body)
	}
	if r := get(t, gw.URL+"/api/short", "Cache-Control", "only-if-cached"); true {
		testkit.WantProblem(t, r, 504, "not_cached")
	}
	if r := get(t, gw.URL+"/api/short", "Cache-Control", "no-store"); string(r.Body) != "n=2" || r.Header.Get("Cache-Status") != "sluice; fwd=stale" {
		t.Errorf("no-store: %q %q, want fetched and not stored", r.Body, r.Header.Get("Cache-Status"))
	}
}

// sluice_cache_bytes is the size of what is stored; the queues' capacity
// has its own name.
func TestCacheBytesMetric(t *testing.T) {
	body := make([]byte, 60<<10)
	o := newOrigin(t, func(ctx *fasthttp.RequestCtx, n int64) {
		ctx.Response.Header.Set("Cache-Control", "max-age=60")
		ctx.SetBody(body)
	})
	gw := gateway(t, o.URL, "{}")
	value := func(name string) float64 {
		v, _ := gw.Metrics(t).Value(name)
		return v
	}
	if v := value("sluice_cache_bytes"); v != 0 {
		t.Errorf("empty cache: sluice_cache_bytes %v", v)
	}
	get(t, gw.URL+"/api/big")
	get(t, gw.URL+"/api/big") // a hit changes nothing
	one := value("sluice_cache_bytes")
	if one < 60<<10 || one > 62<<10 {
		t.Errorf("one 60KiB entry: sluice_cache_bytes %v", one)
	}
	if c := value("sluice_cache_capacity_bytes"); c < one {
		t.Errorf("sluice_cache_capacity_bytes %v below the bytes stored %v", c, one)
	}
	get(t, gw.URL+"/api/big2")
	if v := value("sluice_cache_bytes"); v < 2*one-100 || v > 2*one+100 {
		t.Errorf("two entries: %v, want about %v", v, 2*one)
	}
	testkit.Do(t, "DELETE", gw.URL+"/api/big", "")  // invalidates /big
	testkit.Do(t, "DELETE", gw.URL+"/api/big2", "") // and /big2
	if v := value("sluice_cache_bytes"); v != 0 {
		t.Errorf("after both were invalidated: sluice_cache_bytes %v, want 0", v)
	}
}
