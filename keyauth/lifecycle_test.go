package keyauth_test

import (
	"context"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/telapi/telkeys/bus/bustest"
	"github.com/telapi/telkeys/events"
	"github.com/telapi/telkeys/keyauth"
)

// Nodes enforce the key lifecycle at its exact instants, on their own
// clock (injected here): a key works up to the nanosecond before its
// expiry and not at it; the old key of a roll up to the end of its grace
// period; a disabled key not at all until enabled again.
func TestLifecycleAtItsInstants(t *testing.T) {
	r := newRig(t)
	r.configure("acme", true, []string{apps}, nil)
	ctx := context.Background()
	clk := newClock(time.Now())
	v := r.validator(keyauth.Config{Now: clk.Now, MaxStaleness: 72 * time.Hour})
	at := func(t *testing.T, when time.Time, key string, want keyauth.Code) {
		t.Helper()
		clk.Set(when)
		expectSoon(t, v, key, apps, want)
	}

	t.Run("expiry", func(t *testing.T) {
		until := time.Now().Add(time.Hour).Truncate(time.Second)
		k, err := r.Cmds.CreateKeyUntil(ctx, admin, "acme", "expiring", []string{apps}, &until)
		if err != nil {
			t.Fatal(err)
		}
		wait(t, v, k.Result.Seq)
		at(t, until.Add(-time.Nanosecond), k.Plaintext, keyauth.Valid)
		at(t, until, k.Plaintext, keyauth.Expired)
		at(t, until.Add(time.Hour), k.Plaintext, keyauth.Expired)
	})

	t.Run("roll with a grace period", func(t *testing.T) {
		clk.Set(time.Now())
		old := r.create("acme", apps)
		nk, err := r.Cmds.RollKey(ctx, admin, "acme", old.Key.ID, 90*time.Minute)
		if err != nil {
			t.Fatal(err)
		}
		wait(t, v, nk.Result.Seq)
		p, err := nk.Result.Event.Decode()
		if err != nil {
			t.Fatal(err)
		}
		grace := p.(events.KeyRolled).GraceUntil
		at(t, grace.Add(-time.Nanosecond), old.Plaintext, keyauth.Valid)
		at(t, grace, old.Plaintext, keyauth.Expired)
		// The new key has no expiry.
		at(t, grace.Add(24*time.Hour), nk.Plaintext, keyauth.Valid)
	})

	t.Run("disable and enable", func(t *testing.T) {
		clk.Set(time.Now())
		k := r.create("acme", apps)
		off, on := false, true
		_, res, err := r.Cmds.UpdateKey(ctx, admin, "acme", k.Key.ID, &off, nil, false)
		if err != nil || !res.Revokes {
			t.Fatalf("disable: %v (revokes %v)", err, res.Revokes)
		}
		wait(t, v, res.Seq)
		got := expect(t, v, k.Plaintext, apps, keyauth.Disabled)
		if got.KeyID != k.Key.ID || got.Team != "acme" {
			t.Fatalf("a disabled key's result: %+v", got)
		}
		_, res, err = r.Cmds.UpdateKey(ctx, admin, "acme", k.Key.ID, &on, nil, false)
		if err != nil || res.Revokes {
			t.Fatalf("enable: %v (revokes %v)", err, res.Revokes)
		}
		wait(t, v, res.Seq)
		expect(t, v, k.Plaintext, apps, keyauth.Valid)
	})
}

// A node that starts from the key index knows each key's expiry and state.
func TestKeyIndexKeepsTheLifecycle(t *testing.T) {
	r := newRig(t)
	r.configure("acme", true, []string{apps}, nil)
	ctx := context.Background()
	until := time.Now().Add(time.Hour)
	expiring, err := r.Cmds.CreateKeyUntil(ctx, admin, "acme", "expiring", []string{apps}, &until)
	if err != nil {
		t.Fatal(err)
	}
	disabled := r.create("acme", apps)
	off := false
	if _, _, err := r.Cmds.UpdateKey(ctx, admin, "acme", disabled.Key.ID, &off, nil, false); err != nil {
		t.Fatal(err)
	}
	if _, err := r.indexWriter().WriteKeyIndex(ctx, 0); err != nil {
		t.Fatal(err)
	}
	clk := newClock(until)
	logs := &bustest.LogBuffer{}
	v := r.validator(keyauth.Config{Now: clk.Now, MaxStaleness: 72 * time.Hour, Log: slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug}))})
	if !strings.Contains(logs.String(), "from_key_index=true") {
		t.Fatalf("the validator did not start from the key index:\n%s", logs)
	}
	expectSoon(t, v, expiring.Plaintext, apps, keyauth.Expired)
	expect(t, v, disabled.Plaintext, apps, keyauth.Disabled)
}
