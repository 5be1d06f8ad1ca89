package alerting_test

import (
	"slices"
	"testing"
)

// The failure messages of TestAlertsOnRealPrometheus show a rule's values
// before its thresholds; exprParts finds them in the printed expression.
func TestExprParts(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want []string
	}{
		{`up{job="sluice"} == 0`, []string{`up{job="sluice"}`}},
		{`absent(up{job="sluice"})`, []string{`absent(up{job="sluice"})`}},
		{`(sum by (route) (rate(a{status=~"5..",x!="a and b"}[5m])) / sum by (route) (rate(a[5m]))) > 0.05 and sum by (route) (rate(a[5m])) > 0.1`,
			[]string{`(sum by (route) (rate(a{status=~"5..",x!="a and b"}[5m])) / sum by (route) (rate(a[5m])))`, `sum by (route) (rate(a[5m]))`}},
		{`sum(increase(f[10m])) > 0 unless sum(increase(s[10m])) > 0`, []string{`sum(increase(f[10m]))`, `sum(increase(s[10m]))`}},
		{`max(x) >= 2`, []string{`max(x)`}},
		{`max(x) != 2`, []string{`max(x)`}},
	} {
		if got := exprParts(tc.in); !slices.Equal(got, tc.want) {
			t.Errorf("exprParts(%s)\n got %q\nwant %q", tc.in, got, tc.want)
		}
	}
}
