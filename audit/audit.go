// Package audit reads the event history for auditors: it replays events in
// stream order with filters, verifies that the history is intact, and
// reconstructs the state at any past moment. It only reads: an auditor
// needs no write access.
//
// Every stored message goes through the one definition of a valid event,
// events.Chain, with the keys the auditor trusts: a message it rejects (a
// forgery, a replayed copy, junk) is never applied to a state nor shown as
// an event; Verify names each one, and Replay shows them only on request.
package audit

import (
	"context"
	"encoding/hex"
	"errors"
	"strings"
	"sync"
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
	// IncludeInvalid also delivers the stored messages that are not valid
	// events, with Event.Invalid set. They are never applied either way.
	IncludeInvalid bool
	// Checkers is how many goroutines check signatures (0: GOMAXPROCS),
	// Batch how many messages each takes at once (0: 256).
	Checkers, Batch int
	// headsOnly checks every event but its signature, then the signature
	// of the last event linked on each chain, which vouches for the chain
	// (events.Keys.CheckContent). The replay fails with errUnverifiedHead
	// if one does not verify; the caller must then replay with every
	// signature checked. Only StateAt, which delivers no invalid message
	// and no reason, may use it.
	headsOnly bool
}

// errUnverifiedHead: the last event linked on a chain is not validly
// signed, so an event of that chain may be forged (Filter.headsOnly).
var errUnverifiedHead = errors.New("audit: the last event of a chain does not verify")

// Event is one stored message as an auditor sees it: a valid event, or
// (with Filter.IncludeInvalid) a message that is not one.
type Event struct {
	Seq uint64
	// Aggregate is the aggregate of the subject it is stored on.
	Aggregate string
	// Envelope is what decoded: zero for a message that does not decode.
	Envelope events.Envelope
	// Payload is the decoded payload of a valid event; nil for a type this
	// version does not know, and for an invalid message.
	Payload events.Payload
	// Stored is when the server stored it.
	Stored time.Time
	// Invalid says why the message is not a valid event; nil if it is one.
	Invalid *events.Invalid
}

// ErrNoKeys: a reader must say which event-signing keys it trusts.
var ErrNoKeys = errors.New("audit: no trusted event-signing keys")

// Replay calls fn for every selected event, in stream order, reading in
// batches so memory does not grow with the history. Each stored message
// is checked against keys (events.Chain) from the first one of its
// aggregate on, whatever the filter, so After and Since save output, not
// reading. progress, if not nil, is called now and then with the messages
// read and the stream's last sequence.
func Replay(ctx context.Context, js jetstream.JetStream, keys *events.Keys, f Filter, fn func(Event) error, progress func(done, last uint64)) error {
	src, err := open(ctx, js, f.Stream)
	if err != nil {
		return err
	}
	_, err = replay(ctx, js, keys, src, f, nil, fn, progress)
	return err
}

// source is a stream to replay.
type source struct {
	name string
	// prefix + aggregate is the subject of an aggregate: the event stream's,
	// or that of a copy under another prefix.
	prefix  string
	created time.Time
	msgs    uint64
	last    uint64
}

func open(ctx context.Context, js jetstream.JetStream, stream string) (source, error) {
	if stream == "" {
		stream = bus.EventStream
	}
	st, err := js.Stream(ctx, stream)
	if err != nil {
		return source{}, err
	}
	info, err := st.Info(ctx)
	if err != nil {
		return source{}, err
	}
	return source{name: stream, prefix: prefixOf(info.Config.Subjects), created: info.Created,
		msgs: info.State.Msgs, last: info.State.LastSeq}, nil
}

// prefixOf is the subject prefix of the aggregates in a stream whose
// subjects may be those of the event stream or of a copy under another
// prefix.
func prefixOf(streamSubjects []string) string {
	for _, s := range streamSubjects {
		if len(s) > 1 && strings.HasSuffix(s, ".>") {
			return s[:len(s)-1]
		}
	}
	return bus.EventSubjectPrefix
}

// position is where a replay of a whole stream stopped: every message up
// to seq went through chain.
type position struct {
	seq   uint64
	chain *events.Chain
}

