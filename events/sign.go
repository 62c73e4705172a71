package events

import (
	"crypto/ed25519"
	"crypto/rand"
	"crypto/sha256"
	"crypto/x509"
	"encoding/hex"
	"encoding/pem"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"time"
)

// Events are signed: telkeys signs each event's hash with Ed25519 when it
// appends it, and the envelope carries the signature and the id of the
// key. The hash chain proves order; the signature proves that telkeys
// wrote the event, which anyone able to compute SHA-256 cannot fake.

// KeyIDOf is a public key's id: the first 8 bytes of its SHA-256, in hex.
func KeyIDOf(pub ed25519.PublicKey) string {
	sum := sha256.Sum256(pub)
	return hex.EncodeToString(sum[:8])
}

// Signer signs events (and the other things readers must trust: the key
// index, heartbeats) with one private key.
type Signer struct {
	id  string
	key ed25519.PrivateKey
}

// NewSigner returns a signer for key.
func NewSigner(key ed25519.PrivateKey) *Signer {
	return &Signer{id: KeyIDOf(key.Public().(ed25519.PublicKey)), key: key}
}

// KeyID is the id of the signing key.
func (s *Signer) KeyID() string { return s.id }

// PublicKey is what readers must trust.
func (s *Signer) PublicKey() ed25519.PublicKey { return s.key.Public().(ed25519.PublicKey) }

// Sign signs msg.
func (s *Signer) Sign(msg []byte) []byte { return ed25519.Sign(s.key, msg) }

// Seal signs a new envelope's hash.
func (s *Signer) Seal(e *Envelope) {
	e.KeyID = s.id
	e.Sig = s.Sign(e.Hash)
}

// Keys are the public keys a reader trusts, by id: usually one, several
// while a signing key is rotated.
type Keys struct {
	byID map[string]ed25519.PublicKey
	seen verified
}

// verified remembers the last signatures that verified, by the message's
// first bytes: in telkeys the projector and the server's own validator
// check every event as it is appended, and an Ed25519 check costs 45 µs
// of the two cores; the second one is now a compare. An entry matches only
// the same key id, message and signature, byte for byte, so a hit is a
// signature that verified over exactly these bytes.
type verified struct {
	mu    sync.Mutex
	slots [1024]verifiedSlot
}

type verifiedSlot struct {
	kid string
	msg [32]byte
	sig [ed25519.SignatureSize]byte
}

func (v *verified) slot(msg []byte) *verifiedSlot {
	return &v.slots[(uint(msg[0])|uint(msg[1])<<8)%uint(len(v.slots))]
}

func (v *verified) has(kid string, msg, sig []byte) bool {
	if len(msg) != 32 || len(sig) != ed25519.SignatureSize {
		return false
	}
	v.mu.Lock()
	defer v.mu.Unlock()
	s := v.slot(msg)
	return s.kid == kid && [32]byte(msg) == s.msg && [ed25519.SignatureSize]byte(sig) == s.sig
}

func (v *verified) add(kid string, msg, sig []byte) {
	if len(msg) != 32 || len(sig) != ed25519.SignatureSize {
		return
	}
	v.mu.Lock()
	defer v.mu.Unlock()
	*v.slot(msg) = verifiedSlot{kid: kid, msg: [32]byte(msg), sig: [ed25519.SignatureSize]byte(sig)}
}

// NewKeys trusts pubs.
func NewKeys(pubs ...ed25519.PublicKey) *Keys {
	k := &Keys{byID: map[string]ed25519.PublicKey{}}
	for _, p := range pubs {
		k.byID[KeyIDOf(p)] = p
	}
	return k
}

// Len is how many keys are trusted.
func (k *Keys) Len() int { return len(k.byID) }

// Add trusts more keys.
func (k *Keys) Add(pubs ...ed25519.PublicKey) {
	for _, p := range pubs {
		k.byID[KeyIDOf(p)] = p
	}
}

// Merge trusts o's keys too.
func (k *Keys) Merge(o *Keys) {
	for id, p := range o.byID {
		k.byID[id] = p
	}
}

// Public returns every trusted key.
func (k *Keys) Public() []ed25519.PublicKey {
	out := make([]ed25519.PublicKey, 0, len(k.byID))
	for _, p := range k.byID {
		out = append(out, p)
	}
	return out
}

// Errors of signature checks.
var (
	ErrUnsigned     = errors.New("events: not signed")
	ErrUntrustedKey = errors.New("events: signed by a key that is not trusted")
	ErrBadSignature = errors.New("events: signature does not verify")
)

// trusted is Verify without the signature check itself (CheckContent).
func (k *Keys) trusted(kid string, _, sig []byte) error {
	if kid == "" || len(sig) == 0 {
		return ErrUnsigned
	}
	if _, ok := k.byID[kid]; !ok {
		return ErrUntrustedKey
	}
	return nil
}

