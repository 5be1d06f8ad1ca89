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
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/knadh/koanf/parsers/yaml"
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

// runSluice runs the binary to completion (at most 10s) in a fresh temporary
// working directory and returns its output and exit code.
func runSluice(t *testing.T, env []string, args ...string) (stdout, stderr string, code int) {
	t.Helper()
	return runSluiceIn(t, t.TempDir(), env, args...)
}

// runSluiceIn is runSluice with dir as the working directory.
func runSluiceIn(t *testing.T, dir string, env []string, args ...string) (stdout, stderr string, code int) {
	t.Helper()
	return runBinary(t, sluiceBin, dir, env, args...)
}

func runBinary(t *testing.T, bin, dir string, env []string, args ...string) (stdout, stderr string, code int) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, bin, args...)
	cmd.Env = env
	cmd.Dir = dir
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

// Every spelling prints the same text; its first line is "sluice VERSION".
func TestVersion(t *testing.T) {
	t.Parallel()
	want, stderr, code := runSluice(t, baseEnv(), "version")
	if code != 0 || stderr != "" {
		t.Fatalf("sluice version: exit code %d, stderr %q; want 0 and nothing", code, stderr)
	}
	first, rest, _ := strings.Cut(want, "\n")
	v, ok := strings.CutPrefix(first, "sluice ")
	if !ok || v == "" || strings.ContainsAny(v, " \t") {
		t.Fatalf("first line %q, want \"sluice <version>\"", first)
	}
	for _, line := range []string{
		"  go:       " + runtime.Version() + "\n",
		"  platform: " + runtime.GOOS + "/" + runtime.GOARCH + "\n",
	} {
		if !strings.Contains(rest, line) {
			t.Errorf("sluice version does not print %q:\n%s", line, want)
		}
	}
	for _, spelling := range []string{"--version", "-version", "-v", "-V"} {
		got, stderr, code := runSluice(t, baseEnv(), spelling)
		if code != 0 || got != want || stderr != "" {
			t.Errorf("sluice %s: exit %d, stdout %q, stderr %q; want 0 and the output of sluice version", spelling, code, got, stderr)
		}
	}
}

// The version stamped by -ldflags (as deploy/Dockerfile does) is what it prints.
func TestVersionStamped(t *testing.T) {
	t.Parallel()
	bin := filepath.Join(t.TempDir(), "sluice")
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	if out, err := exec.CommandContext(ctx, "go", "build", "-ldflags", "-X main.version=v9.8.7-test", "-o", bin, ".").CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	stdout, _, code := runBinary(t, bin, t.TempDir(), baseEnv(), "--version")
	if first, _, _ := strings.Cut(stdout, "\n"); code != 0 || first != "sluice v9.8.7-test" {
		t.Fatalf("exit %d, first line %q; want 0 and \"sluice v9.8.7-test\"", code, first)
	}
}

// The overview: every spelling prints it to stdout and exits 0; it lists
// every command and the config search path.
func TestHelpOverview(t *testing.T) {
	t.Parallel()
	var want string
	for _, spelling := range []string{"--help", "-h", "-help", "help"} {
		stdout, stderr, code := runSluice(t, baseEnv(), spelling)
		if code != 0 || stderr != "" || stdout == "" {
			t.Fatalf("sluice %s: exit %d, stderr %q, stdout %q; want 0 and the overview on stdout", spelling, code, stderr, stdout)
		}
		if want == "" {
			want = stdout
		} else if stdout != want {
			t.Errorf("sluice %s prints something else than sluice --help:\n%s", spelling, stdout)
		}
	}
	for _, cmd := range commands {
		if !strings.Contains(want, "\n  "+cmd.name+" ") {
			t.Errorf("the overview does not list %q", cmd.name)
		}
	}
	for _, s := range append([]string{"$SLUICE_CONFIG", "Examples:\n  sluice "}, defaultSearchPath...) {
		if !strings.Contains(want, s) {
			t.Errorf("the overview does not mention %q", s)
		}
	}
	if t.Failed() {
		t.Logf("overview:\n%s", want)
	}
}

