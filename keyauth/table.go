package keyauth

import (
	"encoding/binary"
	"fmt"
	"sync"
	"sync/atomic"
	"unsafe"

	"github.com/telapi/telkeys/apikey"
)

// The key table. Every node holds every key, so a key costs a fixed-size
// record with no pointers, in chunks that never move and that the garbage
// collector never has to scan: a million keys used to be a million small
// objects with four pointers each, and each collection walked them all.
//
// A record's slot is its place in the chunks; the shard maps (the first 8
// bytes of the hash → 1 + slot) find it. Slots are never reused: a
// deleted key's record stays, marked dead, until the node restarts, so
// that a record, and the id string Verify returns from it, never change
// under a reader. Only the goroutine applying events writes the table.

const (
	chunkBits = 12
	chunkLen  = 1 << chunkBits
	// maxChunks bounds the table: 2^25 keys (33M) per node.
	maxChunks = 1 << 13
	// idLen is the room for a key id in a record's chunk: "key_" and a
	// ULID. Longer ids (none that telkeys makes) are kept in table.long.
	idLen = 30
	// idLong marks an id kept in table.long.
	idLong = 0xff
)

// record is one key.
type record struct {
	hash      apikey.Hash
	seq       uint64       // the event that created it
	expiresAt atomic.Int64 // unix ns; 0: never
	// lastUsed is the unix second of its last successful verification.
	lastUsed atomic.Uint32
	// next is 1 + the slot of another key whose hash starts with the same
	// 8 bytes (almost never); 0: none. Guarded by the shard's lock.
	next   uint32
	team   uint32        // the team's slot in state.teamList
	flags  atomic.Uint32 // flagDisabled, flagQueued, flagDead
	scopes ScopeSet
	idLen  uint8 // bytes of the id in the chunk, or idLong
}

// The flags of a record.
const (
	flagDisabled = 1 << iota
	flagQueued   // waiting in its shard's used list
	flagDead     // deleted: no longer in the shard maps
)

func (r *record) has(f uint32) bool { return r.flags.Load()&f != 0 }

func (r *record) setFlag(f uint32, on bool) {
	for {
		old := r.flags.Load()
		n := old &^ f
		if on {
			n |= f
		}
		if r.flags.CompareAndSwap(old, n) {
			return
		}
	}
}

type chunk struct {
	recs [chunkLen]record
	ids  [chunkLen][idLen]byte
}

// table is the chunks, and the ids too long for them.
type table struct {
	chunks [maxChunks]*chunk
	n      uint32 // slots used; the applier's only
	longMu sync.RWMutex
	long   map[uint32]string
}

func (t *table) rec(slot uint32) *record { return &t.chunks[slot>>chunkBits].recs[slot&(chunkLen-1)] }

// add takes the next slot for a key with id; the caller fills the rest.
func (t *table) add(id []byte) (uint32, *record) {
	slot := t.n
	c := slot >> chunkBits
	if c >= maxChunks {
		panic(fmt.Sprintf("keyauth: more than %d keys", maxChunks*chunkLen))
	}
	if t.chunks[c] == nil {
		t.chunks[c] = new(chunk)
	}
	t.n++
	r := t.rec(slot)
	if len(id) <= idLen {
		r.idLen = uint8(copy(t.chunks[c].ids[slot&(chunkLen-1)][:], id))
	} else {
		r.idLen = idLong
		t.longMu.Lock()
		if t.long == nil {
			t.long = map[uint32]string{}
		}
		t.long[slot] = string(id)
		t.longMu.Unlock()
	}
	return slot, r
}

// id returns the id of the key in slot, without a copy: the bytes never
// change once written.
func (t *table) id(slot uint32) string {
	r := t.rec(slot)
	if r.idLen == idLong {
		t.longMu.RLock()
		defer t.longMu.RUnlock()
		return t.long[slot]
	}
	b := &t.chunks[slot>>chunkBits].ids[slot&(chunkLen-1)]
	return unsafe.String(&b[0], int(r.idLen))
}

const shards = 64

// shard maps the first 8 bytes of a key's hash to 1 + its slot.
type shard struct {
	mu sync.RWMutex
	m  map[uint64]uint32
	// used lists the keys verified since the last last-used flush, so
	// that the flush need not look at every key: at a million keys that
	// scan took a fifth of a core.
	usedMu sync.Mutex
	used   []uint32
}

