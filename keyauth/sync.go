package keyauth

import (
	"context"
	"errors"
	"fmt"
	"math"
	"runtime"
	"runtime/debug"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/telapi/telkeys/bus"
	"github.com/telapi/telkeys/events"
)

// start loads the key index, then follows the event stream from the index's
// sequence (or from the first event when there is no usable index), and
// returns once it has applied everything stored before it started.
//
// A node reads nothing else: not the projector's read models, which are
// telkeys' own, so that nothing a node trusts depends on their layout.
func (v *Validator) start(ctx context.Context) error {
	runCtx, cancel := context.WithCancel(context.Background())
	v.cancel = cancel
	bus.Every(runCtx, &v.wg, clockTick, nil, func(context.Context) { v.clock.Store(v.cfg.Now().UnixNano()) })

	hb, err := v.nc.Subscribe(bus.HeartbeatSubject, v.onHeartbeat)
	if err != nil {
		return err
	}
	v.subs = append(v.subs, hb)

	info, err := v.h.Events.Info(ctx)
	if err != nil {
		return err
	}
	target := info.State.LastSeq
	raise(&v.streamSeq, target)
	loadStart := time.Now()
	cp, fromIndex := v.loadIndex(ctx, target)
	if fromIndex {
		// Reading the index went through as much garbage as the table
		// holds (the object's chunks): give it back now rather than keep
		// it for the scavenger. The table holds no pointers, so this
		// collection is cheap.
		debug.FreeOSMemory()
	}
	v.st.applied.Advance(cp)
	v.cfg.Log.Debug("keyauth: state loaded", "from_key_index", fromIndex, "keys", v.st.keysCount.Load(),
		"event", cp, "ms", time.Since(loadStart).Milliseconds())

	if target > cp+replayAtLeast {
		if err := v.replay(ctx, cp+1, target); err != nil {
			return fmt.Errorf("keyauth: replaying events %d to %d: %w", cp+1, target, err)
		}
		cp = v.Applied()
	}
	if err := v.follow(ctx, cp+1); err != nil {
		return err
	}
	v.wg.Add(1)
	go func() { // the consumer of the moment stops with the validator
		defer v.wg.Done()
		<-runCtx.Done()
		v.followMu.Lock()
		defer v.followMu.Unlock()
		v.follower.Stop()
	}()
	if err := v.st.applied.Wait(ctx, target, 0, nil); err != nil {
		return fmt.Errorf("keyauth: catching up to event %d (at %d): %w", target, v.Applied(), err)
	}
	if err := v.startUsage(ctx, runCtx); err != nil {
		return err
	}
	v.reconnects.Store(v.nc.Stats().Reconnects)
	var stall stallWatch
	bus.Every(runCtx, &v.wg, 50*time.Millisecond, nil, func(ctx context.Context) {
		v.watchConnection()
		v.resyncTarget(ctx)
		v.restartIfStalled(ctx, &stall)
	})
	v.cfg.Log.Info("keyauth ready", "node", v.cfg.Name, "keys", v.st.keysCount.Load(), "event", v.Applied())
	return nil
}

// follow consumes the event stream from sequence from on, in place of the
// consumer it had, if any.
func (v *Validator) follow(ctx context.Context, from uint64) error {
	cfg := jetstream.OrderedConsumerConfig{FilterSubjects: []string{bus.EventSubjects}}
	if from > 1 {
		cfg.DeliverPolicy = jetstream.DeliverByStartSequencePolicy
		cfg.OptStartSeq = from
	}
	cons, err := v.js.OrderedConsumer(ctx, bus.EventStream, cfg)
	if err != nil {
		return err
	}
	cc, err := cons.Consume(v.onEvent, jetstream.PullHeartbeat(bus.ConsumerHeartbeat))
	if err != nil {
		return err
	}
	v.followMu.Lock()
	old := v.follower
	v.follower = cc
	v.followMu.Unlock()
	if old != nil {
		old.Stop()
	}
	return nil
}

