package projections

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/vmihailenco/msgpack/v5"

	"github.com/telapi/telkeys/bus"
	"github.com/telapi/telkeys/events"
)

// ReadModel answers queries from the KV read models.
type ReadModel struct {
	kv       jetstream.KeyValue
	lastUsed jetstream.Stream
}

// NewReadModel returns a ReadModel over the read-model bucket and the last-used stream.
func NewReadModel(h *bus.Handles) *ReadModel {
	return &ReadModel{kv: h.ReadModel, lastUsed: h.LastUsed}
}

// get reads a record; found is false when the key does not exist.
func (r *ReadModel) get(ctx context.Context, key string, into any) (bool, error) {
	e, err := r.kv.Get(ctx, key)
	if errors.Is(err, jetstream.ErrKeyNotFound) {
		return false, nil
	}
	if err != nil {
		return false, err
	}
	if err := msgpack.Unmarshal(e.Value(), into); err != nil {
		return false, fmt.Errorf("projections: %s: %w", key, err)
	}
	return true, nil
}

// Team returns a team's record; a team never configured gets a disabled
// record with no keys.
func (r *ReadModel) Team(ctx context.Context, team string) (TeamRecord, error) {
	rec := TeamRecord{Team: team}
	_, err := r.get(ctx, bus.TeamPrefix+team, &rec)
	if rec.AllowedScopes == nil {
		rec.AllowedScopes = []string{}
	}
	return rec, err
}

// TeamKeys returns a team's active keys in creation order.
func (r *ReadModel) TeamKeys(ctx context.Context, team string) ([]KeyRecord, error) {
	var tk TeamKeysRecord
	_, err := r.get(ctx, bus.TeamKeysPrefix+team, &tk)
	return tk.Keys, err
}

// Teams returns every configured team, sorted by id.
func (r *ReadModel) Teams(ctx context.Context) ([]TeamRecord, error) {
	lister, err := r.kv.ListKeysFiltered(ctx, bus.TeamPrefix+"*")
	if err != nil {
		return nil, err
	}
	defer func() { _ = lister.Stop() }()
	var ids []string
	for k := range lister.Keys() {
		ids = append(ids, strings.TrimPrefix(k, bus.TeamPrefix))
	}
	slices.Sort(ids)
	ids = slices.Compact(ids) // a lister may repeat a key written meanwhile
	out := make([]TeamRecord, 0, len(ids))
	for _, id := range ids {
		rec, err := r.Team(ctx, id)
		if err != nil {
			return nil, err
		}
		out = append(out, rec)
	}
	return out, nil
}

// WebRTC returns the platform's webrtc flag: on unless turned off.
func (r *ReadModel) WebRTC(ctx context.Context) (bool, error) {
	rec := FlagRecord{Enabled: true}
	_, err := r.get(ctx, bus.FlagPrefix+events.FlagWebRTC, &rec)
	return rec.Enabled, err
}

// KeyByHash returns the active key with that hex SHA-256.
func (r *ReadModel) KeyByHash(ctx context.Context, hash string) (KeyRecord, bool, error) {
	var k KeyRecord
	found, err := r.get(ctx, bus.KeyPrefix+hash, &k)
	return k, found, err
}

// Quarantine lists the stored messages that are not valid events, by
// sequence.
func (r *ReadModel) Quarantine(ctx context.Context) ([]QuarantineRecord, error) {
	lister, err := r.kv.ListKeysFiltered(ctx, bus.QuarantinePrefix+"*")
	if err != nil {
		return nil, err
	}
	defer lister.Stop()
	out := []QuarantineRecord{}
	for k := range lister.Keys() {
		var rec QuarantineRecord
		found, err := r.get(ctx, k, &rec)
		if err != nil {
			return nil, err
		}
		if found {
			out = append(out, rec)
		}
	}
	slices.SortFunc(out, func(a, b QuarantineRecord) int { return cmp.Compare(a.Seq, b.Seq) })
	return out, nil
}

// LastUsed returns when each of a team's keys was last used, in unix
// seconds by key id, as the validators reported it.
func (r *ReadModel) LastUsed(ctx context.Context, team string) (map[string]int64, error) {
	out := map[string]int64{}
	cons, err := r.lastUsed.OrderedConsumer(ctx, jetstream.OrderedConsumerConfig{
		FilterSubjects: []string{bus.LastUsedSubject(team, ">")},
	})
	if err != nil {
		return nil, err
	}
	prefix := bus.LastUsedSubject(team, "")
	err = bus.ReadPending(ctx, cons, func(m jetstream.Msg, _ *jetstream.MsgMetadata) error {
		at, err := strconv.ParseInt(string(m.Data()), 10, 64)
		if id := strings.TrimPrefix(m.Subject(), prefix); err == nil && at > out[id] {
			out[id] = at
		}
		return nil
	})
	return out, err
}
