// Package commands decides and records changes: ConfigureTeamAccess,
// SetPlatformFlag, CreateKey and DeleteKey. Each loads its aggregate's
// state, checks the domain rules, and appends one event to the event stream
// under per-aggregate optimistic concurrency.
//
// The write model of each aggregate is kept in memory and brought up to
// date from the stream only when an append reports a conflict, so the
// common path costs one publish. A cold load reads a snapshot plus a tail
// that is never longer than snapshotEvery events, so loading does not cost
// more as an aggregate's history grows.
package commands

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/oklog/ulid/v2"
	"github.com/vmihailenco/msgpack/v5"

	"github.com/telapi/telkeys/bus"
	"github.com/telapi/telkeys/events"
)

const (
	// maxAttempts bounds the decide-append loop under conflicts. Within one
	// instance commands on an aggregate are serialised, so conflicts only
	// come from other instances.
	maxAttempts = 16
	// snapshotEvery is how many events may follow the last snapshot.
	snapshotEvery = 32
	// snapshotVersion changes whenever a state struct changes incompatibly;
	// older snapshots are then ignored and the aggregate is replayed.
	snapshotVersion = 1
)

// Config wires a Handler.
type Config struct {
	JS        jetstream.JetStream
	Events    jetstream.Stream
	Snapshots jetstream.KeyValue
	// Signer signs every appended event; Keys are the keys whose events
	// the write model accepts when it reads an aggregate's history.
	Signer *events.Signer
	Keys   *events.Keys
	// Now is the clock; tests inject their own.
	Now func() time.Time
	Log *slog.Logger
	// Observe, if set, is called once per command with its outcome.
	Observe func(command string, err error, took time.Duration)
}

// Validate reports every missing dependency at once.
func (c Config) Validate() error {
	var errs []error
	if c.JS == nil {
		errs = append(errs, errors.New("commands: JetStream is required"))
	}
	if c.Events == nil {
		errs = append(errs, errors.New("commands: event stream is required"))
	}
	if c.Snapshots == nil {
		errs = append(errs, errors.New("commands: snapshot bucket is required"))
	}
	if c.Signer == nil || c.Keys == nil {
		errs = append(errs, errors.New("commands: a signer and the trusted keys are required"))
	} else if c.Keys.Verify(c.Signer.KeyID(), []byte("x"), c.Signer.Sign([]byte("x"))) != nil {
		errs = append(errs, errors.New("commands: the signing key is not among the trusted keys: the write model would reject its own events"))
	}
	return errors.Join(errs...)
}

// Handler executes commands. It is safe for concurrent use.
type Handler struct {
	cfg        Config
	mu         sync.Mutex
	aggs       map[string]*aggregate
	eventsRead atomic.Uint64
	snaps      sync.WaitGroup // snapshots being written
}

// Wait waits until every snapshot being written is stored (or failed).
func (h *Handler) Wait() { h.snaps.Wait() }

// EventsRead is how many stored events this handler has read back to bring
// write models up to date: cold loads and conflicts. Appends it made itself
// cost nothing here.
func (h *Handler) EventsRead() uint64 { return h.eventsRead.Load() }

// New returns a Handler.
func New(cfg Config) (*Handler, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.Log == nil {
		cfg.Log = slog.New(slog.DiscardHandler)
	}
	if cfg.Observe == nil {
		cfg.Observe = func(string, error, time.Duration) {}
	}
	return &Handler{cfg: cfg, aggs: map[string]*aggregate{}}, nil
}

// State is an aggregate's write model.
type State interface {
	Apply(events.Envelope, events.Payload)
}

// aggregate is the cached write model of one aggregate. mu serialises the
// commands on it within this process.
type aggregate struct {
	mu      sync.Mutex
	id      string
	subject string
	loaded  bool
	// seq is the stream sequence of the last message on the subject, valid
	// or not: the next append expects it. chain holds the hash of the last
	// valid event, which the next event follows.
	seq       uint64
	chain     *events.Chain
	sinceSnap int  // events applied since the last snapshot we know of
	snapping  bool // a snapshot is being written (maybeSnapshot)
	state     State
	newState  func() State
}

