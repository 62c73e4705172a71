// Package auth issues and checks the platform's bearer tokens: JWTs with a
// subject, a role and, for members, a team. It accepts HS256 with the
// configured secret, and, with TrustIssuer, RS256, ES256 or EdDSA from the
// platform's identity provider (its JWKS, issuer and audience); "alg: none"
// and every other algorithm are refused before any signature check.
package auth

import (
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/golang-jwt/jwt/v5"
)

// Role is what a token's holder may do.
type Role string

// The roles.
const (
	RoleSuperadmin Role = "superadmin"
	RoleAuditor    Role = "auditor"
	RoleMember     Role = "member"
	RoleNode       Role = "node"
)

// Valid reports whether r is one of the roles.
func (r Role) Valid() bool {
	switch r {
	case RoleSuperadmin, RoleAuditor, RoleMember, RoleNode:
		return true
	}
	return false
}

// Claims are what a verified token says.
type Claims struct {
	Subject string
	Role    Role
	Team    string
	Expires time.Time
}

// ErrUnauthorized wraps every reason a token is refused.
var ErrUnauthorized = errors.New("unauthorized")

const (
	// MinSecretLen is the shortest accepted HS256 secret, in bytes.
	MinSecretLen = 32
	// maxTokenLen bounds the work done on a hostile Authorization header.
	maxTokenLen = 4096
	secretFile  = "auth-secret"
)

// Authority mints and verifies tokens with one HS256 secret.
type Authority struct {
	secret []byte
	// ValidTeam checks a member's team claim.
	validTeam func(string) bool
	now       func() time.Time

	// verified remembers tokens that passed Verify, by their whole text
	// (signature included): a TelAPI node sends the same token with every
	// call, and parsing and checking it again cost a fifth of a verify
	// request. Only expiry can change a verified token's verdict, and it is
	// checked on every hit. Cleared when full.
	mu       sync.RWMutex
	verified map[string]Claims

	// issuer, if set, is the platform's identity provider (TrustIssuer).
	issuer *issuer
}

// verifiedMax bounds the remembered tokens.
const verifiedMax = 4096

// leeway is the clock skew allowed on expiry.
const leeway = 30 * time.Second

// New returns an Authority. validTeam checks the team claim of members.
func New(secret []byte, validTeam func(string) bool) (*Authority, error) {
	if len(secret) < MinSecretLen {
		return nil, fmt.Errorf("auth: secret must be at least %d bytes", MinSecretLen)
	}
	if validTeam == nil {
		return nil, errors.New("auth: a team validator is required")
	}
	return &Authority{secret: secret, validTeam: validTeam, now: time.Now, verified: map[string]Claims{}}, nil
}

type jwtClaims struct {
	jwt.RegisteredClaims
	Role Role   `json:"role"`
	Team string `json:"team,omitempty"`
}

// Mint signs a token for c, valid for ttl.
func (a *Authority) Mint(c Claims, ttl time.Duration) (string, error) {
	if err := a.check(c); err != nil {
		return "", err
	}
	if ttl <= 0 {
		return "", errors.New("auth: ttl must be positive")
	}
	now := a.now()
	return jwt.NewWithClaims(jwt.SigningMethodHS256, jwtClaims{
		RegisteredClaims: jwt.RegisteredClaims{
			Subject:   c.Subject,
			IssuedAt:  jwt.NewNumericDate(now),
			ExpiresAt: jwt.NewNumericDate(now.Add(ttl)),
		},
		Role: c.Role,
		Team: c.Team,
	}).SignedString(a.secret)
}

