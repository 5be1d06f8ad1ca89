package main

import (
	"bytes"
	"context"
	"encoding/csv"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/HdrHistogram/hdrhistogram-go"
)

type closedRow struct {
	Round        int     `json:"round"`
	Target       string  `json:"target"`
	Group        string  `json:"group"`
	Requests     int64   `json:"requests"`
	Seconds      float64 `json:"seconds"`
	RPS          float64 `json:"rps"`
	CPUus        float64 `json:"cpu_us_per_req"`         // the target's processes, /proc/<pid>/stat
	GwCPUBusyUs  float64 `json:"gw_cpu_busy_us_per_req"` // the gateway CPUs, /proc/stat, everything on them
	OriginShare  float64 `json:"origin_share"`           // origin requests per request sent
	P50us        int64   `json:"p50_us"`                 // wrk's, closed loop
	P99us        int64   `json:"p99_us"`
	P999us       int64   `json:"p999_us"`
	Non2xx       int64   `json:"non_2xx"`
	SocketErrors int64   `json:"socket_errors"`
}

func (r closedRow) flag() string {
	var f []string
	if r.Non2xx > 0 {
		f = append(f, fmt.Sprintf("%d non-2xx", r.Non2xx))
	}
	if r.SocketErrors > 0 {
		f = append(f, fmt.Sprintf("%d socket errors", r.SocketErrors))
	}
	if s := originProblem(r.Group, r.OriginShare); s != "" {
		f = append(f, s)
	}
	if len(f) == 0 {
		return ""
	}
	return "  ! " + strings.Join(f, ", ")
}

// originProblem says when the origin's count contradicts what the target is
// for: every request proxied, or (cache hits) almost none.
func originProblem(group string, share float64) string {
	switch {
	case group == "cache" && share > 0.01:
		return fmt.Sprintf("origin saw %.0f%% of requests: not cache hits", 100*share)
	case group != "cache" && (share < 0.99 || share > 1.01):
		return fmt.Sprintf("origin saw %.0f%% of requests", 100*share)
	}
	return ""
}

type openRow struct {
	Round        int     `json:"round"`
	Target       string  `json:"target"`
	Fraction     float64 `json:"fraction"`
	Rate         float64 `json:"rate"`
	Scheduled    int64   `json:"scheduled"`
	Completed    int64   `json:"completed"`
	BadStatus    int64   `json:"bad_status"`
	Errors       int64   `json:"errors"`
	Unsent       int64   `json:"unsent"`
	P50us        float64 `json:"p50_us"` // from the intended send time
	P99us        float64 `json:"p99_us"`
	P999us       float64 `json:"p999_us"`
	Maxus        float64 `json:"max_us"`
	ServiceP99us float64 `json:"service_p99_us"` // from the actual send: what a closed loop would report
	LagP99us     float64 `json:"generator_lag_p99_us"`
	CPUus        float64 `json:"cpu_us_per_req"`
	OriginShare  float64 `json:"origin_share"`
}

func (r openRow) flag() string {
	if n := r.BadStatus + r.Errors + r.Unsent; n > 0 {
		return fmt.Sprintf("  ! %d of %d not answered 2xx (bad %d, errors %d, unsent %d)", n, r.Scheduled, r.BadStatus, r.Errors, r.Unsent)
	}
	return ""
}

type histPair struct{ lat, lag *hdrhistogram.Histogram }

func histKey(name string, frac float64) string { return fmt.Sprintf("%s@%g", name, frac) }

type summary struct {
	Saturation float64         `json:"nginx_saturation_rps"`
	Targets    []targetSummary `json:"targets"`
}

type targetSummary struct {
	target
	Rounds   int     `json:"rounds"`
	RPS      float64 `json:"rps_median"`
	RPSMin   float64 `json:"rps_min"`
	RPSMax   float64 `json:"rps_max"`
	CPUus    float64 `json:"cpu_us_per_req_median"`
	CPUusMin float64 `json:"cpu_us_per_req_min"`
	CPUusMax float64 `json:"cpu_us_per_req_max"`
	GwBusyUs float64 `json:"gw_cpu_busy_us_per_req_median"`
	// GwShare is the target's own CPU time over the busy time of the
	// gateway CPUs while it ran: well below 1, other programs ran there.
	GwShare     float64       `json:"share_of_gateway_cpu_median"`
	P99us       float64       `json:"wrk_p99_us_median"`
	OriginShare float64       `json:"origin_share_median"`
	Problems    int64         `json:"problems"` // non-2xx, socket errors, unanswered: should be 0
	Open        []rateSummary `json:"open_loop,omitempty"`
}

