// Command peers is Sluice's load test beside nginx, HAProxy and Varnish on
// loopback, self-contained in bench/. bench/run.sh runs it; the flags:
//
//	bench/run.sh [-quick] [-rounds 3] [-d 5s] [-ol-rounds 2] [-ol-d 4s] [-procs 1] ...
//
// It checks for the peers (naming the Debian packages to install), builds
// Sluice and two small Go servers of bench/cmd (origin, floor), starts every
// target on loopback with the configs in bench/ and bench/peers/, pinned with
// taskset: gateways on -gw-cpus (CPU 0), the origin and the load on -load-cpus
// (CPU 1). Then:
//
//  1. closed loop: wrk rounds interleaved across all targets, for req/s and
//     the gateway's CPU time per request;
//  2. open loop: bench/openloop at 25/50/80 % of nginx's measured req/s, for
//     latency percentiles from each request's intended send time, and the
//     latency each gateway adds over a direct connection to the origin.
//
// It prints one table, writes the raw results (CSV, JSON) and PNG charts to
// bench/out/<UTC time>/, and stops every process it started. Every phase is
// bounded; the whole run has a deadline.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"syscall"
	"time"

	"github.com/sluice-gw/sluice/bench/openloop"
)

// apiKey is sent on every request to every target, so that the full chain's
// authenticate plugin does a real key lookup (bench/sluice-chain.yaml) and
// every target sees the same bytes.
var apiKey = [2]string{"X-Api-Key", "loadtest-key-0123456789"}

const originAddr = "127.0.0.1:28080"

// A target is one address under load: a gateway configuration, or the origin.
type target struct {
	Name   string `json:"name"`
	Group  string `json:"group"` // "direct", "pass" (pass-through) or "cache" (cache hits)
	Port   int    `json:"port"`
	About  string `json:"about"`
	server string // the server whose CPU is counted
	open   bool   // measured in the open-loop phase too
}

// peer is an outside program a target needs, with its Debian package.
type peer struct{ bin, pkg string }

var peerOf = map[string]peer{
	"nginx": {"nginx", "nginx-light"}, "nginx-cache": {"nginx", "nginx-light"},
	"haproxy": {"haproxy", "haproxy"}, "haproxy-cache": {"haproxy", "haproxy"},
	"varnish-cache": {"varnishd", "varnish"},
}

func allTargets() []target {
	return []target{
		{Name: "direct", Group: "direct", Port: 28080, About: "the origin itself, no gateway (CPU: the origin's, on the load core)", server: "origin", open: true},
		{Name: "floor", Group: "pass", Port: 28083, About: "bare fasthttp handler calling HostClient.Do (bench/cmd/floor)", server: "floor", open: true},
		{Name: "nginx", Group: "pass", Port: 28081, About: "nginx proxy_pass, keep-alive upstream", server: "nginx", open: true},
		{Name: "haproxy", Group: "pass", Port: 28082, About: "HAProxy, http-reuse always", server: "haproxy", open: true},
		{Name: "sluice", Group: "pass", Port: 28086, About: "Sluice pass-through (bench/sluice-pass.yaml)", server: "sluice-pass", open: true},
		{Name: "sluice-chain", Group: "pass", Port: 28087, About: "Sluice, full plugin chain (bench/sluice-chain.yaml)", server: "sluice-chain", open: true},
		{Name: "nginx-cache", Group: "cache", Port: 28091, About: "nginx proxy_cache hits", server: "nginx"},
		{Name: "haproxy-cache", Group: "cache", Port: 28092, About: "HAProxy cache hits", server: "haproxy"},
		{Name: "varnish-cache", Group: "cache", Port: 28094, About: "Varnish cache hits", server: "varnish"},
		{Name: "sluice-cache", Group: "cache", Port: 28096, About: "Sluice cache hits (bench/sluice-cache.yaml)", server: "sluice-cache"},
	}
}

type options struct {
	rounds, olRounds, conns, olConns, procs int
	dur, olDur, warmup                      time.Duration
	rates                                   []float64
	gwCPUs, loadCPUs, allCPUs, out, only    string
	skipMissing, quick, latest              bool
}

