package keyauth_test

import (
	"bytes"
	"context"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/telapi/telkeys/bus"
	"github.com/telapi/telkeys/bus/bustest"
	"github.com/telapi/telkeys/commands"
	"github.com/telapi/telkeys/keyauth"
	"github.com/telapi/telkeys/projections"
)

// indexWriter is a validator on a service connection, as in telkeys
// serve: only the service may write the key index.
func (r *rig) indexWriter() *keyauth.Validator {
	r.t.Helper()
	nc, _ := bustest.Connect(r.t, r.NS)
	return r.validatorOn(nc, keyauth.Config{})
}

// indexRig has a history with every kind of change, part of it before the
// key index and part after.
type indexRig struct {
	*rig
	keys    []commands.CreatedKey // created; the even ones deleted
	writer  *keyauth.Validator
	indexAt uint64
}

func newIndexRig(t *testing.T) *indexRig {
	r := &indexRig{rig: newRig(t)}
	r.configure("acme", true, []string{apps, calls}, new(int64(1000)))
	r.configure("beta", true, []string{apps}, nil)
	r.configure("off", false, []string{apps}, nil)
	for i := range 6 {
		team := []string{"acme", "beta"}[i%2]
		r.keys = append(r.keys, r.create(team, apps))
	}
	r.del("acme", r.keys[0].Key.ID)
	r.writer = r.indexWriter()
	wait(t, r.writer, r.del("beta", r.keys[1].Key.ID)) // odd index, deleted before the index
	seq, err := r.writer.WriteKeyIndex(context.Background(), 1)
	if err != nil {
		t.Fatal(err)
	}
	if seq != r.writer.Applied() {
		t.Fatalf("index at %d, validator at %d", seq, r.writer.Applied())
	}
	r.indexAt = seq
	// After the index: a delete, a create, a team change and the flag.
	r.del("acme", r.keys[2].Key.ID)
	r.keys = append(r.keys, r.create("beta", apps))
	r.configure("beta", true, []string{apps, read}, nil)
	r.flag(true)
	return r
}

// check expects v to answer exactly like the validator that followed every
// event from the start.
func (r *indexRig) check(t *testing.T, v *keyauth.Validator) {
	t.Helper()
	wait(t, r.writer, v.Applied())
	wait(t, v, r.writer.Applied())
	for i, k := range r.keys {
		for _, scope := range []string{apps, calls, read} {
			got, want := v.Verify(k.Plaintext, scope), r.writer.Verify(k.Plaintext, scope)
			if got.Code != want.Code || got.Team != want.Team || got.KeyID != want.KeyID || got.Scopes != want.Scopes || got.Limit != want.Limit {
				t.Errorf("key %d %s: %+v, the validator that saw every event says %+v", i, scope, got, want)
			}
		}
	}
	if v.Keys() != r.writer.Keys() {
		t.Errorf("%d keys, want %d", v.Keys(), r.writer.Keys())
	}
}

// TestKeyIndex: a validator that starts from the key index and the events
// after it knows exactly what one that followed every event knows.
func TestKeyIndex(t *testing.T) {
	r := newIndexRig(t)
	logs := &bustest.LogBuffer{}
	v := r.validator(keyauth.Config{Log: slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug}))})
	if !strings.Contains(logs.String(), "from_key_index=true") {
		t.Fatalf("the validator did not start from the key index:\n%s", logs)
	}
	r.check(t, v)
	if r.keys[1].Plaintext == "" || v.Verify(r.keys[1].Plaintext, apps).Code != keyauth.NotFound {
		t.Fatal("a key deleted before the index verifies")
	}
	if v.Verify(r.keys[2].Plaintext, apps).Code != keyauth.NotFound {
		t.Fatal("a key deleted after the index verifies")
	}
}