// rateSummary is one target at one open-loop rate, over all rounds: the
// percentiles of the merged histogram, and the same minus the direct
// connection's at that rate (what the gateway adds).
type rateSummary struct {
	Fraction float64 `json:"fraction"`
	Rate     float64 `json:"rate"`
	Samples  int64   `json:"samples"`
	P50us    float64 `json:"p50_us"`
	P99us    float64 `json:"p99_us"`
	P999us   float64 `json:"p999_us"`
	Add50us  float64 `json:"added_p50_us"`
	Add99us  float64 `json:"added_p99_us"`
	Add999us float64 `json:"added_p999_us"`
	CPUus    float64 `json:"cpu_us_per_req_median"`
	LagP99us float64 `json:"generator_lag_p99_us"`
	Problems int64   `json:"problems"`
}

func summarize(targets []target, closed []closedRow, open []openRow, hists map[string]*histPair, rates []float64, sat float64) summary {
	s := summary{Saturation: sat}
	direct := map[float64][3]float64{}
	if hists != nil {
		for _, f := range rates {
			if h := hists[histKey("direct", f)]; h != nil {
				direct[f] = [3]float64{q(h.lat, 50), q(h.lat, 99), q(h.lat, 99.9)}
			}
		}
	}
	for _, t := range targets {
		ts := targetSummary{target: t}
		var rps, cpu, busy, p99, share, own []float64
		for _, r := range closed {
			if r.Target != t.Name {
				continue
			}
			ts.Rounds++
			rps, cpu, busy = append(rps, r.RPS), append(cpu, r.CPUus), append(busy, r.GwCPUBusyUs)
			p99, share = append(p99, float64(r.P99us)), append(share, r.OriginShare)
			ts.Problems += r.Non2xx + r.SocketErrors
			if r.GwCPUBusyUs > 0 {
				own = append(own, r.CPUus/r.GwCPUBusyUs)
			}
		}
		if len(rps) == 0 {
			continue
		}
		ts.RPS, ts.RPSMin, ts.RPSMax = median(rps), slices.Min(rps), slices.Max(rps)
		ts.CPUus, ts.CPUusMin, ts.CPUusMax = median(cpu), slices.Min(cpu), slices.Max(cpu)
		ts.GwBusyUs, ts.P99us, ts.OriginShare, ts.GwShare = median(busy), median(p99), median(share), median(own)
		for _, f := range rates {
			h := hists[histKey(t.Name, f)]
			if h == nil {
				continue
			}
			rs := rateSummary{Fraction: f, Rate: f * sat, Samples: h.lat.TotalCount(),
				P50us: q(h.lat, 50), P99us: q(h.lat, 99), P999us: q(h.lat, 99.9), LagP99us: q(h.lag, 99)}
			if d, ok := direct[f]; ok && t.Name != "direct" {
				rs.Add50us, rs.Add99us, rs.Add999us = rs.P50us-d[0], rs.P99us-d[1], rs.P999us-d[2]
			}
			var c []float64
			for _, r := range open {
				if r.Target == t.Name && r.Fraction == f {
					c = append(c, r.CPUus)
					rs.Problems += r.BadStatus + r.Errors + r.Unsent
				}
			}
			rs.CPUus = median(c)
			ts.Problems += rs.Problems
			ts.Open = append(ts.Open, rs)
		}
		s.Targets = append(s.Targets, ts)
	}
	return s
}

func q(h *hdrhistogram.Histogram, p float64) float64 { return float64(h.ValueAtQuantile(p)) }

func (s summary) get(name string) (targetSummary, bool) {
	for _, t := range s.Targets {
		if t.Name == name {
			return t, true
		}
	}
	return targetSummary{}, false
}

