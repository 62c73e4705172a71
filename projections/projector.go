package projections

import (
	"context"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strconv"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/vmihailenco/msgpack/v5"

	"github.com/telapi/telkeys/bus"
	"github.com/telapi/telkeys/events"
)

// Projector applies events to the read models.
type Projector struct {
	h       *bus.Handles
	nc      *nats.Conn
	tracker *Tracker
	log     *slog.Logger
	// OnPending, if set, receives the number of events still to apply after
	// each one: the projection lag.
	OnPending func(uint64)
}

// NewProjector returns a Projector that reports progress to tracker.
func NewProjector(h *bus.Handles, nc *nats.Conn, tracker *Tracker, log *slog.Logger) *Projector {
	return &Projector{h: h, nc: nc, tracker: tracker, log: log, OnPending: func(uint64) {}}
}

// Run consumes events until ctx ends.
func (p *Projector) Run(ctx context.Context) error {
	cc, err := p.h.Projector.Consume(func(msg jetstream.Msg) { p.handle(ctx, msg) },
		jetstream.PullMaxMessages(1),
		jetstream.ConsumeErrHandler(func(_ jetstream.ConsumeContext, err error) {
			if ctx.Err() == nil && !errors.Is(err, jetstream.ErrNoHeartbeat) {
				p.log.Debug("projector consume", "err", err)
			}
		}))
	if err != nil {
		return fmt.Errorf("projections: consume: %w", err)
	}
	<-ctx.Done()
	cc.Drain()
	<-cc.Closed()
	return nil
}

func (p *Projector) handle(ctx context.Context, msg jetstream.Msg) {
	md, err := msg.Metadata()
	if err != nil {
		p.log.Error("projector: no metadata", "err", err)
		_ = msg.Term()
		return
	}
	seq := md.Sequence.Stream
	actx, cancel := context.WithTimeout(ctx, 1500*time.Millisecond) // within the consumer's AckWait
	defer cancel()
	if err := p.Apply(actx, seq, msg.Data()); err != nil {
		if ctx.Err() != nil {
			return // shutting down: the event is redelivered to whoever runs next
		}
		p.log.Error("projector: apply failed, will retry", "seq", seq, "err", err)
		_ = msg.NakWithDelay(250 * time.Millisecond)
		return
	}
	if err := msg.DoubleAck(actx); err != nil {
		p.log.Warn("projector: ack failed; event will be reapplied idempotently", "seq", seq, "err", err)
		return
	}
	p.tracker.Advance(seq)
	p.OnPending(md.NumPending)
	_ = p.nc.Publish(bus.ProjectedSubject, strconv.AppendUint(nil, seq, 10))
}

// Apply applies one stored event. It is idempotent: an event at or below
// the sequence already applied to its aggregate changes nothing.
func (p *Projector) Apply(ctx context.Context, seq uint64, data []byte) error {
	ev, err := events.Unmarshal(data)
	if err != nil {
		return err
	}
	payload, err := ev.Decode()
	if errors.Is(err, events.ErrUnknownType) {
		p.log.Warn("projector: skipping event of unknown type", "seq", seq, "type", ev.Type)
		return nil
	}
	if err != nil {
		return err
	}
	if ev.Aggregate == events.PlatformAggregate {
		return p.applyPlatform(ctx, seq, payload)
	}
	team, ok := events.TeamOf(ev.Aggregate)
	if !ok {
		p.log.Warn("projector: skipping event of unknown aggregate", "seq", seq, "aggregate", ev.Aggregate)
		return nil
	}
	return p.applyTeam(ctx, seq, team, ev, payload)
}

func (p *Projector) applyPlatform(ctx context.Context, seq uint64, payload events.Payload) error {
	f, ok := payload.(events.PlatformFlagSet)
	if !ok {
		return nil
	}
	var rec FlagRecord
	rev, err := get(ctx, p.h.Platform, f.Flag, &rec)
	if err != nil || (rev > 0 && rec.Seq >= seq) {
		return err
	}
	return put(ctx, p.h.Platform, f.Flag, rev, FlagRecord{Seq: seq, Enabled: f.Enabled})
}

