package main

import (
	"fmt"
	"image/color"
	"os"
	"slices"
	"time"

	"gonum.org/v1/plot"
	"gonum.org/v1/plot/plotter"
	"gonum.org/v1/plot/plotutil"
	"gonum.org/v1/plot/vg"
	"gonum.org/v1/plot/vg/draw"
	"gonum.org/v1/plot/vg/vgimg"
)

// chart draws the realistic scenario: each library's wait-time distribution, and its throughput as a share of
// the bound, side by side, into a PNG at path.
func (r report) chart(path string) error {
	real, ok := r.realistic()
	if !ok {
		return fmt.Errorf("no realistic scenario to chart")
	}
	var libs []library
	for _, lib := range r.libraries() {
		if _, ok := r.get(lib.Name, real.Name); ok {
			libs = append(libs, lib)
		}
	}

	waits := plot.New()
	waits.Title.Text = fmt.Sprintf("Wait for the lock: %d processes × %d goroutines, hold %v, think %v",
		real.Processes, real.Goroutines, real.Hold, real.Think)
	waits.X.Label.Text = fmt.Sprintf("wait, in PING round trips of the same run (1 RTT = %d µs; log scale)", r.Unit.Microseconds())
	waits.Y.Label.Text = "share of acquisitions that waited at most this long"
	waits.X.Scale = plot.LogScale{}
	waits.X.Tick.Marker = plot.LogTicks{Prec: -1}
	waits.Y.Min, waits.Y.Max = 0, 1
	waits.Add(plotter.NewGrid())
	legend := plot.NewLegend()
	legend.Top, legend.Left = true, true
	legend.YOffs = -vg.Inch / 2

	bars := plot.New()
	bars.Title.Text = "Throughput: share of the bound 1/(hold + 2·RTT)"
	bars.X.Label.Text = "% of the bound (goal for keyward: 75 %)"
	bars.X.Min = 0
	bars.Add(plotter.NewGrid())
	var names []string
	best := 100.0

	for i, lib := range libs {
		m, _ := r.get(lib.Name, real.Name)
		c := palette[i%len(palette)]
		if len(m.Waits) > 0 {
			line, err := plotter.NewLine(cdf(m.Waits, r.Unit))
			if err != nil {
				return err
			}
			line.Color = c
			line.Width = vg.Points(1.2)
			if lib.Keyward {
				line.Width = vg.Points(2.6)
			} else {
				line.Dashes = plotutil.Dashes(1 + i%3)
			}
			waits.Add(line)
			legend.Add(lib.Name, line)
		}

		share := 100 * m.Summary.OfBound(r.Unit)
		best = max(best, share)
		bar, err := plotter.NewBarChart(plotter.Values{share}, vg.Points(16))
		if err != nil {
			return err
		}
		bar.Horizontal = true
		bar.XMin = float64(len(libs) - 1 - i) // the first library on top
		bar.Color = c
		bar.LineStyle.Width = 0
		bars.Add(bar)
		names = append(names, fmt.Sprintf("%s (Jain %.2f)", lib.Name, m.Summary.JainGroups))
	}
	slices.Reverse(names)
	bars.NominalY(names...)
	bars.X.Max = best * 1.05
	goal, err := plotter.NewLine(plotter.XYs{{X: 75, Y: -0.5}, {X: 75, Y: float64(len(libs)) - 0.5}})
	if err != nil {
		return err
	}
	goal.Color = color.RGBA{R: 200, A: 255}
	goal.Dashes = []vg.Length{vg.Points(4), vg.Points(3)}
	goal.Width = vg.Points(1.5)
	bars.Add(goal)

	// The wait distributions on the left, their legend in a column of its own, the bars on the right.
	const width, height = 15 * vg.Inch, 5.5 * vg.Inch
	img := vgimg.NewWith(vgimg.UseWH(width, height), vgimg.UseDPI(96))
	dc := draw.Crop(draw.New(img), vg.Inch/6, -vg.Inch/4, vg.Inch/6, -vg.Inch/6)
	w := dc.Size().X
	waits.Draw(draw.Crop(dc, 0, -0.50*w, 0, 0))
	legend.Draw(draw.Crop(dc, 0.505*w, -0.39*w, 0, 0))
	bars.Draw(draw.Crop(dc, 0.62*w, 0, 0, 0))

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

// palette gives each library a colour of its own, keyward's first.
var palette = []color.Color{
	color.RGBA{R: 0xd6, G: 0x27, B: 0x28, A: 0xff}, // red
	color.RGBA{R: 0x94, G: 0x14, B: 0x8c, A: 0xff}, // purple
	color.RGBA{R: 0x1f, G: 0x77, B: 0xb4, A: 0xff}, // blue
	color.RGBA{R: 0x17, G: 0xbe, B: 0xcf, A: 0xff}, // cyan
	color.RGBA{R: 0x7f, G: 0x7f, B: 0x7f, A: 0xff}, // grey
	color.RGBA{R: 0x2c, G: 0xa0, B: 0x2c, A: 0xff}, // green
	color.RGBA{R: 0xbc, G: 0xbd, B: 0x22, A: 0xff}, // olive
	color.RGBA{R: 0xff, G: 0x7f, B: 0x0e, A: 0xff}, // orange
	color.RGBA{R: 0x8c, G: 0x56, B: 0x4b, A: 0xff}, // brown
}

// cdf is a wait distribution in units of rtt, as 200 points.
func cdf(waits []time.Duration, rtt time.Duration) plotter.XYs {
	w := slices.Clone(waits)
	slices.Sort(w)
	var xys plotter.XYs
	const points = 200
	for k := 0; k <= points; k++ {
		q := float64(k) / points
		i := min(len(w)-1, int(q*float64(len(w))))
		// Log scale: nothing below a tenth of a round trip (a hand-over inside one process can be faster).
		xys = append(xys, plotter.XY{X: max(ratio(w[i], rtt), 0.1), Y: q})
	}
	return xys
}
