package keyauth_test

import (
	"context"
	"fmt"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/telapi/telkeys/apikey"
	"github.com/telapi/telkeys/bus"
	"github.com/telapi/telkeys/bus/bustest"
	"github.com/telapi/telkeys/events"
	"github.com/telapi/telkeys/keyauth"
)

// These tests act as a leaked service credential: they publish on the
// event stream and the heartbeat subject with the service's connection,
// which the server allows. What they publish is not telkeys' to sign, so
// validators must skip it and change nothing.

// publish stores data on an aggregate's event subject and returns its
// sequence.
func (r *rig) publish(aggregate string, data []byte) uint64 {
	r.t.Helper()
	ack, err := r.JS.Publish(context.Background(), bus.EventSubject(aggregate), data)
	if err != nil {
		r.t.Fatal(err)
	}
	return ack.Sequence
}

// stored returns the bytes of the message at seq, and the event in it.
func (r *rig) stored(seq uint64) ([]byte, events.Envelope) {
	r.t.Helper()
	m, err := r.H.Events.GetMsg(context.Background(), seq)
	if err != nil {
		r.t.Fatal(err)
	}
	ev, err := events.Unmarshal(m.Data)
	if err != nil {
		r.t.Fatal(err)
	}
	return m.Data, ev
}

// lastHash is the hash of the last event stored on an aggregate's subject.
func (r *rig) lastHash(aggregate string) []byte {
	r.t.Helper()
	m, err := r.H.Events.GetLastMsgForSubject(context.Background(), bus.EventSubject(aggregate))
	if err != nil {
		r.t.Fatal(err)
	}
	ev, err := events.Unmarshal(m.Data)
	if err != nil {
		r.t.Fatal(err)
	}
	return ev.Hash
}

// forgeKey makes a KeyCreated event for a new key of team, after prev,
// signed by signer (nil: unsigned), and returns it with the key.
func forgeKey(t testing.TB, team string, prev []byte, signer *events.Signer) ([]byte, string) {
	t.Helper()
	plain, err := apikey.Generate()
	if err != nil {
		t.Fatal(err)
	}
	h := apikey.HashOf(plain)
	ev, err := events.New("evt_forged_"+plain[len(plain)-8:], events.TeamAggregate(team), admin, time.Now(), prev,
		events.KeyCreated{KeyID: "key_forged", Name: "forged", Scopes: apikey.Scopes(), Hash: h[:], Last4: apikey.Last4(plain)})
	if err != nil {
		t.Fatal(err)
	}
	if signer != nil {
		signer.Seal(&ev)
	}
	data, err := ev.Marshal()
	if err != nil {
		t.Fatal(err)
	}
	return data, plain
}

func logTo(b *bustest.LogBuffer) *slog.Logger {
	return slog.New(slog.NewTextHandler(b, &slog.HandlerOptions{Level: slog.LevelDebug}))
}

// TestInvalidEventsAreSkipped: a message on the event stream that is not a
// valid event (junk, a replayed real event, one signed by another key, one
// out of its aggregate's chain) is skipped by a running validator and by
// one that replays the stream later: no key, team or flag changes, the
// validator logs it once with its reason, and the valid events after it
// still apply.
func TestInvalidEventsAreSkipped(t *testing.T) {
	acme := events.TeamAggregate("acme")
	for _, tc := range []struct {
		name, reason string
		// attack stores the invalid message and returns a key that must
		// stay NOT_FOUND ("" if none).
		attack func(r *rig, k keyauthKey) (forgedKey string)
	}{
		{"junk bytes", events.ReasonMalformed, func(r *rig, _ keyauthKey) string {
			r.publish(acme, []byte("\x93not an event\x00\xff"))
			return ""
		}},
		{"a valid event republished", events.ReasonOutOfPlace, func(r *rig, k keyauthKey) string {
			original, _ := r.stored(k.seq)
			wait(r.t, k.v, r.del("acme", k.id))
			r.publish(acme, original) // the KeyCreated of the deleted key, byte for byte
			return k.plain
		}},
		{"signed with another key", events.ReasonUntrustedKey, func(r *rig, _ keyauthKey) string {
			other, _ := bustest.Signer(r.t)
			data, plain := forgeKey(r.t, "acme", r.lastHash(acme), other)
			r.publish(acme, data)
			return plain
		}},
		{"unsigned", events.ReasonUnsigned, func(r *rig, _ keyauthKey) string {
			data, plain := forgeKey(r.t, "acme", r.lastHash(acme), nil)
			r.publish(acme, data)
			return plain
		}},
		{"signed by telkeys' key, chained after the wrong event", events.ReasonOutOfPlace, func(r *rig, k keyauthKey) string {
			_, created := r.stored(k.seq)
			data, plain := forgeKey(r.t, "acme", created.Prev, r.Signer) // a fork before the key's creation
			r.publish(acme, data)
			return plain
		}},
		{"another team's event on this team's subject", events.ReasonWrongSubject, func(r *rig, _ keyauthKey) string {
			data, plain := forgeKey(r.t, "beta", nil, r.Signer)
			r.publish(acme, data)
			return plain
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := newRig(t)
			r.configure("acme", true, []string{apps}, nil)
			k := r.create("acme", apps)
			kept := r.create("acme", apps)
			logs := &bustest.LogBuffer{}
			v := r.validator(keyauth.Config{Log: logTo(logs)})
			expect(t, v, k.Plaintext, apps, keyauth.Valid)

			forged := tc.attack(r, keyauthKey{v: v, id: k.Key.ID, plain: k.Plaintext, seq: k.Result.Seq})
			info, err := r.H.Events.Info(context.Background())
			if err != nil {
				t.Fatal(err)
			}
			bad := info.State.LastSeq
			wait(t, v, bad)
			if v.Rejected() != 1 {
				t.Fatalf("%d messages rejected, want 1", v.Rejected())
			}
			line := fmt.Sprintf("seq=%d subject=%s reason=%s", bad, bus.EventSubject(acme), tc.reason)
			if n := strings.Count(logs.String(), "not a valid event"); n != 1 || !strings.Contains(logs.String(), line) {
				t.Fatalf("want one log line with %q, got %d:\n%s", line, n, logs)
			}
			keys := v.Keys()
			if forged != "" {
				expect(t, v, forged, apps, keyauth.NotFound)
			}
			expect(t, v, kept.Plaintext, apps, keyauth.Valid)

			// The history goes on from the last valid event: later
			// changes apply, on this validator and on one that replays
			// the stream from its start.
			later := r.create("acme", apps)
			wait(t, v, r.del("acme", kept.Key.ID))
			if v.Keys() != keys {
				t.Fatalf("%d keys after one created and one deleted, want %d", v.Keys(), keys)
			}
			fresh := r.validator(keyauth.Config{})
			for _, x := range []*keyauth.Validator{v, fresh} {
				expect(t, x, later.Plaintext, apps, keyauth.Valid)
				expect(t, x, kept.Plaintext, apps, keyauth.NotFound)
				if forged != "" {
					expect(t, x, forged, apps, keyauth.NotFound)
				}
			}
			if fresh.Rejected() != 1 || fresh.Keys() != v.Keys() {
				t.Fatalf("replaying validator: %d rejected, %d keys; want 1 and %d", fresh.Rejected(), fresh.Keys(), v.Keys())
			}
		})
	}
}

