package projections

import (
	"bytes"
	"context"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/vmihailenco/msgpack/v5"

	"github.com/telapi/telkeys/bus"
	"github.com/telapi/telkeys/domain"
	"github.com/telapi/telkeys/events"
)

const (
	// maxBatch bounds how many events one batch applies.
	maxBatch = 256
	// rewindEvery bounds how often the projector rewinds to one sequence.
	rewindEvery = 5 * time.Second
)

// Projector applies events to the read models in batches.
//
// The durable consumer is pinned to one instance at a time. Events are
// applied only in stream order and only right after the checkpoint (the
// stream has no gaps: it denies deletes); on a gap the consumer is rewound
// to the checkpoint. Records carry the sequence of their last event and
// ignore older ones; a key's record is created once (its write expects an
// empty subject) and deleted unconditionally. Every other write is a compare-and-swap
// on the revision the projector read, so a stale instance that lost its pin
// cannot overwrite a newer one's writes.
type Projector struct {
	h       *bus.Handles
	js      jetstream.JetStream
	nc      *nats.Conn
	tracker *Tracker
	keys    *events.Keys
	log     *slog.Logger
	// OnPending, if set, receives the number of events still to apply after
	// each batch: the projection lag.
	OnPending func(uint64)
	// OnQuarantine, if set, is called once for every stored message that
	// is not a valid event, with the reason.
	OnQuarantine func(reason string)

	// cache holds records this projector wrote or read, with their
	// revisions; it is dropped on any failure.
	cache map[string]cached
	// rewoundTo and rewoundAt are the last rewind.
	rewoundTo uint64
	rewoundAt time.Time
}

type cached struct {
	rev uint64
	val []byte // nil when the key does not exist
	// keys is a team's key list, decoded (then val is not kept): it is the
	// largest record, and decoding and encoding it for every event of a
	// batch made projection quadratic in a team's keys.
	keys *keyList
}

// maxCachedKeyLists bounds the decoded key lists kept between batches;
// beyond it, only the lists the last batch touched are kept.
const maxCachedKeyLists = 64

// NewProjector returns a Projector that applies the events signed by keys
// and reports progress to tracker.
func NewProjector(h *bus.Handles, js jetstream.JetStream, nc *nats.Conn, tracker *Tracker, keys *events.Keys, log *slog.Logger) *Projector {
	return &Projector{h: h, js: js, nc: nc, tracker: tracker, keys: keys, log: log,
		OnPending: func(uint64) {}, OnQuarantine: func(string) {}}
}

// Run consumes events until ctx ends.
func (p *Projector) Run(ctx context.Context) error {
	for ctx.Err() == nil {
		err := p.consume(ctx)
		if ctx.Err() != nil {
			break
		}
		p.log.Warn("projector restarts", "err", err)
		select {
		case <-ctx.Done():
		case <-time.After(100 * time.Millisecond):
		}
	}
	return nil
}

func (p *Projector) consume(ctx context.Context) error {
	p.cache = map[string]cached{}
	if err := p.rewindIfLost(ctx); err != nil {
		return err
	}
	// A batch is what has arrived while the last one was applied: under
	// load batches grow by themselves, and a lone event waits for nothing.
	msgs := make(chan jetstream.Msg, maxBatch)
	var lastErr atomic.Pointer[error] // the consumer's last error: why it stopped
	stop := make(chan struct{})
	defer close(stop)
	// Pull requests expire after 2 s, not nats.go's 30 s: an instance
	// waiting for the pin asks again soon after the pinned one is gone.
	cc, err := p.h.Projector.Consume(func(m jetstream.Msg) {
		select {
		case msgs <- m:
		case <-stop:
		}
	}, jetstream.PullMaxMessages(maxBatch), jetstream.PullPriorityGroup(bus.ProjectorGroup), jetstream.PullExpiry(2*time.Second),
		jetstream.PullHeartbeat(bus.ConsumerHeartbeat),
		jetstream.ConsumeErrHandler(func(_ jetstream.ConsumeContext, err error) { lastErr.Store(&err) }))
	if err != nil {
		return fmt.Errorf("projections: consume: %w", err)
	}
	defer cc.Stop()
	reconnects := p.nc.Stats().Reconnects
	for {
		var first jetstream.Msg
		select {
		case first = <-msgs:
		case <-cc.Closed(): // a terminal error; others are recovered from
			var err error
			if e := lastErr.Load(); e != nil {
				err = *e
			}
			return fmt.Errorf("projections: the consumer stopped: %v", err)
		case <-ctx.Done():
			return ctx.Err()
		}
		// After a reconnect the server may have restarted and lost recent
		// read-model writes (the bucket is flushed asynchronously): drop the
		// cache and check the checkpoint against the consumer again.
		if r := p.nc.Stats().Reconnects; r != reconnects {
			return fmt.Errorf("projections: reconnected to NATS (%d)", r)
		}
		batch := []jetstream.Msg{first}
	drain:
		for len(batch) < maxBatch {
			select {
			case m := <-msgs:
				batch = append(batch, m)
			default:
				break drain
			}
		}
		if err := p.applyBatch(ctx, batch); err != nil {
			p.cache = map[string]cached{}
			return err
		}
	}
}

