package injectauth_test

import (
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/sluice-gw/sluice/internal/testkit"
	"github.com/valyala/fasthttp"
)

// tokenEndpoint is a real OAuth2 token endpoint on loopback that counts its
// calls and issues tokens "tok-1", "tok-2"...
type tokenEndpoint struct {
	*httptest.Server
	calls     atomic.Int64
	expiresIn atomic.Int64 // seconds
	fail      atomic.Bool  // answer 500
	delay     time.Duration

	mu     sync.Mutex
	issued map[string]time.Time // token -> when it expires
	forms  []string             // request bodies (form) and Authorization, for checks
}

func newTokenEndpoint(t *testing.T, delay time.Duration) *tokenEndpoint {
	te := &tokenEndpoint{issued: map[string]time.Time{}, delay: delay}
	te.expiresIn.Store(3600)
	te.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		n := te.calls.Add(1)
		_ = r.ParseForm()
		te.mu.Lock()
		te.forms = append(te.forms, r.PostForm.Encode()+" | "+r.Header.Get("Authorization"))
		te.mu.Unlock()
		time.Sleep(te.delay)
		if te.fail.Load() || r.PostForm.Get("grant_type") != "client_credentials" {
			w.Header().Set("Content-Type", "application/json")
			w.WriteHeader(500)
			_, _ = w.Write([]byte(`{"error":"server_error","error_description":"echoes ` + r.PostForm.Get("client_secret") + `"}`))
			return
		}
		tok := fmt.Sprintf("tok-%d", n)
		exp := te.expiresIn.Load()
		te.mu.Lock()
		te.issued[tok] = time.Now().Add(time.Duration(exp) * time.Second)
		te.mu.Unlock()
		w.Header().Set("Content-Type", "application/json")
		_ = json.NewEncoder(w).Encode(map[string]any{"access_token": tok, "token_type": "Bearer", "expires_in": exp})
	}))
	t.Cleanup(te.Close)
	return te
}

func (te *tokenEndpoint) expiry(tok string) (time.Time, bool) {
	te.mu.Lock()
	defer te.mu.Unlock()
	e, ok := te.issued[tok]
	return e, ok
}

func oauthYAML(upstream, tokenURL, extra string) string {
	return consumers + `
upstreams:
  source:
    url: "` + upstream + `"
    plugins:
      authenticate: {}
      inject_auth:
        type: oauth2_client_credentials
        token_url: "` + tokenURL + `"
        client_id: sluice-app
        client_secret: "oauth-client-secret-value"
        scopes: [repo.read, repo.write]
        audience: "https://api.source.test"
` + extra + `
routes:
  repos: {path: "/repos/{p:*}", upstream: source}
  orgs: {path: "/orgs/{p:*}", upstream: source}
`
}

func TestOAuth2OneFetchForConcurrentRequests(t *testing.T) {
	te := newTokenEndpoint(t, 50*time.Millisecond)
	up := testkit.NewUpstream(t, nil)
	gw := testkit.StartGateway(t, oauthYAML(up.URL, te.URL+"/oauth/token", ""))

	var wg sync.WaitGroup
	var bad atomic.Int64
	for i := range 100 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			path := "/repos/x"
			if i%2 == 1 {
				path = "/orgs/y" // another route of the same upstream shares the token
			}
			resp, err := testkit.TryDo("GET", gw.URL+path, "", "X-Api-Key", billingKey)
			if err != nil || resp.Status != 200 {
				bad.Add(1)
			}
		}()
	}
	wg.Wait()
	if bad.Load() != 0 {
		t.Fatalf("%d of 100 calls failed", bad.Load())
	}
	if n := te.calls.Load(); n != 1 {
		t.Fatalf("token endpoint called %d times for 100 concurrent calls, want 1", n)
	}
	for _, r := range up.Requests() {
		if got := r.Header.Get("Authorization"); got != "Bearer tok-1" {
			t.Fatalf("upstream got Authorization %q", got)
		}
	}
	// RFC 6749 §4.4.2 request, client authenticated by HTTP Basic (default style).
	te.mu.Lock()
	form := te.forms[0]
	te.mu.Unlock()
	for _, want := range []string{"grant_type=client_credentials", "scope=repo.read+repo.write", "audience=https%3A%2F%2Fapi.source.test", "| Basic "} {
		if !strings.Contains(form, want) {
			t.Errorf("token request %q lacks %q", form, want)
		}
	}
	if strings.Contains(form, "client_secret=") {
		t.Error("auth_style header sent the secret in the body")
	}

	// A reload with the same settings keeps the token.
	if err := gw.Reload(); err != nil {
		t.Fatal(err)
	}
	testkit.Do(t, "GET", gw.URL+"/repos/x", "", "X-Api-Key", billingKey)
	if n := te.calls.Load(); n != 1 {
		t.Errorf("after a reload with unchanged settings: %d token calls, want 1", n)
	}

	m := gw.Metrics(t)
	if v, _ := m.Value("sluice_oauth_token_fetches_total", "upstream", "source", "result", "success"); v != 1 {
		t.Errorf("fetches success = %v, want 1", v)
	}
	if v, ok := m.Value("sluice_oauth_token_expiry_seconds", "upstream", "source"); !ok || v < 3000 || v > 3600 {
		t.Errorf("sluice_oauth_token_expiry_seconds = %v (found %v), want about 3600", v, ok)
	}
}

