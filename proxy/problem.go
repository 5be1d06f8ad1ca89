package proxy

import (
	"encoding/json"
	"strconv"
	"time"
	"unicode/utf8"

	"github.com/valyala/fasthttp"
)

// ProblemContentType is the media type of every error Sluice produces (RFC 9457).
const ProblemContentType = "application/problem+json"

var (
	strProblemContentType = []byte(ProblemContentType)
	strRetryAfter         = []byte("Retry-After")
	strCacheControl       = []byte("Cache-Control")
	strNoStore            = []byte("no-store")
)

// Problem is one problem+json body. Gateway errors become one through
// (*Error); upstream errors through the normalize_errors plugin.
type Problem struct {
	Status int
	Code   Code
	// Detail is the human-readable explanation. Never a secret.
	Detail string
	// Upstream names the upstream involved, if any.
	Upstream string
	// Retryable tells the caller whether the same request may be sent again.
	Retryable bool
	// RetryAfter in whole seconds; 0 omits it. Sets the Retry-After header too.
	RetryAfter int
	// UpstreamCode is the provider's own error code, when one was found.
	UpstreamCode string
	// UpstreamBody is the provider's original body (keep_body: true). Valid
	// JSON is embedded as is; anything else as a JSON string.
	UpstreamBody []byte
	// Problems lists the individual findings behind the error, when there
	// are several (a config the admin API's reload rejected, each violation
	// of a contract).
	Problems []Finding
}

// Finding is one entry of a problem's problems list. One with only a
// Message is written as a JSON string (the admin API's config problems);
// one with a Pointer or a Kind as an object {"pointer","kind","message"}
// (a contract violation: Pointer is a JSON pointer, Kind its class).
type Finding struct {
	Pointer string
	Kind    string
	Message string
}

func (f *Finding) appendJSON(dst []byte) []byte {
	if f.Pointer == "" && f.Kind == "" {
		return appendJSONString(dst, f.Message)
	}
	dst = append(dst, `{"pointer":`...)
	dst = appendJSONString(dst, f.Pointer)
	dst = append(dst, `,"kind":`...)
	dst = appendJSONString(dst, f.Kind)
	dst = append(dst, `,"message":`...)
	dst = appendJSONString(dst, f.Message)
	return append(dst, '}')
}

// ProblemFor builds the Problem for err on this exchange.
func ProblemFor(e *Error, ctx *fasthttp.RequestCtx, ex *Exchange) Problem {
	p := Problem{
		Status:    e.HTTPStatus(),
		Code:      e.Code,
		Detail:    e.Detail,
		Retryable: e.Retryable(&ctx.Request),
		Problems:  e.Problems,
	}
	if ex.Upstream != nil {
		p.Upstream = ex.Upstream.Name
	}
	if e.RetryAfter > 0 {
		p.RetryAfter = ceilSeconds(e.RetryAfter)
	} else if p.Status == 429 || p.Status == 503 {
		p.RetryAfter = 1
	}
	return p
}

func ceilSeconds(d time.Duration) int {
	s := int((d + time.Second - 1) / time.Second)
	return max(s, 1)
}

// Write replaces ctx.Response with the problem: status, Content-Type,
// Retry-After, Cache-Control: no-store and the JSON body. Headers other than
// those set here are dropped; X-Request-Id is added when the exchange ends.
func (p *Problem) Write(ctx *fasthttp.RequestCtx, ex *Exchange) {
	ctx.Response.Reset()
	p.WriteOver(ctx, ex)
}

// WriteOver is Write without dropping the response's other headers: the
// normalize_errors plugin keeps a provider's headers (rate limit state,
// request ids) and removes the ones that described the replaced body.
func (p *Problem) WriteOver(ctx *fasthttp.RequestCtx, ex *Exchange) {
	ex.problem = p.Code + 1
	resp := &ctx.Response
	resp.SetStatusCode(p.Status)
	resp.Header.SetContentTypeBytes(strProblemContentType)
	resp.Header.SetBytesKV(strCacheControl, strNoStore)
	if p.RetryAfter > 0 {
		ex.scratch = strconv.AppendInt(ex.scratch[:0], int64(p.RetryAfter), 10)
		resp.Header.SetBytesKV(strRetryAfter, ex.scratch)
	}
	ex.scratch = p.Append(ex.scratch[:0], ex)
	resp.SetBody(ex.scratch)
}

// Append appends the JSON body of p to dst.
func (p *Problem) Append(dst []byte, ex *Exchange) []byte {
	return ex.appendTraceID(p.appendJSON(dst, ex.Path(), ex.requestID))
}

