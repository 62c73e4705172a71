package domain_test

import (
	"errors"
	"slices"
	"testing"
	"time"

	"github.com/telapi/telkeys/domain"
	"github.com/telapi/telkeys/events"
)

const apps, calls, read = "READ_TEAM_APPS", "CREATE_CALL_TOKEN", "READ_CALL_TOKEN"

// fold replays payloads through Apply, as commands and audit do.
func fold(ps ...events.Payload) *domain.Team {
	t := domain.NewTeam()
	at := time.Date(2026, 12, 1, 0, 0, 0, 0, time.UTC)
	for i, p := range ps {
		t.Apply(events.Envelope{Time: at.Add(time.Duration(i) * time.Second)}, p)
	}
	return t
}

func configured(enabled bool, maxKeys int, scopes ...string) events.TeamAccessConfigured {
	return events.TeamAccessConfigured{AccessConfig: events.AccessConfig{Enabled: enabled, AllowedScopes: scopes, MaxKeys: maxKeys}}
}

func created(id string, scopes ...string) events.KeyCreated {
	return events.KeyCreated{KeyID: id, Name: id, Scopes: scopes, Hash: []byte(id)}
}

func TestFold(t *testing.T) {
	team := fold(configured(true, 5, apps), created("k1", apps), created("k2", apps), events.KeyDeleted{KeyID: "k1"},
		configured(false, 1, apps, calls))
	if !team.Configured || team.Config.Enabled || team.Config.MaxKeys != 1 || len(team.Config.AllowedScopes) != 2 {
		t.Fatalf("config %+v", team.Config)
	}
	if _, ok := team.Keys["k1"]; ok || len(team.Keys) != 1 {
		t.Fatalf("keys %v: k1 was deleted, k2 is active", team.Keys)
	}
	if k := team.Keys["k2"]; !k.CreatedAt.Equal(time.Date(2026, 12, 1, 0, 0, 2, 0, time.UTC)) {
		t.Fatalf("k2 created at %v, the time of its event", k.CreatedAt)
	}
	if n := domain.NewTeam(); n.Configured || n.Config.Enabled {
		t.Fatal("a team never configured is enabled")
	}

	p := domain.NewPlatform()
	if !p.WebRTC() {
		t.Fatal("webrtc is off before anyone turned it off")
	}
	p.Apply(events.Envelope{}, events.PlatformFlagSet{Flag: "other", Enabled: false})
	if !p.WebRTC() {
		t.Fatal("another flag turned webrtc off")
	}
	p.Apply(events.Envelope{}, events.PlatformFlagSet{Flag: events.FlagWebRTC, Enabled: false})
	if p.WebRTC() {
		t.Fatal("webrtc is on after it was turned off")
	}
}

func TestCheckCreate(t *testing.T) {
	for _, c := range []struct {
		name   string
		team   *domain.Team
		scopes []string
		want   error
	}{
		{"never configured", domain.NewTeam(), []string{apps}, domain.ErrTeamDisabled},
		{"disabled", fold(configured(false, 5, apps)), []string{apps}, domain.ErrTeamDisabled},
		{"scope not allowed", fold(configured(true, 5, apps)), []string{apps, calls}, domain.ErrScopeNotAllowed},
		{"at max keys", fold(configured(true, 1, apps), created("k1", apps)), []string{apps}, domain.ErrMaxKeysReached},
		{"max lowered below the count", fold(configured(true, 2, apps), created("k1", apps), created("k2", apps), configured(true, 1, apps)), []string{apps}, domain.ErrMaxKeysReached},
		{"room left", fold(configured(true, 2, apps, calls), created("k1", apps)), []string{calls, apps}, nil},
	} {
		t.Run(c.name, func(t *testing.T) {
			if err := c.team.CheckCreate(c.scopes, time.Now()); !errors.Is(err, c.want) || (c.want == nil) != (err == nil) {
				t.Fatalf("got %v, want %v", err, c.want)
			}
		})
	}
	var se *domain.ScopeError
	if err := fold(configured(true, 5, apps)).CheckCreate([]string{calls}, time.Now()); !errors.As(err, &se) || se.Scope != calls {
		t.Fatalf("the refused scope is not named: %v", err)
	}
}

func TestCheckDelete(t *testing.T) {
	team := fold(configured(true, 5, apps), created("k1", apps))
	if k, err := team.CheckDelete("k1", true); err != nil || k.ID != "k1" {
		t.Fatalf("delete k1: %v %v", k, err)
	}
	if _, err := team.CheckDelete("k9", false); !errors.Is(err, domain.ErrKeyNotFound) {
		t.Fatalf("unknown key: %v", err)
	}
	off := fold(configured(true, 5, apps), created("k1", apps), configured(false, 5, apps))
	if _, err := off.CheckDelete("k1", true); !errors.Is(err, domain.ErrTeamDisabled) {
		t.Fatalf("a member deleted in a disabled team: %v", err)
	}
	if _, err := off.CheckDelete("k1", false); err != nil {
		t.Fatalf("a superadmin may delete in a disabled team: %v", err)
	}
}

func TestEffectiveScopes(t *testing.T) {
	got := domain.EffectiveScopes([]string{calls, apps, read}, []string{read, apps})
	if !slices.Equal(got, []string{apps, read}) {
		t.Fatalf("got %v: key ∩ allowed, in the key's order", got)
	}
	if got := domain.EffectiveScopes([]string{apps}, nil); got == nil || len(got) != 0 {
		t.Fatalf("got %#v, want an empty list", got)
	}
}
