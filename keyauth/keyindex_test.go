package keyauth_test

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/base64"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"errors"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/telapi/telkeys/bus"
	"github.com/telapi/telkeys/bus/bustest"
	"github.com/telapi/telkeys/commands"
	"github.com/telapi/telkeys/events"
	"github.com/telapi/telkeys/keyauth"
	"github.com/telapi/telkeys/projections"
)

// indexWriter is a validator on a service connection, as in telkeys
// serve: only the service may write the key index.
func (r *rig) indexWriter() *keyauth.Validator {
	r.t.Helper()
	nc, _ := bustest.Connect(r.t, r.NS)
	return r.validatorOn(nc, keyauth.Config{Signer: r.Signer})
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

// putIndex stores data as the key index, signed by signer (nil:
// unsigned), as WriteKeyIndex would.
func putIndex(t *testing.T, obs jetstream.ObjectStore, data []byte, signer *events.Signer) {
	t.Helper()
	meta := jetstream.ObjectMeta{Name: bus.KeyIndexObject}
	if signer != nil {
		h := sha256.New()
		h.Write(data)
		digest := jetstream.GetObjectDigestValue(h)
		meta.Metadata = map[string]string{"seq": "1", "kid": signer.KeyID(), "sig": hex.EncodeToString(signer.Sign([]byte(digest)))}
	}
	if _, err := obs.Put(context.Background(), meta, bytes.NewReader(data)); err != nil {
		t.Fatal(err)
	}
}

// TestKeyIndexUnusable: an index that telkeys did not sign, that is not in
// a known format, or that is ahead of the event stream, is ignored; the
// validator replays the event stream instead and is just as right.
func TestKeyIndexUnusable(t *testing.T) {
	for name, why := range map[string]string{
		"garbage":                               "unknown format",
		"older version":                         "unknown format",
		"newer version":                         "unknown format",
		"cut off":                               "cut off",
		"ahead of the stream":                   "the stream at",
		"unsigned":                              "not signed",
		"signed with an untrusted key":          "not trusted",
		"signature of another index":            "does not verify",
		"content swapped under a signed digest": "digests do not match",
	} {
		t.Run(name, func(t *testing.T) {
			r := newIndexRig(t)
			obs := r.H.KeyIndex
			ctx := context.Background()
			real, err := obs.GetBytes(ctx, bus.KeyIndexObject)
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.HasPrefix(real, []byte("tkix\x03")) {
				t.Fatalf("the index starts with %q", real[:5])
			}
			// The real index with a bit of its last key flipped.
			altered := bytes.Clone(real)
			altered[len(altered)-40] ^= 1
			untrusted, _ := bustest.Signer(t)
			switch name {
			case "garbage":
				putIndex(t, obs, []byte("not a key index"), r.Signer)
			case "older version":
				putIndex(t, obs, append([]byte("tkix\x01"), real[5:]...), r.Signer)
			case "newer version":
				putIndex(t, obs, []byte("tkix\x04rest"), r.Signer)
			case "cut off":
				putIndex(t, obs, real[:len(real)-7], r.Signer)
			case "ahead of the stream":
				_, n := binary.Uvarint(real[5:])
				putIndex(t, obs, append(binary.AppendUvarint([]byte("tkix\x03"), 1<<40), real[5+n:]...), r.Signer)
			case "unsigned":
				putIndex(t, obs, real, nil)
			case "signed with an untrusted key":
				putIndex(t, obs, real, untrusted)
			case "signature of another index":
				info, err := obs.GetInfo(ctx, bus.KeyIndexObject)
				if err != nil {
					t.Fatal(err)
				}
				if _, err := obs.Put(ctx, jetstream.ObjectMeta{Name: bus.KeyIndexObject, Metadata: info.Metadata}, bytes.NewReader(altered)); err != nil {
					t.Fatal(err)
				}
			case "content swapped under a signed digest":
				swapContent(t, r.rig, altered)
			}
			logs := &bustest.LogBuffer{}
			v, err := keyauth.New(ctx, r.NC, keyauth.Config{Keys: r.Keys, Log: slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug}))})
			if err != nil {
				t.Fatal(err)
			}
			defer v.Close()
			if !strings.Contains(logs.String(), "from_key_index=false") {
				t.Fatalf("the validator used an unusable index:\n%s", logs)
			}
			if !strings.Contains(logs.String(), "cannot use the key index") || !strings.Contains(logs.String(), why) {
				t.Fatalf("the index was not refused for %q:\n%s", why, logs)
			}
			r.check(t, v)
		})
	}
}