// appendJSON writes the one problem+json shape of every Sluice error, proxy
// and admin API alike: same members, same order.
func (p *Problem) appendJSON(dst, instance, requestID []byte) []byte {
	dst = append(dst, `{"type":"about:blank","title":`...)
	dst = appendJSONString(dst, fasthttp.StatusMessage(p.Status))
	dst = append(dst, `,"status":`...)
	dst = strconv.AppendInt(dst, int64(p.Status), 10)
	dst = append(dst, `,"code":"`...)
	dst = append(dst, p.Code.String()...)
	dst = append(dst, '"')
	if p.Detail != "" {
		dst = append(dst, `,"detail":`...)
		dst = appendJSONString(dst, p.Detail)
	}
	if len(instance) > 0 {
		dst = append(dst, `,"instance":`...)
		dst = appendJSONBytes(dst, instance)
	}
	dst = append(dst, `,"request_id":`...)
	dst = appendJSONBytes(dst, requestID)
	if p.Upstream != "" {
		dst = append(dst, `,"upstream":`...)
		dst = appendJSONString(dst, p.Upstream)
	}
	if p.Retryable {
		dst = append(dst, `,"retryable":true`...)
	} else {
		dst = append(dst, `,"retryable":false`...)
	}
	if p.RetryAfter > 0 {
		dst = append(dst, `,"retry_after":`...)
		dst = strconv.AppendInt(dst, int64(p.RetryAfter), 10)
	}
	if p.UpstreamCode != "" {
		dst = append(dst, `,"upstream_code":`...)
		dst = appendJSONString(dst, p.UpstreamCode)
	}
	if len(p.UpstreamBody) > 0 {
		dst = append(dst, `,"upstream_body":`...)
		if json.Valid(p.UpstreamBody) {
			dst = append(dst, p.UpstreamBody...)
		} else {
			dst = appendJSONBytes(dst, p.UpstreamBody)
		}
	}
	if len(p.Problems) > 0 {
		dst = append(dst, `,"problems":[`...)
		for i := range p.Problems {
			if i > 0 {
				dst = append(dst, ',')
			}
			dst = p.Problems[i].appendJSON(dst)
		}
		dst = append(dst, ']')
	}
	return append(dst, '}')
}

const hexDigits = "0123456789abcdef"

// appendJSONString appends s as a JSON string. Invalid UTF-8 becomes U+FFFD,
// as encoding/json does.
func appendJSONString(dst []byte, s string) []byte {
	dst = append(dst, '"')
	start := 0
	for i := 0; i < len(s); {
		c := s[i]
		if c < utf8.RuneSelf {
			if c >= 0x20 && c != '"' && c != '\\' && c != 0x7f {
				i++
				continue
			}
			dst = append(dst, s[start:i]...)
			switch c {
			case '"', '\\':
				dst = append(dst, '\\', c)
			case '\n':
				dst = append(dst, '\\', 'n')
			case '\r':
				dst = append(dst, '\\', 'r')
			case '\t':
				dst = append(dst, '\\', 't')
			default:
				dst = append(dst, '\\', 'u', '0', '0', hexDigits[c>>4], hexDigits[c&0xf])
			}
			i++
			start = i
			continue
		}
		r, size := utf8.DecodeRuneInString(s[i:])
		if r == utf8.RuneError && size == 1 {
			dst = append(dst, s[start:i]...)
			dst = append(dst, `\ufffd`...)
			i++
			start = i
			continue
		}
		if r == '\u2028' || r == '\u2029' {
			dst = append(dst, s[start:i]...)
			dst = append(dst, '\\', 'u', '2', '0', '2', hexDigits[r&0xf])
			i += size
			start = i
			continue
		}
		i += size
	}
	dst = append(dst, s[start:]...)
	return append(dst, '"')
}

func appendJSONBytes(dst, b []byte) []byte {
	return appendJSONString(dst, b2s(b))
}

// WriteErrorAs renders a gateway error as the route would, except that
// render writes the body: a plugin that speaks the upstream's error
// dialect uses it so that a provider SDK parses Sluice's own errors. The
// answer is reset; the error's status, its own headers (Allow,
// WWW-Authenticate), Retry-After and Cache-Control: no-store are set before
// render runs, and the error is recorded (ex.Err, sluice_errors_total, the
// access log's code) like any other. render gets the Problem the route
// would have written and may set the Content-Type, other headers and the body.
func WriteErrorAs(ctx *fasthttp.RequestCtx, ex *Exchange, err error, render func(p *Problem)) {
	e := Classify(err)
	ex.Err = e
	p := ProblemFor(e, ctx, ex)
	resp := &ctx.Response
	resp.Reset()
	ex.problem = p.Code + 1
	resp.SetStatusCode(p.Status)
	resp.Header.SetBytesKV(strCacheControl, strNoStore)
	if p.RetryAfter > 0 {
		resp.Header.SetBytesKV(strRetryAfter, strconv.AppendInt(ex.scratch[:0], int64(p.RetryAfter), 10))
	}
	for _, h := range e.Header {
		resp.Header.SetBytesKV(h.Name, h.Value)
	}
	render(&p)
}
