//go:build unix

// Process-level tests of the sluice binary: it is built once, then run as a
// subprocess against real upstreams on 127.0.0.1, driven through its command
// line, its signals and its admin API. Every subprocess runs under a context
// deadline and is killed at cleanup; every wait is a bounded poll.
package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
	"github.com/sluice-gw/sluice/internal/testkit"
)

// sluiceBin is the binary under test, built once by TestMain.
var sluiceBin string

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "sluice-bin-")
	if err != nil {
		fmt.Fprintln(os.Stderr, "tempdir:", err)
		os.Exit(1)
	}
	sluiceBin = filepath.Join(dir, "sluice")
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	out, err := exec.CommandContext(ctx, "go", "build", "-o", sluiceBin, ".").CombinedOutput()
	cancel()
	if err != nil {
		fmt.Fprintf(os.Stderr, "go build: %v\n%s", err, out)
		os.RemoveAll(dir)
		os.Exit(1)
	}
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

// ---------------------------------------------------------------------------
// helpers

// baseEnv is the test process's environment without SLUICE_ variables (they
// would override the configs under test), plus extra ("NAME=value").
func baseEnv(extra ...string) []string {
	var env []string
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "SLUICE_") {
			env = append(env, kv)
		}
	}
	return append(env, extra...)
}

// runSluice runs the binary to completion (at most 10s) and returns its output
// and exit code.
func runSluice(t *testing.T, env []string, args ...string) (stdout, stderr string, code int) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, sluiceBin, args...)
	cmd.Env = env
	cmd.Dir = t.TempDir()
	var out, errOut bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errOut
	err := cmd.Run()
	var ee *exec.ExitError
	if err != nil && !errors.As(err, &ee) {
		t.Fatalf("sluice %v: %v", args, err)
	}
	if ctx.Err() != nil {
		t.Fatalf("sluice %v did not finish within 10s; stderr:\n%s", args, errOut.String())
	}
	return out.String(), errOut.String(), cmd.ProcessState.ExitCode()
}

// freeAddrs returns n distinct 127.0.0.1 addresses whose ports were free a
// moment ago (another process may take one before sluice binds it:
// startGateway retries then).
func freeAddrs(t *testing.T, n int) []string {
	t.Helper()
	addrs := make([]string, n)
	for i := range addrs {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		defer ln.Close() // held until all are picked, so that they differ
		addrs[i] = ln.Addr().String()
	}
	return addrs
}

// writeFile replaces path atomically, so that a reload never reads half a file.
func writeFile(t *testing.T, path, content string) {
	t.Helper()
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(tmp, path); err != nil {
		t.Fatal(err)
	}
}

// gateway is a running `sluice -config FILE` process.
type gateway struct {
	t      *testing.T
	cmd    *exec.Cmd
	stdout testkit.SyncBuffer
	stderr testkit.SyncBuffer
	done   chan struct{} // closed when the process has exited
	listen string        // proxy address
	admin  string        // admin address

	cfgPath string
	env     []string
}

// setupFunc writes the config of a gateway for its proxy and admin addresses
// and returns the file and the environment to run it with.
type setupFunc func(listen, admin string) (cfgPath string, env []string)

// startGateway picks two free ports, lets setup write the config for them and
// runs `sluice -config FILE` until /readyz answers 200 (at most 5s). A port
// taken by someone else in between makes it start again on new ports (at most
// 3 times). The process is killed at cleanup.
func startGateway(t *testing.T, setup setupFunc) *gateway {
	t.Helper()
	for attempt := 1; ; attempt++ {
		addrs := freeAddrs(t, 2)
		path, env := setup(addrs[0], addrs[1])
		g := launch(t, path, addrs[0], addrs[1], env)
		err := g.waitReady()
		if err == nil {
			return g
		}
		if attempt < 3 && strings.Contains(g.stderr.String(), "address already in use") {
			t.Logf("port collision, starting again: %s", g.stderr.String())
			continue
		}
		t.Fatalf("%v; stderr:\n%s\nstdout:\n%s", err, g.stderr.String(), g.stdout.String())
	}
}

// launch starts the process; the caller waits for it to be ready.
func launch(t *testing.T, cfgPath, listen, admin string, env []string) *gateway {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	g := &gateway{t: t, done: make(chan struct{}), listen: listen, admin: admin, cfgPath: cfgPath, env: env}
	g.cmd = exec.CommandContext(ctx, sluiceBin, "-config", cfgPath)
	g.cmd.Env = env
	g.cmd.Dir = filepath.Dir(cfgPath)
	g.cmd.Stdout, g.cmd.Stderr = &g.stdout, &g.stderr
	g.cmd.WaitDelay = 2 * time.Second
	if err := g.cmd.Start(); err != nil {
		cancel()
		t.Fatal(err)
	}
	go func() {
		_ = g.cmd.Wait()
		close(g.done)
	}()
	t.Cleanup(func() {
		if !g.exited() {
			_ = g.cmd.Process.Kill()
		}
		select {
		case <-g.done:
		case <-time.After(5 * time.Second):
			t.Errorf("sluice (pid %d) did not exit after kill", g.cmd.Process.Pid)
		}
		cancel()
		if t.Failed() {
			t.Logf("sluice stdout:\n%s\nsluice stderr:\n%s", g.stdout.String(), g.stderr.String())
		}
	})
	return g
}

