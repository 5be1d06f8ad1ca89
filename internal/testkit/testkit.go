// Package testkit starts real servers on 127.0.0.1 for tests: upstreams
// that record what they receive, and a complete gateway built from YAML with
// its proxy and admin listeners. Nothing is mocked; everything is torn down
// by t.Cleanup.
//
// It is for tests only: no production package may import it (it imports
// every plugin, and it is no API). TestOnlyTestsImportTheKit checks that.
package testkit

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/sluice-gw/sluice/plugins"
	"github.com/sluice-gw/sluice/proxy"
	"github.com/sluice-gw/sluice/proxy/config"
	"github.com/valyala/fasthttp"
)

// Recorded is one request as an upstream received it.
type Recorded struct {
	Method string
	URI    string // request target as sent on the wire
	Host   string
	Header http.Header // canonical names; multiple values kept
	Body   []byte
	Remote string
}

// Upstream is a fasthttp server on 127.0.0.1 that records every request and
// answers with Handler.
type Upstream struct {
	URL  string // http://127.0.0.1:PORT
	Addr string // 127.0.0.1:PORT

	mu       sync.Mutex
	requests []Recorded
	handler  fasthttp.RequestHandler
	ln       net.Listener
	srv      *fasthttp.Server
}

// NewUpstream starts an upstream answering with h (nil: 200 "ok").
func NewUpstream(t testing.TB, h fasthttp.RequestHandler) *Upstream {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	return serveUpstream(t, ln, h)
}

func serveUpstream(t testing.TB, ln net.Listener, h fasthttp.RequestHandler) *Upstream {
	if h == nil {
		h = func(ctx *fasthttp.RequestCtx) { ctx.SetBodyString("ok") }
	}
	u := &Upstream{Addr: ln.Addr().String(), URL: "http://" + ln.Addr().String(), handler: h, ln: ln}
	u.srv = &fasthttp.Server{
		Handler:                       u.serve,
		DisableHeaderNamesNormalizing: false,
		NoDefaultServerHeader:         true,
		NoDefaultContentType:          true,
		DisablePreParseMultipartForm:  true,
		CloseOnShutdown:               true,
		ReadTimeout:                   10 * time.Second,
	}
	go func() { _ = u.srv.Serve(ln) }()
	t.Cleanup(func() { _ = u.srv.Shutdown() })
	return u
}

func (u *Upstream) serve(ctx *fasthttp.RequestCtx) {
	r := Recorded{
		Method: string(ctx.Method()),
		URI:    string(ctx.Request.Header.RequestURI()),
		Host:   string(ctx.Request.Header.Host()),
		Header: http.Header{},
		Body:   append([]byte(nil), ctx.Request.Body()...),
		Remote: ctx.RemoteAddr().String(),
	}
	for k, v := range ctx.Request.Header.All() {
		r.Header.Add(string(k), string(v))
	}
	if ctx.Request.Header.ConnectionClose() {
		r.Header.Set("Connection", "close")
	}
	u.mu.Lock()
	u.requests = append(u.requests, r)
	u.mu.Unlock()
	u.handler(ctx)
}

// Requests returns a copy of everything received so far.
func (u *Upstream) Requests() []Recorded {
	u.mu.Lock()
	defer u.mu.Unlock()
	return append([]Recorded(nil), u.requests...)
}

// Count is the number of requests received.
func (u *Upstream) Count() int {
	u.mu.Lock()
	defer u.mu.Unlock()
	return len(u.requests)
}

// Last returns the latest request; it fails the test when there is none.
func (u *Upstream) Last(t testing.TB) Recorded {
	t.Helper()
	u.mu.Lock()
	defer u.mu.Unlock()
	if len(u.requests) == 0 {
		t.Fatal("upstream received no request")
	}
	return u.requests[len(u.requests)-1]
}

// Close stops the upstream (to simulate a provider going away).
func (u *Upstream) Close() { _ = u.srv.Shutdown() }

