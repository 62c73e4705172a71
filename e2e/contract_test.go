package e2e

import (
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/telapi/telkeys/apikey"
	"github.com/telapi/telkeys/auth"
	"github.com/telapi/telkeys/bus/bustest"
	"github.com/telapi/telkeys/service"
)

// The REST contract of design.md, route by route: each success and each
// error status it lists.

// contract is the service the contract's steps run against, in order:
// each step sees what the earlier ones did (acme configured with room for
// two keys, the created key).
type contract struct {
	s                  *testService
	sa, aud, mem, node string // tokens: superadmin, auditor, member of acme, node
	created            map[string]any
}

func TestContract(t *testing.T) {
	s := startService(t)
	c := &contract{s: s, sa: s.token(auth.RoleSuperadmin, ""), aud: s.token(auth.RoleAuditor, ""),
		mem: s.token(auth.RoleMember, "acme"), node: s.token(auth.RoleNode, "")}
	for _, step := range []struct {
		name string
		run  func(*contract, *testing.T, *testService)
	}{
		{"GET /v1/platform/flags", (*contract).getFlags},
		{"PUT /v1/platform/flags/webrtc", (*contract).putWebRTC},
		{"PUT and GET /v1/teams/{team}/api-access", (*contract).teamAccess},
		{"POST /v1/teams/{team}/api-keys", (*contract).createKey},
		{"GET /v1/teams/{team}/api-keys", (*contract).listKeys},
		{"GET /v1/teams", (*contract).listTeams},
		{"POST /v1/keys/verify", (*contract).verify},
		{"DELETE /v1/teams/{team}/api-keys/{id}", (*contract).deleteKey},
		{"web UI and its sign-in", (*contract).webUI},
		{"health, readiness, metrics, openapi", (*contract).operations},
	} {
		t.Run(step.name, func(t *testing.T) { step.run(c, t, c.s.withT(t)) })
	}
}

func (c *contract) getFlags(t *testing.T, s *testService) {
	r := s.do("GET", "/v1/platform/flags", c.sa, nil)
	if r.status != 200 || r.json(t)["webrtc"] != true {
		t.Fatalf("default flags: %d %s", r.status, r.body)
	}
	if r := s.do("GET", "/v1/platform/flags", c.aud, nil); r.status != 200 {
		t.Fatalf("auditor: %d", r.status)
	}
	// The auth scheme is case-insensitive.
	if r := s.send("GET", "/v1/platform/flags", map[string]string{"Authorization": "bearer " + c.sa}, nil); r.status != 200 {
		t.Fatalf("lower-case scheme: %d %s", r.status, r.body)
	}
	s.expectRefusals(t, []refusal{
		{"GET", "/v1/platform/flags", "", nil, 401, "unauthorized"},
		{"GET", "/v1/platform/flags", c.mem, nil, 403, "forbidden"},
	})
}

func (c *contract) putWebRTC(t *testing.T, s *testService) {
	r := s.do("PUT", "/v1/platform/flags/webrtc", c.sa, map[string]any{"enabled": false})
	if r.status != 200 || r.json(t)["webrtc"] != false {
		t.Fatalf("turn off: %d %s", r.status, r.body)
	}
	if r := s.do("GET", "/v1/platform/flags", c.aud, nil); r.json(t)["webrtc"] != false {
		t.Fatalf("read after write: %s", r.body)
	}
	if r := s.do("PUT", "/v1/platform/flags/webrtc", c.sa, map[string]any{"enabled": true}); r.status != 200 || r.json(t)["webrtc"] != true {
		t.Fatalf("turn on: %d %s", r.status, r.body)
	}
	s.expectRefusals(t, []refusal{
		{"PUT", "/v1/platform/flags/webrtc", c.sa, `{"enabled":"yes"}`, 400, "invalid_request"},
		{"PUT", "/v1/platform/flags/webrtc", c.sa, `{}`, 400, "invalid_request"},
		{"PUT", "/v1/platform/flags/webrtc", "", `{"enabled":true}`, 401, "unauthorized"},
		{"PUT", "/v1/platform/flags/webrtc", c.aud, `{"enabled":true}`, 403, "forbidden"},
	})
}

