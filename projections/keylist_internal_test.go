package projections

import (
	"testing"
	"time"

	"github.com/vmihailenco/msgpack/v5"
)

// TestKeyListEncoding: a key list built from kept record encodings decodes
// to the same TeamKeysRecord as the records it holds, after adds and a
// removal, and an empty one too.
func TestKeyListEncoding(t *testing.T) {
	at := time.Date(2026, 11, 26, 10, 0, 0, 123, time.UTC)
	rec := func(id string) KeyRecord {
		return KeyRecord{Seq: 7, ID: id, Team: "acme", Name: "ключ " + id, Scopes: []string{"READ_TEAM_APPS"}, Hash: "ab", Last4: "Zz09", CreatedAt: at}
	}
	l := newKeyList(TeamKeysRecord{Seq: 3, Keys: []KeyRecord{rec("a")}})
	for _, id := range []string{"b", "c"} {
		k := rec(id)
		l.add(k, mustMarshal(k))
	}
	l.remove("b")
	l.remove("nope")
	l.seq = 9
	var got TeamKeysRecord
	if err := msgpack.Unmarshal(l.encode(), &got); err != nil {
		t.Fatal(err)
	}
	if got.Seq != 9 || len(got.Keys) != 2 || got.Keys[0].ID != "a" || got.Keys[1].ID != "c" ||
		got.Keys[1].Name != "ключ c" || !got.Keys[1].CreatedAt.Equal(at) || got.Keys[0].Scopes[0] != "READ_TEAM_APPS" {
		t.Fatalf("decoded %+v", got)
	}
	var empty TeamKeysRecord
	if err := msgpack.Unmarshal((&keyList{seq: 1}).encode(), &empty); err != nil || empty.Seq != 1 || len(empty.Keys) != 0 {
		t.Fatalf("empty list: %+v, %v", empty, err)
	}
}