// replay is Replay from a position (nil: the start of the stream). It
// returns where it stopped.
func replay(ctx context.Context, js jetstream.JetStream, keys *events.Keys, src source, f Filter, from *position,
	fn func(Event) error, progress func(done, last uint64)) (position, error) {
	if keys == nil || keys.Len() == 0 {
		return position{}, ErrNoKeys
	}
	pos := position{chain: events.NewChain(keys)}
	if from != nil {
		pos = *from
	}
	if src.msgs == 0 || f.After >= src.last || pos.seq >= src.last {
		return pos, nil
	}
	cfg := jetstream.OrderedConsumerConfig{}
	if f.Team != "" {
		cfg.FilterSubjects = []string{src.prefix + events.TeamAggregate(f.Team)}
	}
	if pos.seq > 0 {
		cfg.DeliverPolicy, cfg.OptStartSeq = jetstream.DeliverByStartSequencePolicy, pos.seq+1
	}
	stop := func(md *jetstream.MsgMetadata) bool {
		return md.Sequence.Stream > src.last || // written after the replay began
			(!f.Until.IsZero() && md.Timestamp.After(f.Until))
	}
	var done uint64
	n := 0
	check := keys.Check
	heads := map[string]events.Envelope{} // with headsOnly: the last event linked on each chain
	if f.headsOnly {
		check = keys.CheckContent
	}
	err := readChecked(ctx, js, check, src, cfg, f.Checkers, f.Batch, pos.chain, stop, func(it *item) error {
		if f.headsOnly && it.err == nil {
			heads[it.env.Aggregate] = it.env
		}
		pos.seq = it.seq
		if done++; progress != nil && (done%1000 == 0 || it.pending == 0) {
			progress(done, src.last)
		}
		if it.seq <= f.After || (!f.Since.IsZero() && it.stored.Before(f.Since)) {
			return nil
		}
		var bad *events.Invalid
		if it.err != nil && !errors.As(it.err, &bad) {
			bad = &events.Invalid{Reason: events.ReasonMalformed, Err: it.err}
		}
		if (bad != nil && !f.IncludeInvalid) || (f.Type != "" && it.env.Type != f.Type) {
			return nil
		}
		e := Event{Seq: it.seq, Aggregate: it.agg, Envelope: it.env, Payload: it.p, Stored: it.stored, Invalid: bad}
		if err := fn(e); err != nil {
			return err
		}
		if n++; f.Limit > 0 && n >= f.Limit {
			return bus.ErrStop
		}
		return nil
	})
	for _, h := range heads {
		if err == nil && keys.VerifyHead(h) != nil {
			err = errUnverifiedHead
		}
	}
	return pos, err
}

// View is the JSON form of an event for auditors: hashes in hex, payload
// fields by their wire names. There is never a secret in it. Invalid is
// set (to the reason) only for a stored message that is not a valid event.
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
	Invalid   string         `json:"invalid,omitempty"`
}

// ViewOf renders an event. A payload of an unknown type is shown empty.
// An invalid message shows what decoded of it, and the aggregate of the
// subject it is stored on.
func ViewOf(e Event) View {
	env := e.Envelope
	v := View{
		Seq: e.Seq, ID: env.ID, Type: string(env.Type),
		Aggregate: env.Aggregate, Actor: env.Actor, Version: env.Version,
		Prev: hex.EncodeToString(env.Prev), Hash: hex.EncodeToString(env.Hash), Payload: map[string]any{},
	}
	if !env.Time.IsZero() {
		v.Time = env.Time.UTC().Format(time.RFC3339Nano)
	}
	if e.Invalid != nil {
		v.Invalid, v.Aggregate = e.Invalid.Reason, e.Aggregate
	}
	if team, ok := events.TeamOf(v.Aggregate); ok {
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
		v.Payload = createdPayload(p)
	case events.KeyRolled:
		v.Payload = createdPayload(p.KeyCreated)
		v.Payload["replaces"], v.Payload["replaced_hash"] = p.Replaces, hex.EncodeToString(p.ReplacedHash)
		v.Payload["grace_until"] = p.GraceUntil.UTC().Format(time.RFC3339Nano)
	case events.KeyUpdated:
		v.Payload = map[string]any{"key_id": p.KeyID, "hash": hex.EncodeToString(p.Hash)}
		if p.Enabled != nil {
			v.Payload["enabled"] = *p.Enabled
		}
		if p.Name != nil {
			v.Payload["name"] = *p.Name
		}
	case events.KeyLeaked:
		v.Payload = map[string]any{"key_id": p.KeyID, "hash": hex.EncodeToString(p.Hash), "url": p.URL, "source": p.Source, "reporter": p.Reporter, "revoked": p.Revoked}
	case events.KeyDeleted:
		v.Payload = map[string]any{"key_id": p.KeyID, "hash": hex.EncodeToString(p.Hash)}
	}
	return v
}