// stallAfter is how long the validator waits for the events heartbeats
// announce before it starts its consumer again.
const stallAfter = 2 * bus.ConsumerHeartbeat

// stallWatch is what restartIfStalled remembers between ticks.
type stallWatch struct {
	applied uint64
	since   time.Time
}

// restartIfStalled starts the consumer again from the next event when
// heartbeats have announced events it has not delivered for stallAfter.
// nats.go recreates an ordered consumer that misses its heartbeats, but
// after a cluster server died that took from seconds to over a minute;
// this does not depend on it. A replaced consumer that still delivers does
// no harm: an event is applied once (onEvent).
func (v *Validator) restartIfStalled(ctx context.Context, w *stallWatch) {
	now, applied := time.Now(), v.Applied()
	if applied != w.applied || v.heardSeq.Load() <= applied {
		w.applied, w.since = applied, now
		return
	}
	if now.Sub(w.since) < stallAfter {
		return
	}
	w.since = now
	v.cfg.Log.Warn("keyauth: events announced by heartbeats have not arrived; starting the consumer again",
		"node", v.cfg.Name, "applied", applied, "announced", v.heardSeq.Load())
	ctx, cancel := context.WithTimeout(ctx, bus.AttemptTimeout)
	defer cancel()
	if err := v.follow(ctx, applied+1); err != nil {
		v.cfg.Log.Warn("keyauth: starting the consumer again failed; will retry", "node", v.cfg.Name, "err", err)
	}
}

// replayAtLeast is how many events behind the stream a validator must
// start for it to replay them in parallel before following the stream.
const replayAtLeast = 1000

// stopWith stops a consumer when ctx ends.
func (v *Validator) stopWith(ctx context.Context, cc jetstream.ConsumeContext) {
	v.wg.Add(1)
	go func() {
		defer v.wg.Done()
		<-ctx.Done()
		cc.Stop()
	}()
}

// onEvent applies one event. The ordered consumer delivers every message
// once, in stream order, and recreates itself after a gap or a reconnect.
//
// A message that is not a valid event (events.Chain: malformed, unsigned
// or signed by an untrusted key, or out of place in its aggregate's chain,
// such as a replayed copy of a real event) is logged, counted and never
// applied; the applied sequence still moves past it, since the stream
// holds it, and its aggregate goes on from its last valid event.
func (v *Validator) onEvent(m jetstream.Msg) {
	md, err := m.Metadata()
	if err != nil {
		return
	}
	seq := md.Sequence.Stream
	v.watchConnection() // notice a reconnect before this counts as fresh
	raise(&v.streamSeq, seq)
	if seq <= v.Applied() {
		return
	}
	c := checked{seq: seq, subject: m.Subject()}
	c.env, c.p, c.err = v.cfg.Keys.Check(bus.AggregateOf(c.subject), m.Data())
	v.st.applyMu.Lock()
	if seq <= v.Applied() { // a replaced consumer delivered it too
		v.st.applyMu.Unlock()
		return
	}
	applied := v.applyChecked(c)
	v.st.applyMu.Unlock()
	if !applied {
		return
	}
	v.heard(v.cfg.Now().UnixNano())
	switch c.p.(type) {
	case events.KeyDeleted, events.KeyRolled, events.KeyUpdated, events.KeyLeaked, events.TeamAccessConfigured, events.PlatformFlagSet:
		v.report() // telkeys may be holding a command until this node has it
	}
}

// checked is a stored message after events.Keys.Check: everything but its
// place in its aggregate's chain.
type checked struct {
	seq     uint64
	subject string
	env     events.Envelope
	p       events.Payload
	err     error
}