func (p *Projector) applyBatch(ctx context.Context, batch []jetstream.Msg) error {
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	cp, cpRev, err := p.checkpoint(ctx)
	if err != nil {
		return err
	}
	w := &writes{p: p, touched: map[string]bool{}}
	next := cp + 1
	var ack jetstream.Msg // the last message at or below what is applied
	var pending uint64
	for _, m := range batch {
		md, err := m.Metadata()
		if err != nil {
			return err
		}
		seq := md.Sequence.Stream
		pending = md.NumPending
		switch {
		case seq < next: // applied before (a redelivery)
			ack = m
			continue
		case seq > next:
			// Earlier events were applied by another instance (this one
			// waited for the pin meanwhile), or delivered to an instance
			// that died, or their writes were lost in a crash. If the
			// checkpoint moved, this instance's cache is stale: start again
			// from the bucket. Otherwise have the consumer deliver again
			// from the checkpoint, on this same subscription, and skip what
			// was already buffered.
			delete(p.cache, bus.CheckpointKey)
			if now, _, err := p.checkpoint(ctx); err != nil || now != cp {
				return errors.Join(err, fmt.Errorf("projections: the checkpoint moved from %d to %d", cp, now))
			}
			if err := p.rewind(ctx, next); err != nil {
				return err
			}
			continue
		}
		if err := p.apply(ctx, w, seq, m.Subject(), m.Data(), md.Timestamp); err != nil {
			return fmt.Errorf("projections: event %d: %w", seq, err)
		}
		next++
		ack = m
	}
	if next-1 > cp {
		if err := w.flush(ctx); err != nil {
			return err
		}
		// Every record the queries read is stored: this instance's
		// commands may answer now. The chain records and the checkpoint
		// are the projector's own; other instances wait for the checkpoint.
		p.tracker.Advance(next - 1)
		// The chain records and then the checkpoint go last, after every
		// record write is stored: the bucket is one stream, so a crash that
		// loses writes loses a suffix, and a surviving chain record or
		// checkpoint implies every write before it.
		w.ops, w.late = append(w.ops, w.late...), nil
		w.put(bus.CheckpointKey, cpRev, strconv.AppendUint(nil, next-1, 10))
		if err := w.flush(ctx); err != nil {
			return err
		}
		w.trimKeyLists()
		p.OnPending(pending)
		_ = p.nc.Publish(bus.ProjectedSubject, strconv.AppendUint(nil, next-1, 10))
	}
	if ack != nil {
		return ack.Ack() // AckAll: acknowledges everything up to it
	}
	return nil
}

// rewind makes the consumer deliver again from seq, at most once per
// rewindEvery for the same seq: messages buffered before a rewind still
// arrive after it and must not trigger another.
func (p *Projector) rewind(ctx context.Context, seq uint64) error {
	if p.rewoundTo == seq && time.Since(p.rewoundAt) < rewindEvery {
		return nil
	}
	p.log.Info("projector rewinds to its checkpoint", "seq", seq)
	if _, err := p.js.ResetConsumerToSequence(ctx, bus.EventStream, bus.ProjectorConsumer, seq); err != nil {
		return fmt.Errorf("projections: rewind to %d: %w", seq, err)
	}
	p.rewoundTo, p.rewoundAt = seq, time.Now()
	return nil
}

