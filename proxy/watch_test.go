package proxy_test

import (
	"context"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/sluice-gw/sluice/internal/testkit"
	"github.com/sluice-gw/sluice/plugins"
	"github.com/sluice-gw/sluice/proxy"
	"github.com/sluice-gw/sluice/proxy/config"
)

// The watch tests run proxy.Run, as `sluice` does, on real files and real
// inotify. They are not parallel: each one waits on debounce timers, and the
// last one checks that no watcher goroutine is left, which only means
// something while no other gateway runs.

const watchAdminToken = "watch-admin-token-0123456789"

// watchSite is one gateway's listeners: they stay the same in every version
// of its config file.
type watchSite struct {
	listen, admin string
}

func newWatchSite(t *testing.T) watchSite {
	return watchSite{listen: freeAddr(t), admin: freeAddr(t)}
}

func freeAddr(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().String()
}

// doc is a config file: reload is the reload section ("" for none), body
// the upstreams and routes.
func (s watchSite) doc(reload, body string) string {
	head := fmt.Sprintf("server: {listen: %q}\nadmin: {listen: %q, token: %q}\nlog: {access_log: false}\n", s.listen, s.admin, watchAdminToken)
	if reload != "" {
		head += "reload: " + reload + "\n"
	}
	return head + body
}

// genBody serves every path from up, answering with X-Generation: gen.
func genBody(upURL string, gen int) string {
	return fmt.Sprintf(`upstreams:
  up: {url: %q, timeout: 5s}
routes:
  r:
    path: "/{p:*}"
    upstream: up
    plugins:
      headers: {response: {set: {X-Generation: "%d"}}}
`, upURL, gen)
}

// running is a gateway served by proxy.Run.
type running struct {
	site watchSite
	url  string
	logs *testkit.SyncBuffer
	stop func() error
}

// runFile serves the config file at path with proxy.Run until the test ends
// (or stop), and waits until it is ready.
func runFile(t *testing.T, site watchSite, path string) *running {
	t.Helper()
	cfg, err := config.Load(path)
	if err != nil {
		t.Fatalf("config: %v", err)
	}
	return runConfig(t, site, path, cfg)
}

