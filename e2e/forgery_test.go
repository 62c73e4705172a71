package e2e

// What a leaked service credential (or a bug) can publish on the event
// subjects, and that none of it changes what a key can do, slows or stops
// a command, or goes unreported: every reader applies only valid events.

import (
	"context"
	"crypto/rand"
	"fmt"
	"net/http"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/oklog/ulid/v2"

	"github.com/telapi/telkeys/apikey"
	"github.com/telapi/telkeys/auth"
	"github.com/telapi/telkeys/bus"
	"github.com/telapi/telkeys/bus/bustest"
	"github.com/telapi/telkeys/events"
	"github.com/telapi/telkeys/service"
)

// forgedKey is a KeyCreated for a key whose plaintext the forger knows.
func forgedKey(t *testing.T, s *events.Signer, prev []byte) (plain string, wire []byte) {
	t.Helper()
	plain, err := apikey.Generate()
	if err != nil {
		t.Fatal(err)
	}
	h := apikey.HashOf(plain)
	ev, err := events.New("evt_"+ulid.Make().String(), events.TeamAggregate("acme"), events.Actor{Subject: "mallory", Role: "member"},
		time.Now(), prev, events.KeyCreated{KeyID: "key_" + ulid.Make().String(), Name: "forged", Scopes: []string{apikey.ScopeReadTeamApps}, Hash: h[:], Last4: apikey.Last4(plain)})
	if err != nil {
		t.Fatal(err)
	}
	s.Seal(&ev)
	wire, err = ev.Marshal()
	if err != nil {
		t.Fatal(err)
	}
	return plain, wire
}

