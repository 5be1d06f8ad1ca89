package main

import (
	"fmt"
	"image/color"
	"os"
	"path/filepath"

	"gonum.org/v1/plot"
	"gonum.org/v1/plot/plotter"
	"gonum.org/v1/plot/plotutil"
	"gonum.org/v1/plot/vg"
	"gonum.org/v1/plot/vg/draw"
	"gonum.org/v1/plot/vg/vgimg"
)

// drawCharts writes cpu.png (CPU per request by target, median with the
// rounds' min-max) and latency.png (latency added over a direct connection
// at p50, p99 and p99.9, by open-loop rate), with gonum.org/v1/plot.
func drawCharts(out string, s summary, m meta) error {
	commit := m.Commit
	if len(commit) > 10 {
		commit = commit[:10]
	}
	if m.Dirty {
		commit += "+changes"
	}
	subtitle := fmt.Sprintf("sluice %s, GOMAXPROCS/workers %d on CPU %s, load on CPU %s, %s",
		commit, m.Procs, m.GwCPUs, m.LoadCPUs, m.Started.Format("2006-01-02 15:04 UTC"))
	if err := cpuChart(filepath.Join(out, "cpu.png"), s, subtitle); err != nil {
		return err
	}
	return latencyChart(filepath.Join(out, "latency.png"), s, subtitle)
}

// rangePoints are bar tops with their min-max spread, for YErrorBars.
type rangePoints struct{ x, y, lo, hi []float64 }

func (r rangePoints) Len() int                        { return len(r.x) }
func (r rangePoints) XY(i int) (float64, float64)     { return r.x[i], r.y[i] }
func (r rangePoints) YError(i int) (float64, float64) { return r.y[i] - r.lo[i], r.hi[i] - r.y[i] }

func cpuChart(path string, s summary, subtitle string) error {
	p := plot.New()
	p.Title.Text = "CPU time per request on the gateway (closed loop, wrk)\n" + subtitle
	p.Y.Label.Text = "µs of CPU per request (median, bars: min-max of rounds)"
	p.Y.Min = 0
	var names []string
	pass, cache := plotter.Values{}, plotter.Values{}
	var rp rangePoints
	for _, t := range s.Targets {
		if t.Group == "direct" {
			continue // the origin's own CPU, on the load core
		}
		i := float64(len(names))
		names = append(names, t.Name)
		if t.Group == "cache" {
			pass, cache = append(pass, 0), append(cache, t.CPUus)
		} else {
			pass, cache = append(pass, t.CPUus), append(cache, 0)
		}
		rp.x, rp.y = append(rp.x, i), append(rp.y, t.CPUus)
		rp.lo, rp.hi = append(rp.lo, t.CPUusMin), append(rp.hi, t.CPUusMax)
	}
	if len(names) == 0 {
		return nil
	}
	for _, hi := range rp.hi {
		p.Y.Max = max(p.Y.Max, 1.25*hi) // headroom for the legend
	}
	w := vg.Points(28)
	for _, b := range []struct {
		v     plotter.Values
		label string
		c     color.Color
	}{{pass, "pass-through", plotutil.Color(0)}, {cache, "cache hit", plotutil.Color(1)}} {
		bc, err := plotter.NewBarChart(b.v, w)
		if err != nil {
			return err
		}
		bc.Color, bc.LineStyle.Width = b.c, 0
		p.Add(bc)
		p.Legend.Add(b.label, bc)
	}
	eb, err := plotter.NewYErrorBars(rp)
	if err != nil {
		return err
	}
	p.Add(eb)
	p.Add(plotter.NewGrid())
	p.NominalX(names...)
	p.X.Tick.Label.Rotation = 0.5
	p.X.Tick.Label.XAlign, p.X.Tick.Label.YAlign = draw.XRight, draw.YCenter
	p.Legend.Top = true
	return p.Save(vg.Points(float64(120+60*len(names))), 420, path)
}

func latencyChart(path string, s summary, subtitle string) error {
	pct := []struct {
		title string
		get   func(rateSummary) float64
	}{
		{"p50", func(r rateSummary) float64 { return r.Add50us }},
		{"p99", func(r rateSummary) float64 { return r.Add99us }},
		{"p99.9", func(r rateSummary) float64 { return r.Add999us }},
	}
	row := make([]*plot.Plot, len(pct))
	drawn := false
	for i, pc := range pct {
		p := plot.New()
		p.Title.Text = "added " + pc.title
		if i == 1 {
			p.Title.Text = "latency added over a direct connection (open loop, from intended send time)\n" + subtitle + "\n\n" + p.Title.Text
		}
		p.X.Label.Text = "requests per second"
		p.Y.Label.Text = "µs over direct"
		var lines []any
		for _, t := range s.Targets {
			if t.Group == "direct" || len(t.Open) == 0 {
				continue
			}
			xy := make(plotter.XYs, len(t.Open))
			for j, r := range t.Open {
				xy[j].X, xy[j].Y = r.Rate, pc.get(r)
			}
			lines = append(lines, t.Name, xy)
		}
		if len(lines) == 0 {
			continue
		}
		drawn = true
		if err := plotutil.AddLinePoints(p, lines...); err != nil {
			return err
		}
		p.Add(plotter.NewGrid())
		p.Legend.Top, p.Legend.Left = true, true
		row[i] = p
	}
	if !drawn {
		return nil
	}
	img := vgimg.New(vg.Points(1200), vg.Points(460))
	dc := draw.New(img)
	tiles := draw.Tiles{Rows: 1, Cols: len(pct), PadX: vg.Points(18), PadY: vg.Points(10),
		PadTop: vg.Points(6), PadBottom: vg.Points(6), PadLeft: vg.Points(6), PadRight: vg.Points(6)}
	canvases := plot.Align([][]*plot.Plot{row}, tiles, dc)
	for i, p := range row {
		if p != nil {
			p.Draw(canvases[0][i])
		}
	}
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	if _, err := (vgimg.PngCanvas{Canvas: img}).WriteTo(f); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}
