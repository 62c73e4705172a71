// Package domain is what telkeys knows about teams, keys and the platform,
// as plain code with no I/O: the state of each aggregate, folded from its
// events one at a time, and the rules that commands check against it.
//
// It imports only events. The commands' write model and audit's replay
// fold histories with it, and the read models take their rules from it
// (EffectiveScopes), so that every reader agrees on what a history means.
//
// Apply never fails on a business rule: events record what happened, and
// a replay must reproduce it. The rules are checked before an event is
// recorded (Team.CheckCreate, Team.CheckDelete).
package domain

import (
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/telapi/telkeys/events"
)

// Key is a key that exists: created, and not deleted or revoked as
// leaked. It may have expired, or be disabled.
type Key struct {
	ID        string    `msgpack:"id"`
	Name      string    `msgpack:"name"`
	Scopes    []string  `msgpack:"scopes"`
	Hash      []byte    `msgpack:"hash"`
	Last4     string    `msgpack:"last4"`
	CreatedAt time.Time `msgpack:"created_at"`
	// ExpiresAt is when the key stops working; nil: never.
	ExpiresAt *time.Time `msgpack:"expires_at,omitempty"`
	Disabled  bool       `msgpack:"disabled,omitempty"`
	// Replaces is the key this one was rolled from; ReplacedBy the key it
	// was rolled to (it then expires at the end of the grace period).
	Replaces   string `msgpack:"replaces,omitempty"`
	ReplacedBy string `msgpack:"replaced_by,omitempty"`
	// Leak is set when the key was reported leaked but not revoked.
	Leak *Leak `msgpack:"leak,omitempty"`
}

// Expired reports whether k has stopped working by now.
func (k Key) Expired(now time.Time) bool { return k.ExpiresAt != nil && !now.Before(*k.ExpiresAt) }

// Leak is a report that a key was exposed.
type Leak struct {
	KeyID    string    `msgpack:"key_id" json:"key_id"`
	Name     string    `msgpack:"name" json:"name"`
	URL      string    `msgpack:"url" json:"url"`
	Source   string    `msgpack:"source" json:"source"`
	Reporter string    `msgpack:"reporter" json:"reporter"`
	Revoked  bool      `msgpack:"revoked" json:"revoked"`
	At       time.Time `msgpack:"at" json:"at"`
}

// Team is the state of a team aggregate: its API access configuration and
// its keys. Its msgpack form is the commands' snapshot of it.
type Team struct {
	Configured bool                `msgpack:"configured"`
	Config     events.AccessConfig `msgpack:"config"`
	Keys       map[string]Key      `msgpack:"keys"`
}

// NewTeam returns the state of a team nothing has happened to: never
// configured, so disabled, with no keys.
func NewTeam() *Team { return &Team{Keys: map[string]Key{}} }

// Apply folds one of the team's events into the state.
func (t *Team) Apply(e events.Envelope, p events.Payload) {
	switch p := p.(type) {
	case events.TeamAccessConfigured:
		t.Configured = true
		t.Config = p.AccessConfig
	case events.KeyCreated:
		t.Keys[p.KeyID] = newKey(p, e.Time)
	case events.KeyRolled:
		k := newKey(p.KeyCreated, e.Time)
		k.Replaces = p.Replaces
		t.Keys[p.KeyID] = k
		if old, ok := t.Keys[p.Replaces]; ok {
			old.ReplacedBy = p.KeyID
			if old.ExpiresAt == nil || p.GraceUntil.Before(*old.ExpiresAt) {
				until := p.GraceUntil
				old.ExpiresAt = &until
			}
			t.Keys[p.Replaces] = old
		}
	case events.KeyUpdated:
		if k, ok := t.Keys[p.KeyID]; ok {
			if p.Enabled != nil {
				k.Disabled = !*p.Enabled
			}
			if p.Name != nil {
				k.Name = *p.Name
			}
			t.Keys[p.KeyID] = k
		}
	case events.KeyLeaked:
		k, ok := t.Keys[p.KeyID]
		if !ok {
			break
		}
		if p.Revoked {
			delete(t.Keys, p.KeyID)
			break
		}
		k.Leak = &Leak{KeyID: p.KeyID, Name: k.Name, URL: p.URL, Source: p.Source, Reporter: p.Reporter, At: e.Time}
		t.Keys[p.KeyID] = k
	case events.KeyDeleted:
		delete(t.Keys, p.KeyID)
	}
}

func newKey(p events.KeyCreated, at time.Time) Key {
	return Key{ID: p.KeyID, Name: p.Name, Scopes: p.Scopes, Hash: p.Hash, Last4: p.Last4, CreatedAt: at, ExpiresAt: p.ExpiresAt}
}

// Counted reports how many of the team's keys count against max_keys at
// now: those not expired, and of a key rolled with a grace period only the
// new one (the pair counts as one).
func (t *Team) Counted(now time.Time) int {
	n := 0
	for _, k := range t.Keys {
		if !k.Expired(now) && k.ReplacedBy == "" {
			n++
		}
	}
	return n
}

