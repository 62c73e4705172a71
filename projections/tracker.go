package projections

import (
	"context"
	"errors"
	"strconv"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/telapi/telkeys/bus"
)

// Tracker knows up to which stream sequence the read models are built, on
// whichever instance built them. It makes the API read-your-writes: after a
// command appended event N, Wait(N) returns once every instance's queries
// see it.
//
// It learns progress from the local projector, from the core-NATS hint that
// every projector publishes, and, while someone waits, from the read-model
// checkpoint, so a lost hint only delays a waiter by one poll.
type Tracker struct {
	kv      jetstream.KeyValue
	applied bus.Progress
}

// pollEvery is how often a waiter reads the checkpoint.
const pollEvery = 50 * time.Millisecond

// NewTracker starts from the read models' checkpoint.
func NewTracker(ctx context.Context, h *bus.Handles) (*Tracker, error) {
	t := &Tracker{kv: h.ReadModel}
	if err := t.refresh(ctx); err != nil {
		return nil, err
	}
	return t, nil
}

// Subscribe listens for other instances' progress hints until the returned
// subscription is closed. A hint only makes the tracker read the
// checkpoint: anyone who can publish on the bus could send a false one.
func (t *Tracker) Subscribe(nc *nats.Conn) (*nats.Subscription, error) {
	return nc.Subscribe(bus.ProjectedSubject, func(m *nats.Msg) {
		if seq, err := strconv.ParseUint(string(m.Data), 10, 64); err == nil && seq > t.Applied() {
			ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
			defer cancel()
			_ = t.refresh(ctx)
		}
	})
}

// Advance records that every event up to seq is applied.
func (t *Tracker) Advance(seq uint64) { t.applied.Advance(seq) }

// Applied returns the highest sequence known to be applied.
func (t *Tracker) Applied() uint64 { return t.applied.Load() }

// Wait blocks until seq is applied or ctx ends.
func (t *Tracker) Wait(ctx context.Context, seq uint64) error {
	return t.applied.Wait(ctx, seq, pollEvery, func() { _ = t.refresh(ctx) })
}

func (t *Tracker) refresh(ctx context.Context) error {
	e, err := t.kv.Get(ctx, bus.CheckpointKey)
	if errors.Is(err, jetstream.ErrKeyNotFound) {
		return nil
	}
	if err != nil {
		return err
	}
	seq, err := strconv.ParseUint(string(e.Value()), 10, 64)
	if err != nil {
		return err
	}
	t.Advance(seq)
	return nil
}
