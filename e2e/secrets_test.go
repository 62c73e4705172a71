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

// secretNeedle is one thing that must never be found outside the create
// response: a whole plaintext key, or its random part.
type secretNeedle struct {
	label string // safe to print: says which key and which part
	value []byte
}

// leakScanner collects secrets and looks for them in everything telkeys
// keeps or emits.
type leakScanner struct {
	t       *testing.T
	needles []secretNeedle
	scanned map[string]int // bytes scanned per place, to prove it was not empty
	hits    int
}

func (l *leakScanner) add(i int, key string) {
	l.t.Helper()
	if apikey.Parse(key) != nil || len(apikey.Random(key)) != apikey.RandomLen {
		l.t.Fatalf("key #%d is not a well-formed key", i)
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
func (l *leakScanner) scan(place string, data []byte) {
	l.t.Helper()
	if l.scanned == nil {
		l.scanned = map[string]int{}
	}
	l.scanned[place] += len(data)
	for _, label := range l.find(data) {
		l.hits++
		l.t.Errorf("LEAK: %s found in %s", label, place)
	}
}

// scanStream scans subject, headers and data of every message of stream
// and returns the messages.
func (l *leakScanner) scanStream(js jetstream.JetStream, stream string) []jetstream.Msg {
	l.t.Helper()
	msgs := allMessages(l.t, js, stream)
	for _, m := range msgs {
		place := stream + " message " + m.Subject()
		l.scan(place+" (subject)", []byte(m.Subject()))
		for k, vs := range m.Headers() {
			l.scan(place+" (header name)", []byte(k))
			for _, v := range vs {
				l.scan(place+" (header "+k+")", []byte(v))
			}
		}
		l.scan(place+" (data)", m.Data())
	}
	return msgs
}

// The plaintext of a key is in the 201 response to its create and nowhere
// else: not in an event, a KV entry (any bucket, tombstones included), a
// snapshot, a log line, a metric, an error response, nor anywhere in the
// data directory.
func TestSecretsNeverLeak(t *testing.T) {
	s := startService(t)
	s.enableTeam("alpha", 10)
	s.enableTeam("beta", 3)
	s.enableTeam("churn", 1)
	sa := s.token(auth.RoleSuperadmin, "")
	aud := s.token(auth.RoleAuditor, "")
	memA := s.token(auth.RoleMember, "alpha")
	memB := s.token(auth.RoleMember, "beta")

	type created struct{ team, id, key string }
	var keys []created
	create := func(team, name string, scopes ...string) created {
		t.Helper()
		body := s.createKey(team, name, scopes...)
		c := created{team: team, id: body["id"].(string), key: body["key"].(string)}
		keys = append(keys, c)
		return c
	}
	create("alpha", "deploy bot", "READ_TEAM_APPS", "CREATE_CALL_TOKEN")
	deleted := create("alpha", "to delete", "READ_CALL_TOKEN")
	create("alpha", "ci")
	create("beta", "beta one", "CREATE_CALL_TOKEN")
	create("beta", "beta two")

	if r := s.do("DELETE", "/v1/teams/alpha/api-keys/"+deleted.id, memA, nil); r.status != 204 {
		t.Fatalf("delete: %d %s", r.status, r.body)
	}

	// Snapshots are written every 32 events of a team: churn one team so
	// that the snapshot bucket holds one, then scan it too.
	memC := s.token(auth.RoleMember, "churn")
	for i := 0; i < 20; i++ {
		c := create("churn", fmt.Sprintf("churn %d", i))
		if r := s.do("DELETE", "/v1/teams/churn/api-keys/"+c.id, memC, nil); r.status != 204 {
			t.Fatalf("churn delete %d: %d %s", i, r.status, r.body)
		}
	}

	l := &leakScanner{t: t}
	for i, k := range keys {
		l.add(i, k.key)
	}

	// Reads: lists and team overviews, by every role allowed.
	for _, rq := range []struct{ path, tok string }{
		{"/v1/teams/alpha/api-keys", memA}, {"/v1/teams/alpha/api-keys", sa}, {"/v1/teams/alpha/api-keys", aud},
		{"/v1/teams/beta/api-keys", memB}, {"/v1/teams/churn/api-keys", memC},
		{"/v1/teams", sa}, {"/v1/teams/alpha/api-access", memA},
	} {
		r := s.do("GET", rq.path, rq.tok, nil)
		if r.status != 200 {
			t.Fatalf("GET %s: %d %s", rq.path, r.status, r.body)
		}
		l.scan("response to GET "+rq.path, r.body)
	}
	if r := s.do("GET", "/v1/teams/alpha/api-keys", memA, nil); len(r.json(t)["keys"].([]any)) != 2 {
		t.Fatalf("alpha should list 2 keys after the delete: %s", r.body)
	}

	// Error paths that carry key material. The caller sent it, so each
	// response is scanned for it too: an error must not echo it.
	k0, k1 := keys[0].key, keys[3].key
	errorPaths := []struct {
		name         string
		method, path string
		hdr          map[string]string
		body         string
		status       int
	}{
		{"unknown field holding a key", "POST", "/v1/teams/alpha/api-keys", map[string]string{"Authorization": "Bearer " + memA},
			`{"name":"x","scopes":["READ_TEAM_APPS"],"key":"` + k0 + `"}`, 400},
		{"key as a scope", "POST", "/v1/teams/alpha/api-keys", map[string]string{"Authorization": "Bearer " + memA},
			`{"name":"x","scopes":["` + k0 + `"]}`, 422},
		{"key in an invalid name", "POST", "/v1/teams/alpha/api-keys", map[string]string{"Authorization": "Bearer " + memA},
			`{"name":"` + k0 + `\u0000","scopes":["READ_TEAM_APPS"]}`, 400},
		{"key in a too long name", "POST", "/v1/teams/alpha/api-keys", map[string]string{"Authorization": "Bearer " + memA},
			`{"name":"` + k0 + k1 + `","scopes":["READ_TEAM_APPS"]}`, 400},
		{"key as a wrongly typed name", "POST", "/v1/teams/alpha/api-keys", map[string]string{"Authorization": "Bearer " + memA},
			`{"name":["` + k0 + `"],"scopes":["READ_TEAM_APPS"]}`, 400},
		{"key in malformed JSON", "POST", "/v1/teams/alpha/api-keys", map[string]string{"Authorization": "Bearer " + memA},
			`{"name":"` + k0, 400},
		{"key as trailing data", "POST", "/v1/teams/alpha/api-keys", map[string]string{"Authorization": "Bearer " + memA},
			`{"name":"x","scopes":["READ_TEAM_APPS"]}"` + k0 + `"`, 400},
		{"key as bare JSON value", "POST", "/v1/teams/alpha/api-keys", map[string]string{"Authorization": "Bearer " + memA},
			k0, 400},
		{"key as unknown field on api-access", "PUT", "/v1/teams/alpha/api-access", map[string]string{"Authorization": "Bearer " + sa},
			`{"enabled":true,"allowed_scopes":[],"max_keys":1,"` + k0 + `":true}`, 400},
		{"key as scope on api-access", "PUT", "/v1/teams/alpha/api-access", map[string]string{"Authorization": "Bearer " + sa},
			`{"enabled":true,"allowed_scopes":["` + k0 + `"],"max_keys":1}`, 400},
		{"key as webrtc value", "PUT", "/v1/platform/flags/webrtc", map[string]string{"Authorization": "Bearer " + sa},
			`{"enabled":"` + k0 + `"}`, 400},
		{"key as bearer token", "GET", "/v1/teams/alpha/api-keys", map[string]string{"Authorization": "Bearer " + k0}, "", 401},
		{"key as bearer token on create", "POST", "/v1/teams/alpha/api-keys", map[string]string{"Authorization": "Bearer " + k1},
			`{"name":"x","scopes":["READ_TEAM_APPS"]}`, 401},
		{"key as raw Authorization", "GET", "/v1/teams/alpha/api-keys", map[string]string{"Authorization": k0}, "", 401},
		{"key as Basic credentials", "GET", "/v1/platform/flags", map[string]string{"Authorization": "Basic " + k0}, "", 401},
		{"key in X-API-Key without token", "GET", "/v1/teams/alpha/api-keys", map[string]string{"X-API-Key": k0}, "", 401},
		{"key in X-API-Key with token", "GET", "/v1/teams/alpha/api-keys", map[string]string{"X-API-Key": k1, "Authorization": "Bearer " + memA}, "", 200},
		{"key in X-API-Key on a 404 route", "POST", "/v1/keys/lookup", map[string]string{"X-API-Key": k0, "Authorization": "Bearer " + sa},
			`{"key":"` + k1 + `","scope":"READ_TEAM_APPS"}`, 404},
		{"key verified by the verify endpoint", "POST", "/v1/keys/verify", map[string]string{"Authorization": "Bearer " + sa},
			`{"key":"` + k1 + `","scope":"READ_TEAM_APPS"}`, 200},
		{"key in an invalid verify request", "POST", "/v1/keys/verify", map[string]string{"Authorization": "Bearer " + sa},
			`{"key":"` + k1 + `","scope":"READ_TEAM_APPS","extra":"` + k0 + `"}`, 400},
		{"key as key id in the path", "DELETE", "/v1/teams/alpha/api-keys/" + k0, map[string]string{"Authorization": "Bearer " + memA}, "", 400},
		{"key in the path of a 404 route", "GET", "/v1/keys/" + k1, map[string]string{"Authorization": "Bearer " + sa}, "", 404},
		{"key in the query string", "GET", "/v1/teams/alpha/api-keys?key=" + k0 + "&api_key=" + k1, map[string]string{"Authorization": "Bearer " + memA}, "", 200},
	}
	for _, e := range errorPaths {
		var body []byte
		if e.body != "" {
			body = []byte(e.body)
		}
		r := sendWithHeaders(s, e.method, e.path, e.hdr, body)
		if r.status != e.status {
			t.Errorf("%s: status %d, want %d; body %s", e.name, r.status, e.status, r.body)
		}
		l.scan("response to "+e.name+" (body)", r.body)
		for k, vs := range r.header {
			for _, v := range vs {
				l.scan("response to "+e.name+" (header "+k+")", []byte(v))
			}
		}
	}

	// JetStream: every stream on the server (the event stream, the stream
	// behind every KV bucket, and whatever else there is), all it holds.
	js := s.js()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	var streams []string
	names := js.StreamNames(ctx)
	for n := range names.Name() {
		streams = append(streams, n)
	}
	if err := names.Err(); err != nil {
		t.Fatal(err)
	}
	slices.Sort(streams)
	for _, want := range []string{bus.EventStream, bus.KVStream(bus.BucketReadModel), bus.KVStream(bus.BucketSnapshots)} {
		if !slices.Contains(streams, want) {
			t.Fatalf("stream %s not found among %v", want, streams)
		}
	}
	msgs := map[string][]jetstream.Msg{}
	for _, st := range streams {
		msgs[st] = l.scanStream(js, st)
	}
	evs := msgs[bus.EventStream]
	if len(evs) == 0 {
		t.Fatal("the event stream is empty")
	}

	// Logs and metrics.
	logs := s.logs.String()
	l.scan("logs", []byte(logs))
	metrics := s.do("GET", "/metrics", "", nil)
	if metrics.status != 200 {
		t.Fatalf("metrics: %d", metrics.status)
	}
	l.scan("metrics", metrics.body)

	// Everything on disk: the embedded server's file store and whatever
	// else telkeys wrote to its data directory.
	files := 0
	err := filepath.WalkDir(s.cfg.DataDir, func(path string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		b, err := os.ReadFile(path)
		if err != nil {
			return err
		}
		files++
		rel, _ := filepath.Rel(s.cfg.DataDir, path)
		l.scan("data dir file "+rel, b)
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}

	// The scan looked at the right data: what telkeys does store about
	// each key is there.
	readModel := msgs[bus.KVStream(bus.BucketReadModel)]
	keySubjects := map[string]bool{}
	prefixes := map[string]int{}
	for _, m := range readModel {
		keySubjects[m.Subject()] = true
		for _, p := range []string{bus.TeamPrefix, bus.TeamKeysPrefix, bus.KeyPrefix} {
			if strings.HasPrefix(m.Subject(), bus.KVSubject(bus.BucketReadModel, p)) {
				prefixes[p]++
			}
		}
	}
	for i, k := range keys {
		h := apikey.HashOf(k.key)
		if !keySubjects[bus.KVSubject(bus.BucketReadModel, bus.KeyPrefix+hex.EncodeToString(h[:]))] {
			t.Errorf("key #%d: its SHA-256 is not a subject of KV_%s", i, bus.BucketReadModel)
		}
		inEvents := false
		for _, m := range evs {
			if bytes.Contains(m.Data(), h[:]) && bytes.Contains(m.Data(), []byte(k.id)) {
				inEvents = true
				break
			}
		}
		if !inEvents {
			t.Errorf("key #%d: no event holds its id and hash", i)
		}
	}
	// One entry (or, once deleted, tombstone) per key; three teams.
	if prefixes[bus.KeyPrefix] != len(keys) || prefixes[bus.TeamPrefix] != 3 || prefixes[bus.TeamKeysPrefix] != 3 {
		t.Errorf("KV_%s holds %v records by prefix, want %d keys and 3 of each team record", bus.BucketReadModel, prefixes, len(keys))
	}
	snaps := msgs[bus.KVStream(bus.BucketSnapshots)]
	if len(snaps) == 0 {
		t.Fatalf("KV_%s is empty after 41 events on team churn", bus.BucketSnapshots)
	}
	snapHasHash := false
	for _, m := range snaps {
		for _, k := range keys {
			if h := apikey.HashOf(k.key); k.team == "churn" && bytes.Contains(m.Data(), h[:]) {
				snapHasHash = true
			}
		}
	}
	if !snapHasHash {
		t.Error("no snapshot holds the hash of a churn key: the snapshot scan did not see key data")
	}
	if logs == "" {
		t.Fatal("no logs captured")
	}
	for _, want := range []string{
		`"path":"/v1/teams/alpha/api-keys"`,
		`"path":"/v1/teams/alpha/api-keys/` + deleted.id + `"`,
		`"path":"/v1/keys/verify"`,
		// The requests that put a key in the path are logged, redacted.
		`"path":"/v1/teams/alpha/api-keys/tk_[redacted]"`,
		`"path":"/v1/keys/tk_[redacted]"`,
	} {
		if !strings.Contains(logs, want) {
			t.Errorf("logs lack %s: the log scan did not see the access log", want)
		}
	}
	if !strings.Contains(string(metrics.body), "telkeys_http_requests_total") {
		t.Error("metrics lack telkeys_http_requests_total")
	}
	if files == 0 {
		t.Error("no file in the data dir")
	}

	// The scanner itself finds what it looks for, whole or in part.
	if got := l.find([]byte("prefix " + apikey.Random(keys[0].key) + " suffix")); len(got) != 1 || got[0] != "key #0 (random part)" {
		t.Fatalf("scanner self-check found %v", got)
	}
	if got := l.find([]byte(keys[1].key)); len(got) != 2 {
		t.Fatalf("scanner self-check found %v", got)
	}

	total := 0
	for _, n := range l.scanned {
		total += n
	}
	t.Logf("%d keys (%d secrets) scanned against %d bytes in %d places: %d streams %v, %d events, %d read-model and %d snapshot messages, %d log bytes, %d data files; %d hits",
		len(keys), len(l.needles), total, len(l.scanned), len(streams), streams, len(evs), len(readModel), len(snaps), len(logs), files, l.hits)
}
