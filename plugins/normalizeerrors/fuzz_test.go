package normalizeerrors

import (
	"encoding/json"
	"testing"

	"github.com/sluice-gw/sluice/proxy"
	"github.com/valyala/fasthttp"
)

// The built-in dialects render any detail (a provider's or a caller's
// bytes may end up in it) to valid JSON and header values.
func FuzzDialectRendersAnyDetail(f *testing.F) {
	d := &Dialect{
		Body:    `{"error":{"type":{{json .Type}},"code":{{json .ProviderCode}},"message":{{json .Detail}}}}`,
		Headers: map[string]string{"Stripe-Should-Retry": "{{.Retryable}}", "Request-Id": "{{.RequestID}}"},
		Types:   map[string]string{"default": "api_error"},
	}
	c, err := d.compile()
	if err != nil {
		f.Fatal(err)
	}
	f.Add("no route", "req-1", uint8(1))
	f.Add("\x00\"\\\n\u2028\xff", "id\r\nX: y", uint8(9))
	f.Fuzz(func(t *testing.T, detail, requestID string, code uint8) {
		p := proxy.Problem{Code: proxy.Code(code % uint8(len(proxy.Codes()))), Status: 400, Detail: detail}
		v := c.view(p, []byte(requestID))
		body, hdrs, err := c.render(&v)
		if err != nil {
			t.Fatal(err)
		}
		if !json.Valid(body) {
			t.Fatalf("invalid JSON for %q: %s", detail, body)
		}
		for _, h := range hdrs {
			if h[0] == "Request-Id" && validHeaderValue(h[1]) != validHeaderValue(requestID) {
				t.Fatalf("header check disagrees for %q", requestID)
			}
		}
	})
}

// wantsProblem never panics and is true only when the media type is named.
func FuzzWantsProblem(f *testing.F) {
	for _, s := range []string{"application/problem+json", "*/*", "application/problem+json;q=0", "application/json, application/problem+json; q=0.5", ""} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, accept string) {
		var req fasthttp.Request
		req.Header.Set("Accept", accept)
		if wantsProblem(&req) && len(req.Header.Peek("Accept")) < len(proxy.ProblemContentType) {
			t.Fatalf("wantsProblem(%q) without the media type", accept)
		}
	})
}
