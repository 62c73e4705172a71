package api

import (
	"bytes"
	"encoding/json"
	"errors"
	"io"
	"strconv"
	"time"
	"unicode/utf8"

	"github.com/gofiber/fiber/v2"

	"github.com/telapi/telkeys/apikey"
	"github.com/telapi/telkeys/audit"
	"github.com/telapi/telkeys/auth"
	"github.com/telapi/telkeys/commands"
	"github.com/telapi/telkeys/domain"
	"github.com/telapi/telkeys/events"
	"github.com/telapi/telkeys/keyauth"
	"github.com/telapi/telkeys/projections"
)

// Wire types of the REST contract.
type (
	teamJSON struct {
		Team string `json:"team"`
		events.AccessConfig
		Keys int `json:"keys"`
	}
	keyJSON struct {
		ID         string   `json:"id"`
		Name       string   `json:"name"`
		Scopes     []string `json:"scopes"`
		CreatedAt  string   `json:"created_at"`
		LastUsedAt *string  `json:"last_used_at"`
		Masked     string   `json:"masked"`
		// The lifecycle: expiry (null: never), whether it has passed,
		// enabled, the roll that made or replaced the key, a leak report.
		ExpiresAt  *string   `json:"expires_at"`
		Expired    bool      `json:"expired"`
		Enabled    bool      `json:"enabled"`
		Replaces   *string   `json:"replaces,omitempty"`
		ReplacedBy *string   `json:"replaced_by,omitempty"`
		Leak       *leakJSON `json:"leak,omitempty"`
	}
	leakJSON struct {
		KeyID    string `json:"key_id"`
		Name     string `json:"name"`
		URL      string `json:"url"`
		Source   string `json:"source"`
		Reporter string `json:"reporter"`
		Revoked  bool   `json:"revoked"`
		At       string `json:"at"`
	}
	createdKeyJSON struct {
		keyJSON
		Key string `json:"key"`
	}
	statsJSON struct {
		Keys              int      `json:"keys"`
		MaxKeys           int      `json:"max_keys"`
		RequestsToday     int64    `json:"requests_today"`
		MaxRequestsPerDay *int64   `json:"max_requests_per_day"`
		AvailableScopes   []string `json:"available_scopes"`
	}
	flagsJSON struct {
		WebRTC bool `json:"webrtc"`
	}
	nodeJSON struct {
		Name       string `json:"name"`
		AppliedSeq uint64 `json:"applied_seq"`
		Lag        uint64 `json:"lag"`
		LastSeen   string `json:"last_seen"`
		State      string `json:"state"`
	}
	quarantinedJSON struct {
		Seq      uint64 `json:"seq"`
		Subject  string `json:"subject"`
		Reason   string `json:"reason"`
		Detail   string `json:"detail"`
		EventID  string `json:"event_id"`
		StoredAt string `json:"stored_at"`
	}

	// Request bodies: pointers tell a missing field from a zero one.
	putAccessBody struct {
		Enabled           *bool     `json:"enabled"`
		AllowedScopes     *[]string `json:"allowed_scopes"`
		MaxKeys           *int      `json:"max_keys"`
		MaxRequestsPerDay *int64    `json:"max_requests_per_day"`
	}
	createKeyBody struct {
		Name      *string   `json:"name"`
		Scopes    *[]string `json:"scopes"`
		ExpiresAt *string   `json:"expires_at"`
	}
	rollKeyBody struct {
		GraceSeconds *int64 `json:"grace_seconds"`
	}
	patchKeyBody struct {
		Enabled *bool   `json:"enabled"`
		Name    *string `json:"name"`
	}
	putFlagBody struct {
		Enabled *bool `json:"enabled"`
	}
	verifyBody struct {
		Key   *string `json:"key"`
		Scope *string `json:"scope"`
	}
	verifyJSON struct {
		Valid             bool     `json:"valid"`
		Code              string   `json:"code"`
		Team              *string  `json:"team"`
		KeyID             *string  `json:"key_id"`
		Scopes            []string `json:"scopes"`
		RequestsToday     *int64   `json:"requests_today"`
		MaxRequestsPerDay *int64   `json:"max_requests_per_day"`
	}
)

const timeFormat = "2006-01-02T15:04:05.000Z07:00"

func formatTime(t time.Time) string { return t.UTC().Format(timeFormat) }

// accessJSON is c as the API shows it: a list of scopes, never null.
func accessJSON(c events.AccessConfig) events.AccessConfig {
	if c.AllowedScopes == nil {
		c.AllowedScopes = []string{}
	}
	return c
}