func (a *aggregate) hash() []byte { return a.chain.Last(a.id) }

// Result is what an appended command produced.
type Result struct {
	Seq   uint64
	Event events.Envelope
	// Revokes: the event takes access away from keys that had it (a key
	// deleted, a team disabled or a scope removed, webrtc turned off). The
	// API holds its answer until every node has applied it.
	Revokes bool
	// Append is how long the append that stored Event took: the event's
	// fsync, on the embedded server. The API reports it in Server-Timing.
	Append time.Duration
}

func (h *Handler) aggregate(id string, newState func() State) *aggregate {
	h.mu.Lock()
	defer h.mu.Unlock()
	a, ok := h.aggs[id]
	if !ok {
		a = &aggregate{id: id, subject: bus.EventSubject(id), newState: newState, state: newState(), chain: events.NewChain(h.cfg.Keys)}
		h.aggs[id] = a
	}
	return a
}

// decideFunc checks the rules against the current state and returns the
// event to append. It must be deterministic for a given state, because it
// may run again after a conflict.
type decideFunc func(State) (events.Payload, error)

// commandBudget is how long a command keeps trying through an outage of
// the bus (a server killed or paused, a stream electing a leader) before
// it gives up with bus.ErrUnavailable.
const commandBudget = 5 * time.Second

// execute runs decide against the aggregate and appends its event. On a
// conflict it catches up and decides again, up to maxAttempts. When the
// bus does not answer, it finds out whether the event was stored and, if
// nothing else changed, appends the very same event again: same id (the
// server drops a duplicate within its window) and same expected sequence,
// so an append is never made twice.
func (h *Handler) execute(ctx context.Context, command, aggID string, newState func() State, actor events.Actor, decide decideFunc) (res Result, err error) {
	start := time.Now()
	defer func() { h.cfg.Observe(command, err, time.Since(start)) }()
	ctx, cancel := context.WithTimeout(ctx, commandBudget)
	defer cancel()

	a := h.aggregate(aggID, newState)
	a.mu.Lock()
	defer a.mu.Unlock()
	if !a.loaded {
		if err := h.retry(ctx, func(ctx context.Context) error { return h.load(ctx, a) }); err != nil {
			return Result{}, err
		}
	}
	// Every event id this command has tried to append. After a timeout or a
	// conflict, finding one of them in the stream means the command landed:
	// on an R1 stream a retried publish hits the sequence check before dedup
	// and reports a conflict even though the first attempt was stored.
	tried := map[string]bool{}
	fresh := false // state was just brought up to date from the stream
	var ev events.Envelope
	var p events.Payload
	again := false // ev's outcome is unknown and nothing changed since: append it again
	for conflicts := 0; conflicts < maxAttempts; {
		if !again {
			if p, err = decide(a.state); err != nil {
				// Another instance may have changed the aggregate since this
				// one last appended to it: a rejection stands only against the
				// latest state. Checking costs one read that finds nothing.
				if fresh {
					return Result{}, err
				}
				var n int
				if cerr := h.retry(ctx, func(ctx context.Context) (err error) { _, n, err = h.catchUp(ctx, a, nil); return err }); cerr != nil {
					return Result{}, cerr
				}
				if n == 0 {
					return Result{}, err
				}
				fresh = true
				continue
			}
			if ev, err = events.New("evt_"+ulid.Make().String(), aggID, actor, h.cfg.Now(), a.hash(), p); err != nil {
				return Result{}, err
			}
			h.cfg.Signer.Seal(&ev)
			tried[ev.ID] = true
		}
		t0 := time.Now()
		ack, err := h.publish(ctx, a, ev)
		if err == nil {
			took := time.Since(t0)
			a.chain.Restore(a.id, ev.Hash) // signed here: valid
			a.applyEvent(ack.Sequence, ev, p)
			h.maybeSnapshot(a)
			return Result{Seq: ack.Sequence, Event: ev, Append: took}, nil
		}
		conflict := bus.IsWrongLastSequence(err)
		if !conflict && !isUncertain(err) {
			return Result{}, fmt.Errorf("commands: append %s: %w", command, err)
		}
		if ctx.Err() != nil {
			return Result{}, bus.Unavailable(fmt.Errorf("commands: append %s: %w", command, ctx.Err()))
		}
		var found *Result
		var n int
		if err := h.retry(ctx, func(ctx context.Context) (err error) { found, n, err = h.catchUp(ctx, a, tried); return err }); err != nil {
			return Result{}, err
		}
		if found != nil {
			h.maybeSnapshot(a)
			return *found, nil
		}
		fresh, again = true, !conflict && n == 0
		if conflict {
			conflicts++
			if conflicts > 1 { // two instances collided twice: back off a little
				time.Sleep(time.Duration(rand.IntN(1000*(conflicts))) * time.Microsecond)
			}
		}
		if again {
			h.pause(ctx)
		}
	}
	return Result{}, ErrBusy
}

