package contract

import (
	"bytes"
	"net/http"
	"os"
	"path/filepath"
	"testing"
)

// typicalEmail is a typical JSON call to Resend's POST /emails (433 bytes).
const typicalEmail = `{"from":"Acme Billing <billing@acme.example>","to":["kim.minji@example.com","lee.jun@example.com"],` +
	`"subject":"Your invoice INV-2026-0412 is ready","html":"<p>Hello,</p><p>Your invoice for November is attached. ` +
	`The amount due is <strong>KRW 129,000</strong>.</p>","text":"Hello, your invoice for November is attached. ` +
	`The amount due is KRW 129,000.","tags":[{"name":"category","value":"invoice"},{"name":"month","value":"2026-11"}]}`

func benchShared(b *testing.B) *shared {
	doc, err := loadDocument("testdata/resend-emails.yaml")
	if err != nil {
		b.Fatal(err)
	}
	return &shared{doc: doc, opts: filterOptions()}
}

// BenchmarkCheckRequest is the validator alone on a typical JSON call:
// matching the operation, the header parameter, the body against
// SendEmailRequest.
func BenchmarkCheckRequest(b *testing.B) {
	s := benchShared(b)
	body := []byte(typicalEmail)
	uri := []byte("/emails")
	b.ReportAllocs()
	for b.Loop() {
		h := http.Header{"Content-Type": {"application/json"}, "Idempotency-Key": {"inv-2026-0412"}}
		if found, _ := s.checkRequest("POST", uri, h, body, false); len(found) != 0 {
			b.Fatalf("valid call refused: %v", found)
		}
	}
}

// BenchmarkCheckResponse is the validator alone on the provider's answer.
func BenchmarkCheckResponse(b *testing.B) {
	s := benchShared(b)
	body := []byte(`{"id":"49a3999c-0ce1-4ea6-ab68-afcd6dc2e794"}`)
	uri := []byte("/emails")
	b.ReportAllocs()
	for b.Loop() {
		h := http.Header{"Content-Type": {"application/json"}}
		if found, _, _ := s.checkResponse("POST", uri, 200, h, body, false); len(found) != 0 {
			b.Fatalf("valid answer counted as drift: %v", found)
		}
	}
}

// BenchmarkCheckRequest30 is BenchmarkCheckRequest with the same document
// declared as OpenAPI 3.0.3 (the subset uses no 3.1 feature): kin-openapi
// then validates with its own 3.0 validator instead of compiling a JSON
// Schema 2020-12 validator on every call, as it does for 3.1 documents
// (v0.153.0). Stripe's and GitHub's documents are 3.0.
func BenchmarkCheckRequest30(b *testing.B) {
	src, err := os.ReadFile("testdata/resend-emails.yaml")
	if err != nil {
		b.Fatal(err)
	}
	path := filepath.Join(b.TempDir(), "resend-3.0.yaml")
	if err := os.WriteFile(path, bytes.Replace(src, []byte("openapi: 3.1.2"), []byte("openapi: 3.0.3"), 1), 0o600); err != nil {
		b.Fatal(err)
	}
	doc, err := loadDocument(path)
	if err != nil {
		b.Fatal(err)
	}
	s := &shared{doc: doc, opts: filterOptions()}
	body := []byte(typicalEmail)
	uri := []byte("/emails")
	b.ReportAllocs()
	for b.Loop() {
		h := http.Header{"Content-Type": {"application/json"}, "Idempotency-Key": {"inv-2026-0412"}}
		if found, _ := s.checkRequest("POST", uri, h, body, false); len(found) != 0 {
			b.Fatalf("valid call refused: %v", found)
		}
	}
	// The 3.0 validator must still refuse what the 3.1 one refuses.
	h := http.Header{"Content-Type": {"application/json"}}
	if found, _ := s.checkRequest("POST", uri, h, []byte(`{"to":1}`), false); len(found) < 3 {
		b.Fatalf("3.0 validator: %v, want from, to and subject reported", found)
	}
}
