package injectauth

import (
	"context"
	"crypto/sha256"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/sluice-gw/sluice/proxy"
	"github.com/sluice-gw/sluice/proxy/config"
	"github.com/valyala/fasthttp"
	"go.opentelemetry.io/otel/attribute"
)

const (
	// fetchTimeout bounds one call to a token endpoint.
	fetchTimeout = 10 * time.Second
	// expirySlack: a token this close to its expiry is not sent any more
	// (it could expire on the way); a fresh one is fetched first. Tokens
	// that live less than 4s get a quarter of their lifetime instead.
	expirySlack = time.Second
	// defaultExpiresIn is assumed when the token endpoint omits expires_in.
	defaultExpiresIn = time.Hour
	// maxExpiresIn caps the lifetime a token endpoint may announce.
	maxExpiresIn = 365 * 24 * time.Hour
	minBackoff   = time.Second
	maxBackoff   = time.Minute
)

// oauth2Credential is type oauth2_client_credentials (RFC 6749 §4.4): a
// token fetched from the provider's token endpoint, cached and refreshed.
type oauth2Credential struct {
	// TokenURL is the provider's token endpoint (http or https).
	TokenURL string `koanf:"token_url" json:"token_url,omitempty"`
	// ClientID and ClientSecret identify the gateway's OAuth2 app.
	ClientID     string        `koanf:"client_id" json:"client_id,omitempty"`
	ClientSecret config.Secret `koanf:"client_secret" json:"client_secret,omitempty"`
	// Scopes are requested space-separated in "scope"; none by default.
	Scopes []string `koanf:"scopes" json:"scopes,omitempty"`
	// Audience, when set, is sent as "audience" (Auth0 and others need it).
	Audience string `koanf:"audience" json:"audience,omitempty"`
	// AuthStyle is how the client authenticates to the token endpoint:
	// header (HTTP Basic, the default) or body (client_id and client_secret
	// form fields).
	AuthStyle string `koanf:"auth_style" json:"auth_style,omitempty"`
	// RefreshBefore is how long before its expiry a token is replaced, in the
	// background (with up to 10% jitter). Default 60s; for short-lived tokens
	// at most half their lifetime is used.
	RefreshBefore config.Duration `koanf:"refresh_before" json:"refresh_before,omitempty"`
}

// Defaults sets the defaults that depend on no other setting.
func (c *oauth2Credential) Defaults() {
	c.AuthStyle = defaultOAuthAuthStyle
	c.RefreshBefore = config.Duration(defaultRefreshBefore)
}

func (*oauth2Credential) kind() string { return TypeOAuth2 }

// settle fills what is written empty (auth_style: "", refresh_before: 0s)
// with its default.
func (c *oauth2Credential) settle() credential {
	if c.AuthStyle != "" && c.RefreshBefore != 0 {
		return c
	}
	s := *c
	if s.AuthStyle == "" {
		s.AuthStyle = defaultOAuthAuthStyle
	}
	if s.RefreshBefore == 0 {
		s.RefreshBefore = config.Duration(defaultRefreshBefore)
	}
	return &s
}

func (c *oauth2Credential) check(at func(string) string, p *config.Problems) {
	if c.TokenURL == "" {
		p.Add(at("token_url"), "is required")
	} else if err := config.CheckHTTPURL(c.TokenURL); err != nil {
		p.AddErr(at("token_url"), err)
	}
	if c.ClientID == "" {
		p.Add(at("client_id"), "is required")
	}
	if !c.ClientSecret.IsSet() {
		p.Add(at("client_secret"), "is required (is its ${VAR} or file: source empty?)")
	}
	if c.AuthStyle != "header" && c.AuthStyle != "body" {
		p.Addf(at("auth_style"), "unknown style %q: want header (HTTP Basic) or body", c.AuthStyle)
	}
	for i, s := range c.Scopes {
		if s == "" || strings.ContainsAny(s, " \t\r\n\"\\") {
			p.Addf(at(fmt.Sprintf("scopes[%d]", i)), "invalid scope %q", s)
		}
	}
}

func (c *oauth2Credential) newInjector(b *proxy.Build) (injector, error) { return newOAuth2(c, b) }

// token is one access token; immutable once published.
type token struct {
	header  []byte    // "Bearer ACCESS_TOKEN"
	expires time.Time // when the provider stops accepting it
	life    time.Duration
	stale   time.Time // from then on it is not sent: expires minus the slack
}

