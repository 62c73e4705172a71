package commands_test

import (
	"context"
	"errors"
	"sync"
	"testing"

	"github.com/telapi/telkeys/apikey"
	"github.com/telapi/telkeys/bus"
	"github.com/telapi/telkeys/bus/bustest"
	"github.com/telapi/telkeys/commands"
	"github.com/telapi/telkeys/domain"
	"github.com/telapi/telkeys/events"
)

var admin = events.Actor{Subject: "root", Role: "superadmin"}
var member = events.Actor{Subject: "alice", Role: "member"}

func setup(t testing.TB) (*bus.Handles, func() *commands.Handler) {
	t.Helper()
	ns, _, h := bustest.Setup(t)
	signer, keys := bustest.Signer(t) // one deployment: every instance signs with the same key
	return h, func() *commands.Handler {
		_, js := bustest.Connect(t, ns)
		ch, err := commands.New(commands.Config{JS: js, Events: h.Events, Snapshots: h.Snapshots, Signer: signer, Keys: keys})
		if err != nil {
			t.Fatal(err)
		}
		return ch
	}
}

func enable(t testing.TB, c *commands.Handler, team string, max int) {
	t.Helper()
	_, _, err := c.ConfigureTeamAccess(context.Background(), admin, team, events.AccessConfig{
		Enabled: true, AllowedScopes: apikey.Scopes(), MaxKeys: max, MaxRequestsPerDay: new(int64(100)),
	})
	if err != nil {
		t.Fatal(err)
	}
}

func TestCreateAndDeleteFollowTheRules(t *testing.T) {
	_, newH := setup(t)
	c := newH()
	ctx := context.Background()

	if _, err := c.CreateKey(ctx, member, "t1", "k", []string{apikey.ScopeReadTeamApps}); !errors.Is(err, domain.ErrTeamDisabled) {
		t.Fatalf("create on unconfigured team: %v", err)
	}
	_, _, err := c.ConfigureTeamAccess(ctx, admin, "t1", events.AccessConfig{Enabled: true, AllowedScopes: []string{apikey.ScopeReadTeamApps}, MaxKeys: 1})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.CreateKey(ctx, member, "t1", "k", []string{apikey.ScopeCreateCallToken}); !errors.Is(err, domain.ErrScopeNotAllowed) {
		t.Fatalf("scope outside allowed: %v", err)
	}
	k, err := c.CreateKey(ctx, member, "t1", "  ci key  ", []string{apikey.ScopeReadTeamApps})
	if err != nil {
		t.Fatal(err)
	}
	if k.Key.Name != "ci key" || apikey.Parse(k.Plaintext) != nil || apikey.HashOf(k.Plaintext) != apikey.Hash(k.Key.Hash) {
		t.Fatalf("bad created key %+v", k.Key)
	}
	if _, err := c.CreateKey(ctx, member, "t1", "k2", []string{apikey.ScopeReadTeamApps}); !errors.Is(err, domain.ErrMaxKeysReached) {
		t.Fatalf("over max: %v", err)
	}
	if _, err := c.DeleteKey(ctx, member, "t2", k.Key.ID, true); !errors.Is(err, domain.ErrKeyNotFound) && !errors.Is(err, domain.ErrTeamDisabled) {
		t.Fatalf("delete from other team: %v", err)
	}
	if _, err := c.DeleteKey(ctx, member, "t1", k.Key.ID, true); err != nil {
		t.Fatal(err)
	}
	if _, err := c.DeleteKey(ctx, member, "t1", k.Key.ID, true); !errors.Is(err, domain.ErrKeyNotFound) {
		t.Fatalf("second delete: %v", err)
	}
}

// Two handlers stand for two telkeys instances: their in-memory write
// models go stale, and only the stream's sequence check keeps max_keys.
func TestMaxKeysHoldsAcrossInstances(t *testing.T) {
	_, newH := setup(t)
	a, b := newH(), newH()
	enable(t, a, "team", 3)
	var wg sync.WaitGroup
	var mu sync.Mutex
	counts := map[string]int{}
	for i := range 50 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			c := a
			if i%2 == 1 {
				c = b
			}
			_, err := c.CreateKey(context.Background(), member, "team", "k", []string{apikey.ScopeReadTeamApps})
			mu.Lock()
			defer mu.Unlock()
			switch {
			case err == nil:
				counts["ok"]++
			case errors.Is(err, domain.ErrMaxKeysReached):
				counts["full"]++
			default:
				counts[err.Error()]++
			}
		}()
	}
	wg.Wait()
	if counts["ok"] != 3 || counts["full"] != 47 {
		t.Fatalf("got %v, want 3 ok and 47 full", counts)
	}
}

