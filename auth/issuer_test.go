package auth_test

import (
	"context"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"encoding/base64"
	"encoding/json"
	"errors"
	"math/big"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"

	"github.com/telapi/telkeys/auth"
)

// idp is an identity provider: a JWKS served over real HTTP, and the keys
// that sign its tokens.
type idp struct {
	srv  *httptest.Server
	mu   sync.Mutex
	keys []map[string]string // the JWKS served now
	priv map[string]any      // kid → private key
}

func b64(b []byte) string { return base64.RawURLEncoding.EncodeToString(b) }

func newIDP(t *testing.T) *idp {
	p := &idp{priv: map[string]any{}}
	p.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		p.mu.Lock()
		defer p.mu.Unlock()
		w.Header().Set("Content-Type", "application/json")
		_ = json.NewEncoder(w).Encode(map[string]any{"keys": p.keys})
	}))
	t.Cleanup(p.srv.Close)
	return p
}

// add generates a key of alg, publishes it under kid, and keeps its
// private half.
func (p *idp) add(t *testing.T, kid, alg string) {
	t.Helper()
	var jwk map[string]string
	switch alg {
	case "RS256":
		k, err := rsa.GenerateKey(rand.Reader, 2048)
		if err != nil {
			t.Fatal(err)
		}
		p.priv[kid] = k
		jwk = map[string]string{"kty": "RSA", "n": b64(k.N.Bytes()), "e": b64(big.NewInt(int64(k.E)).Bytes())}
	case "ES256":
		k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		if err != nil {
			t.Fatal(err)
		}
		p.priv[kid] = k
		x, y := make([]byte, 32), make([]byte, 32)
		k.X.FillBytes(x)
		k.Y.FillBytes(y)
		jwk = map[string]string{"kty": "EC", "crv": "P-256", "x": b64(x), "y": b64(y)}
	case "EdDSA":
		pub, k, err := ed25519.GenerateKey(rand.Reader)
		if err != nil {
			t.Fatal(err)
		}
		p.priv[kid] = k
		jwk = map[string]string{"kty": "OKP", "crv": "Ed25519", "x": b64(pub)}
	}
	jwk["kid"], jwk["alg"], jwk["use"] = kid, alg, "sig"
	p.mu.Lock()
	p.keys = append(p.keys, jwk)
	p.mu.Unlock()
}

