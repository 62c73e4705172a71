package e2e

import (
	"net/http"
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
func TestContract(t *testing.T) {
	s := startService(t)
	sa := s.token(auth.RoleSuperadmin, "")
	aud := s.token(auth.RoleAuditor, "")
	mem := s.token(auth.RoleMember, "acme")
	node := s.token(auth.RoleNode, "")

	t.Run("GET /v1/platform/flags", func(t *testing.T) {
		r := s.do("GET", "/v1/platform/flags", sa, nil)
		if r.status != 200 || r.json(t)["webrtc"] != true {
			t.Fatalf("default flags: %d %s", r.status, r.body)
		}
		if r := s.do("GET", "/v1/platform/flags", aud, nil); r.status != 200 {
			t.Fatalf("auditor: %d", r.status)
		}
		expectProblem(t, s.do("GET", "/v1/platform/flags", "", nil), 401, "unauthorized")
		expectProblem(t, s.do("GET", "/v1/platform/flags", mem, nil), 403, "forbidden")
		// The auth scheme is case-insensitive.
		req, _ := http.NewRequest("GET", s.base+"/v1/platform/flags", nil)
		req.Header.Set("Authorization", "bearer "+sa)
		if res, err := http.DefaultClient.Do(req); err != nil || res.StatusCode != 200 {
			t.Fatalf("lower-case scheme: %v %v", res, err)
		} else {
			res.Body.Close()
		}
	})

	t.Run("PUT /v1/platform/flags/webrtc", func(t *testing.T) {
		r := s.do("PUT", "/v1/platform/flags/webrtc", sa, map[string]any{"enabled": false})
		if r.status != 200 || r.json(t)["webrtc"] != false {
			t.Fatalf("turn off: %d %s", r.status, r.body)
		}
		if r := s.do("GET", "/v1/platform/flags", aud, nil); r.json(t)["webrtc"] != false {
			t.Fatalf("read after write: %s", r.body)
		}
		if r := s.do("PUT", "/v1/platform/flags/webrtc", sa, map[string]any{"enabled": true}); r.status != 200 || r.json(t)["webrtc"] != true {
			t.Fatalf("turn on: %d %s", r.status, r.body)
		}
		expectProblem(t, s.do("PUT", "/v1/platform/flags/webrtc", sa, `{"enabled":"yes"}`), 400, "invalid_request")
		expectProblem(t, s.do("PUT", "/v1/platform/flags/webrtc", sa, `{}`), 400, "invalid_request")
		expectProblem(t, s.do("PUT", "/v1/platform/flags/webrtc", "", `{"enabled":true}`), 401, "unauthorized")
		expectProblem(t, s.do("PUT", "/v1/platform/flags/webrtc", aud, `{"enabled":true}`), 403, "forbidden")
	})

	t.Run("PUT and GET /v1/teams/{team}/api-access", func(t *testing.T) {
		r := s.do("GET", "/v1/teams/acme/api-access", mem, nil)
		if r.status != 200 || r.json(t)["enabled"] != false {
			t.Fatalf("never configured team: %d %s", r.status, r.body)
		}
		r = s.do("PUT", "/v1/teams/acme/api-access", sa, map[string]any{
			"enabled": true, "allowed_scopes": []string{"READ_TEAM_APPS", "CREATE_CALL_TOKEN"}, "max_keys": 2, "max_requests_per_day": nil,
		})
		if r.status != 200 {
			t.Fatalf("configure: %d %s", r.status, r.body)
		}
		got := r.json(t)
		if !slices.Equal(strs(got["allowed_scopes"]), []string{"CREATE_CALL_TOKEN", "READ_TEAM_APPS"}) || got["max_keys"] != 2.0 || got["max_requests_per_day"] != nil {
			t.Fatalf("stored config %s", r.body)
		}
		for _, tok := range []string{sa, aud, mem} {
			if r := s.do("GET", "/v1/teams/acme/api-access", tok, nil); r.status != 200 || r.json(t)["enabled"] != true {
				t.Fatalf("read config: %d %s", r.status, r.body)
			}
		}
		expectProblem(t, s.do("GET", "/v1/teams/acme/api-access", node, nil), 403, "forbidden")
		expectProblem(t, s.do("GET", "/v1/teams/acme/api-access", "", nil), 401, "unauthorized")
		expectProblem(t, s.do("GET", "/v1/teams/bad.team/api-access", sa, nil), 400, "invalid_request")
		expectProblem(t, s.do("PUT", "/v1/teams/acme/api-access", mem, `{"enabled":true,"allowed_scopes":[],"max_keys":1}`), 403, "forbidden")
		expectProblem(t, s.do("PUT", "/v1/teams/acme/api-access", sa, `{"enabled":true,"allowed_scopes":["NOPE"],"max_keys":1}`), 400, "invalid_request")
		expectProblem(t, s.do("PUT", "/v1/teams/acme/api-access", sa, `{"enabled":true,"allowed_scopes":[],"max_keys":-1}`), 400, "invalid_request")
		expectProblem(t, s.do("PUT", "/v1/teams/acme/api-access", sa, `{"enabled":true}`), 400, "invalid_request")
	})

	var created map[string]any
	t.Run("POST /v1/teams/{team}/api-keys", func(t *testing.T) {
		r := s.do("POST", "/v1/teams/acme/api-keys", mem, map[string]any{"name": " deploy bot ", "scopes": []string{"READ_TEAM_APPS"}})
		if r.status != 201 {
			t.Fatalf("create: %d %s", r.status, r.body)
		}
		if r.header.Get("Cache-Control") != "no-store" {
			t.Fatal("the response holding a secret must not be cached")
		}
		created = r.json(t)
		key, _ := created["key"].(string)
		if apikey.Parse(key) != nil {
			t.Fatalf("bad key in response: %s", r.body)
		}
		if created["name"] != "deploy bot" || created["masked"] != apikey.Mask(apikey.Last4(key)) || created["last_used_at"] != nil {
			t.Fatalf("created %s", r.body)
		}
		if !regexp.MustCompile(`^key_[0-9A-Z]{26}$`).MatchString(created["id"].(string)) {
			t.Fatalf("key id %v", created["id"])
		}
		if !regexp.MustCompile(`^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$`).MatchString(created["created_at"].(string)) {
			t.Fatalf("created_at %v is not RFC 3339 UTC", created["created_at"])
		}
		expectProblem(t, s.do("POST", "/v1/teams/acme/api-keys", mem, map[string]any{"name": "x", "scopes": []string{"READ_CALL_TOKEN"}}), 422, "scope_not_allowed")
		expectProblem(t, s.do("POST", "/v1/teams/acme/api-keys", mem, map[string]any{"name": "", "scopes": []string{"READ_TEAM_APPS"}}), 400, "invalid_request")
		expectProblem(t, s.do("POST", "/v1/teams/acme/api-keys", "", map[string]any{"name": "x", "scopes": []string{"READ_TEAM_APPS"}}), 401, "unauthorized")
		expectProblem(t, s.do("POST", "/v1/teams/acme/api-keys", sa, map[string]any{"name": "x", "scopes": []string{"READ_TEAM_APPS"}}), 403, "forbidden")
		s.createKey("acme", "second")
		expectProblem(t, s.do("POST", "/v1/teams/acme/api-keys", mem, map[string]any{"name": "third", "scopes": []string{"READ_TEAM_APPS"}}), 409, "max_keys_reached")
		expectProblem(t, s.do("POST", "/v1/teams/acme/api-keys", mem, strings.Repeat("x", 1<<20+1)), 413, "body_too_large")
		other := s.token(auth.RoleMember, "off")
		expectProblem(t, s.do("POST", "/v1/teams/off/api-keys", other, map[string]any{"name": "x", "scopes": []string{"READ_TEAM_APPS"}}), 403, "team_api_disabled")
	})

	t.Run("GET /v1/teams/{team}/api-keys", func(t *testing.T) {
		for _, tok := range []string{mem, sa, aud} {
			r := s.do("GET", "/v1/teams/acme/api-keys", tok, nil)
			if r.status != 200 {
				t.Fatalf("list: %d %s", r.status, r.body)
			}
			body := r.json(t)
			keys := body["keys"].([]any)
			if len(keys) != 2 || keys[0].(map[string]any)["id"] != created["id"] {
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
		expectProblem(t, s.do("GET", "/v1/teams/acme/api-keys", node, nil), 403, "forbidden")
		expectProblem(t, s.do("GET", "/v1/teams/acme/api-keys", "", nil), 401, "unauthorized")
		expectProblem(t, s.do("GET", "/v1/teams/off/api-keys", s.token(auth.RoleMember, "off"), nil), 403, "team_api_disabled")
		if r := s.do("GET", "/v1/teams/off/api-keys", sa, nil); r.status != 200 {
			t.Fatalf("superadmin lists a disabled team: %d", r.status)
		}
	})

	t.Run("GET /v1/teams", func(t *testing.T) {
		r := s.do("GET", "/v1/teams", aud, nil)
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
		expectProblem(t, s.do("GET", "/v1/teams", mem, nil), 403, "forbidden")
		expectProblem(t, s.do("GET", "/v1/teams", "", nil), 401, "unauthorized")
	})

	t.Run("POST /v1/keys/verify", func(t *testing.T) {
		key := created["key"].(string)
		r := s.do("POST", "/v1/keys/verify", node, map[string]any{"key": key, "scope": "READ_TEAM_APPS"})
		if r.status != 200 {
			t.Fatalf("verify: %d %s", r.status, r.body)
		}
		v := r.json(t)
		if v["valid"] != true || v["code"] != "VALID" || v["team"] != "acme" || v["key_id"] != created["id"] ||
			!slices.Equal(strs(v["scopes"]), []string{"READ_TEAM_APPS"}) || v["requests_today"] != 1.0 || v["max_requests_per_day"] != nil {
			t.Fatalf("verify result %s", r.body)
		}
		r = s.do("POST", "/v1/keys/verify", sa, map[string]any{"key": key, "scope": "CREATE_CALL_TOKEN"})
		if v := r.json(t); r.status != 200 || v["valid"] != false || v["code"] != "INSUFFICIENT_SCOPE" {
			t.Fatalf("verify without the scope: %d %s", r.status, r.body)
		}
		other, _ := apikey.Generate()
		r = s.do("POST", "/v1/keys/verify", node, map[string]any{"key": other, "scope": "READ_TEAM_APPS"})
		if v := r.json(t); r.status != 200 || v["code"] != "NOT_FOUND" || v["team"] != nil || v["key_id"] != nil {
			t.Fatalf("unknown key: %d %s", r.status, r.body)
		}
		expectProblem(t, s.do("POST", "/v1/keys/verify", node, `{"key":"x"}`), 400, "invalid_request")
		expectProblem(t, s.do("POST", "/v1/keys/verify", node, `{"key":"x","scope":"y","z":1}`), 400, "invalid_request")
		expectProblem(t, s.do("POST", "/v1/keys/verify", "", map[string]any{"key": key, "scope": "READ_TEAM_APPS"}), 401, "unauthorized")
		expectProblem(t, s.do("POST", "/v1/keys/verify", mem, map[string]any{"key": key, "scope": "READ_TEAM_APPS"}), 403, "forbidden")
		expectProblem(t, s.do("POST", "/v1/keys/verify", aud, map[string]any{"key": key, "scope": "READ_TEAM_APPS"}), 403, "forbidden")

		// The list shows the use: requests today at once, last used once flushed (~1 s).
		bustest.Eventually(t, 10*time.Second, "requests_today 1 and last_used_at set", func() bool {
			body := s.do("GET", "/v1/teams/acme/api-keys", mem, nil).json(t)
			var lastUsed any
			for _, k := range body["keys"].([]any) {
				if k.(map[string]any)["id"] == created["id"] {
					lastUsed = k.(map[string]any)["last_used_at"]
				}
			}
			return body["stats"].(map[string]any)["requests_today"] == 1.0 && lastUsed != nil
		})
	})

	t.Run("DELETE /v1/teams/{team}/api-keys/{id}", func(t *testing.T) {
		id := created["id"].(string)
		expectProblem(t, s.do("DELETE", "/v1/teams/acme/api-keys/"+id, aud, nil), 403, "forbidden")
		expectProblem(t, s.do("DELETE", "/v1/teams/acme/api-keys/"+id, "", nil), 401, "unauthorized")
		expectProblem(t, s.do("DELETE", "/v1/teams/acme/api-keys/not-a-key", mem, nil), 400, "invalid_request")
		if r := s.do("DELETE", "/v1/teams/acme/api-keys/"+id, mem, nil); r.status != 204 || len(r.body) != 0 {
			t.Fatalf("delete: %d %s", r.status, r.body)
		}
		// This server's verify endpoint refuses the key as soon as DELETE returned.
		r := s.do("POST", "/v1/keys/verify", node, map[string]any{"key": created["key"], "scope": "READ_TEAM_APPS"})
		if v := r.json(t); v["code"] != "NOT_FOUND" {
			t.Fatalf("deleted key verifies as %v", v["code"])
		}
		expectProblem(t, s.do("DELETE", "/v1/teams/acme/api-keys/"+id, mem, nil), 404, "not_found")
		expectProblem(t, s.do("DELETE", "/v1/teams/acme/api-keys/key_01ARZ3NDEKTSV4RRFFQ69G5FAV", sa, nil), 404, "not_found")
		r = s.do("GET", "/v1/teams/acme/api-keys", mem, nil)
		if keys := r.json(t)["keys"].([]any); len(keys) != 1 {
			t.Fatalf("after delete: %s", r.body)
		}
		// Room again: the deleted key no longer counts.
		s.createKey("acme", "replacement")
	})

	t.Run("web UI and its sign-in", func(t *testing.T) {
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
		expectProblem(t, dev.do("GET", "/v1/dev/token?role=member", "", nil), 400, "invalid_request")
		expectProblem(t, dev.do("GET", "/v1/dev/token?role=root", "", nil), 400, "invalid_request")
	})

	t.Run("health, readiness, metrics, openapi", func(t *testing.T) {
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
		expectProblem(t, s.do("GET", "/v1/nothing", sa, nil), 404, "not_found")
	})
}

func expectProblem(t testing.TB, r response, status int, code string) {
	t.Helper()
	if r.status != status {
		t.Fatalf("status %d, want %d; body %s", r.status, status, r.body)
	}
	if got := r.problemCode(t); got != code {
		t.Fatalf("code %q, want %q; body %s", got, code, r.body)
	}
}

func strs(v any) []string {
	var out []string
	for _, x := range v.([]any) {
		out = append(out, x.(string))
	}
	return out
}