func (g *gateway) exited() bool {
	select {
	case <-g.done:
		return true
	default:
		return false
	}
}

// waitReady polls /readyz (at most 5s) until it answers 200, and checks that
// the admin port is this process's: its effective server.listen is g.listen.
func (g *gateway) waitReady() error {
	deadline := time.Now().Add(5 * time.Second)
	for time.Now().Before(deadline) {
		if g.exited() {
			return fmt.Errorf("sluice exited during startup (code %d)", g.cmd.ProcessState.ExitCode())
		}
		if g.ready() {
			return nil
		}
		time.Sleep(20 * time.Millisecond)
	}
	return fmt.Errorf("sluice not ready within 5s (want /readyz 200 and /admin/config server.listen %s)", g.listen)
}

func (g *gateway) ready() bool {
	resp, err := client.Get("http://" + g.admin + "/readyz")
	if err != nil {
		return false
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return false
	}
	req, err := http.NewRequest(http.MethodGet, "http://"+g.admin+"/admin/config", nil)
	if err != nil {
		return false
	}
	if tok := g.adminToken(); tok != "" {
		req.Header.Set("Authorization", "Bearer "+tok) // /admin/config needs it when one is set
	}
	resp, err = client.Do(req)
	if err != nil {
		return false
	}
	defer resp.Body.Close()
	var view struct {
		Server struct {
			Listen string `json:"listen"`
		} `json:"server"`
	}
	return json.NewDecoder(resp.Body).Decode(&view) == nil && view.Server.Listen == g.listen
}

// adminToken is the admin.token of the gateway's config file: a literal, or
// "${VAR}" looked up in the process environment; "" when none.
func (g *gateway) adminToken() string {
	b, err := os.ReadFile(g.cfgPath)
	if err != nil {
		return ""
	}
	for _, line := range strings.Split(string(b), "\n") {
		v, ok := strings.CutPrefix(strings.TrimSpace(line), "token: ")
		if !ok {
			continue
		}
		v = strings.Trim(v, `"`)
		if name, ok := strings.CutPrefix(v, "${"); ok {
			name = strings.TrimSuffix(name, "}")
			for _, kv := range g.env {
				if val, ok := strings.CutPrefix(kv, name+"="); ok {
					return val
				}
			}
			return ""
		}
		return v
	}
	return ""
}

func (g *gateway) signal(sig os.Signal) {
	g.t.Helper()
	if err := g.cmd.Process.Signal(sig); err != nil {
		g.t.Fatalf("signal %v: %v", sig, err)
	}
}

// waitExit waits at most d for the process to exit and returns its exit code.
func (g *gateway) waitExit(d time.Duration) int {
	g.t.Helper()
	select {
	case <-g.done:
		return g.cmd.ProcessState.ExitCode()
	case <-time.After(d):
		g.t.Fatalf("sluice did not exit within %v", d)
		return -1
	}
}

// client talks to the gateway and its admin API. No keep-alive: every request
// is a new connection, so that a draining gateway refuses it.
var client = &http.Client{
	Timeout:   10 * time.Second,
	Transport: &http.Transport{DisableKeepAlives: true},
}