// applyChecked finishes the one validity check (events.Chain.Link) and
// applies the event, or skips the message; the caller holds applyMu.
func (v *Validator) applyChecked(c checked) bool {
	if c.err == nil {
		c.err = v.st.chain.Link(c.env)
	}
	if c.err != nil {
		reason := "malformed"
		if inv, ok := errors.AsType[*events.Invalid](c.err); ok {
			reason = inv.Reason
		}
		// Counted and logged before the sequence moves: whoever waits for
		// it sees both.
		v.rejected.Add(1)
		v.cfg.Log.Warn("keyauth: skipping a message that is not a valid event", "seq", c.seq, "subject", c.subject, "reason", reason, "err", c.err)
		v.st.applied.Advance(c.seq)
		return false
	}
	v.st.apply(c.seq, c.env, c.p)
	return true
}

// replay applies the events up to target before the validator follows the
// stream. Checking a signature costs about 45 µs, most of a replay, so it
// checks a batch's signatures on every core, then links and applies the
// batch in stream order.
func (v *Validator) replay(ctx context.Context, from, target uint64) error {
	cctx, cancel := context.WithTimeout(ctx, bus.ScanTimeout)
	cons, err := v.js.OrderedConsumer(cctx, bus.EventStream, jetstream.OrderedConsumerConfig{
		FilterSubjects: []string{bus.EventSubjects},
		DeliverPolicy:  jetstream.DeliverByStartSequencePolicy, OptStartSeq: from,
	})
	cancel()
	if err != nil {
		return fmt.Errorf("consumer: %w", err)
	}
	var batch []checked
	var data [][]byte
	flush := func() {
		var wg sync.WaitGroup
		workers := runtime.GOMAXPROCS(0)
		for w := range workers {
			wg.Go(func() {
				for i := w; i < len(batch); i += workers {
					c := &batch[i]
					c.env, c.p, c.err = v.cfg.Keys.Check(bus.AggregateOf(c.subject), data[i])
				}
			})
		}
		wg.Wait()
		v.st.applyMu.Lock()
		for _, c := range batch {
			v.applyChecked(c)
		}
		v.st.applyMu.Unlock()
		batch, data = batch[:0], data[:0]
	}
	err = bus.ReadPending(ctx, cons, func(m jetstream.Msg, md *jetstream.MsgMetadata) error {
		if md.Sequence.Stream > target {
			return bus.ErrStop
		}
		batch = append(batch, checked{seq: md.Sequence.Stream, subject: m.Subject()})
		data = append(data, m.Data())
		if len(batch) == 1024 {
			flush()
		}
		return nil
	})
	flush()
	return err
}

// report tells telkeys how far this node has applied (Config.Report).
func (v *Validator) report() {
	if v.cfg.Report != "" {
		_ = v.nc.Publish(v.cfg.Report, strconv.AppendUint(nil, v.Applied(), 10))
	}
}

// onHeartbeat records that telkeys is alive and how far its stream is. A
// heartbeat counts only if it is signed by a trusted key, dated within
// MaxStaleness of this node's clock (either way: an old one replayed must
// not keep a cut-off node current, and clocks differ a little), and
// announces a sequence the stream holds: one past the stream's last
// sequence would make the node wait for events that never come.
func (v *Validator) onHeartbeat(m *nats.Msg) {
	seq, at, err := v.cfg.Keys.CheckHeartbeat(m.Data)
	if err != nil {
		v.cfg.Log.Debug("keyauth: ignoring a heartbeat", "err", err)
		return
	}
	now := v.cfg.Now()
	if age := now.Sub(at); age > v.cfg.MaxStaleness || age < -v.cfg.MaxStaleness {
		v.cfg.Log.Debug("keyauth: ignoring a heartbeat dated too far from now", "at", at, "now", now)
		return
	}
	v.watchConnection()
	if v.resync.Load() == awaitingHeartbeat {
		// After a reconnect the target is the stream's own last sequence,
		// never a heartbeat's, which may be a replayed older one.
		v.resyncTarget(context.Background())
	}
	if !v.streamHolds(seq) {
		v.cfg.Log.Warn("keyauth: ignoring a heartbeat past the end of the event stream", "seq", seq, "stream", v.streamSeq.Load())
		return
	}
	raise(&v.heardSeq, seq)
	// Fresh as of when telkeys said it, not when it arrived: a replay
	// within MaxStaleness buys nothing.
	v.heard(min(at.UnixNano(), now.UnixNano()))
	v.report()
}

