package keyauth

import (
	"crypto/sha256"
	"encoding/binary"
	"sync"
	"sync/atomic"

	"github.com/telapi/telkeys/apikey"
	"github.com/telapi/telkeys/bus"
	"github.com/telapi/telkeys/events"
)

// ScopeSet is a set of scopes as bits, so checks never allocate.
type ScopeSet uint8

// The scopes as bits.
const (
	ScopeCreateCallToken ScopeSet = 1 << iota
	ScopeReadCallToken
	ScopeReadTeamApps
)

// ScopeOf returns the bit of a scope name, or 0 if unknown.
func ScopeOf(name string) ScopeSet {
	switch name {
	case apikey.ScopeCreateCallToken:
		return ScopeCreateCallToken
	case apikey.ScopeReadCallToken:
		return ScopeReadCallToken
	case apikey.ScopeReadTeamApps:
		return ScopeReadTeamApps
	}
	return 0
}

func scopesOf(names []string) ScopeSet {
	var s ScopeSet
	for _, n := range names {
		s |= ScopeOf(n)
	}
	return s
}

// Strings returns the scope names in catalogue order.
func (s ScopeSet) Strings() []string {
	out := []string{}
	for _, n := range apikey.Scopes() {
		if s&ScopeOf(n) != 0 {
			out = append(out, n)
		}
	}
	return out
}

// teamConfig is immutable; a change replaces it.
type teamConfig struct {
	seq     uint64 // last event applied to the team's record
	enabled bool
	allowed ScopeSet
	limit   int64 // -1: unlimited
}

type team struct {
	name  string
	cfg   atomic.Pointer[teamConfig] // nil: never configured, disabled
	usage usageCounter
	quota quota
}

type key struct {
	// hash is the key's SHA-256. The map holds its first 8 bytes; next is
	// another key whose hash starts with the same 8 bytes (almost never).
	hash   apikey.Hash
	next   *key
	id     string
	team   *team
	scopes ScopeSet
	seq    uint64 // the KeyCreated event
	// expiresAt is when the key stops working, unix ns (0: never);
	// disabled is set while it is disabled. Events change them in place.
	expiresAt atomic.Int64
	disabled  atomic.Bool
	// lastUsed is the unix second of the last successful verification;
	// flushed is the value last written out; queued is set while the key
	// waits in its shard's used list.
	lastUsed atomic.Int64
	flushed  int64
	queued   atomic.Bool
}

const shards = 64

// shard maps the first 8 bytes of a key's hash to the key: 16-byte map
// slots instead of 40, so that a lookup among a million keys touches fewer
// cache lines, and the heap is smaller.
type shard struct {
	mu sync.RWMutex
	m  map[uint64]*key
	// used lists the keys verified since the last last-used flush, so
	// that the flush need not look at every key: at a million keys that
	// scan took a fifth of a core.
	usedMu sync.Mutex
	used   []*key
}

func (s *state) shard(h apikey.Hash) (*shard, uint64) {
	return &s.keys[h[8]%shards], binary.LittleEndian.Uint64(h[:8])
}

// state is everything the validator knows. Verify only reads it; one
// goroutine at a time applies changes.
type state struct {
	keys [shards]shard

	teamsMu sync.RWMutex
	teams   map[string]*team

	webrtcOff atomic.Bool
	flagSeq   uint64

	// applyMu is held while an event is checked and applied, so that a
	// key index can copy the state, and the chain, at one sequence.
	applyMu sync.Mutex
	// chain is what decides whether a message is a valid event: the last
	// valid event of each aggregate. Guarded by applyMu.
	chain     *events.Chain
	applied   bus.Progress // the last event sequence applied (or skipped as invalid)
	keysCount atomic.Int64
}

// init empties the state, trusting events signed by trusted; it runs
// before anything reads it.
func (s *state) init(trusted *events.Keys) {
	s.chain = events.NewChain(trusted)
	for i := range s.keys {
		s.keys[i].m = map[uint64]*key{}
	}
	s.keysCount.Store(0)
	s.teams = map[string]*team{}
	s.flagSeq = 0
	s.webrtcOff.Store(false)
}

// hashKey is SHA-256 of the key through a stack buffer: hashing the string
// directly would make it escape and allocate. Keys longer than apikey.Len
// never get here (Verify checks the length first).
func hashKey(k string) apikey.Hash {
	var buf [apikey.Len]byte
	n := copy(buf[:], k)
	return sha256.Sum256(buf[:n])
}

// presize makes room for n keys before a bulk load.
func (s *state) presize(n int) {
	for i := range s.keys {
		if len(s.keys[i].m) == 0 {
			s.keys[i].m = make(map[uint64]*key, n/shards+n/shards/8)
		}
	}
}

// markUsed queues k for the next last-used flush, once.
func (s *state) markUsed(k *key) {
	if !k.queued.CompareAndSwap(false, true) {
		return
	}
	sh, _ := s.shard(k.hash)
	sh.usedMu.Lock()
	sh.used = append(sh.used, k)
	sh.usedMu.Unlock()
}

// takeUsed returns the queued keys and empties the queues.
func (s *state) takeUsed() []*key {
	var out []*key
	for i := range s.keys {
		sh := &s.keys[i]
		sh.usedMu.Lock()
		out = append(out, sh.used...)
		sh.used = sh.used[:0]
		sh.usedMu.Unlock()
	}
	for _, k := range out {
		k.queued.Store(false) // before lastUsed is read: a later use queues it again
	}
	return out
}

func (s *state) lookup(h apikey.Hash) *key {
	sh, p := s.shard(h)
	sh.mu.RLock()
	k := sh.m[p]
	for k != nil && k.hash != h {
		k = k.next
	}
	sh.mu.RUnlock()
	return k
}