// Verify checks sig over msg under the trusted key kid.
func (k *Keys) Verify(kid string, msg, sig []byte) error {
	if kid == "" || len(sig) == 0 {
		return ErrUnsigned
	}
	pub, ok := k.byID[kid]
	if !ok {
		return ErrUntrustedKey
	}
	if k.seen.has(kid, msg, sig) {
		return nil
	}
	if len(sig) != ed25519.SignatureSize || !ed25519.Verify(pub, msg, sig) {
		return ErrBadSignature
	}
	k.seen.add(kid, msg, sig)
	return nil
}

// LoadSigningKey reads an Ed25519 private key (PEM, PKCS #8) from path,
// creating one there, readable by its owner only, if create is set and
// there is none.
func LoadSigningKey(path string, create bool) (*Signer, error) {
	data, err := os.ReadFile(path)
	if errors.Is(err, os.ErrNotExist) && create {
		return createSigningKey(path)
	}
	if err != nil {
		return nil, fmt.Errorf("events: signing key: %w", err)
	}
	block, _ := pem.Decode(data)
	if block == nil || block.Type != "PRIVATE KEY" {
		return nil, fmt.Errorf("events: signing key %s: want a PEM \"PRIVATE KEY\" block", path)
	}
	key, err := x509.ParsePKCS8PrivateKey(block.Bytes)
	if err != nil {
		return nil, fmt.Errorf("events: signing key %s: %w", path, err)
	}
	ed, ok := key.(ed25519.PrivateKey)
	if !ok {
		return nil, fmt.Errorf("events: signing key %s: not an Ed25519 key", path)
	}
	return NewSigner(ed), nil
}

func createSigningKey(path string) (*Signer, error) {
	_, key, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		return nil, err
	}
	der, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return nil, err
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return nil, err
	}
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return nil, fmt.Errorf("events: signing key: %w", err)
	}
	err = pem.Encode(f, &pem.Block{Type: "PRIVATE KEY", Bytes: der})
	if err = errors.Join(err, f.Close()); err != nil {
		return nil, err
	}
	return NewSigner(key), nil
}

// EncodePublicKeys is the file format of trusted keys: one PEM "PUBLIC
// KEY" block (PKIX) per key.
func EncodePublicKeys(pubs ...ed25519.PublicKey) ([]byte, error) {
	var b strings.Builder
	for _, p := range pubs {
		der, err := x509.MarshalPKIXPublicKey(p)
		if err != nil {
			return nil, err
		}
		fmt.Fprintf(&b, "# telkeys event-signing key %s\n", KeyIDOf(p))
		if err := pem.Encode(&b, &pem.Block{Type: "PUBLIC KEY", Bytes: der}); err != nil {
			return nil, err
		}
	}
	return []byte(b.String()), nil
}

// ReadPublicKeys reads the keys to trust from a file of PEM "PUBLIC KEY"
// blocks. A file with none is an error: a reader must trust something.
func ReadPublicKeys(path string) (*Keys, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("events: trusted keys: %w", err)
	}
	keys := NewKeys()
	for {
		var block *pem.Block
		block, data = pem.Decode(data)
		if block == nil {
			break
		}
		if block.Type != "PUBLIC KEY" {
			continue
		}
		pub, err := x509.ParsePKIXPublicKey(block.Bytes)
		if err != nil {
			return nil, fmt.Errorf("events: trusted keys %s: %w", path, err)
		}
		ed, ok := pub.(ed25519.PublicKey)
		if !ok {
			return nil, fmt.Errorf("events: trusted keys %s: a key that is not Ed25519", path)
		}
		keys.Add(ed)
	}
	if keys.Len() == 0 {
		return nil, fmt.Errorf("events: trusted keys %s: no PEM \"PUBLIC KEY\" block", path)
	}
	return keys, nil
}

// Heartbeats tell validators how far the event stream is. They are signed
// and dated, so that nobody but telkeys can announce a sequence (which
// would make nodes wait for it) or keep a cut-off node believing it is
// current by replaying old ones.
//
//	"<seq> <unix ns> <key id> <hex signature of the first two fields>"

// SignHeartbeat returns a heartbeat announcing seq at time at.
func (s *Signer) SignHeartbeat(seq uint64, at time.Time) []byte {
	msg := strconv.FormatUint(seq, 10) + " " + strconv.FormatInt(at.UnixNano(), 10)
	return []byte(msg + " " + s.id + " " + hex.EncodeToString(s.Sign([]byte(msg))))
}

// CheckHeartbeat verifies a heartbeat and returns what it announces.
func (k *Keys) CheckHeartbeat(data []byte) (seq uint64, at time.Time, err error) {
	f := strings.Fields(string(data))
	if len(f) != 4 {
		return 0, at, errors.New("events: malformed heartbeat")
	}
	sig, err := hex.DecodeString(f[3])
	if err != nil {
		return 0, at, errors.New("events: malformed heartbeat")
	}
	if err := k.Verify(f[2], []byte(f[0]+" "+f[1]), sig); err != nil {
		return 0, at, err
	}
	seq, err1 := strconv.ParseUint(f[0], 10, 64)
	ns, err2 := strconv.ParseInt(f[1], 10, 64)
	if err1 != nil || err2 != nil {
		return 0, at, errors.New("events: malformed heartbeat")
	}
	return seq, time.Unix(0, ns), nil
}
