package keyauth

import (
	"context"
	"errors"
	"fmt"
	"math"
	"strconv"
	"strings"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/vmihailenco/msgpack/v5"

	"github.com/telapi/telkeys/apikey"
	"github.com/telapi/telkeys/bus"
	"github.com/telapi/telkeys/events"
	"github.com/telapi/telkeys/projections"
)

// start loads the read models at their checkpoint, then follows the event
// stream from there, and returns once it has applied everything stored
// before it started.
func (v *Validator) start(ctx context.Context) error {
	runCtx, cancel := context.WithCancel(context.Background())
	v.cancel = cancel
	v.every(runCtx, clockTick, nil, func() { v.clock.Store(v.cfg.Now().UnixNano()) })

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
	cp, fromIndex, err := v.loadIndex(ctx, target)
	if err == nil && !fromIndex {
		cp, err = v.load(ctx)
	}
	if err != nil {
		return fmt.Errorf("keyauth: load read models: %w", err)
	}
	v.st.advance(cp)
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
	if err := v.st.waitApplied(ctx, target); err != nil {
		return fmt.Errorf("keyauth: catching up to event %d (at %d): %w", target, v.Applied(), err)
	}
	if err := v.startUsage(ctx, runCtx); err != nil {
		return err
	}
	v.reconnects.Store(v.nc.Stats().Reconnects)
	v.every(runCtx, 50*time.Millisecond, nil, func() {
		v.watchConnection()
		v.resyncTarget(runCtx)
	})
	v.cfg.Log.Info("keyauth ready", "node", v.cfg.Name, "keys", v.st.keysCount.Load(), "event", v.Applied())
	return nil
}

// every runs f every period, and whenever kick (which may be nil) fires,
// until ctx ends.
func (v *Validator) every(ctx context.Context, period time.Duration, kick <-chan struct{}, f func()) {
	v.wg.Add(1)
	go func() {
		defer v.wg.Done()
		t := time.NewTicker(period)
		defer t.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case <-t.C:
			case <-kick:
			}
			f()
		}
	}()
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

// load reads the checkpoint, then every key, team and flag record. Records
// may be ahead of the checkpoint (the projector writes them first); they
// carry their sequences, and events they already reflect are ignored.
func (v *Validator) load(ctx context.Context) (uint64, error) {
	var cp uint64
	e, err := v.h.ReadModel.Get(ctx, bus.CheckpointKey)
	switch {
	case errors.Is(err, jetstream.ErrKeyNotFound):
	case err != nil:
		return 0, err
	default:
		if cp, err = strconv.ParseUint(string(e.Value()), 10, 64); err != nil {
			return 0, err
		}
	}
	// One consumer per record type, each with a single filter: the server
	// answers a single filter from its subject index, while several
	// filters over a million subjects cost it seconds per batch. The
	// bucket keeps one message per subject, so reading everything from the
	// start reads each record's last value.
	for _, prefix := range []string{bus.FlagPrefix, bus.TeamPrefix, bus.KeyPrefix} {
		if err := v.loadPrefix(ctx, prefix); err != nil {
			return 0, err
		}
	}
	return cp, nil
}

// loadPrefix loads every record whose name starts with prefix.
func (v *Validator) loadPrefix(ctx context.Context, prefix string) error {
	pre := "$KV." + bus.BucketReadModel + "."
	cons, err := v.js.OrderedConsumer(ctx, "KV_"+bus.BucketReadModel, jetstream.OrderedConsumerConfig{
		FilterSubjects: []string{pre + prefix + ">"},
	})
	if err != nil {
		return err
	}
	return bus.ReadPending(ctx, cons, func(m jetstream.Msg, _ *jetstream.MsgMetadata) error {
		if op := m.Headers().Get("KV-Operation"); op == "DEL" || op == "PURGE" {
			return nil
		}
		return v.loadRecord(strings.TrimPrefix(m.Subject(), pre), m.Data())
	})
}

func (v *Validator) loadRecord(name string, data []byte) error {
	switch {
	case strings.HasPrefix(name, bus.KeyPrefix):
		var r projections.KeyRecord
		if err := msgpack.Unmarshal(data, &r); err != nil {
			return err
		}
		h, err := apikey.ParseHash(r.Hash)
		if err != nil {
			return err
		}
		v.st.putKey(h, &key{id: r.ID, team: v.st.team(r.Team), scopes: scopesOf(r.Scopes), seq: r.Seq})
	case strings.HasPrefix(name, bus.TeamPrefix):
		var r projections.TeamRecord
		if err := msgpack.Unmarshal(data, &r); err != nil {
			return err
		}
		if r.Configured {
			v.st.setConfig(v.st.team(r.Team), r.Seq, r.Enabled, r.AllowedScopes, r.MaxRequestsPerDay)
		}
	case name == bus.FlagPrefix+"webrtc":
		var r projections.FlagRecord
		if err := msgpack.Unmarshal(data, &r); err != nil {
			return err
		}
		v.st.flagSeq = r.Seq
		v.st.webrtcOff.Store(!r.Enabled)
	}
	return nil
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
		v.st.advance(seq)
		return
	}
	p, err := ev.Decode()
	if err != nil {
		v.cfg.Log.Warn("keyauth: skipping event", "seq", seq, "type", ev.Type, "err", err)
		v.st.advance(seq)
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
