package keyauth

import (
	"testing"

	"github.com/telapi/telkeys/apikey"
)

// TestKeysSharingAHashPrefix: the key map is indexed by the first 8 bytes
// of the hash; keys that share them must still be told apart, replaced and
// dropped one by one.
func TestKeysSharingAHashPrefix(t *testing.T) {
	var st state
	st.init(nil)
	tm := st.team("acme")
	var hs [3]apikey.Hash
	for i := range hs {
		hs[i][31] = byte(i + 1) // same first 8 bytes, different hashes
	}
	for i, h := range hs {
		st.putKey(h, &key{id: "k" + string(rune('0'+i)), team: tm})
	}
	if n := st.keysCount.Load(); n != 3 {
		t.Fatalf("count %d, want 3", n)
	}
	for i, h := range hs {
		if k := st.lookup(h); k == nil || k.id != "k"+string(rune('0'+i)) {
			t.Fatalf("lookup %d: %+v", i, k)
		}
	}
	st.putKey(hs[1], &key{id: "k1-again", team: tm}) // replaces, does not add
	if n := st.keysCount.Load(); n != 3 || st.lookup(hs[1]).id != "k1-again" {
		t.Fatalf("after replace: count %d, key %q", n, st.lookup(hs[1]).id)
	}
	var other apikey.Hash
	other[0], other[31] = 9, 1
	if st.lookup(other) != nil {
		t.Fatal("a hash never stored was found")
	}
	st.dropKey(hs[1]) // the middle of the chain
	st.dropKey(hs[0])
	if st.lookup(hs[1]) != nil || st.lookup(hs[0]) != nil || st.lookup(hs[2]) == nil {
		t.Fatal("drop removed the wrong keys")
	}
	seen := 0
	st.eachKey(func(*key) { seen++ })
	if n := st.keysCount.Load(); n != 1 || seen != 1 {
		t.Fatalf("count %d, eachKey %d, want 1", n, seen)
	}
	st.dropKey(hs[2])
	st.dropKey(hs[2]) // twice: no effect
	if n := st.keysCount.Load(); n != 0 || len(st.keys[0].m) != 0 {
		t.Fatalf("count %d after dropping all, shard map %d", n, len(st.keys[0].m))
	}
}