// applyTeam writes the key records first and the team record last: the
// team record's Seq is the aggregate's checkpoint, so a crash in between
// makes the whole event apply again, and each write is idempotent.
func (p *Projector) applyTeam(ctx context.Context, seq uint64, team string, ev events.Envelope, payload events.Payload) error {
	var rec TeamRecord
	rev, err := get(ctx, p.h.Teams, team, &rec)
	if err != nil || (rev > 0 && rec.Seq >= seq) {
		return err
	}
	rec.Team = team
	switch e := payload.(type) {
	case events.TeamAccessConfigured:
		rec.Configured = true
		rec.Enabled = e.Enabled
		rec.AllowedScopes = e.AllowedScopes
		rec.MaxKeys = e.MaxKeys
		rec.MaxRequestsPerDay = e.MaxRequestsPerDay
	case events.KeyCreated:
		k := KeyRecord{
			Seq: seq, ID: e.KeyID, Team: team, Name: e.Name, Scopes: e.Scopes,
			Hash: hex.EncodeToString(e.Hash), Last4: e.Last4, CreatedAt: ev.Time,
		}
		n, err := p.updateTeamKeys(ctx, team, seq, func(keys []KeyRecord) []KeyRecord {
			if slices.ContainsFunc(keys, func(x KeyRecord) bool { return x.ID == k.ID }) {
				return keys
			}
			return append(keys, k)
		})
		if err != nil {
			return err
		}
		if _, err := p.h.Keys.Put(ctx, k.Hash, mustMarshal(k)); err != nil {
			return err
		}
		rec.Keys = n
	case events.KeyDeleted:
		n, err := p.updateTeamKeys(ctx, team, seq, func(keys []KeyRecord) []KeyRecord {
			return slices.DeleteFunc(keys, func(x KeyRecord) bool { return x.ID == e.KeyID })
		})
		if err != nil {
			return err
		}
		if err := p.h.Keys.Delete(ctx, hex.EncodeToString(e.Hash)); err != nil {
			return err
		}
		rec.Keys = n
	}
	rec.Seq = seq
	rec.UpdatedAt = ev.Time
	return put(ctx, p.h.Teams, team, rev, rec)
}

func (p *Projector) updateTeamKeys(ctx context.Context, team string, seq uint64, f func([]KeyRecord) []KeyRecord) (int, error) {
	var tk TeamKeysRecord
	rev, err := get(ctx, p.h.TeamKeys, team, &tk)
	if err != nil {
		return 0, err
	}
	tk.Keys = f(tk.Keys)
	tk.Seq = seq
	return len(tk.Keys), put(ctx, p.h.TeamKeys, team, rev, tk)
}

// get reads a record; rev is 0 when the key does not exist.
func get(ctx context.Context, kv jetstream.KeyValue, key string, into any) (uint64, error) {
	e, err := kv.Get(ctx, key)
	if errors.Is(err, jetstream.ErrKeyNotFound) {
		return 0, nil
	}
	if err != nil {
		return 0, err
	}
	if err := msgpack.Unmarshal(e.Value(), into); err != nil {
		return 0, fmt.Errorf("projections: %s/%s: %w", kv.Bucket(), key, err)
	}
	return e.Revision(), nil
}

// put writes a record with compare-and-swap on the revision read, so two
// projectors can never interleave writes to one record.
func put(ctx context.Context, kv jetstream.KeyValue, key string, rev uint64, v any) error {
	var err error
	if rev == 0 {
		_, err = kv.Create(ctx, key, mustMarshal(v))
	} else {
		_, err = kv.Update(ctx, key, mustMarshal(v), rev)
	}
	return err
}

func mustMarshal(v any) []byte {
	b, err := msgpack.Marshal(v)
	if err != nil { // plain structs of basic types: cannot fail
		panic(err)
	}
	return b
}
