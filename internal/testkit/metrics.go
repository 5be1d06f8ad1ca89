package testkit

import (
	"testing"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
)

// Metrics scrapes /metrics of the admin listener and parses it with the
// Prometheus text parser.
func (g *Gateway) Metrics(t testing.TB) Families {
	t.Helper()
	resp := Do(t, "GET", g.AdminURL+"/metrics", "", "Accept", "text/plain")
	if resp.Status != 200 {
		t.Fatalf("/metrics: status %d", resp.Status)
	}
	return ParseMetrics(t, string(resp.Body))
}

// Families are parsed metric families by name.
type Families map[string]*dto.MetricFamily

// ParseMetrics parses the Prometheus text format.
func ParseMetrics(t testing.TB, text string) Families {
	t.Helper()
	p := expfmt.NewTextParser(model.UTF8Validation)
	fams, err := p.TextToMetricFamilies(stringsReader(text))
	if err != nil {
		t.Fatalf("parsing metrics: %v", err)
	}
	return fams
}

// Value returns the value of the series of family name whose labels include
// every pair in labels (name, value, name, value...): the counter, gauge or
// untyped value, or the sample count of a histogram. found is false when no
// series matches.
func (f Families) Value(name string, labels ...string) (v float64, found bool) {
	fam := f[name]
	if fam == nil {
		return 0, false
	}
	for _, m := range fam.GetMetric() {
		if !hasLabels(m, labels) {
			continue
		}
		found = true
		switch {
		case m.Counter != nil:
			v += m.Counter.GetValue()
		case m.Gauge != nil:
			v += m.Gauge.GetValue()
		case m.Histogram != nil:
			v += float64(m.Histogram.GetSampleCount())
		case m.Untyped != nil:
			v += m.Untyped.GetValue()
		}
	}
	return v, found
}

func hasLabels(m *dto.Metric, labels []string) bool {
	for i := 0; i+1 < len(labels); i += 2 {
		ok := false
		for _, lp := range m.GetLabel() {
			if lp.GetName() == labels[i] && lp.GetValue() == labels[i+1] {
				ok = true
				break
			}
		}
		if !ok {
			return false
		}
	}
	return true
}
