package main

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/valyala/fasthttp"
)

// proc is a server the harness started, in its own process group, pinned
// with taskset (which execs the program: the PID is the program's).
type proc struct {
	name string
	cmd  *exec.Cmd
	log  string
	done chan struct{}
}

// start runs argv pinned to cpus, with env added, logging to dir/logs/name.log.
func start(dir, name, cpus string, env []string, argv ...string) (*proc, error) {
	logPath := filepath.Join(dir, "logs", name+".log")
	f, err := os.Create(logPath)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	cmd := exec.Command("taskset", append([]string{"-c", cpus}, argv...)...)
	cmd.Env = append(os.Environ(), env...)
	cmd.Stdout, cmd.Stderr = f, f
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("%s: %w", name, err)
	}
	p := &proc{name: name, cmd: cmd, log: logPath, done: make(chan struct{})}
	go func() { _ = cmd.Wait(); close(p.done) }()
	return p, nil
}

func (p *proc) pid() int { return p.cmd.Process.Pid }

func (p *proc) exited() bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

// stop ends the process group the harness started for p: SIGTERM, then
// SIGKILL after 5 s.
func (p *proc) stop() {
	if p.exited() {
		return
	}
	pgid := p.pid() // Setpgid: the group is the process's own PID
	_ = syscall.Kill(-pgid, syscall.SIGTERM)
	select {
	case <-p.done:
	case <-time.After(5 * time.Second):
		_ = syscall.Kill(-pgid, syscall.SIGKILL)
		<-p.done
	}
}

// tail returns the last lines of p's log, for error messages.
func (p *proc) tail() string {
	b, _ := os.ReadFile(p.log)
	lines := strings.Split(strings.TrimSpace(string(b)), "\n")
	if len(lines) > 8 {
		lines = lines[len(lines)-8:]
	}
	return strings.Join(lines, "\n")
}

// waitReady polls GET url until it answers 200, p exits or 20 s pass.
func waitReady(ctx context.Context, p *proc, url string, header [2]string) error {
	deadline := time.Now().Add(20 * time.Second)
	var last string
	for time.Now().Before(deadline) {
		if p.exited() {
			return fmt.Errorf("%s exited while starting; its log (%s) ends:\n%s", p.name, p.log, p.tail())
		}
		req, resp := fasthttp.AcquireRequest(), fasthttp.AcquireResponse()
		req.SetRequestURI(url)
		req.Header.Set(header[0], header[1])
		err := fasthttp.DoTimeout(req, resp, time.Second)
		code := resp.StatusCode()
		fasthttp.ReleaseRequest(req)
		fasthttp.ReleaseResponse(resp)
		if err == nil && code == 200 {
			return nil
		}
		last = fmt.Sprint(err)
		if err == nil {
			last = fmt.Sprintf("status %d", code)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(100 * time.Millisecond):
		}
	}
	return fmt.Errorf("%s: %s did not answer 200 within 20 s (last: %s); its log (%s) ends:\n%s", p.name, url, last, p.log, p.tail())
}

// portsFree fails naming the first port something already listens on.
func portsFree(ports ...int) error {
	for _, port := range ports {
		ln, err := net.Listen("tcp", fmt.Sprintf("127.0.0.1:%d", port))
		if err != nil {
			return fmt.Errorf("port %d on 127.0.0.1 is taken (another load test still running?): %w", port, err)
		}
		_ = ln.Close()
	}
	return nil
}

// clockTick is USER_HZ, the unit of /proc's CPU times: 100 on Linux
// (sysconf(_SC_CLK_TCK) is fixed at 100 for every architecture Go runs on).
const clockTick = 100

// treeCPU returns the user+system CPU time, in microseconds, of the process
// pid and all its descendants (nginx's and Varnish's workers are children of
// the process the harness started), from /proc/<pid>/stat, threads included.
func treeCPU(pid int) (int64, error) {
	ents, err := os.ReadDir("/proc")
	if err != nil {
		return 0, err
	}
	type st struct{ ppid, ticks int64 }
	all := map[int64]st{}
	for _, e := range ents {
		n, err := strconv.ParseInt(e.Name(), 10, 64)
		if err != nil {
			continue
		}
		b, err := os.ReadFile("/proc/" + e.Name() + "/stat")
		if err != nil {
			continue // exited meanwhile
		}
		// Fields after the command name, which is in parentheses and may
		// hold spaces: state ppid ... utime(14) stime(15).
		i := bytes.LastIndexByte(b, ')')
		if i < 0 {
			continue
		}
		f := strings.Fields(string(b[i+1:]))
		if len(f) < 13 {
			continue
		}
		ppid, _ := strconv.ParseInt(f[1], 10, 64)
		ut, _ := strconv.ParseInt(f[11], 10, 64)
		stime, _ := strconv.ParseInt(f[12], 10, 64)
		all[n] = st{ppid, ut + stime}
	}
	root := int64(pid)
	if _, ok := all[root]; !ok {
		return 0, fmt.Errorf("process %d is gone", pid)
	}
	in := map[int64]bool{root: true}
	for changed := true; changed; {
		changed = false
		for n, s := range all {
			if !in[n] && in[s.ppid] {
				in[n], changed = true, true
			}
		}
	}
	var ticks int64
	for n := range in {
		ticks += all[n].ticks
	}
	return ticks * (1e6 / clockTick), nil
}

// cpuBusy returns the busy time, in microseconds, of the CPUs in set, from
// /proc/stat (user nice system irq softirq steal; idle and iowait excluded).
// It counts whatever ran on those CPUs, other programs included.
func cpuBusy(set map[int]bool) (int64, error) {
	f, err := os.Open("/proc/stat")
	if err != nil {
		return 0, err
	}
	defer f.Close()
	var total int64
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		fields := strings.Fields(sc.Text())
		if len(fields) < 9 || !strings.HasPrefix(fields[0], "cpu") || fields[0] == "cpu" {
			continue
		}
		n, err := strconv.Atoi(fields[0][3:])
		if err != nil || !set[n] {
			continue
		}
		for _, i := range []int{1, 2, 3, 6, 7, 8} {
			v, _ := strconv.ParseInt(fields[i], 10, 64)
			total += v
		}
	}
	return total * (1e6 / clockTick), sc.Err()
}

// parseCPUs reads a taskset-style list ("0", "0,1", "0-3").
func parseCPUs(s string) (map[int]bool, error) {
	set := map[int]bool{}
	for _, part := range strings.Split(s, ",") {
		lo, hi, isRange := strings.Cut(strings.TrimSpace(part), "-")
		a, err := strconv.Atoi(lo)
		if err != nil {
			return nil, fmt.Errorf("bad CPU list %q", s)
		}
		b := a
		if isRange {
			if b, err = strconv.Atoi(hi); err != nil || b < a {
				return nil, fmt.Errorf("bad CPU list %q", s)
			}
		}
		for i := a; i <= b; i++ {
			set[i] = true
		}
	}
	return set, nil
}

// originCount reads how many requests the origin has served.
func originCount(addr string) (int64, error) {
	code, body, err := fasthttp.GetTimeout(nil, "http://"+addr+"/__count", 2*time.Second)
	if err != nil || code != 200 {
		return 0, fmt.Errorf("origin count: status %d, %v", code, err)
	}
	return strconv.ParseInt(string(body), 10, 64)
}