func newToken(header []byte, fetched time.Time, life time.Duration) *token {
	// The slack is a quarter of very short lifetimes, so that a token that
	// lives 1s is still used (rather than fetched again and again).
	slack := min(expirySlack, life/4)
	exp := fetched.Add(life)
	return &token{header: header, expires: exp, life: life, stale: exp.Add(-slack)}
}

func (t *token) usable(now time.Time) bool {
	return t != nil && now.Before(t.stale)
}

// tokenSource fetches and caches the token of one OAuth2 app for one
// upstream. It is shared by every route of the upstream with the same
// settings and survives reloads (proxy.Share); a background goroutine,
// running while at least one started plugin uses it, refreshes the token
// ahead of its expiry.
type tokenSource struct {
	upstream      string
	tokenURL      string
	form          string // request body
	basicAuth     string // Authorization header for auth_style header; "" for body
	refreshBefore time.Duration
	client        *http.Client
	log           *slog.Logger

	cur atomic.Pointer[token]

	mu       sync.Mutex
	fetching chan struct{} // closed when the fetch in flight ends; nil when none
	lastErr  *proxy.Error  // the latest fetch failure
	failures int           // consecutive failures
	retryAt  time.Time     // no fetch before this (back-off after failures)
	stop     chan struct{}
	done     chan struct{}
	cancel   context.CancelFunc // cancels the refresher's fetch in flight

	fetchOK, fetchFailed prometheus.Counter
	expiry               *expiryCollector // reports the source while it is started
}

type oauthMetrics struct {
	fetches *prometheus.CounterVec
	expiry  *expiryCollector
}

// expiryCollector exposes sluice_oauth_token_expiry_seconds{upstream}, the
// seconds until the current token of each upstream expires, computed at
// scrape time (the lowest when an upstream has several OAuth2 apps).
type expiryCollector struct {
	desc    *prometheus.Desc
	mu      sync.Mutex
	sources map[*tokenSource]bool
}

func (e *expiryCollector) Describe(ch chan<- *prometheus.Desc) { ch <- e.desc }

func (e *expiryCollector) set(s *tokenSource, started bool) {
	e.mu.Lock()
	defer e.mu.Unlock()
	if started {
		e.sources[s] = true
	} else {
		delete(e.sources, s)
	}
}

func (e *expiryCollector) Collect(ch chan<- prometheus.Metric) {
	e.mu.Lock()
	low := map[string]float64{}
	for s := range e.sources {
		t := s.cur.Load()
		if t == nil {
			continue
		}
		left := time.Until(t.expires).Seconds()
		if old, ok := low[s.upstream]; !ok || left < old {
			low[s.upstream] = left
		}
	}
	e.mu.Unlock()
	for up, v := range low {
		ch <- prometheus.MustNewConstMetric(e.desc, prometheus.GaugeValue, v, up)
	}
}

func sharedOAuthMetrics(b *proxy.Build) *oauthMetrics {
	return proxy.Share(b, struct{}{}, func() *oauthMetrics {
		m := &oauthMetrics{
			fetches: prometheus.NewCounterVec(prometheus.CounterOpts{
				Name: "sluice_oauth_token_fetches_total",
				Help: "Calls to OAuth2 token endpoints, by upstream and result (success, failure).",
			}, []string{"upstream", "result"}),
			expiry: &expiryCollector{
				desc: prometheus.NewDesc("sluice_oauth_token_expiry_seconds",
					"Seconds until the current OAuth2 access token of the upstream expires (negative once expired).",
					[]string{"upstream"}, nil),
				sources: map[*tokenSource]bool{},
			},
		}
		b.Registerer.MustRegister(m.fetches, m.expiry)
		return m
	})
}

// oauth2 attaches the shared token of its source.
type oauth2 struct {
	src *tokenSource
}

// sourceKey names a token source: routes of one upstream with the same
// client settings share one token (and one refresher). The secret enters as
// a digest only.
type sourceKey struct {
	upstream, tokenURL, clientID, scopes, audience, authStyle string
	refreshBefore                                             config.Duration
	secret                                                    [8]byte
}