// Every command has a help with its usage line, every flag it defines and
// examples, printed on stdout with exit code 0 whichever way it is asked for;
// every example parses with the command's real flags.
func TestHelpOfEveryCommand(t *testing.T) {
	t.Parallel()
	for _, cmd := range commands {
		t.Run(strings.ReplaceAll(cmd.name, " ", "_"), func(t *testing.T) {
			t.Parallel()
			words := strings.Fields(cmd.name)
			var want string
			for _, args := range [][]string{
				append([]string{"help"}, words...),
				append(slices.Clone(words), "--help"),
				append(slices.Clone(words), "-h"),
			} {
				stdout, stderr, code := runSluice(t, baseEnv(), args...)
				if code != 0 || stderr != "" {
					t.Fatalf("sluice %s: exit %d, stderr %q; want 0 and nothing on stderr", strings.Join(args, " "), code, stderr)
				}
				if want == "" {
					want = stdout
				} else if stdout != want {
					t.Errorf("sluice %s differs from sluice help %s:\n%s", strings.Join(args, " "), cmd.name, stdout)
				}
			}
			if !strings.HasPrefix(want, "usage: "+cmd.synopsis+"\n\n") {
				t.Errorf("help does not start with its usage line %q:\n%s", cmd.synopsis, want)
			}
			fs := flag.NewFlagSet(cmd.name, flag.ContinueOnError)
			cmd.define(fs)
			_, flags, _ := strings.Cut(want, "\nFlags:\n")
			flags, _, _ = strings.Cut(flags, "\n\n")
			fs.VisitAll(func(f *flag.Flag) {
				if !strings.Contains(flags, "-"+f.Name+" ") {
					t.Errorf("the Flags section of the help does not document -%s:\n%s", f.Name, flags)
				}
			})
			examples := helpExamples(want)
			if len(examples) == 0 {
				t.Fatalf("help has no examples:\n%s", want)
			}
			for _, ex := range examples {
				if err := parseExample(ex); err != nil {
					t.Errorf("example %q: %v", ex, err)
				}
			}
		})
	}
	// The "config" group has a help of its own.
	for _, args := range [][]string{{"config", "--help"}, {"help", "config"}} {
		stdout, _, code := runSluice(t, baseEnv(), args...)
		if code != 0 || stdout != configGroupHelp {
			t.Errorf("sluice %s: exit %d, stdout %q; want 0 and the config group help", strings.Join(args, " "), code, stdout)
		}
	}
}

// helpExamples returns the sluice command lines of the help's Examples
// section (lines that run something else, like a Dockerfile line, are left
// out), cut at the first pipe or redirection.
func helpExamples(help string) [][]string {
	_, section, ok := strings.Cut(help, "\nExamples:\n")
	if !ok {
		return nil
	}
	var out [][]string
	for _, line := range strings.Split(section, "\n") {
		fields := strings.Fields(line)
		for len(fields) > 0 && strings.Contains(fields[0], "=") && !strings.HasPrefix(fields[0], "-") {
			fields = fields[1:] // VAR=value before the command
		}
		if len(fields) == 0 || fields[0] != "sluice" {
			continue
		}
		for i, f := range fields {
			if f == "|" || f == ">" || f == "&&" {
				fields = fields[:i]
				break
			}
		}
		out = append(out, fields[1:])
	}
	return out
}

