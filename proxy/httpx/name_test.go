package httpx_test

import (
	"bufio"
	"strings"
	"testing"

	"github.com/sluice-gw/sluice/proxy/httpx"
	"github.com/valyala/fasthttp"
)

func parsedRequest(t testing.TB, head string) *fasthttp.RequestHeader {
	t.Helper()
	var h fasthttp.RequestHeader
	if err := h.Read(bufio.NewReader(strings.NewReader(head))); err != nil {
		t.Fatal(err)
	}
	return &h
}

func TestNameNormalizes(t *testing.T) {
	for in, want := range map[string]string{
		"x-api-key": "X-Api-Key", "CONTENT-TYPE": "Content-Type", "X-Api-Key": "X-Api-Key",
		"ratelimit-policy": "Ratelimit-Policy", "bad name": "bad name",
	} {
		if got := httpx.NewName(in).String(); got != want {
			t.Errorf("NewName(%q) = %q, want %q", in, got, want)
		}
	}
}

// The operations by Name find what the caller sent in any case, as the
// Bytes operations do, and leave the header normalizing names afterwards.
func TestNameOperations(t *testing.T) {
	h := parsedRequest(t, "GET / HTTP/1.1\r\nHost: a\r\nx-api-KEY: one\r\nX-API-Key: two\r\ncontent-type: text/plain\r\nAccept: */*\r\n\r\n")
	key, ct := httpx.NewName("x-api-key"), httpx.NewName("Content-type")
	if v := key.Peek(h); string(v) != "one" {
		t.Fatalf("Peek = %q, want the first value", v)
	}
	if v := ct.Peek(h); string(v) != "text/plain" {
		t.Fatalf("Peek(Content-Type) = %q", v)
	}
	if all := key.PeekAll(h); len(all) != 2 || string(all[0]) != "one" || string(all[1]) != "two" {
		t.Fatalf("PeekAll = %q, want both values", all)
	}
	key.Del(h)
	if v := h.Peek("X-Api-Key"); v != nil {
		t.Fatalf("after Del: %q left", v)
	}
	key.Add(h, []byte("three"))
	key.Add(h, []byte("four"))
	if got := h.PeekAll("x-api-key"); len(got) != 2 || string(got[0]) != "three" || string(got[1]) != "four" {
		t.Fatalf("after two Adds: %q", got)
	}
	key.Set(h, []byte("five"))
	if got := h.PeekAll("x-api-key"); len(got) != 2 || string(got[0]) != "five" {
		t.Fatalf("after Set: %q", got)
	}
	ct.Del(h)
	if v := h.ContentType(); len(v) != 0 {
		t.Fatalf("Content-Type left after Del: %q", v)
	}
	// Normalizing is back on: a lower-case name still finds the header.
	h.Set("x-later", "v")
	if v := h.Peek("X-Later"); string(v) != "v" {
		t.Fatalf("normalizing not restored: %q", v)
	}
	if !strings.Contains(string(h.Header()), "X-Later: v\r\n") {
		t.Fatalf("name not normalized after Name operations:\n%s", h.Header())
	}
	// A header that had normalizing off keeps it off.
	h.DisableNormalizing()
	key.Del(h)
	h.Set("x-raw", "v")
	if !strings.Contains(string(h.Header()), "x-raw: v\r\n") {
		t.Fatalf("Del turned normalizing back on:\n%s", h.Header())
	}
}

func TestNameOnResponse(t *testing.T) {
	var h fasthttp.ResponseHeader
	if err := h.Read(bufio.NewReader(strings.NewReader("HTTP/1.1 200 OK\r\nserver: x\r\nratelimit: a\r\nContent-Length: 0\r\n\r\n"))); err != nil {
		t.Fatal(err)
	}
	rl, srv := httpx.NewName("RateLimit"), httpx.NewName("server")
	if v := rl.Peek(&h); string(v) != "a" {
		t.Fatalf("Peek = %q", v)
	}
	srv.Del(&h)
	rl.Add(&h, []byte("b"))
	out := string(h.Header())
	if strings.Contains(out, "Server") || !strings.Contains(out, "Ratelimit: a\r\nRatelimit: b\r\n") {
		t.Fatalf("unexpected head:\n%s", out)
	}
}

func TestNameAllocs(t *testing.T) {
	h := parsedRequest(t, "GET / HTTP/1.1\r\nHost: a\r\nX-Api-Key: one\r\n\r\n")
	key, v := httpx.NewName("X-Client"), []byte("sluice")
	key.Set(h, v) // room for the name and value
	if n := testing.AllocsPerRun(100, func() {
		key.Del(h)
		key.Set(h, v)
		key.Add(h, v)
		_ = key.Peek(h)
		_ = key.PeekAll(h)
	}); n != 0 {
		t.Fatalf("%v allocations per run, want 0", n)
	}
}

func BenchmarkNameDelSet(b *testing.B) {
	h := parsedRequest(b, "GET / HTTP/1.1\r\nHost: a\r\nX-Api-Key: one\r\nUser-Agent: wrk\r\n\r\n")
	key, v := httpx.NewName("X-Api-Version"), []byte("2024-06-01")
	b.ReportAllocs()
	for b.Loop() {
		key.Del(h)
		key.Set(h, v)
	}
}

// BenchmarkBytesDelSet is the same edit through fasthttp's normalizing calls.
func BenchmarkBytesDelSet(b *testing.B) {
	h := parsedRequest(b, "GET / HTTP/1.1\r\nHost: a\r\nX-Api-Key: one\r\nUser-Agent: wrk\r\n\r\n")
	key, v := []byte("X-Api-Version"), []byte("2024-06-01")
	b.ReportAllocs()
	for b.Loop() {
		h.DelBytes(key)
		h.SetBytesKV(key, v)
	}
}
