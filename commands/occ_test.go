package commands_test

// Optimistic concurrency, proven at the server without timing luck: two
// handlers stand for two telkeys instances, and the second one's write
// model is loaded before the first appends. Its next command therefore
// decides on a stale state, and only the server's expected-sequence check
// (10071) stops the append. Drop that check from the publish and these
// tests fail on every run.

import (
	"context"
	"errors"
	"sync"
	"testing"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/telapi/telkeys/apikey"
	"github.com/telapi/telkeys/bus"
	"github.com/telapi/telkeys/bus/bustest"
	"github.com/telapi/telkeys/commands"
	"github.com/telapi/telkeys/domain"
	"github.com/telapi/telkeys/events"
)

// refusals is a real JetStream connection that keeps the error of every
// event append the server refused.
type refusals struct {
	jetstream.JetStream
	mu   sync.Mutex
	errs []error
}

func (r *refusals) PublishMsg(ctx context.Context, m *nats.Msg, opts ...jetstream.PublishOpt) (*jetstream.PubAck, error) {
	ack, err := r.JetStream.PublishMsg(ctx, m, opts...)
	if err != nil {
		r.mu.Lock()
		r.errs = append(r.errs, err)
		r.mu.Unlock()
	}
	return ack, err
}

// conflicts counts the refusals that were the expected-sequence check.
func (r *refusals) conflicts() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	n := 0
	for _, err := range r.errs {
		var ae *jetstream.APIError
		if errors.As(err, &ae) && ae.ErrorCode == jetstream.JSErrCodeStreamWrongLastSequence {
			n++
		}
	}
	return n
}

func TestStaleAppendIsRefusedByTheServer(t *testing.T) {
	ctx := context.Background()
	sc := []string{apikey.ScopeReadTeamApps}
	newPair := func(t *testing.T) (a, b *commands.Handler, bJS *refusals, h *bus.Handles) {
		ns, _, h := bustest.Setup(t)
		signer, keys := bustest.Signer(t)
		handler := func(js jetstream.JetStream) *commands.Handler {
			c, err := commands.New(commands.Config{JS: js, Events: h.Events, Snapshots: h.Snapshots, Signer: signer, Keys: keys})
			if err != nil {
				t.Fatal(err)
			}
			return c
		}
		_, jsA := bustest.Connect(t, ns)
		_, jsB := bustest.Connect(t, ns)
		bJS = &refusals{JetStream: jsB}
		return handler(jsA), handler(bJS), bJS, h
	}
	// load makes b read the team's aggregate as it is now: a delete of a
	// key that does not exist reads it and changes nothing.
	load := func(t *testing.T, b *commands.Handler) {
		t.Helper()
		if _, err := b.DeleteKey(ctx, member, "acme", "key_01J00000000000000000000000", true); !errors.Is(err, domain.ErrKeyNotFound) {
			t.Fatalf("loading b: %v", err)
		}
	}
	events := func(t *testing.T, h *bus.Handles) uint64 {
		t.Helper()
		info, err := h.Events.Info(ctx)
		if err != nil {
			t.Fatal(err)
		}
		return info.State.Msgs
	}

	t.Run("a second create beyond max_keys", func(t *testing.T) {
		a, b, bJS, h := newPair(t)
		enable(t, a, "acme", 1)
		load(t, b)
		if _, err := a.CreateKey(ctx, member, "acme", "first", sc); err != nil {
			t.Fatal(err)
		}
		// b still thinks the team has no key: it decides yes, and the
		// server refuses its append; b reloads and decides again.
		if _, err := b.CreateKey(ctx, member, "acme", "second", sc); !errors.Is(err, domain.ErrMaxKeysReached) {
			t.Fatalf("second create: %v, want max_keys reached", err)
		}
		if n := bJS.conflicts(); n != 1 {
			t.Fatalf("the server refused %d stale appends, want 1", n)
		}
		if n := events(t, h); n != 2 {
			t.Fatalf("%d events stored, want 2 (configure, one create)", n)
		}
	})

	t.Run("a delete racing a delete", func(t *testing.T) {
		a, b, bJS, _ := newPair(t)
		enable(t, a, "acme", 5)
		k, err := a.CreateKey(ctx, member, "acme", "k", sc)
		if err != nil {
			t.Fatal(err)
		}
		load(t, b)
		if _, err := a.DeleteKey(ctx, member, "acme", k.Key.ID, true); err != nil {
			t.Fatal(err)
		}
		if _, err := b.DeleteKey(ctx, member, "acme", k.Key.ID, true); !errors.Is(err, domain.ErrKeyNotFound) {
			t.Fatalf("second delete: %v, want not found", err)
		}
		if n := bJS.conflicts(); n != 1 {
			t.Fatalf("the server refused %d stale appends, want 1", n)
		}
	})

	t.Run("a create racing a delete", func(t *testing.T) {
		a, b, bJS, h := newPair(t)
		enable(t, a, "acme", 2)
		k, err := a.CreateKey(ctx, member, "acme", "k", sc)
		if err != nil {
			t.Fatal(err)
		}
		load(t, b)
		if _, err := a.DeleteKey(ctx, member, "acme", k.Key.ID, true); err != nil {
			t.Fatal(err)
		}
		// b's stale append is refused; decided again on the latest state
		// (one slot more), its create lands after the delete.
		if _, err := b.CreateKey(ctx, member, "acme", "k2", sc); err != nil {
			t.Fatal(err)
		}
		if n := bJS.conflicts(); n != 1 {
			t.Fatalf("the server refused %d stale appends, want 1", n)
		}
		if n := events(t, h); n != 4 {
			t.Fatalf("%d events stored, want 4", n)
		}
	})

	t.Run("creates while max_keys is lowered", func(t *testing.T) {
		a, b, bJS, _ := newPair(t)
		enable(t, a, "acme", 2)
		if _, err := a.CreateKey(ctx, member, "acme", "k", sc); err != nil {
			t.Fatal(err)
		}
		load(t, b)
		if _, _, err := a.ConfigureTeamAccess(ctx, admin, "acme", eventsConfig(1)); err != nil {
			t.Fatal(err)
		}
		if _, err := b.CreateKey(ctx, member, "acme", "k2", sc); !errors.Is(err, domain.ErrMaxKeysReached) {
			t.Fatalf("create after max_keys was lowered to 1: %v, want max_keys reached", err)
		}
		if n := bJS.conflicts(); n != 1 {
			t.Fatalf("the server refused %d stale appends, want 1", n)
		}
	})
}

func eventsConfig(max int) events.AccessConfig {
	return events.AccessConfig{Enabled: true, AllowedScopes: apikey.Scopes(), MaxKeys: max}
}
