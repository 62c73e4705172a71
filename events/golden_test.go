package events

import (
	"os"
	"path/filepath"
	"reflect"
	"testing"
	"time"

	"github.com/vmihailenco/msgpack/v5"
)

// goldenFile holds events as every version of telkeys wrote them. It is
// kept forever: new versions add files, never change old ones, and every
// file must keep decoding (schema evolution). UPDATE_GOLDEN=1 writes it only
// if it does not exist; a new schema version gets a new file and a test.
const goldenFile = "testdata/golden-events-v1.msgpack"

// goldenV1 is what goldenFile holds, decoded.
func goldenV1() []struct {
	Aggregate string
	Payload   Payload
} {
	limit := int64(5000)
	return []struct {
		Aggregate string
		Payload   Payload
	}{
		{PlatformAggregate, PlatformFlagSet{Flag: "webrtc", Enabled: false}},
		{TeamAggregate("acme"), TeamAccessConfigured{AccessConfig: AccessConfig{Enabled: true, AllowedScopes: []string{"CREATE_CALL_TOKEN", "READ_TEAM_APPS"}, MaxKeys: 2, MaxRequestsPerDay: &limit}}},
		{TeamAggregate("acme"), KeyCreated{KeyID: "key_01JBQ3V9P8D1XG7S3M6Y2N4K5T", Name: "backend é", Scopes: []string{"READ_TEAM_APPS"}, Hash: make([]byte, 32), Last4: "Ab12"}},
		{TeamAggregate("acme"), KeyDeleted{KeyID: "key_01JBQ3V9P8D1XG7S3M6Y2N4K5T", Hash: make([]byte, 32)}},
		{TeamAggregate("acme"), TeamAccessConfigured{AccessConfig: AccessConfig{Enabled: false, AllowedScopes: []string{}, MaxKeys: 0}}},
		{PlatformAggregate, PlatformFlagSet{Flag: "webrtc", Enabled: true}},
	}
}

func TestGoldenEventsStillDecode(t *testing.T) {
	if os.Getenv("UPDATE_GOLDEN") == "1" {
		writeGolden(t)
	}
	raw, err := os.ReadFile(goldenFile)
	if err != nil {
		t.Fatal(err)
	}
	var msgs [][]byte
	if err := msgpack.Unmarshal(raw, &msgs); err != nil {
		t.Fatal(err)
	}
	want := goldenV1()
	if len(msgs) != len(want) {
		t.Fatalf("%d golden events, want %d", len(msgs), len(want))
	}
	last := map[string][]byte{}
	for i, b := range msgs {
		e, err := Unmarshal(b)
		if err != nil {
			t.Fatalf("event %d: %v", i, err)
		}
		if err := e.Verify(last[e.Aggregate]); err != nil {
			t.Fatalf("event %d: %v", i, err)
		}
		last[e.Aggregate] = e.Hash
		p, err := e.Decode()
		if err != nil {
			t.Fatalf("event %d: %v", i, err)
		}
		if e.Aggregate != want[i].Aggregate || !reflect.DeepEqual(p, want[i].Payload) {
			t.Fatalf("event %d decodes to %s %#v, want %s %#v", i, e.Aggregate, p, want[i].Aggregate, want[i].Payload)
		}
	}
}

func writeGolden(t *testing.T) {
	if _, err := os.Stat(goldenFile); err == nil {
		t.Fatalf("%s exists: golden files are never rewritten", goldenFile)
	}
	last := map[string][]byte{}
	var msgs [][]byte
	at := time.Date(2026, 11, 26, 12, 0, 0, 123456789, time.UTC)
	for i, g := range goldenV1() {
		e, err := New("evt_01JBQ3V9P8D1XG7S3M6Y2N4K"+string(rune('A'+i))+"0", g.Aggregate, Actor{Subject: "golden", Role: "superadmin"}, at.Add(time.Duration(i)*time.Second), last[g.Aggregate], g.Payload)
		if err != nil {
			t.Fatal(err)
		}
		last[g.Aggregate] = e.Hash
		b, err := e.Marshal()
		if err != nil {
			t.Fatal(err)
		}
		msgs = append(msgs, b)
	}
	out, err := msgpack.Marshal(msgs)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.MkdirAll(filepath.Dir(goldenFile), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(goldenFile, out, 0o644); err != nil {
		t.Fatal(err)
	}
}