// Platform is the state of the platform aggregate.
type Platform struct {
	// WebRTCOff is stored negated so that the zero value means "on", the
	// platform default until a superadmin turns it off.
	WebRTCOff bool `msgpack:"webrtc_off"`
}

// NewPlatform returns the default platform state: webrtc on.
func NewPlatform() *Platform { return &Platform{} }

// WebRTC reports whether the webrtc flag is on.
func (p *Platform) WebRTC() bool { return !p.WebRTCOff }

// Apply folds one of the platform's events into the state.
func (p *Platform) Apply(_ events.Envelope, pl events.Payload) {
	if f, ok := pl.(events.PlatformFlagSet); ok && f.Flag == events.FlagWebRTC {
		p.WebRTCOff = !f.Enabled
	}
}

// The rules' errors. The API maps them to HTTP in one place.
var (
	// ErrTeamDisabled: the team's API access is off (or never configured).
	ErrTeamDisabled = errors.New("team API access is disabled")
	// ErrMaxKeysReached: the team already has max_keys active keys.
	ErrMaxKeysReached = errors.New("team has reached its maximum number of API keys")
	// ErrScopeNotAllowed: a requested scope is not in the team's allowed scopes.
	ErrScopeNotAllowed = errors.New("scope not allowed for this team")
	// ErrKeyNotFound: no active key with that id in that team.
	ErrKeyNotFound = errors.New("API key not found")
	// ErrAlreadyRolled: the key was rolled before; roll its replacement.
	ErrAlreadyRolled = errors.New("this API key was already rolled; roll the key that replaced it")
	// ErrKeyExpired: the key has expired; only deleting it is left.
	ErrKeyExpired = errors.New("this API key has expired")
)

// ScopeError names the scope that is not allowed. Scope is empty for a
// name outside the catalogue, which is never echoed back.
type ScopeError struct{ Scope string }

func (e *ScopeError) Error() string {
	if e.Scope == "" {
		return "unknown scope: valid scopes are CREATE_CALL_TOKEN, READ_CALL_TOKEN, READ_TEAM_APPS"
	}
	return fmt.Sprintf("scope %s is not allowed for this team", e.Scope)
}

// Unwrap makes errors.Is(err, ErrScopeNotAllowed) true.
func (e *ScopeError) Unwrap() error { return ErrScopeNotAllowed }

// CheckCreate reports whether a key with these scopes may be created at
// now: the team is enabled, every scope is allowed, and fewer than max_keys
// keys count against it (Counted). Lowering max_keys below the count
// deletes nothing; it only blocks new keys.
func (t *Team) CheckCreate(scopes []string, now time.Time) error {
	if !t.Config.Enabled {
		return ErrTeamDisabled
	}
	for _, s := range scopes {
		if !slices.Contains(t.Config.AllowedScopes, s) {
			return &ScopeError{Scope: s}
		}
	}
	if t.Counted(now) >= t.Config.MaxKeys {
		return ErrMaxKeysReached
	}
	return nil
}

// CheckRoll returns the key that may be rolled at now: it exists, the team
// is enabled (a roll makes a key), and it was neither rolled before nor
// has expired. The pair counts as one key, so max_keys is not checked.
func (t *Team) CheckRoll(keyID string, now time.Time) (Key, error) {
	if !t.Config.Enabled {
		return Key{}, ErrTeamDisabled
	}
	k, ok := t.Keys[keyID]
	switch {
	case !ok:
		return Key{}, ErrKeyNotFound
	case k.ReplacedBy != "":
		return Key{}, ErrAlreadyRolled
	case k.Expired(now):
		return Key{}, ErrKeyExpired
	}
	return k, nil
}

// CheckDelete returns the key that may be deleted, or changed (disabled,
// enabled, renamed). requireEnabled is set for members, who manage keys
// only while the team is enabled.
func (t *Team) CheckDelete(keyID string, requireEnabled bool) (Key, error) {
	if requireEnabled && !t.Config.Enabled {
		return Key{}, ErrTeamDisabled
	}
	k, ok := t.Keys[keyID]
	if !ok {
		return Key{}, ErrKeyNotFound
	}
	return k, nil
}

// TakesAccessAway reports whether configuring the team with c would stop
// keys that work now: the team is disabled, or a scope is removed. Such a
// change, like deleting a key or turning webrtc off, is held until every
// TelAPI node has applied it (the revocation barrier).
func (t *Team) TakesAccessAway(c events.AccessConfig) bool {
	if !t.Config.Enabled {
		return false
	}
	if !c.Enabled {
		return true
	}
	for _, s := range t.Config.AllowedScopes {
		if !slices.Contains(c.AllowedScopes, s) {
			return true
		}
	}
	return false
}

// EffectiveScopes is what a key may do: its own scopes ∩ the team's
// allowed scopes, in the key's order. Removing a scope from a team takes
// it from every key at once. (keyauth computes the same with bit sets.)
func EffectiveScopes(key, allowed []string) []string {
	out := make([]string, 0, len(key))
	for _, s := range key {
		if slices.Contains(allowed, s) {
			out = append(out, s)
		}
	}
	return out
}