// Verify checks a token's algorithm, signature, expiry and claims.
func (a *Authority) Verify(token string) (Claims, error) {
	if len(token) == 0 || len(token) > maxTokenLen {
		return Claims{}, fmt.Errorf("%w: malformed token", ErrUnauthorized)
	}
	a.mu.RLock()
	c, ok := a.verified[token]
	a.mu.RUnlock()
	if ok {
		if !a.now().Before(c.Expires.Add(leeway)) {
			return Claims{}, fmt.Errorf("%w: token expired", ErrUnauthorized)
		}
		return c, nil
	}
	if isHS256(token) || a.issuer == nil {
		var jc jwtClaims
		_, err := jwt.ParseWithClaims(token, &jc, func(*jwt.Token) (any, error) { return a.secret, nil },
			jwt.WithValidMethods([]string{jwt.SigningMethodHS256.Alg()}),
			jwt.WithExpirationRequired(),
			jwt.WithLeeway(leeway),
			jwt.WithTimeFunc(a.now),
		)
		if err != nil {
			return Claims{}, fmt.Errorf("%w: %s", ErrUnauthorized, reason(err))
		}
		c = Claims{Subject: jc.Subject, Role: jc.Role, Team: jc.Team, Expires: jc.ExpiresAt.Time}
		if err := a.check(c); err != nil {
			return Claims{}, fmt.Errorf("%w: %v", ErrUnauthorized, err)
		}
	} else {
		var err error
		if c, err = a.verifyIssued(token); err != nil {
			return Claims{}, err
		}
	}
	a.mu.Lock()
	if len(a.verified) >= verifiedMax {
		clear(a.verified)
	}
	a.verified[strings.Clone(token)] = c
	a.mu.Unlock()
	return c, nil
}

func (a *Authority) check(c Claims) error {
	switch {
	case c.Subject == "" || len(c.Subject) > 256:
		return errors.New("sub must be 1-256 bytes")
	case !c.Role.Valid():
		return errors.New("role must be superadmin, auditor, member or node")
	case c.Role == RoleMember && !a.validTeam(c.Team):
		return errors.New("a member needs a valid team")
	case c.Role != RoleMember && c.Team != "":
		return errors.New("only members have a team")
	}
	return nil
}

// reason turns a jwt error into a short public reason.
func reason(err error) string {
	switch {
	case errors.Is(err, jwt.ErrTokenExpired):
		return "token expired"
	case errors.Is(err, jwt.ErrTokenSignatureInvalid), errors.Is(err, jwt.ErrTokenUnverifiable):
		return "bad signature or algorithm"
	case errors.Is(err, jwt.ErrTokenRequiredClaimMissing):
		return "token has no expiry"
	default:
		return "malformed token"
	}
}

// ResolveSecret returns the configured secret, or the one kept in dataDir,
// generating it there on first use so that a local setup needs no
// configuration. serve and token resolve it the same way.
func ResolveSecret(configured, dataDir string) ([]byte, error) {
	if configured != "" {
		return []byte(configured), nil
	}
	if dataDir == "" {
		return nil, errors.New("auth: no secret and no data dir to keep one in")
	}
	path := filepath.Join(dataDir, secretFile)
	if b, err := os.ReadFile(path); err == nil {
		return []byte(strings.TrimSpace(string(b))), nil
	} else if !errors.Is(err, os.ErrNotExist) {
		return nil, err
	}
	if err := os.MkdirAll(dataDir, 0o700); err != nil {
		return nil, err
	}
	raw := make([]byte, 32)
	if _, err := rand.Read(raw); err != nil {
		return nil, err
	}
	secret := hex.EncodeToString(raw)
	// Write a temporary file, then link it into place: readers never see a
	// partial file, and the link fails if another process won the race.
	tmp, err := os.CreateTemp(dataDir, secretFile+".*.tmp") // mode 0600
	if err != nil {
		return nil, err
	}
	defer os.Remove(tmp.Name())
	if _, err := tmp.WriteString(secret + "\n"); err != nil {
		tmp.Close()
		return nil, err
	}
	if err := tmp.Sync(); err != nil {
		tmp.Close()
		return nil, err
	}
	if err := tmp.Close(); err != nil {
		return nil, err
	}
	if err := os.Link(tmp.Name(), path); errors.Is(err, os.ErrExist) {
		return ResolveSecret("", dataDir) // another process won the race: use its secret
	} else if err != nil {
		return nil, err
	}
	return []byte(secret), nil
}