func main() {
	var o options
	var rates string
	flag.IntVar(&o.rounds, "rounds", 3, "closed-loop rounds (each runs every target once, in rotated order)")
	flag.DurationVar(&o.dur, "d", 5*time.Second, "closed-loop run per target and round")
	flag.DurationVar(&o.warmup, "warmup", time.Second, "closed-loop warm-up per target before round 1 (fills caches, opens upstream connections)")
	flag.IntVar(&o.conns, "c", 50, "wrk connections")
	flag.IntVar(&o.olRounds, "ol-rounds", 2, "open-loop rounds (each runs every rate and open-loop target once)")
	flag.DurationVar(&o.olDur, "ol-d", 4*time.Second, "open-loop run per target, rate and round")
	flag.IntVar(&o.olConns, "ol-c", 128, "open-loop connections (requests beyond them queue and their wait counts)")
	flag.StringVar(&rates, "rates", "0.25,0.5,0.8", "open-loop rates as fractions of nginx's closed-loop req/s")
	flag.IntVar(&o.procs, "procs", 1, "gateway parallelism: Go GOMAXPROCS, nginx workers, HAProxy threads")
	flag.StringVar(&o.gwCPUs, "gw-cpus", "", "CPUs for the gateways (taskset list); default 0, or 0..procs-1")
	flag.StringVar(&o.loadCPUs, "load-cpus", "", "CPUs for the origin and the load; default the CPU after the gateways', or all when none is left")
	flag.StringVar(&o.out, "out", "", "output directory (default bench/out/<UTC time>)")
	flag.StringVar(&o.only, "only", "", "comma-separated target names to run (direct and nginx are always kept: the open loop needs them)")
	flag.BoolVar(&o.skipMissing, "skip-missing", false, "run without the peers that are not installed, instead of stopping")
	flag.BoolVar(&o.latest, "latest", false, "also copy the table, raw results and charts to bench/latest/ (what README.md links; commit them with the commit they measured)")
	flag.BoolVar(&o.quick, "quick", false, "smoke run: 1 round of 2 s, 1 open-loop round of 2 s (about 2 minutes with the builds); numbers are not meant to be read")
	flag.Parse()
	if o.quick {
		o.rounds, o.dur, o.warmup, o.olRounds, o.olDur = 1, 2*time.Second, 500*time.Millisecond, 1, 2*time.Second
	}
	for _, f := range strings.Split(rates, ",") {
		var r float64
		if _, err := fmt.Sscan(strings.TrimSpace(f), &r); err != nil || r <= 0 || r > 2 {
			fatalf("-rates: %q is not a fraction in (0, 2]", f)
		}
		o.rates = append(o.rates, r)
	}
	if o.rounds < 1 || o.olRounds < 0 || o.dur < time.Second || o.procs < 1 || (o.olRounds > 0 && o.olDur < time.Second) {
		fatalf("need -rounds >= 1, -ol-rounds >= 0, -d and -ol-d >= 1s, -procs >= 1")
	}
	// The harness (wrk, the open-loop generator) runs on the load CPUs: it
	// pins itself by running again under taskset, handing over the CPU
	// layout it chose (once pinned, it sees only the load CPUs).
	if pinned := strings.Split(os.Getenv("SLUICE_BENCH_PINNED"), "/"); len(pinned) == 3 {
		o.gwCPUs, o.loadCPUs, o.allCPUs = pinned[0], pinned[1], pinned[2]
	} else {
		if err := defaultCPUs(&o); err != nil {
			fatalf("%v", err)
		}
		pinSelf(o.gwCPUs + "/" + o.loadCPUs + "/" + o.allCPUs)
	}
	// The open-loop dispatcher sleeps on its own thread: two Ps even on one CPU.
	runtime.GOMAXPROCS(max(2, runtime.NumCPU()))

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, o); err != nil {
		fatalf("%v", err)
	}
}

func fatalf(format string, a ...any) {
	fmt.Fprintf(os.Stderr, "bench: "+format+"\n", a...)
	os.Exit(2)
}

func logf(format string, a ...any) {
	fmt.Fprintf(os.Stderr, "%s "+format+"\n", append([]any{time.Now().UTC().Format("15:04:05")}, a...)...)
}