func (c *contract) teamAccess(t *testing.T, s *testService) {
	r := s.do("GET", "/v1/teams/acme/api-access", c.mem, nil)
	if r.status != 200 || r.json(t)["enabled"] != false {
		t.Fatalf("never configured team: %d %s", r.status, r.body)
	}
	r = s.do("PUT", "/v1/teams/acme/api-access", c.sa, map[string]any{
		"enabled": true, "allowed_scopes": []string{"READ_TEAM_APPS", "CREATE_CALL_TOKEN"}, "max_keys": 2, "max_requests_per_day": nil,
	})
	if r.status != 200 {
		t.Fatalf("configure: %d %s", r.status, r.body)
	}
	got := r.json(t)
	if !slices.Equal(strs(got["allowed_scopes"]), []string{"CREATE_CALL_TOKEN", "READ_TEAM_APPS"}) || got["max_keys"] != 2.0 || got["max_requests_per_day"] != nil {
		t.Fatalf("stored config %s", r.body)
	}
	for _, tok := range []string{c.sa, c.aud, c.mem} {
		if r := s.do("GET", "/v1/teams/acme/api-access", tok, nil); r.status != 200 || r.json(t)["enabled"] != true {
			t.Fatalf("read config: %d %s", r.status, r.body)
		}
	}
	s.expectRefusals(t, []refusal{
		{"GET", "/v1/teams/acme/api-access", c.node, nil, 403, "forbidden"},
		{"GET", "/v1/teams/acme/api-access", "", nil, 401, "unauthorized"},
		{"GET", "/v1/teams/bad.team/api-access", c.sa, nil, 400, "invalid_request"},
		{"PUT", "/v1/teams/acme/api-access", c.mem, `{"enabled":true,"allowed_scopes":[],"max_keys":1}`, 403, "forbidden"},
		{"PUT", "/v1/teams/acme/api-access", c.sa, `{"enabled":true,"allowed_scopes":["NOPE"],"max_keys":1}`, 400, "invalid_request"},
		{"PUT", "/v1/teams/acme/api-access", c.sa, `{"enabled":true,"allowed_scopes":[],"max_keys":-1}`, 400, "invalid_request"},
		{"PUT", "/v1/teams/acme/api-access", c.sa, `{"enabled":true}`, 400, "invalid_request"},
	})
}

func (c *contract) createKey(t *testing.T, s *testService) {
	r := s.do("POST", "/v1/teams/acme/api-keys", c.mem, map[string]any{"name": " deploy bot ", "scopes": []string{"READ_TEAM_APPS"}})
	if r.status != 201 {
		t.Fatalf("create: %d %s", r.status, r.body)
	}
	if r.header.Get("Cache-Control") != "no-store" {
		t.Fatal("the response holding a secret must not be cached")
	}
	c.created = r.json(t)
	key, _ := c.created["key"].(string)
	if apikey.Parse(key) != nil {
		t.Fatalf("bad key in response: %s", r.body)
	}
	if c.created["name"] != "deploy bot" || c.created["masked"] != apikey.Mask(apikey.Last4(key)) || c.created["last_used_at"] != nil {
		t.Fatalf("created %s", r.body)
	}
	if !regexp.MustCompile(`^key_[0-9A-Z]{26}$`).MatchString(c.created["id"].(string)) {
		t.Fatalf("key id %v", c.created["id"])
	}
	if !regexp.MustCompile(`^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$`).MatchString(c.created["created_at"].(string)) {
		t.Fatalf("created_at %v is not RFC 3339 UTC", c.created["created_at"])
	}
	newKey := func(name, scope string) map[string]any {
		return map[string]any{"name": name, "scopes": []string{scope}}
	}
	s.expectRefusals(t, []refusal{
		{"POST", "/v1/teams/acme/api-keys", c.mem, newKey("x", "READ_CALL_TOKEN"), 422, "scope_not_allowed"},
		{"POST", "/v1/teams/acme/api-keys", c.mem, newKey("", "READ_TEAM_APPS"), 400, "invalid_request"},
		{"POST", "/v1/teams/acme/api-keys", "", newKey("x", "READ_TEAM_APPS"), 401, "unauthorized"},
		{"POST", "/v1/teams/acme/api-keys", c.sa, newKey("x", "READ_TEAM_APPS"), 403, "forbidden"},
	})
	s.createKey("acme", "second")
	s.expectRefusals(t, []refusal{
		{"POST", "/v1/teams/acme/api-keys", c.mem, newKey("third", "READ_TEAM_APPS"), 409, "max_keys_reached"},
		{"POST", "/v1/teams/acme/api-keys", c.mem, strings.Repeat("x", 1<<20+1), 413, "body_too_large"},
		{"POST", "/v1/teams/off/api-keys", s.token(auth.RoleMember, "off"), newKey("x", "READ_TEAM_APPS"), 403, "team_api_disabled"},
	})
}