// decodeBody reads a JSON object strictly: no unknown fields, no trailing
// data. Its errors never echo the input.
func decodeBody(c *fiber.Ctx, v any) error {
	// JSON must be UTF-8 (RFC 8259 §8.1); encoding/json would silently
	// turn invalid bytes into U+FFFD and accept them.
	if !utf8.Valid(c.Body()) {
		return badRequest("body must be UTF-8")
	}
	dec := json.NewDecoder(bytes.NewReader(c.Body()))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		var te *json.UnmarshalTypeError
		switch {
		case errors.As(err, &te) && te.Field != "":
			return badRequest("field " + te.Field + " has the wrong type")
		case errors.Is(err, io.EOF):
			return badRequest("body must be a JSON object")
		default:
			if bytes.HasPrefix(bytes.TrimSpace([]byte(err.Error())), []byte("json: unknown field")) {
				return badRequest("body has an unknown field")
			}
			return badRequest("body is not valid JSON of the expected shape")
		}
	}
	if _, err := dec.Token(); !errors.Is(err, io.EOF) {
		return badRequest("body has data after the JSON object")
	}
	return nil
}

func (s *Server) getFlags(c *fiber.Ctx) error {
	if _, err := allow(c, auth.RoleSuperadmin, auth.RoleAuditor); err != nil {
		return err
	}
	on, err := s.cfg.Queries.WebRTC(c.UserContext())
	if err != nil {
		return err
	}
	return c.JSON(flagsJSON{WebRTC: on})
}

func (s *Server) putWebRTC(c *fiber.Ctx) error {
	cl, err := allow(c, auth.RoleSuperadmin)
	if err != nil {
		return err
	}
	var body putFlagBody
	if err := decodeBody(c, &body); err != nil {
		return err
	}
	if body.Enabled == nil {
		return badRequest("enabled is required")
	}
	res, err := s.cfg.Commands.SetPlatformFlag(c.UserContext(), actor(cl), events.FlagWebRTC, *body.Enabled)
	if err != nil {
		return err
	}
	s.readYourWrites(c, res)
	return c.JSON(flagsJSON{WebRTC: *body.Enabled})
}

func (s *Server) listTeams(c *fiber.Ctx) error {
	if _, err := allow(c, auth.RoleSuperadmin, auth.RoleAuditor); err != nil {
		return err
	}
	recs, err := s.cfg.Queries.Teams(c.UserContext())
	if err != nil {
		return err
	}
	out := make([]teamJSON, 0, len(recs))
	for _, r := range recs {
		out = append(out, teamJSON{Team: r.Team, AccessConfig: accessJSON(r.AccessConfig), Keys: r.Keys})
	}
	return c.JSON(fiber.Map{"teams": out})
}

func (s *Server) getAccess(c *fiber.Ctx) error {
	team, err := teamParam(c)
	if err != nil {
		return err
	}
	if _, err := allowTeam(c, team, true, auth.RoleSuperadmin, auth.RoleAuditor); err != nil {
		return err
	}
	rec, err := s.cfg.Queries.Team(c.UserContext(), team)
	if err != nil {
		return err
	}
	return c.JSON(accessJSON(rec.AccessConfig))
}

func (s *Server) putAccess(c *fiber.Ctx) error {
	team, err := teamParam(c)
	if err != nil {
		return err
	}
	cl, err := allow(c, auth.RoleSuperadmin)
	if err != nil {
		return err
	}
	var body putAccessBody
	if err := decodeBody(c, &body); err != nil {
		return err
	}
	if body.Enabled == nil || body.AllowedScopes == nil || body.MaxKeys == nil {
		return badRequest("enabled, allowed_scopes and max_keys are required")
	}
	cfg, res, err := s.cfg.Commands.ConfigureTeamAccess(c.UserContext(), actor(cl), team, events.AccessConfig{
		Enabled: *body.Enabled, AllowedScopes: *body.AllowedScopes, MaxKeys: *body.MaxKeys, MaxRequestsPerDay: body.MaxRequestsPerDay,
	})
	if err != nil {
		return err
	}
	s.readYourWrites(c, res)
	return c.JSON(accessJSON(cfg))
}

// memberNeedsEnabled refuses members of a team whose access is off.
func memberNeedsEnabled(cl auth.Claims, rec projections.TeamRecord) error {
	if cl.Role == auth.RoleMember && !rec.Enabled {
		return domain.ErrTeamDisabled
	}
	return nil
}

