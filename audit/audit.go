// Package audit reads the event history for auditors: it replays events in
// stream order with filters, verifies that the history is intact (hashes,
// per-aggregate chains, continuous sequences), and reconstructs the state
// at any past moment. It only reads: an auditor needs no write access.
package audit

import (
	"context"
	"encoding/hex"
	"fmt"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/telapi/telkeys/bus"
	"github.com/telapi/telkeys/events"
)

// Filter selects events. Zero fields select everything.
type Filter struct {
	// Stream is the stream to read; default bus.EventStream.
	Stream string
	Team   string
	Type   events.Type
	// After skips events at or below this stream sequence.
	After uint64
	Since time.Time
	Until time.Time
	// Limit stops after this many events (0: no limit).
	Limit int
}

// Event is one stored event as an auditor sees it.
type Event struct {
	Seq      uint64
	Envelope events.Envelope
	// Stored is when the server stored it.
	Stored time.Time
}

// Replay calls fn for every selected event, in stream order, reading in
// batches so memory does not grow with the history. progress, if not nil,
// is called now and then with the events read and the stream's last
// sequence.
func Replay(ctx context.Context, js jetstream.JetStream, f Filter, fn func(Event) error, progress func(done, last uint64)) error {
	stream := f.Stream
	if stream == "" {
		stream = bus.EventStream
	}
	st, err := js.Stream(ctx, stream)
	if err != nil {
		return err
	}
	info, err := st.Info(ctx)
	if err != nil {
		return err
	}
	last := info.State.LastSeq
	if info.State.Msgs == 0 || f.After >= last {
		return nil
	}
	cfg := jetstream.OrderedConsumerConfig{}
	if f.Team != "" {
		cfg.FilterSubjects = []string{subjectIn(info.Config.Subjects, events.TeamAggregate(f.Team))}
	}
	switch {
	case f.After > 0:
		cfg.DeliverPolicy, cfg.OptStartSeq = jetstream.DeliverByStartSequencePolicy, f.After+1
	case !f.Since.IsZero():
		t := f.Since
		cfg.DeliverPolicy, cfg.OptStartTime = jetstream.DeliverByStartTimePolicy, &t
	}
	cons, err := js.OrderedConsumer(ctx, stream, cfg)
	if err != nil {
		return err
	}
	var done uint64
	n := 0
	return bus.ReadPending(ctx, cons, func(m jetstream.Msg, md *jetstream.MsgMetadata) error {
		if done++; progress != nil && (done%1000 == 0 || md.NumPending == 0) {
			progress(done, last)
		}
		if md.Sequence.Stream > last {
			return bus.ErrStop // written after the replay began
		}
		if !f.Until.IsZero() && md.Timestamp.After(f.Until) {
			return bus.ErrStop
		}
		ev, err := events.Unmarshal(m.Data())
		if err != nil {
			return fmt.Errorf("audit: event at seq %d: %w", md.Sequence.Stream, err)
		}
		if f.Type != "" && ev.Type != f.Type {
			return nil
		}
		if err := fn(Event{Seq: md.Sequence.Stream, Envelope: ev, Stored: md.Timestamp}); err != nil {
			return err
		}
		if n++; f.Limit > 0 && n >= f.Limit {
			return bus.ErrStop
		}
		return nil
	})
}

// subjectIn maps an aggregate to its subject in a stream whose subjects may
// be those of the event stream or of a copy under another prefix.
func subjectIn(streamSubjects []string, aggregate string) string {
	for _, s := range streamSubjects {
		if len(s) > 1 && s[len(s)-1] == '>' {
			return s[:len(s)-1] + aggregate
		}
	}
	return bus.EventSubject(aggregate)
}

// View is the JSON form of an event for auditors: hashes in hex, payload
// fields by their wire names. There is never a secret in it.
type View struct {
	Seq       uint64         `json:"seq"`
	ID        string         `json:"id"`
	Time      string         `json:"time"`
	Type      string         `json:"type"`
	Aggregate string         `json:"aggregate"`
	Team      *string        `json:"team"`
	Actor     events.Actor   `json:"actor"`
	Version   int            `json:"v"`
	Payload   map[string]any `json:"payload"`
	Prev      string         `json:"prev"`
	Hash      string         `json:"hash"`
}

// ViewOf renders an event. A payload of an unknown type is shown empty.
func ViewOf(e Event) View {
	env := e.Envelope
	v := View{
		Seq: e.Seq, ID: env.ID, Time: env.Time.UTC().Format(time.RFC3339Nano), Type: string(env.Type),
		Aggregate: env.Aggregate, Actor: env.Actor, Version: env.Version,
		Prev: hex.EncodeToString(env.Prev), Hash: hex.EncodeToString(env.Hash), Payload: map[string]any{},
	}
	if team, ok := events.TeamOf(env.Aggregate); ok {
		v.Team = &team
	}
	p, err := env.Decode()
	if err != nil {
		return v
	}
	switch p := p.(type) {
	case events.PlatformFlagSet:
		v.Payload = map[string]any{"flag": p.Flag, "enabled": p.Enabled}
	case events.TeamAccessConfigured:
		v.Payload = map[string]any{"enabled": p.Enabled, "allowed_scopes": nonNil(p.AllowedScopes), "max_keys": p.MaxKeys, "max_requests_per_day": p.MaxRequestsPerDay}
	case events.KeyCreated:
		v.Payload = map[string]any{"key_id": p.KeyID, "name": p.Name, "scopes": nonNil(p.Scopes), "hash": hex.EncodeToString(p.Hash), "last4": p.Last4}
	case events.KeyDeleted:
		v.Payload = map[string]any{"key_id": p.KeyID, "hash": hex.EncodeToString(p.Hash)}
	}
	return v
}

func nonNil(s []string) []string {
	if s == nil {
		return []string{}
	}
	return s
}

// Log reads pages of the history, for the API.
type Log struct {
	JS jetstream.JetStream
	// Keys are the event-signing keys to trust.
	Keys *events.Keys
}

// Page returns up to f.Limit events after f.After that match f.
func (l Log) Page(ctx context.Context, f Filter) ([]View, error) {
	out := []View{}
	err := Replay(ctx, l.JS, f, func(e Event) error { out = append(out, ViewOf(e)); return nil }, nil)
	return out, err
}