// renderTable is the run's one table, then the targets checked
// against it.
func renderTable(s summary, o options) string {
	var b bytes.Buffer
	tw := tabwriter.NewWriter(&b, 0, 0, 2, ' ', tabwriter.AlignRight)
	head1 := "target\treq/s\tµs/req\tgw CPU\twrk p99 ms\torigin\t"
	head2 := "\t(median)\t(CPU)\town %\t\t\t"
	var ref targetSummary
	for _, t := range s.Targets {
		if len(t.Open) > len(ref.Open) {
			ref = t
		}
	}
	for _, r := range ref.Open {
		head1 += fmt.Sprintf("%.0f%% = %.0f/s\t", 100*r.Fraction, r.Rate)
		head2 += "p50/p99/p99.9 µs\t"
	}
	fmt.Fprintln(tw, head1)
	fmt.Fprintln(tw, head2)
	for _, t := range s.Targets {
		own := "-" // direct: the origin runs on the load CPU
		if t.Group != "direct" {
			own = fmt.Sprintf("%.0f%%", 100*t.GwShare)
		}
		fmt.Fprintf(tw, "%s\t%.0f\t%.1f\t%s\t%.2f\t%.0f%%\t", t.Name, t.RPS, t.CPUus, own, t.P99us/1e3, 100*t.OriginShare)
		for _, r := range ref.Open {
			cell := "\t"
			for _, x := range t.Open {
				if x.Fraction != r.Fraction {
					continue
				}
				if t.Name == "direct" {
					cell = fmt.Sprintf("%.0f/%.0f/%.0f\t", x.P50us, x.P99us, x.P999us)
				} else {
					cell = fmt.Sprintf("%+.0f/%+.0f/%+.0f\t", x.Add50us, x.Add99us, x.Add999us)
				}
			}
			fmt.Fprint(tw, cell)
		}
		fmt.Fprintln(tw)
	}
	_ = tw.Flush()
	fmt.Fprintf(&b, "\nreq/s, µs/req (CPU time of the target's processes per request, user+system), wrk p99: medians of %d closed-loop rounds of %v.\n", o.rounds, o.dur)
	fmt.Fprintf(&b, "Open loop (%d rounds of %v per rate): direct = latency of a direct connection to the origin; other rows = latency added over it (+µs).\n", o.olRounds, o.olDur)
	fmt.Fprintf(&b, "Gateways on CPU %s (GOMAXPROCS / workers / threads = %d), origin and load on CPU %s.\n", o.gwCPUs, o.procs, o.loadCPUs)

	fmt.Fprintf(&b, "gw CPU own %%: the target's CPU time over all busy time of CPU %s while it ran (the rest: softirq work and other programs).\n", o.gwCPUs)
	var problems []string
	worst := 1.0
	for _, t := range s.Targets {
		if t.Group != "direct" && t.GwShare < worst {
			worst = t.GwShare
		}
		if t.Problems > 0 {
			problems = append(problems, fmt.Sprintf("%s: %d requests not answered 2xx", t.Name, t.Problems))
		}
		if p := originProblem(t.Group, t.OriginShare); p != "" {
			problems = append(problems, t.Name+": "+p)
		}
	}
	if worst < 0.5 {
		fmt.Fprintf(&b, "\nNOISY: up to %.0f%% of the gateway CPU's busy time was not the target's own (other programs, or softirq work):\nthe figures measure the machine's load as much as the targets. Rerun on a quiet machine.\n", 100*(1-worst))
	}
	if len(problems) > 0 {
		fmt.Fprintf(&b, "\nPROBLEMS (the figures above are not comparable until these are gone):\n  %s\n", strings.Join(problems, "\n  "))
	}
	b.WriteString(verdict(s, worst < 0.5 || len(problems) > 0))
	return b.String()
}