func (s *Server) listKeys(c *fiber.Ctx) error {
	team, err := teamParam(c)
	if err != nil {
		return err
	}
	cl, err := allowTeam(c, team, true, auth.RoleSuperadmin, auth.RoleAuditor)
	if err != nil {
		return err
	}
	ctx := c.UserContext()
	rec, err := s.cfg.Queries.Team(ctx, team)
	if err != nil {
		return err
	}
	if err := memberNeedsEnabled(cl, rec); err != nil {
		return err
	}
	keys, err := s.cfg.Queries.TeamKeys(ctx, team)
	if err != nil {
		return err
	}
	lastUsed, err := s.cfg.Queries.LastUsed(ctx, team)
	if err != nil {
		return err
	}
	now := s.cfg.Now()
	out := make([]keyJSON, 0, len(keys))
	counted := 0
	for _, k := range keys {
		dk := domain.Key{ExpiresAt: k.ExpiresAt, Disabled: k.Disabled, Replaces: k.Replaces, ReplacedBy: k.ReplacedBy, Leak: k.Leak}
		kj := lifecycle(keyJSON{
			ID: k.ID, Name: k.Name, Scopes: domain.EffectiveScopes(k.Scopes, rec.AllowedScopes),
			CreatedAt: formatTime(k.CreatedAt), Masked: apikey.Mask(k.Last4),
		}, dk, now)
		if !dk.Expired(now) && k.ReplacedBy == "" {
			counted++
		}
		if sec, ok := lastUsed[k.ID]; ok {
			// Nodes keep the second of the last use: a key used in the
			// second it was made would show a use before its creation.
			// The use happened at or after both, so the later is shown.
			used := time.Unix(sec, 0)
			if used.Before(k.CreatedAt) {
				used = k.CreatedAt
			}
			t := formatTime(used)
			kj.LastUsedAt = &t
		}
		out = append(out, kj)
	}
	today, _ := s.cfg.Verifier.Usage(team)
	leaks := make([]leakJSON, 0, len(rec.Leaks))
	for _, l := range rec.Leaks {
		leaks = append(leaks, leakOf(l))
	}
	// keys counts what counts against max_keys: not expired, and of a key
	// rolled with a grace period only the new one.
	return c.JSON(fiber.Map{"keys": out, "leaks": leaks, "stats": statsJSON{
		Keys: counted, MaxKeys: rec.MaxKeys, RequestsToday: today, MaxRequestsPerDay: rec.MaxRequestsPerDay,
		AvailableScopes: accessJSON(rec.AccessConfig).AllowedScopes,
	}})
}

// lifecycle adds k's expiry, state, roll and leak to j.
func lifecycle(j keyJSON, k domain.Key, now time.Time) keyJSON {
	if k.ExpiresAt != nil {
		t := formatTime(*k.ExpiresAt)
		j.ExpiresAt, j.Expired = &t, k.Expired(now)
	}
	j.Enabled = !k.Disabled
	if k.Replaces != "" {
		j.Replaces = &k.Replaces
	}
	if k.ReplacedBy != "" {
		j.ReplacedBy = &k.ReplacedBy
	}
	if k.Leak != nil {
		l := leakOf(*k.Leak)
		j.Leak = &l
	}
	return j
}

func leakOf(l domain.Leak) leakJSON {
	return leakJSON{KeyID: l.KeyID, Name: l.Name, URL: l.URL, Source: l.Source, Reporter: l.Reporter, Revoked: l.Revoked, At: formatTime(l.At)}
}

// createdJSON is the answer to a create or a roll: the key, with its
// secret, shown this once.
func (s *Server) createdJSON(k commands.CreatedKey) createdKeyJSON {
	return createdKeyJSON{
		keyJSON: lifecycle(keyJSON{
			ID: k.Key.ID, Name: k.Key.Name, Scopes: k.Key.Scopes,
			CreatedAt: formatTime(k.Key.CreatedAt), Masked: apikey.Mask(k.Key.Last4),
		}, k.Key, s.cfg.Now()),
		Key: k.Plaintext,
	}
}