// keyauthKey is what an attack needs to know of the rig's first key.
type keyauthKey struct {
	v     *keyauth.Validator
	id    string
	plain string
	seq   uint64
}

// TestForgedHeartbeats: heartbeats that are unsigned, signed by another
// key, replayed from long ago, dated far in the future, or announcing a
// sequence past the end of the stream change nothing: they do not make a
// stale node current, and they do not keep a current one waiting for
// events that never come.
func TestForgedHeartbeats(t *testing.T) {
	r := newRig(t)
	r.configure("acme", true, []string{apps}, nil)
	k := r.create("acme", apps)
	start := time.Now()
	clk := newClock(start)
	const staleness = 10 * time.Second
	v := r.validator(keyauth.Config{Now: clk.Now, MaxStaleness: staleness})
	expect(t, v, k.Plaintext, apps, keyauth.Valid)
	info, err := r.H.Events.Info(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	last := info.State.LastSeq
	beat := func(data []byte) {
		t.Helper()
		if err := r.NC.Publish(bus.HeartbeatSubject, data); err != nil {
			t.Fatal(err)
		}
	}

	clk.Set(start.Add(staleness + time.Second)) // nothing heard since start
	expectSoon(t, v, k.Plaintext, apps, keyauth.Unavailable)
	other, _ := bustest.Signer(t)
	now := clk.Now()
	for _, forged := range [][]byte{
		[]byte(itoa(last)), // the unsigned heartbeat of earlier versions
		[]byte(itoa(last) + " " + fmt.Sprint(now.UnixNano()) + " " + r.Signer.KeyID() + " 00"),
		other.SignHeartbeat(last, now),
		r.Signer.SignHeartbeat(last, start.Add(-time.Second)), // replayed, older than MaxStaleness
		r.Signer.SignHeartbeat(last, now.Add(time.Hour)),      // from the future
		r.Signer.SignHeartbeat(last+1000, now),                // a sequence the stream does not hold
		r.Signer.SignHeartbeat(1<<62, now.Add(-time.Second)),  // likewise
		r.Signer.SignHeartbeat(last, now.Add(-2*time.Hour)),   // replayed, long ago
		r.Signer.SignHeartbeat(last, now.Add(staleness+time.Minute)),
	} {
		beat(forged)
	}
	// A real heartbeat, sent after the forged ones (so handled after them)
	// and dated so that it keeps the node current for one more second.
	beat(r.Signer.SignHeartbeat(last, now.Add(-staleness+time.Second)))
	// Had a heartbeat past the stream's end been believed, the node would
	// wait for that event and stay UNAVAILABLE.
	expectSoon(t, v, k.Plaintext, apps, keyauth.Valid)
	// Had any forged heartbeat counted as heard now, the node would still
	// be current 2 s later.
	clk.Set(now.Add(2 * time.Second))
	expectSoon(t, v, k.Plaintext, apps, keyauth.Unavailable)

	// A current node stays current through a heartbeat past the end of the
	// stream, and applies what comes after.
	now = clk.Now()
	beat(r.Signer.SignHeartbeat(last+1, now))
	beat(r.Signer.SignHeartbeat(last, now))
	expectSoon(t, v, k.Plaintext, apps, keyauth.Valid)
	wait(t, v, r.del("acme", k.Key.ID))
	beat(r.Signer.SignHeartbeat(last+1, clk.Now()))
	expectSoon(t, v, k.Plaintext, apps, keyauth.NotFound)
}
