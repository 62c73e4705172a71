package commands

import (
	"context"
	"errors"

	"github.com/oklog/ulid/v2"

	"github.com/telapi/telkeys/apikey"
	"github.com/telapi/telkeys/domain"
	"github.com/telapi/telkeys/events"
)

func newTeam() State     { return domain.NewTeam() }
func newPlatform() State { return domain.NewPlatform() }

// ConfigureTeamAccess replaces a team's API access configuration.
// Lowering max_keys deletes nothing; removing a scope narrows the effective
// scopes of existing keys; disabling makes every key of the team fail.
func (h *Handler) ConfigureTeamAccess(ctx context.Context, actor events.Actor, team string, cfg events.AccessConfig) (events.AccessConfig, Result, error) {
	if !ValidTeamID(team) {
		return cfg, Result{}, invalid("team", "must be 1-64 characters of A-Z a-z 0-9 _ -")
	}
	cfg, err := ValidateAccessConfig(cfg)
	if err != nil {
		return cfg, Result{}, err
	}
	revokes := false
	res, err := h.execute(ctx, "ConfigureTeamAccess", events.TeamAggregate(team), newTeam, actor,
		func(s State) (events.Payload, error) {
			revokes = s.(*domain.Team).TakesAccessAway(cfg)
			return events.TeamAccessConfigured{AccessConfig: cfg}, nil
		})
	res.Revokes = revokes
	return cfg, res, err
}

// SetPlatformFlag turns a platform flag on or off. The only flag is webrtc.
func (h *Handler) SetPlatformFlag(ctx context.Context, actor events.Actor, flag string, enabled bool) (Result, error) {
	if flag != events.FlagWebRTC {
		return Result{}, invalid("flag", "unknown flag")
	}
	revokes := false
	res, err := h.execute(ctx, "SetPlatformFlag", events.PlatformAggregate, newPlatform, actor,
		func(s State) (events.Payload, error) {
			revokes = s.(*domain.Platform).WebRTC() && !enabled
			return events.PlatformFlagSet{Flag: flag, Enabled: enabled}, nil
		})
	res.Revokes = revokes
	return res, err
}

// CreatedKey is a new key. Plaintext exists here and in the create response
// only; it is never stored.
type CreatedKey struct {
	Key       domain.Key
	Plaintext string
	Result    Result
}

// CreateKey creates a key in an enabled team, within max_keys, with scopes
// from the team's allowed scopes.
func (h *Handler) CreateKey(ctx context.Context, actor events.Actor, team, name string, scopes []string) (CreatedKey, error) {
	if !ValidTeamID(team) {
		return CreatedKey{}, invalid("team", "must be 1-64 characters of A-Z a-z 0-9 _ -")
	}
	name, err := NormalizeName(name)
	if err != nil {
		return CreatedKey{}, err
	}
	scopes, err = normalizeScopes("scopes", scopes, false)
	var unknown *unknownScope
	if errors.As(err, &unknown) {
		return CreatedKey{}, &domain.ScopeError{}
	}
	if err != nil {
		return CreatedKey{}, err
	}
	// Key material is made once: every retry appends the same key.
	plain, err := apikey.Generate()
	if err != nil {
		return CreatedKey{}, err
	}
	hash := apikey.HashOf(plain)
	created := events.KeyCreated{
		KeyID: KeyIDPrefix + ulid.Make().String(), Name: name, Scopes: scopes,
		Hash: hash[:], Last4: apikey.Last4(plain),
	}
	res, err := h.execute(ctx, "CreateKey", events.TeamAggregate(team), newTeam, actor,
		func(s State) (events.Payload, error) {
			if err := s.(*domain.Team).CheckCreate(scopes); err != nil {
				return nil, err
			}
			return created, nil
		})
	if err != nil {
		return CreatedKey{}, err
	}
	return CreatedKey{
		Key: domain.Key{
			ID: created.KeyID, Name: name, Scopes: scopes, Hash: created.Hash,
			Last4: created.Last4, CreatedAt: res.Event.Time,
		},
		Plaintext: plain,
		Result:    res,
	}, nil
}

// DeleteKey deletes an active key of the team. requireEnabled is set for
// members, who may manage keys only while the team's access is enabled.
func (h *Handler) DeleteKey(ctx context.Context, actor events.Actor, team, keyID string, requireEnabled bool) (Result, error) {
	if !ValidTeamID(team) {
		return Result{}, invalid("team", "must be 1-64 characters of A-Z a-z 0-9 _ -")
	}
	if !ValidKeyID(keyID) {
		return Result{}, invalid("id", "must be key_ followed by a ULID")
	}
	res, err := h.execute(ctx, "DeleteKey", events.TeamAggregate(team), newTeam, actor,
		func(s State) (events.Payload, error) {
			k, err := s.(*domain.Team).CheckDelete(keyID, requireEnabled)
			if err != nil {
				return nil, err
			}
			return events.KeyDeleted{KeyID: keyID, Hash: k.Hash}, nil
		})
	res.Revokes = err == nil
	return res, err
}