// swapContent makes the key index's meta point at other content while it
// keeps the real index's digest and signature: what a writer with raw
// access to the bucket's subjects could do. The object store's digest
// check at the end of the read refuses it.
func swapContent(t *testing.T, r *rig, content []byte) {
	t.Helper()
	ctx := context.Background()
	genuine, err := r.H.KeyIndex.GetInfo(ctx, bus.KeyIndexObject)
	if err != nil {
		t.Fatal(err)
	}
	other, err := r.H.KeyIndex.Put(ctx, jetstream.ObjectMeta{Name: "other"}, bytes.NewReader(content))
	if err != nil {
		t.Fatal(err)
	}
	forged := *other
	forged.Name, forged.Digest, forged.Metadata = bus.KeyIndexObject, genuine.Digest, genuine.Metadata
	data, err := json.Marshal(forged)
	if err != nil {
		t.Fatal(err)
	}
	m := nats.NewMsg("$O." + bus.BucketKeyIndex + ".M." + base64.URLEncoding.EncodeToString([]byte(bus.KeyIndexObject)))
	m.Header.Set("Nats-Rollup", "sub")
	m.Data = data
	if _, err := r.JS.PublishMsg(ctx, m); err != nil {
		t.Fatal(err)
	}
	got, err := r.H.KeyIndex.GetInfo(ctx, bus.KeyIndexObject)
	if err != nil || got.NUID != other.NUID || got.Digest != genuine.Digest {
		t.Fatalf("the meta was not swapped: %+v, %v", got, err)
	}
}

// TestKeyIndexRestoresTheChain: a validator started from the key index
// checks the events after it against each aggregate's last valid event as
// of the index, so a replayed event from before the index (even an
// aggregate's first, whose prev is empty) is refused, as by a validator
// that followed every event.
func TestKeyIndexRestoresTheChain(t *testing.T) {
	r := newIndexRig(t)
	acme := events.TeamAggregate("acme")
	// Replays: acme's KeyCreated of a key deleted before the index, and
	// acme's very first event (the stream's first).
	created, _ := r.stored(r.keys[0].Result.Seq)
	r.publish(acme, created)
	first, ev := r.stored(1)
	if ev.Aggregate != acme || len(ev.Prev) != 0 {
		t.Fatalf("the first event is %s of %s after %x", ev.Type, ev.Aggregate, ev.Prev)
	}
	r.publish(acme, first)
	// A forgery signed by a key nodes do not trust, chained correctly.
	other, _ := bustest.Signer(t)
	forged, plain := forgeKey(t, "acme", r.lastHash(acme), other)
	r.publish(acme, forged)

	logs := &bustest.LogBuffer{}
	v := r.validator(keyauth.Config{Log: logTo(logs)})
	if !strings.Contains(logs.String(), "from_key_index=true") {
		t.Fatalf("the validator did not start from the key index:\n%s", logs)
	}
	r.check(t, v)
	if v.Rejected() != 3 || r.writer.Rejected() != 3 {
		t.Fatalf("rejected: %d from the index, %d following every event; want 3", v.Rejected(), r.writer.Rejected())
	}
	expect(t, v, r.keys[0].Plaintext, apps, keyauth.NotFound)
	expect(t, v, plain, apps, keyauth.NotFound)
	// Valid events after the forgeries still apply.
	k := r.create("acme", apps)
	wait(t, v, k.Result.Seq)
	expect(t, v, k.Plaintext, apps, keyauth.Valid)
}

// TestKeyIndexNeedsASigner: only a validator with the signing key writes
// an index.
func TestKeyIndexNeedsASigner(t *testing.T) {
	r := newRig(t)
	r.configure("acme", true, []string{apps}, nil)
	nc, _ := bustest.Connect(t, r.NS)
	v := r.validatorOn(nc, keyauth.Config{})
	if _, err := v.WriteKeyIndex(context.Background(), 1); err == nil {
		t.Fatal("a validator without a signer wrote the key index")
	}
	if _, err := r.H.KeyIndex.GetInfo(context.Background(), bus.KeyIndexObject); !errors.Is(err, jetstream.ErrObjectNotFound) {
		t.Fatalf("a key index is stored: %v", err)
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
	// Times are kept to the minute: a use 5 s later changes nothing, one a
	// minute later moves the time.
	clk.Set(t0.Add(5 * time.Second))
	expectSoon(t, v, k1.Plaintext, apps, keyauth.Valid)
	clk.Set(t0.Add(65 * time.Second))
	bustest.Eventually(t, 5*time.Second, "the later use flushed", func() bool {
		expect(t, v, k1.Plaintext, apps, keyauth.Valid)
		return entry()[k1.Key.ID] == t0.Unix()+65
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
