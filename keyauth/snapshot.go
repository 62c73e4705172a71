package keyauth

import (
	"bufio"
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"strconv"
	"strings"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/telapi/telkeys/apikey"
	"github.com/telapi/telkeys/bus"
)

// A key index is the validator's whole state at one event sequence, in a
// compact binary form, stored as one object (bus.KeyIndexObject). A new
// validator reads it and then the events after it: a million keys load in
// about a second, where a million KV records took tens.
//
//	magic "tkix", version byte (3; 2 is read too: no expiry, no flags)
//	seq, flag seq: uvarint; webrtc off: byte
//	chain: uvarint count, then each: aggregate, hash of its last valid event
//	teams: uvarint count, then each: name, configured byte, and if
//	       configured: seq uvarint, enabled byte, scopes byte, limit varint
//	keys:  uvarint count, then each: hash [32], team index uvarint,
//	       scopes byte, seq uvarint, id, expiry varint (unix ns, 0: none),
//	       flags byte (1: disabled)
//
// Strings are a uvarint length and the bytes. The chain lets a validator
// started from the index check the events after it exactly as one that
// followed every event (events.Chain.Restore).
//
// The index is signed: its object's metadata holds the id of a telkeys
// event-signing key (kidMeta) and that key's Ed25519 signature (sigMeta,
// hex) of the object's digest as the object store records it
// ("SHA-256=<base64url>", ObjectInfo.Digest). A reader checks the signature
// with Config.Keys before it reads a byte, and the object store checks the
// content against the digest once it is read to the end: an index telkeys
// did not write is never used.
const (
	indexMagic   = "tkix"
	indexVersion = 3
	// seqMeta is the object metadata holding the index's sequence; kidMeta
	// and sigMeta its signature.
	seqMeta = "seq"
	kidMeta = "kid"
	sigMeta = "sig"
	// digestPrefix starts the object store's digests.
	digestPrefix = "SHA-256="
)

var (
	// errIndexFormat is a key index this version cannot read.
	errIndexFormat = errors.New("keyauth: key index: unknown format")
	// errIndexUntrusted is a key index not signed by a trusted key.
	errIndexUntrusted = errors.New("keyauth: key index: not signed by a trusted key")
)

// WriteKeyIndex stores the validator's state as the key index, signed
// with Config.Signer, if it is newer than the stored one by at least
// minEvents events, and returns the sequence of the index now stored (a
// stored index that is not validly signed counts as none). Events are not
// applied while the state is copied (about 100 ms per million keys); the
// upload happens after.
func (v *Validator) WriteKeyIndex(ctx context.Context, minEvents uint64) (uint64, error) {
	signer := v.cfg.Signer
	if signer == nil {
		return 0, errors.New("keyauth: cannot write the key index without Config.Signer: readers trust only a signed one")
	}
	obs := v.h.KeyIndex
	if obs == nil {
		return 0, errors.New("keyauth: no key index bucket")
	}
	stored := uint64(0)
	if info, err := obs.GetInfo(ctx, bus.KeyIndexObject); err == nil {
		if v.checkIndexSignature(info) == nil {
			stored, _ = strconv.ParseUint(info.Metadata[seqMeta], 10, 64)
		}
	} else if !errors.Is(err, jetstream.ErrObjectNotFound) {
		return 0, err
	}
	if v.Applied() < stored+minEvents || v.Applied() == stored {
		return stored, nil
	}
	seq, data := v.encodeIndex()
	h := sha256.New()
	h.Write(data)
	digest := jetstream.GetObjectDigestValue(h)
	info, err := obs.Put(ctx, jetstream.ObjectMeta{
		Name:        bus.KeyIndexObject,
		Description: "telkeys validator state at event " + strconv.FormatUint(seq, 10),
		Metadata: map[string]string{
			seqMeta: strconv.FormatUint(seq, 10),
			kidMeta: signer.KeyID(),
			sigMeta: hex.EncodeToString(signer.Sign([]byte(digest))),
		},
	}, bytes.NewReader(data))
	if err != nil {
		return stored, fmt.Errorf("keyauth: store key index: %w", err)
	}
	if info.Digest != digest {
		return stored, fmt.Errorf("keyauth: key index stored with digest %q, signed as %q", info.Digest, digest)
	}
	return seq, nil
}

