package keyauth

import (
	"context"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/telapi/telkeys/apikey"
	"github.com/telapi/telkeys/bus"
	"github.com/telapi/telkeys/commands"
	"github.com/telapi/telkeys/events"
	"github.com/telapi/telkeys/internal/coretest"
)

func usageSetup(t *testing.T, limit *int64) (*coretest.Core, commands.CreatedKey) {
	c := coretest.Start(t)
	c.Configure("acme", events.AccessConfig{Enabled: true, AllowedScopes: []string{apikey.ScopeReadTeamApps}, MaxKeys: 10, MaxRequestsPerDay: limit})
	return c, c.Create("acme", apikey.ScopeReadTeamApps)
}

// flushedByHand is a validator on its own connection whose periodic usage
// flush never comes: the test calls flushUsage itself.
func flushedByHand(t *testing.T, r *coretest.Core) *Validator {
	nc, _ := r.NS.ConnectAs(t, bus.RoleNode)
	v, err := New(context.Background(), nc, Config{Keys: r.Keys, UsageFlush: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(v.Close) // before nc.Close
	return v
}

// A flush whose ack was lost but which was stored is retried with the same
// Nats-Msg-Id; the duplicate ack carries no "val", so the node must read the
// counter, or it forgets the flushed count and exceeds the daily limit.
func TestRetriedFlushKeepsItsCount(t *testing.T) {
	limit := int64(100)
	r, k := usageSetup(t, &limit)
	v := flushedByHand(t, r)
	c := &v.st.team("acme").usage
	valid := 0
	for range 50 {
		if v.VerifyWait(context.Background(), k.Plaintext, apikey.ScopeReadTeamApps).Valid() {
			valid++
		}
	}
	// Flush #1: stored, but its ack is lost (what flushUsage does, by hand).
	c.mu.Lock()
	req := &flushReq{day: c.day, n: c.pending, msgID: "lost-ack-1"}
	c.inflight, c.pending = c.pending, 0
	c.mu.Unlock()
	m := nats.NewMsg(bus.UsageSubject("acme", dayTime(req.day)))
	m.Header.Set("Nats-Incr", "+50")
	if _, err := r.JS.PublishMsg(context.Background(), m, jetstream.WithMsgID(req.msgID)); err != nil {
		t.Fatal(err)
	}
	c.mu.Lock()
	c.retry = req // as after a publish timeout
	c.mu.Unlock()
	v.flushUsage(context.Background(), true) // retry: duplicate ack, no val
	c.mu.Lock()
	t.Logf("after retry: global=%d inflight=%d pending=%d", c.global, c.inflight, c.pending)
	c.mu.Unlock()
	for range 200 {
		if v.VerifyWait(context.Background(), k.Plaintext, apikey.ScopeReadTeamApps).Valid() {
			valid++
		}
	}
	v.flushUsage(context.Background(), true)
	last, _ := r.H.Usage.GetLastMsgForSubject(context.Background(), bus.UsageSubject("acme", dayTime(req.day)))
	t.Logf("VALID answers: %d (limit %d); stream counter: %s", valid, limit, last.Data)
	if valid > int(limit) {
		t.Errorf("single node exceeded the daily limit: %d > %d", valid, limit)
	}
}

// TestUnlimitedTeamsFlushLessOften: a team without a daily limit is flushed
// at most every unlimitedFlush by the periodic flush, a limited one every
// time, and a final flush sends everything.
func TestUnlimitedTeamsFlushLessOften(t *testing.T) {
	r, k := usageSetup(t, nil)
	limit := int64(1000)
	r.Configure("capped", events.AccessConfig{Enabled: true, AllowedScopes: []string{apikey.ScopeReadTeamApps}, MaxKeys: 10, MaxRequestsPerDay: &limit})
	kc := r.Create("capped", apikey.ScopeReadTeamApps)
	v := flushedByHand(t, r)
	pending := func(team string) int64 {
		c := &v.st.team(team).usage
		c.mu.Lock()
		defer c.mu.Unlock()
		return c.pending
	}
	verify := func() {
		for _, key := range []string{k.Plaintext, kc.Plaintext} {
			if !v.VerifyWait(context.Background(), key, apikey.ScopeReadTeamApps).Valid() {
				t.Fatal("not valid")
			}
		}
	}
	ctx := context.Background()
	verify()
	v.flushUsage(ctx, false) // the unlimited team's first look: flushed
	if pending("acme") != 0 || pending("capped") != 0 {
		t.Fatalf("pending after the first flush: %d, %d", pending("acme"), pending("capped"))
	}
	verify()
	v.flushUsage(ctx, false) // within unlimitedFlush: only the capped team
	if pending("acme") != 1 || pending("capped") != 0 {
		t.Fatalf("pending after the second flush: acme %d (want 1), capped %d (want 0)", pending("acme"), pending("capped"))
	}
	v.flushUsage(ctx, true)
	if pending("acme") != 0 {
		t.Fatalf("a final flush left %d pending", pending("acme"))
	}
}

// TestCountsOfSeveralMidnightsAreKept: when flushes fail across two UTC
// midnights, each finished day's count waits to be sent, oldest first.
func TestCountsOfSeveralMidnightsAreKept(t *testing.T) {
	c := &usageCounter{day: 100}
	c.pending = 5
	c.rollover(101)
	c.pending = 3
	c.rollover(102)
	c.pending = 2
	for _, want := range []flushReq{{day: 100, n: 5}, {day: 101, n: 3}, {day: 102, n: 2}} {
		got := c.next()
		if got == nil || got.day != want.day || got.n != want.n {
			t.Fatalf("next = %+v, want %+v", got, want)
		}
		c.done(got, &jetstream.PubAck{Value: "0"}, nil)
	}
	if got := c.next(); got != nil {
		t.Fatalf("left over: %+v", got)
	}
}

// TestClosedValidatorAnswersUnavailable: after Close a validator follows
// nothing, so it must not answer from what it last knew.
func TestClosedValidatorAnswersUnavailable(t *testing.T) {
	r, k := usageSetup(t, nil)
	nc, _ := r.NS.ConnectAs(t, bus.RoleNode)
	for _, failOpen := range []bool{false, true} {
		v, err := New(context.Background(), nc, Config{Keys: r.Keys, FailOpen: failOpen})
		if err != nil {
			t.Fatal(err)
		}
		if !v.Verify(k.Plaintext, apikey.ScopeReadTeamApps).Valid() {
			t.Fatal("not valid before Close")
		}
		v.Close()
		if got := v.Verify(k.Plaintext, apikey.ScopeReadTeamApps).Code; got != Unavailable || v.Current() {
			t.Fatalf("FailOpen %v: after Close Verify = %v, Current = %v", failOpen, got, v.Current())
		}
	}
}