// retry runs f, each attempt bounded by bus.AttemptTimeout, until it
// succeeds, fails for a reason other than an unavailable bus, or ctx ends.
func (h *Handler) retry(ctx context.Context, f func(context.Context) error) error {
	for {
		actx, cancel := context.WithTimeout(ctx, bus.AttemptTimeout)
		err := f(actx)
		cancel()
		if err == nil || !bus.IsUnavailable(err) {
			return err
		}
		if ctx.Err() != nil {
			return bus.Unavailable(err)
		}
		h.pause(ctx)
	}
}

// pause waits a little before the next try through an outage.
func (h *Handler) pause(ctx context.Context) {
	select {
	case <-time.After(100 * time.Millisecond):
	case <-ctx.Done():
	}
}

func (h *Handler) publish(ctx context.Context, a *aggregate, ev events.Envelope) (*jetstream.PubAck, error) {
	msg, err := EventMsg(ev)
	if err != nil {
		return nil, err
	}
	ctx, cancel := context.WithTimeout(ctx, bus.AttemptTimeout)
	defer cancel()
	return h.cfg.JS.PublishMsg(ctx, msg,
		jetstream.WithMsgID(ev.ID),
		jetstream.WithExpectLastSequencePerSubject(a.seq))
}

// EventMsg is ev as it is stored: on its aggregate's subject, with its
// type in a header. Its id goes in Nats-Msg-Id when published.
func EventMsg(ev events.Envelope) (*nats.Msg, error) {
	data, err := ev.Marshal()
	if err != nil {
		return nil, err
	}
	return &nats.Msg{Subject: bus.EventSubject(ev.Aggregate), Data: data, Header: nats.Header{bus.TypeHeader: []string{string(ev.Type)}}}, nil
}

// applyEvent applies a valid event (already in the chain).
func (a *aggregate) applyEvent(seq uint64, ev events.Envelope, p events.Payload) {
	if p != nil {
		a.state.Apply(ev, p)
	}
	a.seq = seq
	a.sinceSnap++
}

// isUncertain reports an error after which the event may or may not have
// been stored.
func isUncertain(err error) bool {
	var ae *jetstream.APIError
	if errors.As(err, &ae) && ae.ErrorCode == 10158 { // duplicate message id is in process
		return true
	}
	return bus.IsUnavailable(err)
}

