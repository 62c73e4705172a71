package events

import (
	"bytes"
	"errors"
	"fmt"
	"reflect"
	"runtime"
	"testing"
	"time"

	"github.com/vmihailenco/msgpack/v5"
)

var testTime = time.Date(2026, 3, 14, 15, 9, 26, 535897932, time.UTC)

// samplePayloads has one value of every payload type in the catalogue, with
// every field set so that a lost field shows up as a difference.
func samplePayloads() []Payload {
	return []Payload{
		PlatformFlagSet{Flag: "webrtc", Enabled: true},
		TeamAccessConfigured{AccessConfig: AccessConfig{
			Enabled:           true,
			AllowedScopes:     []string{"CREATE_CALL_TOKEN", "READ_TEAM_APPS"},
			MaxKeys:           5,
			MaxRequestsPerDay: new(int64(10000)),
		}},
		KeyCreated{
			KeyID:  "key_01J0000000000000000000000A",
			Name:   "CI pipeline",
			Scopes: []string{"READ_CALL_TOKEN"},
			Hash:   bytes.Repeat([]byte{0xab}, 32),
			Last4:  "x9Zq",
		},
		KeyDeleted{KeyID: "key_01J0000000000000000000000A", Hash: bytes.Repeat([]byte{0xcd}, 32)},
	}
}

func aggregateFor(p Payload) string {
	if p.EventType() == TypePlatformFlagSet {
		return PlatformAggregate
	}
	return TeamAggregate("acme")
}

var testActor = Actor{Subject: "alice", Role: "member"}

func mustNew(t testing.TB, id, agg string, prev []byte, p Payload) Envelope {
	t.Helper()
	e, err := New(id, agg, testActor, testTime, prev, p)
	if err != nil {
		t.Fatalf("New(%s): %v", p.EventType(), err)
	}
	return e
}

func TestRoundTripEveryType(t *testing.T) {
	for _, p := range samplePayloads() {
		t.Run(string(p.EventType()), func(t *testing.T) {
			prev := bytes.Repeat([]byte{7}, 32)
			e := mustNew(t, "01J00000000000000000000000", aggregateFor(p), prev, p)
			if e.Type != p.EventType() || e.Version != p.SchemaVersion() || len(e.Hash) != 32 {
				t.Fatalf("envelope = %+v", e)
			}
			if err := e.Verify(prev); err != nil {
				t.Fatalf("Verify fresh envelope: %v", err)
			}

			b, err := e.Marshal()
			if err != nil {
				t.Fatal(err)
			}
			got, err := Unmarshal(b)
			if err != nil {
				t.Fatalf("Unmarshal: %v", err)
			}
			if got.ID != e.ID || got.Type != e.Type || got.Aggregate != e.Aggregate || got.Actor != e.Actor ||
				!got.Time.Equal(e.Time) || got.Time.Location() != time.UTC || got.Version != e.Version ||
				!bytes.Equal(got.Prev, e.Prev) || !bytes.Equal(got.Hash, e.Hash) || !bytes.Equal(got.Payload, e.Payload) {
				t.Fatalf("round trip changed the envelope:\n got %+v\nwant %+v", got, e)
			}
			if err := got.Verify(prev); err != nil {
				t.Fatalf("Verify after round trip: %v", err)
			}
			if !bytes.Equal(got.ComputeHash(), e.Hash) {
				t.Fatal("hash of the decoded envelope differs from the sealed one")
			}

			dec, err := got.Decode()
			if err != nil {
				t.Fatalf("Decode: %v", err)
			}
			if !reflect.DeepEqual(dec, p) {
				t.Fatalf("Decode = %#v, want %#v", dec, p)
			}
		})
	}
}

func TestNewNormalisesTimeAndCopiesPrev(t *testing.T) {
	loc := time.FixedZone("X", 5*3600)
	at := time.Now().In(loc) // carries a monotonic reading
	prev := []byte{1, 2, 3}
	e, err := New("id", TeamAggregate("acme"), testActor, at, prev, KeyDeleted{KeyID: "k"})
	if err != nil {
		t.Fatal(err)
	}
	if e.Time.Location() != time.UTC || !e.Time.Equal(at) || e.Time != e.Time.Round(0) {
		t.Fatalf("Time = %v, want %v in UTC without monotonic reading", e.Time, at)
	}
	prev[0] = 9 // the caller's buffer must not alias the sealed envelope
	if err := e.Verify([]byte{1, 2, 3}); err != nil {
		t.Fatalf("Verify after the caller reused its prev buffer: %v", err)
	}
}