// TestKeyIndexUnusable: an index that is not in a known format, or that is
// ahead of the event stream, is ignored; the validator replays the event
// stream instead and is just as right.
func TestKeyIndexUnusable(t *testing.T) {
	for name, data := range map[string][]byte{
		"garbage":        []byte("not a key index"),
		"newer version":  []byte("tkix\x02rest"),
		"cut off":        nil, // filled below: a real index, truncated
		"ahead of event": nil,
	} {
		t.Run(name, func(t *testing.T) {
			r := newIndexRig(t)
			obs := r.H.KeyIndex
			switch name {
			case "cut off", "ahead of event":
				res, err := obs.GetBytes(context.Background(), bus.KeyIndexObject)
				if err != nil {
					t.Fatal(err)
				}
				if name == "cut off" {
					data = res[:len(res)-7]
				} else {
					data = append([]byte("tkix\x01\xff\xff\xff\x7f"), res[9:]...) // seq far ahead
				}
			}
			if _, err := obs.Put(context.Background(), jetstream.ObjectMeta{Name: bus.KeyIndexObject}, bytes.NewReader(data)); err != nil {
				t.Fatal(err)
			}
			logs := &bustest.LogBuffer{}
			ctx := context.Background()
			nc := r.NC
			v, err := keyauth.New(ctx, nc, keyauth.Config{Log: slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug}))})
			if err != nil {
				t.Fatal(err)
			}
			defer v.Close()
			if !strings.Contains(logs.String(), "from_key_index=false") {
				t.Fatalf("the validator used an unusable index:\n%s", logs)
			}
			r.check(t, v)
		})
	}
}

// TestLastUsedFlushesOnlyUsedKeys: last-used times reach the team's entry
// for the keys verified, and a later use moves only that key's time.
func TestLastUsedFlushesOnlyUsedKeys(t *testing.T) {
	r := newRig(t)
	r.configure("acme", true, []string{apps}, nil)
	k1, k2, k3 := r.create("acme", apps), r.create("acme", apps), r.create("acme", apps)
	t0 := time.Date(2026, 11, 26, 12, 0, 0, 0, time.UTC)
	clk := newClock(t0)
	v := r.validator(keyauth.Config{Now: clk.Now, LastUsedFlush: 20 * time.Millisecond, MaxStaleness: 72 * time.Hour})
	rm := projections.NewReadModel(r.H)
	entry := func() map[string]int64 {
		m, err := rm.LastUsed(context.Background(), "acme")
		if err != nil {
			t.Fatal(err)
		}
		return m
	}
	expect(t, v, k1.Plaintext, apps, keyauth.Valid)
	expect(t, v, k2.Plaintext, apps, keyauth.Valid)
	bustest.Eventually(t, 5*time.Second, "both uses flushed", func() bool {
		m := entry()
		return m[k1.Key.ID] == t0.Unix() && m[k2.Key.ID] == t0.Unix()
	})
	clk.Set(t0.Add(5 * time.Second))
	bustest.Eventually(t, 5*time.Second, "the later use flushed", func() bool {
		expect(t, v, k1.Plaintext, apps, keyauth.Valid)
		return entry()[k1.Key.ID] == t0.Unix()+5
	})
	m := entry()
	if m[k2.Key.ID] != t0.Unix() {
		t.Fatalf("an unused key's time moved: %v", m)
	}
	if _, ok := m[k3.Key.ID]; ok {
		t.Fatalf("a key never verified has a last-used time: %v", m)
	}
}

// TestKeyIndexWhileEventsApply: indexes written while keys are created and
// deleted are each a consistent cut: a validator started from the last one
// answers like the validator that saw every event.
func TestKeyIndexWhileEventsApply(t *testing.T) {
	r := &indexRig{rig: newRig(t)}
	r.configure("acme", true, []string{apps}, nil)
	r.writer = r.indexWriter()
	done := make(chan struct{})
	var writes int
	go func() {
		defer close(done)
		for range 20 {
			if _, err := r.writer.WriteKeyIndex(context.Background(), 1); err != nil {
				t.Error(err)
				return
			}
			writes++
		}
	}()
	for i := range 40 {
		k := r.create("acme", apps)
		r.keys = append(r.keys, k)
		if i%3 == 0 {
			r.del("acme", k.Key.ID)
		}
	}
	<-done
	wait(t, r.writer, r.del("acme", r.keys[1].Key.ID))
	if _, err := r.writer.WriteKeyIndex(context.Background(), 1); err != nil {
		t.Fatal(err)
	}
	logs := &bustest.LogBuffer{}
	v := r.validator(keyauth.Config{Log: slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug}))})
	if !strings.Contains(logs.String(), "from_key_index=true") {
		t.Fatalf("the validator did not start from the key index:\n%s", logs)
	}
	r.check(t, v)
	if writes == 0 {
		t.Fatal("no index written during the changes")
	}
}
