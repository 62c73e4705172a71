package projections

import (
	"context"
	"errors"
	"slices"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/telapi/telkeys/bus"
)

// ReadModel answers queries from the KV read models.
type ReadModel struct{ h *bus.Handles }

// NewReadModel returns a ReadModel over the opened buckets.
func NewReadModel(h *bus.Handles) *ReadModel { return &ReadModel{h: h} }

// Team returns a team's record; a team never configured gets a disabled
// record with no keys.
func (r *ReadModel) Team(ctx context.Context, team string) (TeamRecord, error) {
	rec := TeamRecord{Team: team}
	_, err := get(ctx, r.h.Teams, team, &rec)
	if rec.AllowedScopes == nil {
		rec.AllowedScopes = []string{}
	}
	return rec, err
}

// TeamKeys returns a team's active keys in creation order.
func (r *ReadModel) TeamKeys(ctx context.Context, team string) ([]KeyRecord, error) {
	var tk TeamKeysRecord
	if _, err := get(ctx, r.h.TeamKeys, team, &tk); err != nil {
		return nil, err
	}
	return tk.Keys, nil
}

// Teams returns every configured team, sorted by id.
func (r *ReadModel) Teams(ctx context.Context) ([]TeamRecord, error) {
	lister, err := r.h.Teams.ListKeys(ctx)
	if err != nil {
		return nil, err
	}
	defer func() { _ = lister.Stop() }()
	var ids []string
	for k := range lister.Keys() {
		ids = append(ids, k)
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
	_, err := get(ctx, r.h.Platform, "webrtc", &rec)
	return rec.Enabled, err
}

// KeyByHash returns the active key with that hex SHA-256.
func (r *ReadModel) KeyByHash(ctx context.Context, hash string) (KeyRecord, bool, error) {
	var k KeyRecord
	rev, err := get(ctx, r.h.Keys, hash, &k)
	if errors.Is(err, jetstream.ErrKeyNotFound) {
		return k, false, nil
	}
	return k, rev > 0, err
}
