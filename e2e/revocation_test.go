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
	"github.com/telapi/telkeys/bus"
)

// Revocation across processes, and every status a node maps a key check
// to, seen by a client of real telapi-node processes.

const webhookSecret = "webhook-secret-for-tests"

// TestRevocationAcrossProcesses runs telkeys serve and three telapi-node
// processes, each with its own NATS connection. A key that works on all
// three is deleted; every node must refuse it within a deadline, and keep
// refusing it. Then one node is checked for every other status mapping:
// team disabled, insufficient scope, webrtc off, the daily limit and the
// webhook signature.
func TestRevocationAcrossProcesses(t *testing.T) {
	s, apis := startNodeCluster(t, 3)

	// A key that works on every node. The team has no daily limit, so the
	// polling below never runs into it.
	s.configureTeam("acme", true, 100, nil)
	k := s.createKey("acme", "revoke-me")
	key, id := k["key"].(string), k["id"].(string)
	for _, n := range apis {
		pollNode(t, 10*time.Second, n.name+" accepts the new key",
			func() (response, error) { return n.apps(key) }, "200", "401 invalid_api_key")
	}

	expectFirstRefusals(t, apis, key, func() { s.deleteKey("acme", id) })
	expectKeepRefusing(t, apis, key, 1500*time.Millisecond)
	if r := s.do("POST", "/v1/keys/verify", s.token(auth.RoleNode, ""), map[string]any{"key": key, "scope": "READ_TEAM_APPS"}); r.status != 200 || r.json(t)["code"] != "NOT_FOUND" {
		t.Fatalf("telkeys' own verify of the deleted key: %d %s", r.status, r.body)
	}

	m := &statusMappings{s: s, n: apis[0], deletedKey: key, sa: s.token(auth.RoleSuperadmin, "")}
	for _, c := range []struct {
		name string
		run  func(*testing.T)
	}{
		{"missing key", m.missingKey},
		{"insufficient scope", m.insufficientScope},
		{"webrtc off", m.webrtcOff},
		{"team disabled", m.teamDisabled},
		{"daily limit", m.dailyLimit},
		{"webhook signature", m.webhookSignature},
	} {
		t.Run(c.name, c.run)
	}
}

// startNodeCluster starts telkeys serve and n telapi-node processes on its
// NATS, each with its own connection, and waits until all listen.
func startNodeCluster(t *testing.T, n int) (*testService, []*nodeAPI) {
	t.Helper()
	c := startTelkeysProcess(t, t.TempDir())
	nodes := make([]*process, n)
	for i := range nodes {
		nodes[i] = startNodeProcess(t, fmt.Sprintf("node-%d", i+1), "--nats-url", c.natsURL, "--nats-creds", natsCreds(t, c.dataDir, bus.RoleNode),
			"--events-public-key", eventsKeyFile(t, c.dataDir),
			"--http-addr", "127.0.0.1:0", "--max-staleness", "5s", "--webhook-secret", webhookSecret)
	}
	s := serviceAt(t, c.base)
	apis := make([]*nodeAPI, n)
	for i, p := range nodes {
		apis[i] = newNodeAPI(t, p.name, p.waitListening(t, 30*time.Second))
	}
	return s, apis
}

