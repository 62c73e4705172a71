package audit

import (
	"context"
	"errors"
	"slices"
	"strings"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/telapi/telkeys/domain"
	"github.com/telapi/telkeys/events"
)

// State is what was true at a moment: computed by replaying every event up
// to it through the fold the commands use (package domain).
type State struct {
	At     time.Time   `json:"at"`
	Seq    uint64      `json:"seq"` // the last event applied
	WebRTC bool        `json:"webrtc"`
	Teams  []TeamState `json:"teams"`
}

// TeamState is one team at that moment.
type TeamState struct {
	Team string `json:"team"`
	events.AccessConfig
	Keys []KeyState `json:"keys"`
}

// KeyState is a key that existed at that moment (it may have expired, or
// been disabled).
type KeyState struct {
	ID        string     `json:"id"`
	Name      string     `json:"name"`
	Scopes    []string   `json:"scopes"`
	CreatedAt time.Time  `json:"created_at"`
	ExpiresAt *time.Time `json:"expires_at,omitempty"`
	Disabled  bool       `json:"disabled,omitempty"`
}

// StateAt replays the valid events (checked with keys) stored up to at
// (all of them if at is zero), optionally of one team, and returns the
// state they produce. A stored message that is not a valid event changes
// nothing.
//
// It checks the signature of the last event of each chain only, which
// vouches for every event before it (events.Keys.CheckContent). If one
// does not verify, an event may have been forged, and it replays again
// with every signature checked.
func StateAt(ctx context.Context, js jetstream.JetStream, keys *events.Keys, stream string, at time.Time, team string) (State, error) {
	st, err := stateAt(ctx, js, keys, Filter{Stream: stream, Until: at, headsOnly: true}, team)
	if errors.Is(err, errUnverifiedHead) {
		st, err = stateAt(ctx, js, keys, Filter{Stream: stream, Until: at}, team)
	}
	return st, err
}

func stateAt(ctx context.Context, js jetstream.JetStream, keys *events.Keys, f Filter, team string) (State, error) {
	at := f.Until
	teams := map[string]*domain.Team{}
	platform := domain.NewPlatform()
	st := State{At: at}
	err := Replay(ctx, js, keys, f, func(e Event) error {
		env, p := e.Envelope, e.Payload
		if (!at.IsZero() && env.Time.After(at)) || p == nil {
			return nil // dated after at, or of a type this binary does not know: no state it knows changes
		}
		st.Seq = e.Seq
		if env.Aggregate == events.PlatformAggregate {
			platform.Apply(env, p)
			return nil
		}
		name, ok := events.TeamOf(env.Aggregate)
		if !ok || (team != "" && name != team) {
			return nil
		}
		t := teams[name]
		if t == nil {
			t = domain.NewTeam()
			teams[name] = t
		}
		t.Apply(env, p)
		return nil
	}, nil)
	if err != nil {
		return st, err
	}
	st.WebRTC = platform.WebRTC()
	st.Teams = []TeamState{}
	for name, t := range teams {
		ts := TeamState{Team: name, AccessConfig: t.Config, Keys: []KeyState{}}
		ts.AllowedScopes = nonNil(ts.AllowedScopes)
		for _, k := range t.Keys {
			ts.Keys = append(ts.Keys, KeyState{ID: k.ID, Name: k.Name, Scopes: nonNil(k.Scopes), CreatedAt: k.CreatedAt, ExpiresAt: k.ExpiresAt, Disabled: k.Disabled})
		}
		slices.SortFunc(ts.Keys, func(a, b KeyState) int { return a.CreatedAt.Compare(b.CreatedAt) })
		st.Teams = append(st.Teams, ts)
	}
	slices.SortFunc(st.Teams, func(a, b TeamState) int { return strings.Compare(a.Team, b.Team) })
	return st, nil
}