func (s *state) shard(h apikey.Hash) (*shard, uint64) {
	return &s.keys[h[8]%shards], binary.LittleEndian.Uint64(h[:8])
}

// presize makes room for n keys before a bulk load.
func (s *state) presize(n int) {
	for i := range s.keys {
		if len(s.keys[i].m) == 0 {
			s.keys[i].m = make(map[uint64]uint32, n/shards+n/shards/8)
		}
	}
}

// lookup returns the record of the key with hash h, nil if none.
func (s *state) lookup(h apikey.Hash) *record {
	_, r := s.find(h)
	return r
}

// find returns the slot and record of the key with hash h, if any.
func (s *state) find(h apikey.Hash) (uint32, *record) {
	sh, p := s.shard(h)
	sh.mu.RLock()
	defer sh.mu.RUnlock()
	for next := sh.m[p]; next != 0; {
		r := s.table.rec(next - 1)
		if r.hash == h {
			return next - 1, r
		}
		next = r.next
	}
	return 0, nil
}

// putKey stores a key, replacing one with the same hash.
func (s *state) putKey(h apikey.Hash, id []byte, t *team, scopes ScopeSet, seq uint64, expiresAt int64, disabled bool) {
	slot, r := s.table.add(id)
	r.hash, r.team, r.scopes, r.seq = h, t.slot, scopes, seq
	r.expiresAt.Store(expiresAt)
	if disabled {
		r.flags.Store(flagDisabled)
	}
	sh, p := s.shard(h)
	sh.mu.Lock()
	defer sh.mu.Unlock()
	head, replaced := s.unlink(sh.m[p], h)
	r.next, sh.m[p] = head, slot+1
	if !replaced {
		s.keysCount.Add(1)
	}
}

func (s *state) dropKey(h apikey.Hash) {
	sh, p := s.shard(h)
	sh.mu.Lock()
	defer sh.mu.Unlock()
	head, removed := s.unlink(sh.m[p], h)
	if head == 0 {
		delete(sh.m, p)
	} else {
		sh.m[p] = head
	}
	if removed {
		s.keysCount.Add(-1)
	}
}

// unlink removes the key with hash h from the chain that starts at head
// (1 + slot) and marks it dead; the caller holds the shard's write lock.
func (s *state) unlink(head uint32, h apikey.Hash) (uint32, bool) {
	if head == 0 {
		return 0, false
	}
	if r := s.table.rec(head - 1); r.hash == h {
		r.setFlag(flagDead, true)
		return r.next, true
	}
	for c := s.table.rec(head - 1); c.next != 0; c = s.table.rec(c.next - 1) {
		if n := s.table.rec(c.next - 1); n.hash == h {
			n.setFlag(flagDead, true)
			c.next = n.next
			return head, true
		}
	}
	return head, false
}

// eachKey calls f with every live key's slot and record.
func (s *state) eachKey(f func(uint32, *record)) {
	for i := range s.keys {
		sh := &s.keys[i]
		sh.mu.RLock()
		for _, next := range sh.m {
			for next != 0 {
				r := s.table.rec(next - 1)
				f(next-1, r)
				next = r.next
			}
		}
		sh.mu.RUnlock()
	}
}

// teamAt returns the team in slot.
func (s *state) teamAt(slot uint32) *team { return (*s.teamList.Load())[slot] }

// markUsed queues the key in slot for the next last-used flush, once.
func (s *state) markUsed(slot uint32, r *record) {
	for {
		old := r.flags.Load()
		if old&flagQueued != 0 {
			return
		}
		if r.flags.CompareAndSwap(old, old|flagQueued) {
			break
		}
	}
	sh, _ := s.shard(r.hash)
	sh.usedMu.Lock()
	sh.used = append(sh.used, slot)
	sh.usedMu.Unlock()
}

// takeUsed returns the queued keys' slots and empties the queues.
func (s *state) takeUsed() []uint32 {
	var out []uint32
	for i := range s.keys {
		sh := &s.keys[i]
		sh.usedMu.Lock()
		out = append(out, sh.used...)
		sh.used = sh.used[:0]
		sh.usedMu.Unlock()
	}
	for _, slot := range out {
		s.table.rec(slot).setFlag(flagQueued, false) // before lastUsed is read: a later use queues it again
	}
	return out
}