// checkIndexSignature verifies the signature of a stored key index: over
// its digest, which must be a well-formed SHA-256 digest, by a trusted key.
func (v *Validator) checkIndexSignature(info *jetstream.ObjectInfo) error {
	sum, err := jetstream.DecodeObjectDigest(info.Digest)
	if !strings.HasPrefix(info.Digest, digestPrefix) || err != nil || len(sum) != sha256.Size {
		return fmt.Errorf("%w: digest %q", errIndexUntrusted, info.Digest)
	}
	sig, err := hex.DecodeString(info.Metadata[sigMeta])
	if err != nil {
		return fmt.Errorf("%w: signature: %w", errIndexUntrusted, err)
	}
	if err := v.cfg.Keys.Verify(info.Metadata[kidMeta], []byte(info.Digest), sig); err != nil {
		return fmt.Errorf("%w: %w", errIndexUntrusted, err)
	}
	return nil
}

// encodeIndex copies the state while no event is applied.
func (v *Validator) encodeIndex() (uint64, []byte) {
	s := &v.st
	s.applyMu.Lock()
	defer s.applyMu.Unlock()
	seq := s.applied.Load()
	b := make([]byte, 0, 64+80*int(s.keysCount.Load()))
	b = append(b, indexMagic...)
	b = append(b, indexVersion)
	b = binary.AppendUvarint(b, seq)
	b = binary.AppendUvarint(b, s.flagSeq)
	b = append(b, boolByte(s.webrtcOff.Load()))

	aggs := 0
	s.chain.Each(func(string, []byte) { aggs++ })
	b = binary.AppendUvarint(b, uint64(aggs))
	s.chain.Each(func(agg string, last []byte) {
		b = appendString(b, agg)
		b = appendString(b, string(last))
	})

	// Teams in slot order: a key names its team by slot.
	s.teamsMu.RLock()
	teams := *s.teamList.Load()
	b = binary.AppendUvarint(b, uint64(len(teams)))
	for _, t := range teams {
		b = appendString(b, t.name)
		cfg := t.cfg.Load()
		b = append(b, boolByte(cfg != nil))
		if cfg != nil {
			b = binary.AppendUvarint(b, cfg.seq)
			b = append(b, boolByte(cfg.enabled), byte(cfg.allowed))
			b = binary.AppendVarint(b, cfg.limit)
		}
	}
	s.teamsMu.RUnlock()

	b = binary.AppendUvarint(b, uint64(s.keysCount.Load()))
	s.eachKey(func(slot uint32, k *record) {
		b = append(b, k.hash[:]...)
		b = binary.AppendUvarint(b, uint64(k.team))
		b = append(b, byte(k.scopes))
		b = binary.AppendUvarint(b, k.seq)
		b = appendString(b, s.table.id(slot))
		b = binary.AppendVarint(b, k.expiresAt.Load())
		b = append(b, boolByte(k.has(flagDisabled)))
	})
	return seq, b
}

// loadIndex reads the key index into the empty state and returns its
// sequence; found is false when there is none, or none usable: one not
// signed by a trusted key, one this version cannot read, one ahead of the
// event stream (a restored stream would make one), or one that cannot be
// read to the end (or whose content does not match its signed digest). The caller then
// replays the event stream from its start. A read can also fail because a writer replaced the
// index meanwhile (its old chunks are purged), so it is tried twice.
func (v *Validator) loadIndex(ctx context.Context, lastSeq uint64) (seq uint64, found bool) {
	if v.h.KeyIndex == nil {
		return 0, false
	}
	for attempt := 1; attempt <= 2 && ctx.Err() == nil; attempt++ {
		seq, found, err := v.readIndex(ctx, lastSeq)
		if err == nil {
			return seq, found
		}
		// Half an index is worse than none: start again from empty.
		v.st.init(v.cfg.Keys)
		v.cfg.Log.Warn("keyauth: cannot use the key index", "attempt", attempt, "err", err)
		if errors.Is(err, errIndexFormat) || errors.Is(err, errIndexUntrusted) {
			break
		}
	}
	return 0, false
}

// indexReadTimeout bounds one read of the key index, so that a failed
// read leaves time to replay the event stream instead.
const indexReadTimeout = 20 * time.Second

func (v *Validator) readIndex(ctx context.Context, lastSeq uint64) (uint64, bool, error) {
	ctx, cancel := context.WithTimeout(ctx, indexReadTimeout)
	defer cancel()
	obj, err := v.h.KeyIndex.Get(ctx, bus.KeyIndexObject)
	if errors.Is(err, jetstream.ErrObjectNotFound) {
		return 0, false, nil
	}
	if err != nil {
		return 0, false, err
	}
	defer obj.Close()
	info, err := obj.Info()
	if err != nil {
		return 0, false, err
	}
	if err := v.checkIndexSignature(info); err != nil {
		return 0, false, err
	}
	r := bufio.NewReaderSize(obj, 1<<20)
	seq, err := v.decodeIndex(r, lastSeq, info.Size)
	if err != nil {
		return 0, false, err
	}
	// Read to the end: the object store checks the content against the
	// signed digest only there.
	if _, err := io.Copy(io.Discard, r); err != nil {
		return 0, false, fmt.Errorf("keyauth: key index: %w", err)
	}
	return seq, true, nil
}

