package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/telapi/telkeys/apikey"
	"github.com/telapi/telkeys/auth"
	"github.com/telapi/telkeys/bus"
	"github.com/telapi/telkeys/bus/bustest"
	"github.com/telapi/telkeys/events"
)

// The audit trail: GET /v1/audit/events and the telkeys audit commands,
// which read the event stream directly.

// TestAuditEndpoint: every event in order, paged and filtered, without
// plaintext keys, to auditors and superadmins only.
func TestAuditEndpoint(t *testing.T) {
	s := startService(t)
	s.enableTeam("acme", 5)
	s.enableTeam("beta", 5)
	k := s.createKey("acme", "k")
	aud := s.token(auth.RoleAuditor, "")

	r := s.do("GET", "/v1/audit/events", aud, nil)
	if r.status != 200 {
		t.Fatalf("%d %s", r.status, r.body)
	}
	body := r.json(t)
	evs := body["events"].([]any)
	if len(evs) != 3 || body["next"] != nil {
		t.Fatalf("all events: %s", r.body)
	}
	created := evs[2].(map[string]any)
	if created["seq"] != 3.0 || created["type"] != "KeyCreated" || created["team"] != "acme" ||
		created["payload"].(map[string]any)["key_id"] != k["id"] || created["actor"].(map[string]any)["role"] != "member" {
		t.Fatalf("event %v", created)
	}
	if strings.Contains(string(r.body), k["key"].(string)) {
		t.Fatal("the audit log shows a plaintext key")
	}
	// Paging by sequence.
	r = s.do("GET", "/v1/audit/events?limit=2", aud, nil)
	if p := r.json(t); len(p["events"].([]any)) != 2 || p["next"] != 2.0 {
		t.Fatalf("first page %s", r.body)
	}
	r = s.do("GET", "/v1/audit/events?limit=2&after=2", s.token(auth.RoleSuperadmin, ""), nil)
	if p := r.json(t); len(p["events"].([]any)) != 1 || p["events"].([]any)[0].(map[string]any)["seq"] != 3.0 {
		t.Fatalf("second page %s", r.body)
	}
	r = s.do("GET", "/v1/audit/events?team=beta", aud, nil)
	if p := r.json(t); len(p["events"].([]any)) != 1 {
		t.Fatalf("team filter %s", r.body)
	}
	r = s.do("GET", "/v1/audit/events?until=2000-01-01T00:00:00Z", aud, nil)
	if p := r.json(t); len(p["events"].([]any)) != 0 {
		t.Fatalf("until filter %s", r.body)
	}
	refusals := []refusal{
		{"GET", "/v1/audit/events", "", nil, 401, "unauthorized"},
		{"GET", "/v1/audit/events", s.token(auth.RoleNode, ""), nil, 403, "forbidden"},
		{"GET", "/v1/audit/events", s.token(auth.RoleMember, "acme"), nil, 403, "forbidden"},
	}
	for _, q := range []string{"limit=0", "limit=1001", "after=-1", "team=a.b", "since=yesterday", "type=Nope"} {
		refusals = append(refusals, refusal{"GET", "/v1/audit/events?" + q, aud, nil, 400, "invalid_request"})
	}
	s.expectRefusals(t, refusals)
}

