package keyauth

import (
	"crypto/sha256"
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
	slot  uint32                     // its place in state.teamList
	cfg   atomic.Pointer[teamConfig] // nil: never configured, disabled
	usage usageCounter
	quota quota
}

// state is everything the validator knows. Verify only reads it; one
// goroutine at a time applies changes.
type state struct {
	keys [shards]shard
	// table holds the keys themselves (table.go).
	table table

	teamsMu sync.RWMutex
	teams   map[string]*team
	// teamList is every team by slot, for keys to name theirs with 4
	// bytes: appended under teamsMu, read without a lock.
	teamList atomic.Pointer[[]*team]

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
		s.keys[i].entries.Store(nil)
		s.keys[i].n = 0
	}
	s.table = table{}
	s.teamList.Store(&[]*team{})
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
		list := *s.teamList.Load()
		t = &team{name: name, slot: uint32(len(list))}
		s.teams[name] = t
		// Readers hold earlier headers: appending past their length, or
		// into a new array, never changes what they see.
		list = append(list, t)
		s.teamList.Store(&list)
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
	var expires int64
	if e.ExpiresAt != nil {
		expires = e.ExpiresAt.UnixNano()
	}
	s.putKey(h, []byte(e.KeyID), s.team(team), scopesOf(e.Scopes), seq, expires, false)
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
			k.setFlag(flagDisabled, !*e.Enabled)
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
