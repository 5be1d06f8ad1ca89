package bench

import (
	"fmt"
	"path/filepath"
	"testing"

	"github.com/sluice-gw/sluice/internal/testkit"
	"github.com/valyala/fasthttp"
)

// emailBody is a typical JSON call: Resend's "send an email" with two
// recipients, a subject, HTML and text parts and two tags (433 bytes).
const emailBody = `{"from":"Acme Billing <billing@acme.example>","to":["kim.minji@example.com","lee.jun@example.com"],` +
	`"subject":"Your invoice INV-2026-0412 is ready","html":"<p>Hello,</p><p>Your invoice for November is attached. ` +
	`The amount due is <strong>KRW 129,000</strong>.</p>","text":"Hello, your invoice for November is attached. ` +
	`The amount due is KRW 129,000.","tags":[{"name":"category","value":"invoice"},{"name":"month","value":"2026-11"}]}`

// emailOrigin answers POST /emails as Resend does.
func emailOrigin(ctx *fasthttp.RequestCtx) {
	ctx.Response.Header.SetContentType("application/json")
	ctx.Response.SetBodyString(`{"id":"49a3999c-0ce1-4ea6-ab68-afcd6dc2e794"}`)
}

func contractYAML(b *testing.B, block string) string {
	spec, err := filepath.Abs("../plugins/contract/testdata/resend-emails.yaml")
	if err != nil {
		b.Fatal(err)
	}
	return fmt.Sprintf(`
log: {access_log: false}
upstreams:
  resend: {url: "http://upstream.test"}
routes:
  plain: {path: "/plain/{path:*}", upstream: resend, strip_prefix: "/plain"}
  checked:
    path: "/checked/{path:*}"
    upstream: resend
    strip_prefix: "/checked"
    plugins:
      contract: {spec: "file:%s"%s}
`, spec, block)
}

func runPost(b *testing.B, block, uri string) {
	im := testkit.NewInMemory(b, contractYAML(b, block), emailOrigin)
	req := fasthttp.AcquireRequest()
	defer fasthttp.ReleaseRequest(req)
	req.Header.SetMethod("POST")
	req.Header.SetContentType("application/json")
	req.SetBodyString(emailBody)
	runReq(b, im.Client, req, uri, 200)
}

// BenchmarkContractBaseline posts the email through a route without a
// contract: the floor the contract's cost is measured from.
func BenchmarkContractBaseline(b *testing.B) { runPost(b, "", "http://gateway/plain/emails") }

// BenchmarkContractRequest checks each call (requests: enforce), answers unchecked.
func BenchmarkContractRequest(b *testing.B) {
	runPost(b, ", responses: off", "http://gateway/checked/emails")
}

// BenchmarkContractBoth checks each call and each answer (sample: 1).
func BenchmarkContractBoth(b *testing.B) { runPost(b, "", "http://gateway/checked/emails") }
