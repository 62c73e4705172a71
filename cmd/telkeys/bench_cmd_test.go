package main

import (
	"context"
	"encoding/json"
	"errors"
	"slices"
	"strings"
	"testing"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/telapi/telkeys/bus"
)

// TestBenchQuick runs "telkeys bench --quick" as CI does, with the keyauth
// node in a process of its own: every scenario runs and reports its
// figures, each figure with a floor has a measured one, and progress goes
// to stderr. It asserts nothing on the times.
func TestBenchQuick(t *testing.T) {
	t.Setenv("TELKEYS_TEST_AS_MAIN", "1") // bench-node re-runs this binary as telkeys
	var stdout, stderr syncBuffer
	code := run(context.Background(), []string{"bench", "--quick", "--json", "--duration", "300ms", "--deletes", "20", "--creates", "64"}, &stdout, &stderr)
	if code != 0 {
		t.Fatalf("exit %d\nstderr:\n%s", code, stderr.String())
	}
	var rep report
	if err := json.Unmarshal([]byte(stdout.String()), &rep); err != nil {
		t.Fatalf("report is not JSON: %v\n%s", err, stdout.String())
	}
	if !rep.Quick || rep.Keys != 10_000 || rep.CPUs < 1 {
		t.Errorf("report header: %+v", rep)
	}
	seen := map[string]int{}
	for _, f := range rep.Figures {
		seen[f.Scenario]++
		if f.Value < 0 || (f.Value == 0 && f.Unit != "allocs/op" && f.Unit != "%") {
			t.Errorf("%s / %s: value %v %s", f.Scenario, f.Figure, f.Value, f.Unit)
		}
		if f.Floor != nil && (*f.Floor <= 0 || f.Ratio == nil || f.FloorName == "") {
			t.Errorf("%s / %s: floor %v, ratio %v", f.Scenario, f.Figure, *f.Floor, f.Ratio)
		}
		if (f.Target == "") != (f.Met == nil) {
			t.Errorf("%s / %s: target %q without a verdict, or the reverse", f.Scenario, f.Figure, f.Target)
		}
	}
	for _, s := range benchScenarios {
		if seen[s] == 0 {
			t.Errorf("scenario %s reported nothing", s)
		}
	}
	if i := slices.IndexFunc(rep.Figures, func(f figure) bool { return f.Scenario == "verify-local" && f.Unit == "allocs/op" }); i < 0 || rep.Figures[i].Value != 0 {
		t.Errorf("Verify allocates: %+v", rep.Figures[i])
	}
	for _, want := range []string{"storing the history", "first start: projecting", "revoke: starting", "deletes: 20/20"} {
		if !strings.Contains(stderr.String(), want) {
			t.Errorf("no progress line %q in:\n%s", want, stderr.String())
		}
	}
}

func TestBenchUsage(t *testing.T) {
	var stdout, stderr syncBuffer
	if code := run(context.Background(), []string{"bench", "--only", "verify-local,nope"}, &stdout, &stderr); code != 2 || !strings.Contains(stderr.String(), `unknown scenario "nope"`) {
		t.Errorf("--only nope: exit %d, stderr %q", code, stderr.String())
	}
	stderr = syncBuffer{}
	if code := run(context.Background(), []string{"bench", "--help"}, &stdout, &stderr); code != 0 {
		t.Errorf("--help: exit %d", code)
	}
	for _, s := range benchScenarios {
		if !strings.Contains(stderr.String(), s) {
			t.Errorf("--help does not explain %s", s)
		}
	}
}

// TestBenchRefusesAServerWithEvents: with --nats-url, the bench writes its
// own history, so it must not touch a server that holds telkeys events.
func TestBenchRefusesAServerWithEvents(t *testing.T) {
	s := startService(t)
	s.enableTeam("acme", 10)
	var stdout, stderr syncBuffer
	code := run(context.Background(), []string{"bench", "--quick", "--nats-url", s.NATSURL}, &stdout, &stderr)
	if code != 1 || !strings.Contains(stderr.String(), "already holds 1 events") {
		t.Fatalf("exit %d, stderr:\n%s", code, stderr.String())
	}
	info, err := s.js().Stream(context.Background(), "TELKEYS_EVENTS")
	if err != nil {
		t.Fatal(err)
	}
	if st, _ := info.Info(context.Background()); st.State.Msgs != 1 {
		t.Fatalf("the stream now holds %d events", st.State.Msgs)
	}
}

// TestKeyIndexHasOneWriter: while another instance holds the key index
// lock, an instance does not write the index; once it is free, it does.
func TestKeyIndexHasOneWriter(t *testing.T) {
	s := startService(t)
	s.enableTeam("acme", 10)
	ctx := context.Background()
	if _, err := s.h.Snapshots.Create(ctx, keyIndexLock, []byte("other-instance")); err != nil {
		t.Fatal(err)
	}
	s.writeKeyIndex(ctx, 1)
	if _, err := s.h.KeyIndex.GetInfo(ctx, bus.KeyIndexObject); !errors.Is(err, jetstream.ErrObjectNotFound) {
		t.Fatalf("written while another instance held the lock: %v", err)
	}
	if err := s.h.Snapshots.Delete(ctx, keyIndexLock); err != nil {
		t.Fatal(err)
	}
	s.writeKeyIndex(ctx, 1)
	info, err := s.h.KeyIndex.GetInfo(ctx, bus.KeyIndexObject)
	if err != nil || info.Metadata["seq"] == "" {
		t.Fatalf("not written once the lock was free: %+v, %v", info, err)
	}
	if _, err := s.h.Snapshots.Get(ctx, keyIndexLock); !errors.Is(err, jetstream.ErrKeyNotFound) {
		t.Fatalf("the lock was not released: %v", err)
	}
}
