package e2e

import (
	"crypto/ed25519"
	"crypto/rand"
	"encoding/base64"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"

	"github.com/telapi/telkeys/service"
)

// TestIdentityProviderTokens: telkeys serve --jwks-url accepts the
// platform's own tokens (EdDSA here) on the REST API, beside its own,
// and refuses a role it does not know.
func TestIdentityProviderTokens(t *testing.T) {
	pub, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	jwks := `{"keys":[{"kty":"OKP","crv":"Ed25519","alg":"EdDSA","use":"sig","kid":"k1","x":"` + base64.RawURLEncoding.EncodeToString(pub) + `"}]}`
	idp := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		_, _ = w.Write([]byte(jwks))
	}))
	defer idp.Close()
	s := startService(t, func(c *service.Config) {
		c.Issuer.JWKSURL, c.Issuer.Issuer, c.Issuer.Audience = idp.URL, "https://idp.telapi.example", "telkeys"
	})
	token := func(role, team string) string {
		tok := jwt.NewWithClaims(jwt.SigningMethodEdDSA, jwt.MapClaims{"iss": "https://idp.telapi.example", "aud": "telkeys",
			"sub": "alice@telapi", "exp": time.Now().Add(time.Hour).Unix(), "role": role, "team": team})
		tok.Header["kid"] = "k1"
		str, err := tok.SignedString(priv)
		if err != nil {
			t.Fatal(err)
		}
		return str
	}
	s.enableTeam("acme", 5) // with telkeys' own superadmin token
	if r := s.do("POST", "/v1/teams/acme/api-keys", token("member", "acme"), map[string]any{"name": "idp", "scopes": []string{"READ_TEAM_APPS"}}); r.status != 201 {
		t.Fatalf("create with the provider's member token: %d %s", r.status, r.body)
	}
	if r := s.do("GET", "/v1/teams", token("superadmin", ""), nil); r.status != 200 {
		t.Fatalf("list teams with the provider's superadmin token: %d %s", r.status, r.body)
	}
	expectProblem(t, s.do("GET", "/v1/teams", token("admin", ""), nil), 401, "unauthorized")
	expectProblem(t, s.do("GET", "/v1/teams/acme/api-keys", token("member", "beta"), nil), 403, "forbidden")
}
