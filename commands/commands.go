package commands

import (
	"bytes"
	"context"
	"errors"
	"time"
	"unicode/utf8"

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
	return h.CreateKeyUntil(ctx, actor, team, name, scopes, nil)
}

// MaxExpiry is how far ahead a key's expiry may be.
const MaxExpiry = 365 * 24 * time.Hour

// CreateKeyUntil is CreateKey with an expiry (nil: none), which must be in
// the future and at most MaxExpiry ahead (ErrExpiry).
func (h *Handler) CreateKeyUntil(ctx context.Context, actor events.Actor, team, name string, scopes []string, expiresAt *time.Time) (CreatedKey, error) {
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
	now := h.cfg.Now()
	if expiresAt != nil {
		if !expiresAt.After(now) || expiresAt.Sub(now) > MaxExpiry {
			return CreatedKey{}, ErrExpiry
		}
		at := expiresAt.UTC().Round(0)
		expiresAt = &at
	}
	plain, created, err := newKeyMaterial(name, scopes)
	if err != nil {
		return CreatedKey{}, err
	}
	created.ExpiresAt = expiresAt
	res, err := h.execute(ctx, "CreateKey", events.TeamAggregate(team), newTeam, actor,
		func(s State) (events.Payload, error) {
			if err := s.(*domain.Team).CheckCreate(scopes, now); err != nil {
				return nil, err
			}
			return created, nil
		})
	if err != nil {
		return CreatedKey{}, err
	}
	k := domain.Key{
		ID: created.KeyID, Name: name, Scopes: scopes, Hash: created.Hash,
		Last4: created.Last4, CreatedAt: res.Event.Time, ExpiresAt: expiresAt,
	}
	return CreatedKey{Key: k, Plaintext: plain, Result: res}, nil
}

// newKeyMaterial makes a key, once per command: every retry appends the
// same key.
func newKeyMaterial(name string, scopes []string) (string, events.KeyCreated, error) {
	plain, err := apikey.Generate()
	if err != nil {
		return "", events.KeyCreated{}, err
	}
	hash := apikey.HashOf(plain)
	return plain, events.KeyCreated{
		KeyID: KeyIDPrefix + ulid.Make().String(), Name: name, Scopes: scopes,
		Hash: hash[:], Last4: apikey.Last4(plain),
	}, nil
}

// MaxGrace is the longest grace period of a roll.
const MaxGrace = 30 * 24 * time.Hour

// RollKey replaces a key with a new one of the same name and scopes, shown
// once like a created key. The old key keeps working for grace (0 to
// MaxGrace), then expires; with no grace it stops at once, and the API
// holds the answer behind the revocation barrier. A key may be rolled
// once, and not once expired (domain.CheckRoll).
func (h *Handler) RollKey(ctx context.Context, actor events.Actor, team, keyID string, grace time.Duration) (CreatedKey, error) {
	if err := validKeyRef(team, keyID); err != nil {
		return CreatedKey{}, err
	}
	if grace < 0 || grace > MaxGrace {
		return CreatedKey{}, invalid("grace_seconds", "must be between 0 and 2592000 (30 days)")
	}
	now := h.cfg.Now()
	var rolled events.KeyRolled
	var plain string
	res, err := h.execute(ctx, "RollKey", events.TeamAggregate(team), newTeam, actor,
		func(s State) (events.Payload, error) {
			old, err := s.(*domain.Team).CheckRoll(keyID, now)
			if err != nil {
				return nil, err
			}
			if plain == "" { // made once: a retry appends the same key
				var created events.KeyCreated
				if plain, created, err = newKeyMaterial(old.Name, old.Scopes); err != nil {
					return nil, err
				}
				rolled = events.KeyRolled{KeyCreated: created, Replaces: old.ID, ReplacedHash: old.Hash, GraceUntil: now.Add(grace).UTC().Round(0)}
			}
			return rolled, nil
		})
	if err != nil {
		return CreatedKey{}, err
	}
	res.Revokes = grace == 0
	k := domain.Key{
		ID: rolled.KeyID, Name: rolled.Name, Scopes: rolled.Scopes, Hash: rolled.Hash,
		Last4: rolled.Last4, CreatedAt: res.Event.Time, Replaces: keyID,
	}
	return CreatedKey{Key: k, Plaintext: plain, Result: res}, nil
}

