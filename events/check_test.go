package events

import (
	"crypto/ed25519"
	"crypto/rand"
	"errors"
	"testing"
	"time"
)

func newSigner(t testing.TB) *Signer {
	t.Helper()
	_, key, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	return NewSigner(key)
}

// signed returns the wire form of a signed event of acme after prev.
func signed(t testing.TB, s *Signer, id string, prev []byte, p Payload) (Envelope, []byte) {
	t.Helper()
	e, err := New(id, TeamAggregate("acme"), Actor{Subject: "alice", Role: "member"}, testTime, prev, p)
	if err != nil {
		t.Fatal(err)
	}
	s.Seal(&e)
	b, err := e.Marshal()
	if err != nil {
		t.Fatal(err)
	}
	return e, b
}

var testKey = KeyCreated{KeyID: "key_1", Name: "k", Scopes: []string{"READ_TEAM_APPS"}, Hash: make([]byte, 32), Last4: "abcd"}

// TestChain: every way a stored message can fail the one validity check,
// each with its reason, and that a rejection changes nothing: the next
// valid event still follows the last valid one.
func TestChain(t *testing.T) {
	s, other := newSigner(t), newSigner(t)
	keys := NewKeys(s.PublicKey())
	acme := TeamAggregate("acme")
	configured := TeamAccessConfigured{AccessConfig: AccessConfig{Enabled: true, AllowedScopes: []string{"READ_TEAM_APPS"}, MaxKeys: 5}}
	first, firstWire := signed(t, s, "evt_1", nil, configured)

	unsigned, _ := New("evt_2", acme, Actor{}, testTime, first.Hash, testKey)
	unsignedWire, _ := unsigned.Marshal()
	_, otherWire := signed(t, other, "evt_2", first.Hash, testKey)
	_, brokenWire := signed(t, s, "evt_2", []byte("not the last hash"), testKey)
	badSig, _ := New("evt_2", acme, Actor{}, testTime, first.Hash, testKey)
	s.Seal(&badSig)
	badSig.Sig[0] ^= 1
	badSigWire, _ := badSig.Marshal()
	altered, _ := New("evt_2", acme, Actor{}, testTime, first.Hash, testKey)
	s.Seal(&altered)
	altered.Actor.Subject = "mallory"
	alteredWire, _ := altered.Marshal()
	_, noHashWire := signed(t, s, "evt_2", first.Hash, KeyCreated{KeyID: "key_1", Hash: []byte("short")})

	chain := NewChain(keys)
	if _, _, err := chain.Check(acme, firstWire); err != nil {
		t.Fatalf("a valid first event: %v", err)
	}
	for _, c := range []struct {
		name, aggregate string
		data            []byte
		reason          string
	}{
		{"junk", acme, []byte("hello"), ReasonMalformed},
		{"an event of another aggregate", TeamAggregate("beta"), firstWire, ReasonWrongSubject},
		{"unsigned", acme, unsignedWire, ReasonUnsigned},
		{"signed with another key", acme, otherWire, ReasonUntrustedKey},
		{"a signature that does not verify", acme, badSigWire, ReasonBadSignature},
		{"altered after signing", acme, alteredWire, ReasonBadHash},
		{"a payload outside its schema", acme, noHashWire, ReasonMalformed},
		{"a broken chain", acme, brokenWire, ReasonOutOfPlace},
		{"the first event again (a replay)", acme, firstWire, ReasonOutOfPlace},
	} {
		t.Run(c.name, func(t *testing.T) {
			_, _, err := chain.Check(c.aggregate, c.data)
			var bad *Invalid
			if !errors.As(err, &bad) || bad.Reason != c.reason {
				t.Fatalf("got %v, want reason %s", err, c.reason)
			}
		})
	}
	second, secondWire := signed(t, s, "evt_2", first.Hash, testKey)
	if _, p, err := chain.Check(acme, secondWire); err != nil || p.(KeyCreated).KeyID != "key_1" {
		t.Fatalf("the valid next event after rejections: %v", err)
	}
	if string(chain.Last(acme)) != string(second.Hash) {
		t.Fatal("the chain did not move to the last valid event")
	}

	// A chain restored from a snapshot goes on from there; a rotated key
	// is trusted while both are listed.
	restored := NewChain(NewKeys(other.PublicKey(), s.PublicKey()))
	restored.Restore(acme, second.Hash)
	_, rotated := signed(t, other, "evt_3", second.Hash, KeyDeleted{KeyID: "key_1", Hash: make([]byte, 32)})
	if _, _, err := restored.Check(acme, rotated); err != nil {
		t.Fatalf("an event by the new key after a restore: %v", err)
	}
}