func newOAuth2(c *oauth2Credential, b *proxy.Build) (*oauth2, error) {
	m := sharedOAuthMetrics(b)
	secretSum := sha256.Sum256([]byte(c.ClientSecret.Reveal()))
	key := sourceKey{upstream: b.Upstream.Name, tokenURL: c.TokenURL, clientID: c.ClientID,
		scopes: strings.Join(c.Scopes, " "), audience: c.Audience, authStyle: c.AuthStyle, refreshBefore: c.RefreshBefore}
	copy(key.secret[:], secretSum[:])
	src := proxy.Share(b, key, func() *tokenSource {
		form := url.Values{"grant_type": {"client_credentials"}}
		if len(c.Scopes) > 0 {
			form.Set("scope", strings.Join(c.Scopes, " "))
		}
		if c.Audience != "" {
			form.Set("audience", c.Audience)
		}
		s := &tokenSource{
			upstream:      b.Upstream.Name,
			tokenURL:      c.TokenURL,
			refreshBefore: c.RefreshBefore.D(),
			log:           b.Logger,
			// No keep-alive: a token is fetched once an hour or so, and no
			// idle connection (nor its goroutines) outlives a fetch.
			client:      &http.Client{Timeout: fetchTimeout, Transport: &http.Transport{DisableKeepAlives: true, Proxy: http.ProxyFromEnvironment}},
			fetchOK:     m.fetches.WithLabelValues(b.Upstream.Name, "success"),
			fetchFailed: m.fetches.WithLabelValues(b.Upstream.Name, "failure"),
		}
		if c.AuthStyle == "body" {
			form.Set("client_id", c.ClientID)
			form.Set("client_secret", c.ClientSecret.Reveal())
		} else {
			// RFC 6749 §2.3.1: both parts form-encoded before Basic encoding.
			s.basicAuth = "Basic " + basic(url.QueryEscape(c.ClientID), url.QueryEscape(c.ClientSecret.Reveal()))
		}
		s.form = form.Encode()
		s.expiry = m.expiry
		return s
	})
	return &oauth2{src: src}, nil
}

func (o *oauth2) inject(ctx *fasthttp.RequestCtx, ex *proxy.Exchange, next proxy.Handler) error {
	t := o.src.cur.Load()
	if !t.usable(time.Now()) {
		var err error
		start := time.Now()
		t, err = o.src.get(nil, ex.Remaining())
		traceFetch(ex, "expired", start, err)
		if err != nil {
			return err
		}
	}
	h := &ctx.Request.Header
	hdrAuthorization.Del(h)
	hdrAuthorization.Set(h, t.header)
	if err := next.Handle(ctx, ex); err != nil || ctx.Response.StatusCode() != fasthttp.StatusUnauthorized || !ex.FromUpstream {
		return err
	}
	// The provider refused the token (revoked, rotated early): get a new one,
	// once, and send the request once more. If no new token can be had, the
	// provider's 401 stands.
	start := time.Now()
	fresh, err := o.src.get(t, ex.Remaining())
	traceFetch(ex, "refused", start, err)
	if err != nil || fresh == t || ex.Remaining() <= 0 {
		return nil
	}
	proxy.ResetResponse(ctx, ex)
	hdrAuthorization.Set(h, fresh.header)
	return next.Handle(ctx, ex)
}

// traceFetch records getting a token (fetched, or shared with a
// concurrent fetch) on the request's span: sampled requests only.
func traceFetch(ex *proxy.Exchange, reason string, start time.Time, err error) {
	if !ex.Traced() {
		return
	}
	result := "ok"
	if err != nil {
		result = "error"
	}
	ex.TraceEvent("inject_auth.token_fetch", attribute.String("inject_auth.reason", reason),
		attribute.String("inject_auth.result", result), attribute.Float64("inject_auth.wait_seconds", time.Since(start).Seconds()))
}