// rewindIfLost runs when a projector starts. Events delivered past the
// checkpoint were either lost in a crash after being acknowledged, or are
// held by an instance that died and would only come back after AckWait:
// either way, deliver again from the checkpoint. A live instance that was
// mid-batch sees the repeats and skips them.
func (p *Projector) rewindIfLost(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	cp, _, err := p.checkpoint(ctx)
	if err != nil {
		return err
	}
	info, err := p.h.Projector.Info(ctx)
	if err != nil {
		return err
	}
	if info.Delivered.Stream <= cp {
		return nil
	}
	return p.rewind(ctx, cp+1)
}

// checkpoint returns the stream sequence the read models reflect, and its
// revision. It is cached like every record this projector writes; if
// another instance moved it meanwhile, the next checkpoint write fails its
// compare-and-swap and the projector starts again from the bucket.
func (p *Projector) checkpoint(ctx context.Context) (uint64, uint64, error) {
	c, ok := p.cache[bus.CheckpointKey]
	if !ok {
		e, err := p.h.ReadModel.Get(ctx, bus.CheckpointKey)
		switch {
		case errors.Is(err, jetstream.ErrKeyNotFound):
		case err != nil:
			return 0, 0, err
		default:
			c = cached{rev: e.Revision(), val: e.Value()}
		}
		p.cache[bus.CheckpointKey] = c
	}
	if c.val == nil {
		return 0, c.rev, nil
	}
	seq, err := strconv.ParseUint(string(c.val), 10, 64)
	if err != nil {
		return 0, 0, fmt.Errorf("projections: bad checkpoint: %w", err)
	}
	return seq, c.rev, nil
}

