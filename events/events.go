// Package events defines what telkeys records: the event envelope, the
// catalogue of event payloads, their msgpack wire form, and the
// per-aggregate hash chain that makes tampering evident.
//
// Wire names are explicit msgpack tags and type strings, never derived from
// Go identifiers, so renaming Go code never changes what is stored. Decoding
// ignores unknown fields, so older binaries read newer events.
package events

import (
	"bytes"
	"crypto/sha256"
	"errors"
	"fmt"
	"time"

	"github.com/vmihailenco/msgpack/v5"
)

// EnvelopeVersion is the version of the envelope layout and of the canonical
// form hashed into the chain.
const EnvelopeVersion = 1

// Type names an event on the wire.
type Type string

// The catalogue.
const (
	TypePlatformFlagSet      Type = "PlatformFlagSet"
	TypeTeamAccessConfigured Type = "TeamAccessConfigured"
	TypeKeyCreated           Type = "KeyCreated"
	TypeKeyDeleted           Type = "KeyDeleted"
	TypeKeyRolled            Type = "KeyRolled"
	TypeKeyUpdated           Type = "KeyUpdated"
	TypeKeyLeaked            Type = "KeyLeaked"
)

// Types is the catalogue, in the order it grew.
func Types() []Type {
	return []Type{TypePlatformFlagSet, TypeTeamAccessConfigured, TypeKeyCreated, TypeKeyDeleted, TypeKeyRolled, TypeKeyUpdated, TypeKeyLeaked}
}

// Actor is who caused an event.
type Actor struct {
	Subject string `msgpack:"sub" json:"sub"`
	Role    string `msgpack:"role" json:"role"`
}

// Envelope is one stored event. Hash covers every field before it; Prev is
// the Hash of the previous event of the same aggregate (empty for its
// first). Sig is the signature of Hash by the telkeys key KeyID.
type Envelope struct {
	ID        string             `msgpack:"id"`
	Type      Type               `msgpack:"type"`
	Aggregate string             `msgpack:"agg"`
	Actor     Actor              `msgpack:"actor"`
	Time      time.Time          `msgpack:"time"`
	Version   int                `msgpack:"v"`
	Prev      []byte             `msgpack:"prev"`
	Hash      []byte             `msgpack:"hash"`
	Payload   msgpack.RawMessage `msgpack:"payload"`
	KeyID     string             `msgpack:"kid"`
	Sig       []byte             `msgpack:"sig"`
}

// Payload is implemented by every event body in the catalogue.
type Payload interface {
	EventType() Type
	// SchemaVersion is the version of this payload's layout.
	SchemaVersion() int
}

// PlatformFlagSet turns a platform feature flag on or off.
type PlatformFlagSet struct {
	Flag    string `msgpack:"flag"`
	Enabled bool   `msgpack:"enabled"`
}

// FlagWebRTC is the only platform flag: keys work only while it is on.
const FlagWebRTC = "webrtc"

// AccessConfig is a team's API access configuration: whether it is
// enabled, the scopes its keys may have, how many keys it may have, and
// its daily request limit (nil: unlimited). It is the one shape of it: in
// the event, in the state, in the read models and in the API.
type AccessConfig struct {
	Enabled           bool     `msgpack:"enabled" json:"enabled"`
	AllowedScopes     []string `msgpack:"allowed_scopes" json:"allowed_scopes"`
	MaxKeys           int      `msgpack:"max_keys" json:"max_keys"`
	MaxRequestsPerDay *int64   `msgpack:"max_requests_per_day" json:"max_requests_per_day"`
}

// TeamAccessConfigured replaces a team's API access configuration. The
// embedded struct's fields are inlined on the wire, as they always were.
type TeamAccessConfigured struct {
	AccessConfig
}

// KeyCreated records a new key. It holds the SHA-256 of the key, never the
// key: Last4 are checksum characters, kept for masked display.
type KeyCreated struct {
	KeyID  string   `msgpack:"key_id"`
	Name   string   `msgpack:"name"`
	Scopes []string `msgpack:"scopes"`
	Hash   []byte   `msgpack:"hash"`
	Last4  string   `msgpack:"last4"`
	// ExpiresAt, if set, is when the key stops working (added after v1:
	// absent from keys made before, and from keys without an expiry).
	ExpiresAt *time.Time `msgpack:"expires_at,omitempty"`
}

// KeyRolled records a key replaced by a new one (the embedded KeyCreated,
// inlined on the wire) with the old key's name and scopes. The old key,
// Replaces with hash ReplacedHash, stops working at GraceUntil: the
// event's own time for a roll without a grace period.
type KeyRolled struct {
	KeyCreated
	Replaces     string    `msgpack:"replaces"`
	ReplacedHash []byte    `msgpack:"replaced_hash"`
	GraceUntil   time.Time `msgpack:"grace_until"`
}