// load reads the latest snapshot of the aggregate, then its tail.
func (h *Handler) load(ctx context.Context, a *aggregate) error {
	a.state, a.seq, a.chain, a.sinceSnap = a.newState(), 0, events.NewChain(h.cfg.Keys), 0
	entry, err := h.cfg.Snapshots.Get(ctx, a.id)
	switch {
	case errors.Is(err, jetstream.ErrKeyNotFound):
	case err != nil:
		return fmt.Errorf("commands: load snapshot %s: %w", a.id, err)
	default:
		var snap snapshot
		if err := msgpack.Unmarshal(entry.Value(), &snap); err == nil && snap.Version == snapshotVersion {
			st := a.newState()
			if err := msgpack.Unmarshal(snap.State, st); err == nil {
				a.state, a.seq = st, snap.Seq
				a.chain.Restore(a.id, snap.Hash)
			}
		}
	}
	if _, _, err := h.catchUp(ctx, a, nil); err != nil {
		return err
	}
	a.loaded = true
	return nil
}

// catchUp applies every event stored after a.seq on the aggregate's subject
// and says how many there were. It returns the result of the first event
// whose id is in mine.
func (h *Handler) catchUp(ctx context.Context, a *aggregate, mine map[string]bool) (*Result, int, error) {
	var found *Result
	n := 0
	for {
		raw, err := h.cfg.Events.GetMsg(ctx, a.seq+1, jetstream.WithGetMsgSubject(a.subject))
		if errors.Is(err, jetstream.ErrMsgNotFound) {
			return found, n, nil
		}
		if err != nil {
			a.loaded = false // state may be partial: reload next time
			return nil, n, fmt.Errorf("commands: read %s: %w", a.id, err)
		}
		ev, p, err := a.chain.Check(a.id, raw.Data)
		var bad *events.Invalid
		if errors.As(err, &bad) {
			// Quarantined: never applied; the aggregate goes on from its
			// last valid event, and the next append expects this sequence.
			h.cfg.Log.Warn("commands: skipping an invalid event", "aggregate", a.id, "seq", raw.Sequence, "reason", bad.Reason, "err", bad.Err)
			a.seq = raw.Sequence
			continue
		}
		a.applyEvent(raw.Sequence, ev, p)
		h.eventsRead.Add(1)
		n++
		if found == nil && mine[ev.ID] {
			found = &Result{Seq: raw.Sequence, Event: ev}
		}
	}
}

type snapshot struct {
	Version int                `msgpack:"v"`
	Seq     uint64             `msgpack:"seq"`
	Hash    []byte             `msgpack:"hash"`
	State   msgpack.RawMessage `msgpack:"state"`
}

// maybeSnapshot stores the state when the tail has grown to snapshotEvery.
// A failure only lengthens the next cold load, so it is logged, not returned.
// Two instances may race; an older snapshot winning is still correct.
func (h *Handler) maybeSnapshot(a *aggregate) {
	if a.sinceSnap < snapshotEvery || a.snapping {
		return
	}
	// After the command has answered: encoding a team of a thousand keys
	// and storing it cost every 32nd command of a team about a millisecond
	// (#14's DELETE p99). The goroutine takes the aggregate's lock, so the
	// state it encodes is a consistent one; a snapshot lost at shutdown
	// only makes the next cold load read a longer tail.
	a.snapping = true
	h.snaps.Go(func() {
		a.mu.Lock()
		st, err := msgpack.Marshal(a.state)
		var b []byte
		n := a.sinceSnap
		if err == nil {
			b, err = msgpack.Marshal(snapshot{Version: snapshotVersion, Seq: a.seq, Hash: a.hash(), State: st})
		}
		a.mu.Unlock()
		if err == nil {
			ctx, cancel := context.WithTimeout(context.Background(), bus.AttemptTimeout)
			_, err = h.cfg.Snapshots.Put(ctx, a.id, b)
			cancel()
		}
		a.mu.Lock()
		defer a.mu.Unlock()
		a.snapping = false
		if err != nil {
			h.cfg.Log.Warn("snapshot failed", "aggregate", a.id, "err", err)
			return
		}
		a.sinceSnap -= min(n, a.sinceSnap) // a reload meanwhile set it to 0
	})
}
