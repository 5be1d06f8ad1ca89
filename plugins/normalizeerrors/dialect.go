package normalizeerrors

import (
	"bytes"
	"encoding/json"
	"fmt"
	"maps"
	"slices"
	"strings"
	"text/template"

	"github.com/sluice-gw/sluice/proxy"
	"github.com/sluice-gw/sluice/proxy/config"
	"github.com/sluice-gw/sluice/proxy/httpx"
	"github.com/valyala/fasthttp"
)

// Dialect is how a provider writes its errors, used to render the gateway's
// own errors (unauthorized, rate_limited, circuit_open...) so that the
// provider's SDK parses them as its typed error.
type Dialect struct {
	// Name names the dialect (informational: "stripe").
	Name string `koanf:"name" json:"name,omitempty"`
	// ContentType of the rendered body. Default "application/json".
	ContentType string `koanf:"content_type" json:"content_type"`
	// Body is a Go text/template of the body. It sees .Status, .Code (the
	// gateway's code), .Type and .ProviderCode (from types and codes),
	// .Detail, .Retryable, .RetryAfter (seconds, 0 if none), .RequestID and
	// .Upstream; {{json X}} writes X as a JSON value.
	Body string `koanf:"body" json:"body"`
	// Headers are set on the answer, each value a template like Body
	// (Stripe-Should-Retry: "{{.Retryable}}"). A value that renders empty is
	// not set.
	Headers map[string]string `koanf:"headers" json:"headers,omitempty"`
	// Types maps a gateway code to the provider's error type (.Type);
	// "default" applies to the codes not listed.
	Types map[string]string `koanf:"types" json:"types,omitempty"`
	// Codes maps a gateway code to the provider's error code
	// (.ProviderCode); codes not listed use the gateway's code.
	Codes map[string]string `koanf:"codes" json:"codes,omitempty"`
	// Statuses maps a gateway code to the HTTP status sent instead of its own
	// (a provider that answers some errors with 200, or 403 for limits).
	Statuses map[string]int `koanf:"statuses" json:"statuses,omitempty"`
}

// View is what a dialect's templates see.
type View struct {
	Status       int
	Code         string
	Type         string
	ProviderCode string
	Detail       string
	Retryable    bool
	RetryAfter   int
	RequestID    string
	Upstream     string
}

var funcs = template.FuncMap{"json": func(v any) (string, error) {
	b, err := json.Marshal(v)
	return string(b), err
}}

// compiled is a checked dialect.
type compiled struct {
	contentType string
	body        *template.Template
	headers     []compiledHeader
	types       [32]string
	codes       [32]string
	statuses    [32]int
}

type compiledHeader struct {
	name  string
	value *template.Template
}

