package audit_test

import (
	"context"
	"errors"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/telapi/telkeys/apikey"
	"github.com/telapi/telkeys/audit"
	"github.com/telapi/telkeys/bus"
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
	hs := &history{js: js, h: h, rm: projections.NewReadModel(h), tracker: tr}
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
	if err := audit.Replay(ctx, hs.js, audit.Filter{}, collect(&all), nil); err != nil {
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
	if err := audit.Replay(ctx, hs.js, audit.Filter{Team: "acme"}, collect(&acme), nil); err != nil {
		t.Fatal(err)
	}
	if len(acme) != 4 {
		t.Fatalf("acme has %d events, want 4", len(acme))
	}
	if err := audit.Replay(ctx, hs.js, audit.Filter{Type: events.TypeKeyCreated}, collect(&created), nil); err != nil {
		t.Fatal(err)
	}
	if len(created) != 3 {
		t.Fatalf("%d KeyCreated, want 3", len(created))
	}
	var page []audit.Event
	if err := audit.Replay(ctx, hs.js, audit.Filter{After: 2, Limit: 2}, collect(&page), nil); err != nil {
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
	sum, err := audit.Verify(context.Background(), hs.js, bus.EventStream, nil)
	if err != nil {
		t.Fatal(err)
	}
	if sum.Events != hs.last || sum.Aggregates != 3 || sum.FirstSeq != 1 || sum.LastSeq != hs.last {
		t.Fatalf("summary %+v", sum)
	}
}

// copyStream copies the event history into another stream, letting edit
// change, drop (nil) or reorder what is written.
func copyStream(t *testing.T, hs *history, name string, edit func([]audit.Event) []audit.Event) {
	t.Helper()
	ctx := context.Background()
	if _, err := hs.js.CreateStream(ctx, jetstream.StreamConfig{Name: name, Subjects: []string{strings.ToLower(name) + ".>"}, Storage: jetstream.MemoryStorage}); err != nil {
		t.Fatal(err)
	}
	var evs []audit.Event
	if err := audit.Replay(ctx, hs.js, audit.Filter{}, func(e audit.Event) error { evs = append(evs, e); return nil }, nil); err != nil {
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
}

func TestVerifyDetectsTampering(t *testing.T) {
	hs := record(t)
	cases := []struct {
		name   string
		edit   func([]audit.Event) []audit.Event
		seq    uint64
		reason string
	}{
		{"intact copy", func(e []audit.Event) []audit.Event { return e }, 0, ""},
		{"altered payload", func(e []audit.Event) []audit.Event {
			p := e[3].Envelope.Payload
			e[3].Envelope.Payload = append(slices.Clone(p[:len(p)-1]), p[len(p)-1]^1)
			return e
		}, 4, "altered"},
		{"dropped event", func(e []audit.Event) []audit.Event { return slices.Delete(e, 2, 3) }, 3, "dropped"},
		{"reordered pair", func(e []audit.Event) []audit.Event {
			e[2], e[3] = e[3], e[2] // two KeyCreated of acme
			return e
		}, 3, "reordered"},
	}
	for i, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			name := "COPY" + string(rune('A'+i))
			copyStream(t, hs, name, c.edit)
			_, err := audit.Verify(context.Background(), hs.js, name, nil)
			if c.seq == 0 {
				if err != nil {
					t.Fatalf("intact copy: %v", err)
				}
				return
			}
			var b *audit.Broken
			if !errors.As(err, &b) {
				t.Fatalf("not detected: %v", err)
			}
			if b.Seq != c.seq || !strings.Contains(b.Reason, c.reason) {
				t.Fatalf("broken at %d (%s), want %d (%s)", b.Seq, b.Reason, c.seq, c.reason)
			}
		})
	}
}

func TestStateAt(t *testing.T) {
	hs := record(t)
	ctx := context.Background()

	now, err := audit.StateAt(ctx, hs.js, "", time.Time{}, "")
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

	// Between the create and the delete, the key was active and webrtc on.
	then, err := audit.StateAt(ctx, hs.js, "", hs.betweenCreateAndDelete, "acme")
	if err != nil {
		t.Fatal(err)
	}
	if len(then.Teams) != 1 || len(then.Teams[0].Keys) != 2 || then.Teams[0].Keys[0].ID != hs.deleted.Key.ID || !then.WebRTC {
		t.Fatalf("state between create and delete: %+v", then)
	}
	// Before anything, nothing.
	before, err := audit.StateAt(ctx, hs.js, "", time.Unix(0, 1), "")
	if err != nil {
		t.Fatal(err)
	}
	if len(before.Teams) != 0 || !before.WebRTC {
		t.Fatalf("state at the epoch: %+v", before)
	}
}
