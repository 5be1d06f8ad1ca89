package proxy_test

import (
	"fmt"
	"net/http"
	"net/http/httptest"
	"sync/atomic"
	"testing"
	"time"

	"github.com/sluice-gw/sluice/internal/testkit"
)

// The gateway keeps the Date its origin sent (RFC 9110 section 6.6.1: a
// recipient adds Date only to a message without one), adds its own when
// the origin sent none, and puts the current time on its own answers.
func TestDateIsTheOriginsOrTheGateways(t *testing.T) {
	t.Parallel()
	const originDate = "Tue, 15 Nov 1994 08:12:31 GMT"
	var flaky atomic.Int32
	// net/http lets a handler set Date, or send none (fasthttp's server
	// always writes its own).
	origin := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/dated":
			w.Header().Set("Date", originDate)
		case "/missing":
			w.Header()["Date"] = nil
		case "/flaky": // fails once, then answers with its Date
			if flaky.Add(1) == 1 {
				w.WriteHeader(http.StatusServiceUnavailable)
				return
			}
			w.Header().Set("Date", originDate)
		}
		_, _ = w.Write([]byte("ok"))
	}))
	t.Cleanup(origin.Close)
	gw := testkit.StartGateway(t, fmt.Sprintf(`
log: {access_log: false}
upstreams: {up: {url: "%s"}}
routes:
  r: {path: "/{p:*}", upstream: up}
  retried: {path: "/flaky", upstream: up, plugins: {retry: {on: [503], backoff: 1ms}}}
`, origin.URL))
	if r := testkit.Do(t, "GET", gw.URL+"/dated", ""); r.Status != 200 || fmt.Sprint(r.Header.Values("Date")) != "["+originDate+"]" {
		t.Errorf("origin with Date: %d, Date %q; want only the origin's", r.Status, r.Header.Values("Date"))
	}
	// A retried call's answer is cleared between attempts (ClearResponse):
	// the answer that comes keeps its own Date too.
	if r := testkit.Do(t, "GET", gw.URL+"/flaky", ""); r.Status != 200 || fmt.Sprint(r.Header.Values("Date")) != "["+originDate+"]" {
		t.Errorf("retried call: %d, Date %q; want only the origin's", r.Status, r.Header.Values("Date"))
	}
	check := func(what string, r *testkit.Response) {
		t.Helper()
		d, err := http.ParseTime(r.Header.Get("Date"))
		if err != nil || len(r.Header.Values("Date")) != 1 || time.Since(d).Abs() > 5*time.Second {
			t.Errorf("%s (status %d): Date %q, want one: the gateway's current time", what, r.Status, r.Header.Values("Date"))
		}
	}
	check("origin without Date", testkit.Do(t, "GET", gw.URL+"/missing", ""))
	check("the gateway's own answer", testkit.Do(t, "POST", gw.URL+"/dated", "", "X-HTTP-Method-Override", "GET"))
}