func defaultCPUs(o *options) error {
	n := runtime.NumCPU()
	o.allCPUs = fmt.Sprintf("0-%d", n-1)
	if o.gwCPUs == "" {
		o.gwCPUs = "0"
		if k := min(o.procs, n); k > 1 {
			o.gwCPUs = fmt.Sprintf("0-%d", k-1)
		}
	}
	gw, err := parseCPUs(o.gwCPUs)
	if err != nil {
		return fmt.Errorf("-gw-cpus: %w", err)
	}
	if o.loadCPUs == "" {
		var rest []string
		for i := range n {
			if !gw[i] {
				rest = append(rest, fmt.Sprint(i))
			}
		}
		if len(rest) == 0 {
			o.loadCPUs = fmt.Sprintf("0-%d", n-1)
		} else {
			o.loadCPUs = rest[0]
		}
	}
	if _, err := parseCPUs(o.loadCPUs); err != nil {
		return fmt.Errorf("-load-cpus: %w", err)
	}
	return nil
}

func pinSelf(layout string) {
	cpus := strings.Split(layout, "/")[1]
	exe, err := os.Executable()
	if err != nil {
		fatalf("%v", err)
	}
	taskset, err := exec.LookPath("taskset")
	if err != nil {
		fatalf("taskset not found: apt-get install -y util-linux")
	}
	env := append(os.Environ(), "SLUICE_BENCH_PINNED="+layout)
	err = syscall.Exec(taskset, append([]string{"taskset", "-c", cpus, exe}, os.Args[1:]...), env)
	fatalf("exec taskset: %v", err)
}

// budget is how long the measurements take, without builds and start-up.
func budget(o options) time.Duration {
	n := len(allTargets())
	closed := time.Duration(n)*o.warmup + time.Duration(o.rounds*n)*(o.dur+time.Second)
	open := time.Duration(o.olRounds*len(o.rates)*6) * (o.olDur + time.Second)
	return closed + open
}

