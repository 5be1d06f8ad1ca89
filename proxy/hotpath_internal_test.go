package proxy

import (
	"bufio"
	"bytes"
	"testing"

	"github.com/valyala/fasthttp"
)

// writtenTarget is the request target fasthttp writes for uri when the
// request's URI is parsed with path normalization off (what the upstream
// call did for every target before sentAsIs).
func writtenTarget(t *testing.T, uri []byte, parse bool) string {
	t.Helper()
	var req fasthttp.Request
	req.SetRequestURIBytes(uri)
	req.Header.SetHostBytes([]byte("provider.test"))
	if parse {
		req.URI().DisablePathNormalizing = true
	}
	var b bytes.Buffer
	w := bufio.NewWriter(&b)
	if err := req.Write(w); err != nil {
		t.Fatalf("%q: %v", uri, err)
	}
	_ = w.Flush()
	line, _, _ := bytes.Cut(b.Bytes(), []byte("\r\n"))
	return string(bytes.TrimSuffix(bytes.TrimPrefix(line, []byte("GET ")), []byte(" HTTP/1.1")))
}

// TestSentAsIsMatchesFasthttp: a target sentAsIs accepts is written exactly
// as fasthttp would write it after parsing; the others are told apart.
func TestSentAsIsMatchesFasthttp(t *testing.T) {
	cases := []struct {
		uri  string
		asIs bool
	}{
		{"/", true},
		{"/json", true},
		{"/v1/repos/a%2Fb/issues?state=open&q=a+b%20c", true},
		{"/a/../b/./c", true},
		{"/a%00b", true},
		{"/a??b", true},
		{"/x?", false},
		{"/x#frag", false},
		{"/x?y#frag", false},
		{"//host/x", false},
		{"//evil://x/y", false},
		{"/a\x01b", false},
		{"/a\x7fb", false},
		{"http://h/x", false},
		{"", false},
	}
	for _, c := range cases {
		if got := sentAsIs([]byte(c.uri)); got != c.asIs {
			t.Errorf("sentAsIs(%q) = %v, want %v", c.uri, got, c.asIs)
		}
		if c.asIs {
			if parsed := writtenTarget(t, []byte(c.uri), true); parsed != c.uri {
				t.Errorf("%q: fasthttp writes %q after parsing: not as is", c.uri, parsed)
			}
			if raw := writtenTarget(t, []byte(c.uri), false); raw != c.uri {
				t.Errorf("%q: unparsed, fasthttp writes %q", c.uri, raw)
			}
		} else if c.uri != "" && c.uri != "//host/x" && c.uri != "/a\x01b" && c.uri != "/a\x7fb" {
			// (parsing "//host/x" happens to give it back: sentAsIs leaves
			// every "//" target to the parser all the same)
			if parsed := writtenTarget(t, []byte(c.uri), true); parsed == c.uri {
				t.Errorf("%q: fasthttp writes it unchanged after parsing; sentAsIs could take it", c.uri)
			}
		}
	}
}