// Gateway is a running gateway with its listeners.
type Gateway struct {
	*proxy.Gateway
	URL      string // proxy listener, http://127.0.0.1:PORT
	AdminURL string // admin listener
	Logs     *SyncBuffer
	File     string // the config file (for reloads)

	stop func() error
}

// Dial opens a raw TCP connection to the gateway's proxy listener, for
// tests that write requests byte by byte. within > 0 bounds every read and
// write on it (it bounds the test; it is not a pass/fail threshold). The
// connection is closed when the test ends, if the test did not close it.
func (g *Gateway) Dial(t testing.TB, within time.Duration) net.Conn {
	t.Helper()
	c, err := net.Dial("tcp", strings.TrimPrefix(g.URL, "http://"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = c.Close() })
	if within > 0 {
		_ = c.SetDeadline(time.Now().Add(within))
	}
	return c
}

// Options tune StartGateway.
type Options struct {
	// Registry replaces the built-in plugins (tests add panicking plugins).
	Registry *proxy.Registry
	// Dir receives the config file; default t.TempDir().
	Dir string
}

// StartGateway writes yaml to a file, loads it like `sluice -config` does and
// serves it on ephemeral loopback ports (server.listen and admin.listen in the
// YAML are ignored). The gateway is drained at cleanup.
func StartGateway(t testing.TB, yaml string, opt ...Options) *Gateway {
	t.Helper()
	var o Options
	if len(opt) > 0 {
		o = opt[0]
	}
	if o.Registry == nil {
		o.Registry = plugins.Registry()
	}
	if o.Dir == "" {
		o.Dir = t.TempDir()
	}
	file := o.Dir + "/sluice.yaml"
	WriteFile(t, file, yaml)
	cfg, err := config.Load(file)
	if err != nil {
		t.Fatalf("config: %v", err)
	}
	logs := &SyncBuffer{}
	g, err := proxy.New(cfg, proxy.Options{Plugins: o.Registry, ConfigPath: file, LogOutput: logs, Version: "test"})
	if err != nil {
		t.Fatalf("gateway: %v", err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	adminLn, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	served := make(chan struct{})
	go func() { _ = g.Serve(ln); close(served) }()
	go func() { _ = g.ServeAdmin(adminLn) }()
	gw := &Gateway{Gateway: g, URL: "http://" + ln.Addr().String(), AdminURL: "http://" + adminLn.Addr().String(), Logs: logs, File: file}
	gw.stop = sync.OnceValue(func() error {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		err := g.Shutdown(ctx)
		_ = adminLn.Close()
		<-served
		return err
	})
	t.Cleanup(func() { _ = gw.Stop() })
	return gw
}

// PluginConfigs reads /admin/config (header: e.g. the admin token) and
// returns each route's plugin configs as shown there, route → plugin →
// config, with the raw answer.
func (g *Gateway) PluginConfigs(t testing.TB, header ...string) (map[string]map[string]map[string]any, []byte) {
	t.Helper()
	r := Do(t, "GET", g.AdminURL+"/admin/config", "", header...)
	if r.Status != 200 {
		t.Fatalf("/admin/config: %d %s", r.Status, r.Body)
	}
	var view struct {
		Routes map[string]struct {
			Plugins map[string]struct {
				Config map[string]any `json:"config"`
			} `json:"plugins"`
		} `json:"routes"`
	}
	if err := json.Unmarshal(r.Body, &view); err != nil {
		t.Fatalf("/admin/config: %v: %s", err, r.Body)
	}
	out := map[string]map[string]map[string]any{}
	for route, rv := range view.Routes {
		out[route] = map[string]map[string]any{}
		for name, pv := range rv.Plugins {
			out[route][name] = pv.Config
		}
	}
	return out, r.Body
}

// Stop shuts the gateway down (once: the test's cleanup does it otherwise)
// and returns Shutdown's error.
func (g *Gateway) Stop() error { return g.stop() }

// WriteFile writes content to path or fails the test.
func WriteFile(t testing.TB, path, content string) {
	t.Helper()
	if err := writeFile(path, content); err != nil {
		t.Fatal(err)
	}
}

// Client is an HTTP client for tests: no redirects followed, no proxy from
// the environment, a timeout that bounds every call.
var Client = &http.Client{
	Timeout:       10 * time.Second,
	Transport:     &http.Transport{Proxy: nil, MaxIdleConnsPerHost: 64, DisableCompression: true},
	CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
}

// Response is a completed call.
type Response struct {
	Status int
	Header http.Header
	Body   []byte
}

// Do sends a request and reads the whole answer, failing the test on a
// transport error.
func Do(t testing.TB, method, url string, body string, header ...string) *Response {
	t.Helper()
	resp, err := TryDo(method, url, body, header...)
	if err != nil {
		t.Fatalf("%s %s: %v", method, url, err)
	}
	return resp
}

// TryDo is Do returning the transport error (for use outside the test goroutine).
// header holds name, value pairs.
func TryDo(method, url string, body string, header ...string) (*Response, error) {
	var rd io.Reader
	if body != "" {
		rd = strings.NewReader(body)
	}
	req, err := http.NewRequest(method, url, rd)
	if err != nil {
		return nil, err
	}
	for i := 0; i+1 < len(header); i += 2 {
		if strings.EqualFold(header[i], "Host") {
			req.Host = header[i+1]
			continue
		}
		req.Header.Add(header[i], header[i+1])
	}
	resp, err := Client.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		return nil, err
	}
	return &Response{Status: resp.StatusCode, Header: resp.Header, Body: b}, nil
}

// SyncBuffer is a bytes.Buffer safe for concurrent writes (gateway logs).
type SyncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *SyncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

// String returns everything written so far.
func (s *SyncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// Eventually polls cond every 10ms until it holds or timeout passes.
func Eventually(t testing.TB, timeout time.Duration, cond func() bool, msg string) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v: %s", timeout, msg)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func writeFile(path, content string) error {
	return os.WriteFile(path, []byte(content), 0o600)
}

func stringsReader(s string) io.Reader { return strings.NewReader(s) }

// ConfigProblems checks yaml like `sluice validate` does (load, then compile
// with the built-in plugins) and returns every problem; nil when it is valid.
// A file that cannot be parsed at all fails the test.
func ConfigProblems(t testing.TB, yaml string) []*config.FieldError {
	t.Helper()
	return ConfigProblemsWith(t, plugins.Registry(), yaml)
}

// ConfigProblemsWith is ConfigProblems with the given plugins.
func ConfigProblemsWith(t testing.TB, reg *proxy.Registry, yaml string) []*config.FieldError {
	t.Helper()
	file := t.TempDir() + "/sluice.yaml"
	WriteFile(t, file, yaml)
	cfg, err := config.Load(file)
	err = proxy.Validate(cfg, err, reg)
	var ce *config.ConfigError
	if err != nil && !errors.As(err, &ce) {
		t.Fatalf("config cannot be read: %v", err)
	}
	if ce == nil {
		return nil
	}
	return ce.Problems
}

// WantOneProblem fails the test unless probs is exactly one problem at path
// whose message contains msg; with path "", unless probs is empty.
func WantOneProblem(t testing.TB, probs []*config.FieldError, path, msg string) {
	t.Helper()
	switch {
	case path == "" && len(probs) != 0:
		t.Fatalf("want no problem, got %v", probs)
	case path == "":
	case len(probs) != 1:
		t.Fatalf("want one problem at %s, got %v", path, probs)
	case probs[0].Path != path || !strings.Contains(probs[0].Msg, msg):
		t.Errorf("problem = %q: %q, want %q containing %q", probs[0].Path, probs[0].Msg, path, msg)
	}
}

// Body1K is a 1 KiB response body for benchmarks and allocation tests.
var Body1K = func() []byte {
	b := make([]byte, 1024)
	for i := range b {
		b[i] = 'a' + byte(i%26)
	}
	return b
}()

// ClosedAddr returns a loopback host:port that refuses connections (an
// upstream that is down). The port stays bound, without listening, until the
// test ends, so that no other test's listener can take it meanwhile.
func ClosedAddr(t testing.TB) string {
	t.Helper()
	fd, err := syscall.Socket(syscall.AF_INET, syscall.SOCK_STREAM, 0)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = syscall.Close(fd) })
	if err := syscall.Bind(fd, &syscall.SockaddrInet4{Addr: [4]byte{127, 0, 0, 1}}); err != nil {
		t.Fatal(err)
	}
	sa, err := syscall.Getsockname(fd)
	if err != nil {
		t.Fatal(err)
	}
	return fmt.Sprintf("127.0.0.1:%d", sa.(*syscall.SockaddrInet4).Port)
}

