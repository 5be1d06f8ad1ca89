package proxy_test

import (
	"encoding/json"
	"slices"
	"strings"
	"testing"
)

const edgeConfig = `
log: {access_log: true}
upstreams: {up: {url: "%[1]s"}}
routes: {r: {path: "/{p:*}", upstream: up}}
`

// loggedRequestIDs returns the request_id of every access line for path.
func loggedRequestIDs(t *testing.T, logs, path string) []string {
	t.Helper()
	var ids []string
	for _, line := range strings.Split(logs, "\n") {
		var m map[string]any
		if json.Unmarshal([]byte(line), &m) == nil && m["msg"] == "access" && m["path"] == path {
			ids = append(ids, m["request_id"].(string))
		}
	}
	return ids
}

// A caller's Connection header cannot name away the headers the gateway sets
// itself: they are set after hop-by-hop stripping.
func TestConnectionCannotRemoveGatewayHeaders(t *testing.T) {
	t.Parallel()
	gw, up := gatewayFor(t, nil, edgeConfig)
	raw := "GET /named HTTP/1.1\r\nHost: gw.example\r\n" +
		"Connection: keep-alive, X-Forwarded-For, X-Request-Id, X-Forwarded-Proto, X-Forwarded-Host, Host\r\n" +
		"X-Forwarded-For: 10.9.8.7\r\nX-Request-Id: caller-id-1\r\n\r\n"
	out := rawRequest(t, gw.URL, raw)
	if !strings.HasPrefix(out, "200\n") {
		t.Fatalf("answer:\n%s", out)
	}
	got := up.Last(t)
	for name, want := range map[string]string{
		"X-Forwarded-For":   "10.9.8.7, 127.0.0.1",
		"X-Forwarded-Proto": "http",
		"X-Forwarded-Host":  "gw.example",
		"X-Request-Id":      "caller-id-1",
	} {
		if v := got.Header.Values(name); !slices.Equal(v, []string{want}) {
			t.Errorf("upstream got %s %q, want exactly %q", name, v, want)
		}
	}
	if got.Host != strings.TrimPrefix(up.URL, "http://") {
		t.Errorf("upstream Host %q", got.Host)
	}
}

// Exactly one X-Request-Id is forwarded, the one logged and returned; the
// gateway's other own headers are not duplicated by a caller either.
func TestDuplicateRequestIDForwardedOnce(t *testing.T) {
	t.Parallel()
	gw, up := gatewayFor(t, nil, edgeConfig)
	for _, c := range []struct {
		path, ids string
		want      string // "" = a generated id
	}{
		{"/dup", "X-Request-Id: first-id\r\nx-request-id: second-id\r\n", "first-id"},
		{"/dup-invalid-first", "X-Request-Id: " + strings.Repeat("x", 300) + "\r\nX-Request-Id: second-id\r\n", ""},
	} {
		raw := "GET " + c.path + " HTTP/1.1\r\nHost: gw\r\n" + c.ids +
			"X-Forwarded-Proto: https\r\nX-Forwarded-Proto: https\r\nX-Forwarded-Host: evil\r\nX-Forwarded-Host: evil2\r\n" +
			"X-Forwarded-For: 1.1.1.1\r\nX-Forwarded-For: 2.2.2.2\r\n\r\n"
		out := rawRequest(t, gw.URL, raw)
		if !strings.HasPrefix(out, "200\n") {
			t.Fatalf("%s: answer:\n%s", c.path, out)
		}
		var rec []string
		for _, r := range up.Requests() {
			if r.URI == c.path {
				rec = r.Header.Values("X-Request-Id")
				for name, want := range map[string]string{"X-Forwarded-Proto": "http", "X-Forwarded-Host": "gw", "X-Forwarded-For": "1.1.1.1, 127.0.0.1"} {
					if v := r.Header.Values(name); !slices.Equal(v, []string{want}) {
						t.Errorf("%s: upstream got %s %q, want exactly %q", c.path, name, v, want)
					}
				}
			}
		}
		var answered string
		for _, line := range strings.Split(out, "\n") {
			if v, ok := strings.CutPrefix(line, "X-Request-Id: "); ok {
				answered = v
			}
		}
		logged := loggedRequestIDs(t, gw.Logs.String(), c.path)
		if len(rec) != 1 || len(logged) != 1 || rec[0] != logged[0] || rec[0] != answered {
			t.Fatalf("%s: forwarded %q, logged %q, answered %q: want one id, the same", c.path, rec, logged, answered)
		}
		if c.want != "" && rec[0] != c.want {
			t.Errorf("%s: forwarded %q, want %q", c.path, rec[0], c.want)
		} else if c.want == "" && !hexID.MatchString(rec[0]) {
			t.Errorf("%s: forwarded %q, want a generated id", c.path, rec[0])
		}
	}
}

// Method-override headers are never forwarded: the provider must run the
// method the gateway routed, cached, retried and rate-limited.
func TestMethodOverrideHeadersStripped(t *testing.T) {
	t.Parallel()
	gw, up := gatewayFor(t, nil, edgeConfig)
	raw := "GET /override HTTP/1.1\r\nHost: gw\r\nX-HTTP-Method-Override: DELETE\r\nx-http-method: DELETE\r\n" +
		"X-METHOD-OVERRIDE: PUT\r\nX-Keep: yes\r\n\r\n"
	if out := rawRequest(t, gw.URL, raw); !strings.HasPrefix(out, "200\n") {
		t.Fatalf("answer:\n%s", out)
	}
	got := up.Last(t)
	for _, h := range []string{"X-Http-Method-Override", "X-Http-Method", "X-Method-Override"} {
		if v := got.Header.Values(h); len(v) > 0 {
			t.Errorf("upstream got %s %q", h, v)
		}
	}
	if got.Method != "GET" || got.Header.Get("X-Keep") != "yes" {
		t.Errorf("upstream got %s, X-Keep %q", got.Method, got.Header.Get("X-Keep"))
	}
}
