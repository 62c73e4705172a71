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

// The lifecycle in the fold and the rules: an expired key and the old key
// of a roll do not count against max_keys; a key rolls once, and not once
// expired; a leak report revokes the key or marks it.
func TestLifecycleRules(t *testing.T) {
	t0 := time.Date(2026, 12, 1, 0, 0, 0, 0, time.UTC)
	soon := t0.Add(time.Hour)
	exp := created("k1", apps)
	exp.ExpiresAt = &soon
	team := fold(configured(true, 2, apps), exp, created("k2", apps),
		events.KeyRolled{KeyCreated: created("k3", apps), Replaces: "k2", ReplacedHash: []byte("k2"), GraceUntil: t0.Add(2 * time.Hour)})
	if n := team.Counted(t0); n != 2 {
		t.Fatalf("before k1 expires: %d counted, want 2 (k1, and k2/k3 as one)", n)
	}
	if err := team.CheckCreate([]string{apps}, t0); !errors.Is(err, domain.ErrMaxKeysReached) {
		t.Fatalf("a third key while two count: %v", err)
	}
	if n := team.Counted(soon); n != 1 {
		t.Fatalf("once k1 expired: %d counted, want 1", n)
	}
	if err := team.CheckCreate([]string{apps}, soon); err != nil {
		t.Fatalf("a key in place of an expired one: %v", err)
	}
	if k := team.Keys["k2"]; k.ReplacedBy != "k3" || !k.ExpiresAt.Equal(t0.Add(2*time.Hour)) || team.Keys["k3"].Replaces != "k2" {
		t.Fatalf("the rolled pair: %+v, %+v", k, team.Keys["k3"])
	}
	for _, c := range []struct {
		id   string
		at   time.Time
		want error
	}{
		{"k2", t0, domain.ErrAlreadyRolled},
		{"k1", soon, domain.ErrKeyExpired},
		{"nope", t0, domain.ErrKeyNotFound},
		{"k1", t0, nil},
		{"k3", t0, nil},
	} {
		if _, err := team.CheckRoll(c.id, c.at); !errors.Is(err, c.want) || (c.want == nil) != (err == nil) {
			t.Errorf("roll %s: %v, want %v", c.id, err, c.want)
		}
	}
	off := false
	team.Apply(events.Envelope{Time: t0}, events.KeyUpdated{KeyID: "k3", Enabled: &off})
	team.Apply(events.Envelope{Time: t0}, events.KeyLeaked{KeyID: "k1", URL: "u", Revoked: false})
	team.Apply(events.Envelope{Time: t0}, events.KeyLeaked{KeyID: "k3", URL: "u", Revoked: true})
	if team.Keys["k1"].Disabled || team.Keys["k1"].Leak == nil || team.Keys["k1"].Leak.URL != "u" {
		t.Fatalf("k1 flagged as leaked: %+v", team.Keys["k1"])
	}
	if _, ok := team.Keys["k3"]; ok {
		t.Fatal("a key revoked as leaked is still there")
	}
	if _, err := fold(configured(false, 2, apps), created("k1", apps)).CheckRoll("k1", t0); !errors.Is(err, domain.ErrTeamDisabled) {
		t.Fatalf("a roll in a disabled team: %v", err)
	}
}
