package audit_test

import (
	"bytes"
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/telapi/telkeys/apikey"
	"github.com/telapi/telkeys/audit"
	"github.com/telapi/telkeys/bus"
	"github.com/telapi/telkeys/bus/bustest"
	"github.com/telapi/telkeys/commands"
	"github.com/telapi/telkeys/events"
	"github.com/telapi/telkeys/internal/coretest"
	"github.com/telapi/telkeys/projections"
)

var (
	admin  = coretest.Admin
	member = coretest.Member
	apps   = []string{apikey.ScopeReadTeamApps}
)

type history struct {
	c       *coretest.Core
	keys    *events.Keys
	js      jetstream.JetStream
	h       *bus.Handles
	rm      *projections.ReadModel
	tracker *projections.Tracker
	// betweenCreateAndDelete is a moment when deleted was active.
	betweenCreateAndDelete time.Time
	deleted, kept          commands.CreatedKey
	last                   uint64
}

// record writes a small history through the real commands and projector.
func record(t *testing.T) *history {
	c := coretest.Start(t)
	js, h, cmds, tr := c.JS, c.H, c.Cmds, c.Tracker
	var err error
	hs := &history{c: c, keys: c.Keys, js: js, h: h, rm: projections.NewReadModel(h), tracker: tr}
	bg := context.Background()
	must := func(_ any, err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	_, _, err = cmds.ConfigureTeamAccess(bg, admin, "acme", events.AccessConfig{Enabled: true, AllowedScopes: apikey.Scopes(), MaxKeys: 5})
	must(nil, err)
	_, _, err = cmds.ConfigureTeamAccess(bg, admin, "beta", events.AccessConfig{Enabled: true, AllowedScopes: apps, MaxKeys: 2, MaxRequestsPerDay: new(int64)})
	must(nil, err)
	hs.deleted, err = cmds.CreateKey(bg, member, "acme", "old", apps)
	must(nil, err)
	hs.kept, err = cmds.CreateKey(bg, member, "acme", "kept", apps)
	must(nil, err)
	must(cmds.CreateKey(bg, member, "beta", "b", apps))
	hs.betweenCreateAndDelete = time.Now()
	must(cmds.SetPlatformFlag(bg, admin, events.FlagWebRTC, false))
	res, err := cmds.DeleteKey(bg, member, "acme", hs.deleted.Key.ID, true)
	must(nil, err)
	hs.last = res.Seq
	wctx, wcancel := context.WithTimeout(bg, 10*time.Second)
	defer wcancel()
	if err := tr.Wait(wctx, hs.last); err != nil {
		t.Fatal(err)
	}
	return hs
}

func TestReplayFiltersAndOrder(t *testing.T) {
	hs := record(t)
	ctx := context.Background()
	var all, acme, created []audit.Event
	collect := func(into *[]audit.Event) func(audit.Event) error {
		return func(e audit.Event) error { *into = append(*into, e); return nil }
	}
	if err := audit.Replay(ctx, hs.js, hs.keys, audit.Filter{}, collect(&all), nil); err != nil {
		t.Fatal(err)
	}
	if uint64(len(all)) != hs.last {
		t.Fatalf("replayed %d events, want %d", len(all), hs.last)
	}
	for i, e := range all {
		if e.Seq != uint64(i+1) {
			t.Fatalf("event %d has seq %d", i, e.Seq)
		}
	}
	if err := audit.Replay(ctx, hs.js, hs.keys, audit.Filter{Team: "acme"}, collect(&acme), nil); err != nil {
		t.Fatal(err)
	}
	if len(acme) != 4 {
		t.Fatalf("acme has %d events, want 4", len(acme))
	}
	if err := audit.Replay(ctx, hs.js, hs.keys, audit.Filter{Type: events.TypeKeyCreated}, collect(&created), nil); err != nil {
		t.Fatal(err)
	}
	if len(created) != 3 {
		t.Fatalf("%d KeyCreated, want 3", len(created))
	}
	var page []audit.Event
	if err := audit.Replay(ctx, hs.js, hs.keys, audit.Filter{After: 2, Limit: 2}, collect(&page), nil); err != nil {
		t.Fatal(err)
	}
	if len(page) != 2 || page[0].Seq != 3 || page[1].Seq != 4 {
		t.Fatalf("page after 2: %v", page)
	}
	v := audit.ViewOf(created[0])
	if v.Type != "KeyCreated" || *v.Team != "acme" || v.Payload["key_id"] != hs.deleted.Key.ID || len(v.Payload["hash"].(string)) != 64 || v.Actor.Role != "member" {
		t.Fatalf("view %+v", v)
	}
}

func TestVerifyIntactHistory(t *testing.T) {
	hs := record(t)
	sum, err := audit.Verify(context.Background(), hs.js, hs.keys, bus.EventStream, nil)
	if err != nil {
		t.Fatal(err)
	}
	if sum.Events != hs.last || sum.Aggregates != 3 || sum.FirstSeq != 1 || sum.LastSeq != hs.last {
		t.Fatalf("summary %+v", sum)
	}
}

// copyStream copies the event history into another stream, letting edit
// change, drop (nil) or reorder what is written, then deletes the
// messages at the sequences in del from the copy.
func copyStream(t *testing.T, hs *history, name string, edit func([]audit.Event) []audit.Event, del ...uint64) {
	t.Helper()
	ctx := context.Background()
	st, err := hs.js.CreateStream(ctx, jetstream.StreamConfig{Name: name, Subjects: []string{strings.ToLower(name) + ".>"}, Storage: jetstream.MemoryStorage})
	if err != nil {
		t.Fatal(err)
	}
	var evs []audit.Event
	if err := audit.Replay(ctx, hs.js, hs.keys, audit.Filter{}, func(e audit.Event) error { evs = append(evs, e); return nil }, nil); err != nil {
		t.Fatal(err)
	}
	for _, e := range edit(evs) {
		b, err := e.Envelope.Marshal()
		if err != nil {
			t.Fatal(err)
		}
		if _, err := hs.js.Publish(ctx, strings.ToLower(name)+"."+e.Envelope.Aggregate, b); err != nil {
			t.Fatal(err)
		}
	}
	for _, seq := range del {
		if err := st.DeleteMsg(ctx, seq); err != nil {
			t.Fatal(err)
		}
	}
}

// problems lists a Verify error as "seq:reason".
func problems(t *testing.T, err error) []string {
	t.Helper()
	if err == nil {
		return nil
	}
	var b *audit.Broken
	if !errors.As(err, &b) {
		t.Fatalf("not a *Broken: %v", err)
	}
	var out []string
	for _, p := range b.Problems {
		out = append(out, fmt.Sprintf("%d:%s", p.Seq, p.Reason))
	}
	return out
}

// The history of record: 1 acme configured, 2 beta configured, 3 acme
// "old" created, 4 acme "kept" created, 5 beta "b" created, 6 webrtc off,
// 7 "old" deleted.
func TestVerifyDetectsTampering(t *testing.T) {
	hs := record(t)
	other, _ := bustest.Signer(t)
	cases := []struct {
		name        string
		edit        func([]audit.Event) []audit.Event
		del         []uint64
		want        []string
		valid, last uint64
	}{
		{"intact copy", func(e []audit.Event) []audit.Event { return e }, nil, nil, 7, 7},
		{"altered payload", func(e []audit.Event) []audit.Event {
			p := e[3].Envelope.Payload
			e[3].Envelope.Payload = append(slices.Clone(p[:len(p)-1]), p[len(p)-1]^1)
			return e
		}, nil, []string{"4:bad_hash", "7:out_of_place"}, 5, 7},
		{"dropped event", func(e []audit.Event) []audit.Event { return slices.Delete(e, 2, 3) },
			nil, []string{"3:out_of_place", "6:out_of_place"}, 4, 6},
		{"reordered pair", func(e []audit.Event) []audit.Event {
			e[2], e[3] = e[3], e[2] // two KeyCreated of acme
			return e
		}, nil, []string{"3:out_of_place", "7:out_of_place"}, 5, 7},
		{"signed by another key", func(e []audit.Event) []audit.Event {
			for i := range e {
				other.Seal(&e[i].Envelope)
			}
			return e
		}, nil, []string{"1:untrusted_key", "2:untrusted_key", "3:untrusted_key", "4:untrusted_key", "5:untrusted_key", "6:untrusted_key", "7:untrusted_key"}, 0, 7},
		{"unsigned", func(e []audit.Event) []audit.Event {
			e[5].Envelope.KeyID, e[5].Envelope.Sig = "", nil
			return e
		}, nil, []string{"6:unsigned"}, 6, 7},
		{"bad signature", func(e []audit.Event) []audit.Event {
			e[4].Envelope.Sig = slices.Clone(e[4].Envelope.Sig)
			e[4].Envelope.Sig[0] ^= 1
			return e
		}, nil, []string{"5:bad_signature"}, 6, 7},
		{"deleted message", func(e []audit.Event) []audit.Event { return e }, []uint64{5}, []string{"6:gap"}, 6, 7},
		{"missing start", func(e []audit.Event) []audit.Event { return e }, []uint64{1},
			[]string{"2:missing_start", "3:out_of_place", "4:out_of_place", "7:out_of_place"}, 3, 7},
	}
	for i, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			name := "COPY" + string(rune('A'+i))
			copyStream(t, hs, name, c.edit, c.del...)
			sum, err := audit.Verify(context.Background(), hs.js, hs.keys, name, nil)
			if got := problems(t, err); !slices.Equal(got, c.want) {
				t.Fatalf("problems %v, want %v", got, c.want)
			}
			if sum.Events != c.valid || sum.LastSeq != c.last {
				t.Fatalf("summary %+v, want %d valid events up to seq %d", sum, c.valid, c.last)
			}
		})
	}
}