func run(ctx context.Context, o options) error {
	root, err := repoRoot()
	if err != nil {
		return err
	}
	targets := allTargets()
	if o.only != "" {
		keep := strings.Split(o.only, ",")
		targets = slices.DeleteFunc(targets, func(t target) bool {
			return t.Name != "direct" && t.Name != "nginx" && !slices.Contains(keep, t.Name)
		})
	}

	// 1. The peers: installed, or named with their Debian packages.
	need := []string{"wrk", "taskset", "go"}
	missing := map[string]string{}
	for _, t := range targets {
		if p, ok := peerOf[t.Name]; ok {
			if _, err := exec.LookPath(p.bin); err != nil {
				missing[p.bin] = p.pkg
			}
		}
	}
	for _, b := range need {
		if _, err := exec.LookPath(b); err != nil {
			missing[b] = map[string]string{"wrk": "wrk", "taskset": "util-linux", "go": "golang (or go.dev/dl)"}[b]
		}
	}
	if len(missing) > 0 {
		var bins, pkgs []string
		for b, p := range missing {
			bins, pkgs = append(bins, b), append(pkgs, p)
		}
		slices.Sort(bins)
		slices.Sort(pkgs)
		pkgs = slices.Compact(pkgs)
		msg := fmt.Sprintf("not installed: %s; on Debian or Ubuntu: apt-get install -y %s", strings.Join(bins, ", "), strings.Join(pkgs, " "))
		_, nginxMissing := missing["nginx"]
		_, wrkMissing := missing["wrk"]
		if !o.skipMissing || nginxMissing || wrkMissing || missing["taskset"] != "" || missing["go"] != "" {
			return errors.New(msg + " (wrk, nginx, taskset and go are always needed; -skip-missing runs without the other peers)")
		}
		logf("%s; running without them (-skip-missing)", msg)
		targets = slices.DeleteFunc(targets, func(t target) bool {
			p, ok := peerOf[t.Name]
			return ok && missing[p.bin] != ""
		})
	}

	// 2. Output directory, builds.
	stamp := time.Now().UTC().Format("20060102-150405")
	out := o.out
	if out == "" {
		out = filepath.Join(root, "bench", "out", stamp)
	}
	for _, d := range []string{"bin", "logs", "nginx/logs", "nginx/tmp", "nginx/cache", "varnish"} {
		if err := os.MkdirAll(filepath.Join(out, d), 0o755); err != nil {
			return err
		}
	}
	// nginx's workers run as nobody when started by root: they write its cache.
	for _, d := range []string{"nginx/tmp", "nginx/cache"} {
		_ = os.Chmod(filepath.Join(out, d), 0o777)
	}
	// Bounded: builds get 15 minutes (a loaded machine), the measurements
	// their planned time and 3 minutes more.
	buildCtx, cancelBuild := context.WithTimeout(ctx, 15*time.Minute)
	defer cancelBuild()
	bin := filepath.Join(out, "bin")
	logf("building sluice, origin and floor into %s", bin)
	for _, b := range [][2]string{{"sluice", "./cmd/sluice"}, {"origin", "./bench/cmd/origin"}, {"floor", "./bench/cmd/floor"}} {
		// on every CPU: the harness itself is pinned to the load CPUs
		cmd := exec.CommandContext(buildCtx, "taskset", "-c", o.allCPUs, "go", "build", "-o", filepath.Join(bin, b[0]), b[1])
		cmd.Dir, cmd.Stdout, cmd.Stderr = root, os.Stderr, os.Stderr
		if err := cmd.Run(); err != nil {
			return fmt.Errorf("go build %s: %w", b[1], err)
		}
	}
	for _, c := range []string{"pass", "chain", "cache"} {
		cmd := exec.CommandContext(ctx, filepath.Join(bin, "sluice"), "validate", "-config", filepath.Join(root, "bench", "sluice-"+c+".yaml"))
		if b, err := cmd.CombinedOutput(); err != nil {
			return fmt.Errorf("bench/sluice-%s.yaml does not validate: %v\n%s", c, err, b)
		}
	}
	meta := describe(ctx, root, o, targets)
	ctx, cancel := context.WithTimeout(ctx, budget(o)+3*time.Minute)
	defer cancel()

	// 3. Start everything; stop it on every way out.
	ports := []int{28080, 29086, 29087, 29096}
	for _, t := range targets {
		ports = append(ports, t.Port)
	}
	if err := portsFree(ports...); err != nil {
		return err
	}
	servers := map[string]*proc{}
	defer func() {
		for name, p := range servers {
			p.stop()
			logf("stopped %s (pid %d)", name, p.pid())
		}
	}()
	procsEnv := fmt.Sprintf("GOMAXPROCS=%d", o.procs)
	peersDir := filepath.Join(root, "bench", "peers")
	cmds := map[string]struct {
		cpus string
		env  []string
		argv []string
	}{
		"origin":       {o.loadCPUs, []string{"GOMAXPROCS=1"}, []string{filepath.Join(bin, "origin"), "-addr", originAddr}},
		"floor":        {o.gwCPUs, []string{procsEnv}, []string{filepath.Join(bin, "floor"), "-addr", "127.0.0.1:28083", "-upstream", originAddr}},
		"sluice-pass":  {o.gwCPUs, []string{procsEnv}, []string{filepath.Join(bin, "sluice"), "-config", filepath.Join(root, "bench", "sluice-pass.yaml")}},
		"sluice-chain": {o.gwCPUs, []string{procsEnv}, []string{filepath.Join(bin, "sluice"), "-config", filepath.Join(root, "bench", "sluice-chain.yaml")}},
		"sluice-cache": {o.gwCPUs, []string{procsEnv}, []string{filepath.Join(bin, "sluice"), "-config", filepath.Join(root, "bench", "sluice-cache.yaml")}},
		"nginx": {o.gwCPUs, nil, []string{"nginx", "-p", filepath.Join(out, "nginx") + "/", "-e", "logs/error.log",
			"-c", filepath.Join(peersDir, "nginx.conf"), "-g", fmt.Sprintf("worker_processes %d;", o.procs)}},
		"haproxy": {o.gwCPUs, []string{fmt.Sprintf("BENCH_THREADS=%d", o.procs)}, []string{"haproxy", "-db", "-f", filepath.Join(peersDir, "haproxy.cfg")}},
		"varnish": {o.gwCPUs, nil, []string{"varnishd", "-F", "-n", filepath.Join(out, "varnish"), "-a", "127.0.0.1:28094",
			"-T", "127.0.0.1:0", "-f", filepath.Join(peersDir, "varnish.vcl"), "-s", "malloc,64m", "-p", "thread_pools=1"}},
	}
	startServer := func(name string) error {
		if _, ok := servers[name]; ok {
			return nil
		}
		c := cmds[name]
		p, err := start(out, name, c.cpus, c.env, c.argv...)
		if err != nil {
			return err
		}
		servers[name] = p
		logf("started %s (pid %d) on CPU %s", name, p.pid(), c.cpus)
		return nil
	}
	if err := startServer("origin"); err != nil {
		return err
	}
	if err := waitReady(ctx, servers["origin"], "http://"+originAddr+"/json", apiKey); err != nil {
		return err
	}
	for _, t := range targets {
		if err := startServer(t.server); err != nil {
			return err
		}
	}
	for _, t := range targets {
		if err := waitReady(ctx, servers[t.server], fmt.Sprintf("http://127.0.0.1:%d/json", t.Port), apiKey); err != nil {
			return err
		}
	}
	gwSet, _ := parseCPUs(o.gwCPUs)
	m := &measurer{o: o, root: root, servers: servers, gwSet: gwSet}

	// 4. Closed loop.
	logf("closed loop: %d targets x %d rounds x %v (wrk -t1 -c%d), warm-up %v each", len(targets), o.rounds, o.dur, o.conns, o.warmup)
	var closed []closedRow
	if o.warmup > 0 {
		for _, t := range targets {
			if _, err := m.wrk(ctx, t, o.warmup); err != nil {
				return fmt.Errorf("warm-up of %s: %w", t.Name, err)
			}
		}
	}
	slot, slots := 0, o.rounds*len(targets)
	for r := range o.rounds {
		for i := range targets {
			t := targets[(i+r)%len(targets)] // rotate: no target always runs first
			slot++
			row, err := m.closed(ctx, t, r+1)
			if err != nil {
				return err
			}
			closed = append(closed, row)
			logf("[%d/%d] closed round %d %-13s %8.0f req/s  %5.1f µs/req  p99 %5.2f ms  origin %3.0f%%%s",
				slot, slots, r+1, t.Name, row.RPS, row.CPUus, float64(row.P99us)/1e3, 100*row.OriginShare, row.flag())
		}
	}

	// 5. Open loop at fractions of nginx's saturation.
	sat := median(pick(closed, "nginx", func(r closedRow) float64 { return r.RPS }))
	var open []openRow
	if o.olRounds > 0 {
		var ol []target
		for _, t := range targets {
			if t.open {
				ol = append(ol, t)
			}
		}
		logf("open loop: nginx saturated at %.0f req/s; rates %v of it; %d targets x %d rounds x %v, %d connections",
			sat, o.rates, len(ol), o.olRounds, o.olDur, o.olConns)
		slot, slots = 0, o.olRounds*len(o.rates)*len(ol)
		for r := range o.olRounds {
			for _, frac := range o.rates {
				for i := range ol {
					t := ol[(i+r)%len(ol)]
					slot++
					row, err := m.openLoop(ctx, t, r+1, frac, frac*sat)
					if err != nil {
						return err
					}
					open = append(open, row)
					logf("[%d/%d] open round %d %3.0f%% %-13s %6.0f req/s  p50 %6.0f µs  p99 %6.0f µs  p99.9 %6.0f µs  %5.1f µs/req%s",
						slot, slots, r+1, 100*frac, t.Name, row.Rate, row.P50us, row.P99us, row.P999us, row.CPUus, row.flag())
				}
			}
		}
	}
	meta.Finished = time.Now().UTC()
	meta.LoadAvg = loadAvg()

	// 6. Results.
	sum := summarize(targets, closed, open, m.hists, o.rates, sat)
	table := renderTable(sum, o)
	fmt.Print(table)
	if err := writeResults(out, meta, sum, closed, open, table); err != nil {
		return err
	}
	if err := drawCharts(out, sum, meta); err != nil {
		return fmt.Errorf("charts: %w", err)
	}
	logf("raw results, charts and logs: %s", out)
	if o.latest {
		dst := filepath.Join(root, "bench", "latest")
		if err := os.MkdirAll(dst, 0o755); err != nil {
			return err
		}
		for _, f := range []string{"table.txt", "results.json", "closed.csv", "openloop.csv", "cpu.png", "latency.png"} {
			b, err := os.ReadFile(filepath.Join(out, f))
			if err != nil {
				return err
			}
			if err := os.WriteFile(filepath.Join(dst, f), b, 0o644); err != nil {
				return err
			}
		}
		logf("copied to %s (results of commit %s%s)", dst, meta.Commit, map[bool]string{true: " with uncommitted changes", false: ""}[meta.Dirty])
	}
	return nil
}