func TestForgedMessagesAreQuarantined(t *testing.T) {
	dir := t.TempDir()
	c := startTelkeysProcess(t, dir)
	s := serviceAt(t, c.base)
	keysFile := eventsKeyFile(t, dir)
	np := startNodeProcess(t, "forgery-node", "--nats-url", c.natsURL, "--nats-creds", natsCreds(t, dir, bus.RoleNode),
		"--events-public-key", keysFile, "--http-addr", "127.0.0.1:0", "--max-staleness", "3s")
	n := newNodeAPI(t, "forgery-node", np.waitListening(t, 30*time.Second))
	expect := func(t *testing.T, key, want string) {
		t.Helper()
		pollNode(t, 10*time.Second, "the node on a key", func() (response, error) { return n.apps(key) }, want)
	}

	s.enableTeam("acme", 100)
	victim := s.createKey("acme", "victim")
	deleted := s.createKey("acme", "deleted")
	s.deleteKey("acme", deleted["id"].(string))
	expect(t, victim["key"].(string), "200")

	// The forger holds the service's NATS credentials.
	_, js := bustest.ConnectURL(t, c.natsURL, natsCreds(t, dir, bus.RoleService))
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	var createdWire, lastHash []byte
	for _, m := range allMessages(t, js, bus.EventStream) {
		ev, err := events.Unmarshal(m.Data())
		if err != nil {
			t.Fatal(err)
		}
		if p, err := ev.Decode(); err == nil {
			if kc, ok := p.(events.KeyCreated); ok && kc.KeyID == deleted["id"].(string) {
				createdWire = m.Data()
			}
		}
		lastHash = ev.Hash
	}
	realKey, err := events.LoadSigningKey(service.SigningKeyPath(dir), false)
	if err != nil {
		t.Fatal(err)
	}
	otherKey, _ := bustest.Signer(t)
	untrustedPlain, untrusted := forgedKey(t, otherKey, lastHash)
	var junkPrev [32]byte
	_, _ = rand.Read(junkPrev[:])
	brokenPlain, broken := forgedKey(t, realKey, junkPrev[:]) // a bug: signed, out of place

	subject := bus.EventSubject(events.TeamAggregate("acme"))
	want := map[uint64]string{}
	for _, f := range []struct {
		reason string
		data   []byte
	}{
		{events.ReasonMalformed, []byte("one line of text")},
		{events.ReasonOutOfPlace, createdWire}, // a valid event republished
		{events.ReasonUntrustedKey, untrusted},
		{events.ReasonOutOfPlace, broken},
	} {
		ack, err := js.Publish(ctx, subject, f.data)
		if err != nil {
			t.Fatal(err)
		}
		want[ack.Sequence] = f.reason
	}
	// A heartbeat from the future, correctly signed: nodes must not wait
	// for a sequence the stream does not have.
	if err := js.Conn().Publish(bus.HeartbeatSubject, realKey.SignHeartbeat(1<<40, time.Now())); err != nil {
		t.Fatal(err)
	}

	t0 := time.Now()
	after := s.createKey("acme", "after the forgeries")
	took := time.Since(t0)
	t.Logf("a create on the forged team took %v", took)
	expect(t, after["key"].(string), "200")
	for name, key := range map[string]string{
		"the republished KeyCreated of a deleted key": deleted["key"].(string),
		"a key signed by another key":                 untrustedPlain,
		"a key out of its chain":                      brokenPlain,
	} {
		if r, err := n.apps(key); err != nil || outcome(r) != "401 invalid_api_key" {
			t.Errorf("%s: the node answers %v %v", name, outcome(r), err)
		}
	}
	// Still current past its staleness bound: a node that believed the
	// heartbeat from the future would wait for that sequence, hear nothing
	// it may count, and answer 503 after 3 s.
	for end := time.Now().Add(4500 * time.Millisecond); time.Now().Before(end); {
		if r, err := n.apps(victim["key"].(string)); err != nil || r.status != 200 {
			t.Fatalf("after the heartbeat from the future the node answers %v %v", outcome(r), err)
		}
		<-time.After(100 * time.Millisecond) // pace the observations
	}

	listed := func(s *testService) []string {
		t.Helper()
		var names []string
		for _, k := range s.do("GET", "/v1/teams/acme/api-keys", s.token(auth.RoleMember, "acme"), nil).json(t)["keys"].([]any) {
			names = append(names, k.(map[string]any)["name"].(string))
		}
		slices.Sort(names)
		return names
	}
	if got := listed(s); !slices.Equal(got, []string{"after the forgeries", "victim"}) {
		t.Fatalf("the read models list %v", got)
	}

	r := s.do("GET", "/v1/audit/quarantine", s.token(auth.RoleAuditor, ""), nil)
	if r.status != http.StatusOK {
		t.Fatalf("quarantine: %d %s", r.status, r.body)
	}
	got := map[uint64]string{}
	for _, q := range r.json(t)["quarantine"].([]any) {
		q := q.(map[string]any)
		got[uint64(q["seq"].(float64))] = q["reason"].(string)
	}
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Fatalf("quarantined %v, want %v", got, want)
	}

	code, out, stderr := runTelkeys(t, "audit", "verify", "--nats-url", c.natsURL,
		"--nats-creds", natsCreds(t, dir, bus.RoleAuditor), "--events-public-key", keysFile)
	if code != 1 {
		t.Fatalf("audit verify: exit %d\n%s%s", code, out, stderr)
	}
	for seq := range want {
		if !strings.Contains(out, fmt.Sprintf("seq %d ", seq)) && !strings.Contains(out, fmt.Sprintf("seq %d:", seq)) {
			t.Errorf("audit verify does not name seq %d:\n%s", seq, out)
		}
	}
	if lines := strings.Count(strings.TrimSpace(out), "BROKEN"); lines != len(want) {
		t.Errorf("audit verify names %d problems, want %d:\n%s", lines, len(want), out)
	}

	// A restart reads the same history and is ready.
	if err := c.cmd.Process.Kill(); err != nil {
		t.Fatal(err)
	}
	<-c.done
	c2 := startTelkeysProcess(t, dir)
	s2 := serviceAt(t, c2.base)
	if got := listed(s2); !slices.Equal(got, []string{"after the forgeries", "victim"}) {
		t.Fatalf("after a restart the read models list %v", got)
	}
	s2.createKey("acme", "after the restart")
}