// hostile stores, with the service's connection (as a leaked credential
// could), on the subject of acme: junk, a valid event again, an event
// signed by another key, one signed by telkeys' own key but out of place,
// one with a signature that does not verify and one of beta; then a real
// command. It returns the sequence of each, by name.
func hostile(t *testing.T, hs *history) map[string]uint64 {
	t.Helper()
	ctx := context.Background()
	acme := bus.EventSubject(events.TeamAggregate("acme"))
	raw := map[uint64][]byte{}
	var hashes = map[uint64][]byte{}
	if err := audit.Replay(ctx, hs.js, hs.keys, audit.Filter{}, func(e audit.Event) error {
		b, err := e.Envelope.Marshal()
		raw[e.Seq], hashes[e.Seq] = b, e.Envelope.Hash
		return err
	}, nil); err != nil {
		t.Fatal(err)
	}
	other, _ := bustest.Signer(t)
	forge := func(s *events.Signer, prev []byte, tamper func(*events.Envelope)) []byte {
		h := sha256.Sum256([]byte("forged"))
		ev, err := events.New("evt_forged", events.TeamAggregate("acme"), events.Actor{Subject: "mallory", Role: "member"},
			time.Now(), prev, events.KeyCreated{KeyID: "key_forged", Name: "forged", Scopes: apps, Hash: h[:], Last4: "abcd"})
		if err != nil {
			t.Fatal(err)
		}
		s.Seal(&ev)
		if tamper != nil {
			tamper(&ev)
		}
		b, err := ev.Marshal()
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	msgs := []struct {
		name    string
		subject string
		data    []byte
	}{
		{"junk", acme, []byte("\x93junk")},
		{"replayed KeyCreated of the deleted key", acme, raw[3]},
		{"signed by another key", acme, forge(other, hashes[7], nil)},
		{"signed by telkeys, out of place", acme, forge(hs.c.Signer, hashes[3], nil)},
		{"bad signature", acme, forge(hs.c.Signer, hashes[7], func(e *events.Envelope) { e.Sig[5] ^= 1 })},
		{"beta's event on acme's subject", acme, raw[5]},
	}
	seqs := map[string]uint64{}
	for _, m := range msgs {
		ack, err := hs.js.Publish(ctx, m.subject, m.data)
		if err != nil {
			t.Fatal(err)
		}
		seqs[m.name] = ack.Sequence
	}
	k, err := hs.c.Cmds.CreateKey(ctx, member, "acme", "after", apps)
	if err != nil {
		t.Fatalf("a command after the forgeries: %v", err)
	}
	seqs["real"] = k.Result.Seq
	return seqs
}

func TestForgedMessages(t *testing.T) {
	hs := record(t)
	seqs := hostile(t, hs)
	ctx := context.Background()

	sum, err := audit.Verify(ctx, hs.js, hs.keys, "", nil)
	want := []string{
		fmt.Sprintf("%d:malformed", seqs["junk"]),
		fmt.Sprintf("%d:out_of_place", seqs["replayed KeyCreated of the deleted key"]),
		fmt.Sprintf("%d:untrusted_key", seqs["signed by another key"]),
		fmt.Sprintf("%d:out_of_place", seqs["signed by telkeys, out of place"]),
		fmt.Sprintf("%d:bad_signature", seqs["bad signature"]),
		fmt.Sprintf("%d:wrong_subject", seqs["beta's event on acme's subject"]),
	}
	if got := problems(t, err); !slices.Equal(got, want) {
		t.Fatalf("problems %v, want %v", got, want)
	}
	if sum.Events != 8 || sum.Invalid != 6 || sum.Aggregates != 3 || sum.FirstSeq != 1 || sum.LastSeq != seqs["real"] {
		t.Fatalf("summary %+v", sum)
	}
	var b *audit.Broken
	errors.As(err, &b)
	if b.Problems[0].EventID != "" || b.Problems[1].EventID != hs.deleted.Result.Event.ID || !strings.Contains(b.Problems[1].String(), "(event "+hs.deleted.Result.Event.ID+")") {
		t.Fatalf("event ids: %+v", b.Problems[:2])
	}

	// A forged event (a bad signature) linked where the real one after it
	// belonged: checking only the last signatures notices...
	if _, err := audit.HeadsOnlyState(ctx, hs.js, hs.keys, "acme"); !errors.Is(err, audit.ErrUnverifiedHead) {
		t.Fatalf("checking only the last signatures of a forged history: %v", err)
	}
	// ...and StateAt checks every signature instead. The state: the
	// deleted key stays deleted, no forged key, the real one is there.
	st, err := audit.StateAt(ctx, hs.js, hs.keys, "", time.Time{}, "acme")
	if err != nil {
		t.Fatal(err)
	}
	var ids []string
	for _, k := range st.Teams[0].Keys {
		ids = append(ids, k.ID)
	}
	if len(ids) != 2 || ids[0] != hs.kept.Key.ID || ids[1] == hs.deleted.Key.ID || st.Seq != seqs["real"] {
		t.Fatalf("acme's keys %v at seq %d; kept %s, deleted %s", ids, st.Seq, hs.kept.Key.ID, hs.deleted.Key.ID)
	}

	// Replay skips them, or shows them with their reasons.
	var valid, all []string
	each := func(into *[]string) func(audit.Event) error {
		return func(e audit.Event) error {
			r := ""
			if e.Invalid != nil {
				r = ":" + e.Invalid.Reason
			}
			*into = append(*into, fmt.Sprintf("%d%s", e.Seq, r))
			return nil
		}
	}
	if err := audit.Replay(ctx, hs.js, hs.keys, audit.Filter{Team: "acme"}, each(&valid), nil); err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(valid, []string{"1", "3", "4", "7", fmt.Sprint(seqs["real"])}) {
		t.Fatalf("acme's valid events %v", valid)
	}
	if err := audit.Replay(ctx, hs.js, hs.keys, audit.Filter{After: 7, IncludeInvalid: true}, each(&all), nil); err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(all, append(slices.Clone(want), fmt.Sprint(seqs["real"]))) {
		t.Fatalf("every message after 7: %v", all)
	}
	var out bytes.Buffer
	if err := audit.WriteEvents(ctx, hs.js, hs.keys, audit.Filter{After: 7, IncludeInvalid: true}, "jsonl", &out, nil); err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(strings.TrimSpace(out.String()), "\n")
	if len(lines) != 7 || !strings.Contains(lines[0], `"invalid":"malformed"`) || !strings.Contains(lines[0], `"team":"acme"`) || strings.Contains(lines[6], `"invalid"`) {
		t.Fatalf("jsonl:\n%s", out.String())
	}

	// The API's pages, from the start and from where the last one stopped.
	log := &audit.Log{JS: hs.js, Keys: hs.keys}
	var paged []string
	for after := uint64(0); ; {
		page, err := log.Page(ctx, audit.Filter{After: after, Limit: 2})
		if err != nil {
			t.Fatal(err)
		}
		for _, v := range page {
			if v.Invalid != "" {
				t.Fatalf("a page shows an invalid message: %+v", v)
			}
			paged = append(paged, fmt.Sprint(v.Seq))
		}
		if len(page) < 2 {
			break
		}
		after = page[len(page)-1].Seq
	}
	if want := []string{"1", "2", "3", "4", "5", "6", "7", fmt.Sprint(seqs["real"])}; !slices.Equal(paged, want) {
		t.Fatalf("pages %v, want %v", paged, want)
	}
	if _, err := (&audit.Log{JS: hs.js}).Page(ctx, audit.Filter{}); !errors.Is(err, audit.ErrNoKeys) {
		t.Fatalf("a page trusting no key: %v", err)
	}
}

// TestParallelCheckIsChainCheck: the verdicts of Replay, checked in
// parallel, are those of one events.Chain checking every message in order.
func TestParallelCheckIsChainCheck(t *testing.T) {
	hs := record(t)
	hostile(t, hs)
	ctx := context.Background()
	chain := events.NewChain(hs.keys)
	var want []string
	for _, m := range readAll(t, hs.js, bus.EventStream) {
		md, _ := m.Metadata()
		_, _, err := chain.Check(strings.TrimPrefix(m.Subject(), bus.EventSubjectPrefix), m.Data())
		var bad *events.Invalid
		r := "valid"
		if errors.As(err, &bad) {
			r = bad.Reason
		}
		want = append(want, fmt.Sprintf("%d:%s", md.Sequence.Stream, r))
	}
	for _, c := range []struct{ checkers, batch int }{{1, 1}, {1, 256}, {3, 2}, {8, 1}, {0, 3}} {
		var got []string
		err := audit.Replay(ctx, hs.js, hs.keys, audit.Filter{IncludeInvalid: true, Checkers: c.checkers, Batch: c.batch}, func(e audit.Event) error {
			r := "valid"
			if e.Invalid != nil {
				r = e.Invalid.Reason
			}
			got = append(got, fmt.Sprintf("%d:%s", e.Seq, r))
			return nil
		}, nil)
		if err != nil || !slices.Equal(got, want) {
			t.Fatalf("%d checkers, batches of %d: %v %v, want %v", c.checkers, c.batch, err, got, want)
		}
	}
}

func readAll(t testing.TB, js jetstream.JetStream, stream string) []jetstream.Msg {
	t.Helper()
	ctx := context.Background()
	cons, err := js.OrderedConsumer(ctx, stream, jetstream.OrderedConsumerConfig{})
	if err != nil {
		t.Fatal(err)
	}
	var out []jetstream.Msg
	if err := bus.ReadPending(ctx, cons, func(m jetstream.Msg, _ *jetstream.MsgMetadata) error { out = append(out, m); return nil }); err != nil {
		t.Fatal(err)
	}
	return out
}

func TestStateAt(t *testing.T) {
	hs := record(t)
	ctx := context.Background()

	now, err := audit.StateAt(ctx, hs.js, hs.keys, "", time.Time{}, "")
	if err != nil {
		t.Fatal(err)
	}
	// At "now" it equals the live read models.
	live, err := hs.rm.Teams(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(now.Teams) != len(live) {
		t.Fatalf("%d teams replayed, %d live", len(now.Teams), len(live))
	}
	for i, lt := range live {
		rt := now.Teams[i]
		keys, err := hs.rm.TeamKeys(ctx, lt.Team)
		if err != nil {
			t.Fatal(err)
		}
		var liveIDs, replayIDs []string
		for _, k := range keys {
			liveIDs = append(liveIDs, k.ID)
		}
		for _, k := range rt.Keys {
			replayIDs = append(replayIDs, k.ID)
		}
		if rt.Team != lt.Team || rt.Enabled != lt.Enabled || rt.MaxKeys != lt.MaxKeys ||
			!slices.Equal(rt.AllowedScopes, lt.AllowedScopes) || !slices.Equal(liveIDs, replayIDs) {
			t.Fatalf("team %s: replayed %+v, live %+v keys %v", lt.Team, rt, lt, liveIDs)
		}
	}
	if live, _ := hs.rm.WebRTC(ctx); now.WebRTC != live || now.WebRTC {
		t.Fatalf("webrtc replayed %v, live %v", now.WebRTC, live)
	}
	// On an intact history the last signature of each chain is enough,
	// and gives the same state.
	if fast, err := audit.HeadsOnlyState(ctx, hs.js, hs.keys, ""); err != nil || !reflect.DeepEqual(fast, now) {
		t.Fatalf("checking only the last signatures: %v\n%+v\nwant %+v", err, fast, now)
	}

	// Between the create and the delete, the key was active and webrtc on.
	then, err := audit.StateAt(ctx, hs.js, hs.keys, "", hs.betweenCreateAndDelete, "acme")
	if err != nil {
		t.Fatal(err)
	}
	if len(then.Teams) != 1 || len(then.Teams[0].Keys) != 2 || then.Teams[0].Keys[0].ID != hs.deleted.Key.ID || !then.WebRTC {
		t.Fatalf("state between create and delete: %+v", then)
	}
	// Before anything, nothing.
	before, err := audit.StateAt(ctx, hs.js, hs.keys, "", time.Unix(0, 1), "")
	if err != nil {
		t.Fatal(err)
	}
	if len(before.Teams) != 0 || !before.WebRTC {
		t.Fatalf("state at the epoch: %+v", before)
	}
}
