package proxy

import (
	"bytes"
	"strings"
	"testing"
)

// refScan is a slow, obviously written scanRequestHead: strings, one rule at
// a time.
func refScan(raw []byte) (hops hopSet, bad bool, requestID []byte, hasID bool, dup ownSet) {
	counts := map[string]int{}
	for _, line := range strings.Split(string(raw), "\n") {
		name, value, ok := strings.Cut(line, ":")
		if !ok {
			continue
		}
		for i := 0; i < len(name); i++ {
			c := name[i]
			isTchar := c >= '0' && c <= '9' || c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || strings.IndexByte("!#$%&'*+-.^_`|~", c) >= 0
			if !isTchar {
				return hops, true, requestID, hasID, dup
			}
		}
		switch lower := strings.ToLower(name); lower {
		case "x-request-id", "x-forwarded-for", "x-forwarded-proto", "x-forwarded-host":
			counts[lower]++
			if counts[lower] > 1 {
				dup |= map[string]ownSet{"x-request-id": ownXRequestID, "x-forwarded-for": ownXForwardedFor,
					"x-forwarded-proto": ownXForwardedProto, "x-forwarded-host": ownXForwardedHost}[lower]
			}
			if lower == "x-request-id" && !hasID {
				requestID, hasID = []byte(strings.TrimSpace(value)), true
			}
			continue
		}
		for i, n := range hopNames {
			if strings.EqualFold(string(n), name) {
				hops |= 1 << i
			}
		}
	}
	return hops &^ hopProxyAuthenticate, false, requestID, hasID, dup
}

// FuzzScanRequestHead: scanRequestHead never panics, reports badName exactly
// when some header name has a byte outside RFC 9110's tchar, and otherwise
// finds the same hop-by-hop/method-override set, first X-Request-Id and
// duplicates of each of the gateway's own headers as refScan. A head that passes
// never leaves a method override or hop-by-hop header unnoticed.
func FuzzScanRequestHead(f *testing.F) {
	for _, s := range []string{
		"Host: gw\r\nAccept: */*\r\n\r\n",
		"Host: gw\r\nBad Name: x\r\n\r\n",
		"Host: gw\r\nConnection: keep-alive, X-Forwarded-For, X-Request-Id\r\nX-Request-Id: a\r\n\r\n",
		"X-Request-Id: first\r\nx-request-id: second\r\nX-Forwarded-Proto: https\r\nX-Forwarded-Proto: http\r\n",
		"X-HTTP-Method-Override: DELETE\r\nx-http-method: PUT\r\nX-Method-Override: PATCH\r\n",
		"Keep-Alive: 30\r\nProxy-Connection: x\r\nProxy-Authorization: Basic x\r\nProxy-Authenticate: y\r\nTE: trailers\r\nTrailer: a\r\nTransfer-Encoding: chunked\r\nUpgrade: h2c\r\n",
		"X-Forwarded-For: 1.1.1.1\r\nX-Forwarded-Host: h\r\nX-Forwarded-Host: h2\r\n",
		"Na\x00me: v\r\n", "Name\xff: v\n", ": empty name\r\n", "no colon line\r\n", "",
		"X-Request-Id:   spaced  \r\n", "X-Request-Id:\r\nX-Request-Id: second\r\n", "X-Forwarded-For: \r\nX-Forwarded-For: 2.2.2.2\r\n", "GET http://host/ HTTP/1.1\r\nHost: h\r\n",
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, raw []byte) {
		var h requestHead
		scanRequestHead(raw, &h)
		hops, bad, id, hasID, dup := refScan(raw)
		if h.badName != bad {
			t.Fatalf("badName = %v, reference %v for %q", h.badName, bad, raw)
		}
		if bad {
			return
		}
		if h.hops != hops {
			t.Fatalf("hops = %b, reference %b for %q", h.hops, hops, raw)
		}
		if (!hasID && h.requestID != nil) || !bytes.Equal(h.requestID, id) {
			t.Fatalf("requestID = %q (%v), reference %q (%v) for %q", h.requestID, h.requestID != nil, id, hasID, raw)
		}
		if h.dup != dup {
			t.Fatalf("dup = %b, reference %b for %q", h.dup, dup, raw)
		}
	})
}