// get returns the status and body of a GET.
func get(t *testing.T, url string, header ...string) (int, string) {
	t.Helper()
	req, err := http.NewRequest(http.MethodGet, url, nil)
	if err != nil {
		t.Fatal(err)
	}
	for i := 0; i+1 < len(header); i += 2 {
		req.Header.Set(header[i], header[i+1])
	}
	resp, err := client.Do(req)
	if err != nil {
		t.Fatalf("GET %s: %v", url, err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("GET %s: reading body: %v", url, err)
	}
	return resp.StatusCode, string(body)
}

// postReload calls POST /admin/reload with the given Authorization header ("" for none).
func postReload(t *testing.T, admin, authorization string) (*http.Response, string) {
	t.Helper()
	req, err := http.NewRequest(http.MethodPost, "http://"+admin+"/admin/reload", nil)
	if err != nil {
		t.Fatal(err)
	}
	if authorization != "" {
		req.Header.Set("Authorization", authorization)
	}
	resp, err := client.Do(req)
	if err != nil {
		t.Fatalf("POST /admin/reload: %v", err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	return resp, string(body)
}

// eventually polls cond every 20ms for at most d.
func eventually(d time.Duration, cond func() bool) bool {
	deadline := time.Now().Add(d)
	for {
		if cond() {
			return true
		}
		if time.Now().After(deadline) {
			return false
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// metricValue scrapes /metrics and returns the value of the series name{labels}
// (labels may be a subset), summed over the matching series; ok is false when
// no series matches.
func metricValue(t *testing.T, admin, name string, labels map[string]string) (v float64, ok bool) {
	t.Helper()
	resp, err := client.Get("http://" + admin + "/metrics")
	if err != nil {
		t.Fatalf("GET /metrics: %v", err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("GET /metrics: status %d", resp.StatusCode)
	}
	parser := expfmt.NewTextParser(model.UTF8Validation)
	families, err := parser.TextToMetricFamilies(resp.Body)
	if err != nil {
		t.Fatalf("parsing /metrics: %v", err)
	}
	mf := families[name]
	if mf == nil {
		return 0, false
	}
next:
	for _, m := range mf.GetMetric() {
		have := map[string]string{}
		for _, lp := range m.GetLabel() {
			have[lp.GetName()] = lp.GetValue()
		}
		for k, want := range labels {
			if have[k] != want {
				continue next
			}
		}
		ok = true
		switch {
		case m.Counter != nil:
			v += m.GetCounter().GetValue()
		case m.Gauge != nil:
			v += m.GetGauge().GetValue()
		case m.Untyped != nil:
			v += m.GetUntyped().GetValue()
		case m.Histogram != nil:
			v += float64(m.GetHistogram().GetSampleCount())
		}
	}
	return v, ok
}

// waitMetric polls until name{labels} equals want (at most 5s).
func waitMetric(t *testing.T, admin, name string, labels map[string]string, want float64) {
	t.Helper()
	var got float64
	var ok bool
	if !eventually(5*time.Second, func() bool {
		got, ok = metricValue(t, admin, name, labels)
		return ok && got == want
	}) {
		t.Fatalf("%s%v = %v (present %v), want %v", name, labels, got, ok, want)
	}
}

// upstream is a real HTTP server standing for a provider API. It answers
// "upstream <name> got <request-uri>" and remembers the paths it saw.
type upstream struct {
	*httptest.Server
	mu    sync.Mutex
	paths []string
}

func newUpstream(t *testing.T, name string) *upstream {
	t.Helper()
	u := &upstream{}
	u.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		u.mu.Lock()
		u.paths = append(u.paths, r.URL.RequestURI())
		u.mu.Unlock()
		w.Header().Set("Content-Type", "text/plain")
		fmt.Fprintf(w, "upstream %s got %s", name, r.URL.RequestURI())
	}))
	t.Cleanup(u.Close)
	return u
}

func (u *upstream) seen() []string {
	u.mu.Lock()
	defer u.mu.Unlock()
	return slices.Clone(u.paths)
}

// config writes a gateway config. Each route NAME serves /NAME/{path:*},
// strips /NAME and goes to upstream "up" at upURL. adminToken is written
// as is (it may be "${VAR}"); "" leaves admin.token out.
func configYAML(listen, admin, adminToken, upURL string, routes ...string) string {
	var b strings.Builder
	fmt.Fprintf(&b, `server:
  listen: %q
  drain_timeout: 5s
log:
  level: info
  format: json
  access_log: true
admin:
  listen: %q
`, listen, admin)
	if adminToken != "" {
		fmt.Fprintf(&b, "  token: %q\n", adminToken)
	}
	fmt.Fprintf(&b, `plugins:
  normalize_errors: {}
upstreams:
  up:
    url: %q
    timeout: 5s
routes:
`, upURL)
	for _, r := range routes {
		fmt.Fprintf(&b, `  %s:
    path: "/%s/{path:*}"
    methods: [GET, POST]
    upstream: up
    strip_prefix: "/%s"
`, r, r, r)
	}
	return b.String()
}

// newGateway writes configYAML(...) for fresh ports and starts the binary.
func newGateway(t *testing.T, up *upstream, adminToken string, env []string, routes ...string) *gateway {
	t.Helper()
	path := filepath.Join(t.TempDir(), "sluice.yaml")
	return startGateway(t, func(listen, admin string) (string, []string) {
		writeFile(t, path, configYAML(listen, admin, adminToken, up.URL, routes...))
		return path, env
	})
}

// logLines decodes the JSON log lines of the gateway's stdout.
func logLines(t *testing.T, out string) []map[string]any {
	t.Helper()
	var lines []map[string]any
	for _, line := range strings.Split(out, "\n") {
		if strings.TrimSpace(line) == "" {
			continue
		}
		var m map[string]any
		if err := json.Unmarshal([]byte(line), &m); err != nil {
			t.Errorf("stdout line is not JSON: %q", line)
			continue
		}
		lines = append(lines, m)
	}
	return lines
}

// ---------------------------------------------------------------------------
// command line

func TestVersion(t *testing.T) {
	t.Parallel()
	stdout, stderr, code := runSluice(t, baseEnv(), "version")
	if code != 0 {
		t.Fatalf("exit code %d, want 0; stderr: %s", code, stderr)
	}
	v, ok := strings.CutPrefix(strings.TrimSpace(stdout), "sluice ")
	if !ok || v == "" || strings.ContainsAny(v, " \n") {
		t.Fatalf("stdout %q, want \"sluice <version>\"", stdout)
	}
}

func TestHelpExitsZero(t *testing.T) {
	t.Parallel()
	stdout, _, code := runSluice(t, baseEnv(), "-h")
	if code != 0 || !strings.Contains(stdout, "sluice validate") {
		t.Fatalf("sluice -h: exit %d, stdout %q; want 0 and the usage", code, stdout)
	}
}

func TestValidateOK(t *testing.T) {
	t.Parallel()
	good := filepath.Join(t.TempDir(), "good.yaml")
	writeFile(t, good, configYAML("127.0.0.1:18081", "127.0.0.1:19091", "", "http://127.0.0.1:18080", "a", "b"))
	example, err := filepath.Abs("../../config.example.yaml")
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct{ name, path string }{
		{"written", good},
		{"config.example.yaml", example},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			stdout, stderr, code := runSluice(t, baseEnv(), "validate", "-config", tc.path)
			if code != 0 {
				t.Fatalf("exit code %d, want 0; stderr:\n%s", code, stderr)
			}
			if want := tc.path + ": OK\n"; stdout != want {
				t.Fatalf("stdout %q, want %q", stdout, want)
			}
		})
	}
}

func TestValidateReportsEveryProblem(t *testing.T) {
	t.Parallel()
	bad := filepath.Join(t.TempDir(), "bad.yaml")
	// The conflicting routes use the healthy upstream "ok": behind a broken
	// upstream a conflict goes unreported (see TestValidateConflictBehindBrokenUpstream).
	writeFile(t, bad, `server:
  listn: "127.0.0.1:8080"
  max_request_body: 10XB
upstreams:
  u:
    url: "ftp://x"
    timeout: 10
  ok:
    url: "http://127.0.0.1:18080"
routes:
  a:
    path: "/a/{path:*}"
    methods: [GET]
    upstream: ok
  a2:
    path: "/a/{path:*}"
    methods: [GET]
    upstream: ok
  b:
    path: "/b"
    upstream: gthub
  c:
    path: "/c"
    upstream: ok
    plugins:
      normalise_errors: {}
`)
	stdout, stderr, code := runSluice(t, baseEnv(), "validate", "-config", bad)
	if code != 1 {
		t.Fatalf("exit code %d, want 1; stderr:\n%s", code, stderr)
	}
	if strings.Contains(stdout, "OK") {
		t.Errorf("stdout %q claims OK", stdout)
	}
	for _, want := range []string{
		"server.listn: unknown key",
		"server.max_request_body:",
		"10XB",
		"upstreams.u.timeout:",
		"upstreams.u.url:",
		`"ftp://x"`,
		`routes.b.upstream: unknown upstream "gthub"`,
		`routes.c.plugins.normalise_errors: unknown plugin "normalise_errors"`,
		"routes.a2.path:", // the second route on GET /a/{path:*}
	} {
		if !strings.Contains(stderr, want) {
			t.Errorf("stderr does not mention %q", want)
		}
	}
	if t.Failed() {
		t.Logf("stderr:\n%s", stderr)
	}
}

// A route conflict between routes of an upstream whose URL is invalid is
// reported in the same pass as the URL, so the user fixes both at once.
func TestValidateConflictBehindBrokenUpstream(t *testing.T) {
	t.Parallel()
	bad := filepath.Join(t.TempDir(), "bad.yaml")
	writeFile(t, bad, `upstreams:
  u:
    url: "ftp://x"
routes:
  a:
    path: "/a"
    upstream: u
  a2:
    path: "/a"
    upstream: u
`)
	_, stderr, code := runSluice(t, baseEnv(), "validate", "-config", bad)
	if code != 1 || !strings.Contains(stderr, "upstreams.u.url:") || !strings.Contains(stderr, "routes.a2.path:") {
		t.Fatalf("exit %d, stderr:\n%s\nwant exit 1 naming upstreams.u.url and routes.a2.path", code, stderr)
	}
}

func TestMissingConfigFile(t *testing.T) {
	t.Parallel()
	missing := filepath.Join(t.TempDir(), "does-not-exist.yaml")
	for _, args := range [][]string{
		{"-config", missing},
		{"run", "-config", missing},
		{"validate", "-config", missing},
	} {
		t.Run(args[0], func(t *testing.T) {
			t.Parallel()
			stdout, stderr, code := runSluice(t, baseEnv(), args...)
			if code != 1 {
				t.Fatalf("exit code %d, want 1; stderr: %s", code, stderr)
			}
			if !strings.Contains(stderr, missing) || !strings.Contains(stderr, "no such file") {
				t.Errorf("stderr %q should name %s and say it does not exist", stderr, missing)
			}
			if strings.Contains(stdout, "OK") {
				t.Errorf("stdout %q", stdout)
			}
		})
	}
}

func TestUsageErrorsExitTwo(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name string
		args []string
		want string
	}{
		{"unknown flag", []string{"-no-such-flag"}, "-no-such-flag"},
		{"unknown validate flag", []string{"validate", "-no-such-flag"}, "-no-such-flag"},
		{"unexpected argument", []string{"-config", "x.yaml", "extra"}, `"extra"`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			_, stderr, code := runSluice(t, baseEnv(), tc.args...)
			if code != 2 {
				t.Fatalf("exit code %d, want 2; stderr: %s", code, stderr)
			}
			if !strings.Contains(stderr, tc.want) || !strings.Contains(stderr, "usage:") {
				t.Errorf("stderr %q should name %s and show the usage", stderr, tc.want)
			}
		})
	}
}

