package keyauth

import (
	"context"
	"net/url"
	"sync/atomic"
	"testing"
	"time"

	"github.com/telapi/telkeys/apikey"
	"github.com/telapi/telkeys/bus"
	"github.com/telapi/telkeys/bus/bustest"
)

// held is what v may still admit for team from its block.
func held(v *Validator, team string) int64 {
	if b := v.st.team(team).quota.cur.Load(); b != nil {
		return b.avail.Load()
	}
	return 0
}

// drain verifies key on each validator until the team's limit is reached
// as far as every one of them knows (or 20 s pass), and returns how many
// were admitted.
func drain(t *testing.T, key string, vs ...*Validator) int64 {
	t.Helper()
	var admitted atomic.Int64
	done := make(chan struct{})
	for _, v := range vs {
		go func() {
			defer func() { done <- struct{}{} }()
			var refused time.Time
			for deadline := time.Now().Add(20 * time.Second); time.Now().Before(deadline); {
				r := v.VerifyWait(context.Background(), key, apikey.ScopeReadTeamApps)
				switch {
				case r.Valid():
					admitted.Add(1)
					refused = time.Time{}
				case r.Code != RateLimited:
					t.Errorf("verify: %v", r.Code)
					return
				case refused.IsZero():
					refused = time.Now()
				case time.Since(refused) > idleReturn+2*quotaSweep:
					return // refused for longer than a block stays idle
				}
			}
		}()
	}
	for range vs {
		<-done
	}
	return admitted.Load()
}

// A node that dies holding a block takes what is left of it: the others
// still reach the limit minus that, and never more than the limit.
func TestCrashedNodeLosesOnlyItsBlock(t *testing.T) {
	limit := int64(2000)
	r, k := usageSetup(t, &limit)
	nodes := make([]*Validator, 3)
	for i := range nodes {
		nc, _ := r.NS.ConnectAs(t, bus.RoleNode)
		v, err := New(context.Background(), nc, Config{Keys: r.Keys})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(v.Close)
		nodes[i] = v
		if i == 0 {
			// The crash: its connection goes before it can give anything
			// back (Close, at cleanup, then fails to).
			t.Cleanup(nc.Close)
			defer nc.Close()
		}
	}
	if !nodes[0].VerifyWait(context.Background(), k.Plaintext, apikey.ScopeReadTeamApps).Valid() {
		t.Fatal("the first request was refused")
	}
	lost := held(nodes[0], "acme")
	if lost <= 0 {
		t.Fatalf("the node holds %d after its first request", lost)
	}
	nodes[0].nc.Close()
	got := 1 + drain(t, k.Plaintext, nodes[1], nodes[2])
	t.Logf("the crashed node held %d; %d admitted in all", lost, got)
	if got != limit-lost {
		t.Fatalf("admitted %d with %d lost in a crashed node's block; want %d", got, lost, limit-lost)
	}
}

// A node that cannot reach the bus serves what it holds, then answers
// RATE_LIMITED with Reserving set (429 with Retry-After: 1), without
// waiting on every request; it reserves again once the bus is back.
func TestLostBusFailsClosed(t *testing.T) {
	limit := int64(2000)
	r, k := usageSetup(t, &limit)
	u, _ := url.Parse(r.NS.ClientURL())
	proxy := bustest.NewCutProxy(t, u.Host)
	nc, _ := bustest.ConnectURL(t, "nats://"+proxy.Addr, bustest.Creds(t, r.NS.Authority, bus.RoleNode))
	v, err := New(context.Background(), nc, Config{Keys: r.Keys})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(v.Close)
	verify := func() Result { return v.VerifyWait(context.Background(), k.Plaintext, apikey.ScopeReadTeamApps) }
	if !verify().Valid() {
		t.Fatal("the first request was refused")
	}
	holding := held(v, "acme")
	proxy.Cut()
	admitted := int64(0)
	var last Result
	start := time.Now()
	for range holding + 20 {
		if last = verify(); last.Valid() {
			admitted++
		}
	}
	t.Logf("held %d when the bus went; admitted %d after, in %v", holding, admitted, time.Since(start))
	if admitted > holding {
		t.Fatalf("admitted %d without the bus, holding %d", admitted, holding)
	}
	if last.Code != RateLimited || !last.Reserving {
		t.Fatalf("without the bus: %v (reserving %v), want RATE_LIMITED while reserving", last.Code, last.Reserving)
	}
	// Once a reservation has failed, refusals no longer wait for one.
	bustest.Eventually(t, 10*time.Second, "reservations known to fail", v.reserveFailing.Load)
	proxy.Restore(t)
	bustest.Eventually(t, 15*time.Second, "admitted again once the bus is back", func() bool { return verify().Valid() })
}