// runConfig is runFile with the config already loaded from path.
func runConfig(t *testing.T, site watchSite, path string, cfg *config.Config) *running {
	t.Helper()
	logs := &testkit.SyncBuffer{}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() {
		done <- proxy.Run(ctx, cfg, proxy.Options{Plugins: plugins.Registry(), ConfigPath: path, LogOutput: logs, Version: "test"})
	}()
	var result error
	stopped := false
	r := &running{site: site, url: "http://" + site.listen, logs: logs}
	r.stop = func() error {
		if !stopped {
			stopped = true
			cancel()
			select {
			case result = <-done:
			case <-time.After(10 * time.Second):
				t.Fatal("proxy.Run did not return within 10s of its context ending")
			}
		}
		return result
	}
	t.Cleanup(func() {
		if err := r.stop(); err != nil {
			t.Errorf("proxy.Run: %v", err)
		}
	})
	deadline := time.Now().Add(5 * time.Second)
	for {
		select {
		case err := <-done:
			stopped = true
			t.Fatalf("proxy.Run returned at start: %v\n%s", err, logs)
		default:
		}
		if resp, err := testkit.TryDo("GET", "http://"+site.admin+"/readyz", ""); err == nil && resp.Status == 200 {
			return r
		}
		if time.Now().After(deadline) {
			t.Fatalf("gateway not ready after 5s\n%s", logs)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// generation is the X-Generation the gateway answers with now, or "" when
// the call fails.
func (r *running) generation() string {
	resp, err := testkit.TryDo("GET", r.url+"/x", "")
	if err != nil || resp.Status != 200 {
		return ""
	}
	return resp.Header.Get("X-Generation")
}

func (r *running) waitGeneration(t *testing.T, gen int) {
	t.Helper()
	want := fmt.Sprint(gen)
	testkit.Eventually(t, 5*time.Second, func() bool { return r.generation() == want },
		fmt.Sprintf("the gateway never served generation %s (it serves %q)\n%s", want, r.generation(), r.logs))
}

func (r *running) reloads(t *testing.T, result string) float64 {
	t.Helper()
	resp := testkit.Do(t, "GET", "http://"+r.site.admin+"/metrics", "")
	v, found := testkit.ParseMetrics(t, string(resp.Body)).Value("sluice_config_reloads_total", "result", result)
	if !found {
		t.Fatalf("no sluice_config_reloads_total{result=%q} series", result)
	}
	return v
}

// waitLog waits until a log line contains every one of parts.
func (r *running) waitLog(t *testing.T, parts ...string) {
	t.Helper()
	testkit.Eventually(t, 5*time.Second, func() bool { return r.logLines(parts...) > 0 },
		fmt.Sprintf("no log line with %q\n%s", parts, r.logs))
}

// logLines counts the log lines that contain every one of parts.
func (r *running) logLines(parts ...string) int {
	n := 0
	for line := range strings.SplitSeq(r.logs.String(), "\n") {
		all := line != ""
		for _, p := range parts {
			all = all && strings.Contains(line, p)
		}
		if all {
			n++
		}
	}
	return n
}

const watchingMsg = `"msg":"watching the config files for changes"`

// replaceFile writes content next to path and renames it over path, as
// editors and deploy tools do.
func replaceFile(t *testing.T, path, content string) {
	t.Helper()
	tmp := filepath.Join(filepath.Dir(path), "."+filepath.Base(path)+".tmp")
	testkit.WriteFile(t, tmp, content)
	if err := os.Rename(tmp, path); err != nil {
		t.Fatal(err)
	}
}

func TestWatchReloadsAnEditedConfig(t *testing.T) {
	up := testkit.NewUpstream(t, nil)
	site := newWatchSite(t)
	file := filepath.Join(t.TempDir(), "sluice.yaml")
	const reload = "{watch: true, debounce: 250ms}"
	testkit.WriteFile(t, file, site.doc(reload, genBody(up.URL, 0)))
	gw := runFile(t, site, file)
	gw.waitLog(t, watchingMsg)
	gw.waitGeneration(t, 0)

	// Written in place.
	testkit.WriteFile(t, file, site.doc(reload, genBody(up.URL, 1)))
	gw.waitGeneration(t, 1)
	gw.waitLog(t, `"msg":"reloading config"`, `"trigger":"watch"`, `"reason":"config file changed"`, `"path":"`+file+`"`)

	// Replaced by a rename.
	replaceFile(t, file, site.doc(reload, genBody(up.URL, 2)))
	gw.waitGeneration(t, 2)

	// A burst of 10 writes is one reload: the last version. Then one more
	// edit, so that a reload the burst may still owe would have come first.
	for gen := 3; gen <= 12; gen++ {
		testkit.WriteFile(t, file, site.doc(reload, genBody(up.URL, gen)))
	}
	gw.waitGeneration(t, 12)
	testkit.WriteFile(t, file, site.doc(reload, genBody(up.URL, 13)))
	gw.waitGeneration(t, 13)
	testkit.Eventually(t, 5*time.Second, func() bool { return gw.reloads(t, "success") >= 4 }, "reloads not counted")
	if n := gw.reloads(t, "success"); n != 4 {
		t.Errorf("reloads{success} = %v after an in-place write, a rename, a burst of 10 writes and one more write; want 4\n%s", n, gw.logs)
	}
	if n := gw.logLines(`"trigger":"watch"`); n != 4 {
		t.Errorf("%d reloads logged with trigger watch, want 4", n)
	}
	if n := gw.reloads(t, "failure"); n != 0 {
		t.Errorf("reloads{failure} = %v, want 0", n)
	}

	// Deleted: no reload, the running config keeps serving; one warning.
	// Created again later: picked up.
	const gone = `"msg":"a watched file is missing, empty or unreadable; the running config keeps serving"`
	if err := os.Remove(file); err != nil {
		t.Fatal(err)
	}
	gw.waitLog(t, gone, `"path":"`+file+`"`)
	if got := gw.generation(); got != "13" {
		t.Errorf("with the file deleted the gateway serves generation %q, want 13", got)
	}
	testkit.WriteFile(t, file, site.doc(reload, genBody(up.URL, 14)))
	gw.waitGeneration(t, 14)
	gw.waitLog(t, `"msg":"a watched file is back"`)

	// Truncated (a writer that has not written yet): the same. An empty
	// file would be a valid config without routes.
	testkit.WriteFile(t, file, "")
	testkit.Eventually(t, 5*time.Second, func() bool { return gw.logLines(gone) == 2 }, "the emptied file was not reported")
	if got := gw.generation(); got != "14" {
		t.Errorf("with the file emptied the gateway serves generation %q, want 14", got)
	}
	testkit.WriteFile(t, file, site.doc(reload, genBody(up.URL, 15)))
	gw.waitGeneration(t, 15)
	testkit.Eventually(t, 5*time.Second, func() bool { return gw.reloads(t, "success") >= 6 }, "reloads not counted")
	if n := gw.reloads(t, "success") + gw.reloads(t, "failure"); n != 6 {
		t.Errorf("%v reloads in all, want 6: a missing or empty file must not reload\n%s", n, gw.logs)
	}
	if n := gw.logLines(gone); n != 2 {
		t.Errorf("the file was reported gone %d times, want twice (once each time)", n)
	}
}

// A change made after the config was loaded and before the watcher
// started (no event reports it) is caught: the watcher starts from what the
// loader read.
func TestWatchCatchesAChangeMadeBeforeItStarted(t *testing.T) {
	up := testkit.NewUpstream(t, nil)
	site := newWatchSite(t)
	const reload = "{watch: true, debounce: 100ms}"
	file := filepath.Join(t.TempDir(), "sluice.yaml")
	testkit.WriteFile(t, file, site.doc(reload, genBody(up.URL, 0)))
	cfg, err := config.Load(file)
	if err != nil {
		t.Fatal(err)
	}
	testkit.WriteFile(t, file, site.doc(reload, genBody(up.URL, 1)))
	gw := runConfig(t, site, file, cfg)
	gw.waitGeneration(t, 1)
	gw.waitLog(t, `"trigger":"watch"`, `"reason":"config file changed"`)
}

// k8sVolume lays files out as the kubelet does in a ConfigMap or Secret
// volume: dir/..TS/NAME holds the data, dir/..data links to ..TS, and
// dir/NAME links to ..data/NAME. update swaps in a new version the way the
// kubelet's atomic writer does.
type k8sVolume struct {
	t    *testing.T
	dir  string
	ts   string // current ..TS
	seq  int
	keys []string
}

func newK8sVolume(t *testing.T, files map[string]string) *k8sVolume {
	v := &k8sVolume{t: t, dir: t.TempDir()}
	v.update(files)
	for name := range files {
		v.keys = append(v.keys, name)
		if err := os.Symlink(filepath.Join("..data", name), filepath.Join(v.dir, name)); err != nil {
			t.Fatal(err)
		}
	}
	return v
}

func (v *k8sVolume) path(name string) string { return filepath.Join(v.dir, name) }

func (v *k8sVolume) update(files map[string]string) {
	t := v.t
	v.seq++
	ts := fmt.Sprintf("..2026_05_04_10_00_%02d.%d", v.seq, 100+v.seq)
	if err := os.Mkdir(filepath.Join(v.dir, ts), 0o755); err != nil {
		t.Fatal(err)
	}
	for name, content := range files {
		testkit.WriteFile(t, filepath.Join(v.dir, ts, name), content)
	}
	tmp := filepath.Join(v.dir, "..data_tmp")
	if err := os.Symlink(ts, tmp); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(tmp, filepath.Join(v.dir, "..data")); err != nil {
		t.Fatal(err)
	}
	if v.ts != "" {
		if err := os.RemoveAll(filepath.Join(v.dir, v.ts)); err != nil {
			t.Fatal(err)
		}
	}
	v.ts = ts
}

func TestWatchFollowsAKubernetesVolumeSwap(t *testing.T) {
	up := testkit.NewUpstream(t, nil)
	site := newWatchSite(t)
	const reload = "{watch: true, debounce: 100ms}"
	vol := newK8sVolume(t, map[string]string{"config.yaml": site.doc(reload, genBody(up.URL, 0))})
	gw := runFile(t, site, vol.path("config.yaml"))
	gw.waitLog(t, watchingMsg)
	gw.waitGeneration(t, 0)

	vol.update(map[string]string{"config.yaml": site.doc(reload, genBody(up.URL, 1))})
	gw.waitGeneration(t, 1)
	gw.waitLog(t, `"reason":"config file changed"`, `"path":"`+vol.path("config.yaml")+`"`)
	// The first swap deleted the directory the file resolved to: the second
	// is seen through the new one.
	vol.update(map[string]string{"config.yaml": site.doc(reload, genBody(up.URL, 2))})
	gw.waitGeneration(t, 2)
	testkit.Eventually(t, 5*time.Second, func() bool { return gw.reloads(t, "success") >= 2 }, "reloads not counted")
	if n := gw.reloads(t, "success"); n != 2 {
		t.Errorf("reloads{success} = %v after two volume updates, want 2", n)
	}
}

// secretBody injects a bearer token read from tokenFile.
func secretBody(upURL, tokenFile string) string {
	return fmt.Sprintf(`upstreams:
  up: {url: %q, timeout: 5s}
routes:
  r:
    path: "/{p:*}"
    upstream: up
    plugins:
      inject_auth: {type: bearer, token: "file:%s"}
`, upURL, tokenFile)
}

func TestWatchRotatedSecretReachesTheUpstream(t *testing.T) {
	up := testkit.NewUpstream(t, nil)
	site := newWatchSite(t)
	const reload = "{watch: true, debounce: 100ms}"
	secrets := newK8sVolume(t, map[string]string{"token": "token-one-0123456789\n"})
	file := filepath.Join(t.TempDir(), "sluice.yaml")
	testkit.WriteFile(t, file, site.doc(reload, secretBody(up.URL, secrets.path("token"))))
	gw := runFile(t, site, file)
	gw.waitLog(t, watchingMsg)

	sent := func() string {
		resp, err := testkit.TryDo("GET", gw.url+"/x", "")
		if err != nil || resp.Status != 200 {
			return ""
		}
		return up.Last(t).Header.Get("Authorization")
	}
	waitSent := func(want string) {
		t.Helper()
		testkit.Eventually(t, 5*time.Second, func() bool { return sent() == want },
			fmt.Sprintf("the upstream never received %q (last: %q)\n%s", want, sent(), gw.logs))
	}
	waitSent("Bearer token-one-0123456789")

	// Rotated the Kubernetes way.
	secrets.update(map[string]string{"token": "token-two-0123456789\n"})
	waitSent("Bearer token-two-0123456789")
	gw.waitLog(t, `"trigger":"watch"`, `"reason":"secret file changed"`, `"path":"`+secrets.path("token")+`"`)

	// A reload that names another secret file watches it from then on, and
	// stops watching the old one.
	other := filepath.Join(t.TempDir(), "token")
	testkit.WriteFile(t, other, "token-three-0123456789")
	testkit.WriteFile(t, file, site.doc(reload, secretBody(up.URL, other)))
	waitSent("Bearer token-three-0123456789")
	testkit.WriteFile(t, other, "token-four-0123456789")
	waitSent("Bearer token-four-0123456789")

	// Deleted, then created again later: picked up.
	if err := os.Remove(other); err != nil {
		t.Fatal(err)
	}
	gw.waitLog(t, `"msg":"a watched file is missing, empty or unreadable; the running config keeps serving"`, `"path":"`+other+`"`)
	waitSent("Bearer token-four-0123456789")
	testkit.WriteFile(t, other, "token-five-0123456789")
	waitSent("Bearer token-five-0123456789")

	// The old secret is no longer watched: rotating it reloads nothing.
	// Proven by order: the edit after it is reloaded alone.
	before := gw.reloads(t, "success")
	secrets.update(map[string]string{"token": "token-old-0123456789\n"})
	testkit.WriteFile(t, other, "token-six-0123456789")
	waitSent("Bearer token-six-0123456789")
	testkit.Eventually(t, 5*time.Second, func() bool { return gw.reloads(t, "success") >= before+1 }, "reload not counted")
	if n := gw.reloads(t, "success") - before; n != 1 {
		t.Errorf("%v reloads after rotating a file no longer used and then the one in use, want 1", n)
	}
	if n := gw.reloads(t, "failure"); n != 0 {
		t.Errorf("reloads{failure} = %v, want 0\n%s", n, gw.logs)
	}
	if strings.Contains(gw.logs.String(), "0123456789") {
		t.Errorf("a secret value appears in the logs:\n%s", gw.logs)
	}
}

// A config that names a secret file not there yet is rejected; when the
// file arrives (a Kubernetes Secret updated after the ConfigMap that uses
// it), the config is reloaded.
func TestWatchPicksUpASecretFileThatArrivesAfterTheConfig(t *testing.T) {
	up := testkit.NewUpstream(t, nil)
	site := newWatchSite(t)
	const reload = "{watch: true, debounce: 100ms}"
	file := filepath.Join(t.TempDir(), "sluice.yaml")
	testkit.WriteFile(t, file, site.doc(reload, genBody(up.URL, 0)))
	gw := runFile(t, site, file)
	gw.waitLog(t, watchingMsg)

	later := filepath.Join(t.TempDir(), "token")
	testkit.WriteFile(t, file, site.doc(reload, secretBody(up.URL, later)))
	testkit.Eventually(t, 5*time.Second, func() bool { return gw.reloads(t, "failure") == 1 }, "the config naming a missing file was not rejected")
	gw.waitLog(t, `"msg":"a watched file is missing, empty or unreadable; the running config keeps serving"`, `"path":"`+later+`"`)
	if got := gw.generation(); got != "0" {
		t.Errorf("after a rejected edit the gateway serves generation %q, want 0", got)
	}

	testkit.WriteFile(t, later, "token-later-0123456789")
	testkit.Eventually(t, 5*time.Second, func() bool {
		resp, err := testkit.TryDo("GET", gw.url+"/x", "")
		return err == nil && resp.Status == 200 && up.Last(t).Header.Get("Authorization") == "Bearer token-later-0123456789"
	}, fmt.Sprintf("the config was not reloaded when its secret file arrived\n%s", gw.logs))
	gw.waitLog(t, `"reason":"secret file changed"`, `"path":"`+later+`"`)
	testkit.Eventually(t, 5*time.Second, func() bool { return gw.reloads(t, "success") == 1 }, "the reload was not counted")
	if n := gw.reloads(t, "failure"); n != 1 {
		t.Errorf("reloads{failure} = %v, want 1: a rejected config is tried once per change", n)
	}
}

func TestWatchKeepsServingThroughAnInvalidEdit(t *testing.T) {
	up := testkit.NewUpstream(t, nil)
	site := newWatchSite(t)
	const reload = "{watch: true, debounce: 100ms}"
	file := filepath.Join(t.TempDir(), "sluice.yaml")
	testkit.WriteFile(t, file, site.doc(reload, genBody(up.URL, 0)))
	gw := runFile(t, site, file)
	gw.waitLog(t, watchingMsg)

	testkit.WriteFile(t, file, site.doc(reload, "routes: {r: {path: \"/{p:*}\", upstream: nowhere}}\n"))
	testkit.Eventually(t, 5*time.Second, func() bool { return gw.reloads(t, "failure") == 1 }, "the invalid edit was not counted as a failed reload")
	gw.waitLog(t, `"msg":"config reload rejected; the previous config keeps serving"`, `routes.r.upstream: unknown upstream`)
	if got := gw.generation(); got != "0" {
		t.Errorf("after a rejected edit the gateway serves generation %q, want 0", got)
	}

	// An unparsable edit, reloaded at once by hand as well: the hand reload
	// and the watcher reject it once each, and the watcher does not retry
	// it. (A load that cannot parse the file returns no config to tell what
	// it read, so the watcher cannot know that the hand reload saw the same
	// content.)
	testkit.WriteFile(t, file, site.doc(reload, "routes: [\n"))
	if resp := testkit.Do(t, "POST", "http://"+site.admin+"/admin/reload", "", "Authorization", "Bearer "+watchAdminToken); resp.Status == 200 {
		t.Fatalf("POST /admin/reload accepted an unparsable file: %s", resp.Body)
	}
	testkit.Eventually(t, 5*time.Second, func() bool { return gw.reloads(t, "failure") >= 3 }, "the unparsable edit was not rejected by the watcher")

	testkit.WriteFile(t, file, site.doc(reload, genBody(up.URL, 1)))
	gw.waitGeneration(t, 1)
	testkit.Eventually(t, 5*time.Second, func() bool { return gw.reloads(t, "success") == 1 }, "the valid edit was not counted")
	if n := gw.reloads(t, "failure"); n != 3 {
		t.Errorf("reloads{failure} = %v, want 3: the invalid edit once, the unparsable one by hand and by the watcher\n%s", n, gw.logs)
	}
}

// stays checks, for a bounded while, that the gateway keeps serving gen and
// has not reloaded: the only way to see that nothing happens.
func (r *running) stays(t *testing.T, gen int, reloads float64, d time.Duration) {
	t.Helper()
	want := fmt.Sprint(gen)
	for end := time.Now().Add(d); time.Now().Before(end); time.Sleep(50 * time.Millisecond) {
		if got := r.generation(); got != want {
			t.Fatalf("the gateway serves generation %q, want %s: it reloaded\n%s", got, want, r.logs)
		}
	}
	if n := r.reloads(t, "success") + r.reloads(t, "failure"); n != reloads {
		t.Fatalf("%v reloads, want %v\n%s", n, reloads, r.logs)
	}
}

func TestWatchIsOffByDefaultAndFollowsReloads(t *testing.T) {
	up := testkit.NewUpstream(t, nil)
	site := newWatchSite(t)
	file := filepath.Join(t.TempDir(), "sluice.yaml")
	testkit.WriteFile(t, file, site.doc("", genBody(up.URL, 0)))
	gw := runFile(t, site, file)

	// Off: an edit changes nothing (watched for 1.5s, more than the default
	// debounce of 1s).
	testkit.WriteFile(t, file, site.doc("", genBody(up.URL, 1)))
	gw.stays(t, 0, 0, 1500*time.Millisecond)
	if gw.logLines(watchingMsg) != 0 {
		t.Errorf("the gateway watches its files with reload.watch off:\n%s", gw.logs)
	}

	// Switched on by a reload (POST /admin/reload): later edits reload.
	const on = "{watch: true, debounce: 100ms}"
	testkit.WriteFile(t, file, site.doc(on, genBody(up.URL, 2)))
	if resp := testkit.Do(t, "POST", "http://"+site.admin+"/admin/reload", "", "Authorization", "Bearer "+watchAdminToken); resp.Status != 200 {
		t.Fatalf("POST /admin/reload: %d %s", resp.Status, resp.Body)
	}
	gw.waitGeneration(t, 2)
	gw.waitLog(t, watchingMsg)
	testkit.WriteFile(t, file, site.doc(on, genBody(up.URL, 3)))
	gw.waitGeneration(t, 3)

	// Switched off by an edit it reloads: the edits after it do nothing.
	testkit.WriteFile(t, file, site.doc("{watch: false, debounce: 100ms}", genBody(up.URL, 4)))
	gw.waitGeneration(t, 4)
	gw.waitLog(t, `"msg":"stopped watching the config files (reload.watch is off)"`)
	testkit.WriteFile(t, file, site.doc("{watch: false, debounce: 100ms}", genBody(up.URL, 5)))
	gw.stays(t, 4, 3, time.Second)
}

// watcherGoroutines lists the goroutines of a config watcher or of fsnotify.
func watcherGoroutines() []string {
	buf := make([]byte, 1<<20)
	buf = buf[:runtime.Stack(buf, true)]
	var found []string
	for g := range strings.SplitSeq(string(buf), "\n\n") {
		if strings.Contains(g, "github.com/fsnotify/fsnotify.") || strings.Contains(g, "proxy.(*configWatcher)") {
			found = append(found, g)
		}
	}
	return found
}

func TestWatchStopsWithRun(t *testing.T) {
	up := testkit.NewUpstream(t, nil)
	site := newWatchSite(t)
	file := filepath.Join(t.TempDir(), "sluice.yaml")
	testkit.WriteFile(t, file, site.doc("{watch: true, debounce: 100ms}", genBody(up.URL, 0)))
	gw := runFile(t, site, file)
	gw.waitLog(t, watchingMsg)
	if len(watcherGoroutines()) == 0 {
		t.Fatal("no watcher goroutine found while watching: the check below would prove nothing")
	}
	// Shut down with a reload pending: the debounce timer is running.
	testkit.WriteFile(t, file, site.doc("{watch: true, debounce: 100ms}", genBody(up.URL, 1)))
	if err := gw.stop(); err != nil {
		t.Fatalf("proxy.Run: %v", err)
	}
	for deadline := time.Now().Add(5 * time.Second); len(watcherGoroutines()) > 0; time.Sleep(10 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("watcher goroutines left 5s after proxy.Run returned:\n%s", strings.Join(watcherGoroutines(), "\n\n"))
		}
	}
}