// parseExample finds the command of "sluice ARGS..." the way main does and
// parses its flags, without running anything.
func parseExample(args []string) error {
	cmd, rest := cmdRun, args
	switch {
	case len(args) == 0:
	case isHelpFlag(args[0]) || args[0] == "help":
		return nil
	case isVersionFlag(args[0]):
		cmd, rest = cmdVersion, args[1:]
	case strings.HasPrefix(args[0], "-"):
	case args[0] == "config" && len(args) > 1:
		cmd, rest = lookup("config "+args[1]), args[2:]
	default:
		cmd, rest = lookup(args[0]), args[1:]
	}
	if cmd == nil {
		return fmt.Errorf("no such command")
	}
	fs := flag.NewFlagSet(cmd.name, flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	cmd.define(fs)
	if err := fs.Parse(rest); err != nil && !errors.Is(err, flag.ErrHelp) {
		return err
	}
	if cmd != cmdHelp && fs.NArg() > 0 {
		return fmt.Errorf("unexpected argument %q", fs.Arg(0))
	}
	return nil
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

// A command line that cannot be understood exits 2 with the problem on
// stderr, the command's usage line and where to read more; nothing on stdout.
func TestUsageErrorsExitTwo(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name string
		args []string
		want []string
	}{
		{"unknown flag", []string{"-no-such-flag"}, []string{"-no-such-flag", "usage: sluice [run]", "sluice run --help"}},
		{"unknown validate flag", []string{"validate", "-no-such-flag"}, []string{"-no-such-flag", "usage: sluice validate", "sluice validate --help"}},
		{"unexpected argument", []string{"-config", "x.yaml", "extra"}, []string{`"extra"`, "usage:"}},
		{"config file without -config", []string{"validate", "my.yaml"}, []string{`unexpected argument "my.yaml"`, "-config FILE"}},
		{"unknown command", []string{"valdate"}, []string{`unknown command "valdate"; did you mean "validate"?`, "sluice --help"}},
		{"a command with a space", []string{"config schema"}, []string{`unknown command "config schema"`}},
		{"unknown command, nothing close", []string{"frobnicate"}, []string{`unknown command "frobnicate" (known: config, healthcheck, help, run, validate, version)`}},
		{"a file as command", []string{"config.yaml"}, []string{`unknown command "config.yaml"`, "sluice -config config.yaml"}},
		{"config without subcommand", []string{"config"}, []string{"sluice config schema"}},
		{"unknown config subcommand", []string{"config", "shema"}, []string{`unknown command "config shema"; did you mean "config schema"?`}},
		{"help of an unknown command", []string{"help", "healthchek"}, []string{`unknown command "healthchek"; did you mean "healthcheck"?`}},
		{"version with an argument", []string{"version", "extra"}, []string{`unexpected argument "extra"`, "usage: sluice version"}},
		{"--version with an argument", []string{"--version", "extra"}, []string{`unexpected argument "extra"`}},
		{"healthcheck: bad -url", []string{"healthcheck", "-url", "127.0.0.1:9090"}, []string{`-url "127.0.0.1:9090": want http://HOST:PORT`, "usage: sluice healthcheck"}},
		{"healthcheck: -url and -config", []string{"healthcheck", "-url", "http://127.0.0.1:9090", "-config", "x.yaml"}, []string{"-config and -url exclude each other"}},
		{"healthcheck: -timeout 0", []string{"healthcheck", "-url", "http://127.0.0.1:9090", "-timeout", "0s"}, []string{"-timeout 0s: must be positive"}},
		{"healthcheck: bad -timeout", []string{"healthcheck", "-timeout", "2"}, []string{`invalid value "2" for flag -timeout`}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			stdout, stderr, code := runSluice(t, baseEnv(), tc.args...)
			if code != 2 {
				t.Fatalf("exit code %d, want 2; stderr: %s", code, stderr)
			}
			for _, want := range append(tc.want, "--help") {
				if !strings.Contains(stderr, want) {
					t.Errorf("stderr does not contain %q:\n%s", want, stderr)
				}
			}
			if stdout != "" {
				t.Errorf("stdout %q, want nothing", stdout)
			}
		})
	}
}

// ---------------------------------------------------------------------------
// config search path