// TestAuditCommands runs telkeys audit verify, events and state against
// the service's NATS, trusting the key "telkeys events-key" writes; then
// a leaked service credential stores junk and a forged event.
func TestAuditCommands(t *testing.T) {
	s := startService(t)
	s.enableTeam("acme", 5)
	k := s.createKey("acme", "k")
	between := time.Now().UTC()
	s.deleteKey("acme", k["id"].(string))
	keysFile := filepath.Join(t.TempDir(), "events-public.pem")
	if code, out, errOut := runTelkeys(t, "events-key", "--data-dir", s.cfg.DataDir, "--out", keysFile); code != 0 {
		t.Fatalf("events-key: %d %s %s", code, out, errOut)
	}
	common := []string{"--nats-url", s.NATSURL, "--nats-creds", s.credsFor(bus.RoleAuditor)}
	cli := func(args ...string) (int, string) {
		code, out, errOut := runTelkeys(t, append(append(args, common...), "--events-public-key", keysFile)...)
		return code, out + errOut
	}
	if code, out, errOut := runTelkeys(t, append([]string{"audit", "verify"}, common...)...); code != 2 || !strings.Contains(errOut, "--events-public-key is required") {
		t.Fatalf("verify without --events-public-key: %d %s %s", code, out, errOut)
	}
	if code, out := cli("audit", "verify"); code != 0 || !strings.Contains(out, "intact: 3 events") {
		t.Fatalf("verify: %d %s", code, out)
	}
	code, out := cli("audit", "events", "--format", "jsonl")
	if code != 0 || strings.Count(out, "\n") != 3 {
		t.Fatalf("events: %d %s", code, out)
	}
	var first map[string]any
	if err := json.Unmarshal([]byte(strings.SplitN(out, "\n", 2)[0]), &first); err != nil || first["type"] != "TeamAccessConfigured" {
		t.Fatalf("first jsonl line: %v %v", first, err)
	}
	if code, out := cli("audit", "events", "--format", "csv", "--type", "KeyDeleted"); code != 0 || strings.Count(out, "\n") != 2 || !strings.Contains(out, "KeyDeleted") {
		t.Fatalf("csv: %d %s", code, out)
	}
	if code, out := cli("audit", "state", "--at", between.Format(time.RFC3339Nano), "--format", "json"); code != 0 || !strings.Contains(out, k["id"].(string)) {
		t.Fatalf("state between create and delete: %d %s", code, out)
	}
	if code, out := cli("audit", "state", "--at", time.Now().UTC().Format(time.RFC3339Nano)); code != 0 || strings.Contains(out, k["id"].(string)) {
		t.Fatalf("state now: %d %s", code, out)
	}
	// The table's columns line up: every value starts where its header does.
	code, out = cli("audit", "events", "--format", "table")
	lines := strings.Split(strings.TrimSpace(out), "\n")
	if code != 0 || len(lines) < 4 {
		t.Fatalf("table: %d %s", code, out)
	}
	if strings.Contains(strings.Fields(lines[1])[1], "…") {
		t.Fatalf("the time is cut: %q", lines[1])
	}
	for _, col := range []string{"TIME", "ACTOR", "TYPE", "AGGREGATE", "PAYLOAD"} {
		at := strings.Index(lines[0], col)
		for _, l := range lines[1:] {
			if r := []rune(l); len(r) <= at || r[at-1] != ' ' || r[at] == ' ' {
				t.Fatalf("column %s does not start at %d in:\n%s", col, at, out)
			}
		}
	}
	if code, _ := cli("audit", "events", "--format", "xml"); code == 0 {
		t.Fatal("a bad format succeeded")
	}
	if code, _ := cli("audit", "state"); code == 0 {
		t.Fatal("state without --at succeeded")
	}

	// Forgeries: junk, and a key signed by a key telkeys does not trust.
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	js, acme := s.js(), bus.EventSubject(events.TeamAggregate("acme"))
	other, _ := bustest.Signer(t)
	ev, err := events.New("evt_forged_by_mallory", events.TeamAggregate("acme"), events.Actor{Subject: "mallory", Role: "member"}, time.Now(), nil,
		events.KeyCreated{KeyID: "key_forged", Name: "forged", Scopes: []string{apikey.ScopeReadTeamApps}, Hash: make([]byte, 32), Last4: "abcd"})
	if err != nil {
		t.Fatal(err)
	}
	other.Seal(&ev)
	forged, err := ev.Marshal()
	if err != nil {
		t.Fatal(err)
	}
	var seqs []uint64
	for _, data := range [][]byte{[]byte("junk"), forged} {
		ack, err := js.Publish(ctx, acme, data)
		if err != nil {
			t.Fatal(err)
		}
		seqs = append(seqs, ack.Sequence)
	}
	code, out = cli("audit", "verify")
	wantLines := []string{
		fmt.Sprintf("BROKEN at seq %d: malformed: ", seqs[0]),
		fmt.Sprintf("BROKEN at seq %d (event %s): untrusted_key: ", seqs[1], ev.ID),
		"2 problem(s); 3 valid events and 2 invalid messages",
	}
	t.Logf("audit verify after forgeries:\n%s", out)
	if code != 1 || strings.Count(out, "BROKEN at") != 2 {
		t.Fatalf("verify after forgeries: %d %s", code, out)
	}
	for _, w := range wantLines {
		if !strings.Contains(out, w) {
			t.Fatalf("verify after forgeries does not say %q:\n%s", w, out)
		}
	}
	if code, out := cli("audit", "events", "--format", "jsonl"); code != 0 || strings.Count(out, "\n") != 3 || strings.Contains(out, ev.ID) {
		t.Fatalf("events after forgeries: %d %s", code, out)
	}
	code, out = cli("audit", "events", "--format", "jsonl", "--include-invalid", "--team", "acme")
	if code != 0 || strings.Count(out, "\n") != 5 || !strings.Contains(out, `"invalid":"malformed"`) ||
		!strings.Contains(out, `"invalid":"untrusted_key"`) || !strings.Contains(out, ev.ID) {
		t.Fatalf("events --include-invalid: %d %s", code, out)
	}
	if code, out := cli("audit", "events", "--include-invalid"); code != 0 || !strings.Contains(out, "INVALID (untrusted_key)") {
		t.Fatalf("events --include-invalid as a table: %d %s", code, out)
	}
	if code, out := cli("audit", "state", "--at", time.Now().UTC().Format(time.RFC3339Nano), "--format", "json"); code != 0 || strings.Contains(out, `"id"`) {
		t.Fatalf("state after forgeries: %d %s", code, out)
	}
	r := s.do("GET", "/v1/audit/events", s.token(auth.RoleAuditor, ""), nil)
	if p := r.json(t); r.status != 200 || len(p["events"].([]any)) != 3 || strings.Contains(string(r.body), ev.ID) {
		t.Fatalf("the audit API after forgeries: %d %s", r.status, r.body)
	}
}