// apply checks one stored message (events.Chain: the one definition of a
// valid event) and folds it into the pending writes, or quarantines it.
// Each aggregate's chain record holds the sequence and hash of its last
// valid event, so a message handled before (a replay after a crash) is
// skipped, and a check resumes where the last one stopped.
func (p *Projector) apply(ctx context.Context, w *writes, seq uint64, subject string, data []byte, stored time.Time) error {
	agg := bus.AggregateOf(subject)
	chainKey := bus.ChainPrefix + agg
	var link ChainRecord
	rev, err := w.get(ctx, chainKey, &link)
	if err != nil || (rev > 0 && link.Seq >= seq) {
		return err
	}
	chain := events.NewChain(p.keys)
	chain.Restore(agg, link.Hash)
	ev, payload, err := chain.Check(agg, data)
	var bad *events.Invalid
	if errors.As(err, &bad) {
		// Written once: on a replay after a crash or a failover the record
		// exists, and the write's conflict only says so (see flush).
		key := bus.QuarantinePrefix + strconv.FormatUint(seq, 10)
		if _, seen := w.p.cache[key]; !seen {
			p.log.Warn("projector: quarantined a message that is not a valid event", "seq", seq, "subject", subject, "reason", bad.Reason, "err", bad.Err)
			p.OnQuarantine(bad.Reason)
		}
		val := mustMarshal(QuarantineRecord{Seq: seq, Subject: subject, Reason: bad.Reason, Detail: bad.Err.Error(), StoredAt: stored, EventID: ev.ID})
		w.ops = append(w.ops, op{key: key, val: val, once: true})
		w.p.cache[key] = cached{rev: pendingRev, val: val}
		return nil
	}
	val := mustMarshal(ChainRecord{Seq: seq, Hash: ev.Hash})
	w.late = append(w.late, op{key: chainKey, rev: rev, val: val})
	w.p.cache[chainKey] = cached{rev: pendingRev, val: val}
	if payload == nil {
		p.log.Warn("projector: skipping event of unknown type", "seq", seq, "type", ev.Type)
		return nil
	}
	if f, ok := payload.(events.PlatformFlagSet); ok {
		var rec FlagRecord
		rev, err := w.get(ctx, bus.FlagPrefix+f.Flag, &rec)
		if err != nil || (rev > 0 && rec.Seq >= seq) {
			return err
		}
		w.put(bus.FlagPrefix+f.Flag, rev, mustMarshal(FlagRecord{Seq: seq, Enabled: f.Enabled}))
		return nil
	}
	team, ok := events.TeamOf(ev.Aggregate)
	if !ok {
		p.log.Warn("projector: skipping event of unknown aggregate", "seq", seq, "aggregate", ev.Aggregate)
		return nil
	}
	// Each record carries the sequence of the last event applied to it and
	// is only changed by later events. After a crash some records may be
	// ahead of the checkpoint; re-applying the events in between then
	// leaves them as they are.
	var rec TeamRecord
	rev, err = w.get(ctx, bus.TeamPrefix+team, &rec)
	if err != nil {
		return err
	}
	teamBehind := rec.Seq < seq
	rec.Team = team
	switch e := payload.(type) {
	case events.TeamAccessConfigured:
		rec.Configured = true
		rec.AccessConfig = e.AccessConfig
	case events.KeyCreated:
		n, err := w.addKey(ctx, team, seq, keyRecord(team, seq, ev.Time, e), nil)
		if err != nil {
			return err
		}
		rec.Keys = n
	case events.KeyRolled:
		k := keyRecord(team, seq, ev.Time, e.KeyCreated)
		k.Replaces = e.Replaces
		n, err := w.addKey(ctx, team, seq, k, func(l *keyList) {
			l.update(e.Replaces, func(old *KeyRecord) {
				old.ReplacedBy = e.KeyID
				if old.ExpiresAt == nil || e.GraceUntil.Before(*old.ExpiresAt) {
					until := e.GraceUntil
					old.ExpiresAt = &until
				}
			})
		})
		if err != nil {
			return err
		}
		rec.Keys = n
	case events.KeyUpdated:
		n, err := w.updateTeamKeys(ctx, team, seq, func(l *keyList) {
			l.update(e.KeyID, func(k *KeyRecord) {
				if e.Enabled != nil {
					k.Disabled = !*e.Enabled
				}
				if e.Name != nil {
					k.Name = *e.Name
				}
			})
		})
		if err != nil {
			return err
		}
		rec.Keys = n
	case events.KeyLeaked:
		leak := domain.Leak{KeyID: e.KeyID, URL: e.URL, Source: e.Source, Reporter: e.Reporter, Revoked: e.Revoked, At: ev.Time}
		n, err := w.updateTeamKeys(ctx, team, seq, func(l *keyList) {
			l.update(e.KeyID, func(k *KeyRecord) {
				leak.Name = k.Name
				if !e.Revoked {
					k.Leak = &leak
				}
			})
			if e.Revoked {
				l.remove(e.KeyID)
			}
		})
		if err != nil {
			return err
		}
		if e.Revoked {
			w.dropKeyRecord(e.Hash)
		}
		if teamBehind {
			rec.Leaks = append(rec.Leaks, leak)
			rec.Leaks = rec.Leaks[max(0, len(rec.Leaks)-MaxLeaks):]
		}
		rec.Keys = n
	case events.KeyDeleted:
		n, err := w.updateTeamKeys(ctx, team, seq, func(l *keyList) { l.remove(e.KeyID) })
		if err != nil {
			return err
		}
		w.dropKeyRecord(e.Hash)
		rec.Keys = n
	}
	if !teamBehind {
		return nil
	}
	rec.Seq = seq
	rec.UpdatedAt = ev.Time
	w.put(bus.TeamPrefix+team, rev, mustMarshal(rec))
	return nil
}

// keyRecord is the record of the key a KeyCreated (or KeyRolled) makes.
func keyRecord(team string, seq uint64, at time.Time, e events.KeyCreated) KeyRecord {
	return KeyRecord{
		Seq: seq, ID: e.KeyID, Team: team, Name: e.Name, Scopes: e.Scopes,
		Hash: hex.EncodeToString(e.Hash), Last4: e.Last4, CreatedAt: at, ExpiresAt: e.ExpiresAt,
	}
}

// addKey adds k to its team's list (and makes any other change to the
// list), and writes its record under key.<hash>, and returns how many keys
// the list holds.
func (w *writes) addKey(ctx context.Context, team string, seq uint64, k KeyRecord, also func(*keyList)) (int, error) {
	enc := mustMarshal(k)
	n, err := w.updateTeamKeys(ctx, team, seq, func(l *keyList) {
		l.add(k, enc)
		if also != nil {
			also(l)
		}
	})
	if err != nil {
		return 0, err
	}
	// A key's record is written once and deleted once, never again: the
	// write expects an empty subject, and if the subject has any history
	// this create was applied before (see flush).
	if _, seen := w.p.cache[bus.KeyPrefix+k.Hash]; !seen {
		w.ops = append(w.ops, op{key: bus.KeyPrefix + k.Hash, val: enc, once: true})
		w.p.cache[bus.KeyPrefix+k.Hash] = cached{rev: pendingRev, val: enc}
	}
	return n, nil
}