// ---------------------------------------------------------------------------
// environment

func TestEnvOverridesAndExpansion(t *testing.T) {
	t.Parallel()
	up := newUpstream(t, "env")
	// The file's server.listen is held by the test: the gateway can start
	// only if the environment's address replaces it.
	fileLn, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer fileLn.Close()
	path := filepath.Join(t.TempDir(), "sluice.yaml")
	g := startGateway(t, func(listen, admin string) (string, []string) {
		writeFile(t, path, configYAML(fileLn.Addr().String(), admin, "", "${UP_URL}", "svc"))
		return path, baseEnv("SLUICE_SERVER__LISTEN="+listen, "UP_URL="+up.URL)
	})
	status, body := get(t, "http://"+g.listen+"/svc/hello")
	if status != http.StatusOK || body != "upstream env got /hello" {
		t.Fatalf("GET on the SLUICE_SERVER__LISTEN port: %d %q, want 200 from the ${UP_URL} upstream", status, body)
	}

	stdout, stderr, code := runSluice(t, g.env, "validate", "-config", path)
	if code != 0 || stdout != path+": OK\n" {
		t.Fatalf("validate with UP_URL set: exit %d, stdout %q, stderr:\n%s", code, stdout, stderr)
	}
}

func TestEnvUnsetVariable(t *testing.T) {
	t.Parallel()
	path := filepath.Join(t.TempDir(), "sluice.yaml")
	writeFile(t, path, configYAML("127.0.0.1:18081", "127.0.0.1:19091", "", "${SLUICE_TEST_UNSET_UP_URL}", "svc"))
	env := baseEnv() // without SLUICE_ variables: SLUICE_TEST_UNSET_UP_URL is unset
	for _, args := range [][]string{{"validate", "-config", path}, {"-config", path}} {
		t.Run(args[0], func(t *testing.T) {
			t.Parallel()
			_, stderr, code := runSluice(t, env, args...)
			if code != 1 {
				t.Fatalf("exit code %d, want 1; stderr:\n%s", code, stderr)
			}
			if !strings.Contains(stderr, "upstreams.up.url:") || !strings.Contains(stderr, "SLUICE_TEST_UNSET_UP_URL") {
				t.Fatalf("stderr should name upstreams.up.url and the variable:\n%s", stderr)
			}
		})
	}
}