func TestHeartbeat(t *testing.T) {
	s, other := newSigner(t), newSigner(t)
	keys := NewKeys(s.PublicKey())
	at := time.Unix(1_700_000_000, 123)
	seq, got, err := keys.CheckHeartbeat(s.SignHeartbeat(42, at))
	if err != nil || seq != 42 || !got.Equal(at) {
		t.Fatalf("%d %v %v", seq, got, err)
	}
	forged := other.SignHeartbeat(1<<62, at)
	if _, _, err := keys.CheckHeartbeat(forged); !errors.Is(err, ErrUntrustedKey) {
		t.Fatalf("a heartbeat by another key: %v", err)
	}
	for _, junk := range []string{"", "18446744073709551615", "1 2 3 zz", "1 2 " + s.KeyID() + " 00"} {
		if _, _, err := keys.CheckHeartbeat([]byte(junk)); err == nil {
			t.Fatalf("accepted %q", junk)
		}
	}
}

// FuzzCheck runs arbitrary stored messages through the one validity
// check: it never panics, and only the signed seeds are ever valid.
func FuzzCheck(f *testing.F) {
	s := newSigner(f)
	_, valid := signed(f, s, "evt_1", nil, testKey)
	f.Add(valid)
	f.Add([]byte("junk"))
	for _, seed := range fuzzSeeds(f) {
		f.Add(seed)
	}
	keys := NewKeys(s.PublicKey())
	f.Fuzz(func(t *testing.T, data []byte) {
		e, _, err := NewChain(keys).Check(TeamAggregate("acme"), data)
		var bad *Invalid
		if err != nil && !errors.As(err, &bad) {
			t.Fatalf("error %v is not *Invalid", err)
		}
		if err == nil && keys.Verify(e.KeyID, e.ComputeHash(), e.Sig) != nil {
			t.Fatal("accepted an event whose signature does not verify")
		}
	})
}

// TestRememberedSignatures: a signature that verified is not checked
// again, but only the same key id, message and signature, byte for byte,
// count as seen: a changed bit in either, or another key's id, is checked
// (and refused) as before.
func TestRememberedSignatures(t *testing.T) {
	s, other := newSigner(t), newSigner(t)
	keys := NewKeys(s.PublicKey(), other.PublicKey())
	e, _ := signed(t, s, "evt_1", nil, testKey)
	if err := keys.Verify(e.KeyID, e.Hash, e.Sig); err != nil {
		t.Fatal(err)
	}
	if !keys.seen.has(e.KeyID, e.Hash, e.Sig) {
		t.Fatal("a verified signature is not remembered")
	}
	if err := keys.Verify(e.KeyID, e.Hash, e.Sig); err != nil {
		t.Fatalf("again: %v", err)
	}
	flip := func(b []byte, i int) []byte { c := append([]byte(nil), b...); c[i] ^= 1; return c }
	for name, try := range map[string]func() error{
		"signature changed": func() error { return keys.Verify(e.KeyID, e.Hash, flip(e.Sig, 63)) },
		"message changed":   func() error { return keys.Verify(e.KeyID, flip(e.Hash, 31), e.Sig) },
		"another key's id":  func() error { return keys.Verify(other.KeyID(), e.Hash, e.Sig) },
	} {
		if err := try(); !errors.Is(err, ErrBadSignature) {
			t.Errorf("%s: %v, want ErrBadSignature", name, err)
		}
	}
	if err := keys.Verify("0123456789abcdef", e.Hash, e.Sig); !errors.Is(err, ErrUntrustedKey) {
		t.Errorf("an untrusted key id: %v", err)
	}
}

// TestCheckContent: everything but the signature itself. A bad signature
// passes it (VerifyHead then refuses it), an untrusted or missing key id
// does not.
func TestCheckContent(t *testing.T) {
	s, other := newSigner(t), newSigner(t)
	keys := NewKeys(s.PublicKey())
	e, _ := signed(t, s, "evt_1", nil, testKey)
	e.Sig[3] ^= 1
	bad, err := e.Marshal()
	if err != nil {
		t.Fatal(err)
	}
	if _, _, err := keys.Check(TeamAggregate("acme"), bad); !errors.Is(err, ErrBadSignature) {
		t.Fatalf("Check of a bad signature: %v", err)
	}
	got, p, err := keys.CheckContent(TeamAggregate("acme"), bad)
	if err != nil || p == nil {
		t.Fatalf("CheckContent of a bad signature: %v", err)
	}
	if err := keys.VerifyHead(got); !errors.Is(err, ErrBadSignature) {
		t.Fatalf("VerifyHead of a bad signature: %v", err)
	}
	_, untrusted := signed(t, other, "evt_2", nil, testKey)
	if _, _, err := keys.CheckContent(TeamAggregate("acme"), untrusted); !errors.Is(err, ErrUntrustedKey) {
		t.Fatalf("CheckContent of another key's event: %v", err)
	}
}