// dropKeyRecord deletes key.<hash>. The record goes whatever its subject
// holds: a delete marker removes a stored record, and where none was ever
// stored (a replay whose create this batch holds, or whose create was
// never written) it stays as a tombstone, so the create, which expects an
// empty subject, can never be written after it. A stale instance can do
// no harm with it: the event is in the stream.
func (w *writes) dropKeyRecord(hash []byte) {
	hashKey := bus.KeyPrefix + hex.EncodeToString(hash)
	w.dropOnce(hashKey)
	w.ops = append(w.ops, op{key: hashKey, blind: true})
	w.p.cache[hashKey] = cached{rev: pendingRev}
}

// writes collects one batch's writes in order, and sees its own writes.
type writes struct {
	p   *Projector
	ops []op
	// late are the chain records, written after every other record of
	// the batch: a chain record that survives a crash then vouches that
	// the batch's other writes did too, so skipping what it covers is safe.
	late    []op
	touched map[string]bool // key lists changed by the batch
}

type op struct {
	key   string
	rev   uint64   // expected revision; 0 = must not exist
	val   []byte   // nil = delete
	keys  *keyList // a key list, encoded into val when flushed
	once  bool     // a key record's creation: a conflict means it was written before
	blind bool     // a key record's deletion: expects nothing
}

// get reads a record through the cache, then the bucket. rev is the
// revision the next write must expect (pendingRev if this batch wrote it).
func (w *writes) get(ctx context.Context, key string, into any) (uint64, error) {
	c, ok := w.p.cache[key]
	if !ok {
		e, err := w.p.h.ReadModel.Get(ctx, key)
		switch {
		case errors.Is(err, jetstream.ErrKeyNotFound):
		case err != nil:
			return 0, err
		default:
			c = cached{rev: e.Revision(), val: e.Value()}
		}
		w.p.cache[key] = c
	}
	if into != nil && c.val != nil {
		if err := msgpack.Unmarshal(c.val, into); err != nil {
			return 0, fmt.Errorf("projections: %s: %w", key, err)
		}
	}
	return c.rev, nil
}

// put queues a write and makes it visible to later gets of this batch.
func (w *writes) put(key string, rev uint64, val []byte) {
	w.ops = append(w.ops, op{key: key, rev: rev, val: val})
	w.p.cache[key] = cached{rev: pendingRev, val: val}
}

// dropOnce removes a pending key-record creation from the batch.
func (w *writes) dropOnce(key string) {
	w.ops = slices.DeleteFunc(w.ops, func(o op) bool { return o.key == key && o.once })
}

func (w *writes) updateTeamKeys(ctx context.Context, team string, seq uint64, change func(*keyList)) (int, error) {
	key := bus.TeamKeysPrefix + team
	c, ok := w.p.cache[key]
	if !ok || c.keys == nil {
		var tk TeamKeysRecord
		rev, err := w.get(ctx, key, &tk)
		if err != nil {
			return 0, err
		}
		c = cached{rev: rev, keys: newKeyList(tk)}
	}
	l := c.keys
	if c.rev > 0 && l.seq >= seq { // applied before
		return len(l.keys), nil
	}
	// Changed in place: a failed batch drops the whole cache.
	change(l)
	l.seq = seq
	w.ops = append(w.ops, op{key: key, rev: c.rev, keys: l})
	w.touched[key] = true
	w.p.cache[key] = cached{rev: pendingRev, keys: l}
	return len(l.keys), nil
}

// keyList is a team's key list, decoded, with each record's encoding kept:
// a change encodes one record, not the list. Encoding the whole list for
// every batch took a quarter of the CPU of creating keys.
type keyList struct {
	seq  uint64
	keys []KeyRecord
	enc  [][]byte
}

func newKeyList(tk TeamKeysRecord) *keyList {
	l := &keyList{seq: tk.Seq, keys: tk.Keys, enc: make([][]byte, len(tk.Keys))}
	for i, k := range tk.Keys {
		l.enc[i] = mustMarshal(k)
	}
	return l
}

