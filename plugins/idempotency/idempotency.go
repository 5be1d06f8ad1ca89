// Package idempotency is the idempotency plugin: it makes a POST or PATCH
// that carries an Idempotency-Key safe to send twice, even to a provider
// that does not de-duplicate (draft-ietf-httpapi-idempotency-key-header).
//
// The first complete answer to a key is stored, per route, consumer and key,
// for ttl: in-process, or in Redis in cluster mode so that any gateway
// replays it. A repeat with the same request gets the stored answer without
// reaching the provider, marked Idempotent-Replayed: true. A repeat that
// arrives while the first is in flight gets 409 (in_flight: conflict) or
// waits for it (in_flight: wait); the same key with another request (method,
// path, query or body) gets 422. 5xx answers, 408, 429 and gateway errors
// (timeouts included) are not stored, so the caller can try again.
//
// When the store cannot take the key (the in-process store is full, Redis
// does not answer), the call goes through un-deduplicated and is counted:
// the plugin never turns a working call into an error of its own.
package idempotency

import (
	"crypto/sha256"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/sluice-gw/sluice/proxy"
	"github.com/sluice-gw/sluice/proxy/config"
	"github.com/sluice-gw/sluice/proxy/httpx"
	"github.com/valyala/fasthttp"
)

// Config of idempotency.
type Config struct {
	// Header is the request header that carries the key. Default
	// "Idempotency-Key" (the Twilio profile sets I-Twilio-Idempotency-Token).
	Header string `koanf:"header" json:"header"`
	// Methods are the methods de-duplicated. Default [POST, PATCH].
	Methods []string `koanf:"methods" json:"methods"`
	// TTL is how long a stored answer is replayed. Default 24h.
	TTL config.Duration `koanf:"ttl" json:"ttl"`
	// InFlight is what a repeat gets while the first call is still being
	// served: conflict (default: 409 at once) or wait (for the first call's
	// answer, within the route's deadline; 409 if it does not come).
	InFlight string `koanf:"in_flight" json:"in_flight"`
	// InFlightTimeout bounds how long a call holds its key unanswered (a
	// gateway that dies mid-call frees it after this). Default 2m.
	InFlightTimeout config.Duration `koanf:"in_flight_timeout" json:"in_flight_timeout"`
	// MaxKeyLength is the longest key accepted (400 above). Default 255.
	MaxKeyLength int `koanf:"max_key_length" json:"max_key_length"`
	// MaxEntries caps the keys held by the in-process store (all routes of
	// the gateway together). When it is full, calls with new keys go through
	// un-deduplicated. Default 100000.
	MaxEntries int `koanf:"max_entries" json:"max_entries"`
	// MaxAnswer is the largest answer body stored; larger answers are not
	// stored (counted). Default 1MiB.
	MaxAnswer config.Size `koanf:"max_answer" json:"max_answer"`
}

// Defaults sets the defaults above.
func (c *Config) Defaults() {
	*c = Config{
		Header:          "Idempotency-Key",
		Methods:         []string{"POST", "PATCH"},
		TTL:             config.Duration(24 * time.Hour),
		InFlight:        inFlightConflict,
		InFlightTimeout: config.Duration(2 * time.Minute),
		MaxKeyLength:    255,
		MaxEntries:      100000,
		MaxAnswer:       1 << 20,
	}
}

const (
	inFlightConflict = "conflict"
	inFlightWait     = "wait"
)

// Validate checks the settings.
func (c *Config) Validate() error {
	var p config.Problems
	if !httpx.ValidToken(c.Header) {
		p.Addf("header", "invalid header name %q", c.Header)
	}
	if len(c.Methods) == 0 {
		p.Add("methods", "must list at least one method")
	}
	for i, m := range c.Methods {
		if !httpx.ValidToken(m) || m != strings.ToUpper(m) {
			p.Addf(fmt.Sprintf("methods[%d]", i), "invalid method %q: want an upper-case method such as POST", m)
		}
	}
	if c.TTL < config.Duration(time.Second) {
		p.Addf("ttl", "must be at least 1s, got %s", c.TTL)
	}
	switch c.InFlight {
	case inFlightConflict, inFlightWait:
	default:
		p.Addf("in_flight", "unknown mode %q: want conflict or wait", c.InFlight)
	}
	if c.InFlightTimeout < config.Duration(time.Second) {
		p.Addf("in_flight_timeout", "must be at least 1s, got %s", c.InFlightTimeout)
	}
	if c.MaxKeyLength < 1 || c.MaxKeyLength > 4096 {
		p.Addf("max_key_length", "must be between 1 and 4096, got %d", c.MaxKeyLength)
	}
	if c.MaxEntries < 1 {
		p.Add("max_entries", "must be positive")
	}
	if c.MaxAnswer <= 0 {
		p.Add("max_answer", "must be positive")
	}
	return p.Err()
}