func TestHashChain(t *testing.T) {
	agg := TeamAggregate("acme")
	payloads := []Payload{
		TeamAccessConfigured{AccessConfig: AccessConfig{Enabled: true, AllowedScopes: []string{"CREATE_CALL_TOKEN"}, MaxKeys: 3}},
		KeyCreated{KeyID: "key_1", Name: "one", Scopes: []string{"CREATE_CALL_TOKEN"}, Hash: []byte{1}, Last4: "aaaa"},
		KeyCreated{KeyID: "key_2", Name: "two", Scopes: []string{"CREATE_CALL_TOKEN"}, Hash: []byte{2}, Last4: "bbbb"},
		KeyDeleted{KeyID: "key_1", Hash: []byte{1}},
		TeamAccessConfigured{AccessConfig: AccessConfig{Enabled: false, AllowedScopes: []string{"CREATE_CALL_TOKEN"}, MaxKeys: 3}},
	}
	var chain []Envelope
	var prev []byte
	for i, p := range payloads {
		e, err := New(fmt.Sprintf("id%d", i), agg, testActor, testTime.Add(time.Duration(i)*time.Second), prev, p)
		if err != nil {
			t.Fatal(err)
		}
		chain = append(chain, e)
		prev = e.Hash
	}

	// Every link, checked as an auditor would: from the wire.
	var last []byte
	for i, e := range chain {
		if i == 0 && len(e.Prev) != 0 {
			t.Fatalf("first event has Prev %x", e.Prev)
		}
		if i > 0 && !bytes.Equal(e.Prev, chain[i-1].Hash) {
			t.Fatalf("event %d: Prev %x, want previous Hash %x", i, e.Prev, chain[i-1].Hash)
		}
		b, err := e.Marshal()
		if err != nil {
			t.Fatal(err)
		}
		w, err := Unmarshal(b)
		if err != nil {
			t.Fatal(err)
		}
		if err := w.Verify(last); err != nil {
			t.Fatalf("event %d: Verify: %v", i, err)
		}
		last = w.Hash
	}
	for i := 1; i < len(chain); i++ {
		if bytes.Equal(chain[i].Hash, chain[i-1].Hash) {
			t.Fatalf("events %d and %d share a hash", i-1, i)
		}
	}

	mid := chain[2]
	midPrev := chain[1].Hash

	// Verify against the wrong predecessor: a reordered or dropped event.
	if err := mid.Verify(chain[0].Hash); !errors.Is(err, ErrBrokenChain) {
		t.Fatalf("Verify(wrong prev) = %v, want ErrBrokenChain", err)
	}
	if err := mid.Verify(nil); !errors.Is(err, ErrBrokenChain) {
		t.Fatalf("Verify(nil prev) = %v, want ErrBrokenChain", err)
	}

	tampers := []struct {
		name string
		mut  func(*Envelope)
	}{
		{"payload byte", func(e *Envelope) {
			p := bytes.Clone(e.Payload)
			p[len(p)-1] ^= 0x01
			e.Payload = p
		}},
		{"payload replaced", func(e *Envelope) {
			b, _ := msgpack.Marshal(KeyCreated{KeyID: "key_2", Name: "evil", Scopes: []string{"CREATE_CALL_TOKEN"}, Hash: []byte{2}, Last4: "bbbb"})
			e.Payload = b
		}},
		{"type", func(e *Envelope) { e.Type = TypeKeyDeleted }},
		{"actor subject", func(e *Envelope) { e.Actor.Subject = "mallory" }},
		{"actor role", func(e *Envelope) { e.Actor.Role = "superadmin" }},
		{"time", func(e *Envelope) { e.Time = e.Time.Add(time.Nanosecond) }},
		{"prev", func(e *Envelope) { e.Prev = chain[0].Hash }},
		{"prev emptied", func(e *Envelope) { e.Prev = nil }},
		{"id", func(e *Envelope) { e.ID = "other" }},
		{"aggregate", func(e *Envelope) { e.Aggregate = TeamAggregate("other") }},
		{"version", func(e *Envelope) { e.Version++ }},
		{"hash", func(e *Envelope) {
			h := bytes.Clone(e.Hash)
			h[0] ^= 0xff
			e.Hash = h
		}},
		{"hash removed", func(e *Envelope) { e.Hash = nil }},
	}
	for _, tc := range tampers {
		t.Run(tc.name, func(t *testing.T) {
			e := mid
			tc.mut(&e)
			if err := e.Verify(midPrev); !errors.Is(err, ErrBadHash) {
				t.Fatalf("Verify after tampering with %s = %v, want ErrBadHash", tc.name, err)
			}
			// The same tampering survives the wire and is still caught.
			b, err := e.Marshal()
			if err != nil {
				t.Fatal(err)
			}
			w, err := Unmarshal(b)
			if err != nil {
				t.Fatal(err)
			}
			if err := w.Verify(midPrev); !errors.Is(err, ErrBadHash) {
				t.Fatalf("Verify after wire round trip = %v, want ErrBadHash", err)
			}
			// A forger who also recomputes the hash gets a self-consistent
			// event that no longer links to its predecessor, or that breaks
			// the next event's link.
			e.Hash = e.ComputeHash()
			if err := e.Verify(e.Prev); err != nil {
				t.Fatalf("resealed event does not verify against its own prev: %v", err)
			}
			if !bytes.Equal(e.Prev, midPrev) {
				if err := e.Verify(midPrev); !errors.Is(err, ErrBrokenChain) {
					t.Fatalf("resealed event with a moved prev: Verify = %v, want ErrBrokenChain", err)
				}
			}
			if bytes.Equal(e.Hash, mid.Hash) { // only the hash was touched: resealing restores it
				return
			}
			if err := chain[3].Verify(e.Hash); !errors.Is(err, ErrBrokenChain) {
				t.Fatalf("next event after a resealed forgery: Verify = %v, want ErrBrokenChain", err)
			}
		})
	}

	// Tampering with the stored bytes of a payload field (not the struct).
	b, err := mid.Marshal()
	if err != nil {
		t.Fatal(err)
	}
	i := bytes.Index(b, []byte("two"))
	if i < 0 {
		t.Fatal("name not found in wire form")
	}
	b = bytes.Clone(b)
	copy(b[i:], "TWO")
	w, err := Unmarshal(b)
	if err != nil {
		t.Fatal(err)
	}
	if err := w.Verify(midPrev); !errors.Is(err, ErrBadHash) {
		t.Fatalf("Verify after editing wire bytes = %v, want ErrBadHash", err)
	}
}