func verdict(s summary, unsure bool) string {
	var b bytes.Buffer
	yes := func(ok bool) string {
		if ok {
			return "yes"
		}
		return "NO"
	}
	b.WriteString("\nTargets of issue 17 in this run")
	if unsure {
		b.WriteString(" (NOISY or PROBLEMS above: indicative only, not a verdict)")
	}
	b.WriteString(":\n")
	ng, okN := s.get("nginx")
	sl, okS := s.get("sluice")
	if okN && okS {
		fmt.Fprintf(&b, "  pass-through CPU at or below nginx:   %-3s sluice %.1f µs/req vs nginx %.1f (%.2fx)\n", yes(sl.CPUus <= ng.CPUus), sl.CPUus, ng.CPUus, sl.CPUus/ng.CPUus)
		// p99 at the same load: wrk's, and the open loop's at every rate.
		ok := sl.P99us <= ng.P99us
		var detail strings.Builder
		for i := range min(len(sl.Open), len(ng.Open)) {
			ok = ok && sl.Open[i].P99us <= ng.Open[i].P99us
			fmt.Fprintf(&detail, "; open loop %.0f%%: %.0f vs %.0f µs", 100*sl.Open[i].Fraction, sl.Open[i].P99us, ng.Open[i].P99us)
		}
		fmt.Fprintf(&b, "  pass-through p99 at or below nginx:   %-3s wrk p99 %.2f ms vs %.2f ms%s\n", yes(ok), sl.P99us/1e3, ng.P99us/1e3, detail.String())
		for i := range min(len(sl.Open), len(ng.Open)) {
			a, n := sl.Open[i], ng.Open[i]
			fmt.Fprintf(&b, "  p99.9 added at or below nginx, %3.0f%%: %-3s sluice %+.0f µs vs nginx %+.0f µs\n", 100*a.Fraction, yes(a.Add999us <= n.Add999us), a.Add999us, n.Add999us)
		}
	}
	if ch, ok := s.get("sluice-chain"); ok && okS {
		fmt.Fprintf(&b, "  full chain within 1.1x pass-through: %-3s %.1f vs %.1f µs/req (%.2fx)\n", yes(ch.CPUus <= 1.1*sl.CPUus), ch.CPUus, sl.CPUus, ch.CPUus/sl.CPUus)
	}
	hc, okH := s.get("haproxy-cache")
	sc, okC := s.get("sluice-cache")
	if okH && okC {
		fmt.Fprintf(&b, "  cache hits at or below HAProxy's:     %-3s sluice %.1f µs/req vs HAProxy %.1f (%.2fx); allocations per hit: go test -run CacheHitAllocs ./bench\n", yes(sc.CPUus <= hc.CPUus), sc.CPUus, hc.CPUus, sc.CPUus/hc.CPUus)
	}
	return b.String()
}

type meta struct {
	Started      time.Time         `json:"started"`
	Finished     time.Time         `json:"finished"`
	Commit       string            `json:"commit"`
	Dirty        bool              `json:"dirty"`
	Go           string            `json:"go"`
	Kernel       string            `json:"kernel"`
	CPU          string            `json:"cpu"`
	NumCPU       int               `json:"num_cpu"`
	Procs        int               `json:"procs"`
	GwCPUs       string            `json:"gateway_cpus"`
	LoadCPUs     string            `json:"load_cpus"`
	Versions     map[string]string `json:"versions"`
	Options      map[string]string `json:"options"`
	LoadAvgStart string            `json:"loadavg_start"`
	LoadAvg      string            `json:"loadavg_end"`
	Accounting   string            `json:"cpu_accounting"`
}

func describe(ctx context.Context, root string, o options, targets []target) meta {
	sh := func(name string, args ...string) string {
		cmd := exec.CommandContext(ctx, name, args...)
		cmd.Dir = root
		b, _ := cmd.CombinedOutput()
		line, _, _ := strings.Cut(strings.TrimSpace(string(b)), "\n")
		return line
	}
	m := meta{
		Started: time.Now().UTC(), Commit: sh("git", "rev-parse", "HEAD"), Dirty: sh("git", "status", "--porcelain", "--untracked-files=no") != "",
		Go: runtime.Version(), Kernel: sh("uname", "-r"), NumCPU: runtime.NumCPU(),
		Procs: o.procs, GwCPUs: o.gwCPUs, LoadCPUs: o.loadCPUs, LoadAvgStart: loadAvg(),
		Versions: map[string]string{"wrk": sh("wrk", "-v")},
		Options: map[string]string{
			"rounds": strconv.Itoa(o.rounds), "d": o.dur.String(), "warmup": o.warmup.String(), "c": strconv.Itoa(o.conns),
			"ol-rounds": strconv.Itoa(o.olRounds), "ol-d": o.olDur.String(), "ol-c": strconv.Itoa(o.olConns),
			"rates": fmt.Sprint(o.rates), "quick": strconv.FormatBool(o.quick),
		},
		Accounting: "cpu_us_per_req: utime+stime of the target's process and its children (/proc/<pid>/stat), " +
			"so that other programs on a shared machine do not count; gw_cpu_busy_us_per_req: busy time of the gateway CPUs " +
			"(/proc/stat), which also counts softirq work of the loopback network done there and anything else that ran there",
	}
	if b, err := os.ReadFile("/proc/cpuinfo"); err == nil {
		for _, l := range strings.Split(string(b), "\n") {
			if k, v, ok := strings.Cut(l, ":"); ok && strings.TrimSpace(k) == "model name" {
				m.CPU = strings.TrimSpace(v)
				break
			}
		}
	}
	for _, t := range targets {
		if p, ok := peerOf[t.Name]; ok && m.Versions[p.bin] == "" {
			switch p.bin {
			case "nginx":
				m.Versions[p.bin] = sh("nginx", "-v")
			case "haproxy":
				m.Versions[p.bin] = sh("haproxy", "-v")
			case "varnishd":
				m.Versions[p.bin] = sh("varnishd", "-V")
			}
		}
	}
	return m
}