func (s *state) team(name string) *team {
	s.teamsMu.RLock()
	t := s.teams[name]
	s.teamsMu.RUnlock()
	if t != nil {
		return t
	}
	s.teamsMu.Lock()
	defer s.teamsMu.Unlock()
	if t = s.teams[name]; t == nil {
		t = &team{name: name}
		s.teams[name] = t
	}
	return t
}

// knownTeam returns the team named name, nil if the state has none.
func (s *state) knownTeam(name string) *team {
	s.teamsMu.RLock()
	defer s.teamsMu.RUnlock()
	return s.teams[name]
}

func (s *state) eachTeam(f func(*team)) {
	s.teamsMu.RLock()
	ts := make([]*team, 0, len(s.teams))
	for _, t := range s.teams {
		ts = append(ts, t)
	}
	s.teamsMu.RUnlock()
	for _, t := range ts {
		f(t)
	}
}

func (s *state) eachKey(f func(*key)) {
	for i := range s.keys {
		sh := &s.keys[i]
		sh.mu.RLock()
		for _, k := range sh.m {
			for ; k != nil; k = k.next {
				f(k)
			}
		}
		sh.mu.RUnlock()
	}
}

func (s *state) putKey(h apikey.Hash, k *key) {
	k.hash = h
	sh, p := s.shard(h)
	sh.mu.Lock()
	defer sh.mu.Unlock()
	head, replaced := unlink(sh.m[p], h)
	k.next, sh.m[p] = head, k
	if !replaced {
		s.keysCount.Add(1)
	}
}

func (s *state) dropKey(h apikey.Hash) {
	sh, p := s.shard(h)
	sh.mu.Lock()
	defer sh.mu.Unlock()
	head, removed := unlink(sh.m[p], h)
	if head == nil {
		delete(sh.m, p)
	} else {
		sh.m[p] = head
	}
	if removed {
		s.keysCount.Add(-1)
	}
}

// unlink removes the key with hash h from a chain; the caller holds the
// shard's write lock.
func unlink(head *key, h apikey.Hash) (*key, bool) {
	if head == nil {
		return nil, false
	}
	if head.hash == h {
		return head.next, true
	}
	for c := head; c.next != nil; c = c.next {
		if c.next.hash == h {
			c.next = c.next.next
			return head, true
		}
	}
	return head, false
}

// create stores the key a KeyCreated (or a KeyRolled) makes, unless the
// state has it from that event or a later one.
func (s *state) create(team string, seq uint64, e events.KeyCreated) {
	if len(e.Hash) != len(apikey.Hash{}) {
		return
	}
	h := apikey.Hash(e.Hash)
	if existing := s.lookup(h); existing != nil && existing.seq >= seq {
		return
	}
	k := &key{id: e.KeyID, team: s.team(team), scopes: scopesOf(e.Scopes), seq: seq}
	if e.ExpiresAt != nil {
		k.expiresAt.Store(e.ExpiresAt.UnixNano())
	}
	s.putKey(h, k)
}

func (s *state) setConfig(t *team, seq uint64, enabled bool, allowed []string, limit *int64) {
	if cur := t.cfg.Load(); cur != nil && cur.seq >= seq {
		return
	}
	c := &teamConfig{seq: seq, enabled: enabled, allowed: scopesOf(allowed), limit: -1}
	if limit != nil {
		c.limit = *limit
	}
	t.cfg.Store(c)
}

// apply folds one valid event (checked by the chain), at stream sequence
// seq, into the state; a nil payload (a type this version does not know)
// changes nothing but the sequence. Keys and team configs carry the
// sequence of their event, so an event they already reflect changes
// nothing.
func (s *state) apply(seq uint64, ev events.Envelope, p events.Payload) {
	switch e := p.(type) {
	case events.PlatformFlagSet:
		if e.Flag == events.FlagWebRTC && seq > s.flagSeq {
			s.flagSeq = seq
			s.webrtcOff.Store(!e.Enabled)
		}
	case events.TeamAccessConfigured:
		if name, ok := events.TeamOf(ev.Aggregate); ok {
			s.setConfig(s.team(name), seq, e.Enabled, e.AllowedScopes, e.MaxRequestsPerDay)
		}
	case events.KeyCreated:
		name, ok := events.TeamOf(ev.Aggregate)
		if !ok || len(e.Hash) != len(apikey.Hash{}) {
			break
		}
		s.create(name, seq, e)
	case events.KeyRolled:
		name, ok := events.TeamOf(ev.Aggregate)
		if !ok || len(e.Hash) != len(apikey.Hash{}) || len(e.ReplacedHash) != len(apikey.Hash{}) {
			break
		}
		s.create(name, seq, e.KeyCreated)
		if old := s.lookup(apikey.Hash(e.ReplacedHash)); old != nil {
			until := e.GraceUntil.UnixNano()
			if !e.GraceUntil.After(ev.Time) {
				// No grace: expired whatever Verify's copy of the clock
				// says (it may lag the event by a clock tick).
				until = 1
			}
			if cur := old.expiresAt.Load(); cur == 0 || until < cur {
				old.expiresAt.Store(until)
			}
		}
	case events.KeyUpdated:
		if len(e.Hash) != len(apikey.Hash{}) || e.Enabled == nil {
			break
		}
		if k := s.lookup(apikey.Hash(e.Hash)); k != nil {
			k.disabled.Store(!*e.Enabled)
		}
	case events.KeyLeaked:
		if e.Revoked && len(e.Hash) == len(apikey.Hash{}) {
			s.dropKey(apikey.Hash(e.Hash))
		}
	case events.KeyDeleted:
		if len(e.Hash) == len(apikey.Hash{}) {
			s.dropKey(apikey.Hash(e.Hash))
		}
	}
	s.applied.Advance(seq)
}
