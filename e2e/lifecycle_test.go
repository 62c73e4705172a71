package e2e

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/x509"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"encoding/pem"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/telapi/telkeys/apikey"
	"github.com/telapi/telkeys/auth"
	"github.com/telapi/telkeys/service"
)

// The key lifecycle (issue #16): expiry, roll with a grace period, disable
// and enable, and GitHub secret scanning leak reports, through the REST
// contract with each error status.

// leakSigner signs leak reports as GitHub does, with a key published in a
// file of GitHub's public-key list shape.
type leakSigner struct {
	id   string
	key  *ecdsa.PrivateKey
	file string
}

func newLeakSigner(t *testing.T) *leakSigner {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	der, err := x509.MarshalPKIXPublicKey(&key.PublicKey)
	if err != nil {
		t.Fatal(err)
	}
	l := &leakSigner{id: "90a421169f0a406205f1563a953312f0be898d3c7b6c06b681aa86a874555f4a", key: key, file: filepath.Join(t.TempDir(), "secret_scanning.json")}
	list := map[string]any{"public_keys": []map[string]any{{
		"key_identifier": l.id, "key": string(pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: der})), "is_current": true,
	}}}
	b, _ := json.Marshal(list)
	if err := os.WriteFile(l.file, b, 0o600); err != nil {
		t.Fatal(err)
	}
	return l
}

func (l *leakSigner) headers(body []byte) map[string]string {
	d := sha256.Sum256(body)
	sig, err := ecdsa.SignASN1(rand.Reader, l.key, d[:])
	if err != nil {
		panic(err)
	}
	return map[string]string{"Github-Public-Key-Identifier": l.id, "Github-Public-Key-Signature": base64.StdEncoding.EncodeToString(sig)}
}

func leakBody(tokens ...string) []byte {
	var entries []map[string]string
	for _, tok := range tokens {
		entries = append(entries, map[string]string{"token": tok, "type": "telapi_api_key", "url": "https://github.com/octo/repo/blob/main/.env", "source": "content"})
	}
	b, _ := json.Marshal(entries)
	return b
}

// verifyCode asks POST /v1/keys/verify as a node.
func verifyCode(t *testing.T, s *testService, key string) string {
	t.Helper()
	r := s.do("POST", "/v1/keys/verify", s.token(auth.RoleNode, ""), map[string]any{"key": key, "scope": "READ_TEAM_APPS"})
	if r.status != 200 {
		t.Fatalf("verify: %d %s", r.status, r.body)
	}
	return r.json(t)["code"].(string)
}

// keyIn returns the key id of team's list, nil if absent.
func keyIn(t *testing.T, s *testService, team, id string) map[string]any {
	t.Helper()
	r := s.do("GET", "/v1/teams/"+team+"/api-keys", s.token(auth.RoleSuperadmin, ""), nil)
	for _, k := range r.json(t)["keys"].([]any) {
		if k := k.(map[string]any); k["id"] == id {
			return k
		}
	}
	return nil
}