// searchFixture is a working directory with config.yaml and
// config.example.yaml, and a stand-in for /etc/sluice/config.yaml elsewhere.
// Each file is valid and distinct.
func searchFixture(t *testing.T) (etc string, search []string) {
	t.Helper()
	etc = filepath.Join(t.TempDir(), "etc-sluice-config.yaml")
	cwd := t.TempDir()
	t.Chdir(cwd)
	for i, p := range []string{etc, "config.yaml", "config.example.yaml"} {
		writeFile(t, p, configYAML(fmt.Sprintf("127.0.0.1:%d", 18181+i), "127.0.0.1:19191", "", "http://127.0.0.1:18080", "svc"))
	}
	return etc, []string{etc, "config.yaml", "config.example.yaml"}
}

// runCLI runs the command line in this process with env as the whole
// environment seen by the search (SLUICE_CONFIG) and search as the path.
func runCLI(env map[string]string, search []string, args ...string) (stdout, stderr string, code int) {
	var out, errOut bytes.Buffer
	c := &cli{stdout: &out, stderr: &errOut, getenv: func(k string) string { return env[k] }, searchPath: search}
	code = c.main(args)
	return out.String(), errOut.String(), code
}

// The production path wins over the working directory, ./config.yaml over
// the demo config; with none, the error names every path tried.
func TestConfigSearchOrder(t *testing.T) {
	etc, search := searchFixture(t)
	for _, want := range []string{etc, "config.yaml", "config.example.yaml"} {
		stdout, stderr, code := runCLI(nil, search, "validate")
		if code != 0 || stdout != want+": OK\n" {
			t.Fatalf("validate without -config: exit %d, stdout %q, stderr %q; want %s: OK", code, stdout, stderr, want)
		}
		if err := os.Remove(want); err != nil {
			t.Fatal(err)
		}
	}
	wd, err := os.Getwd()
	if err != nil {
		t.Fatal(err)
	}
	// run says which file the search found. Its server.listen is taken, so
	// it stops right after loading it.
	held, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer held.Close()
	writeFile(t, "config.yaml", configYAML(held.Addr().String(), closedAddr(t), "", "http://127.0.0.1:18080", "svc"))
	_, stderr, code := runCLI(nil, search, "run")
	if code != 1 || !strings.Contains(stderr, "sluice: config file config.yaml (found by the search path") ||
		!strings.Contains(stderr, "server.listen: ") {
		t.Errorf("sluice run, config.yaml found by the search: exit %d, stderr %q; want 1, the file named, then the listen error", code, stderr)
	}
	if err := os.Remove("config.yaml"); err != nil {
		t.Fatal(err)
	}
	for _, args := range [][]string{{"validate"}, {"run"}, {"healthcheck"}} {
		stdout, stderr, code := runCLI(nil, search, args...)
		if code != 1 || stdout != "" {
			t.Errorf("sluice %s with no config anywhere: exit %d, stdout %q; want 1 and nothing", args[0], code, stdout)
		}
		for _, want := range []string{"no config file found", etc, "./config.yaml", "./config.example.yaml", wd, "-config FILE", "SLUICE_CONFIG"} {
			if !strings.Contains(stderr, want) {
				t.Errorf("sluice %s: stderr does not name %q:\n%s", args[0], want, stderr)
			}
		}
	}
}

// SLUICE_CONFIG, when set, is the only file tried; -config wins over it.
func TestConfigSearchEnv(t *testing.T) {
	_, search := searchFixture(t)
	chosen := filepath.Join(t.TempDir(), "chosen.yaml")
	writeFile(t, chosen, configYAML("127.0.0.1:18191", "127.0.0.1:19192", "", "http://127.0.0.1:18080", "svc"))

	stdout, stderr, code := runCLI(map[string]string{"SLUICE_CONFIG": chosen}, search, "validate")
	if code != 0 || stdout != chosen+": OK\n" {
		t.Errorf("SLUICE_CONFIG=%s: exit %d, stdout %q, stderr %q", chosen, code, stdout, stderr)
	}
	stdout, _, code = runCLI(map[string]string{"SLUICE_CONFIG": chosen}, search, "validate", "-c", "config.yaml")
	if code != 0 || stdout != "config.yaml: OK\n" {
		t.Errorf("-c config.yaml with SLUICE_CONFIG set: exit %d, stdout %q; want config.yaml: OK", code, stdout)
	}

	missing := filepath.Join(t.TempDir(), "missing.yaml")
	for _, cmd := range []string{"validate", "run", "healthcheck"} {
		stdout, stderr, code := runCLI(map[string]string{"SLUICE_CONFIG": missing}, search, cmd)
		if code != 1 || stdout != "" || !strings.Contains(stderr, missing) || !strings.Contains(stderr, "SLUICE_CONFIG") {
			t.Errorf("sluice %s with SLUICE_CONFIG=%s (missing), other files present: exit %d, stdout %q, stderr %q; "+
				"want 1 naming the file and the variable, no fallback", cmd, missing, code, stdout, stderr)
		}
	}
}