func TestUnknownFieldsTolerated(t *testing.T) {
	payload, err := msgpack.Marshal(map[string]any{
		"key_id":      "key_01J0000000000000000000000A",
		"name":        "from the future",
		"scopes":      []string{"CREATE_CALL_TOKEN"},
		"hash":        []byte{1, 2, 3},
		"last4":       "abcd",
		"rotate_at":   "2030-01-01T00:00:00Z", // unknown to this binary
		"labels":      map[string]any{"env": "prod"},
		"nested_list": []any{1, "two", nil},
	})
	if err != nil {
		t.Fatal(err)
	}
	prev := []byte{9, 9, 9}
	known := Envelope{
		ID:        "01J00000000000000000000000",
		Type:      TypeKeyCreated,
		Aggregate: TeamAggregate("acme"),
		Actor:     Actor{Subject: "alice", Role: "member"},
		Time:      testTime,
		Version:   1,
		Prev:      prev,
		Payload:   payload,
	}
	hash := known.ComputeHash()
	wire, err := msgpack.Marshal(map[string]any{
		"id":      known.ID,
		"type":    string(known.Type),
		"agg":     known.Aggregate,
		"actor":   map[string]any{"sub": "alice", "role": "member", "ip": "10.0.0.1"},
		"time":    testTime,
		"v":       1,
		"prev":    prev,
		"hash":    hash,
		"payload": msgpack.RawMessage(payload),
		// Unknown envelope fields from a newer writer.
		"trace_id": "abc123",
		"v2_meta":  map[string]any{"shard": 7, "tags": []string{"a"}},
		"zzz":      nil,
	})
	if err != nil {
		t.Fatal(err)
	}
	e, err := Unmarshal(wire)
	if err != nil {
		t.Fatalf("Unmarshal with unknown fields: %v", err)
	}
	if e.ID != known.ID || e.Type != known.Type || e.Aggregate != known.Aggregate || e.Actor != known.Actor ||
		!e.Time.Equal(testTime) || e.Version != 1 || !bytes.Equal(e.Prev, prev) || !bytes.Equal(e.Hash, hash) {
		t.Fatalf("known fields lost: %+v", e)
	}
	if err := e.Verify(prev); err != nil {
		t.Fatalf("Verify: %v", err)
	}
	p, err := e.Decode()
	if err != nil {
		t.Fatalf("Decode with unknown payload fields: %v", err)
	}
	want := KeyCreated{
		KeyID:  "key_01J0000000000000000000000A",
		Name:   "from the future",
		Scopes: []string{"CREATE_CALL_TOKEN"},
		Hash:   []byte{1, 2, 3},
		Last4:  "abcd",
	}
	if !reflect.DeepEqual(p, want) {
		t.Fatalf("Decode = %#v, want %#v", p, want)
	}
}

