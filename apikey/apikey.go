// Package apikey defines the format of telkeys API keys: how they are
// generated, parsed, hashed for storage and masked for display.
//
// A key is "tk_" + 30 base62 characters from crypto/rand (≈178 bits) + a
// 6-character base62 CRC-32 of everything before it, as GitHub does for its
// tokens. The checksum lets Parse reject typos and garbage before any lookup
// and lets secret scanners recognise leaked keys offline. It is not a
// security control: the random part is.
package apikey

import (
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"hash/crc32"
)

const (
	// Prefix starts every key.
	Prefix = "tk_"
	// RandomLen is the number of random base62 characters (≈178.6 bits).
	RandomLen = 30
	// ChecksumLen is the number of base62 characters of the CRC-32.
	ChecksumLen = 6
	// Len is the total length of a key.
	Len = len(Prefix) + RandomLen + ChecksumLen

	alphabet = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
)

// Errors returned by Parse. They never contain the key itself.
var (
	ErrPrefix   = errors.New("apikey: missing tk_ prefix")
	ErrLength   = errors.New("apikey: wrong length")
	ErrAlphabet = errors.New("apikey: character outside base62")
	ErrChecksum = errors.New("apikey: checksum mismatch")
)

// Hash is the SHA-256 of a whole key. It is what telkeys stores and looks up.
type Hash [sha256.Size]byte

// String returns the lowercase hex form used as a KV key.
func (h Hash) String() string { return hex.EncodeToString(h[:]) }

// ParseHash reads the hex form written by Hash.String.
func ParseHash(s string) (Hash, error) {
	var h Hash
	if len(s) != hex.EncodedLen(len(h)) {
		return h, errors.New("apikey: bad hash length")
	}
	_, err := hex.Decode(h[:], []byte(s))
	return h, err
}

// Generate returns a new random key.
func Generate() (string, error) {
	var b [Len]byte
	copy(b[:], Prefix)
	if err := fillRandom(b[len(Prefix) : len(Prefix)+RandomLen]); err != nil {
		return "", err
	}
	putChecksum(b[len(Prefix)+RandomLen:], checksum(string(b[:len(Prefix)+RandomLen])))
	return string(b[:]), nil
}

// fillRandom writes uniformly distributed base62 characters, by rejection
// sampling bytes from crypto/rand (248 = 4×62, so b%62 is unbiased below it).
func fillRandom(dst []byte) error {
	var buf [64]byte
	for i := 0; i < len(dst); {
		if _, err := rand.Read(buf[:]); err != nil {
			return err
		}
		for _, c := range buf {
			if c >= 248 {
				continue
			}
			dst[i] = alphabet[c%62]
			i++
			if i == len(dst) {
				break
			}
		}
	}
	return nil
}

// Parse checks that s is well formed: prefix, length, alphabet and checksum.
// It does not allocate and never looks anything up.
func Parse(s string) error {
	if len(s) != Len {
		return ErrLength
	}
	if s[:len(Prefix)] != Prefix {
		return ErrPrefix
	}
	// Table lookups, no branches per character: keys are random, so
	// branching on character ranges mispredicts, and that cost Verify more
	// than its SHA-256 did.
	var bad byte
	for i := len(Prefix); i < Len; i++ {
		bad |= base62Value[s[i]]
	}
	if bad == invalid62 {
		return ErrAlphabet
	}
	body := s[:len(Prefix)+RandomLen]
	var got uint64 // the given checksum, decoded: no divisions
	for i := len(body); i < Len; i++ {
		got = got*62 + uint64(base62Value[s[i]])
	}
	if got != uint64(checksum(body)) {
		return ErrChecksum
	}
	return nil
}

// HashOf returns the SHA-256 of the key. It does not validate it.
func HashOf(key string) Hash { return sha256.Sum256([]byte(key)) }

// Last4 returns the last four characters, which are checksum characters and
// reveal nothing of the random part.
func Last4(key string) string {
	if len(key) < 4 {
		return ""
	}
	return key[len(key)-4:]
}

// Mask returns the display form of a key from its last four characters.
func Mask(last4 string) string { return Prefix + "…" + last4 }

// Random returns the random part of a well-formed key; tests use it to prove
// that no fragment of a secret leaked.
func Random(key string) string {
	if len(key) != Len {
		return ""
	}
	return key[len(Prefix) : len(Prefix)+RandomLen]
}

// checksum is CRC-32 (IEEE) over a string, slicing by 8. It is written
// out because hash/crc32's entry points make their argument escape, which
// would cost Parse an allocation on the verify hot path.
func checksum(s string) uint32 {
	t := &crcTables
	crc := ^uint32(0)
	for len(s) >= 8 {
		crc ^= uint32(s[0]) | uint32(s[1])<<8 | uint32(s[2])<<16 | uint32(s[3])<<24
		crc = t[0][s[7]] ^ t[1][s[6]] ^ t[2][s[5]] ^ t[3][s[4]] ^
			t[4][crc>>24] ^ t[5][crc>>16&0xff] ^ t[6][crc>>8&0xff] ^ t[7][crc&0xff]
		s = s[8:]
	}
	for i := 0; i < len(s); i++ {
		crc = t[0][byte(crc)^s[i]] ^ crc>>8
	}
	return ^crc
}

// crcTables are the slicing-by-8 tables of CRC-32 (IEEE): constants,
// computed once from hash/crc32's table.
var crcTables = func() (t [8][256]uint32) {
	t[0] = *crc32.IEEETable
	for i := range 256 {
		crc := t[0][i]
		for j := 1; j < 8; j++ {
			crc = t[0][crc&0xff] ^ crc>>8
			t[j][i] = crc
		}
	}
	return t
}()

// invalid62 marks a byte outside the alphabet in base62Value.
const invalid62 = 0xFF

// base62Value is each byte's value in the alphabet, or invalid62: a
// constant, built once.
var base62Value = func() (t [256]byte) {
	for i := range t {
		t[i] = invalid62
	}
	for i := range len(alphabet) {
		t[alphabet[i]] = byte(i)
	}
	return t
}()

// putChecksum writes v in base62, most significant digit first, zero padded.
func putChecksum(dst []byte, v uint32) {
	for i := len(dst) - 1; i >= 0; i-- {
		dst[i] = alphabet[v%62]
		v /= 62
	}
}