// get returns a usable token, fetching one if needed. stale, when not nil, is
// a token the provider refused: a token other than it is wanted. Concurrent
// callers share one fetch. It waits at most wait.
func (s *tokenSource) get(stale *token, wait time.Duration) (*token, error) {
	for {
		s.mu.Lock()
		t := s.cur.Load()
		if t.usable(time.Now()) && (stale == nil || t != stale) {
			s.mu.Unlock()
			return t, nil
		}
		ch := s.fetching
		if ch == nil {
			if wait := time.Until(s.retryAt); wait > 0 && s.lastErr != nil {
				e := *s.lastErr
				e.Detail += fmt.Sprintf("; the gateway waits %s before asking the token endpoint again", wait.Round(time.Second))
				e.RetryAfter = wait
				s.mu.Unlock()
				return nil, &e
			}
			ch = make(chan struct{})
			s.fetching = ch
			s.mu.Unlock()
			s.fetch(context.Background(), ch) // this caller fetches for everyone waiting
			s.mu.Lock()
			t, lastErr := s.cur.Load(), s.lastErr
			s.mu.Unlock()
			if lastErr != nil {
				return nil, lastErr
			}
			return t, nil
		}
		s.mu.Unlock()
		timer := time.NewTimer(min(wait, fetchTimeout+time.Second))
		select {
		case <-ch:
			timer.Stop()
			stale = nil
			// Take whatever the fetch produced (a token, or its error).
			s.mu.Lock()
			t, lastErr := s.cur.Load(), s.lastErr
			s.mu.Unlock()
			if t.usable(time.Now()) {
				return t, nil
			}
			if lastErr != nil {
				return nil, lastErr
			}
		case <-timer.C:
			return nil, proxy.Errorf(proxy.CodeUpstreamTimeout, "waiting for an access token for upstream %s took too long", s.upstream)
		}
	}
}

// fetch calls the token endpoint once and publishes the result; ch is
// closed at the end.
func (s *tokenSource) fetch(ctx context.Context, ch chan struct{}) {
	t, err := s.call(ctx)
	s.mu.Lock()
	defer s.mu.Unlock()
	if err != nil && ctx.Err() != nil {
		// Stopped (shutdown or reload): not the endpoint's failure.
	} else if err != nil {
		s.fetchFailed.Inc()
		s.failures++
		backoff := min(minBackoff<<min(s.failures-1, 10), maxBackoff)
		backoff += time.Duration(rand.Int64N(int64(backoff/4) + 1))
		s.retryAt = time.Now().Add(backoff)
		s.lastErr = proxy.Errorf(proxy.CodeUpstreamAuthFailed,
			"could not obtain an access token for upstream %s: %s", s.upstream, err.Error())
		if s.log != nil {
			s.log.Warn("oauth2 token fetch failed", "upstream", s.upstream, "token_url", s.tokenURL,
				"error", err.Error(), "failures", s.failures, "retry_in", backoff.Round(time.Millisecond).String())
		}
	} else {
		s.fetchOK.Inc()
		s.failures, s.retryAt, s.lastErr = 0, time.Time{}, nil
		s.cur.Store(t)
	}
	s.fetching = nil
	close(ch)
}

// tokenResponse is the part of RFC 6749 §5.1 used here.
type tokenResponse struct {
	AccessToken string          `json:"access_token"`
	TokenType   string          `json:"token_type"`
	ExpiresIn   json.RawMessage `json:"expires_in"`
	Error       string          `json:"error"`
}

// call asks the token endpoint for a token. Its errors say what went wrong
// in words that carry no secret (never the response body).
func (s *tokenSource) call(ctx context.Context) (*token, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, s.tokenURL, strings.NewReader(s.form))
	if err != nil {
		return nil, errors.New("the token request cannot be built")
	}
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	req.Header.Set("Accept", "application/json")
	if s.basicAuth != "" {
		req.Header.Set("Authorization", s.basicAuth)
	}
	start := time.Now()
	resp, err := s.client.Do(req)
	if err != nil {
		var ue *url.Error
		if errors.As(err, &ue) && ue.Timeout() {
			return nil, errors.New("the token endpoint did not answer in time")
		}
		return nil, errors.New("the token endpoint cannot be reached")
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if err != nil {
		return nil, errors.New("the token endpoint's answer could not be read")
	}
	var tr tokenResponse
	jsonErr := json.Unmarshal(body, &tr)
	if resp.StatusCode != http.StatusOK {
		msg := fmt.Sprintf("the token endpoint answered %d", resp.StatusCode)
		if jsonErr == nil && isOAuthErrorCode(tr.Error) {
			msg += " " + tr.Error
		}
		return nil, errors.New(msg)
	}
	switch {
	case jsonErr != nil:
		return nil, errors.New("the token endpoint's answer is not JSON")
	case tr.AccessToken == "":
		return nil, errors.New("the token endpoint's answer has no access_token")
	case tr.TokenType != "" && !strings.EqualFold(tr.TokenType, "bearer"):
		return nil, fmt.Errorf("the token endpoint issued a %q token; only bearer tokens are supported", tokenTypeShown(tr.TokenType))
	case strings.ContainsAny(tr.AccessToken, "\r\n\x00"):
		return nil, errors.New("the token endpoint issued a token with line breaks")
	}
	life := defaultExpiresIn
	if len(tr.ExpiresIn) > 0 && string(tr.ExpiresIn) != "null" {
		var secs float64
		raw := strings.Trim(string(tr.ExpiresIn), `"`) // some providers send a string
		if _, err := fmt.Sscanf(raw, "%g", &secs); err != nil || secs <= 0 {
			return nil, errors.New("the token endpoint's expires_in is not a positive number")
		}
		// A year at most: a larger value would overflow time.Duration into
		// a negative lifetime (and a fetch loop).
		life = time.Duration(min(secs, maxExpiresIn.Seconds()) * float64(time.Second))
	}
	return newToken([]byte("Bearer "+tr.AccessToken), start, life), nil
}

