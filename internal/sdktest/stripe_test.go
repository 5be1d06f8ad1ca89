package sdktest

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/sluice-gw/sluice/internal/testkit"
	"github.com/stripe/stripe-go/v85"
	"github.com/valyala/fasthttp"
)

func TestMain(m *testing.M) { testkit.RunWithoutLeaks(m) }

var (
	mockOnce sync.Once
	mockBin  string
	mockErr  error
)

// stripeMock builds stripe-mock (a go tool of this module, see go.mod) once
// per test binary and starts it on a free loopback port. Without the Go
// toolchain's module cache able to build it, the test fails.
func stripeMock(t *testing.T) string {
	t.Helper()
	mockOnce.Do(func() {
		dir, err := os.MkdirTemp("", "sluice-stripe-mock-")
		if err != nil {
			mockErr = err
			return
		}
		mockBin = filepath.Join(dir, "stripe-mock")
		out, err := exec.Command("go", "build", "-o", mockBin, "github.com/stripe/stripe-mock").CombinedOutput()
		if err != nil {
			mockErr = fmt.Errorf("go build github.com/stripe/stripe-mock: %v\n%s", err, out)
		}
	})
	if mockErr != nil {
		t.Fatal(mockErr)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	cmd := exec.Command(mockBin, "-http-addr", addr)
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = cmd.Process.Kill(); _ = cmd.Wait() })
	testkit.Eventually(t, 10*time.Second, func() bool {
		c, err := net.Dial("tcp", addr)
		if err == nil {
			c.Close()
		}
		return err == nil
	}, "stripe-mock listens")
	return "http://" + addr
}

// counting counts the requests an SDK sends (its retries included).
type counting struct{ n atomic.Int64 }

func (c *counting) RoundTrip(r *http.Request) (*http.Response, error) {
	c.n.Add(1)
	return http.DefaultTransport.RoundTrip(r)
}

// client is a stripe-go client whose base URL is the gateway; key is the
// caller's Sluice consumer key (Sluice swaps it for the Stripe key).
func client(base, key string) (*stripe.Client, *counting) {
	ct := &counting{}
	hc := &http.Client{Transport: ct, Timeout: 20 * time.Second}
	backend := stripe.GetBackendWithConfig(stripe.APIBackend, &stripe.BackendConfig{
		URL: stripe.String(base), HTTPClient: hc, EnableTelemetry: stripe.Bool(false),
		LeveledLogger: &stripe.LeveledLogger{Level: stripe.LevelNull},
	})
	return stripe.NewClient(key, stripe.WithBackends(&stripe.Backends{API: backend, Connect: backend, Uploads: backend, MeterEvents: backend})), ct
}

const consumerKey = "billing-consumer-key-0001"

// gatewayYAML is the shipped example's shape: authenticate and
// normalize_errors on every route; the upstream with or without the profile.
func gatewayYAML(upstreamURL, profile, extraTop, routePlugins string) string {
	p := ""
	if profile != "" {
		p = "profile: " + profile
	}
	return fmt.Sprintf(`
log: {access_log: false}
consumers: {billing: {keys: [%q]}}
%s
plugins:
  authenticate: {}
  normalize_errors: {}
upstreams:
  stripe:
    url: %q
    timeout: 2s
    %s
    plugins:
      inject_auth: {type: bearer, token: "sk_test_123"}
routes:
  stripe:
    path: "/{p:*}"
    upstream: stripe
    plugins: %s
`, consumerKey, extraTop, upstreamURL, p, routePlugins)
}

type outcome struct {
	typed  bool
	status int
	typ    stripe.ErrorType
	code   stripe.ErrorCode
	msg    string
	sends  int64
	took   time.Duration
}

func (o outcome) String() string {
	if !o.typed {
		return fmt.Sprintf("untyped error, %d sends, %v", o.sends, o.took.Round(10*time.Millisecond))
	}
	return fmt.Sprintf("*stripe.Error %d %s/%s, %d sends, %v", o.status, o.typ, o.code, o.sends, o.took.Round(10*time.Millisecond))
}

