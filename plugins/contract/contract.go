// Package contract is the contract plugin: it checks calls, and the
// provider's answers, against the provider's OpenAPI 3 document.
//
// Requests are checked before the cache and before any credential is added
// (kin-openapi matches the call to an operation and checks its parameters,
// content type and body): with requests: enforce a call that does not match
// is answered 400 contract_violation, listing each violation with its JSON
// pointer, and never reaches the provider; with report it is forwarded,
// counted and logged.
//
// Answers are checked below the cache, so only what the provider actually
// sent (after retries) is checked, a share of them (sample): an answer whose
// status, headers or body no longer match the document is drift, counted by
// upstream, operation, direction and kind, the first of each kind logged.
//
// A route without a contract block has no contract stage at all.
package contract

import (
	"bytes"
	"context"
	"io"
	"log/slog"
	"math/rand/v2"
	"net/http"
	"sync"

	"github.com/getkin/kin-openapi/openapi3filter"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/sluice-gw/sluice/proxy"
	"github.com/sluice-gw/sluice/proxy/config"
	"github.com/valyala/fasthttp"
)

// PartResponses is the part that checks the provider's answers, placed
// below the cache (plugins/plugins.go).
const PartResponses = "responses"

// Factory registers the plugin.
var Factory = proxy.DefineParts("contract", []string{PartResponses}, build)

// Directions: the direction label.
const (
	dirRequest  = "request"
	dirResponse = "response"
)

// Reasons a body is not checked: the reason label of
// sluice_contract_unchecked_total.
const (
	reasonTooLarge = "body_too_large"
	reasonEncoded  = "encoded" // a Content-Encoding other than identity
	reasonStream   = "stream"  // a streamed answer, not held in memory
)

type metrics struct {
	violations *prometheus.CounterVec
	checked    *prometheus.CounterVec
	unchecked  *prometheus.CounterVec
}

// firstSeen remembers the (upstream, operation, direction, kind) already
// logged: the first of each is logged, the rest only counted.
type firstSeen struct{ m sync.Map }

func (f *firstSeen) first(key string) bool {
	_, loaded := f.m.LoadOrStore(key, struct{}{})
	return !loaded
}

func build(c *Config, b *proxy.Build) (proxy.Parts, error) {
	if c.Requests == ModeOff && c.Responses == ModeOff {
		return nil, nil
	}
	doc, err := loadDocument(c.specPath(b.ConfigDir))
	if err != nil {
		return nil, &config.FieldError{Path: "spec", Msg: err.Error()}
	}
	m := proxy.Share(b, struct{}{}, func() *metrics {
		m := &metrics{
			violations: prometheus.NewCounterVec(prometheus.CounterOpts{
				Name: "sluice_contract_violations_total",
				Help: "Calls (direction=request) and provider answers (direction=response) that do not match the provider's OpenAPI document, by upstream, operation and kind of violation; a call counts once per kind it has.",
			}, []string{"upstream", "operation", "direction", "kind"}),
			checked: prometheus.NewCounterVec(prometheus.CounterOpts{
				Name: "sluice_contract_checked_total",
				Help: "Calls, and sampled provider answers to calls that match an operation, checked against the provider's OpenAPI document, by upstream and direction.",
			}, []string{"upstream", "direction"}),
			unchecked: prometheus.NewCounterVec(prometheus.CounterOpts{
				Name: "sluice_contract_unchecked_total",
				Help: "Bodies not checked against the OpenAPI document (the rest of the call was), by upstream, direction and reason (body_too_large, encoded, stream).",
			}, []string{"upstream", "direction", "reason"}),
		}
		b.Registerer.MustRegister(m.violations, m.checked, m.unchecked)
		return m
	})
	seen := proxy.Share(b, seenKey{b.Upstream.Name}, func() *firstSeen { return &firstSeen{} })
	s := &shared{
		doc:      doc,
		upstream: b.Upstream.Name,
		route:    b.Route.Name,
		maxBody:  int(c.MaxBody),
		m:        m,
		seen:     seen,
		log:      b.Logger,
		opts:     filterOptions(),
	}
	parts := proxy.Parts{}
	if c.Requests != ModeOff {
		parts[""] = &requests{shared: s, enforce: c.Requests == ModeEnforce,
			checked: m.checked.WithLabelValues(s.upstream, dirRequest)}
	}
	if c.Responses != ModeOff && c.Sample > 0 {
		parts[PartResponses] = &responses{shared: s, sample: c.Sample,
			checked: m.checked.WithLabelValues(s.upstream, dirResponse)}
	}
	return parts, nil
}

type seenKey struct{ upstream string }

// shared is what both parts of one route's contract use.
type shared struct {
	doc             *document
	upstream, route string
	maxBody         int
	m               *metrics
	seen            *firstSeen
	log             *slog.Logger
	opts            *openapi3filter.Options
}

// record counts a call's violations (once per kind) and logs the first
// occurrence of each kind for the operation.
func (s *shared) record(operation, direction string, found []proxy.Finding, requestID []byte) {
	var kinds [8]string
	n := 0
outer:
	for _, f := range found {
		for _, k := range kinds[:n] {
			if k == f.Kind {
				continue outer
			}
		}
		if n < len(kinds) {
			kinds[n] = f.Kind
			n++
		}
		s.m.violations.WithLabelValues(s.upstream, operation, direction, f.Kind).Inc()
		if s.seen.first(s.upstream + "\x00" + operation + "\x00" + direction + "\x00" + f.Kind) {
			msg := "contract: call does not match the provider's OpenAPI document"
			if direction == dirResponse {
				msg = "contract: drift: provider answer does not match its OpenAPI document"
			}
			s.log.Warn(msg, "upstream", s.upstream, "route", s.route, "operation", operation,
				"direction", direction, "kind", f.Kind, "pointer", f.Pointer, "message", f.Message,
				"request_id", string(requestID), "document", s.doc.path)
		}
	}
}