// streamHolds reports whether the event stream holds seq. A sequence the
// validator has seen or applied needs no question; a higher one asks the
// stream, at most every streamCheckEvery, and until the next check the
// answer is no.
func (v *Validator) streamHolds(seq uint64) bool {
	if seq <= v.streamSeq.Load() || seq <= v.Applied() {
		return true
	}
	now := time.Now().UnixNano()
	if last := v.streamChecked.Load(); now-last < int64(streamCheckEvery) || !v.streamChecked.CompareAndSwap(last, now) {
		return false
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	info, err := v.h.Events.Info(ctx)
	if err != nil {
		return false
	}
	raise(&v.streamSeq, info.State.LastSeq)
	return seq <= info.State.LastSeq
}

// streamCheckEvery bounds how often heartbeats make the validator ask the
// stream for its last sequence.
const streamCheckEvery = 200 * time.Millisecond

// raise sets a to seq if seq is higher.
func raise(a *atomic.Uint64, seq uint64) {
	for {
		cur := a.Load()
		if seq <= cur || a.CompareAndSwap(cur, seq) {
			return
		}
	}
}

// heard records that telkeys was heard from at unix ns at, if every event
// the heartbeats announced is applied: heartbeats alone do not make a node
// whose event stream stalled current.
func (v *Validator) heard(at int64) {
	if v.Applied() < v.heardSeq.Load() {
		return
	}
	for {
		cur := v.lastHeard.Load()
		if at <= cur || v.lastHeard.CompareAndSwap(cur, at) {
			return
		}
	}
}

const awaitingHeartbeat = math.MaxUint64

// clockTick is how often the validator's copy of the clock is refreshed:
// the precision of staleness, of the UTC day of a verification and of
// last-used times.
const clockTick = 10 * time.Millisecond

// watchConnection notices reconnects: until the validator has applied
// every event the stream held after the reconnect, it is not current.
func (v *Validator) watchConnection() {
	if r, seen := v.nc.Stats().Reconnects, v.reconnects.Load(); r != seen {
		v.resync.Store(awaitingHeartbeat) // before the count: no caller sees one without the other
		if v.reconnects.CompareAndSwap(seen, r) {
			v.cfg.Log.Info("keyauth: reconnected; catching up before answering VALID", "node", v.cfg.Name)
		}
	}
	if to := v.resync.Load(); to != awaitingHeartbeat && v.Applied() >= to {
		v.resync.CompareAndSwap(to, 0)
	}
}

// resyncTarget asks the stream, after a reconnect, how far it is: the
// first heartbeat after the reconnect asks at once, and a tick every 50 ms
// in case none comes (another telkeys instance may be the one publishing).
func (v *Validator) resyncTarget(ctx context.Context) {
	if v.resync.Load() != awaitingHeartbeat {
		return
	}
	ctx, cancel := context.WithTimeout(ctx, time.Second)
	defer cancel()
	if info, err := v.h.Events.Info(ctx); err == nil {
		raise(&v.streamSeq, info.State.LastSeq)
		v.resync.CompareAndSwap(awaitingHeartbeat, info.State.LastSeq)
	}
}

// current reports whether the validator may answer from its state.
func (v *Validator) current(now time.Time) bool {
	if v.closed.Load() { // no longer following the stream, nor the clock
		return false
	}
	if v.cfg.FailOpen {
		return true
	}
	// lastHeard first: a refresh after a reconnect is stored after resync
	// is set, so whoever sees the refresh sees the resync too.
	heard := v.lastHeard.Load()
	if v.resync.Load() != 0 {
		return false
	}
	return now.UnixNano()-heard <= int64(v.cfg.MaxStaleness)
}