// UpdateKey disables or enables a key and/or renames it (nil: unchanged),
// and returns it as it is then. Disabling an enabled key takes access
// away: the API holds the answer behind the revocation barrier.
// requireEnabled is set for members.
func (h *Handler) UpdateKey(ctx context.Context, actor events.Actor, team, keyID string, enabled *bool, name *string, requireEnabled bool) (domain.Key, Result, error) {
	if err := validKeyRef(team, keyID); err != nil {
		return domain.Key{}, Result{}, err
	}
	if enabled == nil && name == nil {
		return domain.Key{}, Result{}, invalid("body", "give enabled, name or both")
	}
	if name != nil {
		n, err := NormalizeName(*name)
		if err != nil {
			return domain.Key{}, Result{}, err
		}
		name = &n
	}
	var updated domain.Key
	revokes := false
	res, err := h.execute(ctx, "UpdateKey", events.TeamAggregate(team), newTeam, actor,
		func(s State) (events.Payload, error) {
			k, err := s.(*domain.Team).CheckDelete(keyID, requireEnabled)
			if err != nil {
				return nil, err
			}
			revokes = enabled != nil && !*enabled && !k.Disabled
			if enabled != nil {
				k.Disabled = !*enabled
			}
			if name != nil {
				k.Name = *name
			}
			updated = k
			return events.KeyUpdated{KeyID: keyID, Hash: k.Hash, Enabled: enabled, Name: name}, nil
		})
	res.Revokes = revokes
	return updated, res, err
}

// Leak is a report that a key was exposed.
type Leak struct {
	URL, Source, Reporter string
	// Revoke: the key stops working (KeyLeaked revoked); otherwise it is
	// only marked.
	Revoke bool
}

// ReportLeak records that the key keyID of team, with SHA-256 hash, was
// exposed. A report of a key already marked at the same URL records
// nothing again. With Revoke, the API holds the answer behind the
// revocation barrier.
func (h *Handler) ReportLeak(ctx context.Context, actor events.Actor, team, keyID string, hash []byte, l Leak) (Result, error) {
	if err := validKeyRef(team, keyID); err != nil {
		return Result{}, err
	}
	if len(l.URL) > 2048 || !utf8.ValidString(l.URL) {
		return Result{}, invalid("url", "must be UTF-8, at most 2048 bytes")
	}
	if len(l.Source) > 64 || !utf8.ValidString(l.Source) {
		return Result{}, invalid("source", "must be UTF-8, at most 64 bytes")
	}
	res, err := h.execute(ctx, "ReportLeak", events.TeamAggregate(team), newTeam, actor,
		func(s State) (events.Payload, error) {
			k, ok := s.(*domain.Team).Keys[keyID]
			if !ok || !bytes.Equal(k.Hash, hash) {
				return nil, domain.ErrKeyNotFound
			}
			if !l.Revoke && k.Leak != nil && k.Leak.URL == l.URL {
				return nil, errReported
			}
			return events.KeyLeaked{KeyID: keyID, Hash: k.Hash, URL: l.URL, Source: l.Source, Reporter: l.Reporter, Revoked: l.Revoke}, nil
		})
	if errors.Is(err, errReported) {
		return Result{}, nil
	}
	res.Revokes = err == nil && l.Revoke
	return res, err
}

// errReported: the leak is recorded already.
var errReported = errors.New("leak already recorded")

func validKeyRef(team, keyID string) error {
	if !ValidTeamID(team) {
		return invalid("team", "must be 1-64 characters of A-Z a-z 0-9 _ -")
	}
	if !ValidKeyID(keyID) {
		return invalid("id", "must be key_ followed by a ULID")
	}
	return nil
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
