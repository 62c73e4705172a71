package events

import (
	"bytes"
	"errors"
	"fmt"
)

// Invalid says why a stored message is not a valid event. Every reader
// (the commands' write model, the projector, keyauth, audit) skips such a
// message in the same way: it is quarantined, never applied, and its
// aggregate goes on from its last valid event.
type Invalid struct {
	// Reason is short and stable: a metric label.
	Reason string
	Err    error
}

func (e *Invalid) Error() string { return "invalid event (" + e.Reason + "): " + e.Err.Error() }
func (e *Invalid) Unwrap() error { return e.Err }

// The reasons.
const (
	ReasonMalformed    = "malformed"     // not an envelope, out of bounds, or a payload that breaks its schema
	ReasonWrongSubject = "wrong_subject" // stored on another aggregate's subject
	ReasonBadHash      = "bad_hash"      // the hash does not match the content
	ReasonUnsigned     = "unsigned"
	ReasonUntrustedKey = "untrusted_key"
	ReasonBadSignature = "bad_signature"
	ReasonOutOfPlace   = "out_of_place" // prev is not the last valid event of its aggregate: forged, replayed or reordered
)

func invalid(reason string, err error) error { return &Invalid{Reason: reason, Err: err} }

// Chain is the one definition of a valid event, and the state it needs:
// the hash of the last valid event of each aggregate. It is not safe for
// concurrent use.
type Chain struct {
	keys *Keys
	last map[string][]byte
}

// NewChain checks events against keys, from an empty history.
func NewChain(keys *Keys) *Chain { return &Chain{keys: keys, last: map[string][]byte{}} }

// Last is the hash of the last valid event of an aggregate (nil: none).
func (c *Chain) Last(aggregate string) []byte { return c.last[aggregate] }

// Restore sets the last valid event of an aggregate, from a snapshot of
// a history checked before.
func (c *Chain) Restore(aggregate string, hash []byte) { c.last[aggregate] = bytes.Clone(hash) }

// Each calls f for every aggregate and the hash of its last valid event.
func (c *Chain) Each(f func(aggregate string, hash []byte)) {
	for a, h := range c.last {
		f(a, h)
	}
}

// Check decides whether data, stored on the subject of aggregate, is a
// valid event: it decodes within the hostile-input bounds and its payload
// within its schema, it belongs to the subject's aggregate, its hash
// matches its content and is signed by a trusted key, and its prev is the
// hash of the last valid event of its aggregate. A valid event becomes
// that last event; an invalid one changes nothing and returns *Invalid.
//
// The chain also makes ids unique: a copy of a valid event, replayed
// anywhere, is out of place, so a second event with a seen id would have
// to be signed by telkeys.
//
// A valid event of a type this version does not know returns a nil
// payload: it counts in the chain, and changes no state this version has.
func (c *Chain) Check(aggregate string, data []byte) (Envelope, Payload, error) {
	e, p, err := c.keys.Check(aggregate, data)
	if err == nil {
		err = c.Link(e)
	}
	if err != nil {
		return e, nil, err
	}
	return e, p, nil
}

// Check is the part of Chain.Check that needs no history: everything but
// the event's place in its aggregate's chain. It is safe for concurrent
// use, so that readers of long histories can check signatures on every
// core and then Link the results in stream order.
func (k *Keys) Check(aggregate string, data []byte) (Envelope, Payload, error) {
	return k.check(aggregate, data, true)
}

// CheckContent is Check without checking the signature itself (the key id
// must still be a trusted one). It is for a reader that, once it has
// linked a whole history (Chain.Link), verifies the signature of the last
// event of each chain (VerifyHead): telkeys signs an event only after every
// event before it on its chain passed Check, and each event's hash covers
// its prev, so a valid last signature vouches for the whole chain. If a
// last signature fails, the reader must check again with Check: a forged
// event may have taken a real one's place. audit.StateAt does this.
func (k *Keys) CheckContent(aggregate string, data []byte) (Envelope, Payload, error) {
	return k.check(aggregate, data, false)
}

