package alerting_test

import (
	"encoding/json"
	"fmt"
	"net/url"
	"os"
	"regexp"
	"sort"
	"strings"
	"testing"
)

// dashboardQuery is one PromQL expression of the dashboard.
type dashboardQuery struct {
	Where string // panel title and target refId, or the variable name
	Expr  string // with the template variables substituted
	// Variable is set for a template variable's label_values(metric, label)
	// query: Expr is then the series selector and Label the label.
	Variable bool
	Label    string
}

// dashboardVars are the values the test gives the dashboard's template
// variables: the job the rules select, "All" (the variables' allValue .*)
// for the multi-value ones, and for $__rate_interval 1m, Grafana's value
// with its default 15s scrape interval (four scrape intervals).
var dashboardVars = map[string]string{
	"job":             "sluice",
	"instance":        ".*",
	"route":           ".*",
	"upstream":        ".*",
	"__rate_interval": "1m",
}

var (
	varRef      = regexp.MustCompile(`\$\{(\w+)(?::\w+)?\}|\$(\w+)`)
	labelValues = regexp.MustCompile(`^label_values\((.+),\s*(\w+)\)$`)
)

func substitute(expr string) (string, error) {
	var missing []string
	out := varRef.ReplaceAllStringFunc(expr, func(m string) string {
		sub := varRef.FindStringSubmatch(m)
		name := sub[1] + sub[2]
		v, ok := dashboardVars[name]
		if !ok {
			missing = append(missing, name)
			return m
		}
		return v
	})
	if len(missing) > 0 {
		return "", fmt.Errorf("no value for template variable(s) %v in %q", missing, expr)
	}
	return out, nil
}

// dashboardQueries reads every "expr" of every target of every panel (rows'
// panels included) and the query of every template variable of type query.
func dashboardQueries(t *testing.T, file string) []dashboardQuery {
	t.Helper()
	raw, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	type target struct {
		RefID string `json:"refId"`
		Expr  string `json:"expr"`
	}
	type panel struct {
		Title   string          `json:"title"`
		Targets []target        `json:"targets"`
		Panels  json.RawMessage `json:"panels"`
	}
	var dash struct {
		Panels     json.RawMessage `json:"panels"`
		Templating struct {
			List []struct {
				Type  string `json:"type"`
				Name  string `json:"name"`
				Query any    `json:"query"`
			} `json:"list"`
		} `json:"templating"`
	}
	if err := json.Unmarshal(raw, &dash); err != nil {
		t.Fatalf("%s: %v", file, err)
	}
	var out []dashboardQuery
	var walk func(json.RawMessage)
	walk = func(ps json.RawMessage) {
		if len(ps) == 0 {
			return
		}
		var list []panel
		if err := json.Unmarshal(ps, &list); err != nil {
			t.Fatalf("%s: panels: %v", file, err)
		}
		for _, p := range list {
			for _, tg := range p.Targets {
				if strings.TrimSpace(tg.Expr) == "" {
					t.Errorf("panel %q target %s has no expr", p.Title, tg.RefID)
					continue
				}
				e, err := substitute(tg.Expr)
				if err != nil {
					t.Errorf("panel %q: %v", p.Title, err)
					continue
				}
				out = append(out, dashboardQuery{Where: fmt.Sprintf("panel %q target %s", p.Title, tg.RefID), Expr: e})
			}
			walk(p.Panels)
		}
	}
	walk(dash.Panels)
	for _, v := range dash.Templating.List {
		if v.Type != "query" {
			continue
		}
		q, _ := v.Query.(string)
		if m, ok := v.Query.(map[string]any); ok {
			q, _ = m["query"].(string)
		}
		m := labelValues.FindStringSubmatch(strings.TrimSpace(q))
		if m == nil {
			t.Errorf("variable %s: query %q is not label_values(selector, label)", v.Name, q)
			continue
		}
		sel, err := substitute(m[1])
		if err != nil {
			t.Errorf("variable %s: %v", v.Name, err)
			continue
		}
		out = append(out, dashboardQuery{Where: "variable $" + v.Name, Expr: sel, Variable: true, Label: m[2]})
	}
	return out
}

// run answers the query: the number of series with a value that is a
// number (NaN, a 0/0 ratio, is no data) or of label values, how many of
// them are not zero, and a short rendering for messages.
func (q dashboardQuery) run(p *prometheus) (n, nonZero int, shown string, err error) {
	if q.Variable {
		var series []map[string]string
		if err := p.api("/api/v1/series", url.Values{"match[]": {q.Expr}}, &series); err != nil {
			return 0, 0, "", err
		}
		seen := map[string]bool{}
		for _, s := range series {
			if v := s[q.Label]; v != "" {
				seen[v] = true
			}
		}
		return len(seen), len(seen), fmt.Sprint(seen), nil
	}
	v, err := p.query(q.Expr)
	if err != nil {
		return 0, 0, "", err
	}
	var parts []string
	for _, s := range v {
		val := s.value()
		parts = append(parts, fmt.Sprintf("%v => %s", s.Metric, val))
		if val == "NaN" {
			continue
		}
		n++
		if val != "0" {
			nonZero++
		}
	}
	sort.Strings(parts)
	return n, nonZero, strings.Join(parts, "; "), nil
}
