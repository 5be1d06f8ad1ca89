// Package normalizeerrors is the normalize_errors plugin: it decides in
// which shape a route's errors reach the caller.
//
// Upstream errors (a 4xx/5xx answer): upstream_errors: problem (default)
// turns them into the gateway's problem+json shape (RFC 9457), keeping the
// status; passthrough leaves the provider's own body for its SDK to parse.
//
// Gateway errors (unauthorized, rate_limited, circuit_open...):
// gateway_errors: problem (default) renders them as problem+json, as the
// route does without this plugin; dialect renders them with the dialect
// block, in the provider's own error format, so that the provider's SDK
// raises its typed error. A provider profile (profile: stripe) sets both to
// the SDK-friendly choice.
//
// A caller that sends Accept: application/problem+json always gets
// problem+json, whatever the settings.
package normalizeerrors

import (
	"encoding/json"
	"fmt"
	"io"
	"strconv"
	"strings"
	"time"

	"github.com/sluice-gw/sluice/proxy"
	"github.com/sluice-gw/sluice/proxy/config"
	"github.com/sluice-gw/sluice/proxy/httpx"
	"github.com/sluice-gw/sluice/proxy/jsonpointer"
	"github.com/valyala/fasthttp"
)

// Config of normalize_errors.
type Config struct {
	// Message is a JSON pointer (RFC 6901) to the provider's human-readable
	// message in its error body, e.g. "/message" or "/error/message". It
	// becomes "detail". Empty (default): detail says what the upstream answered.
	Message string `koanf:"message" json:"message,omitempty"`
	// Code is a JSON pointer to the provider's own error code, e.g.
	// "/error/code". It becomes "upstream_code"; "code" stays Sluice's.
	Code string `koanf:"code" json:"code,omitempty"`
	// KeepBody keeps the provider's original body as "upstream_body".
	// Default false: the original body is dropped.
	KeepBody bool `koanf:"keep_body" json:"keep_body"`
	// MaxParse is the largest body that is parsed for message and code;
	// larger bodies are normalized without them. A compressed body is
	// decompressed up to MaxParse only; beyond it, it is neither parsed nor
	// kept. Default 1MiB.
	MaxParse config.Size `koanf:"max_parse" json:"max_parse"`
	// UpstreamErrors is what happens to a provider's error answer:
	// "problem" (default) rewrites it as problem+json; "passthrough" leaves
	// the provider's body and headers as they are, for its SDK to parse.
	UpstreamErrors string `koanf:"upstream_errors" json:"upstream_errors"`
	// GatewayErrors is how the gateway's own errors on the route are
	// written: "problem" (default) as problem+json; "dialect" in the
	// provider's format, with the dialect block.
	GatewayErrors string `koanf:"gateway_errors" json:"gateway_errors"`
	// Dialect describes the provider's error format; required by
	// gateway_errors: dialect. Provider profiles set it.
	Dialect *Dialect `koanf:"dialect" json:"dialect,omitempty"`
}

// Defaults sets max_parse to 1MiB and both modes to problem.
func (c *Config) Defaults() {
	c.MaxParse = 1 << 20
	c.UpstreamErrors = modeProblem
	c.GatewayErrors = modeProblem
}

// The modes.
const (
	modeProblem     = "problem"
	modePassthrough = "passthrough"
	modeDialect     = "dialect"
)

// Validate checks the pointers.
func (c *Config) Validate() error {
	var p config.Problems
	if _, err := jsonpointer.Parse(c.Message); err != nil {
		p.Add("message", err.Error())
	}
	if _, err := jsonpointer.Parse(c.Code); err != nil {
		p.Add("code", err.Error())
	}
	if c.MaxParse <= 0 {
		p.Add("max_parse", "must be positive")
	}
	switch c.UpstreamErrors {
	case modeProblem, modePassthrough:
	default:
		p.Addf("upstream_errors", "unknown mode %q: want problem or passthrough", c.UpstreamErrors)
	}
	switch c.GatewayErrors {
	case modeProblem:
	case modeDialect:
		if c.Dialect == nil {
			p.Add("dialect", "is required by gateway_errors: dialect (or use a provider profile, which sets it)")
		}
	default:
		p.Addf("gateway_errors", "unknown mode %q: want problem or dialect", c.GatewayErrors)
	}
	if c.Dialect != nil {
		if _, err := c.Dialect.compile(); err != nil {
			p.AddErr("dialect", err)
		}
	}
	return p.Err()
}

// Factory registers the plugin.
var Factory = proxy.Define("normalize_errors", build)

func build(c *Config, b *proxy.Build) (proxy.Plugin, error) {
	n := &Plugin{keepBody: c.KeepBody, maxParse: int(c.MaxParse), upstream: b.Upstream.Name,
		passthrough: c.UpstreamErrors == modePassthrough}
	if c.GatewayErrors == modeDialect {
		d, err := c.Dialect.compile()
		if err != nil {
			return nil, err
		}
		n.dialect = d
	}
	n.message, _ = jsonpointer.Parse(c.Message)
	n.code, _ = jsonpointer.Parse(c.Code)
	return n, nil
}

// Plugin is the compiled plugin for one route.
type Plugin struct {
	message, code jsonpointer.Pointer
	keepBody      bool
	maxParse      int
	upstream      string
	passthrough   bool      // upstream_errors: passthrough
	dialect       *compiled // gateway_errors: dialect; nil: problem+json
}

var _ proxy.Plugin = (*Plugin)(nil)

