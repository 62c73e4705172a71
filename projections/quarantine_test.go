package projections_test

import (
	"context"
	"strconv"
	"testing"

	"github.com/telapi/telkeys/bus"
	"github.com/telapi/telkeys/events"
)

// TestQuarantineReplay: a quarantined message applied again after a crash
// (the checkpoint behind its quarantine record) does not stop the
// projector. (Found by review: the record's second write conflicted and
// failed the batch forever.)
func TestQuarantineReplay(t *testing.T) {
	r := newRig(t)
	cfgSeq := r.configure("acme", 10)
	ack, err := r.JS.Publish(context.Background(), bus.EventSubject(events.TeamAggregate("acme")), []byte("junk"))
	if err != nil {
		t.Fatal(err)
	}
	r.wait(ack.Sequence)
	r.stop()
	if _, err := r.H.ReadModel.Put(context.Background(), bus.CheckpointKey, []byte(strconv.FormatUint(cfgSeq, 10))); err != nil {
		t.Fatal(err)
	}
	r.start()
	k := r.create("acme")
	r.wait(k.Result.Seq)
	q, err := r.Read.Quarantine(context.Background())
	if err != nil || len(q) != 1 || q[0].Seq != ack.Sequence || q[0].Reason != events.ReasonMalformed {
		t.Fatalf("quarantine %+v %v", q, err)
	}
}