// measurer runs the load and reads the counters around it.
type measurer struct {
	o       options
	root    string
	servers map[string]*proc
	gwSet   map[int]bool
	hists   map[string]*histPair // open loop, merged over rounds, by target and rate
}

// counters is a snapshot taken before and after each run.
type counters struct {
	cpu, busy, origin int64
	at                time.Time
}

func (m *measurer) snap(t target) (counters, error) {
	var c counters
	var err error
	if c.cpu, err = treeCPU(m.servers[t.server].pid()); err != nil {
		return c, fmt.Errorf("%s: %w", t.server, err)
	}
	if c.busy, err = cpuBusy(m.gwSet); err != nil {
		return c, err
	}
	if c.origin, err = originCount(originAddr); err != nil {
		return c, err
	}
	c.at = time.Now()
	return c, nil
}

func (m *measurer) closed(ctx context.Context, t target, round int) (closedRow, error) {
	before, err := m.snap(t)
	if err != nil {
		return closedRow{}, err
	}
	w, err := m.wrk(ctx, t, m.o.dur)
	if err != nil {
		return closedRow{}, fmt.Errorf("%s: %w", t.Name, err)
	}
	after, err := m.snap(t)
	if err != nil {
		return closedRow{}, err
	}
	n := float64(max(w.Requests, 1))
	row := closedRow{
		Round: round, Target: t.Name, Group: t.Group, Requests: w.Requests, Seconds: w.Seconds,
		RPS: float64(w.Requests) / w.Seconds, P50us: w.P50, P99us: w.P99, P999us: w.P999,
		Non2xx: w.Status, SocketErrors: w.Connect + w.Read + w.Write + w.Timeout,
		CPUus:       float64(after.cpu-before.cpu) / n,
		GwCPUBusyUs: float64(after.busy-before.busy) / n,
		OriginShare: float64(after.origin-before.origin) / n,
	}
	return row, nil
}