func loadAvg() string {
	b, _ := os.ReadFile("/proc/loadavg")
	return strings.TrimSpace(string(b))
}

func writeResults(out string, m meta, s summary, closed []closedRow, open []openRow, table string) error {
	js, err := json.MarshalIndent(struct {
		Meta    meta        `json:"meta"`
		Summary summary     `json:"summary"`
		Closed  []closedRow `json:"closed_loop"`
		Open    []openRow   `json:"open_loop"`
	}{m, s, closed, open}, "", "  ")
	if err != nil {
		return err
	}
	f := func(v float64) string { return strconv.FormatFloat(v, 'f', -1, 64) }
	i := func(v int64) string { return strconv.FormatInt(v, 10) }
	closedCSV := [][]string{{"round", "target", "group", "requests", "seconds", "rps", "cpu_us_per_req", "gw_cpu_busy_us_per_req", "origin_share", "p50_us", "p99_us", "p999_us", "non_2xx", "socket_errors"}}
	for _, r := range closed {
		closedCSV = append(closedCSV, []string{strconv.Itoa(r.Round), r.Target, r.Group, i(r.Requests), f(r.Seconds), f(r.RPS), f(r.CPUus), f(r.GwCPUBusyUs), f(r.OriginShare), i(r.P50us), i(r.P99us), i(r.P999us), i(r.Non2xx), i(r.SocketErrors)})
	}
	openCSV := [][]string{{"round", "target", "fraction", "rate", "scheduled", "completed", "bad_status", "errors", "unsent", "p50_us", "p99_us", "p999_us", "max_us", "service_p99_us", "generator_lag_p99_us", "cpu_us_per_req", "origin_share"}}
	for _, r := range open {
		openCSV = append(openCSV, []string{strconv.Itoa(r.Round), r.Target, f(r.Fraction), f(r.Rate), i(r.Scheduled), i(r.Completed), i(r.BadStatus), i(r.Errors), i(r.Unsent), f(r.P50us), f(r.P99us), f(r.P999us), f(r.Maxus), f(r.ServiceP99us), f(r.LagP99us), f(r.CPUus), f(r.OriginShare)})
	}
	var errs []error
	errs = append(errs, os.WriteFile(filepath.Join(out, "results.json"), append(js, '\n'), 0o644))
	errs = append(errs, os.WriteFile(filepath.Join(out, "table.txt"), []byte(table), 0o644))
	for name, rows := range map[string][][]string{"closed.csv": closedCSV, "openloop.csv": openCSV} {
		var b bytes.Buffer
		w := csv.NewWriter(&b)
		_ = w.WriteAll(rows)
		errs = append(errs, w.Error(), os.WriteFile(filepath.Join(out, name), b.Bytes(), 0o644))
	}
	return errors.Join(errs...)
}

func median(v []float64) float64 {
	if len(v) == 0 {
		return 0
	}
	s := slices.Clone(v)
	slices.Sort(s)
	if len(s)%2 == 1 {
		return s[len(s)/2]
	}
	return (s[len(s)/2-1] + s[len(s)/2]) / 2
}

func pick(rows []closedRow, name string, f func(closedRow) float64) []float64 {
	var v []float64
	for _, r := range rows {
		if r.Target == name {
			v = append(v, f(r))
		}
	}
	return v
}

// repoRoot is the directory of the go.mod of module github.com/sluice-gw/sluice
// at or above the working directory.
func repoRoot() (string, error) {
	dir, err := os.Getwd()
	if err != nil {
		return "", err
	}
	for {
		b, err := os.ReadFile(filepath.Join(dir, "go.mod"))
		if err == nil && bytes.HasPrefix(b, []byte("module github.com/sluice-gw/sluice\n")) {
			return dir, nil
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "", errors.New("run from inside the Sluice repository (no go.mod of github.com/sluice-gw/sluice above the working directory)")
		}
		dir = parent
	}
}