// A path that cannot be checked for another reason than not existing stops
// the search there and is reported: the demo config must not take over.
func TestConfigSearchStopsAtBrokenPath(t *testing.T) {
	_, search := searchFixture(t)
	notDir := filepath.Join(t.TempDir(), "a-file")
	writeFile(t, notDir, "x")
	broken := filepath.Join(notDir, "config.yaml") // stat: not a directory
	stdout, stderr, code := runCLI(nil, append([]string{broken}, search...), "validate")
	if code != 1 || !strings.Contains(stderr, broken) || !strings.Contains(stderr, "not a directory") {
		t.Fatalf("exit %d, stdout %q, stderr %q; want 1 naming %s", code, stdout, stderr, broken)
	}
}

// The binary's own list, as documented: production first, demo last.
func TestDefaultSearchPath(t *testing.T) {
	t.Parallel()
	want := []string{"/etc/sluice/config.yaml", "config.yaml", "config.example.yaml"}
	if !slices.Equal(defaultSearchPath, want) {
		t.Fatalf("defaultSearchPath %q, want %q (docs/cli.md, README.md and the help say so)", defaultSearchPath, want)
	}
	// The binary reads SLUICE_CONFIG from its environment.
	path := filepath.Join(t.TempDir(), "sluice.yaml")
	writeFile(t, path, configYAML("127.0.0.1:18181", "127.0.0.1:19191", "", "http://127.0.0.1:18080", "svc"))
	stdout, stderr, code := runSluice(t, baseEnv("SLUICE_CONFIG="+path), "validate")
	if code != 0 || stdout != path+": OK\n" {
		t.Fatalf("SLUICE_CONFIG=%s sluice validate: exit %d, stdout %q, stderr %q", path, code, stdout, stderr)
	}
}

// ---------------------------------------------------------------------------
// healthcheck

// closedAddr is a 127.0.0.1 address nothing listens on (a moment ago).
func closedAddr(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	return addr
}

