package e2e

import (
	"context"
	"encoding/json"
	"net/http"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/telapi/telkeys/auth"
	"github.com/telapi/telkeys/bus"
	"github.com/telapi/telkeys/bus/bustest"
	"github.com/telapi/telkeys/events"
	"github.com/telapi/telkeys/service"
)

// Restarts on the same store: graceful, and a SIGKILL in the middle of
// writes. Nothing acknowledged is lost, nothing is stored twice.

func TestGracefulRestartKeepsEverything(t *testing.T) {
	dir := t.TempDir()
	onDir := func(c *service.Config) { c.DataDir = dir }
	s := startService(t, onDir)
	s.enableTeam("acme", 10)
	var ids []string
	for range 5 {
		ids = append(ids, s.createKey("acme", "k")["id"].(string))
	}
	s.deleteKey("acme", ids[0])
	if r := s.do("PUT", "/v1/platform/flags/webrtc", s.token(auth.RoleSuperadmin, ""), map[string]any{"enabled": false}); r.status != 200 {
		t.Fatalf("flag: %d", r.status)
	}
	if err := s.Shutdown(context.Background()); err != nil {
		t.Fatal(err)
	}

	s2 := startService(t, onDir)
	r := s2.do("GET", "/v1/teams/acme/api-keys", s2.token(auth.RoleMember, "acme"), nil)
	var listed []string
	for _, k := range r.json(t)["keys"].([]any) {
		listed = append(listed, k.(map[string]any)["id"].(string))
	}
	if strings.Join(listed, ",") != strings.Join(ids[1:], ",") {
		t.Fatalf("after restart: %v, want %v", listed, ids[1:])
	}
	if r := s2.do("GET", "/v1/platform/flags", s2.token(auth.RoleSuperadmin, ""), nil); r.json(t)["webrtc"] != false {
		t.Fatalf("flag lost: %s", r.body)
	}
	// The write model reloads too: max_keys still counts the four keys.
	for range 6 {
		s2.createKey("acme", "more")
	}
	expectProblem(t, s2.do("POST", "/v1/teams/acme/api-keys", s2.token(auth.RoleMember, "acme"),
		map[string]any{"name": "over", "scopes": []string{"READ_TEAM_APPS"}}), 409, "max_keys_reached")
}

// SIGKILL a telkeys process in the middle of a stream of creates, start it
// again: every create that got a 201 is listed, no event is duplicated, and
// every aggregate's hash chain is intact.
func TestSIGKILLDuringCreates(t *testing.T) {
	dir := t.TempDir()
	c := startTelkeysProcess(t, dir)
	s := serviceAt(t, c.base)
	s.enableTeam("acme", 1000)
	tok := s.token(auth.RoleMember, "acme")

	var mu sync.Mutex
	var acked []string
	client := &http.Client{Timeout: 10 * time.Second}
	stop := runWorkers(t, 4, func() bool {
		r, err := sendRequest(client, "POST", c.base+"/v1/teams/acme/api-keys", map[string]string{"Authorization": "Bearer " + tok},
			[]byte(`{"name":"k","scopes":["READ_TEAM_APPS"]}`))
		if err != nil {
			return false // the process is gone
		}
		var body struct{ ID string }
		_ = json.Unmarshal(r.body, &body)
		if r.status == 201 {
			mu.Lock()
			acked = append(acked, body.ID)
			mu.Unlock()
		}
		return true
	})
	bustest.Eventually(t, 60*time.Second, "40 creates acknowledged", func() bool {
		mu.Lock()
		defer mu.Unlock()
		return len(acked) >= 40
	})
	if err := c.cmd.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	<-c.done
	stop()

	c2 := startTelkeysProcess(t, dir)
	s = serviceAt(t, c2.base)
	r := s.do("GET", "/v1/teams/acme/api-keys", tok, nil)
	listed := map[string]bool{}
	for _, k := range r.json(t)["keys"].([]any) {
		listed[k.(map[string]any)["id"].(string)] = true
	}
	for _, id := range acked {
		if !listed[id] {
			t.Errorf("key %s got a 201 but is not listed after the crash", id)
		}
	}
	t.Logf("%d creates acknowledged before SIGKILL, %d keys listed after restart", len(acked), len(listed))

	// The stream: no duplicate events or keys, every chain intact, and the
	// read model lists exactly the keys the events created.
	created := checkEventStream(t, c2)
	if len(created) != len(listed) {
		t.Fatalf("%d KeyCreated events, %d keys listed", len(created), len(listed))
	}
	for id := range created {
		if !listed[id] {
			t.Errorf("KeyCreated %s not in the read model", id)
		}
	}
}

// checkEventStream reads every event, checks ids are unique and every
// aggregate's chain is intact, and returns the ids of created keys.
func checkEventStream(t *testing.T, c *telkeysProcess) map[string]bool {
	t.Helper()
	created, _ := checkEventStreamAt(t, c.natsURL, natsCreds(t, c.dataDir, bus.RoleAuditor))
	return created
}

// checkEventStreamAt is checkEventStream for the NATS at url, read with
// auditor credentials; it reports every problem and counts duplicates
// (an event or a key creation stored twice).
func checkEventStreamAt(t *testing.T, url, auditorCreds string) (created map[string]bool, dups int) {
	t.Helper()
	_, js := bustest.ConnectURL(t, url, auditorCreds)
	msgs := allMessages(t, js, bus.EventStream)
	seen := map[string]bool{}
	last := map[string][]byte{}
	created = map[string]bool{}
	everCreated := map[string]bool{}
	for _, m := range msgs {
		ev, err := events.Unmarshal(m.Data())
		if err != nil {
			t.Fatal(err)
		}
		if seen[ev.ID] {
			t.Errorf("event %s stored twice", ev.ID)
			dups++
			continue
		}
		seen[ev.ID] = true
		if err := ev.Verify(last[ev.Aggregate]); err != nil {
			t.Fatalf("event %s of %s: %v", ev.ID, ev.Aggregate, err)
		}
		last[ev.Aggregate] = ev.Hash
		if m.Subject() != bus.EventSubject(ev.Aggregate) {
			t.Fatalf("event of %s on subject %s", ev.Aggregate, m.Subject())
		}
		p, err := ev.Decode()
		if err != nil {
			t.Fatal(err)
		}
		switch p := p.(type) {
		case events.KeyCreated:
			if everCreated[p.KeyID] {
				t.Errorf("key %s created twice", p.KeyID)
				dups++
			}
			everCreated[p.KeyID], created[p.KeyID] = true, true
		case events.KeyDeleted:
			delete(created, p.KeyID)
		}
	}
	return created, dups
}
