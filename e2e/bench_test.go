package e2e

import (
	"encoding/json"
	"slices"
	"strings"
	"testing"

	"github.com/telapi/telkeys/bench"
	"github.com/telapi/telkeys/bus"
)

// telkeys bench run as a command: its report, its usage, and what it
// refuses to touch.

// TestBenchQuick runs "telkeys bench --quick" as CI does, with the keyauth
// node in a process of its own: every scenario runs and reports its
// figures, each figure with a floor has a measured one, and progress goes
// to stderr. It asserts nothing on the times.
func TestBenchQuick(t *testing.T) {
	code, stdout, stderr := runTelkeys(t, "bench", "--quick", "--json", "--duration", "300ms", "--deletes", "20", "--creates", "64")
	if code != 0 {
		t.Fatalf("exit %d\nstderr:\n%s", code, stderr)
	}
	var rep bench.Report
	if err := json.Unmarshal([]byte(stdout), &rep); err != nil {
		t.Fatalf("report is not JSON: %v\n%s", err, stdout)
	}
	if !rep.Quick || rep.Keys != 10_000 || rep.CPUs < 1 {
		t.Errorf("report header: %+v", rep)
	}
	seen := map[string]int{}
	for _, f := range rep.Figures {
		seen[f.Scenario]++
		if f.Value < 0 || (f.Value == 0 && f.Unit != "allocs/op" && f.Unit != "%" && f.Unit != "checks" && !strings.Contains(f.Figure, "Server-Timing")) {
			t.Errorf("%s / %s: value %v %s", f.Scenario, f.Figure, f.Value, f.Unit)
		}
		if f.Floor != nil && (*f.Floor <= 0 || f.Ratio == nil || f.FloorName == "") {
			t.Errorf("%s / %s: floor %v, ratio %v", f.Scenario, f.Figure, *f.Floor, f.Ratio)
		}
		if (f.Target == "") != (f.Met == nil) {
			t.Errorf("%s / %s: target %q without a verdict, or the reverse", f.Scenario, f.Figure, f.Target)
		}
	}
	for _, s := range bench.DefaultScenarios() {
		if seen[s] == 0 {
			t.Errorf("scenario %s reported nothing", s)
		}
	}
	if seen["scale"] != 0 {
		t.Errorf("the default run ran scale, which runs only when asked for: %d figures", seen["scale"])
	}
	if i := slices.IndexFunc(rep.Figures, func(f bench.Figure) bool { return f.Unit == "checks" }); i < 0 {
		t.Error("no count of deleted keys accepted after their 204")
	} else if rep.Figures[i].Value != 0 {
		t.Errorf("the barrier let a node accept a deleted key after its 204: %+v", rep.Figures[i])
	}
	if i := slices.IndexFunc(rep.Figures, func(f bench.Figure) bool { return f.Scenario == "verify-local" && f.Unit == "allocs/op" }); i < 0 || rep.Figures[i].Value != 0 {
		t.Errorf("Verify allocates: %+v", rep.Figures[i])
	}
	for _, want := range []string{"storing the history", "first start: projecting", "revoke: starting", "deletes: 10/10", "deletes with 3 telapi-node processes (each after a create): 10/10"} {
		if !strings.Contains(stderr, want) {
			t.Errorf("no progress line %q in:\n%s", want, stderr)
		}
	}
}

// TestBenchScale runs the scale scenario alone, at a size CI can afford:
// it stores its own history and reports a node's load time and memory for
// exactly that many keys, and runs nothing else.
func TestBenchScale(t *testing.T) {
	code, stdout, stderr := runTelkeys(t, "bench", "--only", "scale", "--keys", "2000", "--json")
	if code != 0 {
		t.Fatalf("exit %d\nstderr:\n%s", code, stderr)
	}
	var rep bench.Report
	if err := json.Unmarshal([]byte(stdout), &rep); err != nil {
		t.Fatalf("report is not JSON: %v\n%s", err, stdout)
	}
	var figures []string
	for _, f := range rep.Figures {
		if f.Scenario != "scale" && f.Scenario != "startup" {
			t.Errorf("--only scale ran %s: %+v", f.Scenario, f)
		}
		if f.Scenario == "scale" {
			figures = append(figures, f.Figure)
			if f.Value <= 0 || !strings.Contains(f.Figure, "2000 keys") {
				t.Errorf("scale figure %q = %v %s", f.Figure, f.Value, f.Unit)
			}
		}
	}
	for _, want := range []string{"warm-up", "RSS after warm-up", "heap per key", "Verify"} {
		if !slices.ContainsFunc(figures, func(f string) bool { return strings.Contains(f, want) }) {
			t.Errorf("no scale figure about %q in %q", want, figures)
		}
	}
}

func TestBenchUsage(t *testing.T) {
	if code, _, stderr := runTelkeys(t, "bench", "--only", "verify-local,nope"); code != 2 || !strings.Contains(stderr, `unknown scenario "nope"`) {
		t.Errorf("--only nope: exit %d, stderr %q", code, stderr)
	}
	code, _, stderr := runTelkeys(t, "bench", "--help")
	if code != 0 {
		t.Errorf("--help: exit %d", code)
	}
	for _, s := range bench.Scenarios() {
		if !strings.Contains(stderr, s) {
			t.Errorf("--help does not explain %s", s)
		}
	}
}

// TestBenchRefusesAServerWithEvents: with --nats-url, the bench writes its
// own history, so it must not touch a server that holds telkeys events.
func TestBenchRefusesAServerWithEvents(t *testing.T) {
	s := startService(t)
	s.enableTeam("acme", 10)
	code, _, stderr := runTelkeys(t, "bench", "--quick", "--nats-url", s.NATSURL, "--nats-creds", s.credsFor(bus.RoleService))
	if code != 1 || !strings.Contains(stderr, "already holds 1 events") {
		t.Fatalf("exit %d, stderr:\n%s", code, stderr)
	}
	if n := s.eventCount(); n != 1 {
		t.Fatalf("the stream now holds %d events", n)
	}
}