// WithPlugin returns the built-in pipeline with f placed right after the
// place named after (as Registry.Stages names it): the one line a new
// plugin adds to plugins/plugins.go.
func WithPlugin(after string, f *proxy.Factory) *proxy.Registry {
	places := plugins.Pipeline()
	i := slices.Index(plugins.Registry().Stages(), after)
	if i < 0 {
		panic("testkit: no place named " + after)
	}
	return proxy.NewRegistry(slices.Insert(places, i+1, proxy.Place(f))...)
}

// WithStandIns returns a registry of the built-in plugins plus the given
// factories; a factory named like a built-in replaces it. Tests use it to put
// a stand-in (a tracer, a fake authenticate) at a plugin's stage.
func WithStandIns(standIns ...*proxy.Factory) *proxy.Registry {
	r := plugins.Registry()
	for _, f := range standIns {
		r = r.Replace(f)
	}
	return r
}

// WantProblem decodes a problem+json answer and checks the members every gateway
// error must carry.
func WantProblem(t testing.TB, resp *Response, wantStatus int, wantCode string) map[string]any {
	t.Helper()
	if resp.Status != wantStatus {
		t.Fatalf("status = %d, want %d; body %s", resp.Status, wantStatus, resp.Body)
	}
	if ct := resp.Header.Get("Content-Type"); ct != "application/problem+json" {
		t.Fatalf("Content-Type = %q, want application/problem+json", ct)
	}
	var p map[string]any
	if err := json.Unmarshal(resp.Body, &p); err != nil {
		t.Fatalf("body is not JSON: %v: %s", err, resp.Body)
	}
	if p["code"] != wantCode {
		t.Fatalf("code = %v, want %s; body %s", p["code"], wantCode, resp.Body)
	}
	if p["type"] != "about:blank" || p["status"] != float64(wantStatus) || p["title"] == "" {
		t.Errorf("type/status/title wrong: %s", resp.Body)
	}
	if rid := resp.Header.Get("X-Request-Id"); rid == "" || p["request_id"] != rid {
		t.Errorf("request_id %v does not match X-Request-Id %q", p["request_id"], rid)
	}
	if _, ok := p["retryable"].(bool); !ok {
		t.Errorf("retryable missing: %s", resp.Body)
	}
	return p
}

// ServeHTTP serves h with a real net/http server on a free 127.0.0.1 port
// until the test ends, and returns its base URL ("http://127.0.0.1:port").
// For providers whose behaviour is easiest written with net/http (flushing,
// aborting a body); NewUpstream is the fasthttp one.
func ServeHTTP(t testing.TB, h http.Handler) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: h}
	go func() { _ = srv.Serve(ln) }()
	t.Cleanup(func() { _ = srv.Close() })
	return "http://" + ln.Addr().String()
}
