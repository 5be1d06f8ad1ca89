package httpx_test

import (
	"bufio"
	"bytes"
	"testing"

	"github.com/valyala/fasthttp"

	"github.com/sluice-gw/sluice/proxy/httpx"
)

// quotaFields pairs every field of httpx.Quota with its header name, for a
// comparison with what fasthttp's Peek returns for that name.
func quotaFields(q *httpx.Quota) map[string][]byte {
	return map[string][]byte{
		"RateLimit": q.RateLimit, "RateLimit-Remaining": q.Remaining, "RateLimit-Limit": q.Limit,
		"RateLimit-Reset": q.Reset, "X-RateLimit-Remaining": q.XRemaining, "X-RateLimit-Limit": q.XLimit,
		"X-RateLimit-Reset": q.XReset, "Retry-After": q.RetryAfter,
	}
}

// checkQuotaLikePeek parses raw as a response header and fails when one
// pass of ScanQuota finds for a name other bytes than Peek does.
func checkQuotaLikePeek(t *testing.T, raw []byte) {
	t.Helper()
	var h fasthttp.ResponseHeader
	if err := h.Read(bufio.NewReader(bytes.NewReader(raw))); err != nil {
		return // not a header fasthttp accepts: nothing reaches the scanner
	}
	var q httpx.Quota
	httpx.ScanQuota(&h, &q)
	for name, got := range quotaFields(&q) {
		if want := h.Peek(name); !bytes.Equal(got, want) {
			t.Fatalf("%s: ScanQuota found %q, Peek %q (header %q)", name, got, want, raw)
		}
	}
}

func TestScanQuotaFindsWhatPeekFinds(t *testing.T) {
	for _, raw := range quotaSeeds {
		checkQuotaLikePeek(t, []byte(raw))
	}
	// The values are really found (a comparison of two nils proves nothing).
	var h fasthttp.ResponseHeader
	if err := h.Read(bufio.NewReader(bytes.NewReader([]byte(quotaSeeds[0])))); err != nil {
		t.Fatal(err)
	}
	var q httpx.Quota
	httpx.ScanQuota(&h, &q)
	if string(q.XRemaining) != "41" || string(q.XLimit) != "5000" || string(q.XReset) != "1767225600" ||
		string(q.RetryAfter) != "7" || string(q.RateLimit) != `"default";r=3;t=9` || string(q.Remaining) != "3" ||
		string(q.Limit) != "10" || string(q.Reset) != "9" {
		t.Fatalf("scan: %+v", q)
	}
}

func TestScanQuotaAllocatesNothing(t *testing.T) {
	var h fasthttp.ResponseHeader
	if err := h.Read(bufio.NewReader(bytes.NewReader([]byte(quotaSeeds[0])))); err != nil {
		t.Fatal(err)
	}
	var q httpx.Quota
	if n := testing.AllocsPerRun(100, func() { httpx.ScanQuota(&h, &q) }); n != 0 {
		t.Fatalf("ScanQuota allocates %v times", n)
	}
}

var quotaSeeds = []string{
	"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nx-ratelimit-remaining: 41\r\nX-RateLimit-Limit: 5000\r\n" +
		"X-RATELIMIT-RESET: 1767225600\r\nRetry-After: 7\r\nRateLimit: \"default\";r=3;t=9\r\nRateLimit-Remaining: 3\r\n" +
		"RateLimit-Limit: 10\r\nRateLimit-Reset: 9\r\nContent-Length: 0\r\n\r\n",
	"HTTP/1.1 429 Too Many Requests\r\nX-RateLimit-Remaining: 0\r\nX-RateLimit-Remaining: 9\r\nX-RateLimit-Reset:\r\n\r\n",
	"HTTP/1.1 200 OK\r\nX-RateLimit-Remainin: 1\r\nRateLimit-Limits: 2\r\nRetry-Afte: 3\r\nX-RateLimit-Resets: 4\r\n\r\n",
	"HTTP/1.1 204 No Content\r\nServer: x\r\nSet-Cookie: a=b\r\nRatelimit: 1\r\n\r\n",
}

// FuzzScanQuota: for any header fasthttp parses, one pass finds for each
// quota name exactly the bytes Peek finds.
func FuzzScanQuota(f *testing.F) {
	for _, s := range quotaSeeds {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, raw []byte) { checkQuotaLikePeek(t, raw) })
}

// CopyTo leaves q pointing at its own copies: changing or reusing the
// header afterwards changes nothing in q.
func TestQuotaCopyToOutlivesTheHeader(t *testing.T) {
	var h fasthttp.ResponseHeader
	h.Set("X-RateLimit-Remaining", "41")
	h.Set("X-RateLimit-Limit", "100")
	h.Set("Retry-After", "7")
	var q httpx.Quota
	httpx.ScanQuota(&h, &q)
	buf := q.CopyTo(make([]byte, 0, 1)) // too small: CopyTo must grow it once, not move copies
	h.Set("X-RateLimit-Remaining", "99")
	h.Del("X-RateLimit-Limit")
	h.Set("X-Other-Header-Reusing-Buffers", "xxxxxxxx")
	if string(q.XRemaining) != "41" || string(q.XLimit) != "100" || string(q.RetryAfter) != "7" || q.RateLimit != nil {
		t.Errorf("after the header changed: %q %q %q %q", q.XRemaining, q.XLimit, q.RetryAfter, q.RateLimit)
	}
	if len(buf) != len("41100"+"7") {
		t.Errorf("copies take %d bytes, want %d", len(buf), len("411007"))
	}
	var none httpx.Quota
	if got := none.CopyTo(buf[:0]); len(got) != 0 {
		t.Errorf("no quota headers: %d bytes copied", len(got))
	}
}