func TestHealthcheckReadyGateway(t *testing.T) {
	t.Parallel()
	up := newUpstream(t, "hc")
	g := newGateway(t, up, "", baseEnv(), "svc")
	readyz := "http://" + g.admin + "/readyz"

	check := func(name string, env []string, args ...string) (stdout, stderr string) {
		t.Helper()
		stdout, stderr, code := runSluice(t, env, append([]string{"healthcheck"}, args...)...)
		if code != 0 || !strings.Contains(stdout, readyz) || !strings.Contains(stdout, "200") {
			t.Errorf("%s: exit %d, stdout %q, stderr %q; want 0 and GET %s 200", name, code, stdout, stderr, readyz)
		}
		return stdout, stderr
	}
	check("-config", baseEnv(), "-config", g.cfgPath)
	check("-c", baseEnv(), "-c", g.cfgPath)
	check("SLUICE_CONFIG", baseEnv("SLUICE_CONFIG="+g.cfgPath))
	check("-url without a path", baseEnv(), "-url", "http://"+g.admin)
	check("-url", baseEnv(), "-url", readyz, "-timeout", "5s")

	// admin.listen comes from the environment too, and a listener on every
	// interface is checked on 127.0.0.1 (the gateway listens there only: the
	// healthcheck alone is told 0.0.0.0 or [::]).
	_, port, _ := net.SplitHostPort(g.admin)
	other := filepath.Join(t.TempDir(), "other.yaml")
	dead := closedAddr(t)
	writeFile(t, other, configYAML(closedAddr(t), dead, "", up.URL, "svc"))
	for _, listen := range []string{g.admin, "0.0.0.0:" + port, "[::]:" + port, ":" + port} {
		check("SLUICE_ADMIN__LISTEN="+listen, baseEnv("SLUICE_ADMIN__LISTEN="+listen), "-config", other)
	}
	// Without the override: the file's address, where nothing listens.
	stdout, stderr, code := runSluice(t, baseEnv(), "healthcheck", "-config", other)
	if code != 1 || stdout != "" || !strings.Contains(stderr, "http://"+dead+"/readyz") || !strings.Contains(stderr, "connection refused") {
		t.Errorf("nothing listening: exit %d, stdout %q, stderr %q; want 1 naming %s", code, stdout, stderr, dead)
	}
	if n := strings.Count(strings.TrimSpace(stderr), "\n"); n != 0 {
		t.Errorf("the reason takes %d lines, want one:\n%s", n+1, stderr)
	}

	// Problems elsewhere in the file (what a rejected reload leaves behind)
	// do not hide a running gateway; a note says so.
	broken := filepath.Join(t.TempDir(), "broken.yaml")
	writeFile(t, broken, configYAML(g.listen, g.admin, "", "ftp://x", "svc"))
	_, stderr = check("problems elsewhere", baseEnv(), "-config", broken)
	if !strings.Contains(stderr, "note: "+broken+" has 1 problem(s)") {
		t.Errorf("no note about the config's problem on stderr: %q", stderr)
	}
}

// A gateway that drains answers /readyz with 503: the healthcheck fails with
// the status and the body.
func TestHealthcheckDrainingGateway(t *testing.T) {
	t.Parallel()
	slow := newHeldUpstream(t)
	g := newGateway(t, &upstream{Server: slow.Server}, "", baseEnv(), "slow")
	res := inFlight(t, slow, "http://"+g.listen+"/slow/x")
	g.signal(syscall.SIGTERM)
	if !eventually(5*time.Second, func() bool {
		status, _ := get(t, "http://"+g.admin+"/readyz")
		return status == http.StatusServiceUnavailable
	}) {
		t.Fatal("/readyz did not turn 503 after SIGTERM")
	}
	stdout, stderr, code := runSluice(t, baseEnv(), "healthcheck", "-config", g.cfgPath)
	want := "GET http://" + g.admin + `/readyz: 503 Service Unavailable: {"status":"draining"}`
	if code != 1 || stdout != "" || strings.TrimSpace(stderr) != "sluice healthcheck: "+want {
		t.Errorf("while draining: exit %d, stdout %q, stderr %q; want 1 and %q", code, stdout, stderr, want)
	}
	slow.release()
	<-res
	if code := g.waitExit(10 * time.Second); code != 0 {
		t.Errorf("exit code %d after the drain, want 0", code)
	}
}