func (c *contract) listKeys(t *testing.T, s *testService) {
	for _, tok := range []string{c.mem, c.sa, c.aud} {
		r := s.do("GET", "/v1/teams/acme/api-keys", tok, nil)
		if r.status != 200 {
			t.Fatalf("list: %d %s", r.status, r.body)
		}
		body := r.json(t)
		keys := body["keys"].([]any)
		if len(keys) != 2 || keys[0].(map[string]any)["id"] != c.created["id"] {
			t.Fatalf("list %s", r.body)
		}
		if _, leaked := keys[0].(map[string]any)["key"]; leaked {
			t.Fatal("list shows a plaintext key field")
		}
		st := body["stats"].(map[string]any)
		if st["keys"] != 2.0 || st["max_keys"] != 2.0 || st["requests_today"] != 0.0 || st["max_requests_per_day"] != nil ||
			!slices.Equal(strs(st["available_scopes"]), []string{"CREATE_CALL_TOKEN", "READ_TEAM_APPS"}) {
			t.Fatalf("stats %v", st)
		}
	}
	s.expectRefusals(t, []refusal{
		{"GET", "/v1/teams/acme/api-keys", c.node, nil, 403, "forbidden"},
		{"GET", "/v1/teams/acme/api-keys", "", nil, 401, "unauthorized"},
		{"GET", "/v1/teams/off/api-keys", s.token(auth.RoleMember, "off"), nil, 403, "team_api_disabled"},
	})
	if r := s.do("GET", "/v1/teams/off/api-keys", c.sa, nil); r.status != 200 {
		t.Fatalf("superadmin lists a disabled team: %d", r.status)
	}
}

func (c *contract) listTeams(t *testing.T, s *testService) {
	r := s.do("GET", "/v1/teams", c.aud, nil)
	if r.status != 200 {
		t.Fatalf("%d %s", r.status, r.body)
	}
	teams := r.json(t)["teams"].([]any)
	if len(teams) != 1 {
		t.Fatalf("teams %s", r.body)
	}
	tm := teams[0].(map[string]any)
	if tm["team"] != "acme" || tm["keys"] != 2.0 || tm["enabled"] != true || tm["max_keys"] != 2.0 {
		t.Fatalf("team %v", tm)
	}
	s.expectRefusals(t, []refusal{
		{"GET", "/v1/teams", c.mem, nil, 403, "forbidden"},
		{"GET", "/v1/teams", "", nil, 401, "unauthorized"},
	})
}

func (c *contract) verify(t *testing.T, s *testService) {
	key := c.created["key"].(string)
	r := s.do("POST", "/v1/keys/verify", c.node, map[string]any{"key": key, "scope": "READ_TEAM_APPS"})
	if r.status != 200 {
		t.Fatalf("verify: %d %s", r.status, r.body)
	}
	v := r.json(t)
	if v["valid"] != true || v["code"] != "VALID" || v["team"] != "acme" || v["key_id"] != c.created["id"] ||
		!slices.Equal(strs(v["scopes"]), []string{"READ_TEAM_APPS"}) || v["requests_today"] != 1.0 || v["max_requests_per_day"] != nil {
		t.Fatalf("verify result %s", r.body)
	}
	r = s.do("POST", "/v1/keys/verify", c.sa, map[string]any{"key": key, "scope": "CREATE_CALL_TOKEN"})
	if v := r.json(t); r.status != 200 || v["valid"] != false || v["code"] != "INSUFFICIENT_SCOPE" {
		t.Fatalf("verify without the scope: %d %s", r.status, r.body)
	}
	other, _ := apikey.Generate()
	r = s.do("POST", "/v1/keys/verify", c.node, map[string]any{"key": other, "scope": "READ_TEAM_APPS"})
	if v := r.json(t); r.status != 200 || v["code"] != "NOT_FOUND" || v["team"] != nil || v["key_id"] != nil {
		t.Fatalf("unknown key: %d %s", r.status, r.body)
	}
	req := map[string]any{"key": key, "scope": "READ_TEAM_APPS"}
	s.expectRefusals(t, []refusal{
		{"POST", "/v1/keys/verify", c.node, `{"key":"x"}`, 400, "invalid_request"},
		{"POST", "/v1/keys/verify", c.node, `{"key":"x","scope":"y","z":1}`, 400, "invalid_request"},
		{"POST", "/v1/keys/verify", "", req, 401, "unauthorized"},
		{"POST", "/v1/keys/verify", c.mem, req, 403, "forbidden"},
		{"POST", "/v1/keys/verify", c.aud, req, 403, "forbidden"},
	})

	// The list shows the use: requests today at once, last used once flushed (~1 s).
	var lastUsed, created any
	bustest.Eventually(t, 10*time.Second, "requests_today 1 and last_used_at set", func() bool {
		body := s.do("GET", "/v1/teams/acme/api-keys", c.mem, nil).json(t)
		for _, k := range body["keys"].([]any) {
			if k.(map[string]any)["id"] == c.created["id"] {
				lastUsed, created = k.(map[string]any)["last_used_at"], k.(map[string]any)["created_at"]
			}
		}
		return body["stats"].(map[string]any)["requests_today"] == 1.0 && lastUsed != nil
	})
	// Nodes keep the second of a use; a key used in the second it was
	// made must still not show a use before its creation.
	used, err1 := time.Parse(time.RFC3339Nano, lastUsed.(string))
	made, err2 := time.Parse(time.RFC3339Nano, created.(string))
	if err1 != nil || err2 != nil || used.Before(made) {
		t.Fatalf("last_used_at %v before created_at %v (%v %v)", lastUsed, created, err1, err2)
	}
}