func TestUnknownType(t *testing.T) {
	e := Envelope{ID: "id", Type: "KeyRotated", Aggregate: TeamAggregate("acme"), Payload: []byte{0x80}}
	e.Hash = e.ComputeHash()
	b, err := e.Marshal()
	if err != nil {
		t.Fatal(err)
	}
	w, err := Unmarshal(b) // an unknown type is not malformed: readers skip it
	if err != nil {
		t.Fatalf("Unmarshal: %v", err)
	}
	if err := w.Verify(nil); err != nil {
		t.Fatalf("Verify: %v", err)
	}
	p, err := w.Decode()
	if !errors.Is(err, ErrUnknownType) || p != nil {
		t.Fatalf("Decode = %v, %v; want nil, ErrUnknownType", p, err)
	}
	if errors.Is(err, ErrMalformed) {
		t.Fatalf("unknown type reported as malformed: %v", err)
	}
}

func TestUnmarshalRejectsMalformed(t *testing.T) {
	good, err := mustNew(t, "id", TeamAggregate("acme"), nil, KeyDeleted{KeyID: "k"}).Marshal()
	if err != nil {
		t.Fatal(err)
	}
	missing := func(drop string) []byte {
		m := map[string]any{"id": "id", "type": "KeyDeleted", "agg": "team.acme"}
		delete(m, drop)
		b, _ := msgpack.Marshal(m)
		return b
	}
	cases := map[string][]byte{
		"empty":       nil,
		"truncated":   good[:len(good)/2],
		"nil":         {0xc0},
		"array":       {0x92, 0x01, 0x02},
		"string":      {0xa3, 'a', 'b', 'c'},
		"no id":       missing("id"),
		"no type":     missing("type"),
		"no agg":      missing("agg"),
		"wrong types": mustMarshal(t, map[string]any{"id": 1, "type": true, "agg": []int{1}}),
	}
	for name, b := range cases {
		if _, err := Unmarshal(b); !errors.Is(err, ErrMalformed) {
			t.Errorf("%s: Unmarshal = %v, want ErrMalformed", name, err)
		}
	}
}

func TestDecodeRejectsMalformedPayload(t *testing.T) {
	for name, payload := range map[string][]byte{
		"missing":    nil,
		"truncated":  {0x81, 0xa6},
		"wrong type": mustMarshal(t, map[string]any{"key_id": []int{1, 2}}),
	} {
		e := Envelope{ID: "id", Type: TypeKeyDeleted, Aggregate: TeamAggregate("acme"), Payload: payload}
		if _, err := e.Decode(); !errors.Is(err, ErrMalformed) {
			t.Errorf("%s: Decode = %v, want ErrMalformed", name, err)
		}
	}
}