func (l *keyList) add(k KeyRecord, enc []byte) {
	l.keys, l.enc = append(l.keys, k), append(l.enc, enc)
}

// update changes the key id in place, if the list has it.
func (l *keyList) update(id string, change func(*KeyRecord)) {
	if i := slices.IndexFunc(l.keys, func(k KeyRecord) bool { return k.ID == id }); i >= 0 {
		change(&l.keys[i])
		l.enc[i] = mustMarshal(l.keys[i])
	}
}

func (l *keyList) remove(id string) {
	if i := slices.IndexFunc(l.keys, func(k KeyRecord) bool { return k.ID == id }); i >= 0 {
		l.keys, l.enc = slices.Delete(l.keys, i, i+1), slices.Delete(l.enc, i, i+1)
	}
}

// encode writes the list as a TeamKeysRecord, from the kept encodings.
func (l *keyList) encode() []byte {
	size := 32
	for _, e := range l.enc {
		size += len(e)
	}
	buf := bytes.NewBuffer(make([]byte, 0, size))
	enc := msgpack.NewEncoder(buf)
	_ = enc.EncodeMapLen(2) // a bytes.Buffer does not fail
	_ = enc.EncodeString("seq")
	_ = enc.EncodeUint(l.seq)
	_ = enc.EncodeString("keys")
	_ = enc.EncodeArrayLen(len(l.enc))
	for _, e := range l.enc {
		buf.Write(e)
	}
	return buf.Bytes()
}

// pendingRev marks a cache entry written in the current batch.
const pendingRev = ^uint64(0)

// flush publishes the batch's writes at once and waits for every ack: one
// round trip instead of one per write. A key written several times in the
// batch is written once, with its last value, expecting the revision it
// had before the batch.
func (w *writes) flush(ctx context.Context) error {
	idx := map[string]int{}
	var fin []op // the first op of each key, with the key's last value
	for _, o := range w.ops {
		if i, ok := idx[o.key]; ok {
			fin[i].val, fin[i].keys = o.val, o.keys
			continue
		}
		idx[o.key] = len(fin)
		fin = append(fin, o)
	}
	w.ops = w.ops[:0]
	for i := range fin {
		if fin[i].keys != nil {
			fin[i].val = fin[i].keys.encode()
		}
	}
	futures := make([]jetstream.PubAckFuture, len(fin))
	for i, o := range fin {
		msg := nats.NewMsg(bus.KVSubject(bus.BucketReadModel, o.key))
		msg.Data = o.val
		if o.val == nil {
			msg.Header.Set(bus.KVOperationHeader, bus.KVDelete)
		}
		var opts []jetstream.PublishOpt
		if !o.blind {
			opts = append(opts, jetstream.WithExpectLastSequencePerSubject(o.rev))
		}
		f, err := w.p.js.PublishMsgAsync(msg, opts...)
		if err != nil {
			return err
		}
		futures[i] = f
	}
	for i, f := range futures {
		select {
		case ack := <-f.Ok():
			switch key := fin[i].key; {
			case strings.HasPrefix(key, bus.KeyPrefix):
				delete(w.p.cache, key) // one per key ever made: not worth memory
			case fin[i].keys != nil:
				w.p.cache[key] = cached{rev: ack.Sequence, keys: fin[i].keys}
			default:
				w.p.cache[key] = cached{rev: ack.Sequence, val: fin[i].val}
			}
		case err := <-f.Err():
			if fin[i].once && bus.IsWrongLastSequence(err) {
				delete(w.p.cache, fin[i].key) // written before: nothing to do
				continue
			}
			return fmt.Errorf("projections: write %s: %w", fin[i].key, err)
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	return nil
}

// trimKeyLists drops the decoded key lists that the batch did not touch,
// once there are more than maxCachedKeyLists.
func (w *writes) trimKeyLists() {
	n := 0
	for _, c := range w.p.cache {
		if c.keys != nil {
			n++
		}
	}
	if n <= maxCachedKeyLists {
		return
	}
	for k, c := range w.p.cache {
		if c.keys != nil && !w.touched[k] {
			delete(w.p.cache, k)
		}
	}
}

func mustMarshal(v any) []byte {
	b, err := msgpack.Marshal(v)
	if err != nil { // plain structs of basic types: cannot fail
		panic(err)
	}
	return b
}