func createdPayload(p events.KeyCreated) map[string]any {
	m := map[string]any{"key_id": p.KeyID, "name": p.Name, "scopes": nonNil(p.Scopes), "hash": hex.EncodeToString(p.Hash), "last4": p.Last4}
	if p.ExpiresAt != nil {
		m["expires_at"] = p.ExpiresAt.UTC().Format(time.RFC3339Nano)
	}
	return m
}

func nonNil(s []string) []string {
	if s == nil {
		return []string{}
	}
	return s
}

// Log reads pages of the history for the API. Its zero value with JS and
// Keys set is ready to use; it must not be copied.
type Log struct {
	JS jetstream.JetStream
	// Keys are the event-signing keys to trust.
	Keys *events.Keys
	// resumes are the positions where recent pages of a whole stream
	// stopped.
	resumes resumePoints
}

// Page returns up to f.Limit valid events after f.After that match f.
//
// Whether an event is in place depends on every message before it, so a
// page is checked from the start of the stream (of the team's subject,
// with f.Team). To keep paging on from costing the whole history each
// time, the chain where a page of the whole stream stopped is kept, and a
// page after it starts there.
func (l *Log) Page(ctx context.Context, f Filter) ([]View, error) {
	src, err := open(ctx, l.JS, f.Stream)
	if err != nil {
		return nil, err
	}
	var from *position
	if f.Team == "" {
		from = l.resumes.find(src, l.Keys, f.After)
	}
	out := []View{}
	pos, err := replay(ctx, l.JS, l.Keys, src, f, from, func(e Event) error { out = append(out, ViewOf(e)); return nil }, nil)
	if err == nil && f.Team == "" && pos.seq > 0 {
		l.resumes.add(src, l.Keys, pos)
	}
	return out, err
}

// A resume point holds as long as the stream does: stored messages never
// change (delete and purge are denied), and a new stream of the same name
// has another creation time.
const maxResumePoints = 32

type resumePoints struct {
	mu     sync.Mutex
	points []resumePoint
}

type resumePoint struct {
	stream  string
	created time.Time
	keys    *events.Keys
	pos     position
}

// find returns a copy of the furthest position at or before after.
func (r *resumePoints) find(src source, keys *events.Keys, after uint64) *position {
	r.mu.Lock()
	defer r.mu.Unlock()
	var best *resumePoint
	for i := range r.points {
		p := &r.points[i]
		if p.stream == src.name && p.created.Equal(src.created) && p.keys == keys && p.pos.seq <= after &&
			(best == nil || p.pos.seq > best.pos.seq) {
			best = p
		}
	}
	if best == nil {
		return nil
	}
	c := events.NewChain(keys)
	best.pos.chain.Each(c.Restore)
	return &position{seq: best.pos.seq, chain: c}
}

// add keeps pos, which its caller no longer changes.
func (r *resumePoints) add(src source, keys *events.Keys, pos position) {
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, p := range r.points {
		if p.stream == src.name && p.created.Equal(src.created) && p.keys == keys && p.pos.seq == pos.seq {
			return
		}
	}
	if len(r.points) == maxResumePoints {
		r.points = append(r.points[:0], r.points[1:]...)
	}
	r.points = append(r.points, resumePoint{stream: src.name, created: src.created, keys: keys, pos: pos})
}