func TestOAuth2AuthStyleBody(t *testing.T) {
	te := newTokenEndpoint(t, 0)
	up := testkit.NewUpstream(t, nil)
	gw := testkit.StartGateway(t, oauthYAML(up.URL, te.URL, "        auth_style: body\n"))
	if r := testkit.Do(t, "GET", gw.URL+"/repos/x", "", "X-Api-Key", billingKey); r.Status != 200 {
		t.Fatalf("status %d: %s", r.Status, r.Body)
	}
	te.mu.Lock()
	form := te.forms[0]
	te.mu.Unlock()
	if !strings.Contains(form, "client_id=sluice-app") || !strings.Contains(form, "client_secret=oauth-client-secret-value") || !strings.HasSuffix(form, "| ") {
		t.Errorf("token request %q: want client_id and client_secret in the body, no Authorization", form)
	}
}

func TestOAuth2RefreshesAheadOfExpiry(t *testing.T) {
	te := newTokenEndpoint(t, 0)
	te.expiresIn.Store(2)
	type seen struct {
		tok string
		at  time.Time
	}
	var mu sync.Mutex
	var got []seen
	up := testkit.NewUpstream(t, func(ctx *fasthttp.RequestCtx) {
		mu.Lock()
		got = append(got, seen{strings.TrimPrefix(string(ctx.Request.Header.Peek("Authorization")), "Bearer "), time.Now()})
		mu.Unlock()
	})
	gw := testkit.StartGateway(t, oauthYAML(up.URL, te.URL, "        refresh_before: 1s\n"))

	// Call steadily for 4.5s: tokens live 2s, so several are needed, and the
	// background refresher must have them ready before the old ones expire.
	end := time.Now().Add(4500 * time.Millisecond)
	for time.Now().Before(end) {
		if r := testkit.Do(t, "GET", gw.URL+"/repos/x", "", "X-Api-Key", billingKey); r.Status != 200 {
			t.Fatalf("status %d: %s", r.Status, r.Body)
		}
		time.Sleep(20 * time.Millisecond)
	}
	mu.Lock()
	defer mu.Unlock()
	tokens := map[string]bool{}
	for _, s := range got {
		exp, ok := te.expiry(s.tok)
		if !ok {
			t.Fatalf("upstream got unknown token %q", s.tok)
		}
		if !s.at.Before(exp) {
			t.Fatalf("token %s sent at %v, after its expiry %v", s.tok, s.at, exp)
		}
		tokens[s.tok] = true
	}
	// About one fetch per second of lifetime left after refresh_before; the
	// bounds are generous: at least a refresh happened, and not a storm.
	t.Logf("%d token fetches, %d distinct tokens used, %d calls", te.calls.Load(), len(tokens), len(got))
	if n := te.calls.Load(); n < 3 || n > 12 {
		t.Errorf("token endpoint called %d times in 4.5s with 2s tokens refreshed 1s ahead", n)
	}
	if len(tokens) < 3 {
		t.Errorf("upstream saw %d distinct tokens, want the refreshed ones used", len(tokens))
	}
}

func TestOAuth2RefreshOnceOn401(t *testing.T) {
	te := newTokenEndpoint(t, 0)
	var revoked sync.Map // tokens the provider refuses
	up := testkit.NewUpstream(t, func(ctx *fasthttp.RequestCtx) {
		tok := strings.TrimPrefix(string(ctx.Request.Header.Peek("Authorization")), "Bearer ")
		if _, bad := revoked.Load(tok); bad || string(ctx.Path()) == "/repos/always-401" {
			ctx.SetStatusCode(401)
			ctx.SetBodyString(`{"message":"Bad credentials"}`)
			return
		}
		ctx.SetBodyString(`{"ok":true}`)
	})
	gw := testkit.StartGateway(t, oauthYAML(up.URL, te.URL, ""))
	if r := testkit.Do(t, "GET", gw.URL+"/repos/x", "", "X-Api-Key", billingKey); r.Status != 200 {
		t.Fatalf("status %d", r.Status)
	}
	calls, count := te.calls.Load(), up.Count()

	// The provider revokes tok-1: the next call is refused once, the gateway
	// fetches one new token and sends the request once more.
	revoked.Store("tok-1", true)
	r := testkit.Do(t, "POST", gw.URL+"/repos/x", `{"name":"new"}`, "X-Api-Key", billingKey)
	if r.Status != 200 {
		t.Fatalf("after revocation: status %d: %s", r.Status, r.Body)
	}
	if n := te.calls.Load() - calls; n != 1 {
		t.Errorf("%d token fetches after a 401, want 1", n)
	}
	reqs := up.Requests()[count:]
	if len(reqs) != 2 || reqs[0].Header.Get("Authorization") != "Bearer tok-1" || reqs[1].Header.Get("Authorization") != "Bearer tok-2" ||
		string(reqs[1].Body) != `{"name":"new"}` {
		t.Errorf("upstream saw %d requests after the revocation (want the refused one, then the retry with tok-2 and the body)", len(reqs))
	}

	// A provider that refuses every token: one refresh, one retry, then its 401.
	calls, count = te.calls.Load(), up.Count()
	r = testkit.Do(t, "GET", gw.URL+"/repos/always-401", "", "X-Api-Key", billingKey)
	if r.Status != 401 {
		t.Errorf("status %d, want the provider's 401", r.Status)
	}
	if n, m := te.calls.Load()-calls, up.Count()-count; n != 1 || m != 2 {
		t.Errorf("always 401: %d token fetches and %d upstream calls, want 1 and 2", n, m)
	}
}

