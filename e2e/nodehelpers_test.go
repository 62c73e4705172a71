package e2e

import (
	"bytes"
	"encoding/json"
	"fmt"
	"net/http"
	"os/exec"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/telapi/telkeys/auth"
)

// Helpers shared by the tests and benchmarks that drive TelAPI nodes
// (package cmd/telapi-node/node) against telkeys.

// configureTeam sets a team's API access as a superadmin. perDay nil means
// no daily limit.
func (s *testService) configureTeam(team string, enabled bool, maxKeys int, perDay *int64, scopes ...string) {
	s.t.Helper()
	if len(scopes) == 0 {
		scopes = []string{"CREATE_CALL_TOKEN", "READ_CALL_TOKEN", "READ_TEAM_APPS"}
	}
	body := map[string]any{"enabled": enabled, "allowed_scopes": scopes, "max_keys": maxKeys}
	if perDay != nil {
		body["max_requests_per_day"] = *perDay
	}
	r := s.do("PUT", "/v1/teams/"+team+"/api-access", s.token(auth.RoleSuperadmin, ""), body)
	if r.status != 200 {
		s.t.Fatalf("configure %s: %d %s", team, r.status, r.body)
	}
}

// deleteKey deletes a key as a member of its team and returns when the
// DELETE response has arrived.
func (s *testService) deleteKey(team, id string) {
	s.t.Helper()
	if r := s.do("DELETE", "/v1/teams/"+team+"/api-keys/"+id, s.token(auth.RoleMember, team), nil); r.status != 204 {
		s.t.Fatalf("delete %s: %d %s", id, r.status, r.body)
	}
}

// nodeAPI talks to one TelAPI node over its own keep-alive connections. It
// never fails the test itself, so goroutines may use it.
type nodeAPI struct {
	name   string
	base   string
	client *http.Client
}

func newNodeAPI(t testing.TB, name, addr string) *nodeAPI {
	tr := &http.Transport{MaxIdleConnsPerHost: 4}
	t.Cleanup(tr.CloseIdleConnections)
	return &nodeAPI{name: name, base: "http://" + addr, client: &http.Client{Transport: tr, Timeout: 5 * time.Second}}
}

func (n *nodeAPI) send(method, path string, hdr map[string]string, body []byte) (response, error) {
	return sendRequest(n.client, method, n.base+path, hdr, body)
}

// apps is GET /api/v1/apps (READ_TEAM_APPS) with the key in X-API-Key.
func (n *nodeAPI) apps(key string) (response, error) {
	return n.send("GET", "/api/v1/apps", map[string]string{"X-API-Key": key}, nil)
}

// outcome is "200", or "401 invalid_api_key" and the like for a problem.
func outcome(r response) string {
	var p struct{ Code string }
	if r.status >= 400 && json.Unmarshal(r.body, &p) == nil && p.Code != "" {
		return fmt.Sprintf("%d %s", r.status, p.Code)
	}
	return fmt.Sprint(r.status)
}

// pollNode sends req until it gives want, failing the test at the deadline.
// Every other outcome must be in allowed (nil: anything goes).
func pollNode(t testing.TB, within time.Duration, what string, req func() (response, error), want string, allowed ...string) response {
	t.Helper()
	deadline := time.Now().Add(within)
	var last string
	for {
		r, err := req()
		if err != nil {
			last = err.Error()
		} else {
			last = outcome(r)
			if last == want {
				return r
			}
			if allowed != nil && !contains(allowed, last) {
				t.Fatalf("%s: got %s (body %s), want %s or one of %v", what, last, r.body, want, allowed)
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: no %s within %v; last answer %s", what, want, within, last)
		}
		<-time.After(2 * time.Millisecond) // pace the observations
	}
}

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}

// listenWatcher is an io.Writer for a JSON log: it keeps every line and
// sends the addr of the first {"msg":"http listening"} line on addr.
type listenWatcher struct {
	logs    syncBuffer
	mu      sync.Mutex
	partial []byte
	addr    chan string
	sent    bool
}

func newListenWatcher() *listenWatcher { return &listenWatcher{addr: make(chan string, 1)} }

func (w *listenWatcher) Write(p []byte) (int, error) {
	_, _ = w.logs.Write(p)
	w.mu.Lock()
	defer w.mu.Unlock()
	w.partial = append(w.partial, p...)
	for {
		i := bytes.IndexByte(w.partial, '\n')
		if i < 0 {
			break
		}
		line := w.partial[:i]
		var l struct{ Msg, Addr string }
		if !w.sent && json.Unmarshal(line, &l) == nil && l.Msg == "http listening" && l.Addr != "" {
			w.addr <- l.Addr
			w.sent = true
		}
		w.partial = w.partial[i+1:]
	}
	return len(p), nil
}

// nodeChild is a telapi-node running as a separate OS process.
type nodeChild struct {
	name string
	cmd  *exec.Cmd
	logs *listenWatcher
	done chan struct{}
}

// launchNodeChild starts a node process; waitListening returns its address.
func launchNodeChild(t *testing.T, name string, args ...string) *nodeChild {
	t.Helper()
	cmd := exec.Command(bin.telapiNode, append([]string{"--name", name}, args...)...)
	w := newListenWatcher()
	cmd.Stderr = w
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	n := &nodeChild{name: name, cmd: cmd, logs: w, done: make(chan struct{})}
	go func() {
		_ = cmd.Wait()
		close(n.done)
	}()
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		<-n.done
		if t.Failed() {
			t.Logf("log of %s:\n%s", name, strings.TrimSpace(w.logs.String()))
		}
	})
	return n
}

func (n *nodeChild) waitListening(t *testing.T, within time.Duration) string {
	t.Helper()
	select {
	case a := <-n.logs.addr:
		return a
	case <-n.done:
		t.Fatalf("%s exited before listening: %v\n%s", n.name, n.cmd.ProcessState, n.logs.logs.String())
	case <-time.After(within):
		t.Fatalf("%s did not listen within %v\n%s", n.name, within, n.logs.logs.String())
	}
	return ""
}
