package bench

import (
	"fmt"
	"io"
	"math"
	"slices"
	"text/tabwriter"
	"time"
)

// Figure is one line of the bench report. Floor and Ratio are set when the
// figure has a floor; Target and Met when it has a goal.
type Figure struct {
	Scenario  string   `json:"scenario"`
	Figure    string   `json:"figure"`
	Value     float64  `json:"value"`
	Unit      string   `json:"unit"`
	Floor     *float64 `json:"floor,omitempty"`
	FloorName string   `json:"floor_name,omitempty"`
	Ratio     *float64 `json:"ratio,omitempty"`
	Target    string   `json:"target,omitempty"`
	Met       *bool    `json:"met,omitempty"`
}

// Report is what telkeys bench prints (--json gives it as JSON).
type Report struct {
	Date      string   `json:"date"`
	Quick     bool     `json:"quick"`
	Keys      int      `json:"keys"`
	CPUs      int      `json:"cpus"`
	GoVersion string   `json:"go_version"`
	Figures   []Figure `json:"figures"`
}

// withFloor sets the floor and the ratio value/floor.
func (f Figure) withFloor(name string, floor float64) Figure {
	f.Floor, f.FloorName = &floor, name
	if floor > 0 {
		r := f.Value / floor
		f.Ratio = &r
	}
	return f
}

// ratioAtMost and ratioAtLeast set a goal on the ratio to the floor;
// atMost one on the value.
func (f Figure) ratioAtMost(x float64) Figure {
	return f.goal(fmt.Sprintf("≤ %g× floor", x), f.Ratio != nil && *f.Ratio <= x)
}

func (f Figure) ratioAtLeast(x float64) Figure {
	return f.goal(fmt.Sprintf("≥ %g× floor", x), f.Ratio != nil && *f.Ratio >= x)
}

func (f Figure) atMost(x float64) Figure {
	return f.goal(fmt.Sprintf("≤ %s", formatValue(x, f.Unit)), f.Value <= x)
}

func (f Figure) goal(target string, met bool) Figure {
	f.Target, f.Met = target, &met
	return f
}

func formatValue(v float64, unit string) string {
	var s string
	switch a := math.Abs(v); {
	case a == 0 || a >= 100:
		s = fmt.Sprintf("%.0f", v)
	case a >= 10:
		s = fmt.Sprintf("%.1f", v)
	default:
		s = fmt.Sprintf("%.2f", v)
	}
	if unit == "" {
		return s
	}
	return s + " " + unit
}

func (r Report) table(w io.Writer) error {
	mode := "full run"
	if r.Quick {
		mode = "QUICK run (sizes shrunk; not comparable with the targets)"
	}
	fmt.Fprintf(w, "telkeys bench, %s, %d keys, %d CPUs, %s, %s\n\n", mode, r.Keys, r.CPUs, r.GoVersion, r.Date)
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "scenario\tfigure\tvalue\tfloor\tratio\ttarget\t")
	for _, f := range r.Figures {
		floor, ratio, target := "—", "—", "—"
		if f.Floor != nil {
			floor = formatValue(*f.Floor, f.Unit) + " (" + f.FloorName + ")"
		}
		if f.Ratio != nil {
			ratio = fmt.Sprintf("%.2f×", *f.Ratio)
		}
		if f.Met != nil {
			target = f.Target + map[bool]string{true: " met", false: " MISSED"}[*f.Met]
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t\n", f.Scenario, f.Figure, formatValue(f.Value, f.Unit), floor, ratio, target)
	}
	return tw.Flush()
}

// latencies summarises durations.
type latencies []time.Duration

func (l latencies) sorted() latencies {
	s := slices.Clone(l)
	slices.Sort(s)
	return s
}

// at returns the q-quantile (0..1) of sorted durations, nearest rank.
func (l latencies) at(q float64) time.Duration {
	if len(l) == 0 {
		return 0
	}
	i := int(math.Ceil(q*float64(len(l)))) - 1
	return l[min(max(i, 0), len(l)-1)]
}

func ms(d time.Duration) float64 { return float64(d.Nanoseconds()) / 1e6 }
func us(d time.Duration) float64 { return float64(d.Nanoseconds()) / 1e3 }