// A third handler loading cold sees everything the others appended, and
// reads a bounded tail thanks to snapshots.
func TestColdLoadSeesHistory(t *testing.T) {
	h, newH := setup(t)
	a := newH()
	enable(t, a, "team", 1)
	ctx := context.Background()
	for range 40 { // create and delete: 81 events on the aggregate
		k, err := a.CreateKey(ctx, member, "team", "k", []string{apikey.ScopeReadTeamApps})
		if err != nil {
			t.Fatal(err)
		}
		if _, err := a.DeleteKey(ctx, member, "team", k.Key.ID, true); err != nil {
			t.Fatal(err)
		}
	}
	a.Wait() // snapshots are stored after the command answers
	if _, err := h.Snapshots.Get(ctx, events.TeamAggregate("team")); err != nil {
		t.Fatalf("no snapshot after 81 events: %v", err)
	}
	last, err := a.CreateKey(ctx, member, "team", "last", []string{apikey.ScopeReadTeamApps})
	if err != nil {
		t.Fatal(err)
	}
	cold := newH()
	before := cold.EventsRead()
	if _, err := cold.CreateKey(ctx, member, "team", "x", []string{apikey.ScopeReadTeamApps}); !errors.Is(err, domain.ErrMaxKeysReached) {
		t.Fatalf("cold handler should see the active key: %v", err)
	}
	if n := cold.EventsRead() - before; n > 32 {
		t.Fatalf("cold load read %d events; the snapshot should bound it to 32", n)
	}
	if _, err := cold.DeleteKey(ctx, member, "team", last.Key.ID, true); err != nil {
		t.Fatal(err)
	}
}

// A rejection stands only against the latest state: an instance whose write
// model is stale must not refuse what another instance made possible.
func TestStaleWriteModelDoesNotReject(t *testing.T) {
	ctx := context.Background()
	cfg := events.AccessConfig{Enabled: true, AllowedScopes: apikey.Scopes(), MaxKeys: 1}
	sc := []string{apikey.ScopeReadTeamApps}

	t.Run("delete a key the other instance created", func(t *testing.T) {
		_, newH := setup(t)
		a, b := newH(), newH()
		if _, _, err := a.ConfigureTeamAccess(ctx, admin, "acme", cfg); err != nil {
			t.Fatal(err)
		}
		k, err := b.CreateKey(ctx, member, "acme", "k", sc)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := a.DeleteKey(ctx, member, "acme", k.Key.ID, true); err != nil {
			t.Fatalf("delete on the stale instance: %v", err)
		}
	})
	t.Run("create after the other instance freed a slot", func(t *testing.T) {
		_, newH := setup(t)
		a, b := newH(), newH()
		if _, _, err := a.ConfigureTeamAccess(ctx, admin, "acme", cfg); err != nil {
			t.Fatal(err)
		}
		k, err := a.CreateKey(ctx, member, "acme", "k", sc)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := b.DeleteKey(ctx, member, "acme", k.Key.ID, true); err != nil {
			t.Fatal(err)
		}
		if _, err := a.CreateKey(ctx, member, "acme", "k2", sc); err != nil {
			t.Fatalf("create on the stale instance: %v", err)
		}
	})
	t.Run("create after the other instance enabled the team", func(t *testing.T) {
		_, newH := setup(t)
		a, b := newH(), newH()
		off := cfg
		off.Enabled = false
		if _, _, err := a.ConfigureTeamAccess(ctx, admin, "acme", off); err != nil {
			t.Fatal(err)
		}
		if _, _, err := b.ConfigureTeamAccess(ctx, admin, "acme", cfg); err != nil {
			t.Fatal(err)
		}
		if _, err := a.CreateKey(ctx, member, "acme", "k", sc); err != nil {
			t.Fatalf("create on the stale instance: %v", err)
		}
	})
}
