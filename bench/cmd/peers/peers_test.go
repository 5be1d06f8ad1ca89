package main

import (
	"os"
	"os/exec"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/HdrHistogram/hdrhistogram-go"
	"github.com/sluice-gw/sluice/bench/openloop"
)

// The harness pieces that need no peers: CI runs these, never the load test.

func TestParseWrk(t *testing.T) {
	out := "Running 5s test @ http://127.0.0.1:28081/json\n" +
		"BENCH requests=250000 duration_us=5000000 status=3 connect=0 read=1 write=0 timeout=2 p50=812 p99=1850 p999=4200\n"
	w, err := parseWrk(out)
	if err != nil {
		t.Fatal(err)
	}
	if w.Requests != 250000 || w.Seconds != 5 || w.Status != 3 || w.Read+w.Timeout != 3 || w.P50 != 812 || w.P99 != 1850 || w.P999 != 4200 {
		t.Fatalf("parsed %+v", w)
	}
	for _, bad := range []string{
		"Running 5s test\n", // the Lua script did not run
		"BENCH requests=1 duration_us=0 status=0 connect=0 read=0 write=0 timeout=0 p50=1 p99=1 p999=1\n",
		"BENCH requests=1 duration_us=10 status=0 connect=0 read=0 write=0 timeout=0 p50=1 p99=1\n",
		"BENCH requests=x duration_us=10 status=0 connect=0 read=0 write=0 timeout=0 p50=1 p99=1 p999=1\n",
	} {
		if _, err := parseWrk(bad); err == nil {
			t.Errorf("parseWrk(%q) = nil error, want one", bad)
		}
	}
}

// TestTreeCPU starts a shell whose child burns CPU for a while and checks that
// the time shows up in the parent's tree (how nginx's and Varnish's workers
// are counted), not in an unrelated process's.
func TestTreeCPU(t *testing.T) {
	// The child counts to 20 million in shell builtins (no forks: their time
	// would go to the parent only once they exit), a few seconds at most.
	cmd := exec.Command("sh", "-c", `sh -c 'i=0; while [ $i -lt 20000000 ]; do i=$((i+1)); done' & wait`)
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { _ = syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL); _ = cmd.Wait() }()
	before, err := treeCPU(cmd.Process.Pid)
	if err != nil {
		t.Fatal(err)
	}
	time.Sleep(700 * time.Millisecond)
	after, err := treeCPU(cmd.Process.Pid)
	if err != nil {
		t.Fatal(err)
	}
	own, err := treeCPU(os.Getpid())
	if err != nil {
		t.Fatal(err)
	}
	// The child spins for 0.7 s of wall time; on a busy 2-core machine it
	// gets at least some of it. The parent shell itself only waits.
	if got := after - before; got < 50_000 {
		t.Fatalf("the tree of pid %d gained %d µs of CPU in 0.7 s of a spinning child; want >= 50 ms", cmd.Process.Pid, got)
	}
	if own <= 0 {
		t.Fatalf("this test process has %d µs of CPU", own)
	}
	if _, err := treeCPU(1 << 30); err == nil {
		t.Fatal("treeCPU of a pid that does not exist = nil error")
	}
}

func TestParseCPUs(t *testing.T) {
	set, err := parseCPUs("0,2-3")
	if err != nil || len(set) != 3 || !set[0] || !set[2] || !set[3] {
		t.Fatalf("parseCPUs(0,2-3) = %v, %v", set, err)
	}
	for _, bad := range []string{"", "a", "3-1", "1-x"} {
		if _, err := parseCPUs(bad); err == nil {
			t.Errorf("parseCPUs(%q) = nil error", bad)
		}
	}
	busy, err := cpuBusy(map[int]bool{0: true})
	if err != nil || busy <= 0 {
		t.Fatalf("cpuBusy(CPU 0) = %d, %v", busy, err)
	}
}

func TestOriginProblem(t *testing.T) {
	for _, c := range []struct {
		group string
		share float64
		bad   bool
	}{
		{"pass", 1, false}, {"pass", 0.5, true}, {"direct", 1.0, false},
		{"cache", 0.0001, false}, {"cache", 0.2, true}, {"cache", 1, true},
	} {
		if got := originProblem(c.group, c.share) != ""; got != c.bad {
			t.Errorf("originProblem(%s, %v) flagged = %v, want %v", c.group, c.share, got, c.bad)
		}
	}
}

// TestAddedLatency checks the table's arithmetic: added = target − direct,
// percentile by percentile, at the same rate.
func TestAddedLatency(t *testing.T) {
	hists := map[string]*histPair{}
	for name, base := range map[string]int64{"direct": 100, "sluice": 130} {
		h := &histPair{lat: newHist(), lag: newHist()}
		for i := int64(1); i <= 1000; i++ {
			_ = h.lat.RecordValue(base + i) // p50 = base+500, p99 = base+990
		}
		hists[histKey(name, 0.5)] = h
	}
	targets := []target{{Name: "direct", Group: "direct"}, {Name: "sluice", Group: "pass"}}
	closed := []closedRow{{Target: "direct", RPS: 10, CPUus: 1, OriginShare: 1}, {Target: "sluice", RPS: 9, CPUus: 2, OriginShare: 1}}
	s := summarize(targets, closed, nil, hists, []float64{0.5}, 1000)
	sl, _ := s.get("sluice")
	if len(sl.Open) != 1 || sl.Open[0].Rate != 500 {
		t.Fatalf("open-loop summary %+v", sl.Open)
	}
	if r := sl.Open[0]; r.Add50us != 30 || r.Add99us != 30 || r.Add999us != 30 {
		t.Fatalf("added latency p50 %v p99 %v p99.9 %v, want 30 each", r.Add50us, r.Add99us, r.Add999us)
	}
	table := renderTable(s, options{rounds: 1, olRounds: 1, procs: 1, gwCPUs: "0", loadCPUs: "1"})
	if !strings.Contains(table, "+30/+30/+30") || !strings.Contains(table, "600/1090/1099") {
		t.Fatalf("table does not show the added latency or direct's absolute one:\n%s", table)
	}
}

func newHist() *hdrhistogram.Histogram { return openloop.NewHistogram() }

// TestVerdict: a target counts as met only when every figure behind it is;
// a better closed-loop p99 does not hide a worse open-loop one.
func TestVerdict(t *testing.T) {
	s := summary{Targets: []targetSummary{
		{target: target{Name: "nginx"}, CPUus: 16, P99us: 2000, Open: []rateSummary{{Fraction: 0.5, P99us: 900, Add999us: 300}}},
		{target: target{Name: "sluice"}, CPUus: 15, P99us: 1500, Open: []rateSummary{{Fraction: 0.5, P99us: 1200, Add999us: 200}}},
		{target: target{Name: "sluice-chain"}, CPUus: 17},
		{target: target{Name: "haproxy-cache"}, CPUus: 9},
		{target: target{Name: "sluice-cache"}, CPUus: 11},
	}}
	v := verdict(s, false)
	for _, want := range []string{
		"pass-through CPU at or below nginx:   yes",
		"pass-through p99 at or below nginx:   NO ",
		"p99.9 added at or below nginx,  50%: yes",
		"full chain within 1.1x pass-through: NO ",
		"cache hits at or below HAProxy's:     NO ",
	} {
		if !strings.Contains(v, want) {
			t.Errorf("verdict lacks %q:\n%s", want, v)
		}
	}
	if strings.Contains(v, "indicative") || !strings.Contains(verdict(s, true), "indicative only") {
		t.Error("a noisy run must say its verdict is indicative, and only a noisy one")
	}
}