func (s *Server) createKey(c *fiber.Ctx) error {
	team, err := teamParam(c)
	if err != nil {
		return err
	}
	cl, err := allowTeam(c, team, true)
	if err != nil {
		return err
	}
	var body createKeyBody
	if err := decodeBody(c, &body); err != nil {
		return err
	}
	if body.Name == nil || body.Scopes == nil {
		return badRequest("name and scopes are required")
	}
	var expiresAt *time.Time
	if body.ExpiresAt != nil {
		t, err := time.Parse(time.RFC3339Nano, *body.ExpiresAt)
		if err != nil {
			return badRequest("expires_at must be an RFC 3339 time, such as 2027-01-31T00:00:00Z")
		}
		expiresAt = &t
	}
	k, err := s.cfg.Commands.CreateKeyUntil(c.UserContext(), actor(cl), team, *body.Name, *body.Scopes, expiresAt)
	if err != nil {
		return err
	}
	s.readYourWrites(c, k.Result)
	c.Set(fiber.HeaderCacheControl, "no-store")
	return c.Status(fiber.StatusCreated).JSON(s.createdJSON(k))
}

// keyParams reads {team} and {id} of a route that changes one key, which
// members of the team and superadmins may use.
func keyParams(c *fiber.Ctx) (team, id string, cl auth.Claims, err error) {
	if team, err = teamParam(c); err != nil {
		return "", "", cl, err
	}
	if cl, err = allowTeam(c, team, true, auth.RoleSuperadmin); err != nil {
		return "", "", cl, err
	}
	id = c.Params("id")
	if !commands.ValidKeyID(id) {
		return "", "", cl, badRequest("key id must be key_ followed by a ULID")
	}
	return team, id, cl, nil
}

// rollKey replaces a key with a new one; the old one keeps working for
// grace_seconds.
func (s *Server) rollKey(c *fiber.Ctx) error {
	team, id, cl, err := keyParams(c)
	if err != nil {
		return err
	}
	var body rollKeyBody
	if err := decodeBody(c, &body); err != nil {
		return err
	}
	if body.GraceSeconds == nil {
		return badRequest("grace_seconds is required (0 stops the old key at once)")
	}
	if g := *body.GraceSeconds; g < 0 || g > int64(commands.MaxGrace/time.Second) {
		return badRequest("grace_seconds must be between 0 and 2592000 (30 days)")
	}
	k, err := s.cfg.Commands.RollKey(c.UserContext(), actor(cl), team, id, time.Duration(*body.GraceSeconds)*time.Second)
	if err != nil {
		return err
	}
	s.readYourWrites(c, k.Result)
	c.Set(fiber.HeaderCacheControl, "no-store")
	return c.Status(fiber.StatusCreated).JSON(s.createdJSON(k))
}

// patchKey disables or enables a key, or renames it.
func (s *Server) patchKey(c *fiber.Ctx) error {
	team, id, cl, err := keyParams(c)
	if err != nil {
		return err
	}
	var body patchKeyBody
	if err := decodeBody(c, &body); err != nil {
		return err
	}
	if body.Enabled == nil && body.Name == nil {
		return badRequest("give enabled, name or both")
	}
	k, res, err := s.cfg.Commands.UpdateKey(c.UserContext(), actor(cl), team, id, body.Enabled, body.Name, cl.Role == auth.RoleMember)
	if err != nil {
		return err
	}
	s.readYourWrites(c, res)
	rec, err := s.cfg.Queries.Team(c.UserContext(), team)
	if err != nil {
		return err
	}
	return c.JSON(lifecycle(keyJSON{
		ID: k.ID, Name: k.Name, Scopes: domain.EffectiveScopes(k.Scopes, rec.AllowedScopes),
		CreatedAt: formatTime(k.CreatedAt), Masked: apikey.Mask(k.Last4),
	}, k, s.cfg.Now()))
}

func (s *Server) deleteKey(c *fiber.Ctx) error {
	team, id, cl, err := keyParams(c)
	if err != nil {
		return err
	}
	res, err := s.cfg.Commands.DeleteKey(c.UserContext(), actor(cl), team, id, cl.Role == auth.RoleMember)
	if err != nil {
		return err
	}
	s.readYourWrites(c, res)
	return c.SendStatus(fiber.StatusNoContent)
}