// Factory registers the plugin.
var Factory = proxy.Define("idempotency", build)

type metrics struct {
	replays, conflicts, bypassed *prometheus.CounterVec
}

// Reasons of sluice_idempotency_bypassed_total.
const (
	bypassFull        = "store_full"
	bypassUnavailable = "store_unavailable"
	bypassTooLarge    = "answer_too_large"
	bypassStreamed    = "body_streamed"
)

type (
	memKey     struct{}
	metricsKey struct{}
)

func build(c *Config, b *proxy.Build) (proxy.Plugin, error) {
	m := proxy.Share(b, metricsKey{}, func() *metrics {
		m := &metrics{
			replays: prometheus.NewCounterVec(prometheus.CounterOpts{
				Name: "sluice_idempotency_replays_total",
				Help: "Calls answered with the stored answer of an earlier call with the same Idempotency-Key, without reaching the provider.",
			}, []string{"route"}),
			conflicts: prometheus.NewCounterVec(prometheus.CounterOpts{
				Name: "sluice_idempotency_conflicts_total",
				Help: "Calls refused because their Idempotency-Key was in flight (reason in_flight, 409) or used with another request (reason mismatch, 422).",
			}, []string{"route", "reason"}),
			bypassed: prometheus.NewCounterVec(prometheus.CounterOpts{
				Name: "sluice_idempotency_bypassed_total",
				Help: "Keyed calls that went through without de-duplication (store_full, store_unavailable) or whose answer was not stored (answer_too_large), and keyed calls with a streamed request body (body_streamed), which are not de-duplicated.",
			}, []string{"route", "reason"}),
		}
		b.Registerer.MustRegister(m.replays, m.conflicts, m.bypassed)
		return m
	})
	route := b.Route.Name
	p := &Plugin{
		header:    httpx.NewName(c.Header),
		methods:   slices.Clone(c.Methods),
		ttl:       c.TTL.D(),
		wait:      c.InFlight == inFlightWait,
		lockTTL:   c.InFlightTimeout.D(),
		maxKey:    c.MaxKeyLength,
		maxAnswer: int(c.MaxAnswer),
		route:     route,
		replays:   m.replays.WithLabelValues(route),
		inFlight:  m.conflicts.WithLabelValues(route, "in_flight"),
		mismatch:  m.conflicts.WithLabelValues(route, "mismatch"),
		full:      m.bypassed.WithLabelValues(route, bypassFull),
		down:      m.bypassed.WithLabelValues(route, bypassUnavailable),
		tooLarge:  m.bypassed.WithLabelValues(route, bypassTooLarge),
		streamed:  m.bypassed.WithLabelValues(route, bypassStreamed),
		log:       b.Logger,
	}
	mem := proxy.Share(b, memKey{}, func() *memStore { return newMemStore() })
	mem.setMax(c.MaxEntries)
	p.store = mem
	if b.Cluster != nil {
		p.store = &redisStore{c: b.Cluster, warned: proxy.Share(b, b.Cluster, func() *atomic.Bool { return new(atomic.Bool) }), log: b.Logger}
	}
	return p, nil
}

// Plugin is the compiled idempotency of one route.
type Plugin struct {
	header    httpx.Name
	methods   []string
	ttl       time.Duration
	wait      bool
	lockTTL   time.Duration
	maxKey    int
	maxAnswer int
	route     string
	store     store

	replays, inFlight, mismatch prometheus.Counter
	full, down, tooLarge        prometheus.Counter
	streamed                    prometheus.Counter // bodies streamed (server.stream_request_threshold): not fingerprinted
	log                         *slog.Logger
}