func (v *Validator) decodeIndex(r *bufio.Reader, lastSeq, size uint64) (uint64, error) {
	var head [len(indexMagic) + 1]byte
	if _, err := io.ReadFull(r, head[:]); err != nil {
		return 0, err
	}
	version := head[len(indexMagic)]
	if string(head[:len(indexMagic)]) != indexMagic || version < 2 || version > indexVersion {
		return 0, errIndexFormat
	}
	d := decoder{r: r}
	seq, flagSeq, webrtcOff := d.uvarint(), d.uvarint(), d.byte() == 1
	if d.err == nil && seq > lastSeq {
		return 0, fmt.Errorf("%w: it is at event %d, the stream at %d", errIndexFormat, seq, lastSeq)
	}
	s := &v.st
	s.flagSeq = flagSeq
	s.webrtcOff.Store(webrtcOff)
	aggs := d.uvarint()
	if d.err != nil || aggs > size/minChainEntry {
		return 0, fmt.Errorf("%w: bad chain count", errIndexFormat)
	}
	for range aggs {
		agg := d.string()
		s.chain.Restore(agg, d.bytes()) // Restore copies
	}
	teams := make([]*team, min(d.uvarint(), 1<<24))
	for i := range teams {
		t := s.team(d.string())
		if d.byte() == 1 {
			c := &teamConfig{seq: d.uvarint(), enabled: d.byte() == 1, allowed: ScopeSet(d.byte()), limit: d.varint()}
			t.cfg.Store(c)
		}
		teams[i] = t
	}
	n := d.uvarint()
	if d.err != nil || n > size/minKeyEntry {
		return 0, fmt.Errorf("%w: bad key count", errIndexFormat)
	}
	s.presize(int(n))
	// Straight into the table: no copy of the keys, no allocation per key.
	for i := range n {
		var h apikey.Hash
		d.full(h[:])
		ti := d.uvarint()
		scopes, seq := ScopeSet(d.byte()), d.uvarint()
		id := d.bytes()
		var expires int64
		var disabled bool
		if version >= 3 {
			expires, disabled = d.varint(), d.byte() == 1
		}
		if d.err != nil || ti >= uint64(len(teams)) {
			return 0, fmt.Errorf("%w: key %d of %d is cut off or names no team", errIndexFormat, i, n)
		}
		s.putKey(h, id, teams[ti], scopes, seq, expires, disabled) // nothing reads the state before New returns
	}
	if d.err != nil {
		return 0, fmt.Errorf("keyauth: key index: %w", d.err)
	}
	return seq, nil
}

// decoder reads the index's fields, keeping the first error.
type decoder struct {
	r   *bufio.Reader
	err error
	buf []byte
}

func (d *decoder) uvarint() uint64 {
	if d.err != nil {
		return 0
	}
	var x uint64
	x, d.err = binary.ReadUvarint(d.r)
	return x
}

func (d *decoder) varint() int64 {
	if d.err != nil {
		return 0
	}
	var x int64
	x, d.err = binary.ReadVarint(d.r)
	return x
}

func (d *decoder) byte() byte {
	if d.err != nil {
		return 0
	}
	var c byte
	c, d.err = d.r.ReadByte()
	return c
}

func (d *decoder) full(p []byte) {
	if d.err == nil {
		_, d.err = io.ReadFull(d.r, p)
	}
}

func (d *decoder) string() string { return string(d.bytes()) }

// bytes reads a string into a buffer that the next read reuses.
func (d *decoder) bytes() []byte {
	n := d.uvarint()
	if d.err != nil || n > 1024 {
		if d.err == nil {
			d.err = errIndexFormat
		}
		return nil
	}
	if cap(d.buf) < int(n) {
		d.buf = make([]byte, n)
	}
	d.full(d.buf[:n])
	return d.buf[:n]
}

// minKeyEntry is the smallest encoded key: hash, team, scopes, seq, id;
// minChainEntry the smallest chain entry: aggregate, hash.
const (
	minKeyEntry   = 32 + 1 + 1 + 1 + 1
	minChainEntry = 1 + 1
)

func appendString(b []byte, s string) []byte {
	return append(binary.AppendUvarint(b, uint64(len(s))), s...)
}

func boolByte(b bool) byte {
	if b {
		return 1
	}
	return 0
}