func call(t *testing.T, c *stripe.Client, ct *counting, params *stripe.PaymentIntentCreateParams) outcome {
	t.Helper()
	before := ct.n.Load()
	start := time.Now()
	_, err := c.V1PaymentIntents.Create(context.Background(), params)
	o := outcome{sends: ct.n.Load() - before, took: time.Since(start)}
	if err == nil {
		t.Fatalf("call succeeded, want an error")
	}
	var se *stripe.Error
	if errors.As(err, &se) {
		o.typed, o.status, o.typ, o.code, o.msg = true, se.HTTPStatusCode, se.Type, se.Code, se.Msg
	}
	return o
}

func missingAmount() *stripe.PaymentIntentCreateParams {
	return &stripe.PaymentIntentCreateParams{Currency: stripe.String("usd")}
}

func valid() *stripe.PaymentIntentCreateParams {
	return &stripe.PaymentIntentCreateParams{Amount: stripe.Int64(100), Currency: stripe.String("usd")}
}

// The SDK's errors through Sluice: the provider's 400, Sluice's 401, 429
// and 503, with the Stripe profile and without it.
func TestStripeSDKErrors(t *testing.T) {
	mock := stripeMock(t)
	limited := `{rate_limit: {rate: 1, per: 1m, key: consumer}}`
	table := map[string]map[string]outcome{}
	for _, profile := range []string{"stripe", ""} {
		name := profile
		if name == "" {
			name = "none"
		}
		table[name] = map[string]outcome{}
		gw := testkit.StartGateway(t, gatewayYAML(mock, profile, "", limited))
		sc, ct := client(gw.URL, consumerKey)
		table[name]["provider 400"] = call(t, sc, ct, missingAmount())
		table[name]["sluice 429 rate_limited"] = call(t, sc, ct, valid())
		bad, bct := client(gw.URL, "not-a-consumer-key-000")
		table[name]["sluice 401 unauthorized"] = call(t, bad, bct, valid())

		// A provider that is down: the breaker opens after one failure.
		down := testkit.StartGateway(t, gatewayYAML("http://"+testkit.ClosedAddr(t), profile, "",
			`{circuit_breaker: {consecutive_failures: 1, open_for: 1m}}`))
		dc, dct := client(down.URL, consumerKey)
		table[name]["sluice 502 upstream_unreachable"] = call(t, dc, dct, valid())
		table[name]["sluice 503 circuit_open"] = call(t, dc, dct, valid())
	}
	for _, row := range []string{"provider 400", "sluice 401 unauthorized", "sluice 429 rate_limited", "sluice 502 upstream_unreachable", "sluice 503 circuit_open"} {
		t.Logf("%-32s | profile stripe: %-60s | no profile: %s", row, table["stripe"][row], table["none"][row])
	}

	want := map[string]struct {
		status int
		typ    stripe.ErrorType
		code   stripe.ErrorCode
	}{
		"provider 400":                    {400, stripe.ErrorTypeInvalidRequest, ""}, // stripe-mock sends no code
		"sluice 401 unauthorized":         {401, stripe.ErrorTypeInvalidRequest, "unauthorized"},
		"sluice 429 rate_limited":         {429, stripe.ErrorTypeInvalidRequest, stripe.ErrorCodeRateLimit},
		"sluice 502 upstream_unreachable": {502, stripe.ErrorTypeAPI, "upstream_unreachable"},
		"sluice 503 circuit_open":         {503, stripe.ErrorTypeAPI, "circuit_open"},
	}
	if m := table["stripe"]["provider 400"].msg; !strings.Contains(m, "amount") {
		t.Errorf("provider 400: message %q does not name the missing amount (the provider's own message)", m)
	}
	for row, w := range want {
		got := table["stripe"][row]
		if !got.typed || got.status != w.status || got.typ != w.typ || got.code != w.code {
			t.Errorf("profile stripe, %s: %s; want *stripe.Error %d %s/%s", row, got, w.status, w.typ, w.code)
		}
		if got.msg == "" {
			t.Errorf("profile stripe, %s: no message", row)
		}
		if got.sends != 1 {
			t.Errorf("profile stripe, %s: the SDK sent %d requests, want 1 (a typed Stripe error is not re-sent)", row, got.sends)
		}
	}
	// Without the profile, the issue as reported: problem+json is not a
	// Stripe error, and the SDK re-sends what it cannot parse.
	for _, row := range []string{"provider 400", "sluice 401 unauthorized", "sluice 429 rate_limited"} {
		if got := table["none"][row]; got.typed || got.sends != 3 {
			t.Errorf("no profile, %s: %s; want an untyped error after 3 sends (the behaviour the profile fixes)", row, got)
		}
	}
}

