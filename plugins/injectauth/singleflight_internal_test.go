package injectauth

import (
	"net/http"
	"net/http/httptest"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/sluice-gw/sluice/proxy"
	"github.com/sluice-gw/sluice/proxy/config"
)

// TestTokenSourceSingleFlight: without the background refresher (not
// started), 100 concurrent first requests share one token fetch.
func TestTokenSourceSingleFlight(t *testing.T) {
	var calls atomic.Int64
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		calls.Add(1)
		time.Sleep(100 * time.Millisecond) // everyone arrives while the fetch is in flight
		w.Header().Set("Content-Type", "application/json")
		_, _ = w.Write([]byte(`{"access_token":"only-token","token_type":"bearer","expires_in":"120"}`))
	}))
	defer srv.Close()

	c := checkedOAuth2(t, srv.URL)
	b, _, release := proxy.NewBuild("r", "u")
	defer release()
	o, err := newOAuth2(c, b)
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	var bad atomic.Int64
	for range 100 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			tok, err := o.src.get(nil, 5*time.Second)
			if err != nil || string(tok.header) != "Bearer only-token" {
				bad.Add(1)
			}
		}()
	}
	wg.Wait()
	if bad.Load() != 0 || calls.Load() != 1 {
		t.Fatalf("%d failures, %d token calls; want 0 and 1", bad.Load(), calls.Load())
	}
	// expires_in as a string is read; the token lives about 120s.
	if left := time.Until(o.src.cur.Load().expires); left < 100*time.Second || left > 120*time.Second {
		t.Errorf("token expires in %v, want about 120s", left)
	}
	// A second route of the same upstream with the same settings shares the source.
	o2, _ := newOAuth2(c, b)
	if o2.src != o.src {
		t.Error("routes of one upstream do not share the token source")
	}
}

// TestShortLivedTokenIsUsed: a token that lives 1s is used for most of its
// second instead of being fetched again on every request.
func TestShortLivedTokenIsUsed(t *testing.T) { testTokenIsReused(t, "1") }

// An absurd expires_in is capped rather than overflowing into a negative
// lifetime (which would make every call fetch a new token).
func TestHugeExpiresInIsCapped(t *testing.T) { testTokenIsReused(t, "1e12") }

func testTokenIsReused(t *testing.T, expiresIn string) {
	var calls atomic.Int64
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		calls.Add(1)
		_, _ = w.Write([]byte(`{"access_token":"short","expires_in":` + expiresIn + `}`))
	}))
	defer srv.Close()
	c := checkedOAuth2(t, srv.URL)
	b, _, release := proxy.NewBuild("r", "u")
	defer release()
	o, err := newOAuth2(c, b)
	if err != nil {
		t.Fatal(err)
	}
	for range 20 {
		if _, err := o.src.get(nil, time.Second); err != nil {
			t.Fatal(err)
		}
	}
	if n := calls.Load(); n != 1 {
		t.Errorf("%d fetches for 20 quick calls with expires_in %s, want 1", n, expiresIn)
	}
}

// checkedOAuth2 returns the oauth2 credential of a block with tokenURL,
// decoded and checked as the gateway does, with its defaults.
func checkedOAuth2(t *testing.T, tokenURL string) *oauth2Credential {
	t.Helper()
	cfg := Factory.NewConfig().(*Config)
	block := map[string]any{"type": TypeOAuth2, "token_url": tokenURL, "client_id": "id", "client_secret": "secret"}
	if err := config.DecodeBlock(block, cfg); err != nil {
		t.Fatal(err)
	}
	if err := cfg.Validate(); err != nil {
		t.Fatal(err)
	}
	return cfg.main.cred.settle().(*oauth2Credential)
}
