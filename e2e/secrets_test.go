package e2e

import (
	"bytes"
	"context"
	"encoding/hex"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/telapi/telkeys/apikey"
	"github.com/telapi/telkeys/auth"
	"github.com/telapi/telkeys/bus"
)

// The plaintext of a key is in the 201 response to its create and nowhere
// else.

// secretNeedle is one thing that must never be found outside the create
// response: a whole plaintext key, or its random part.
type secretNeedle struct {
	label string // safe to print: says which key and which part
	value []byte
}

// leakScanner collects secrets and looks for them in everything telkeys
// keeps or emits.
type leakScanner struct {
	needles []secretNeedle
	scanned map[string]int // bytes scanned per place, to prove it was not empty
	hits    int
}

func (l *leakScanner) add(t testing.TB, i int, key string) {
	t.Helper()
	if apikey.Parse(key) != nil || len(apikey.Random(key)) != apikey.RandomLen {
		t.Fatalf("key #%d is not a well-formed key", i)
	}
	l.needles = append(l.needles,
		secretNeedle{fmt.Sprintf("key #%d (whole)", i), []byte(key)},
		secretNeedle{fmt.Sprintf("key #%d (random part)", i), []byte(apikey.Random(key))})
}

// find returns the labels of the needles in data.
func (l *leakScanner) find(data []byte) []string {
	var found []string
	for _, n := range l.needles {
		if bytes.Contains(data, n.value) {
			found = append(found, n.label)
		}
	}
	return found
}

// scan reports every needle found in data. It never prints the secret.
func (l *leakScanner) scan(t testing.TB, place string, data []byte) {
	t.Helper()
	if l.scanned == nil {
		l.scanned = map[string]int{}
	}
	l.scanned[place] += len(data)
	for _, label := range l.find(data) {
		l.hits++
		t.Errorf("LEAK: %s found in %s", label, place)
	}
}

// scanStream scans subject, headers and data of every message of stream
// and returns the messages.
func (l *leakScanner) scanStream(t testing.TB, js jetstream.JetStream, stream string) []jetstream.Msg {
	t.Helper()
	msgs := allMessages(t, js, stream)
	for _, m := range msgs {
		place := stream + " message " + m.Subject()
		l.scan(t, place+" (subject)", []byte(m.Subject()))
		for k, vs := range m.Headers() {
			l.scan(t, place+" (header name)", []byte(k))
			for _, v := range vs {
				l.scan(t, place+" (header "+k+")", []byte(v))
			}
		}
		l.scan(t, place+" (data)", m.Data())
	}
	return msgs
}

type createdKey struct{ team, id, key string }

// leakHunt is a service holding keys, some deleted, and what its scans
// saw, for the checks that they saw the data that matters.
type leakHunt struct {
	s                *testService
	l                *leakScanner
	sa, aud          string
	memA, memB, memC string // members of alpha, beta and churn
	keys             []createdKey
	deleted          createdKey

	streams []string
	msgs    map[string][]jetstream.Msg // by stream
	logs    string
	metrics response
	files   int
}

// TestSecretsNeverLeak: not in an event, a KV entry (any bucket,
// tombstones included), a snapshot, a log line, a metric, an error
// response, nor anywhere in the data directory.
func TestSecretsNeverLeak(t *testing.T) {
	h := newLeakHunt(t)
	for _, phase := range []struct {
		name string
		run  func(*leakHunt, *testing.T)
	}{
		{"API reads", (*leakHunt).scanReads},
		{"error paths", (*leakHunt).scanErrorPaths},
		{"JetStream", (*leakHunt).scanJetStream},
		{"logs and metrics", (*leakHunt).scanLogsAndMetrics},
		{"data directory", (*leakHunt).scanDataDir},
		{"the scans saw key data", (*leakHunt).checkCoverage},
		{"scanner self-check", (*leakHunt).checkScanner},
	} {
		t.Run(phase.name, func(t *testing.T) { phase.run(h, t) })
	}

	total := 0
	for _, n := range h.l.scanned {
		total += n
	}
	t.Logf("%d keys (%d secrets) scanned against %d bytes in %d places: %d streams %v, %d events, %d read-model and %d snapshot messages, %d log bytes, %d data files; %d hits",
		len(h.keys), len(h.l.needles), total, len(h.l.scanned), len(h.streams), h.streams, len(h.msgs[bus.EventStream]),
		len(h.msgs[bus.KVStream(bus.BucketReadModel)]), len(h.msgs[bus.KVStream(bus.BucketSnapshots)]), len(h.logs), h.files, h.l.hits)
}