// ---------------------------------------------------------------------------
// serving

func TestServe(t *testing.T) {
	t.Parallel()
	up := newUpstream(t, "one")
	g := newGateway(t, up, "", baseEnv(), "svc")

	status, body := get(t, "http://"+g.listen+"/svc/repos/x?page=2")
	if status != http.StatusOK || body != "upstream one got /repos/x?page=2" {
		t.Fatalf("GET /svc/repos/x: %d %q", status, body)
	}
	if seen := up.seen(); !slices.Equal(seen, []string{"/repos/x?page=2"}) {
		t.Errorf("upstream saw %q, want the prefix stripped: [/repos/x?page=2]", seen)
	}
	if status, body := get(t, "http://"+g.listen+"/nowhere"); status != http.StatusNotFound || !strings.Contains(body, "route_not_found") {
		t.Errorf("GET /nowhere: %d %q, want 404 route_not_found", status, body)
	}

	if status, body := get(t, "http://"+g.admin+"/healthz"); status != http.StatusOK {
		t.Errorf("/healthz: %d %q", status, body)
	}
	if status, body := get(t, "http://"+g.admin+"/readyz"); status != http.StatusOK {
		t.Errorf("/readyz: %d %q", status, body)
	}
	waitMetric(t, g.admin, "sluice_requests_total",
		map[string]string{"route": "svc", "upstream": "up", "method": "GET", "status": "200"}, 1)

	// One access line per request, written after the response: poll.
	var access map[string]any
	eventually(5*time.Second, func() bool {
		for _, l := range logLines(t, g.stdout.String()) {
			if l["msg"] == "access" && l["route"] == "svc" {
				access = l
				return true
			}
		}
		return false
	})
	if access == nil {
		t.Fatalf("no access log line for route svc in stdout:\n%s", g.stdout.String())
	}
	if access["status"] != float64(200) || access["method"] != "GET" || access["upstream"] != "up" || access["request_id"] == "" {
		t.Errorf("access line %v", access)
	}
}

func TestSIGHUPReload(t *testing.T) {
	t.Parallel()
	up := newUpstream(t, "one")
	g := newGateway(t, up, "", baseEnv(), "first")
	reloads := func(result string) map[string]string { return map[string]string{"result": result} }
	waitMetric(t, g.admin, "sluice_config_reloads_total", reloads("success"), 0)
	waitMetric(t, g.admin, "sluice_config_reloads_total", reloads("failure"), 0)
	if status, _ := get(t, "http://"+g.listen+"/second/x"); status != http.StatusNotFound {
		t.Fatalf("/second before the reload: %d, want 404", status)
	}

	// A valid change: a second route.
	writeFile(t, g.cfgPath, configYAML(g.listen, g.admin, "", up.URL, "first", "second"))
	g.signal(syscall.SIGHUP)
	if !eventually(5*time.Second, func() bool {
		status, _ := get(t, "http://"+g.listen+"/second/x")
		return status == http.StatusOK
	}) {
		t.Fatal("/second/x does not answer 200 within 5s of SIGHUP")
	}
	waitMetric(t, g.admin, "sluice_config_reloads_total", reloads("success"), 1)

	// An invalid change: rejected, the routes in service keep serving.
	invalid := strings.Replace(configYAML(g.listen, g.admin, "", up.URL, "first", "second", "third"),
		"upstream: up\n    strip_prefix: \"/third\"", "upstream: nope\n    strip_prefix: \"/third\"", 1)
	writeFile(t, g.cfgPath, invalid)
	g.signal(syscall.SIGHUP)
	waitMetric(t, g.admin, "sluice_config_reloads_total", reloads("failure"), 1)
	waitMetric(t, g.admin, "sluice_config_reloads_total", reloads("success"), 1)
	for _, p := range []string{"/first/a", "/second/b"} {
		if status, body := get(t, "http://"+g.listen+p); status != http.StatusOK {
			t.Errorf("GET %s after a rejected reload: %d %q, want 200", p, status, body)
		}
	}
	if status, _ := get(t, "http://"+g.listen+"/third/x"); status != http.StatusNotFound {
		t.Errorf("/third from the rejected config answers %d, want 404", status)
	}
	var rejection map[string]any
	eventually(5*time.Second, func() bool {
		for _, l := range logLines(t, g.stdout.String()) {
			if msg, _ := l["msg"].(string); strings.Contains(msg, "reload rejected") {
				rejection = l
				return true
			}
		}
		return false
	})
	if rejection == nil {
		t.Fatalf("no log line about the rejected reload in stdout:\n%s", g.stdout.String())
	}
	if e, _ := rejection["error"].(string); !strings.Contains(e, "routes.third.upstream") {
		t.Errorf("rejection log %v should name routes.third.upstream", rejection)
	}
	if g.exited() {
		t.Fatal("sluice exited after a rejected reload")
	}
}