func TestKeyLifecycle(t *testing.T) {
	leaks := newLeakSigner(t)
	s := startService(t, func(c *service.Config) { c.LeakReportKeys = leaks.file })
	sa, aud, mem, other := s.token(auth.RoleSuperadmin, ""), s.token(auth.RoleAuditor, ""), s.token(auth.RoleMember, "acme"), s.token(auth.RoleMember, "globex")
	s.configureTeam("acme", true, 2, nil)
	s.configureTeam("globex", true, 2, nil)
	keys := "/v1/teams/acme/api-keys"
	create := func(body map[string]any) response {
		if body["scopes"] == nil {
			body["scopes"] = []string{"READ_TEAM_APPS"}
		}
		return s.do("POST", keys, mem, body)
	}

	t.Run("expiry", func(t *testing.T) {
		s := s.withT(t)
		for name, at := range map[string]string{
			"in the past":         time.Now().Add(-time.Minute).UTC().Format(time.RFC3339),
			"more than a year on": time.Now().Add(366 * 24 * time.Hour).UTC().Format(time.RFC3339),
		} {
			expectProblem(t, create(map[string]any{"name": name, "expires_at": at}), 422, "invalid_expires_at")
		}
		expectProblem(t, create(map[string]any{"name": "x", "expires_at": "tomorrow"}), 400, "invalid_request")
		expectProblem(t, create(map[string]any{"name": "x", "expires_at": 12}), 400, "invalid_request")
		at := time.Now().Add(time.Hour).UTC().Truncate(time.Second)
		r := create(map[string]any{"name": "expiring", "expires_at": at.Format(time.RFC3339)})
		if r.status != 201 {
			t.Fatalf("create with expiry: %d %s", r.status, r.body)
		}
		k := r.json(t)
		if got, _ := time.Parse(time.RFC3339Nano, k["expires_at"].(string)); !got.Equal(at) || k["expired"] != false || k["enabled"] != true {
			t.Fatalf("created: %s", r.body)
		}
		if c := verifyCode(t, s, k["key"].(string)); c != "VALID" {
			t.Fatalf("a key before its expiry: %s", c)
		}
		if l := keyIn(t, s, "acme", k["id"].(string)); l["expires_at"] != k["expires_at"] || l["expired"] != false {
			t.Fatalf("listed: %v", l)
		}
		s.deleteKey("acme", k["id"].(string))
	})

	var kept map[string]any // a key that stays, for the later steps
	t.Run("roll", func(t *testing.T) {
		s := s.withT(t)
		old := create(map[string]any{"name": "backend", "scopes": []string{"READ_TEAM_APPS", "CREATE_CALL_TOKEN"}}).json(t)
		oldID := old["id"].(string)
		roll := "/v1/teams/acme/api-keys/" + oldID + "/roll"
		s.expectRefusals(t, []refusal{
			{"POST", roll, "", map[string]any{"grace_seconds": 60}, 401, "unauthorized"},
			{"POST", roll, aud, map[string]any{"grace_seconds": 60}, 403, "forbidden"},
			{"POST", roll, other, map[string]any{"grace_seconds": 60}, 403, "forbidden"},
			{"POST", roll, mem, map[string]any{}, 400, "invalid_request"},
			{"POST", roll, mem, map[string]any{"grace_seconds": -1}, 400, "invalid_request"},
			{"POST", roll, mem, map[string]any{"grace_seconds": 2592001}, 400, "invalid_request"},
			{"POST", roll, mem, map[string]any{"grace_seconds": "1h"}, 400, "invalid_request"},
			{"POST", roll, mem, map[string]any{"grace_seconds": 1, "extra": 1}, 400, "invalid_request"},
			{"POST", "/v1/teams/acme/api-keys/key_01JBQ3V9P8D1XG7S3M6Y2N4K5T/roll", mem, map[string]any{"grace_seconds": 1}, 404, "not_found"},
			{"POST", "/v1/teams/globex/api-keys/" + oldID + "/roll", s.token(auth.RoleMember, "globex"), map[string]any{"grace_seconds": 1}, 404, "not_found"},
		})
		r := s.do("POST", roll, mem, map[string]any{"grace_seconds": 3600})
		if r.status != 201 {
			t.Fatalf("roll: %d %s", r.status, r.body)
		}
		if r.header.Get("Cache-Control") != "no-store" {
			t.Fatal("a roll's answer holds a secret and must not be stored")
		}
		nk := r.json(t)
		if nk["replaces"] != oldID || nk["name"] != "backend" || apikey.Parse(nk["key"].(string)) != nil ||
			strings.Join(strs(nk["scopes"]), ",") != "CREATE_CALL_TOKEN,READ_TEAM_APPS" {
			t.Fatalf("rolled: %s", r.body)
		}
		for _, k := range []string{old["key"].(string), nk["key"].(string)} {
			if c := verifyCode(t, s, k); c != "VALID" {
				t.Fatalf("during the grace period, a key of the pair answers %s", c)
			}
		}
		o := keyIn(t, s, "acme", oldID)
		until, _ := time.Parse(time.RFC3339Nano, o["expires_at"].(string))
		if o["replaced_by"] != nk["id"] || until.Sub(time.Now()) < 59*time.Minute || until.Sub(time.Now()) > time.Hour {
			t.Fatalf("the old key after a roll with an hour's grace: %v", o)
		}
		// The pair counts as one against max_keys (2): one more fits.
		stats := s.do("GET", keys, mem, nil).json(t)["stats"].(map[string]any)
		if stats["keys"] != 1.0 {
			t.Fatalf("a rolled pair counts %v keys", stats["keys"])
		}
		kept = create(map[string]any{"name": "second"}).json(t)
		expectProblem(t, create(map[string]any{"name": "third"}), 409, "max_keys_reached")
		expectProblem(t, s.do("POST", roll, mem, map[string]any{"grace_seconds": 0}), 409, "key_already_rolled")
		// A roll with no grace: the old key is refused when the answer comes.
		r = s.do("POST", "/v1/teams/acme/api-keys/"+nk["id"].(string)+"/roll", sa, map[string]any{"grace_seconds": 0})
		if r.status != 201 || r.header.Get("Telkeys-Nodes-Confirmed") == "" {
			t.Fatalf("roll without grace: %d %v %s", r.status, r.header, r.body)
		}
		if c := verifyCode(t, s, nk["key"].(string)); c != "EXPIRED" {
			t.Fatalf("a key rolled without grace answers %s", c)
		}
		expectProblem(t, s.do("POST", "/v1/teams/acme/api-keys/"+nk["id"].(string)+"/roll", mem, map[string]any{"grace_seconds": 0}), 409, "key_already_rolled")
		for _, id := range []string{oldID, nk["id"].(string), r.json(t)["id"].(string)} {
			s.deleteKey("acme", id)
		}
	})

	t.Run("disable and enable", func(t *testing.T) {
		s := s.withT(t)
		id := kept["id"].(string)
		path := "/v1/teams/acme/api-keys/" + id
		s.expectRefusals(t, []refusal{
			{"PATCH", path, "", map[string]any{"enabled": false}, 401, "unauthorized"},
			{"PATCH", path, aud, map[string]any{"enabled": false}, 403, "forbidden"},
			{"PATCH", path, other, map[string]any{"enabled": false}, 403, "forbidden"},
			{"PATCH", path, mem, map[string]any{}, 400, "invalid_request"},
			{"PATCH", path, mem, map[string]any{"enabled": "no"}, 400, "invalid_request"},
			{"PATCH", path, mem, map[string]any{"name": ""}, 400, "invalid_request"},
			{"PATCH", path, mem, map[string]any{"enabled": false, "scopes": []string{}}, 400, "invalid_request"},
			{"PATCH", "/v1/teams/acme/api-keys/key_01JBQ3V9P8D1XG7S3M6Y2N4K5T", mem, map[string]any{"enabled": false}, 404, "not_found"},
		})
		r := s.do("PATCH", path, mem, map[string]any{"enabled": false})
		if r.status != 200 || r.json(t)["enabled"] != false || r.header.Get("Telkeys-Nodes-Confirmed") == "" {
			t.Fatalf("disable: %d %v %s", r.status, r.header, r.body)
		}
		if c := verifyCode(t, s, kept["key"].(string)); c != "DISABLED" {
			t.Fatalf("a disabled key answers %s", c)
		}
		if l := keyIn(t, s, "acme", id); l["enabled"] != false {
			t.Fatalf("listed: %v", l)
		}
		r = s.do("PATCH", path, sa, map[string]any{"enabled": true, "name": "  renamed  "})
		if k := r.json(t); r.status != 200 || k["enabled"] != true || k["name"] != "renamed" {
			t.Fatalf("enable and rename: %d %s", r.status, r.body)
		}
		if c := verifyCode(t, s, kept["key"].(string)); c != "VALID" {
			t.Fatalf("an enabled key answers %s", c)
		}
	})

	t.Run("leak reports", func(t *testing.T) {
		s := s.withT(t)
		ours := kept["key"].(string)
		notOurs, _ := apikey.Generate()
		body := leakBody(ours, notOurs)
		path := "/v1/leaks/github"
		bad := leaks.headers([]byte("another body"))
		unknown := leaks.headers(body)
		unknown["Github-Public-Key-Identifier"] = "not-a-known-key"
		for name, hdr := range map[string]map[string]string{
			"no signature":      {},
			"a bad signature":   bad,
			"an unknown key id": unknown,
			"garbage signature": {"Github-Public-Key-Identifier": leaks.id, "Github-Public-Key-Signature": "%%%"},
		} {
			t.Run(name, func(t *testing.T) {
				expectProblem(t, s.send("POST", path, hdr, body), 401, "bad_signature")
			})
		}
		if c := verifyCode(t, s, ours); c != "VALID" {
			t.Fatalf("refused reports revoked the key: %s", c)
		}
		for name, b := range map[string][]byte{"not JSON": []byte("{"), "an object": []byte(`{"token":"x"}`), "no token": []byte(`[{"url":"x"}]`)} {
			t.Run(name, func(t *testing.T) {
				expectProblem(t, s.send("POST", path, leaks.headers(b), b), 400, "invalid_request")
			})
		}
		// A bad entry refuses the whole report: the good one before it is
		// not acted on.
		half, _ := json.Marshal([]map[string]string{{"token": ours, "url": "https://example.com/ok"}, {"token": notOurs, "url": strings.Repeat("u", 3000)}})
		expectProblem(t, s.send("POST", path, leaks.headers(half), half), 400, "invalid_request")
		if c := verifyCode(t, s, ours); c != "VALID" {
			t.Fatalf("a refused report revoked a key: %s", c)
		}
		huge := append([]byte(`[{"token":"`), append([]byte(strings.Repeat("a", 1<<20)), `"}]`...)...)
		expectProblem(t, s.send("POST", path, leaks.headers(huge), huge), 400, "invalid_request")

		events := s.eventCount()
		r := s.send("POST", path, leaks.headers(body), body)
		if r.status != 200 {
			t.Fatalf("a signed report: %d %s", r.status, r.body)
		}
		if strings.Contains(string(r.body), ours) || strings.Contains(string(r.body), notOurs) {
			t.Fatal("the feedback echoes a token")
		}
		var fb []map[string]string
		if err := json.Unmarshal(r.body, &fb); err != nil || len(fb) != 2 {
			t.Fatalf("feedback: %s", r.body)
		}
		for i, want := range []struct{ token, label string }{{ours, "true_positive"}, {notOurs, "false_positive"}} {
			h := sha256.Sum256([]byte(want.token))
			if fb[i]["token_hash"] != hex.EncodeToString(h[:]) || fb[i]["label"] != want.label || fb[i]["token_type"] != "telapi_api_key" {
				t.Fatalf("feedback %d: %v, want %s", i, fb[i], want.label)
			}
		}
		if c := verifyCode(t, s, ours); c != "NOT_FOUND" {
			t.Fatalf("a leaked key answers %s after the report's answer", c)
		}
		if s.eventCount() != events+1 {
			t.Fatalf("%d events for one leaked key", s.eventCount()-events)
		}
		list := s.do("GET", keys, mem, nil).json(t)
		banner := list["leaks"].([]any)
		if len(banner) != 1 || keyIn(t, s, "acme", kept["id"].(string)) != nil {
			t.Fatalf("after the report: leaks %v, key still listed: %v", banner, keyIn(t, s, "acme", kept["id"].(string)))
		}
		if l := banner[0].(map[string]any); l["key_id"] != kept["id"] || l["name"] != "renamed" || l["url"] != "https://github.com/octo/repo/blob/main/.env" || l["revoked"] != true || l["reporter"] != "github" {
			t.Fatalf("leak: %v", l)
		}
		// The same report again changes nothing.
		r = s.send("POST", path, leaks.headers(body), body)
		if r.status != 200 || s.eventCount() != events+1 {
			t.Fatalf("a replayed report: %d %s, %d events", r.status, r.body, s.eventCount()-events)
		}
	})
}

