package alerting_test

import (
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/knadh/koanf/parsers/yaml"
	"github.com/sluice-gw/sluice/internal/testkit"
)

// prometheus is a real Prometheus server started for one test, with its data
// in a temporary directory, listening on a free loopback port.
type prometheus struct {
	URL string
	out *testkit.SyncBuffer // its log
}

// promClient talks to Prometheus without keep-alive: no idle connection
// outlives a call (the package checks for leaked goroutines).
var promClient = &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{Proxy: nil, DisableKeepAlives: true}}

// startPrometheus writes config to dir/prometheus.yml, starts prometheus on
// it and waits until /-/ready answers 200. At cleanup the process group is
// killed and waited for.
func startPrometheus(t *testing.T, dir, config string) *prometheus {
	t.Helper()
	bin := testkit.Tool(t, "prometheus", "prometheus")
	file := filepath.Join(dir, "prometheus.yml")
	testkit.WriteFile(t, file, config)
	addr := freeAddr(t)
	p := &prometheus{URL: "http://" + addr, out: &testkit.SyncBuffer{}}
	cmd := exec.Command(bin,
		"--config.file="+file,
		"--storage.tsdb.path="+filepath.Join(dir, "data"),
		"--web.listen-address="+addr,
		"--log.level=warn")
	cmd.Dir = dir
	cmd.Stdout, cmd.Stderr = p.out, p.out
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		t.Fatalf("starting prometheus: %v", err)
	}
	exited := make(chan struct{})
	go func() { _ = cmd.Wait(); close(exited) }()
	t.Cleanup(func() {
		_ = syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
		<-exited
	})
	deadline := time.Now().Add(30 * time.Second)
	for {
		select {
		case <-exited:
			t.Fatalf("prometheus exited before it was ready:\n%s", p.out.String())
		default:
		}
		if resp, err := promClient.Get(p.URL + "/-/ready"); err == nil {
			_, _ = io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			if resp.StatusCode == 200 {
				return p
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("prometheus on %s not ready after 30s:\n%s", addr, p.out.String())
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// freeAddr returns a loopback address whose port was free a moment ago.
func freeAddr(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	_ = ln.Close()
	return addr
}

// api calls GET path?q and decodes the "data" member of a successful answer.
func (p *prometheus) api(path string, q url.Values, data any) error {
	u := p.URL + path
	if len(q) > 0 {
		u += "?" + q.Encode()
	}
	resp, err := promClient.Get(u)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		return err
	}
	var env struct {
		Status string          `json:"status"`
		Error  string          `json:"error"`
		Data   json.RawMessage `json:"data"`
	}
	if err := json.Unmarshal(body, &env); err != nil {
		return fmt.Errorf("%s: %d %.200s", path, resp.StatusCode, body)
	}
	if env.Status != "success" {
		return fmt.Errorf("%s: %s", path, env.Error)
	}
	return json.Unmarshal(env.Data, data)
}

// sample is one element of an instant vector.
type sample struct {
	Metric map[string]string `json:"metric"`
	Value  [2]any            `json:"value"` // [unix time, "value"]
}

func (s sample) value() string { v, _ := s.Value[1].(string); return v }

// query runs an instant query and returns its vector (a scalar becomes one
// sample without labels).
func (p *prometheus) query(expr string) ([]sample, error) {
	var data struct {
		ResultType string          `json:"resultType"`
		Result     json.RawMessage `json:"result"`
	}
	if err := p.api("/api/v1/query", url.Values{"query": {expr}}, &data); err != nil {
		return nil, err
	}
	switch data.ResultType {
	case "vector":
		var v []sample
		err := json.Unmarshal(data.Result, &v)
		return v, err
	case "scalar":
		var s [2]any
		err := json.Unmarshal(data.Result, &s)
		return []sample{{Value: s}}, err
	}
	return nil, fmt.Errorf("query %q: result type %s", expr, data.ResultType)
}

// describe renders a query's result for a failure message.
func (p *prometheus) describe(expr string) string {
	v, err := p.query(expr)
	if err != nil {
		return "error: " + err.Error()
	}
	if len(v) == 0 {
		return "empty (no series)"
	}
	var parts []string
	for _, s := range v {
		parts = append(parts, fmt.Sprintf("%v => %s", s.Metric, s.value()))
	}
	sort.Strings(parts)
	return strings.Join(parts, "; ")
}

// ruleAlert, rule and ruleGroup mirror GET /api/v1/rules.
type ruleAlert struct {
	Labels   map[string]string `json:"labels"`
	State    string            `json:"state"`
	ActiveAt string            `json:"activeAt"`
	Value    string            `json:"value"`
}

type rule struct {
	Name      string      `json:"name"`
	Query     string      `json:"query"`
	Duration  float64     `json:"duration"`
	State     string      `json:"state"`
	Health    string      `json:"health"`
	LastError string      `json:"lastError"`
	Alerts    []ruleAlert `json:"alerts"`
}

type ruleGroup struct {
	Name  string `json:"name"`
	File  string `json:"file"`
	Rules []rule `json:"rules"`
}

// alertRules returns the alerting rules by base name of their file, then by
// alert name.
func (p *prometheus) alertRules() (map[string]map[string]rule, error) {
	var data struct {
		Groups []ruleGroup `json:"groups"`
	}
	if err := p.api("/api/v1/rules", url.Values{"type": {"alert"}}, &data); err != nil {
		return nil, err
	}
	out := map[string]map[string]rule{}
	for _, g := range data.Groups {
		f := filepath.Base(g.File)
		if out[f] == nil {
			out[f] = map[string]rule{}
		}
		for _, r := range g.Rules {
			out[f][r.Name] = r
		}
	}
	return out, nil
}

// activeAlert returns the alert of r whose labels include every pair of
// want, if it is in one of the states.
func activeAlert(r rule, want map[string]string, states ...string) (ruleAlert, bool) {
	for _, a := range r.Alerts {
		ok := true
		for k, v := range want {
			if a.Labels[k] != v {
				ok = false
				break
			}
		}
		if !ok {
			continue
		}
		for _, s := range states {
			if a.State == s {
				return a, true
			}
		}
	}
	return ruleAlert{}, false
}

// rewriteFor copies the rule file src to dst with every rule's `for` set to
// d. The rules are parsed and written back as YAML (koanf's parser), not
// edited as text: expressions, labels and annotations stay as they are.
func rewriteFor(t *testing.T, src, dst, d string) {
	t.Helper()
	raw, err := os.ReadFile(src)
	if err != nil {
		t.Fatal(err)
	}
	doc, err := yaml.Parser().Unmarshal(raw)
	if err != nil {
		t.Fatalf("%s: %v", src, err)
	}
	groups, _ := doc["groups"].([]any)
	n := 0
	for _, g := range groups {
		gm, _ := g.(map[string]any)
		rules, _ := gm["rules"].([]any)
		for _, r := range rules {
			rm, _ := r.(map[string]any)
			if _, isAlert := rm["alert"]; isAlert {
				rm["for"] = d
				n++
			}
		}
	}
	if n == 0 {
		t.Fatalf("%s: no alerting rule found", src)
	}
	out, err := yaml.Parser().Marshal(doc)
	if err != nil {
		t.Fatal(err)
	}
	testkit.WriteFile(t, dst, string(out))
}

// exprParts splits a rule's expression (as Prometheus prints it) at its
// top-level and/or/unless, and drops the final comparison of each operand:
// what is left are the values the thresholds are applied to, which say why
// an alert is not active when the whole expression is empty.
func exprParts(q string) []string {
	var parts []string
	depth, start := 0, 0
	inQuote := false
	cut := func(end int) {
		parts = append(parts, strings.TrimSpace(q[start:end]))
	}
	for i := 0; i < len(q); i++ {
		c := q[i]
		switch {
		case inQuote:
			if c == '\\' {
				i++
			} else if c == '"' {
				inQuote = false
			}
		case c == '"':
			inQuote = true
		case c == '(' || c == '[' || c == '{':
			depth++
		case c == ')' || c == ']' || c == '}':
			depth--
		case depth == 0 && c == ' ':
			for _, op := range []string{" and ", " or ", " unless "} {
				if strings.HasPrefix(q[i:], op) {
					cut(i)
					start = i + len(op)
					i = start - 1
					break
				}
			}
		}
	}
	cut(len(q))
	for i, p := range parts {
		parts[i] = dropComparison(p)
	}
	return parts
}

// dropComparison returns the left side of the last top-level comparison of
// e (e itself when there is none).
func dropComparison(e string) string {
	depth, inQuote, last := 0, false, -1
	for i := 0; i < len(e); i++ {
		c := e[i]
		switch {
		case inQuote:
			if c == '\\' {
				i++
			} else if c == '"' {
				inQuote = false
			}
		case c == '"':
			inQuote = true
		case c == '(' || c == '[' || c == '{':
			depth++
		case c == ')' || c == ']' || c == '}':
			depth--
		case depth == 0 && (c == '>' || c == '<' || (c == '=' && i+1 < len(e) && e[i+1] == '=') || (c == '!' && i+1 < len(e) && e[i+1] == '=')):
			last = i
			if c == '=' || c == '!' || (i+1 < len(e) && e[i+1] == '=') {
				i++
			}
		}
	}
	if last < 0 {
		return e
	}
	return strings.TrimSpace(e[:last])
}

// explain renders the current values of a rule's parts (see exprParts).
func (p *prometheus) explain(query string) string {
	var b strings.Builder
	for _, part := range exprParts(query) {
		fmt.Fprintf(&b, "\n    %s\n      => %s", part, p.describe(part))
	}
	return b.String()
}