// expectFirstRefusals runs del, then polls every node at once from the
// moment it returns until each refuses key, within 10 s. Each poller's
// connection is already open (kept alive by the caller's requests).
func expectFirstRefusals(t *testing.T, apis []*nodeAPI, key string, del func()) {
	t.Helper()
	type result struct {
		refusedAt time.Time
		accepted  int // 200s after del returned
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
	del()
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
}

// expectKeepRefusing checks that every node refuses a deleted key, by
// either header and on every route, for d: set it past a heartbeat and a
// usage and last-used flush, which could bring a stale entry back.
func expectKeepRefusing(t *testing.T, apis []*nodeAPI, key string, d time.Duration) {
	t.Helper()
	keepUntil := time.Now().Add(d)
	errs := make([]error, len(apis))
	counts := make([]int, len(apis))
	var wg sync.WaitGroup
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
	t.Logf("after the first refusal, the nodes refused the key %v more times over %v", counts, d)
}

// statusMappings checks, on one node, each status a key check maps to.
// The subtests share the service and run in order: webrtc off turns the
// flag back on before team disabled runs.
type statusMappings struct {
	s          *testService
	n          *nodeAPI
	deletedKey string
	sa         string // a superadmin token
}

func (m *statusMappings) withKey(method, path, key string) func() (response, error) {
	return func() (response, error) { return m.n.send(method, path, map[string]string{"X-API-Key": key}, nil) }
}

func mustSend(t *testing.T, req func() (response, error)) response {
	t.Helper()
	r, err := req()
	if err != nil {
		t.Fatal(err)
	}
	return r
}

func (m *statusMappings) missingKey(t *testing.T) {
	r := mustSend(t, m.withKey("GET", "/api/v1/apps", ""))
	expectProblem(t, r, 401, "missing_api_key")
	if r.header.Get("WWW-Authenticate") == "" {
		t.Fatal("401 without WWW-Authenticate")
	}
}

func (m *statusMappings) insufficientScope(t *testing.T) {
	s := m.s.withT(t)
	apps := s.createKey("acme", "apps-only", "READ_TEAM_APPS")["key"].(string)
	pollNode(t, 10*time.Second, "apps-only key known", m.withKey("GET", "/api/v1/apps", apps), "200", "401 invalid_api_key")
	expectProblem(t, mustSend(t, m.withKey("POST", "/api/v1/call-tokens", apps)), 403, "insufficient_scope")
	expectProblem(t, mustSend(t, m.withKey("GET", "/api/v1/call-tokens/ct_1", apps)), 403, "insufficient_scope")
	// A key with the scope gets through, by Authorization: Bearer.
	caller := s.createKey("acme", "caller", "CREATE_CALL_TOKEN")["key"].(string)
	pollNode(t, 10*time.Second, "call-token key accepted", func() (response, error) {
		return m.n.send("POST", "/api/v1/call-tokens", map[string]string{"Authorization": "Bearer " + caller}, nil)
	}, "201", "401 invalid_api_key")
	expectProblem(t, mustSend(t, m.withKey("GET", "/api/v1/apps", caller)), 403, "insufficient_scope")
}

func (m *statusMappings) webrtcOff(t *testing.T) {
	s := m.s.withT(t)
	apps := s.createKey("acme", "webrtc", "READ_TEAM_APPS")["key"].(string)
	pollNode(t, 10*time.Second, "key known", m.withKey("GET", "/api/v1/apps", apps), "200", "401 invalid_api_key")
	t.Cleanup(func() { s.do("PUT", "/v1/platform/flags/webrtc", m.sa, map[string]any{"enabled": true}) }) // even on failure
	if r := s.do("PUT", "/v1/platform/flags/webrtc", m.sa, map[string]any{"enabled": false}); r.status != 200 {
		t.Fatalf("webrtc off: %d %s", r.status, r.body)
	}
	r := pollNode(t, 10*time.Second, "webrtc off reaches the node", m.withKey("GET", "/api/v1/apps", apps), "403 webrtc_disabled", "200")
	expectProblem(t, r, 403, "webrtc_disabled")
	if r := s.do("PUT", "/v1/platform/flags/webrtc", m.sa, map[string]any{"enabled": true}); r.status != 200 {
		t.Fatalf("webrtc on: %d %s", r.status, r.body)
	}
	pollNode(t, 10*time.Second, "webrtc on reaches the node", m.withKey("GET", "/api/v1/apps", apps), "200", "403 webrtc_disabled")
}

func (m *statusMappings) teamDisabled(t *testing.T) {
	s := m.s.withT(t)
	s.configureTeam("beta", true, 10, nil)
	kb := s.createKey("beta", "b")["key"].(string)
	pollNode(t, 10*time.Second, "beta key known", m.withKey("GET", "/api/v1/apps", kb), "200", "401 invalid_api_key")
	s.configureTeam("beta", false, 10, nil)
	r := pollNode(t, 10*time.Second, "team disable reaches the node", m.withKey("GET", "/api/v1/apps", kb), "403 team_api_disabled", "200")
	expectProblem(t, r, 403, "team_api_disabled")
}

func (m *statusMappings) dailyLimit(t *testing.T) {
	s := m.s.withT(t)
	s.configureTeam("gamma", true, 10, new(int64(2)))
	kg := s.createKey("gamma", "g", "READ_TEAM_APPS")["key"].(string)
	// Wait until the node knows the key without spending the quota: a
	// refused scope is not charged.
	pollNode(t, 10*time.Second, "gamma key known", m.withKey("POST", "/api/v1/call-tokens", kg), "403 insufficient_scope", "401 invalid_api_key")
	day := time.Now().UTC().YearDay()
	var rs []response
	for range 3 {
		rs = append(rs, mustSend(t, m.withKey("GET", "/api/v1/apps", kg)))
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
}

func (m *statusMappings) webhookSignature(t *testing.T) {
	s := m.s.withT(t)
	body := []byte(`{"event":"call.ended","id":"call_1"}`)
	sign := func(secret string) string {
		mac := hmac.New(sha256.New, []byte(secret))
		mac.Write(body)
		return "sha256=" + hex.EncodeToString(mac.Sum(nil))
	}
	good, wrong := sign(webhookSecret), sign("another secret")
	// A valid API key must not stand in for a webhook signature.
	valid := s.createKey("acme", "webhook-probe")["key"].(string)
	for _, hdr := range []map[string]string{
		nil,
		{"X-Telapi-Signature": wrong},
		{"X-Telapi-Signature": "sha256=zz"},
		{"X-Telapi-Signature": good[len("sha256="):]}, // no prefix
		{"X-Telapi-Signature": wrong, "X-API-Key": valid},
	} {
		expectProblem(t, mustSend(t, func() (response, error) { return m.n.send("POST", "/api/v1/webhooks", hdr, body) }), 401, "invalid_signature")
	}
	// The right signature is enough: no API key, or a deleted one.
	for _, hdr := range []map[string]string{
		{"X-Telapi-Signature": good},
		{"X-Telapi-Signature": good, "X-API-Key": m.deletedKey},
	} {
		r := mustSend(t, func() (response, error) { return m.n.send("POST", "/api/v1/webhooks", hdr, body) })
		if r.status != 202 {
			t.Fatalf("signed webhook with headers %v: %s %s", hdr, outcome(r), r.body)
		}
	}
}