func TestAdminReload(t *testing.T) {
	t.Parallel()
	const token = "admin-test-token-42"
	up := newUpstream(t, "one")
	g := newGateway(t, up, "${ADMIN_TOKEN}", baseEnv("ADMIN_TOKEN="+token), "first")
	writeFile(t, g.cfgPath, configYAML(g.listen, g.admin, "${ADMIN_TOKEN}", up.URL, "first", "second"))

	unauthorized := []struct{ name, authorization string }{
		{"no authorization", ""},
		{"wrong token", "Bearer not-the-token"},
		{"not bearer", "Basic " + token},
	}
	for _, tc := range unauthorized {
		resp, body := postReload(t, g.admin, tc.authorization)
		if resp.StatusCode != http.StatusUnauthorized {
			t.Errorf("%s: status %d %q, want 401", tc.name, resp.StatusCode, body)
		}
		if !strings.HasPrefix(resp.Header.Get("WWW-Authenticate"), "Bearer") {
			t.Errorf("%s: WWW-Authenticate %q, want a Bearer challenge", tc.name, resp.Header.Get("WWW-Authenticate"))
		}
		if ct := resp.Header.Get("Content-Type"); !strings.HasPrefix(ct, "application/problem+json") {
			t.Errorf("%s: Content-Type %q, want application/problem+json", tc.name, ct)
		}
	}
	if status, _ := get(t, "http://"+g.listen+"/second/x"); status != http.StatusNotFound {
		t.Fatalf("an unauthorized reload applied the new file: /second answers %d", status)
	}
	if v, _ := metricValue(t, g.admin, "sluice_config_reloads_total", nil); v != 0 {
		t.Errorf("unauthorized calls counted as reloads: %v", v)
	}

	resp, body := postReload(t, g.admin, "Bearer "+token)
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("reload with the token: %d %q, want 200", resp.StatusCode, body)
	}
	if status, body := get(t, "http://"+g.listen+"/second/x"); status != http.StatusOK || body != "upstream one got /x" {
		t.Fatalf("/second/x after the reload: %d %q", status, body)
	}
	waitMetric(t, g.admin, "sluice_config_reloads_total", map[string]string{"result": "success"}, 1)

	// A bad file: 422 problem+json listing the problems; nothing changes.
	bad := strings.Replace(configYAML(g.listen, g.admin, "${ADMIN_TOKEN}", up.URL, "first", "second"),
		"\n    timeout: 5s", "\n    timeout: 5", 1)
	bad = strings.Replace(bad, "methods: [GET, POST]\n    upstream: up\n    strip_prefix: \"/second\"",
		"methods: [GET, POST]\n    upstream: gthub\n    strip_prefix: \"/second\"", 1)
	writeFile(t, g.cfgPath, bad)
	resp, body = postReload(t, g.admin, "Bearer "+token)
	if resp.StatusCode != http.StatusUnprocessableEntity {
		t.Fatalf("reload of a bad file: %d %q, want 422", resp.StatusCode, body)
	}
	if ct := resp.Header.Get("Content-Type"); !strings.HasPrefix(ct, "application/problem+json") {
		t.Errorf("Content-Type %q, want application/problem+json", ct)
	}
	var problem struct {
		Status   int      `json:"status"`
		Problems []string `json:"problems"`
	}
	if err := json.Unmarshal([]byte(body), &problem); err != nil {
		t.Fatalf("422 body is not JSON: %v: %q", err, body)
	}
	all := strings.Join(problem.Problems, "\n")
	if problem.Status != 422 || !strings.Contains(all, "upstreams.up.timeout") || !strings.Contains(all, `routes.second.upstream: unknown upstream "gthub"`) {
		t.Errorf("422 body %s should list upstreams.up.timeout and routes.second.upstream", body)
	}
	if status, _ := get(t, "http://"+g.listen+"/second/x"); status != http.StatusOK {
		t.Errorf("/second/x after a rejected reload: %d, want 200", status)
	}
	waitMetric(t, g.admin, "sluice_config_reloads_total", map[string]string{"result": "failure"}, 1)
}