// newLeakHunt creates keys in three teams, deletes some, and churns one
// team until the snapshot bucket holds a snapshot.
func newLeakHunt(t *testing.T) *leakHunt {
	t.Helper()
	s := startService(t)
	s.enableTeam("alpha", 10)
	s.enableTeam("beta", 3)
	s.enableTeam("churn", 1)
	h := &leakHunt{s: s, l: &leakScanner{}, sa: s.token(auth.RoleSuperadmin, ""), aud: s.token(auth.RoleAuditor, ""),
		memA: s.token(auth.RoleMember, "alpha"), memB: s.token(auth.RoleMember, "beta"), memC: s.token(auth.RoleMember, "churn")}
	create := func(team, name string, scopes ...string) createdKey {
		t.Helper()
		body := s.createKey(team, name, scopes...)
		c := createdKey{team: team, id: body["id"].(string), key: body["key"].(string)}
		h.keys = append(h.keys, c)
		return c
	}
	create("alpha", "deploy bot", "READ_TEAM_APPS", "CREATE_CALL_TOKEN")
	h.deleted = create("alpha", "to delete", "READ_CALL_TOKEN")
	create("alpha", "ci")
	create("beta", "beta one", "CREATE_CALL_TOKEN")
	two := create("beta", "beta two")
	s.deleteKey("alpha", h.deleted.id)
	// A roll shows a new secret once too.
	r := s.do("POST", "/v1/teams/beta/api-keys/"+two.id+"/roll", h.memB, map[string]any{"grace_seconds": 3600})
	if r.status != 201 {
		t.Fatalf("roll: %d %s", r.status, r.body)
	}
	rolled := r.json(t)
	h.keys = append(h.keys, createdKey{team: "beta", id: rolled["id"].(string), key: rolled["key"].(string)})

	// Snapshots are written every 32 events of a team.
	for i := range 20 {
		s.deleteKey("churn", create("churn", fmt.Sprintf("churn %d", i)).id)
	}
	for i, k := range h.keys {
		h.l.add(t, i, k.key)
	}
	return h
}

// scanReads: lists and team overviews, by every role allowed.
func (h *leakHunt) scanReads(t *testing.T) {
	s := h.s.withT(t)
	for _, rq := range []struct{ path, tok string }{
		{"/v1/teams/alpha/api-keys", h.memA}, {"/v1/teams/alpha/api-keys", h.sa}, {"/v1/teams/alpha/api-keys", h.aud},
		{"/v1/teams/beta/api-keys", h.memB}, {"/v1/teams/churn/api-keys", h.memC},
		{"/v1/teams", h.sa}, {"/v1/teams/alpha/api-access", h.memA},
	} {
		r := s.do("GET", rq.path, rq.tok, nil)
		if r.status != 200 {
			t.Fatalf("GET %s: %d %s", rq.path, r.status, r.body)
		}
		h.l.scan(t, "response to GET "+rq.path, r.body)
	}
	if r := s.do("GET", "/v1/teams/alpha/api-keys", h.memA, nil); len(r.json(t)["keys"].([]any)) != 2 {
		t.Fatalf("alpha should list 2 keys after the delete: %s", r.body)
	}
}

