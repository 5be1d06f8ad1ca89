package contract

import (
	"net/http"
	"testing"

	"github.com/sluice-gw/sluice/proxy"
)

// FuzzCheck feeds caller bytes (method, request URI, content type, body)
// and provider bytes (status, content type, body) through the compiled
// document: whatever they are, checking must not panic, and every
// violation it reports has a known kind and a message.
func FuzzCheck(f *testing.F) {
	doc, err := loadDocument("testdata/resend-emails.yaml")
	if err != nil {
		f.Fatal(err)
	}
	s := &shared{doc: doc, opts: filterOptions()}
	f.Add("POST", "/emails", "application/json", []byte(`{"from":"a","to":["b"],"subject":"s"}`), 200, []byte(`{"id":"x"}`))
	f.Add("POST", "/emails", "application/json", []byte(`{"to":[1,{"a":[]}],"tags":[{"name":null}]}`), 200, []byte(`{"id":7}`))
	f.Add("GET", "/emails/%2e%2e/x?limit=-1&after=%zz", "text/plain", []byte{0xff, 0xfe}, 500, []byte(`[`))
	f.Add("GET", "/emails?limit=10&limit=11", "application/json; charset=utf-8", []byte(`null`), 200, []byte(`{"object":"list","data":[{}]}`))
	f.Add("PATCH", "/emails/a/cancel", "multipart/form-data; boundary=x", []byte("--x\r\n\r\n--x--"), 404, []byte{})
	f.Fuzz(func(t *testing.T, method, uri, ctype string, body []byte, status int, answer []byte) {
		h := http.Header{}
		if ctype != "" {
			h.Set("Content-Type", ctype)
		}
		found, op := s.checkRequest(method, []byte(uri), h, body, false)
		checkFindings(t, found)
		if op == "" {
			t.Fatal("no operation name")
		}
		if status < 100 || status > 599 {
			status = 200
		}
		found, _, _ = s.checkResponse(method, []byte(uri), status, h, answer, false)
		checkFindings(t, found)
	})
}

func checkFindings(t *testing.T, found []proxy.Finding) {
	t.Helper()
	if len(found) > maxFindings {
		t.Fatalf("%d findings, more than %d", len(found), maxFindings)
	}
	for _, f := range found {
		switch f.Kind {
		case KindUnknownOperation, KindParameter, KindContentType, KindBody, KindStatus, KindHeader, KindOther:
		default:
			t.Fatalf("unknown kind %q", f.Kind)
		}
		if f.Message == "" {
			t.Fatalf("violation without a message: %+v", f)
		}
	}
}