func TestAdminReloadWithoutToken(t *testing.T) {
	t.Parallel()
	up := newUpstream(t, "one")
	g := newGateway(t, up, "", baseEnv(), "first")
	for _, authorization := range []string{"", "Bearer anything"} {
		resp, body := postReload(t, g.admin, authorization)
		if resp.StatusCode != http.StatusForbidden {
			t.Errorf("Authorization %q: status %d %q, want 403 (no admin.token configured)", authorization, resp.StatusCode, body)
		}
	}
	// An empty expansion is no token either.
	g2 := newGateway(t, up, "${SLUICE_TEST_EMPTY_TOKEN:-}", baseEnv(), "first")
	if resp, body := postReload(t, g2.admin, "Bearer "); resp.StatusCode != http.StatusForbidden {
		t.Errorf("empty ${VAR:-} token: status %d %q, want 403", resp.StatusCode, body)
	}
}

// ---------------------------------------------------------------------------
// shutdown

// heldUpstream answers "slow answer" 500ms after the test calls release (or
// after 10s). arrived receives once per request when it reaches the upstream.
type heldUpstream struct {
	*httptest.Server
	arrived chan struct{}
	release func()
}

func newHeldUpstream(t *testing.T) *heldUpstream {
	t.Helper()
	h := &heldUpstream{arrived: make(chan struct{}, 8)}
	gate := make(chan struct{})
	var once sync.Once
	h.release = func() { once.Do(func() { close(gate) }) }
	h.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		select {
		case h.arrived <- struct{}{}:
		default:
		}
		select {
		case <-gate:
		case <-time.After(10 * time.Second):
		}
		time.Sleep(500 * time.Millisecond)
		fmt.Fprint(w, "slow answer")
	}))
	t.Cleanup(h.Close)
	t.Cleanup(h.release) // before h.Close, which waits for the handlers
	return h
}

type result struct {
	status int
	body   string
	err    error
}

// inFlight sends GET url in the background and waits (at most 5s) until it
// has reached the held upstream.
func inFlight(t *testing.T, h *heldUpstream, url string) <-chan result {
	t.Helper()
	res := make(chan result, 1)
	go func() {
		resp, err := client.Get(url)
		if err != nil {
			res <- result{err: err}
			return
		}
		defer resp.Body.Close()
		b, err := io.ReadAll(resp.Body)
		res <- result{resp.StatusCode, string(b), err}
	}()
	select {
	case <-h.arrived:
	case <-time.After(5 * time.Second):
		t.Fatal("the request did not reach the upstream within 5s")
	}
	return res
}

