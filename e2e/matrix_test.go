package e2e

import (
	"fmt"
	"slices"
	"testing"

	"github.com/telapi/telkeys/auth"
)

// Authorization: which role may call which route, on which team.

// Every role against every route on team A's path: allowed roles succeed,
// the others get 403 forbidden; a member of B is never let into A; nodes
// and auditors never write.
func TestRoleEndpointTeamMatrix(t *testing.T) {
	s := startService(t)
	const maxKeys = 100
	s.enableTeam("team-a", maxKeys)
	s.enableTeam("team-b", maxKeys)

	callers := map[string]string{
		"superadmin": s.token(auth.RoleSuperadmin, ""),
		"auditor":    s.token(auth.RoleAuditor, ""),
		"member-a":   s.token(auth.RoleMember, "team-a"),
		"member-b":   s.token(auth.RoleMember, "team-b"),
		"node":       s.token(auth.RoleNode, ""),
	}
	sameConfig := map[string]any{"enabled": true, "allowed_scopes": []string{"CREATE_CALL_TOKEN", "READ_CALL_TOKEN", "READ_TEAM_APPS"}, "max_keys": maxKeys, "max_requests_per_day": 1000}
	newKey := map[string]any{"name": "matrix", "scopes": []string{"READ_TEAM_APPS"}}
	routes := []struct {
		method, path string
		body         any
		path2        func() string // computes the path when it needs a fresh key
		ok           int
		allowed      []string
	}{
		{"GET", "/v1/platform/flags", nil, nil, 200, []string{"superadmin", "auditor"}},
		{"PUT", "/v1/platform/flags/webrtc", map[string]any{"enabled": true}, nil, 200, []string{"superadmin"}},
		{"GET", "/v1/teams", nil, nil, 200, []string{"superadmin", "auditor"}},
		{"GET", "/v1/teams/team-a/api-access", nil, nil, 200, []string{"superadmin", "auditor", "member-a"}},
		{"PUT", "/v1/teams/team-a/api-access", sameConfig, nil, 200, []string{"superadmin"}},
		{"GET", "/v1/teams/team-a/api-keys", nil, nil, 200, []string{"superadmin", "auditor", "member-a"}},
		{"POST", "/v1/teams/team-a/api-keys", newKey, nil, 201, []string{"member-a"}},
		{"GET", "/v1/audit/events", nil, nil, 200, []string{"superadmin", "auditor"}},
		{"POST", "/v1/keys/verify", map[string]any{"key": "tk_x", "scope": "READ_TEAM_APPS"}, nil, 200, []string{"superadmin", "node"}},
		{"DELETE", "", nil, func() string {
			return "/v1/teams/team-a/api-keys/" + s.createKey("team-a", "to delete")["id"].(string)
		}, 204, []string{"superadmin", "member-a"}},
	}
	for _, rt := range routes {
		for who, tok := range callers {
			name := fmt.Sprintf("%s %s as %s", rt.method, rt.path, who)
			path := rt.path
			if rt.path2 != nil {
				path = rt.path2()
				name = fmt.Sprintf("%s {key of team-a} as %s", rt.method, who)
			}
			t.Run(name, func(t *testing.T) {
				r := s.do(rt.method, path, tok, rt.body)
				if slices.Contains(rt.allowed, who) {
					if r.status != rt.ok {
						t.Fatalf("status %d, want %d: %s", r.status, rt.ok, r.body)
					}
					return
				}
				expectProblem(t, r, 403, "forbidden")
			})
		}
	}

	t.Run("a key id of team B under team A's path is not found", func(t *testing.T) {
		idB := s.createKey("team-b", "b's key")["id"].(string)
		for _, who := range []string{"member-a", "superadmin"} {
			expectProblem(t, s.do("DELETE", "/v1/teams/team-a/api-keys/"+idB, callers[who], nil), 404, "not_found")
		}
		// And it is still there for B.
		r := s.do("GET", "/v1/teams/team-b/api-keys", callers["member-b"], nil)
		if len(r.json(t)["keys"].([]any)) != 1 {
			t.Fatalf("team B lost its key: %s", r.body)
		}
	})

	t.Run("member of B on every path of A", func(t *testing.T) {
		for _, rt := range routes[3:7] {
			expectProblem(t, s.do(rt.method, rt.path, callers["member-b"], rt.body), 403, "forbidden")
		}
	})
}