func mustMarshal(t testing.TB, v any) []byte {
	t.Helper()
	b, err := msgpack.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// TestHostileLengthHeaders: msgpack length headers are claims, not facts. A
// str/bin/ext header claiming gigabytes in an input of a few bytes must be
// refused as malformed without allocating what it claims.
func TestHostileLengthHeaders(t *testing.T) {
	// msgpack v5.4.1 allocates what a bin header claims (4 GiB for an
	// 11-byte input into a []byte field) and grows its pooled buffer on str
	// headers that claim more than the input holds; checkLengths refuses
	// both before the decoder runs.

	cases := map[string][]byte{
		// {"prev": bin32 of 4 GiB}
		"prev bin32": {0x81, 0xa4, 'p', 'r', 'e', 'v', 0xc6, 0xff, 0xff, 0xff, 0xff},
		// {"hash": bin32 of 4 GiB}
		"hash bin32": {0x81, 0xa4, 'h', 'a', 's', 'h', 0xc6, 0xff, 0xff, 0xff, 0xff},
		// {"id": str32 of 2 GiB}
		"id str32": {0x81, 0xa2, 'i', 'd', 0xdb, 0x7f, 0xff, 0xff, 0xff},
		// {"zz": bin32 of 2 GiB}: an unknown field, skipped
		"unknown bin32": {0x81, 0xa2, 'z', 'z', 0xc6, 0x7f, 0xff, 0xff, 0xff},
	}
	payload := []byte{0x81, 0xa4, 'h', 'a', 's', 'h', 0xc6, 0xff, 0xff, 0xff, 0xff}
	for name, b := range cases {
		t.Run(name, func(t *testing.T) {
			var before, after runtime.MemStats
			runtime.ReadMemStats(&before)
			for range 50 {
				if _, err := Unmarshal(b); !errors.Is(err, ErrMalformed) {
					t.Fatalf("Unmarshal = %v, want ErrMalformed", err)
				}
			}
			runtime.ReadMemStats(&after)
			if d := after.TotalAlloc - before.TotalAlloc; d > 16<<20 {
				t.Fatalf("50 decodes of a %d-byte input allocated %d MiB", len(b), d>>20)
			}
		})
	}
	t.Run("payload hash bin32", func(t *testing.T) {
		e := Envelope{ID: "id", Type: TypeKeyDeleted, Aggregate: TeamAggregate("acme"), Payload: payload}
		var before, after runtime.MemStats
		runtime.ReadMemStats(&before)
		if _, err := e.Decode(); !errors.Is(err, ErrMalformed) {
			t.Fatalf("Decode = %v, want ErrMalformed", err)
		}
		runtime.ReadMemStats(&after)
		if d := after.TotalAlloc - before.TotalAlloc; d > 16<<20 {
			t.Fatalf("Decode of an 11-byte payload allocated %d MiB", d>>20)
		}
	})
}

// TestNilFieldsDoNotPanic: a msgpack nil in place of any envelope field is
// malformed input, never a panic (a panic in the projector would crash every
// instance, again on each restart, and the stream forbids deleting the event).
func TestNilFieldsDoNotPanic(t *testing.T) {
	for _, key := range []string{"id", "type", "agg", "actor", "time", "v", "prev", "hash", "payload"} {
		t.Run(key, func(t *testing.T) {
			m := map[string]any{
				"id": "id", "type": string(TypeKeyDeleted), "agg": TeamAggregate("acme"),
				"actor": map[string]any{"sub": "a", "role": "member"}, "time": testTime, "v": 1,
				"prev": []byte{1}, "hash": []byte{2}, "payload": msgpack.RawMessage{0x80},
			}
			m[key] = nil
			b := mustMarshal(t, m)
			defer func() {
				if r := recover(); r != nil {
					t.Fatalf("Unmarshal(%x) panicked: %v", b, r)
				}
			}()
			e, err := Unmarshal(b)
			if err == nil {
				_, _ = e.Decode()
				_ = e.Verify(nil)
			}
		})
	}
	// The same, minimal: {"time": nil}, and the positional (array) form.
	t.Run("minimal time", func(t *testing.T) {
		defer func() {
			if r := recover(); r != nil {
				t.Fatalf("panicked: %v", r)
			}
		}()
		for _, b := range [][]byte{
			{0x81, 0xa4, 't', 'i', 'm', 'e', 0xc0},
			// The array form of a struct: the fifth element (time) is nil.
			// Found by FuzzUnmarshal.
			{0x99, 0xc0, 0xc0, 0xc0, 0xc0, 0xc0},
		} {
			if _, err := Unmarshal(b); !errors.Is(err, ErrMalformed) {
				t.Fatalf("Unmarshal(%x) = %v, want ErrMalformed", b, err)
			}
		}
	})
}

func TestTeamAggregate(t *testing.T) {
	for _, team := range []string{"acme", "a", "team_1-X", "team.with.dots"} {
		agg := TeamAggregate(team)
		got, ok := TeamOf(agg)
		if !ok || got != team {
			t.Errorf("TeamOf(TeamAggregate(%q)) = %q, %v", team, got, ok)
		}
	}
	for _, agg := range []string{PlatformAggregate, "platform", "", "team.", "team", "teams.acme", "TEAM.acme"} {
		if got, ok := TeamOf(agg); ok {
			t.Errorf("TeamOf(%q) = %q, true; want false", agg, got)
		}
	}
}

// fuzzSeeds returns the seed corpus: a valid envelope of every type, then
// inputs on the edges of the decoder.
func fuzzSeeds(t testing.TB) [][]byte {
	var seeds [][]byte
	var prev []byte
	for i, p := range samplePayloads() {
		e := mustNew(t, fmt.Sprintf("id%d", i), aggregateFor(p), prev, p)
		b, err := e.Marshal()
		if err != nil {
			t.Fatal(err)
		}
		seeds = append(seeds, b)
		prev = e.Hash
	}
	unknown := Envelope{ID: "id", Type: "FutureEvent", Aggregate: "team.acme", Payload: []byte{0x80}}
	unknown.Hash = unknown.ComputeHash()
	ub, err := unknown.Marshal()
	if err != nil {
		t.Fatal(err)
	}
	seeds = append(seeds,
		ub,
		[]byte{},                   // empty
		seeds[2][:len(seeds[2])/2], // truncated
		[]byte{0x5f, 0x13, 0xfe, 0x00, 0xc1, 0xd9, 0x7a, 0x42, 0x88, 0x01, 0xff, 0xee, 0x3c}, // random bytes
		[]byte{0xc0},                         // msgpack nil
		[]byte{0x93, 0x01, 0xa1, 'x', 0xc0},  // msgpack array
		[]byte{0xdd, 0xff, 0xff, 0xff, 0xff}, // array32 claiming 4G elements
		[]byte{0xdf, 0xff, 0xff, 0xff, 0xff}, // map32 claiming 4G entries
		// A valid-looking header whose payload is an array and time a bad ext.
		mustMarshal(t, map[string]any{"id": "i", "type": "KeyCreated", "agg": "team.a",
			"payload": msgpack.RawMessage{0x91, 0xc0}, "time": msgpack.RawMessage{0xd4, 0xff, 0x00}}),
	)
	return seeds
}

// fuzzAllocBound is the most one decode of a fuzz input (at most a few KiB)
// may allocate.
const fuzzAllocBound = 64 << 20

func FuzzUnmarshal(f *testing.F) {
	for _, s := range fuzzSeeds(f) {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		// Decoding must cost memory in proportion to the input, not to the
		// lengths the input claims: a few hostile bytes must not make the
		// projector or an auditor allocate gigabytes.
		var before runtime.MemStats
		runtime.ReadMemStats(&before)
		defer func() {
			var after runtime.MemStats
			runtime.ReadMemStats(&after)
			if d := after.TotalAlloc - before.TotalAlloc; d > fuzzAllocBound {
				t.Fatalf("a %d-byte input made decoding allocate %d MiB", len(data), d>>20)
			}
		}()

		e, err := Unmarshal(data)
		if err != nil {
			if !errors.Is(err, ErrMalformed) {
				t.Fatalf("Unmarshal error %v does not wrap ErrMalformed", err)
			}
			return
		}
		if e.ID == "" || e.Type == "" || e.Aggregate == "" {
			t.Fatalf("Unmarshal accepted an envelope without id, type or aggregate: %+v", e)
		}
		p, err := e.Decode()
		if err == nil && p.EventType() != e.Type {
			t.Fatalf("Decode of a %s returned a %s", e.Type, p.EventType())
		}
		if err != nil && !errors.Is(err, ErrUnknownType) && !errors.Is(err, ErrMalformed) {
			t.Fatalf("Decode error %v is neither ErrUnknownType nor ErrMalformed", err)
		}
		h := e.ComputeHash()
		if len(h) != 32 {
			t.Fatalf("hash length %d", len(h))
		}
		if !bytes.Equal(h, e.ComputeHash()) {
			t.Fatal("ComputeHash is not deterministic")
		}
		err = e.Verify(nil)
		if err != nil && !errors.Is(err, ErrBadHash) && !errors.Is(err, ErrBrokenChain) {
			t.Fatalf("Verify error %v", err)
		}
	})
}

func BenchmarkUnmarshalDecode(b *testing.B) {
	e := mustNew(b, "01J00000000000000000000000", TeamAggregate("acme"), bytes.Repeat([]byte{1}, 32), samplePayloads()[2])
	wire, err := e.Marshal()
	if err != nil {
		b.Fatal(err)
	}
	b.SetBytes(int64(len(wire)))
	b.ReportAllocs()
	for b.Loop() {
		got, err := Unmarshal(wire)
		if err != nil {
			b.Fatal(err)
		}
		if _, err := got.Decode(); err != nil {
			b.Fatal(err)
		}
	}
}