// With --leak-action flag, a report marks the key and leaves it working.
func TestLeakReportThatOnlyFlags(t *testing.T) {
	leaks := newLeakSigner(t)
	s := startService(t, func(c *service.Config) { c.LeakReportKeys, c.LeakAction = leaks.file, "flag" })
	s.configureTeam("acme", true, 2, nil)
	k := s.createKey("acme", "flagged")
	body := leakBody(k["key"].(string))
	events := s.eventCount()
	for range 2 { // the second is a replay: recorded once
		if r := s.send("POST", "/v1/leaks/github", leaks.headers(body), body); r.status != 200 || !strings.Contains(string(r.body), "true_positive") {
			t.Fatalf("report: %d %s", r.status, r.body)
		}
	}
	if n := s.eventCount() - events; n != 1 {
		t.Fatalf("%d events for one leak reported twice", n)
	}
	if c := verifyCode(t, s, k["key"].(string)); c != "VALID" {
		t.Fatalf("a flagged key answers %s", c)
	}
	if l, _ := keyIn(t, s, "acme", k["id"].(string))["leak"].(map[string]any); l == nil || l["revoked"] != false {
		t.Fatalf("the key's leak: %v", l)
	}
}

// Without --leak-report-keys there is no leak route.
func TestLeakReportsOff(t *testing.T) {
	s := startService(t)
	body := leakBody("tk_x")
	expectProblem(t, s.send("POST", "/v1/leaks/github", map[string]string{"Github-Public-Key-Identifier": "k", "Github-Public-Key-Signature": "c2ln"}, body), 404, "not_found")
}