func TestSIGTERMDrainsInFlightRequests(t *testing.T) {
	t.Parallel()
	const drainTimeout = 5 * time.Second // server.drain_timeout in config()
	slow := newHeldUpstream(t)
	g := newGateway(t, &upstream{Server: slow.Server}, "", baseEnv(), "slow")
	res := inFlight(t, slow, "http://"+g.listen+"/slow/x")

	g.signal(syscall.SIGTERM)
	signalled := time.Now()

	// New connections are refused while the request is still in flight. (A
	// dial racing with the listener's close may be reset instead: poll on.)
	var dialErr error
	if !eventually(drainTimeout, func() bool {
		c, err := net.DialTimeout("tcp", g.listen, time.Second)
		if err == nil {
			c.Close()
		}
		dialErr = err
		return errors.Is(err, syscall.ECONNREFUSED)
	}) {
		t.Fatalf("the proxy listener still accepts connections after SIGTERM (last dial: %v)", dialErr)
	}
	if g.exited() {
		t.Fatal("sluice exited with a request in flight")
	}
	// While draining, the admin API still answers and /readyz says so.
	if status, body := get(t, "http://"+g.admin+"/readyz"); status != http.StatusServiceUnavailable {
		t.Errorf("/readyz while draining: %d %q, want 503", status, body)
	}

	slow.release() // the upstream answers 500ms later
	select {
	case r := <-res:
		if r.err != nil || r.status != http.StatusOK || r.body != "slow answer" {
			t.Errorf("in-flight request: %d %q %v, want 200 \"slow answer\"", r.status, r.body, r.err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("the in-flight request did not complete")
	}
	if code := g.waitExit(time.Until(signalled.Add(drainTimeout))); code != 0 {
		t.Errorf("exit code %d after SIGTERM, want 0", code)
	}
	if !strings.Contains(g.stdout.String(), `"msg":"draining"`) {
		t.Errorf("no draining log line in stdout:\n%s", g.stdout.String())
	}
}

// A request that outlives server.drain_timeout does not keep the process:
// it exits 0 once the timeout is reached.
func TestSIGTERMDrainTimeout(t *testing.T) {
	t.Parallel()
	slow := newHeldUpstream(t)
	env := baseEnv("SLUICE_SERVER__DRAIN_TIMEOUT=300ms")
	g := newGateway(t, &upstream{Server: slow.Server}, "", env, "slow")
	res := inFlight(t, slow, "http://"+g.listen+"/slow/x")

	g.signal(syscall.SIGTERM)
	if code := g.waitExit(5 * time.Second); code != 0 {
		t.Errorf("exit code %d, want 0", code)
	}
	select {
	case r := <-res:
		if r.err == nil && r.status == http.StatusOK {
			t.Errorf("the held request got 200 although the process exited before the upstream answered")
		}
	case <-time.After(5 * time.Second):
		t.Error("the held request did not end when the process exited")
	}
	if !strings.Contains(g.stdout.String(), "drain timeout reached") {
		t.Errorf("no drain timeout log line in stdout:\n%s", g.stdout.String())
	}
}

// Ctrl-C twice: the second signal ends the drain at once, with exit code 1.
func TestSecondSignalStopsTheDrain(t *testing.T) {
	t.Parallel()
	slow := newHeldUpstream(t)
	env := baseEnv("SLUICE_SERVER__DRAIN_TIMEOUT=60s")
	g := newGateway(t, &upstream{Server: slow.Server}, "", env, "slow")
	res := inFlight(t, slow, "http://"+g.listen+"/slow/x")

	g.signal(syscall.SIGTERM)
	if !eventually(5*time.Second, func() bool { return strings.Contains(g.stdout.String(), `"msg":"draining"`) }) {
		t.Fatalf("no draining log line:\n%s", g.stdout.String())
	}
	g.signal(syscall.SIGINT)
	if code := g.waitExit(5 * time.Second); code != 1 {
		t.Errorf("exit code %d after a second signal, want 1", code)
	}
	select {
	case <-res:
	case <-time.After(5 * time.Second):
		t.Error("the held request did not end when the process exited")
	}
	if !strings.Contains(g.stdout.String(), "second signal while draining") {
		t.Errorf("no log line for the forced exit:\n%s", g.stdout.String())
	}
}

func TestSIGINTExitsZero(t *testing.T) {
	t.Parallel()
	up := newUpstream(t, "one")
	g := newGateway(t, up, "", baseEnv(), "svc")
	if status, _ := get(t, "http://"+g.listen+"/svc/x"); status != http.StatusOK {
		t.Fatalf("GET /svc/x: %d", status)
	}
	g.signal(syscall.SIGINT)
	if code := g.waitExit(10 * time.Second); code != 0 {
		t.Errorf("exit code %d after SIGINT, want 0; stderr:\n%s", code, g.stderr.String())
	}
	if c, err := net.DialTimeout("tcp", g.listen, time.Second); err == nil {
		c.Close()
		t.Error("the proxy port still accepts connections after exit")
	}
}

// ---------------------------------------------------------------------------
// secrets

func TestSecretsAreRedacted(t *testing.T) {
	t.Parallel()
	const secret = "s3cr3t-admin-token-value"
	up := newUpstream(t, "one")
	path := filepath.Join(t.TempDir(), "sluice.yaml")
	var cfg string
	g := startGateway(t, func(listen, admin string) (string, []string) {
		cfg = strings.Replace(configYAML(listen, admin, secret, up.URL, "svc"), "level: info", "level: debug", 1)
		writeFile(t, path, cfg)
		return path, baseEnv()
	})
	listen, admin := g.listen, g.admin

	status, body := get(t, "http://"+admin+"/admin/config", "Authorization", "Bearer "+secret)
	if status != http.StatusOK {
		t.Fatalf("/admin/config: %d %q", status, body)
	}
	if strings.Contains(body, secret) {
		t.Errorf("/admin/config shows admin.token:\n%s", body)
	}
	var view struct {
		Admin struct {
			Token string `json:"token"`
		} `json:"admin"`
	}
	if err := json.Unmarshal([]byte(body), &view); err != nil {
		t.Fatalf("/admin/config is not JSON: %v", err)
	}
	if view.Admin.Token != "[redacted]" {
		t.Errorf("/admin/config admin.token = %q, want \"[redacted]\"", view.Admin.Token)
	}

	// Exercise the logs: requests, a successful and a rejected reload (the
	// rejection logs the config errors), a reload that changes the token.
	get(t, "http://"+listen+"/svc/x")
	get(t, "http://"+listen+"/missing")
	if resp, body := postReload(t, admin, "Bearer "+secret); resp.StatusCode != http.StatusOK {
		t.Fatalf("reload: %d %q", resp.StatusCode, body)
	}
	writeFile(t, path, strings.Replace(cfg, "upstream: up", "upstream: nope", 1))
	if resp, body := postReload(t, admin, "Bearer "+secret); resp.StatusCode != http.StatusUnprocessableEntity {
		t.Fatalf("bad reload: %d %q", resp.StatusCode, body)
	} else if strings.Contains(body, secret) {
		t.Errorf("the 422 answer shows the secret: %s", body)
	}
	g.signal(syscall.SIGTERM)
	if code := g.waitExit(10 * time.Second); code != 0 {
		t.Errorf("exit code %d", code)
	}
	for name, out := range map[string]string{"stdout": g.stdout.String(), "stderr": g.stderr.String()} {
		if strings.Contains(out, secret) {
			t.Errorf("%s contains the admin token:\n%s", name, out)
		}
	}
	if !strings.Contains(g.stdout.String(), "reload rejected") {
		t.Errorf("stdout has no reload rejection; the log check did not exercise it:\n%s", g.stdout.String())
	}
}