// recorder is a Stripe stand-in that records what reaches it and answers
// every POST with a new PaymentIntent (no de-duplication of its own).
func recorder(t *testing.T) (*testkit.Upstream, *atomic.Int64) {
	var n atomic.Int64
	up := testkit.NewUpstream(t, func(ctx *fasthttp.RequestCtx) {
		id := n.Add(1)
		ctx.SetContentType("application/json")
		ctx.Response.Header.Set("Request-Id", fmt.Sprint("req_", id))
		fmt.Fprintf(ctx, `{"id":"pi_%d","object":"payment_intent","amount":100,"currency":"usd"}`, id)
	})
	return up, &n
}

// Idempotency-Key and Stripe-Version reach the provider unchanged; a
// duplicate POST is replayed with no provider call, also by another
// gateway sharing Redis.
func TestStripeSDKReplay(t *testing.T) {
	rd := testkit.StartRedis(t)
	up, calls := recorder(t)
	top := fmt.Sprintf("cluster: {redis: {addr: %q, key_prefix: \"sdk:\"}}", rd.Addr)
	a := testkit.StartGateway(t, gatewayYAML(up.URL, "stripe", top, "{idempotency: {}}"))
	b := testkit.StartGateway(t, gatewayYAML(up.URL, "stripe", top, "{idempotency: {}}"))
	ca, _ := client(a.URL, consumerKey)
	cb, cbt := client(b.URL, consumerKey)

	params := valid()
	params.SetIdempotencyKey("order-7-charge")
	first, err := ca.V1PaymentIntents.Create(context.Background(), params)
	if err != nil {
		t.Fatal(err)
	}
	rec := up.Last(t)
	if got := rec.Header.Get("Idempotency-Key"); got != "order-7-charge" {
		t.Errorf("provider saw Idempotency-Key %q, want order-7-charge", got)
	}
	if got := rec.Header.Get("Stripe-Version"); got != stripe.APIVersion {
		t.Errorf("provider saw Stripe-Version %q, want %q", got, stripe.APIVersion)
	}
	if got := rec.Header.Get("Authorization"); got != "Bearer sk_test_123" {
		t.Errorf("provider saw Authorization %q, want the injected Stripe key", got)
	}

	params2 := valid()
	params2.SetIdempotencyKey("order-7-charge")
	before := cbt.n.Load()
	again, err := cb.V1PaymentIntents.Create(context.Background(), params2)
	if err != nil {
		t.Fatal(err)
	}
	if again.ID != first.ID {
		t.Errorf("replay on the other gateway: %s, want %s", again.ID, first.ID)
	}
	if !strings.EqualFold(again.LastResponse.Header.Get("Idempotent-Replayed"), "true") {
		t.Errorf("replay not marked Idempotent-Replayed")
	}
	if got := calls.Load(); got != 1 {
		t.Errorf("provider called %d times for two POSTs with one key, want 1", got)
	}
	if sends := cbt.n.Load() - before; sends != 1 {
		t.Errorf("SDK sent %d requests for the replay, want 1", sends)
	}
	// The same key with another amount: Sluice's 422, in the Stripe dialect.
	params3 := &stripe.PaymentIntentCreateParams{Amount: stripe.Int64(200), Currency: stripe.String("usd")}
	params3.SetIdempotencyKey("order-7-charge")
	_, err = ca.V1PaymentIntents.Create(context.Background(), params3)
	var se *stripe.Error
	if !errors.As(err, &se) || se.HTTPStatusCode != 422 {
		t.Errorf("same key, other body: %v, want a typed *stripe.Error 422", err)
	}
	if got := calls.Load(); got != 1 {
		t.Errorf("provider called %d times, want 1", got)
	}
}