// Plain servers stand for every other answer.
func TestHealthcheckAnswers(t *testing.T) {
	t.Parallel()
	var mu sync.Mutex
	var paths []string
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		paths = append(paths, r.URL.Path)
		mu.Unlock()
		switch r.URL.Path {
		case "/readyz":
			fmt.Fprintln(w, "fine")
		case "/unready":
			w.WriteHeader(http.StatusServiceUnavailable)
			fmt.Fprint(w, "not ready: warming up\nsecond line\n")
		case "/empty":
			w.WriteHeader(http.StatusInternalServerError)
		case "/moved":
			http.Redirect(w, r, "/readyz", http.StatusFound)
		case "/slow":
			select {
			case <-r.Context().Done():
			case <-time.After(5 * time.Second):
			}
		}
	}))
	t.Cleanup(srv.Close)

	for _, tc := range []struct {
		name, url string
		args      []string
		code      int
		want      string
	}{
		{"200", srv.URL, nil, 0, "GET " + srv.URL + "/readyz: 200 OK fine"},
		{"503", srv.URL + "/unready", nil, 1, "GET " + srv.URL + "/unready: 503 Service Unavailable: not ready: warming up"},
		{"500 without a body", srv.URL + "/empty", nil, 1, "500 Internal Server Error: (empty body)"},
		{"a redirect is not followed", srv.URL + "/moved", nil, 1, "302 Found"},
		{"no answer in time", srv.URL + "/slow", []string{"-timeout", "300ms"}, 1, "GET " + srv.URL + "/slow: no answer within 300ms"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			start := time.Now()
			stdout, stderr, code := runSluice(t, baseEnv(), append([]string{"healthcheck", "-url", tc.url}, tc.args...)...)
			out := stdout
			if tc.code != 0 {
				out = stderr
				if stdout != "" {
					t.Errorf("stdout %q, want nothing", stdout)
				}
			}
			if code != tc.code || !strings.Contains(out, tc.want) {
				t.Errorf("exit %d, stdout %q, stderr %q; want %d and %q", code, stdout, stderr, tc.code, tc.want)
			}
			if strings.Contains(stderr, "second line") || strings.Count(strings.TrimSpace(out), "\n") != 0 {
				t.Errorf("want one line, got %q", out)
			}
			if d := time.Since(start); d > 3*time.Second {
				t.Errorf("took %v", d)
			}
		})
	}
}

// A password in -url is not repeated in the messages.
func TestHealthcheckHidesURLPassword(t *testing.T) {
	t.Parallel()
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.WriteHeader(http.StatusServiceUnavailable)
	}))
	t.Cleanup(srv.Close)
	host := strings.TrimPrefix(srv.URL, "http://")
	for _, u := range []string{
		"http://probe:s3cret-pw@" + host + "/readyz", // answers 503
		"http://probe:s3cret-pw@" + closedAddr(t),    // no answer
		"probe:s3cret-pw@" + host,                    // not a URL: a usage error
	} {
		stdout, stderr, code := runSluice(t, baseEnv(), "healthcheck", "-url", u)
		if code == 0 || strings.Contains(stdout+stderr, "s3cret-pw") {
			t.Errorf("-url %s: exit %d, output %q; want a failure without the password", u, code, stdout+stderr)
		}
	}
}

// admin.listen off, or itself wrong: exit 1 saying so, without a request.
func TestHealthcheckNoAdminAddress(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	off := filepath.Join(dir, "off.yaml")
	writeFile(t, off, configYAML("127.0.0.1:18181", "", "", "http://127.0.0.1:18080", "svc"))
	bad := filepath.Join(dir, "bad.yaml")
	writeFile(t, bad, configYAML("127.0.0.1:18181", "9090", "", "http://127.0.0.1:18080", "svc"))
	missing := filepath.Join(dir, "missing.yaml")
	for _, tc := range []struct{ path, want string }{
		{off, "admin.listen is empty in " + off},
		{bad, bad + `: admin.listen: invalid address "9090"`},
		{missing, missing},
	} {
		stdout, stderr, code := runSluice(t, baseEnv(), "healthcheck", "-config", tc.path)
		if code != 1 || stdout != "" || !strings.Contains(stderr, tc.want) {
			t.Errorf("healthcheck -config %s: exit %d, stdout %q, stderr %q; want 1 and %q", tc.path, code, stdout, stderr, tc.want)
		}
	}
}

func TestConnectAddr(t *testing.T) {
	t.Parallel()
	for listen, want := range map[string]string{
		"0.0.0.0:9090":     "127.0.0.1:9090",
		"[::]:9090":        "127.0.0.1:9090",
		":9090":            "127.0.0.1:9090",
		"127.0.0.1:9090":   "127.0.0.1:9090",
		"[::1]:9090":       "[::1]:9090",
		"10.1.2.3:9090":    "10.1.2.3:9090",
		"localhost:9090":   "localhost:9090",
		"admin.local:9090": "admin.local:9090",
	} {
		if got := connectAddr(listen); got != want {
			t.Errorf("connectAddr(%q) = %q, want %q", listen, got, want)
		}
	}
}