var _ proxy.Plugin = (*Plugin)(nil)

// ValidKey reports whether key may be used: 1 to max bytes of visible ASCII
// and spaces (an sf-string's characters, as the IETF draft's header is).
func ValidKey(key []byte, max int) bool {
	if len(key) == 0 || len(key) > max {
		return false
	}
	for _, c := range key {
		if c < 0x20 || c > 0x7e {
			return false
		}
	}
	return true
}

var (
	errConflict = &proxy.Error{Code: proxy.CodeBadRequest, Status: fasthttp.StatusConflict,
		Detail: "a request with this Idempotency-Key is still being served; send it again once that one has answered", RetryAfter: time.Second}
	errMismatch = &proxy.Error{Code: proxy.CodeBadRequest, Status: fasthttp.StatusUnprocessableEntity,
		Detail: "this Idempotency-Key was used with another request (method, path, query or body): use a new key for a new request"}
)

// Handle de-duplicates keyed calls of the configured methods; any other
// call passes at the cost of a method comparison.
func (p *Plugin) Handle(ctx *fasthttp.RequestCtx, ex *proxy.Exchange, next proxy.Handler) error {
	if !slices.Contains(p.methods, string(ctx.Request.Header.Method())) {
		return next.Handle(ctx, ex)
	}
	key := p.header.Peek(&ctx.Request.Header)
	if len(key) == 0 {
		return next.Handle(ctx, ex)
	}
	if !ValidKey(key, p.maxKey) {
		return proxy.Errorf(proxy.CodeBadRequest, "%s must be 1 to %d characters of visible ASCII or spaces (got %d bytes)",
			p.header, p.maxKey, len(key))
	}
	if ex.BodyStreamed() { // cannot be fingerprinted without reading it into memory
		p.streamed.Inc()
		return next.Handle(ctx, ex)
	}
	sk := storeKey(p.route, ex.Consumer, key)
	fp := fingerprint(ctx, ex)
	deadline := time.Now().Add(ex.Remaining())
	for {
		st, ans, err := p.store.begin(sk, fp, p.lockTTL)
		switch {
		case err == errFull:
			p.full.Inc()
			return next.Handle(ctx, ex)
		case err != nil:
			p.down.Inc()
			return next.Handle(ctx, ex)
		}
		switch st {
		case stateStored:
			p.replays.Inc()
			ans.write(ctx)
			ex.FromUpstream = true
			return nil
		case stateMismatch:
			p.mismatch.Inc()
			return errMismatch
		case stateInFlight:
			if !p.wait || !p.store.wait(sk, deadline) {
				p.inFlight.Inc()
				return errConflict
			}
			continue // the first call ended: look again
		}
		break // stateAcquired: this call serves the key
	}
	err := next.Handle(ctx, ex)
	resp := &ctx.Response
	status := resp.StatusCode()
	if err != nil || !ex.FromUpstream || !storable(status) {
		p.store.release(sk)
		return err
	}
	if len(resp.Body()) > p.maxAnswer {
		p.tooLarge.Inc()
		p.store.release(sk)
		return nil
	}
	if p.store.complete(sk, fp, capture(resp), p.ttl) != nil {
		p.down.Inc()
	}
	return nil
}

// storable: an answer the provider gave, that is final. 5xx, 408 and 429
// mean the request may not have been carried out; they are not stored, so
// that the caller's retry can go through.
func storable(status int) bool {
	return status >= 200 && status < 500 && status != fasthttp.StatusRequestTimeout && status != fasthttp.StatusTooManyRequests
}

func storeKey(route, consumer string, key []byte) string {
	return "idem:" + route + ":" + consumer + ":" + string(key)
}

// fingerprint identifies the request a key was first used with.
func fingerprint(ctx *fasthttp.RequestCtx, ex *proxy.Exchange) [32]byte {
	h := sha256.New()
	h.Write(ctx.Request.Header.Method())
	h.Write([]byte{0})
	h.Write(ex.RawURI())
	h.Write([]byte{0})
	h.Write(ctx.Request.Body())
	var out [32]byte
	h.Sum(out[:0])
	return out
}