// scanErrorPaths: requests that carry key material, mostly refused. The
// caller sent it, so each response is scanned for it too: an error must
// not echo it.
func (h *leakHunt) scanErrorPaths(t *testing.T) {
	k0, k1 := h.keys[0].key, h.keys[3].key
	memA, sa := map[string]string{"Authorization": bearer(h.memA)}, map[string]string{"Authorization": bearer(h.sa)}
	for _, e := range []struct {
		name         string
		method, path string
		hdr          map[string]string
		body         string
		status       int
	}{
		{"unknown field holding a key", "POST", "/v1/teams/alpha/api-keys", memA, `{"name":"x","scopes":["READ_TEAM_APPS"],"key":"` + k0 + `"}`, 400},
		{"key as a scope", "POST", "/v1/teams/alpha/api-keys", memA, `{"name":"x","scopes":["` + k0 + `"]}`, 422},
		{"key in an invalid name", "POST", "/v1/teams/alpha/api-keys", memA, `{"name":"` + k0 + `\u0000","scopes":["READ_TEAM_APPS"]}`, 400},
		{"key in a too long name", "POST", "/v1/teams/alpha/api-keys", memA, `{"name":"` + k0 + k1 + `","scopes":["READ_TEAM_APPS"]}`, 400},
		{"key as a wrongly typed name", "POST", "/v1/teams/alpha/api-keys", memA, `{"name":["` + k0 + `"],"scopes":["READ_TEAM_APPS"]}`, 400},
		{"key in malformed JSON", "POST", "/v1/teams/alpha/api-keys", memA, `{"name":"` + k0, 400},
		{"key as trailing data", "POST", "/v1/teams/alpha/api-keys", memA, `{"name":"x","scopes":["READ_TEAM_APPS"]}"` + k0 + `"`, 400},
		{"key as bare JSON value", "POST", "/v1/teams/alpha/api-keys", memA, k0, 400},
		{"key as unknown field on api-access", "PUT", "/v1/teams/alpha/api-access", sa, `{"enabled":true,"allowed_scopes":[],"max_keys":1,"` + k0 + `":true}`, 400},
		{"key as scope on api-access", "PUT", "/v1/teams/alpha/api-access", sa, `{"enabled":true,"allowed_scopes":["` + k0 + `"],"max_keys":1}`, 400},
		{"key as webrtc value", "PUT", "/v1/platform/flags/webrtc", sa, `{"enabled":"` + k0 + `"}`, 400},
		{"key as bearer token", "GET", "/v1/teams/alpha/api-keys", map[string]string{"Authorization": bearer(k0)}, "", 401},
		{"key as bearer token on create", "POST", "/v1/teams/alpha/api-keys", map[string]string{"Authorization": bearer(k1)}, `{"name":"x","scopes":["READ_TEAM_APPS"]}`, 401},
		{"key as raw Authorization", "GET", "/v1/teams/alpha/api-keys", map[string]string{"Authorization": k0}, "", 401},
		{"key as Basic credentials", "GET", "/v1/platform/flags", map[string]string{"Authorization": "Basic " + k0}, "", 401},
		{"key in X-API-Key without token", "GET", "/v1/teams/alpha/api-keys", map[string]string{"X-API-Key": k0}, "", 401},
		{"key in X-API-Key with token", "GET", "/v1/teams/alpha/api-keys", map[string]string{"X-API-Key": k1, "Authorization": bearer(h.memA)}, "", 200},
		{"key in X-API-Key on a 404 route", "POST", "/v1/keys/lookup", map[string]string{"X-API-Key": k0, "Authorization": bearer(h.sa)}, `{"key":"` + k1 + `","scope":"READ_TEAM_APPS"}`, 404},
		{"key verified by the verify endpoint", "POST", "/v1/keys/verify", sa, `{"key":"` + k1 + `","scope":"READ_TEAM_APPS"}`, 200},
		{"key in an invalid verify request", "POST", "/v1/keys/verify", sa, `{"key":"` + k1 + `","scope":"READ_TEAM_APPS","extra":"` + k0 + `"}`, 400},
		{"key as key id in the path", "DELETE", "/v1/teams/alpha/api-keys/" + k0, memA, "", 400},
		{"key in the path of a 404 route", "GET", "/v1/keys/" + k1, sa, "", 404},
		{"key in the query string", "GET", "/v1/teams/alpha/api-keys?key=" + k0 + "&api_key=" + k1, memA, "", 200},
	} {
		t.Run(e.name, func(t *testing.T) {
			var body []byte
			if e.body != "" {
				body = []byte(e.body)
			}
			r := h.s.withT(t).send(e.method, e.path, e.hdr, body)
			if r.status != e.status {
				t.Errorf("status %d, want %d; body %s", r.status, e.status, r.body)
			}
			h.l.scan(t, "response to "+e.name+" (body)", r.body)
			for k, vs := range r.header {
				for _, v := range vs {
					h.l.scan(t, "response to "+e.name+" (header "+k+")", []byte(v))
				}
			}
		})
	}
}

// scanJetStream: every stream on the server (the event stream, the stream
// behind every KV bucket, and whatever else there is), all it holds.
func (h *leakHunt) scanJetStream(t *testing.T) {
	js := h.s.withT(t).js()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	names := js.StreamNames(ctx)
	for n := range names.Name() {
		h.streams = append(h.streams, n)
	}
	if err := names.Err(); err != nil {
		t.Fatal(err)
	}
	slices.Sort(h.streams)
	for _, want := range []string{bus.EventStream, bus.KVStream(bus.BucketReadModel), bus.KVStream(bus.BucketSnapshots)} {
		if !slices.Contains(h.streams, want) {
			t.Fatalf("stream %s not found among %v", want, h.streams)
		}
	}
	// Snapshots are stored just after the command that calls for one answers.
	for deadline := time.Now().Add(10 * time.Second); ; {
		st, err := js.Stream(ctx, bus.KVStream(bus.BucketSnapshots))
		if err != nil {
			t.Fatal(err)
		}
		if info, err := st.Info(ctx); err == nil && info.State.Msgs > 0 || time.Now().After(deadline) {
			break
		}
		<-time.After(10 * time.Millisecond) // poll
	}
	h.msgs = map[string][]jetstream.Msg{}
	for _, st := range h.streams {
		h.msgs[st] = h.l.scanStream(t, js, st)
	}
	if len(h.msgs[bus.EventStream]) == 0 {
		t.Fatal("the event stream is empty")
	}
}

