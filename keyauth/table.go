package keyauth

import (
	"encoding/binary"
	"fmt"
	"runtime"
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
// A record's slot is its place in the chunks; the shards' open-addressed
// indexes find it: 8 bytes an entry, where a map took 32. Slots are never reused: a
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
	team     uint32        // the team's slot in state.teamList
	flags    atomic.Uint32 // flagDisabled, flagQueued, flagDead
	scopes   ScopeSet
	idLen    uint8 // bytes of the id in the chunk, or idLong
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

// reserve allocates the chunks for n more keys in one piece, advised to
// huge pages before anything touches it (adviseHugePages).
func (t *table) reserve(n int) {
	first := (t.n + chunkLen - 1) >> chunkBits
	end := min((uint64(t.n)+uint64(n)+chunkLen-1)>>chunkBits, maxChunks)
	if uint64(first) >= end {
		return
	}
	slab := make([]chunk, end-uint64(first))
	adviseHugePages(unsafe.Pointer(&slab[0]), uintptr(len(slab))*unsafe.Sizeof(chunk{}))
	for i := range slab {
		t.chunks[int(first)+i] = &slab[i]
	}
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

// shard indexes the keys whose hash's 9th byte falls in it: an
// open-addressed table with linear probing, each entry a fingerprint of
// the hash (bytes 12-15) and 1 + the key's slot (0: empty), placed from
// the hash's first 8 bytes. It is at most 3/4 full.
//
// Readers take no lock. Writers (one at a time, under mu) make seq odd
// while they change the entries, and even again after; a reader that saw
// seq change looks again. Entries are read and written atomically, a
// record is filled before its entry is stored, and a resize fills a new
// array before it replaces the old one, so a reader never follows a torn
// entry and its probe always ends at an empty place.
type shard struct {
	mu      sync.Mutex
	seq     atomic.Uint64
	entries atomic.Pointer[[]atomic.Uint64]
	n       int // under mu
	// used lists the keys verified since the last last-used flush, so
	// that the flush need not look at every key: at a million keys that
	// scan took a fifth of a core.
	usedMu sync.Mutex
	used   []uint32
}

func (s *state) shard(h apikey.Hash) *shard { return &s.keys[h[8]%shards] }

func home(h *apikey.Hash) uint64 { return binary.LittleEndian.Uint64(h[:8]) }

func fingerprint(h *apikey.Hash) uint64 { return uint64(binary.LittleEndian.Uint32(h[12:16])) << 32 }

func (sh *shard) table() []atomic.Uint64 {
	if p := sh.entries.Load(); p != nil {
		return *p
	}
	return nil
}

// index is where the entry of the key with hash h is in entries, or -1.
func (s *state) index(entries []atomic.Uint64, h *apikey.Hash) int {
	if len(entries) == 0 {
		return -1
	}
	mask, fp := uint64(len(entries)-1), fingerprint(h)
	for i := home(h) & mask; ; i = (i + 1) & mask {
		e := entries[i].Load()
		if e == 0 {
			return -1
		}
		if e&^0xffffffff == fp && s.table.rec(uint32(e)-1).hash == *h {
			return int(i)
		}
	}
}

// place puts entry e, of the key with hash h, in the first free place
// from h's home.
func place(entries []atomic.Uint64, h *apikey.Hash, e uint64) {
	mask := uint64(len(entries) - 1)
	i := home(h) & mask
	for entries[i].Load() != 0 {
		i = (i + 1) & mask
	}
	entries[i].Store(e)
}

// indexSize is the size of an index with room for n keys.
func indexSize(n int) int {
	size := 8
	for size*3 < n*4 {
		size *= 2
	}
	return size
}

// resize rebuilds sh's index with room for n keys; the caller holds mu.
func (s *state) resize(sh *shard, n int) { s.rehash(sh, make([]atomic.Uint64, indexSize(n))) }

// rehash moves sh's index into entries; the caller holds mu.
func (s *state) rehash(sh *shard, entries []atomic.Uint64) {
	for i := range sh.table() {
		if e := sh.table()[i].Load(); e != 0 {
			place(entries, &s.table.rec(uint32(e)-1).hash, e)
		}
	}
	sh.entries.Store(&entries)
}

// presize makes room for n keys before a bulk load: their records, and
// the shards' indexes in one piece, both advised to huge pages.
func (s *state) presize(n int) {
	s.table.reserve(n)
	size := indexSize(n/shards + n/shards/8)
	all := make([]atomic.Uint64, shards*size)
	adviseHugePages(unsafe.Pointer(&all[0]), uintptr(len(all))*8)
	for i := range s.keys {
		sh := &s.keys[i]
		sh.mu.Lock()
		if sh.n == 0 {
			s.rehash(sh, all[i*size:(i+1)*size:(i+1)*size])
		}
		sh.mu.Unlock()
	}
}

// lookup returns the record of the key with hash h, nil if none.
func (s *state) lookup(h apikey.Hash) *record {
	_, r := s.find(h)
	return r
}

// find returns the slot and record of the key with hash h, if any.
func (s *state) find(h apikey.Hash) (uint32, *record) {
	sh := s.shard(h)
	for spins := 0; ; spins++ {
		seq := sh.seq.Load()
		if seq&1 != 0 { // a writer is at work: a few microseconds
			if spins > 100 {
				runtime.Gosched()
			}
			continue
		}
		entries := sh.table()
		i := s.index(entries, &h)
		var e uint64
		if i >= 0 {
			e = entries[i].Load()
		}
		if sh.seq.Load() != seq {
			continue
		}
		if e == 0 {
			return 0, nil
		}
		return uint32(e) - 1, s.table.rec(uint32(e) - 1)
	}
}

// write runs f on sh's entries with seq odd, under mu.
func (sh *shard) write(f func()) {
	sh.mu.Lock()
	defer sh.mu.Unlock()
	sh.seq.Add(1)
	defer sh.seq.Add(1)
	f()
}

// putKey stores a key, replacing one with the same hash.
func (s *state) putKey(h apikey.Hash, id []byte, t *team, scopes ScopeSet, seq uint64, expiresAt int64, disabled bool) {
	slot, r := s.table.add(id)
	r.hash, r.team, r.scopes, r.seq = h, t.slot, scopes, seq
	r.expiresAt.Store(expiresAt)
	if disabled {
		r.flags.Store(flagDisabled)
	}
	e := fingerprint(&h) | uint64(slot+1)
	sh := s.shard(h)
	sh.write(func() {
		if i := s.index(sh.table(), &h); i >= 0 {
			s.table.rec(uint32(sh.table()[i].Load())-1).setFlag(flagDead, true)
			sh.table()[i].Store(e)
			return
		}
		if (sh.n+1)*4 > len(sh.table())*3 {
			s.resize(sh, max(sh.n+1, 2*sh.n))
		}
		place(sh.table(), &h, e)
		sh.n++
		s.keysCount.Add(1)
	})
}

// dropKey removes the key with hash h and marks its record dead. The
// entries after it in its run move back (backward-shift deletion), so
// that no lookup stops early at the hole.
func (s *state) dropKey(h apikey.Hash) {
	sh := s.shard(h)
	sh.write(func() {
		entries := sh.table()
		i := s.index(entries, &h)
		if i < 0 {
			return
		}
		s.table.rec(uint32(entries[i].Load())-1).setFlag(flagDead, true)
		mask := uint64(len(entries) - 1)
		hole := uint64(i)
		for j := (hole + 1) & mask; entries[j].Load() != 0; j = (j + 1) & mask {
			e := entries[j].Load()
			k := home(&s.table.rec(uint32(e)-1).hash) & mask
			// e may fill the hole if its home is not after the hole on
			// the way round to j.
			if (j > hole && (k <= hole || k > j)) || (j < hole && k <= hole && k > j) {
				entries[hole].Store(e)
				hole = j
			}
		}
		entries[hole].Store(0)
		sh.n--
		s.keysCount.Add(-1)
	})
}

// eachKey calls f with every live key's slot and record.
func (s *state) eachKey(f func(uint32, *record)) {
	for i := range s.keys {
		sh := &s.keys[i]
		sh.mu.Lock()
		for j := range sh.table() {
			if e := sh.table()[j].Load(); e != 0 {
				f(uint32(e)-1, s.table.rec(uint32(e)-1))
			}
		}
		sh.mu.Unlock()
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
	sh := s.shard(r.hash)
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