// KeyUpdated changes a key: disables or enables it, renames it. A nil
// field is unchanged. Hash is there so that validators need no lookup.
type KeyUpdated struct {
	KeyID   string  `msgpack:"key_id"`
	Hash    []byte  `msgpack:"hash"`
	Enabled *bool   `msgpack:"enabled,omitempty"`
	Name    *string `msgpack:"name,omitempty"`
}

// KeyLeaked records that a key was reported as exposed, at URL, by
// Reporter (e.g. "github" for GitHub secret scanning, whose Source says
// where it found it: "content", "commit", …). Revoked: the key stopped
// working with this event, as if deleted; otherwise it is only marked.
type KeyLeaked struct {
	KeyID    string `msgpack:"key_id"`
	Hash     []byte `msgpack:"hash"`
	URL      string `msgpack:"url"`
	Source   string `msgpack:"source"`
	Reporter string `msgpack:"reporter"`
	Revoked  bool   `msgpack:"revoked"`
}

// KeyDeleted records that a key stopped being valid. Hash is repeated so
// that validators can drop the key without a lookup.
type KeyDeleted struct {
	KeyID string `msgpack:"key_id"`
	Hash  []byte `msgpack:"hash"`
}

func (PlatformFlagSet) EventType() Type      { return TypePlatformFlagSet }
func (TeamAccessConfigured) EventType() Type { return TypeTeamAccessConfigured }
func (KeyCreated) EventType() Type           { return TypeKeyCreated }
func (KeyDeleted) EventType() Type           { return TypeKeyDeleted }
func (KeyRolled) EventType() Type            { return TypeKeyRolled }
func (KeyUpdated) EventType() Type           { return TypeKeyUpdated }
func (KeyLeaked) EventType() Type            { return TypeKeyLeaked }

func (PlatformFlagSet) SchemaVersion() int      { return 1 }
func (TeamAccessConfigured) SchemaVersion() int { return 1 }
func (KeyCreated) SchemaVersion() int           { return 1 }
func (KeyDeleted) SchemaVersion() int           { return 1 }
func (KeyRolled) SchemaVersion() int            { return 1 }
func (KeyUpdated) SchemaVersion() int           { return 1 }
func (KeyLeaked) SchemaVersion() int            { return 1 }

// Errors returned by decoding and verification.
var (
	ErrMalformed   = errors.New("events: malformed event")
	ErrUnknownType = errors.New("events: unknown event type")
	ErrBadHash     = errors.New("events: hash does not match content")
	ErrBrokenChain = errors.New("events: prev does not match the previous event's hash")
)

// New seals a payload into an envelope chained after prev.
func New(id, aggregate string, actor Actor, at time.Time, prev []byte, p Payload) (Envelope, error) {
	body, err := msgpack.Marshal(p)
	if err != nil {
		return Envelope{}, fmt.Errorf("events: encode %s: %w", p.EventType(), err)
	}
	e := Envelope{
		ID:        id,
		Type:      p.EventType(),
		Aggregate: aggregate,
		Actor:     actor,
		Time:      at.UTC().Round(0),
		Version:   p.SchemaVersion(),
		Prev:      bytes.Clone(prev),
		Payload:   body,
	}
	e.Hash = e.ComputeHash()
	return e, nil
}

// ComputeHash returns SHA-256 over the canonical form of every field but
// Hash. The canonical form is a msgpack array in a fixed order with the
// payload's stored bytes, so it never depends on struct layout or decoding.
//
// The array is written field by field (the same bytes msgpack.Marshal of a
// []any gives, without reflection): replaying and verifying the history
// hashes every event.
func (e Envelope) ComputeHash() []byte {
	var buf bytes.Buffer
	buf.Grow(128 + len(e.Payload) + len(e.Prev))
	enc := msgpack.NewEncoder(&buf)
	// Writes to a bytes.Buffer cannot fail.
	_ = enc.EncodeArrayLen(11)
	_ = enc.EncodeInt(EnvelopeVersion)
	_ = enc.EncodeString(e.ID)
	_ = enc.EncodeString(string(e.Type))
	_ = enc.EncodeString(e.Aggregate)
	_ = enc.EncodeString(e.Actor.Subject)
	_ = enc.EncodeString(e.Actor.Role)
	_ = enc.EncodeInt64(e.Time.Unix()) // an int64 field: Marshal writes all 8 bytes
	_ = enc.EncodeInt(int64(e.Time.Nanosecond()))
	_ = enc.EncodeInt(int64(e.Version))
	_ = enc.EncodeBytes(e.Prev)
	_ = enc.EncodeBytes(e.Payload)
	sum := sha256.Sum256(buf.Bytes())
	return sum[:]
}

