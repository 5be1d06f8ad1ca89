package main

import (
	"bytes"
	"context"
	"fmt"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"time"
)

// wrkResult is what bench/peers/wrk-report.lua prints after a wrk run.
type wrkResult struct {
	Requests                      int64
	Seconds                       float64
	Status                        int64 // non-2xx/3xx answers
	Connect, Read, Write, Timeout int64 // socket errors
	P50, P99, P999                int64 // µs, closed loop
}

// wrk runs one thread with -c connections against t for d. The harness is
// pinned to the load CPUs, and wrk inherits that.
func (m *measurer) wrk(ctx context.Context, t target, d time.Duration) (wrkResult, error) {
	secs := max(int(d.Round(time.Second)/time.Second), 1)
	ctx, cancel := context.WithTimeout(ctx, d+30*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, "wrk", "-t1", fmt.Sprintf("-c%d", m.o.conns), fmt.Sprintf("-d%ds", secs),
		"--timeout", "5s", "-H", apiKey[0]+": "+apiKey[1],
		"-s", filepath.Join(m.root, "bench", "peers", "wrk-report.lua"),
		fmt.Sprintf("http://127.0.0.1:%d/json", t.Port))
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	if err := cmd.Run(); err != nil {
		return wrkResult{}, fmt.Errorf("wrk: %v: %s", err, strings.TrimSpace(errb.String()))
	}
	return parseWrk(out.String())
}

func parseWrk(s string) (wrkResult, error) {
	var line string
	for _, l := range strings.Split(s, "\n") {
		if strings.HasPrefix(l, "BENCH ") {
			line = l
		}
	}
	if line == "" {
		return wrkResult{}, fmt.Errorf("wrk printed no BENCH line:\n%s", s)
	}
	v := map[string]int64{}
	for _, f := range strings.Fields(line)[1:] {
		k, val, ok := strings.Cut(f, "=")
		n, err := strconv.ParseInt(val, 10, 64)
		if !ok || err != nil {
			return wrkResult{}, fmt.Errorf("wrk: bad field %q in %q", f, line)
		}
		v[k] = n
	}
	for _, k := range []string{"requests", "duration_us", "status", "connect", "read", "write", "timeout", "p50", "p99", "p999"} {
		if _, ok := v[k]; !ok {
			return wrkResult{}, fmt.Errorf("wrk: %q missing from %q", k, line)
		}
	}
	if v["duration_us"] <= 0 {
		return wrkResult{}, fmt.Errorf("wrk: no duration in %q", line)
	}
	return wrkResult{
		Requests: v["requests"], Seconds: float64(v["duration_us"]) / 1e6, Status: v["status"],
		Connect: v["connect"], Read: v["read"], Write: v["write"], Timeout: v["timeout"],
		P50: v["p50"], P99: v["p99"], P999: v["p999"],
	}, nil
}