func (m *measurer) openLoop(ctx context.Context, t target, round int, frac, rate float64) (openRow, error) {
	before, err := m.snap(t)
	if err != nil {
		return openRow{}, err
	}
	res, err := openloop.Run(ctx, openloop.Config{
		Addr: fmt.Sprintf("127.0.0.1:%d", t.Port), Path: "/json", Header: [][2]string{apiKey},
		Rate: rate, Duration: m.o.olDur, Conns: m.o.olConns,
	})
	if err != nil {
		return openRow{}, fmt.Errorf("open loop %s at %.0f/s: %w", t.Name, rate, err)
	}
	after, err := m.snap(t)
	if err != nil {
		return openRow{}, err
	}
	if m.hists == nil {
		m.hists = map[string]*histPair{}
	}
	k := histKey(t.Name, frac)
	if m.hists[k] == nil {
		m.hists[k] = &histPair{lat: openloop.NewHistogram(), lag: openloop.NewHistogram()}
	}
	m.hists[k].lat.Merge(res.Latency)
	m.hists[k].lag.Merge(res.Lag)
	n := float64(max(res.Completed+res.BadStatus, 1))
	return openRow{
		Round: round, Target: t.Name, Fraction: frac, Rate: rate, Scheduled: res.Scheduled, Completed: res.Completed,
		BadStatus: res.BadStatus, Errors: res.Errors, Unsent: res.Unsent,
		P50us: float64(res.Quantile(50)), P99us: float64(res.Quantile(99)), P999us: float64(res.Quantile(99.9)),
		Maxus: float64(res.Latency.Max()), ServiceP99us: float64(res.Service.ValueAtQuantile(99)),
		LagP99us: float64(res.Lag.ValueAtQuantile(99)), CPUus: float64(after.cpu-before.cpu) / n,
		OriginShare: float64(after.origin-before.origin) / n,
	}, nil
}
