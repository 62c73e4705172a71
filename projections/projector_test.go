package projections_test

import (
	"context"
	"errors"
	"slices"
	"strconv"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/telapi/telkeys/apikey"
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
)

type rig struct {
	*coretest.Core
	t  *testing.T
	rm *projections.ReadModel
}

func newRig(t *testing.T) *rig {
	c := coretest.Start(t)
	return &rig{Core: c, t: t, rm: c.Read}
}

func (r *rig) stop()  { r.Stop() }
func (r *rig) start() { r.StartProjector() }

func (r *rig) wait(seq uint64) { r.t.Helper(); r.Wait(seq) }

func (r *rig) configure(team string, max int) uint64 {
	_, res, err := r.Cmds.ConfigureTeamAccess(context.Background(), admin, team, events.AccessConfig{
		Enabled: true, AllowedScopes: apikey.Scopes(), MaxKeys: max,
	})
	if err != nil {
		r.t.Fatal(err)
	}
	return res.Seq
}

func (r *rig) create(team string) commands.CreatedKey {
	k, err := r.Cmds.CreateKey(context.Background(), member, team, "k", []string{apikey.ScopeReadTeamApps})
	if err != nil {
		r.t.Fatal(err)
	}
	return k
}

// state is what the read models say about a team's keys.
func (r *rig) state(team string) (ids []string, count int, live map[string]bool) {
	r.t.Helper()
	ctx := context.Background()
	keys, err := r.rm.TeamKeys(ctx, team)
	if err != nil {
		r.t.Fatal(err)
	}
	live = map[string]bool{}
	for _, k := range keys {
		ids = append(ids, k.ID)
		_, found, err := r.rm.KeyByHash(ctx, k.Hash)
		if err != nil {
			r.t.Fatal(err)
		}
		live[k.ID] = found
	}
	rec, err := r.rm.Team(ctx, team)
	if err != nil {
		r.t.Fatal(err)
	}
	return ids, rec.Keys, live
}

func TestProjectionBuildsReadModels(t *testing.T) {
	r := newRig(t)
	r.configure("acme", 10)
	a, b, c := r.create("acme"), r.create("acme"), r.create("acme")
	res, err := r.Cmds.DeleteKey(context.Background(), member, "acme", b.Key.ID, true)
	if err != nil {
		t.Fatal(err)
	}
	fres, err := r.Cmds.SetPlatformFlag(context.Background(), admin, events.FlagWebRTC, false)
	if err != nil {
		t.Fatal(err)
	}
	r.wait(max(res.Seq, fres.Seq))
	ids, count, live := r.state("acme")
	if !slices.Equal(ids, []string{a.Key.ID, c.Key.ID}) || count != 2 || !live[a.Key.ID] || !live[c.Key.ID] {
		t.Fatalf("ids %v count %d live %v", ids, count, live)
	}
	if _, found, _ := r.rm.KeyByHash(context.Background(), apikey.HashOf(b.Plaintext).String()); found {
		t.Fatal("deleted key still findable by hash")
	}
	if on, _ := r.rm.WebRTC(context.Background()); on {
		t.Fatal("webrtc flag not projected")
	}
}

// A crash can lose read-model writes (the bucket is flushed asynchronously)
// after the consumer learned of them. Simulate it by moving the checkpoint
// back: the projector must re-apply from there, and no deleted key may come
// back, no key be listed twice.
func TestProjectionRecoversLostWrites(t *testing.T) {
	r := newRig(t)
	r.configure("acme", 100)
	var keep []string
	var last uint64
	for i := range 10 {
		k := r.create("acme")
		last = k.Result.Seq
		if i%3 == 0 {
			res, err := r.Cmds.DeleteKey(context.Background(), member, "acme", k.Key.ID, true)
			if err != nil {
				t.Fatal(err)
			}
			last = res.Seq
			continue
		}
		keep = append(keep, k.Key.ID)
	}
	r.wait(last)
	r.stop()

	// Lose everything after event 2 as far as the checkpoint knows.
	if _, err := r.H.ReadModel.Put(context.Background(), bus.CheckpointKey, []byte(strconv.Itoa(2))); err != nil {
		t.Fatal(err)
	}
	r.start()
	r.wait(last)
	ids, count, live := r.state("acme")
	if !slices.Equal(ids, keep) || count != len(keep) {
		t.Fatalf("after re-apply: ids %v (count %d), want %v", ids, count, keep)
	}
	for id, ok := range live {
		if !ok {
			t.Fatalf("key %s listed but not findable by hash", id)
		}
	}
	// Deleted keys stay deleted: exactly the kept keys are live by hash.
	n := 0
	lister, err := r.H.ReadModel.ListKeysFiltered(context.Background(), bus.KeyPrefix+"*")
	if err != nil && !errors.Is(err, jetstream.ErrNoKeysFound) {
		t.Fatal(err)
	}
	for range lister.Keys() {
		n++
	}
	if n != len(keep) {
		t.Fatalf("%d keys by hash, want %d", n, len(keep))
	}
	// And it keeps going.
	k := r.create("acme")
	r.wait(k.Result.Seq)
	if ids, _, _ := r.state("acme"); len(ids) != len(keep)+1 {
		t.Fatalf("new key not projected after recovery: %v", ids)
	}
}

// A replayed batch that holds both the create and the delete of a key whose
// create was stored before (the instance died before writing the
// checkpoint) must still delete it.
func TestReplayedCreateAndDeleteInOneBatch(t *testing.T) {
	r := newRig(t)
	cfgSeq := r.configure("acme", 10)
	k := r.create("acme")
	r.wait(k.Result.Seq)
	r.stop()
	if _, err := r.H.ReadModel.Put(context.Background(), bus.CheckpointKey, []byte(strconv.FormatUint(cfgSeq, 10))); err != nil {
		t.Fatal(err)
	}
	res, err := r.Cmds.DeleteKey(context.Background(), member, "acme", k.Key.ID, true)
	if err != nil {
		t.Fatal(err)
	}
	r.start()
	r.wait(res.Seq)
	ids, count, _ := r.state("acme")
	if _, found, _ := r.rm.KeyByHash(context.Background(), apikey.HashOf(k.Plaintext).String()); found || len(ids) != 0 || count != 0 {
		t.Fatalf("deleted key came back: listed %v, count %d, by hash %v", ids, count, found)
	}
}

// Hints from the bus are not trusted: a false one does not move the tracker.
func TestTrackerIgnoresFalseHints(t *testing.T) {
	r := newRig(t)
	sub, err := r.Tracker.Subscribe(r.NC)
	if err != nil {
		t.Fatal(err)
	}
	defer sub.Unsubscribe()
	seq := r.configure("acme", 1)
	r.wait(seq)
	if err := r.NC.Publish(bus.ProjectedSubject, []byte("99999999")); err != nil {
		t.Fatal(err)
	}
	if err := r.NC.Flush(); err != nil {
		t.Fatal(err)
	}
	// A real event after the false hint. Hints reach the subscription in
	// order and its callbacks run one after another, so once the third
	// (the projector's hint for this event) is being delivered, the false
	// one has been handled.
	seq = r.configure("acme", 2)
	r.wait(seq)
	bustest.Eventually(t, 10*time.Second, "three hints delivered", func() bool {
		n, _ := sub.Delivered()
		return n >= 3
	})
	if got := r.Tracker.Applied(); got != seq {
		t.Fatalf("tracker at %d after a false hint, want %d", got, seq)
	}
}