// VerifyHead verifies the signature of e, the last event CheckContent and
// Chain.Link accepted on its chain.
func (k *Keys) VerifyHead(e Envelope) error { return k.Verify(e.KeyID, e.Hash, e.Sig) }

func (k *Keys) check(aggregate string, data []byte, signature bool) (Envelope, Payload, error) {
	e, err := Unmarshal(data)
	if err != nil {
		return e, nil, invalid(ReasonMalformed, err)
	}
	if e.Aggregate != aggregate {
		return e, nil, invalid(ReasonWrongSubject, fmt.Errorf("an event of %q stored on the subject of %q", e.Aggregate, aggregate))
	}
	if !bytes.Equal(e.ComputeHash(), e.Hash) {
		return e, nil, invalid(ReasonBadHash, ErrBadHash)
	}
	verify := k.Verify
	if !signature {
		verify = k.trusted
	}
	if err := verify(e.KeyID, e.Hash, e.Sig); err != nil {
		reason := ReasonBadSignature
		switch {
		case errors.Is(err, ErrUnsigned):
			reason = ReasonUnsigned
		case errors.Is(err, ErrUntrustedKey):
			reason = ReasonUntrustedKey
		}
		return e, nil, invalid(reason, err)
	}
	p, err := e.Decode()
	if err == nil {
		err = validPayload(e, p)
	}
	if err != nil && !errors.Is(err, ErrUnknownType) {
		return e, nil, invalid(ReasonMalformed, err)
	}
	return e, p, nil
}

// Link is the part of Chain.Check that needs the history, for an event
// that passed Keys.Check: its prev must be the hash of the last valid
// event of its aggregate, and it becomes that event.
func (c *Chain) Link(e Envelope) error {
	if !bytes.Equal(e.Prev, c.last[e.Aggregate]) {
		return invalid(ReasonOutOfPlace, ErrBrokenChain)
	}
	c.last[e.Aggregate] = e.Hash
	return nil
}

// validPayload is the schema beyond decoding: what readers rely on.
func validPayload(e Envelope, p Payload) error {
	_, team := TeamOf(e.Aggregate)
	switch p := p.(type) {
	case PlatformFlagSet:
		if e.Aggregate != PlatformAggregate || p.Flag == "" {
			return fmt.Errorf("%w: a platform flag outside the platform aggregate, or unnamed", ErrMalformed)
		}
		return nil
	case KeyCreated:
		if !team || p.KeyID == "" || len(p.Hash) != 32 {
			return fmt.Errorf("%w: KeyCreated needs a team, a key id and a 32-byte hash", ErrMalformed)
		}
	case KeyDeleted:
		if !team || p.KeyID == "" || len(p.Hash) != 32 {
			return fmt.Errorf("%w: KeyDeleted needs a team, a key id and a 32-byte hash", ErrMalformed)
		}
	case KeyRolled:
		if !team || p.KeyID == "" || len(p.Hash) != 32 || p.Replaces == "" || len(p.ReplacedHash) != 32 {
			return fmt.Errorf("%w: KeyRolled needs a team, both key ids and both 32-byte hashes", ErrMalformed)
		}
	case KeyUpdated:
		if !team || p.KeyID == "" || len(p.Hash) != 32 {
			return fmt.Errorf("%w: KeyUpdated needs a team, a key id and a 32-byte hash", ErrMalformed)
		}
	case KeyLeaked:
		if !team || p.KeyID == "" || len(p.Hash) != 32 {
			return fmt.Errorf("%w: KeyLeaked needs a team, a key id and a 32-byte hash", ErrMalformed)
		}
	case TeamAccessConfigured:
		if !team || p.MaxKeys < 0 {
			return fmt.Errorf("%w: TeamAccessConfigured needs a team and max_keys ≥ 0", ErrMalformed)
		}
	}
	return nil
}