// Headers that describe the body being replaced; they go with it. The
// provider's other headers (rate-limit state, its request id) stay.
var bodyHeaders = []string{"Content-Encoding", "Content-Language", "Content-Location", "Content-Range",
	"Content-Disposition", "Content-MD5", "Digest", "ETag", "Last-Modified", "Expires", "Age", "Vary", "Accept-Ranges"}

const maxDetail = 1024

// Handle normalizes an upstream answer with status 400 or above.
func (n *Plugin) Handle(ctx *fasthttp.RequestCtx, ex *proxy.Exchange, next proxy.Handler) error {
	if err := next.Handle(ctx, ex); err != nil {
		if n.dialect == nil || wantsProblem(&ctx.Request) {
			return err // rendered by the route, as problem+json
		}
		proxy.WriteErrorAs(ctx, ex, err, func(p *proxy.Problem) { n.dialect.write(ctx, ex, p) })
		return nil
	}
	status := ctx.Response.StatusCode()
	if status < 400 || !ex.FromUpstream {
		return nil
	}
	if n.passthrough && !wantsProblem(&ctx.Request) {
		return nil // the provider's own body, for its SDK
	}
	resp := &ctx.Response
	var body []byte
	streamed := resp.IsBodyStream()
	if streamed {
		// A streamed error answer (long, or an event stream): at most
		// max_parse bytes of it are read; the rest is dropped with it.
		body, _ = io.ReadAll(io.LimitReader(resp.BodyStream(), int64(n.maxParse)+1))
	} else {
		body = resp.Body()
	}
	if len(resp.Header.ContentEncoding()) > 0 && streamed {
		body = nil // a compressed prefix cannot be decoded on its own
	} else if len(resp.Header.ContentEncoding()) > 0 {
		// Bounded by max_parse: a small compressed body may expand without
		// limit. A body that cannot be decoded (too large, corrupt, unknown
		// coding) is neither parsed nor kept.
		plain, err := resp.BodyUncompressedWithLimit(n.maxParse)
		if err != nil {
			plain = nil
		}
		body = plain
	}

	p := proxy.Problem{
		Status:    status,
		Code:      codeFor(status),
		Upstream:  n.upstream,
		Retryable: retryable(status, &ctx.Request),
	}
	if ra := resp.Header.Peek("Retry-After"); len(ra) > 0 {
		p.RetryAfter = ceilSecs(httpx.ParseRetryAfter(ra, time.Now()))
	}
	if p.RetryAfter == 0 && (status == 429 || status == 503) {
		p.RetryAfter = 1 // none, unreadable or past: 429 and 503 always carry one
	}
	if (!n.message.IsZero() || !n.code.IsZero()) && len(body) <= n.maxParse {
		var doc any
		if json.Unmarshal(body, &doc) == nil {
			if v, ok := n.message.Eval(doc); ok && !n.message.IsZero() {
				p.Detail = truncate(text(v), maxDetail)
			}
			if v, ok := n.code.Eval(doc); ok && !n.code.IsZero() {
				p.UpstreamCode = truncate(text(v), 256)
			}
		}
	}
	if p.Detail == "" {
		p.Detail = fmt.Sprintf("upstream %s answered %d %s", n.upstream, status, fasthttp.StatusMessage(status))
	}
	if n.keepBody {
		p.UpstreamBody = append([]byte(nil), body...)
	}
	for _, h := range bodyHeaders {
		resp.Header.Del(h)
	}
	p.WriteOver(ctx, ex)
	return nil
}

// codeFor maps an upstream status to the gateway's code.
func codeFor(status int) proxy.Code {
	switch {
	case status == fasthttp.StatusTooManyRequests:
		return proxy.CodeUpstreamRateLimited
	case status >= 500:
		return proxy.CodeUpstreamError
	}
	return proxy.CodeUpstreamClientError
}

// retryable: the provider said it did not act (408, 425, 429, 503), or it may
// have acted (500, 502, 504) and the request is safe to repeat. Other 4xx and
// 5xx (501, 505...) will fail the same way again.
func retryable(status int, req *fasthttp.Request) bool {
	switch status {
	case 408, 425, 429, 503:
		return true
	case 500, 502, 504:
		return proxy.IsIdempotent(req)
	}
	return false
}

// text renders a JSON value for a detail: strings as they are, anything else
// as compact JSON.
func text(v any) string {
	if s, ok := v.(string); ok {
		return s
	}
	b, _ := json.Marshal(v)
	return string(b)
}

func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	// cut on a rune boundary
	for n > 0 && n < len(s) && s[n]&0xC0 == 0x80 {
		n--
	}
	return s[:n] + "…"
}

func ceilSecs(d time.Duration) int { return int((d + time.Second - 1) / time.Second) }

// wantsProblem reports whether the caller asked for problem+json: its
// Accept header names application/problem+json (with a non-zero q).
func wantsProblem(req *fasthttp.Request) bool {
	accept := req.Header.Peek("Accept")
	if len(accept) < len(proxy.ProblemContentType) {
		return false
	}
	for part := range strings.SplitSeq(string(accept), ",") {
		mt, params, _ := strings.Cut(strings.TrimSpace(part), ";")
		if !strings.EqualFold(strings.TrimSpace(mt), proxy.ProblemContentType) {
			continue
		}
		for param := range strings.SplitSeq(params, ";") {
			k, v, _ := strings.Cut(strings.TrimSpace(param), "=")
			if strings.EqualFold(strings.TrimSpace(k), "q") {
				if f, err := strconv.ParseFloat(strings.TrimSpace(v), 64); err == nil && f == 0 {
					return false
				}
			}
		}
		return true
	}
	return false
}