func (s *shared) unchecked(direction, reason string) {
	s.m.unchecked.WithLabelValues(s.upstream, direction, reason).Inc()
}

// requests is the main part: it checks each call before the cache.
type requests struct {
	*shared
	enforce bool
	checked prometheus.Counter
}

func (p *requests) Handle(ctx *fasthttp.RequestCtx, ex *proxy.Exchange, next proxy.Handler) error {
	found, operation := p.check(ctx, ex)
	p.checked.Inc()
	if len(found) > 0 {
		p.record(operation, dirRequest, found, ex.RequestID())
		if p.enforce {
			e := proxy.Errorf(proxy.CodeContractViolation,
				"the call does not match the provider's OpenAPI document (operation %s): %d violation(s), see problems", operation, len(found))
			e.Problems = found
			return e
		}
	}
	return next.Handle(ctx, ex)
}

// check returns the call's violations and the operation it matched.
func (p *requests) check(ctx *fasthttp.RequestCtx, ex *proxy.Exchange) ([]proxy.Finding, string) {
	header := http.Header{}
	for k, v := range ctx.Request.Header.All() {
		header.Add(string(k), string(v))
	}
	// A streamed request body (server.stream_request_threshold) is not in
	// memory and must not be read here: it is unchecked, like a large one.
	if ex.BodyStreamed() || len(ctx.Request.Body()) > p.maxBody {
		p.unchecked(dirRequest, reasonTooLarge)
		return p.checkRequest(string(ctx.Method()), ex.AppendUpstreamURI(nil), header, nil, true)
	}
	return p.checkRequest(string(ctx.Method()), ex.AppendUpstreamURI(nil), header, ctx.Request.Body(), false)
}

// checkRequest checks one call: method, request URI as the provider gets
// it, headers and body (skipBody: a body too large to check).
func (s *shared) checkRequest(method string, uri []byte, header http.Header, body []byte, skipBody bool) ([]proxy.Finding, string) {
	req, route, params, err := s.doc.find(method, uri)
	if err != nil {
		path := uri
		if i := bytes.IndexByte(path, '?'); i >= 0 {
			path = path[:i]
		}
		return []proxy.Finding{{Kind: KindUnknownOperation, Pointer: "",
			Message: "no operation of the document matches " + method + " " + string(path)}}, "unknown"
	}
	req.Header = header
	opts := s.opts
	if skipBody {
		o := *opts
		o.ExcludeRequestBody = true
		opts = &o
	} else if len(body) > 0 {
		req.Body = io.NopCloser(bytes.NewReader(body))
		req.ContentLength = int64(len(body))
	}
	in := &openapi3filter.RequestValidationInput{Request: req, PathParams: params, Route: route, Options: opts}
	if err := openapi3filter.ValidateRequest(context.Background(), in); err != nil {
		return findings(err), operationName(route)
	}
	return nil, operationName(route)
}

// responses is the part below the cache: it checks a share of the
// provider's answers.
type responses struct {
	*shared
	sample  float64
	checked prometheus.Counter
}

func (p *responses) Handle(ctx *fasthttp.RequestCtx, ex *proxy.Exchange, next proxy.Handler) error {
	if err := next.Handle(ctx, ex); err != nil {
		return err
	}
	if !ex.FromUpstream || (p.sample < 1 && rand.Float64() >= p.sample) {
		return nil
	}
	if found, operation := p.check(ctx, ex); len(found) > 0 {
		p.record(operation, dirResponse, found, ex.RequestID())
	}
	return nil
}

func (p *responses) check(ctx *fasthttp.RequestCtx, ex *proxy.Exchange) ([]proxy.Finding, string) {
	resp := &ctx.Response
	skip := ""
	switch ce := resp.Header.ContentEncoding(); {
	case resp.IsBodyStream():
		skip = reasonStream
	case len(ce) > 0 && !bytes.EqualFold(ce, strIdentity):
		skip = reasonEncoded
	case len(resp.Body()) > p.maxBody:
		skip = reasonTooLarge
	}
	var body []byte
	if skip == "" {
		body = resp.Body()
	}
	header := http.Header{}
	for k, v := range resp.Header.All() {
		header.Add(string(k), string(v))
	}
	found, operation, matched := p.checkResponse(string(ctx.Method()), ex.AppendUpstreamURI(nil), resp.StatusCode(), header, body, skip != "")
	if matched {
		p.checked.Inc()
		if skip != "" {
			p.unchecked(dirResponse, skip)
		}
	}
	return found, operation
}

var strIdentity = []byte("identity")

// checkResponse checks one answer of the provider against the operation
// of the call (method and request URI); matched is false for a call that
// matches no operation (the request part reports those).
func (s *shared) checkResponse(method string, uri []byte, status int, header http.Header, body []byte, skipBody bool) (found []proxy.Finding, operation string, matched bool) {
	req, route, params, err := s.doc.find(method, uri)
	if err != nil {
		return nil, "", false
	}
	opts := s.opts
	if skipBody {
		o := *opts
		o.ExcludeResponseBody = true
		opts = &o
	}
	in := &openapi3filter.ResponseValidationInput{
		RequestValidationInput: &openapi3filter.RequestValidationInput{Request: req, PathParams: params, Route: route, Options: opts},
		Status:                 status,
		Header:                 header,
		Options:                opts,
	}
	in.SetBodyBytes(body)
	if err := openapi3filter.ValidateResponse(context.Background(), in); err != nil {
		return findings(err), operationName(route), true
	}
	return nil, operationName(route), true
}