// Verify checks the envelope's own hash and that it follows prev.
func (e Envelope) Verify(prev []byte) error {
	if !bytes.Equal(e.ComputeHash(), e.Hash) {
		return ErrBadHash
	}
	if !bytes.Equal(e.Prev, prev) {
		return ErrBrokenChain
	}
	return nil
}

// Marshal returns the wire form of the envelope.
func (e Envelope) Marshal() ([]byte, error) { return msgpack.Marshal(e) }

// Unmarshal decodes the wire form of an envelope. Unknown fields are ignored.
// It does not decode the payload; see Decode.
func Unmarshal(b []byte) (_ Envelope, err error) {
	defer func() { // the decoder panics on some input (nil into time.Time)
		if r := recover(); r != nil {
			err = fmt.Errorf("%w: %v", ErrMalformed, r)
		}
	}()
	if err := checkLengths(b); err != nil {
		return Envelope{}, fmt.Errorf("%w: %v", ErrMalformed, err)
	}
	var e Envelope
	if err := msgpack.Unmarshal(b, &e); err != nil {
		return Envelope{}, fmt.Errorf("%w: %v", ErrMalformed, err)
	}
	if e.ID == "" || e.Type == "" || e.Aggregate == "" {
		return Envelope{}, fmt.Errorf("%w: missing id, type or aggregate", ErrMalformed)
	}
	e.Time = e.Time.UTC()
	return e, nil
}

// Decode returns the typed payload of an envelope. Every schema version ever
// written is accepted; an unknown type gives ErrUnknownType so that readers
// can skip events from newer writers.
func (e Envelope) Decode() (_ Payload, err error) {
	defer func() {
		if r := recover(); r != nil {
			err = fmt.Errorf("%w: %s payload: %v", ErrMalformed, e.Type, r)
		}
	}()
	var p Payload
	switch e.Type {
	case TypePlatformFlagSet:
		p = &PlatformFlagSet{}
	case TypeTeamAccessConfigured:
		p = &TeamAccessConfigured{}
	case TypeKeyCreated:
		p = &KeyCreated{}
	case TypeKeyDeleted:
		p = &KeyDeleted{}
	case TypeKeyRolled:
		p = &KeyRolled{}
	case TypeKeyUpdated:
		p = &KeyUpdated{}
	case TypeKeyLeaked:
		p = &KeyLeaked{}
	default:
		return nil, fmt.Errorf("%w: %q", ErrUnknownType, e.Type)
	}
	if err := checkLengths(e.Payload); err != nil {
		return nil, fmt.Errorf("%w: %s payload: %v", ErrMalformed, e.Type, err)
	}
	if err := msgpack.Unmarshal(e.Payload, p); err != nil {
		return nil, fmt.Errorf("%w: %s payload: %v", ErrMalformed, e.Type, err)
	}
	// Return values, not pointers, so callers switch on plain types.
	switch v := p.(type) {
	case *PlatformFlagSet:
		return *v, nil
	case *TeamAccessConfigured:
		return *v, nil
	case *KeyCreated:
		return normalize(*v), nil
	case *KeyRolled:
		v.KeyCreated = normalize(v.KeyCreated)
		v.GraceUntil = v.GraceUntil.UTC()
		return *v, nil
	case *KeyUpdated:
		return *v, nil
	case *KeyLeaked:
		return *v, nil
	default:
		return *v.(*KeyDeleted), nil
	}
}

// normalize gives a decoded KeyCreated's expiry in UTC.
func normalize(k KeyCreated) KeyCreated {
	if k.ExpiresAt != nil {
		t := k.ExpiresAt.UTC()
		k.ExpiresAt = &t
	}
	return k
}

// PlatformAggregate is the aggregate of platform-wide settings.
const PlatformAggregate = "platform"

const teamAggregatePrefix = "team."

// TeamAggregate names the aggregate of one team: its access configuration
// and its keys, so that max_keys holds under one concurrency check.
func TeamAggregate(team string) string { return teamAggregatePrefix + team }

// TeamOf returns the team of a team aggregate, and false for any other.
func TeamOf(aggregate string) (string, bool) {
	if len(aggregate) > len(teamAggregatePrefix) && aggregate[:len(teamAggregatePrefix)] == teamAggregatePrefix {
		return aggregate[len(teamAggregatePrefix):], true
	}
	return "", false
}