// The health checks of deploy/Dockerfile and deploy/compose.yaml run this
// binary with their exact arguments (only the config file is this test's),
// with the environment compose gives the container, against a live gateway.
func TestDeployHealthchecks(t *testing.T) {
	t.Parallel()
	dockerfile, err := os.ReadFile("../../deploy/Dockerfile")
	if err != nil {
		t.Fatal(err)
	}
	joined := strings.ReplaceAll(string(dockerfile), "\\\n", " ")
	var docker []string
	for _, line := range strings.Split(joined, "\n") {
		if !strings.HasPrefix(line, "HEALTHCHECK ") {
			continue
		}
		_, argv, ok := strings.Cut(line, " CMD ")
		if !ok || json.Unmarshal([]byte(argv), &docker) != nil {
			t.Fatalf("HEALTHCHECK is not in exec form (CMD [\"...\"]): %q", line)
		}
	}
	if len(docker) == 0 {
		t.Fatal("deploy/Dockerfile has no HEALTHCHECK")
	}
	if !strings.Contains(string(dockerfile), "COPY --from=build /out/sluice "+docker[0]+"\n") {
		t.Errorf("HEALTHCHECK runs %s, which is not where the Dockerfile puts the binary", docker[0])
	}

	composeYAML, err := os.ReadFile("../../deploy/compose.yaml")
	if err != nil {
		t.Fatal(err)
	}
	var compose struct {
		Services map[string]struct {
			Environment map[string]string `json:"environment"`
			Healthcheck struct {
				Test []string `json:"test"`
			} `json:"healthcheck"`
		} `json:"services"`
	}
	raw, err := yaml.Parser().Unmarshal(composeYAML)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := json.Marshal(raw)
	if err := json.Unmarshal(b, &compose); err != nil {
		t.Fatal(err)
	}
	svc := compose.Services["sluice"]
	test := svc.Healthcheck.Test
	if len(test) < 2 || test[0] != "CMD" {
		t.Fatalf("compose healthcheck test %q: want [\"CMD\", \"/usr/local/bin/sluice\", ...]", test)
	}

	up := newUpstream(t, "deploy")
	g := newGateway(t, up, "", baseEnv(), "svc")
	_, port, _ := net.SplitHostPort(g.admin)
	for name, argv := range map[string][]string{"Dockerfile": docker, "compose.yaml": test[1:]} {
		if argv[0] != "/usr/local/bin/sluice" || len(argv) < 2 || argv[1] != "healthcheck" {
			t.Errorf("%s: health check %q does not run /usr/local/bin/sluice healthcheck", name, argv)
			continue
		}
		args := slices.Clone(argv[1:])
		i := slices.Index(args, "-config")
		if i < 0 || i+1 >= len(args) || args[i+1] != "/etc/sluice/config.yaml" {
			t.Errorf("%s: %q does not name the image's config (-config /etc/sluice/config.yaml)", name, argv)
			continue
		}
		args[i+1] = g.cfgPath
		// The container's admin address: compose binds every interface, on
		// the live gateway's port here. (Its other variables concern the
		// proxy and the upstream, not the check.)
		listen, ok := svc.Environment["SLUICE_ADMIN__LISTEN"]
		if !ok || !strings.HasSuffix(listen, ":9090") {
			t.Fatalf("compose.yaml: SLUICE_ADMIN__LISTEN %q, want HOST:9090", listen)
		}
		env := baseEnv("SLUICE_ADMIN__LISTEN=" + strings.TrimSuffix(listen, "9090") + port)
		stdout, stderr, code := runSluice(t, env, args...)
		if code != 0 {
			t.Errorf("%s: sluice %q: exit %d, stdout %q, stderr %q; want 0", name, args, code, stdout, stderr)
		}
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
