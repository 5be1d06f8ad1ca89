// Package normalizeerrors is the normalize_errors plugin: it turns an
// upstream's 4xx/5xx answer, in whatever dialect the provider speaks, into the
// gateway's problem+json shape (RFC 9457), keeping the status.
//
// It owns only upstream answers. Errors the gateway produces itself are always
// problem+json, with or without this plugin; switching it off for a route
// ({enabled: false}) passes the provider's own error bodies through for
// callers whose SDKs parse them.
package normalizeerrors

import (
	"encoding/json"
	"fmt"
	"io"
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
}

// Defaults sets max_parse to 1MiB.
func (c *Config) Defaults() { c.MaxParse = 1 << 20 }

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
	return p.Err()
}

// Factory registers the plugin.
var Factory = proxy.Define("normalize_errors", build)

func build(c *Config, b *proxy.Build) (proxy.Plugin, error) {
	n := &Plugin{keepBody: c.KeepBody, maxParse: int(c.MaxParse), upstream: b.Upstream.Name}
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
		return err // gateway errors are rendered by the route
	}
	status := ctx.Response.StatusCode()
	if status < 400 || !ex.FromUpstream {
		return nil
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