// verify answers for TelAPI nodes that cannot embed keyauth. It always
// answers 200 with a code; only a malformed request is an error.
func (s *Server) verify(c *fiber.Ctx) error {
	if _, err := allow(c, auth.RoleNode, auth.RoleSuperadmin); err != nil {
		return err
	}
	var body verifyBody
	if err := decodeBody(c, &body); err != nil {
		return err
	}
	if body.Key == nil || body.Scope == nil {
		return badRequest("key and scope are required")
	}
	r := s.cfg.Verifier.VerifyWait(c.UserContext(), *body.Key, *body.Scope)
	out := verifyJSON{Valid: r.Valid(), Code: r.Code.String(), Scopes: r.Scopes.Strings()}
	if r.KeyID != "" {
		out.Team, out.KeyID = &r.Team, &r.KeyID
		today, limit := s.cfg.Verifier.Usage(r.Team)
		if r.Valid() || r.Code == keyauth.RateLimited {
			today = r.RequestsToday
		}
		out.RequestsToday = &today
		if limit >= 0 {
			out.MaxRequestsPerDay = &limit
		}
	}
	c.Set(fiber.HeaderCacheControl, "no-store")
	return c.JSON(out)
}

// auditEvents pages through the history by stream sequence.
// listNodes shows the TelAPI nodes telkeys has heard from: how far each
// has applied the events, and whether the revocation barrier waits for it.
func (s *Server) listNodes(c *fiber.Ctx) error {
	if _, err := allow(c, auth.RoleSuperadmin, auth.RoleAuditor); err != nil {
		return err
	}
	head := s.cfg.Verifier.Applied()
	out := []nodeJSON{}
	for _, n := range s.cfg.Nodes.Nodes() {
		state := "stale"
		if n.Live {
			state = "current"
		}
		out = append(out, nodeJSON{Name: n.Name, AppliedSeq: n.Applied, Lag: head - min(head, n.Applied),
			LastSeen: formatTime(n.LastSeen), State: state})
	}
	return c.JSON(fiber.Map{"nodes": out})
}

// auditQuarantine lists the stored messages that are not valid events:
// skipped by every reader, never applied.
func (s *Server) auditQuarantine(c *fiber.Ctx) error {
	if _, err := allow(c, auth.RoleAuditor, auth.RoleSuperadmin); err != nil {
		return err
	}
	recs, err := s.cfg.Queries.Quarantine(c.UserContext())
	if err != nil {
		return err
	}
	out := make([]quarantinedJSON, 0, len(recs))
	for _, r := range recs {
		out = append(out, quarantinedJSON{Seq: r.Seq, Subject: r.Subject, Reason: r.Reason, Detail: r.Detail,
			EventID: r.EventID, StoredAt: formatTime(r.StoredAt)})
	}
	return c.JSON(fiber.Map{"quarantine": out})
}

func (s *Server) auditEvents(c *fiber.Ctx) error {
	if _, err := allow(c, auth.RoleAuditor, auth.RoleSuperadmin); err != nil {
		return err
	}
	f := audit.Filter{Limit: 100}
	if team := c.Query("team"); team != "" {
		if !commands.ValidTeamID(team) {
			return badRequest("team must be 1-64 characters of A-Z a-z 0-9 _ -")
		}
		f.Team = team
	}
	if t := c.Query("type"); t != "" {
		switch events.Type(t) {
		case events.TypePlatformFlagSet, events.TypeTeamAccessConfigured, events.TypeKeyCreated, events.TypeKeyDeleted,
			events.TypeKeyRolled, events.TypeKeyUpdated, events.TypeKeyLeaked:
			f.Type = events.Type(t)
		default:
			return badRequest("type must be one of PlatformFlagSet, TeamAccessConfigured, KeyCreated, KeyDeleted, KeyRolled, KeyUpdated, KeyLeaked")
		}
	}
	var err error
	if v := c.Query("after"); v != "" {
		if f.After, err = strconv.ParseUint(v, 10, 64); err != nil {
			return badRequest("after must be a stream sequence (a non-negative integer)")
		}
	}
	if v := c.Query("limit"); v != "" {
		if f.Limit, err = strconv.Atoi(v); err != nil || f.Limit < 1 || f.Limit > 1000 {
			return badRequest("limit must be between 1 and 1000")
		}
	}
	for name, into := range map[string]*time.Time{"since": &f.Since, "until": &f.Until} {
		if v := c.Query(name); v != "" {
			if *into, err = time.Parse(time.RFC3339Nano, v); err != nil {
				return badRequest(name + " must be an RFC 3339 time")
			}
		}
	}
	page, err := s.cfg.Audit.Page(c.UserContext(), f)
	if err != nil {
		return err
	}
	var next *uint64
	if len(page) == f.Limit {
		next = &page[len(page)-1].Seq
	}
	return c.JSON(fiber.Map{"events": page, "next": next})
}