func (h *leakHunt) scanLogsAndMetrics(t *testing.T) {
	h.logs = h.s.logs.String()
	h.l.scan(t, "logs", []byte(h.logs))
	h.metrics = h.s.withT(t).do("GET", "/metrics", "", nil)
	if h.metrics.status != 200 {
		t.Fatalf("metrics: %d", h.metrics.status)
	}
	h.l.scan(t, "metrics", h.metrics.body)
}

// scanDataDir: the embedded server's file store and whatever else
// telkeys wrote to its data directory.
func (h *leakHunt) scanDataDir(t *testing.T) {
	dir := h.s.cfg.DataDir
	err := filepath.WalkDir(dir, func(path string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		b, err := os.ReadFile(path)
		if err != nil {
			return err
		}
		h.files++
		rel, _ := filepath.Rel(dir, path)
		h.l.scan(t, "data dir file "+rel, b)
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}

// checkCoverage: what telkeys does store about each key is where the
// scans looked, so a scan that found nothing looked at the right data.
func (h *leakHunt) checkCoverage(t *testing.T) {
	evs := h.msgs[bus.EventStream]
	keySubjects := map[string]bool{}
	prefixes := map[string]int{}
	for _, m := range h.msgs[bus.KVStream(bus.BucketReadModel)] {
		keySubjects[m.Subject()] = true
		for _, p := range []string{bus.TeamPrefix, bus.TeamKeysPrefix, bus.KeyPrefix} {
			if strings.HasPrefix(m.Subject(), bus.KVSubject(bus.BucketReadModel, p)) {
				prefixes[p]++
			}
		}
	}
	for i, k := range h.keys {
		hash := apikey.HashOf(k.key)
		if !keySubjects[bus.KVSubject(bus.BucketReadModel, bus.KeyPrefix+hex.EncodeToString(hash[:]))] {
			t.Errorf("key #%d: its SHA-256 is not a subject of KV_%s", i, bus.BucketReadModel)
		}
		if !slices.ContainsFunc(evs, func(m jetstream.Msg) bool {
			return bytes.Contains(m.Data(), hash[:]) && bytes.Contains(m.Data(), []byte(k.id))
		}) {
			t.Errorf("key #%d: no event holds its id and hash", i)
		}
	}
	// One entry (or, once deleted, tombstone) per key; three teams.
	if prefixes[bus.KeyPrefix] != len(h.keys) || prefixes[bus.TeamPrefix] != 3 || prefixes[bus.TeamKeysPrefix] != 3 {
		t.Errorf("KV_%s holds %v records by prefix, want %d keys and 3 of each team record", bus.BucketReadModel, prefixes, len(h.keys))
	}
	snaps := h.msgs[bus.KVStream(bus.BucketSnapshots)]
	if len(snaps) == 0 {
		t.Fatalf("KV_%s is empty after 41 events on team churn", bus.BucketSnapshots)
	}
	snapHasHash := false
	for _, m := range snaps {
		for _, k := range h.keys {
			if hash := apikey.HashOf(k.key); k.team == "churn" && bytes.Contains(m.Data(), hash[:]) {
				snapHasHash = true
			}
		}
	}
	if !snapHasHash {
		t.Error("no snapshot holds the hash of a churn key: the snapshot scan did not see key data")
	}
	if h.logs == "" {
		t.Fatal("no logs captured")
	}
	for _, want := range []string{
		`"path":"/v1/teams/alpha/api-keys"`,
		`"path":"/v1/teams/alpha/api-keys/` + h.deleted.id + `"`,
		`"path":"/v1/keys/verify"`,
		// The requests that put a key in the path are logged, redacted.
		`"path":"/v1/teams/alpha/api-keys/tk_[redacted]"`,
		`"path":"/v1/keys/tk_[redacted]"`,
	} {
		if !strings.Contains(h.logs, want) {
			t.Errorf("logs lack %s: the log scan did not see the access log", want)
		}
	}
	if !strings.Contains(string(h.metrics.body), "telkeys_http_requests_total") {
		t.Error("metrics lack telkeys_http_requests_total")
	}
	if h.files == 0 {
		t.Error("no file in the data dir")
	}
}

// checkScanner: the scanner finds what it looks for, whole or in part.
func (h *leakHunt) checkScanner(t *testing.T) {
	if got := h.l.find([]byte("prefix " + apikey.Random(h.keys[0].key) + " suffix")); len(got) != 1 || got[0] != "key #0 (random part)" {
		t.Fatalf("scanner self-check found %v", got)
	}
	if got := h.l.find([]byte(h.keys[1].key)); len(got) != 2 {
		t.Fatalf("scanner self-check found %v", got)
	}
}
