package e2e

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"regexp"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/telapi/telkeys/auth"
	"github.com/telapi/telkeys/commands"
)

// TestRevocationAcrossProcesses runs telkeys serve and three telapi-node
// processes, each with its own NATS connection. A key that works on all
// three is deleted; every node must refuse it within a deadline, and keep
// refusing it. Then one node is checked for every other status mapping:
// team disabled, insufficient scope, webrtc off, the daily limit and the
// webhook signature.
func TestRevocationAcrossProcesses(t *testing.T) {
	c := startChild(t, t.TempDir())
	if c.natsURL == "" {
		t.Fatal("telkeys child did not log its embedded NATS client_url")
	}
	s := &testService{t: t, base: c.base}
	s.auth, _ = auth.New([]byte(testSecret), commands.ValidTeamID)

	const webhookSecret = "webhook-secret-for-tests"
	nodes := make([]*nodeChild, 3)
	for i := range nodes {
		nodes[i] = launchNodeChild(t, fmt.Sprintf("node-%d", i+1), "--nats-url", c.natsURL,
			"--http-addr", "127.0.0.1:0", "--max-staleness", "5s", "--webhook-secret", webhookSecret)
	}
	s.waitReady()
	apis := make([]*nodeAPI, len(nodes))
	for i, n := range nodes {
		apis[i] = newNodeAPI(t, n.name, n.waitListening(t, 30*time.Second))
	}

	// A key that works on every node. The team has no daily limit, so the
	// polling below never runs into it.
	s.configureTeam("acme", true, 100, nil)
	k := s.createKey("acme", "revoke-me")
	key, id := k["key"].(string), k["id"].(string)
	for _, n := range apis {
		pollNode(t, 10*time.Second, n.name+" accepts the new key",
			func() (response, error) { return n.apps(key) }, "200", "401 invalid_api_key")
	}

	// DELETE, then poll every node at once from the moment the response is
	// back. Each poller's connection is already open (kept alive above).
	type result struct {
		refusedAt time.Time
		accepted  int // 200s after the DELETE response
		err       error
	}
	results := make([]result, len(apis))
	start := make(chan struct{})
	var t0 time.Time
	var wg sync.WaitGroup
	for i, n := range apis {
		wg.Add(1)
		go func() {
			defer wg.Done()
			<-start
			deadline := t0.Add(10 * time.Second)
			for {
				r, err := n.apps(key)
				now := time.Now()
				if err != nil {
					results[i].err = err
					return
				}
				switch o := outcome(r); o {
				case "200":
					results[i].accepted++
				case "401 invalid_api_key":
					results[i].refusedAt = now
					return
				default:
					results[i].err = fmt.Errorf("answered %s: %s", o, r.body)
					return
				}
				if now.After(deadline) {
					results[i].err = errors.New("still accepts the key 10s after the DELETE response")
					return
				}
			}
		}()
	}
	s.deleteKey("acme", id)
	t0 = time.Now()
	close(start)
	wg.Wait()
	for i, r := range results {
		if r.err != nil {
			t.Fatalf("%s after the DELETE: %v", apis[i].name, r.err)
		}
		if r.accepted == 0 {
			t.Logf("%s: refused the key at its first request after the DELETE response (answer in at +%v)",
				apis[i].name, r.refusedAt.Sub(t0))
		} else {
			t.Logf("%s: first refusal %v after the DELETE response (answer in; %d × 200 before it)",
				apis[i].name, r.refusedAt.Sub(t0), r.accepted)
		}
	}

	// Every node keeps refusing it, by either header and on every route,
	// across more than a heartbeat and a usage and last-used flush.
	keepUntil := time.Now().Add(1500 * time.Millisecond)
	errs := make([]error, len(apis))
	counts := make([]int, len(apis))
	for i, n := range apis {
		wg.Add(1)
		go func() {
			defer wg.Done()
			reqs := []func() (response, error){
				func() (response, error) { return n.apps(key) },
				func() (response, error) {
					return n.send("GET", "/api/v1/apps", map[string]string{"Authorization": "Bearer " + key}, nil)
				},
				func() (response, error) {
					return n.send("POST", "/api/v1/call-tokens", map[string]string{"X-API-Key": key}, nil)
				},
				func() (response, error) {
					return n.send("GET", "/api/v1/call-tokens/ct_1", map[string]string{"X-API-Key": key}, nil)
				},
			}
			for j := 0; time.Now().Before(keepUntil); j++ {
				r, err := reqs[j%len(reqs)]()
				if err != nil {
					errs[i] = err
					return
				}
				if o := outcome(r); o != "401 invalid_api_key" {
					errs[i] = fmt.Errorf("request %d after refusing: %s: %s", j, o, r.body)
					return
				}
				counts[i]++
			}
		}()
	}
	wg.Wait()
	for i, err := range errs {
		if err != nil {
			t.Fatalf("%s: %v", apis[i].name, err)
		}
	}
	t.Logf("after the first refusal, the nodes refused the key %v more times over 1.5 s", counts)
	if r := s.do("POST", "/v1/keys/verify", s.token(auth.RoleNode, ""), map[string]any{"key": key, "scope": "READ_TEAM_APPS"}); r.status != 200 || r.json(t)["code"] != "NOT_FOUND" {
		t.Fatalf("telkeys' own verify of the deleted key: %d %s", r.status, r.body)
	}

	// The other status mappings, on one node.
	n := apis[0]
	withKey := func(method, path, key string) func() (response, error) {
		return func() (response, error) { return n.send(method, path, map[string]string{"X-API-Key": key}, nil) }
	}
	mustSend := func(t *testing.T, req func() (response, error)) response {
		t.Helper()
		r, err := req()
		if err != nil {
			t.Fatal(err)
		}
		return r
	}
	parent := s
	sa := s.token(auth.RoleSuperadmin, "")

	t.Run("missing key", func(t *testing.T) {
		r := mustSend(t, withKey("GET", "/api/v1/apps", ""))
		expectProblem(t, r, 401, "missing_api_key")
		if r.header.Get("WWW-Authenticate") == "" {
			t.Fatal("401 without WWW-Authenticate")
		}
	})

	t.Run("insufficient scope", func(t *testing.T) {
		s := parent.withT(t)
		apps := s.createKey("acme", "apps-only", "READ_TEAM_APPS")["key"].(string)
		pollNode(t, 10*time.Second, "apps-only key known", withKey("GET", "/api/v1/apps", apps), "200", "401 invalid_api_key")
		expectProblem(t, mustSend(t, withKey("POST", "/api/v1/call-tokens", apps)), 403, "insufficient_scope")
		expectProblem(t, mustSend(t, withKey("GET", "/api/v1/call-tokens/ct_1", apps)), 403, "insufficient_scope")
		// A key with the scope gets through, by Authorization: Bearer.
		caller := s.createKey("acme", "caller", "CREATE_CALL_TOKEN")["key"].(string)
		pollNode(t, 10*time.Second, "call-token key accepted", func() (response, error) {
			return n.send("POST", "/api/v1/call-tokens", map[string]string{"Authorization": "Bearer " + caller}, nil)
		}, "201", "401 invalid_api_key")
		expectProblem(t, mustSend(t, withKey("GET", "/api/v1/apps", caller)), 403, "insufficient_scope")
	})

	t.Run("webrtc off", func(t *testing.T) {
		s := parent.withT(t)
		apps := s.createKey("acme", "webrtc", "READ_TEAM_APPS")["key"].(string)
		pollNode(t, 10*time.Second, "key known", withKey("GET", "/api/v1/apps", apps), "200", "401 invalid_api_key")
		t.Cleanup(func() { s.do("PUT", "/v1/platform/flags/webrtc", sa, map[string]any{"enabled": true}) }) // even on failure
		if r := s.do("PUT", "/v1/platform/flags/webrtc", sa, map[string]any{"enabled": false}); r.status != 200 {
			t.Fatalf("webrtc off: %d %s", r.status, r.body)
		}
		r := pollNode(t, 10*time.Second, "webrtc off reaches the node", withKey("GET", "/api/v1/apps", apps), "403 webrtc_disabled", "200")
		expectProblem(t, r, 403, "webrtc_disabled")
		if r := s.do("PUT", "/v1/platform/flags/webrtc", sa, map[string]any{"enabled": true}); r.status != 200 {
			t.Fatalf("webrtc on: %d %s", r.status, r.body)
		}
		pollNode(t, 10*time.Second, "webrtc on reaches the node", withKey("GET", "/api/v1/apps", apps), "200", "403 webrtc_disabled")
	})

	t.Run("team disabled", func(t *testing.T) {
		s := parent.withT(t)
		s.configureTeam("beta", true, 10, nil)
		kb := s.createKey("beta", "b")["key"].(string)
		pollNode(t, 10*time.Second, "beta key known", withKey("GET", "/api/v1/apps", kb), "200", "401 invalid_api_key")
		s.configureTeam("beta", false, 10, nil)
		r := pollNode(t, 10*time.Second, "team disable reaches the node", withKey("GET", "/api/v1/apps", kb), "403 team_api_disabled", "200")
		expectProblem(t, r, 403, "team_api_disabled")
	})

	t.Run("daily limit", func(t *testing.T) {
		s := parent.withT(t)
		limit := int64(2)
		s.configureTeam("gamma", true, 10, &limit)
		kg := s.createKey("gamma", "g", "READ_TEAM_APPS")["key"].(string)
		// Wait until the node knows the key without spending the quota: a
		// refused scope is not charged.
		pollNode(t, 10*time.Second, "gamma key known", withKey("POST", "/api/v1/call-tokens", kg), "403 insufficient_scope", "401 invalid_api_key")
		day := time.Now().UTC().YearDay()
		var rs []response
		for range 3 {
			rs = append(rs, mustSend(t, withKey("GET", "/api/v1/apps", kg)))
		}
		if time.Now().UTC().YearDay() != day {
			t.Skip("the UTC day changed during the calls; the count was reset")
		}
		for i, r := range rs[:2] {
			if r.status != 200 {
				t.Fatalf("call %d of 2 allowed: %s %s", i+1, outcome(r), r.body)
			}
			if r.header.Get("RateLimit-Policy") == "" || r.header.Get("RateLimit") == "" {
				t.Fatalf("call %d: no RateLimit headers: %v", i+1, r.header)
			}
		}
		r := rs[2]
		expectProblem(t, r, 429, "rate_limited")
		ra, err := strconv.Atoi(r.header.Get("Retry-After"))
		if err != nil || ra <= 0 || ra > 86400 {
			t.Fatalf("Retry-After %q: want a positive integer ≤ 86400", r.header.Get("Retry-After"))
		}
		if p := r.header.Get("RateLimit-Policy"); !regexp.MustCompile(`^"daily";q=2;w=86400$`).MatchString(p) {
			t.Fatalf("RateLimit-Policy %q", p)
		}
		if l := r.header.Get("RateLimit"); !regexp.MustCompile(`^"daily";r=0;t=\d+$`).MatchString(l) {
			t.Fatalf("RateLimit %q", l)
		}
		t.Logf("429 with Retry-After %d, RateLimit-Policy %s, RateLimit %s", ra, r.header.Get("RateLimit-Policy"), r.header.Get("RateLimit"))
	})

	t.Run("webhook signature", func(t *testing.T) {
		s := parent.withT(t)
		body := []byte(`{"event":"call.ended","id":"call_1"}`)
		mac := hmac.New(sha256.New, []byte(webhookSecret))
		mac.Write(body)
		good := "sha256=" + hex.EncodeToString(mac.Sum(nil))
		wrongMac := hmac.New(sha256.New, []byte("another secret"))
		wrongMac.Write(body)
		for _, hdr := range []map[string]string{
			nil,
			{"X-Telapi-Signature": "sha256=" + hex.EncodeToString(wrongMac.Sum(nil))},
			{"X-Telapi-Signature": "sha256=zz"},
			{"X-Telapi-Signature": good[len("sha256="):]}, // no prefix
			{"X-Telapi-Signature": "sha256=" + hex.EncodeToString(wrongMac.Sum(nil)), "X-API-Key": kValid(t, s)},
		} {
			r, err := n.send("POST", "/api/v1/webhooks", hdr, body)
			if err != nil {
				t.Fatal(err)
			}
			expectProblem(t, r, 401, "invalid_signature")
		}
		// The right signature is enough: no API key, or a deleted one.
		for _, hdr := range []map[string]string{
			{"X-Telapi-Signature": good},
			{"X-Telapi-Signature": good, "X-API-Key": key},
		} {
			r, err := n.send("POST", "/api/v1/webhooks", hdr, body)
			if err != nil {
				t.Fatal(err)
			}
			if r.status != 202 {
				t.Fatalf("signed webhook with headers %v: %s %s", hdr, outcome(r), r.body)
			}
		}
	})
}

// kValid creates a working key of acme; a valid API key must not stand in
// for a webhook signature.
func kValid(t *testing.T, s *testService) string {
	t.Helper()
	return s.createKey("acme", "webhook-probe")["key"].(string)
}

// withT is s reporting to t, for use in a subtest.
func (s *testService) withT(t testing.TB) *testService {
	c := *s
	c.t = t
	return &c
}
