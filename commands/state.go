package commands

import (
	"time"

	"github.com/telapi/telkeys/events"
)

// AccessConfig is a team's API access configuration.
type AccessConfig struct {
	Enabled           bool     `msgpack:"enabled"`
	AllowedScopes     []string `msgpack:"allowed_scopes"`
	MaxKeys           int      `msgpack:"max_keys"`
	MaxRequestsPerDay *int64   `msgpack:"max_requests_per_day"`
}

// ActiveKey is a key that has been created and not deleted.
type ActiveKey struct {
	ID        string    `msgpack:"id"`
	Name      string    `msgpack:"name"`
	Scopes    []string  `msgpack:"scopes"`
	Hash      []byte    `msgpack:"hash"`
	Last4     string    `msgpack:"last4"`
	CreatedAt time.Time `msgpack:"created_at"`
}

// TeamState is the write model of a team aggregate. Apply never fails on a
// business rule: it records what happened.
type TeamState struct {
	Configured bool                 `msgpack:"configured"`
	Config     AccessConfig         `msgpack:"config"`
	Keys       map[string]ActiveKey `msgpack:"keys"`
}

// NewTeamState returns the state of a team nothing has happened to: disabled.
func NewTeamState() *TeamState { return &TeamState{Keys: map[string]ActiveKey{}} }

// Apply folds one event into the state.
func (s *TeamState) Apply(e events.Envelope, p events.Payload) {
	switch p := p.(type) {
	case events.TeamAccessConfigured:
		s.Configured = true
		s.Config = AccessConfig{
			Enabled:           p.Enabled,
			AllowedScopes:     p.AllowedScopes,
			MaxKeys:           p.MaxKeys,
			MaxRequestsPerDay: p.MaxRequestsPerDay,
		}
	case events.KeyCreated:
		s.Keys[p.KeyID] = ActiveKey{
			ID: p.KeyID, Name: p.Name, Scopes: p.Scopes, Hash: p.Hash, Last4: p.Last4, CreatedAt: e.Time,
		}
	case events.KeyDeleted:
		delete(s.Keys, p.KeyID)
	}
}

// PlatformState is the write model of the platform aggregate.
type PlatformState struct {
	// WebRTCOff is stored negated so that the zero value means "on", the
	// platform default until a superadmin turns it off.
	WebRTCOff bool `msgpack:"webrtc_off"`
}

// NewPlatformState returns the default platform state: webrtc on.
func NewPlatformState() *PlatformState { return &PlatformState{} }

// WebRTC reports whether the webrtc flag is on.
func (s *PlatformState) WebRTC() bool { return !s.WebRTCOff }

// Apply folds one event into the state.
func (s *PlatformState) Apply(_ events.Envelope, p events.Payload) {
	if p, ok := p.(events.PlatformFlagSet); ok && p.Flag == FlagWebRTC {
		s.WebRTCOff = !p.Enabled
	}
}
