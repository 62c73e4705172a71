package events

import (
	"os"
	"path/filepath"
	"reflect"
	"testing"
	"time"

	"github.com/vmihailenco/msgpack/v5"
)

// The golden files hold events as every version of telkeys wrote them.
// They are kept forever: new versions add files, never change old ones, and
// every file must keep decoding (schema evolution). UPDATE_GOLDEN=1 writes
// the ones that do not exist yet.
var goldenFiles = []struct {
	file   string
	events func() []golden
}{
	{"testdata/golden-events-v1.msgpack", goldenV1},
	// The key lifecycle (expiry, roll, disable, leak reports).
	{"testdata/golden-events-v2-lifecycle.msgpack", goldenV2},
}

type golden struct {
	Aggregate string
	Payload   Payload
}

// goldenV2 is the key lifecycle's events.
func goldenV2() []golden {
	at := time.Date(2027, 1, 31, 8, 30, 0, 0, time.UTC)
	grace := time.Date(2026, 11, 27, 12, 0, 0, 0, time.UTC)
	off, name := false, "renamed ü"
	old := KeyCreated{KeyID: "key_01JBQ3V9P8D1XG7S3M6Y2N4K5V", Name: "expiring", Scopes: []string{"READ_CALL_TOKEN"}, Hash: make([]byte, 32), Last4: "Zz90", ExpiresAt: &at}
	newHash := make([]byte, 32)
	newHash[0] = 1
	return []golden{
		{TeamAggregate("acme"), old},
		{TeamAggregate("acme"), KeyRolled{
			KeyCreated: KeyCreated{KeyID: "key_01JBQ3V9P8D1XG7S3M6Y2N4K5W", Name: "expiring", Scopes: []string{"READ_CALL_TOKEN"}, Hash: newHash, Last4: "Yy81"},
			Replaces:   old.KeyID, ReplacedHash: old.Hash, GraceUntil: grace,
		}},
		{TeamAggregate("acme"), KeyUpdated{KeyID: "key_01JBQ3V9P8D1XG7S3M6Y2N4K5W", Hash: newHash, Enabled: &off, Name: &name}},
		{TeamAggregate("acme"), KeyLeaked{KeyID: "key_01JBQ3V9P8D1XG7S3M6Y2N4K5W", Hash: newHash, URL: "https://github.com/octo/repo/blob/main/.env", Source: "content", Reporter: "github", Revoked: true}},
	}
}

// goldenV1 is the first telkeys's events.
func goldenV1() []golden {
	limit := int64(5000)
	return []golden{
		{PlatformAggregate, PlatformFlagSet{Flag: "webrtc", Enabled: false}},
		{TeamAggregate("acme"), TeamAccessConfigured{AccessConfig: AccessConfig{Enabled: true, AllowedScopes: []string{"CREATE_CALL_TOKEN", "READ_TEAM_APPS"}, MaxKeys: 2, MaxRequestsPerDay: &limit}}},
		{TeamAggregate("acme"), KeyCreated{KeyID: "key_01JBQ3V9P8D1XG7S3M6Y2N4K5T", Name: "backend é", Scopes: []string{"READ_TEAM_APPS"}, Hash: make([]byte, 32), Last4: "Ab12"}},
		{TeamAggregate("acme"), KeyDeleted{KeyID: "key_01JBQ3V9P8D1XG7S3M6Y2N4K5T", Hash: make([]byte, 32)}},
		{TeamAggregate("acme"), TeamAccessConfigured{AccessConfig: AccessConfig{Enabled: false, AllowedScopes: []string{}, MaxKeys: 0}}},
		{PlatformAggregate, PlatformFlagSet{Flag: "webrtc", Enabled: true}},
	}
}

func TestGoldenEventsStillDecode(t *testing.T) {
	for _, g := range goldenFiles {
		t.Run(filepath.Base(g.file), func(t *testing.T) { checkGolden(t, g.file, g.events()) })
	}
}

func checkGolden(t *testing.T, goldenFile string, want []golden) {
	if _, err := os.Stat(goldenFile); err != nil && os.Getenv("UPDATE_GOLDEN") == "1" {
		writeGolden(t, goldenFile, want)
	}
	raw, err := os.ReadFile(goldenFile)
	if err != nil {
		t.Fatal(err)
	}
	var msgs [][]byte
	if err := msgpack.Unmarshal(raw, &msgs); err != nil {
		t.Fatal(err)
	}
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

func writeGolden(t *testing.T, goldenFile string, events []golden) {
	last := map[string][]byte{}
	var msgs [][]byte
	at := time.Date(2026, 11, 26, 12, 0, 0, 123456789, time.UTC)
	for i, g := range events {
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