// sign makes a token signed by kid's key with the given claims.
func (p *idp) sign(t *testing.T, kid, alg string, claims jwt.MapClaims) string {
	t.Helper()
	m := jwt.GetSigningMethod(alg)
	tok := jwt.NewWithClaims(m, claims)
	tok.Header["kid"] = kid
	s, err := tok.SignedString(p.priv[kid])
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func TestIssuerTokens(t *testing.T) {
	p := newIDP(t)
	p.add(t, "rsa-1", "RS256")
	p.add(t, "ec-1", "ES256")
	p.add(t, "ed-1", "EdDSA")
	a, err := auth.New([]byte("test-secret-0123456789abcdef0123456789abcdef"), func(team string) bool { return team != "" })
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	if err := a.TrustIssuer(ctx, auth.Issuer{JWKSURL: p.srv.URL, Issuer: "https://idp.telapi.example", Audience: "telkeys",
		RoleClaim: "telapi_role", TeamClaim: "telapi_team", UnknownKIDEvery: time.Millisecond}); err != nil {
		t.Fatal(err)
	}
	claims := func(mod func(jwt.MapClaims)) jwt.MapClaims {
		c := jwt.MapClaims{"iss": "https://idp.telapi.example", "aud": "telkeys", "sub": "alice@telapi",
			"exp": time.Now().Add(time.Hour).Unix(), "telapi_role": "member", "telapi_team": "acme"}
		if mod != nil {
			mod(c)
		}
		return c
	}
	for _, alg := range []struct{ kid, alg string }{{"rsa-1", "RS256"}, {"ec-1", "ES256"}, {"ed-1", "EdDSA"}} {
		c, err := a.Verify(p.sign(t, alg.kid, alg.alg, claims(nil)))
		if err != nil || c.Role != auth.RoleMember || c.Team != "acme" || c.Subject != "alice@telapi" {
			t.Fatalf("%s: %+v %v", alg.alg, c, err)
		}
	}
	// telkeys' own tokens still work beside them.
	own, _ := a.Mint(auth.Claims{Subject: "cli", Role: auth.RoleSuperadmin}, time.Hour)
	if _, err := a.Verify(own); err != nil {
		t.Fatalf("HS256 beside the issuer: %v", err)
	}

	refused := map[string]string{
		"another issuer":         p.sign(t, "rsa-1", "RS256", claims(func(c jwt.MapClaims) { c["iss"] = "https://evil.example" })),
		"another audience":       p.sign(t, "rsa-1", "RS256", claims(func(c jwt.MapClaims) { c["aud"] = "billing" })),
		"expired":                p.sign(t, "rsa-1", "RS256", claims(func(c jwt.MapClaims) { c["exp"] = time.Now().Add(-time.Hour).Unix() })),
		"no expiry":              p.sign(t, "rsa-1", "RS256", claims(func(c jwt.MapClaims) { delete(c, "exp") })),
		"a role not ours":        p.sign(t, "rsa-1", "RS256", claims(func(c jwt.MapClaims) { c["telapi_role"] = "admin" })),
		"no role":                p.sign(t, "rsa-1", "RS256", claims(func(c jwt.MapClaims) { delete(c, "telapi_role") })),
		"the default role claim": p.sign(t, "rsa-1", "RS256", claims(func(c jwt.MapClaims) { delete(c, "telapi_role"); c["role"] = "superadmin" })),
		"a kid not in the set": func() string {
			q := newIDP(t)
			q.add(t, "rsa-x", "RS256")
			return q.sign(t, "rsa-x", "RS256", claims(nil))
		}(),
		"alg none": mustNone(t, claims(nil)),
		"HS256 signed with another secret": func() string {
			s, _ := jwt.NewWithClaims(jwt.SigningMethodHS256, claims(nil)).SignedString([]byte("another-secret-0123456789abcdef0123456789"))
			return s
		}(),
		"RS384": func() string {
			tok := jwt.NewWithClaims(jwt.SigningMethodRS384, claims(nil))
			tok.Header["kid"] = "rsa-1"
			s, _ := tok.SignedString(p.priv["rsa-1"])
			return s
		}(),
	}
	for name, tok := range refused {
		if _, err := a.Verify(tok); !errors.Is(err, auth.ErrUnauthorized) {
			t.Errorf("%s: %v, want unauthorized", name, err)
		}
	}

	// The provider rotates: a token of its new key works once the set is
	// fetched again (an unknown kid fetches it).
	p.add(t, "rsa-2", "RS256")
	rotated := p.sign(t, "rsa-2", "RS256", claims(nil))
	var verr error
	for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline); {
		if _, verr = a.Verify(rotated); verr == nil {
			break
		}
		<-time.After(20 * time.Millisecond) // the unknown-kid refetch is rate-limited
	}
	if verr != nil {
		t.Fatalf("a token of the rotated-in key: %v", verr)
	}

	// The provider goes down: keys fetched before keep working, a new one
	// fails closed.
	p.srv.Close()
	if _, err := a.Verify(p.sign(t, "ed-1", "EdDSA", claims(func(c jwt.MapClaims) { c["sub"] = "bob@telapi" }))); err != nil {
		t.Fatalf("a cached key while the provider is down: %v", err)
	}
	p.add(t, "rsa-3", "RS256")
	if _, err := a.Verify(p.sign(t, "rsa-3", "RS256", claims(nil))); !errors.Is(err, auth.ErrUnauthorized) {
		t.Fatalf("an unknown key while the provider is down: %v, want unauthorized", err)
	}
}

func mustNone(t *testing.T, c jwt.MapClaims) string {
	s, err := jwt.NewWithClaims(jwt.SigningMethodNone, c).SignedString(jwt.UnsafeAllowNoneSignatureType)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func TestIssuerConfig(t *testing.T) {
	a, _ := auth.New([]byte("test-secret-0123456789abcdef0123456789abcdef"), func(string) bool { return true })
	err := a.TrustIssuer(context.Background(), auth.Issuer{JWKSURL: "ftp://x"})
	if err == nil {
		t.Fatal("a bad issuer config was accepted")
	}
	for _, want := range []string{"--jwks-url", "--jwt-issuer", "--jwt-audience"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("%q does not name %s", err, want)
		}
	}
}