// isOAuthErrorCode accepts the short RFC 6749 §5.2 error codes
// ("invalid_client"), which are safe to show; anything else is not echoed.
func isOAuthErrorCode(s string) bool {
	if s == "" || len(s) > 40 {
		return false
	}
	for _, c := range s {
		if c != '_' && (c < 'a' || c > 'z') {
			return false
		}
	}
	return true
}

func tokenTypeShown(s string) string {
	if len(s) > 20 {
		return s[:20]
	}
	return s
}

// Start makes the source fetch a token at once and refresh it in the
// background. The gateway calls it once, when the first config that uses the
// source starts serving (see proxy.Share).
func (s *tokenSource) Start() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.expiry.set(s, true)
	var ctx context.Context
	ctx, s.cancel = context.WithCancel(context.Background())
	s.stop, s.done = make(chan struct{}), make(chan struct{})
	go s.refresher(ctx, s.stop, s.done)
	return nil
}

// Close stops the refresher once the last config that used the source is
// retired.
func (s *tokenSource) Close() error {
	s.mu.Lock()
	stop, done, cancel := s.stop, s.done, s.cancel
	s.stop, s.done, s.cancel = nil, nil, nil
	s.expiry.set(s, false) // a source no config uses (settings changed by a reload) reports nothing
	s.mu.Unlock()
	close(stop)
	cancel() // a fetch in flight ends now rather than at its timeout
	<-done
	return nil
}

// refresher fetches a token at once, then again refreshBefore (at most half
// the token's lifetime) ahead of each expiry, minus up to 10% jitter so that
// several gateways do not call the endpoint in the same second. After a
// failure it waits out the back-off.
func (s *tokenSource) refresher(ctx context.Context, stop, done chan struct{}) {
	defer close(done)
	timer := time.NewTimer(0)
	defer timer.Stop()
	for {
		select {
		case <-stop:
			return
		case <-timer.C:
		}
		s.refresh(ctx)
		timer.Reset(s.nextRefresh())
	}
}

// refresh replaces the token unless a fresh one is already there.
func (s *tokenSource) refresh(ctx context.Context) {
	s.mu.Lock()
	if s.fetching != nil || time.Now().Before(s.retryAt) {
		s.mu.Unlock()
		return
	}
	if t := s.cur.Load(); t != nil && time.Now().Before(s.refreshAt(t)) {
		s.mu.Unlock()
		return
	}
	ch := make(chan struct{})
	s.fetching = ch
	s.mu.Unlock()
	s.fetch(ctx, ch)
}

func (s *tokenSource) refreshAt(t *token) time.Time {
	ahead := min(s.refreshBefore, t.life/2)
	return t.expires.Add(-ahead)
}

func (s *tokenSource) nextRefresh() time.Duration {
	s.mu.Lock()
	defer s.mu.Unlock()
	now := time.Now()
	if s.lastErr != nil && now.Before(s.retryAt) {
		return s.retryAt.Sub(now) + time.Millisecond // backing off
	}
	t := s.cur.Load()
	if t == nil {
		return minBackoff // a request's fetch was in flight; look again
	}
	wait := s.refreshAt(t).Sub(now)
	if jitter := int64(min(s.refreshBefore, t.life/2) / 10); jitter > 0 {
		wait -= time.Duration(rand.Int64N(jitter))
	}
	// Not below 50ms: a refresh that is due while a request's fetch is in
	// flight is looked at again shortly, without spinning.
	return max(wait, 50*time.Millisecond)
}