func (c *contract) deleteKey(t *testing.T, s *testService) {
	id := c.created["id"].(string)
	s.expectRefusals(t, []refusal{
		{"DELETE", "/v1/teams/acme/api-keys/" + id, c.aud, nil, 403, "forbidden"},
		{"DELETE", "/v1/teams/acme/api-keys/" + id, "", nil, 401, "unauthorized"},
		{"DELETE", "/v1/teams/acme/api-keys/not-a-key", c.mem, nil, 400, "invalid_request"},
	})
	if r := s.do("DELETE", "/v1/teams/acme/api-keys/"+id, c.mem, nil); r.status != 204 || len(r.body) != 0 {
		t.Fatalf("delete: %d %s", r.status, r.body)
	}
	// This server's verify endpoint refuses the key as soon as DELETE returned.
	r := s.do("POST", "/v1/keys/verify", c.node, map[string]any{"key": c.created["key"], "scope": "READ_TEAM_APPS"})
	if v := r.json(t); v["code"] != "NOT_FOUND" {
		t.Fatalf("deleted key verifies as %v", v["code"])
	}
	s.expectRefusals(t, []refusal{
		{"DELETE", "/v1/teams/acme/api-keys/" + id, c.mem, nil, 404, "not_found"},
		{"DELETE", "/v1/teams/acme/api-keys/key_01ARZ3NDEKTSV4RRFFQ69G5FAV", c.sa, nil, 404, "not_found"},
	})
	r = s.do("GET", "/v1/teams/acme/api-keys", c.mem, nil)
	if keys := r.json(t)["keys"].([]any); len(keys) != 1 {
		t.Fatalf("after delete: %s", r.body)
	}
	// Room again: the deleted key no longer counts.
	s.createKey("acme", "replacement")
}

func (c *contract) webUI(t *testing.T, s *testService) {
	r := s.do("GET", "/", "", nil)
	if r.status != 200 || !strings.Contains(string(r.body), "<html") || !strings.HasPrefix(r.header.Get("Content-Type"), "text/html") ||
		!strings.Contains(r.header.Get("Content-Security-Policy"), "default-src 'self'") {
		t.Fatalf("UI: %d %v", r.status, r.header)
	}
	if r := s.do("GET", "/v1/ui-config", "", nil); r.status != 200 || r.json(t)["dev_login"] != false {
		t.Fatalf("ui-config: %d %s", r.status, r.body)
	}
	expectProblem(t, s.do("GET", "/v1/dev/token?role=superadmin", "", nil), 404, "not_found")
	dev := startService(t, func(c *service.Config) { c.DevLogin = true })
	r = dev.do("GET", "/v1/dev/token?role=member&team=acme", "", nil)
	if r.status != 200 {
		t.Fatalf("dev token: %d %s", r.status, r.body)
	}
	if r := dev.do("GET", "/v1/teams/acme/api-access", r.json(t)["token"].(string), nil); r.status != 200 {
		t.Fatalf("dev token rejected: %d", r.status)
	}
	dev.expectRefusals(t, []refusal{
		{"GET", "/v1/dev/token?role=member", "", nil, 400, "invalid_request"},
		{"GET", "/v1/dev/token?role=root", "", nil, 400, "invalid_request"},
	})
}

func (c *contract) operations(t *testing.T, s *testService) {
	for _, p := range []string{"/healthz", "/readyz", "/metrics", "/openapi.json"} {
		if r := s.do("GET", p, "", nil); r.status != 200 {
			t.Fatalf("%s: %d", p, r.status)
		}
	}
	m := string(s.do("GET", "/metrics", "", nil).body)
	for _, want := range []string{
		`telkeys_commands_total{command="CreateKey",result="ok"}`,
		`telkeys_commands_total{command="CreateKey",result="max_keys_reached"}`,
		"telkeys_command_duration_seconds_bucket", "telkeys_projection_pending_events",
	} {
		if !strings.Contains(m, want) {
			t.Errorf("metrics lack %s", want)
		}
	}
	expectProblem(t, s.do("GET", "/v1/nothing", c.sa, nil), 404, "not_found")
}