// compile parses and checks the dialect: every template renders, for every
// gateway code, to a valid header value and (for a JSON content type) a
// valid JSON body. Problems name keys relative to the dialect block.
func (d *Dialect) compile() (*compiled, error) {
	var p config.Problems
	c := &compiled{contentType: d.ContentType}
	if c.contentType == "" {
		c.contentType = "application/json"
	}
	if strings.TrimSpace(d.Body) == "" {
		p.Add("body", "is required: the template of the error body in the provider's dialect")
	} else if t, err := template.New("body").Funcs(funcs).Option("missingkey=error").Parse(d.Body); err != nil {
		p.Addf("body", "does not parse: %v", err)
	} else {
		c.body = t
	}
	for _, name := range slices.Sorted(maps.Keys(d.Headers)) {
		if !httpx.ValidToken(name) {
			p.Addf("headers."+name, "invalid header name %q", name)
			continue
		}
		t, err := template.New(name).Funcs(funcs).Parse(d.Headers[name])
		if err != nil {
			p.Addf("headers."+name, "does not parse: %v", err)
			continue
		}
		c.headers = append(c.headers, compiledHeader{name, t})
	}
	def := d.Types["default"]
	for _, code := range proxy.Codes() {
		c.types[code] = def
	}
	for _, k := range slices.Sorted(maps.Keys(d.Types)) {
		if k == "default" {
			continue
		}
		if code, ok := proxy.ParseCode(k); ok {
			c.types[code] = d.Types[k]
		} else {
			p.Addf("types."+k, "unknown gateway code %q%s", k, config.Suggest(k, codeNames()))
		}
	}
	for _, code := range proxy.Codes() {
		c.codes[code] = code.String()
	}
	for _, k := range slices.Sorted(maps.Keys(d.Codes)) {
		if code, ok := proxy.ParseCode(k); ok {
			c.codes[code] = d.Codes[k]
		} else {
			p.Addf("codes."+k, "unknown gateway code %q%s", k, config.Suggest(k, codeNames()))
		}
	}
	for _, k := range slices.Sorted(maps.Keys(d.Statuses)) {
		code, ok := proxy.ParseCode(k)
		switch s := d.Statuses[k]; {
		case !ok:
			p.Addf("statuses."+k, "unknown gateway code %q%s", k, config.Suggest(k, codeNames()))
		case s < 200 || s > 599:
			p.Addf("statuses."+k, "%d is not an HTTP status", s)
		default:
			c.statuses[code] = s
		}
	}
	if err := p.Err(); err != nil {
		return nil, err
	}
	// Render every code once, so that a template that cannot render is a
	// config error and never a broken answer.
	isJSON := strings.Contains(c.contentType, "json")
	for _, code := range proxy.Codes() {
		v := c.view(proxy.Problem{Status: code.Status(), Code: code, Detail: `a "quoted" detail` + "\n", Upstream: "u", RetryAfter: 1}, []byte("req-1"))
		body, hdrs, err := c.render(&v)
		if err != nil {
			p.Addf("body", "does not render for code %s: %v", code, err)
			break
		}
		if isJSON && !json.Valid(body) {
			p.Addf("body", "renders invalid JSON for code %s: %s", code, truncate(string(body), 200))
			break
		}
		for _, h := range hdrs {
			if !validHeaderValue(h[1]) {
				p.Addf("headers."+h[0], "renders a value with control characters for code %s", code)
			}
		}
	}
	return c, p.Err()
}

func codeNames() []string {
	var out []string
	for _, c := range proxy.Codes() {
		out = append(out, c.String())
	}
	return append(out, "default")
}

func (c *compiled) view(p proxy.Problem, requestID []byte) View {
	return View{Status: p.Status, Code: p.Code.String(), Type: c.types[p.Code], ProviderCode: c.codes[p.Code],
		Detail: p.Detail, Retryable: p.Retryable, RetryAfter: p.RetryAfter, RequestID: string(requestID), Upstream: p.Upstream}
}

// render executes the templates; headers that render empty are left out.
func (c *compiled) render(v *View) ([]byte, [][2]string, error) {
	var buf bytes.Buffer
	if err := c.body.Execute(&buf, v); err != nil {
		return nil, nil, err
	}
	var hdrs [][2]string
	for _, h := range c.headers {
		var hb bytes.Buffer
		if err := h.value.Execute(&hb, v); err != nil {
			return nil, nil, fmt.Errorf("header %s: %w", h.name, err)
		}
		if hb.Len() > 0 {
			hdrs = append(hdrs, [2]string{h.name, hb.String()})
		}
	}
	return buf.Bytes(), hdrs, nil
}

func validHeaderValue(s string) bool {
	for i := 0; i < len(s); i++ {
		if c := s[i]; (c < 0x20 && c != '\t') || c == 0x7f {
			return false
		}
	}
	return true
}

// write renders the gateway error p in the dialect over the answer that
// proxy.WriteErrorAs prepared. A template that fails at run time (it
// rendered for every code when the config loaded) falls back to
// problem+json rather than sending a broken body.
func (c *compiled) write(ctx *fasthttp.RequestCtx, ex *proxy.Exchange, p *proxy.Problem) {
	v := c.view(*p, ex.RequestID())
	body, hdrs, err := c.render(&v)
	if err != nil {
		p.WriteOver(ctx, ex)
		return
	}
	resp := &ctx.Response
	if s := c.statuses[p.Code]; s != 0 {
		resp.SetStatusCode(s)
	}
	resp.Header.SetContentType(c.contentType)
	for _, h := range hdrs {
		if validHeaderValue(h[1]) {
			resp.Header.Set(h[0], h[1])
		}
	}
	resp.SetBody(body)
}