func TestOAuth2TokenEndpointDown(t *testing.T) {
	te := newTokenEndpoint(t, 0)
	te.fail.Store(true)
	up := testkit.NewUpstream(t, nil)
	gw := testkit.StartGateway(t, oauthYAML(up.URL, te.URL, ""))

	// Two seconds of steady calls: each gets 502 upstream_auth_failed, and
	// the endpoint is not hammered (back-off from 1s, doubling).
	end := time.Now().Add(2 * time.Second)
	n := 0
	for time.Now().Before(end) {
		r := testkit.Do(t, "GET", gw.URL+"/repos/x", "", "X-Api-Key", billingKey)
		var p struct {
			Code      string
			Detail    string
			Retryable bool
		}
		if err := json.Unmarshal(r.Body, &p); err != nil || r.Status != 502 || p.Code != "upstream_auth_failed" || !p.Retryable {
			t.Fatalf("status %d: %s", r.Status, r.Body)
		}
		if !strings.Contains(p.Detail, "token endpoint answered 500 server_error") {
			t.Fatalf("detail %q does not say what failed", p.Detail)
		}
		n++
		time.Sleep(10 * time.Millisecond)
	}
	t.Logf("%d token fetches during %d failing calls", te.calls.Load(), n)
	if calls := te.calls.Load(); calls < 1 || calls > 4 {
		t.Errorf("token endpoint called %d times during %d failing requests in 2s, want a few (back-off)", calls, n)
	}
	if up.Count() != 0 {
		t.Errorf("%d calls reached the provider without a token", up.Count())
	}
	m := gw.Metrics(t)
	if v, _ := m.Value("sluice_oauth_token_fetches_total", "upstream", "source", "result", "failure"); v < 1 {
		t.Errorf("fetches failure = %v", v)
	}

	// An unreachable endpoint says so.
	gw2 := testkit.StartGateway(t, oauthYAML(up.URL, "http://"+testkit.ClosedAddr(t)+"/token", ""))
	r := testkit.Do(t, "GET", gw2.URL+"/repos/x", "", "X-Api-Key", billingKey)
	if r.Status != 502 || !strings.Contains(string(r.Body), "upstream_auth_failed") || !strings.Contains(string(r.Body), "token endpoint cannot be reached") {
		t.Errorf("closed token endpoint: %d %s", r.Status, r.Body)
	}

	// When the endpoint recovers, calls go through after the back-off.
	te.fail.Store(false)
	testkit.Eventually(t, 10*time.Second, func() bool {
		r, err := testkit.TryDo("GET", gw.URL+"/repos/x", "", "X-Api-Key", billingKey)
		return err == nil && r.Status == 200
	}, "calls did not recover with the token endpoint")
}

// The expiry gauge follows the token source in use: after a reload that
// changes the app's settings, the old source's token (expired meanwhile)
// no longer drags sluice_oauth_token_expiry_seconds below zero.
func TestOAuth2ExpiryGaugeFollowsReload(t *testing.T) {
	t.Parallel()
	te := newTokenEndpoint(t, 0)
	te.expiresIn.Store(1)
	up := testkit.NewUpstream(t, nil)
	gw := testkit.StartGateway(t, oauthYAML(up.URL, te.URL, ""))
	testkit.Do(t, "GET", gw.URL+"/repos/x", "", "X-Api-Key", billingKey)

	te.expiresIn.Store(3600)
	testkit.WriteFile(t, gw.File, strings.Replace(oauthYAML(up.URL, te.URL, ""), "oauth-client-secret-value", "rotated-client-secret", 1))
	if err := gw.Reload(); err != nil {
		t.Fatal(err)
	}
	testkit.Do(t, "GET", gw.URL+"/repos/x", "", "X-Api-Key", billingKey)
	time.Sleep(1500 * time.Millisecond) // the first token has expired, the old config is retired
	if v, ok := gw.Metrics(t).Value("sluice_oauth_token_expiry_seconds", "upstream", "source"); !ok || v < 3000 {
		t.Errorf("sluice_oauth_token_expiry_seconds = %v (found %v) after the reload, want the new token's ~3600", v, ok)
	}
}
