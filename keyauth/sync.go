package keyauth

import (
	"context"
	"fmt"
	"math"
	"strconv"
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
	loadStart := time.Now()
	cp, fromIndex := v.loadIndex(ctx, target)
	v.st.applied.Advance(cp)
	v.cfg.Log.Debug("keyauth: state loaded", "from_key_index", fromIndex, "keys", v.st.keysCount.Load(),
		"event", cp, "ms", time.Since(loadStart).Milliseconds())

	cfg := jetstream.OrderedConsumerConfig{FilterSubjects: []string{bus.EventSubjects}}
	if cp > 0 {
		cfg.DeliverPolicy = jetstream.DeliverByStartSequencePolicy
		cfg.OptStartSeq = cp + 1
	}
	cons, err := v.js.OrderedConsumer(ctx, bus.EventStream, cfg)
	if err != nil {
		return err
	}
	cc, err := cons.Consume(v.onEvent)
	if err != nil {
		return err
	}
	v.stopWith(runCtx, cc)
	if err := v.st.applied.Wait(ctx, target, 0, nil); err != nil {
		return fmt.Errorf("keyauth: catching up to event %d (at %d): %w", target, v.Applied(), err)
	}
	if err := v.startUsage(ctx, runCtx); err != nil {
		return err
	}
	v.reconnects.Store(v.nc.Stats().Reconnects)
	bus.Every(runCtx, &v.wg, 50*time.Millisecond, nil, func(ctx context.Context) {
		v.watchConnection()
		v.resyncTarget(ctx)
	})
	v.cfg.Log.Info("keyauth ready", "node", v.cfg.Name, "keys", v.st.keysCount.Load(), "event", v.Applied())
	return nil
}

// stopWith stops a consumer when ctx ends.
func (v *Validator) stopWith(ctx context.Context, cc jetstream.ConsumeContext) {
	v.wg.Add(1)
	go func() {
		defer v.wg.Done()
		<-ctx.Done()
		cc.Stop()
	}()
}

// onEvent applies one event. The ordered consumer delivers every event
// once, in stream order, and recreates itself after a gap or a reconnect.
func (v *Validator) onEvent(m jetstream.Msg) {
	md, err := m.Metadata()
	if err != nil {
		return
	}
	seq := md.Sequence.Stream
	v.watchConnection() // notice a reconnect before this counts as fresh
	defer v.heard()
	if seq <= v.Applied() {
		return
	}
	v.st.applyMu.Lock()
	defer v.st.applyMu.Unlock()
	ev, err := events.Unmarshal(m.Data())
	if err != nil {
		v.cfg.Log.Error("keyauth: undecodable event", "seq", seq, "err", err)
		v.st.applied.Advance(seq)
		return
	}
	p, err := ev.Decode()
	if err != nil {
		v.cfg.Log.Warn("keyauth: skipping event", "seq", seq, "type", ev.Type, "err", err)
		v.st.applied.Advance(seq)
		return
	}
	v.st.apply(seq, ev, p)
}

// onHeartbeat records that telkeys is alive and how far its stream is.
func (v *Validator) onHeartbeat(m *nats.Msg) {
	seq, err := strconv.ParseUint(string(m.Data), 10, 64)
	if err != nil {
		return
	}
	v.watchConnection()
	if seq > v.heardSeq.Load() {
		v.heardSeq.Store(seq)
	}
	v.resync.CompareAndSwap(awaitingHeartbeat, seq)
	v.heard()
}

// heard records that telkeys was heard from, if every event the heartbeats
// announced is applied: heartbeats alone do not make a node whose event
// stream stalled current.
func (v *Validator) heard() {
	if v.Applied() >= v.heardSeq.Load() {
		v.lastHeard.Store(v.cfg.Now().UnixNano())
	}
}

const awaitingHeartbeat = math.MaxUint64

// clockTick is how often the validator's copy of the clock is refreshed:
// the precision of staleness, of the UTC day of a verification and of
// last-used times.
const clockTick = 10 * time.Millisecond

// watchConnection notices reconnects: until the validator has applied what
// the first heartbeat after the reconnect announces, it is not current.
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

// resyncTarget asks the stream, after a reconnect, how far it is, in case
// no heartbeat comes (another telkeys instance may be the one publishing).
func (v *Validator) resyncTarget(ctx context.Context) {
	if v.resync.Load() != awaitingHeartbeat {
		return
	}
	ctx, cancel := context.WithTimeout(ctx, time.Second)
	defer cancel()
	if info, err := v.h.Events.Info(ctx); err == nil {
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
