package auth

import (
	"bytes"
	"encoding/base64"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"
)

var testSecret = []byte("0123456789abcdef0123456789abcdef-test-secret")

// validTeam mirrors the platform's team ids: 1-64 of [A-Za-z0-9_-].
func validTeam(s string) bool {
	if len(s) == 0 || len(s) > 64 {
		return false
	}
	for _, r := range s {
		if !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '_' || r == '-') {
			return false
		}
	}
	return true
}

func newAuthority(t *testing.T) *Authority {
	t.Helper()
	a, err := New(testSecret, validTeam)
	if err != nil {
		t.Fatal(err)
	}
	return a
}

// sign builds an arbitrary token with jwt/v5 directly.
func sign(t *testing.T, m jwt.SigningMethod, key []byte, claims jwt.MapClaims) string {
	t.Helper()
	s, err := jwt.NewWithClaims(m, claims).SignedString(key)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func goodClaims() jwt.MapClaims {
	return jwt.MapClaims{"sub": "alice", "role": "superadmin", "exp": time.Now().Add(time.Hour).Unix()}
}

func b64(s string) string { return base64.RawURLEncoding.EncodeToString([]byte(s)) }

func TestMintVerifyEveryRole(t *testing.T) {
	a := newAuthority(t)
	for _, c := range []Claims{
		{Subject: "root@platform", Role: RoleSuperadmin},
		{Subject: "auditor-1", Role: RoleAuditor},
		{Subject: "alice", Role: RoleMember, Team: "acme_team-1"},
		{Subject: "telapi-node-7", Role: RoleNode},
	} {
		t.Run(string(c.Role), func(t *testing.T) {
			before := time.Now()
			tok, err := a.Mint(c, time.Hour)
			if err != nil {
				t.Fatalf("Mint: %v", err)
			}
			if strings.Count(tok, ".") != 2 {
				t.Fatalf("not a JWS compact token: %q", tok)
			}
			got, err := a.Verify(tok)
			if err != nil {
				t.Fatalf("Verify: %v", err)
			}
			if got.Subject != c.Subject || got.Role != c.Role || got.Team != c.Team {
				t.Fatalf("Verify = %+v, want %+v", got, c)
			}
			// exp has one-second resolution.
			lo, hi := before.Add(time.Hour).Truncate(time.Second), time.Now().Add(time.Hour)
			if got.Expires.Before(lo) || got.Expires.After(hi) {
				t.Fatalf("Expires = %v, want within [%v, %v]", got.Expires, lo, hi)
			}
			// Only HS256 is ever issued.
			hdr, _ := base64.RawURLEncoding.DecodeString(strings.Split(tok, ".")[0])
			if !bytes.Contains(hdr, []byte(`"alg":"HS256"`)) {
				t.Fatalf("header %s", hdr)
			}
		})
	}
}

func TestMintRefusesBadClaims(t *testing.T) {
	a := newAuthority(t)
	for name, c := range map[string]Claims{
		"member without team":      {Subject: "alice", Role: RoleMember},
		"member with invalid team": {Subject: "alice", Role: RoleMember, Team: "bad team!"},
		"superadmin with team":     {Subject: "root", Role: RoleSuperadmin, Team: "acme"},
		"auditor with team":        {Subject: "aud", Role: RoleAuditor, Team: "acme"},
		"node with team":           {Subject: "node", Role: RoleNode, Team: "acme"},
		"unknown role":             {Subject: "x", Role: "root"},
		"empty role":               {Subject: "x"},
		"empty subject":            {Role: RoleSuperadmin},
		"subject too long":         {Subject: strings.Repeat("s", 257), Role: RoleSuperadmin},
	} {
		if tok, err := a.Mint(c, time.Hour); err == nil {
			t.Errorf("%s: Mint = %q, want an error", name, tok)
		}
	}
	for _, ttl := range []time.Duration{0, -time.Second} {
		if _, err := a.Mint(Claims{Subject: "x", Role: RoleNode}, ttl); err == nil {
			t.Errorf("Mint with ttl %v succeeded", ttl)
		}
	}
}

func TestVerifyRefuses(t *testing.T) {
	a := newAuthority(t)
	now := time.Now()
	other := []byte("another-secret-of-at-least-32-bytes!!")

	claimsJSON := `{"sub":"alice","role":"superadmin","exp":` + jsonInt(now.Add(time.Hour).Unix()) + `}`
	noneToken := b64(`{"alg":"none","typ":"JWT"}`) + "." + b64(claimsJSON) + "."
	noneUpper := b64(`{"alg":"NONE","typ":"JWT"}`) + "." + b64(claimsJSON) + "."

	// A valid HS256 token with its header swapped to "none" and the signature kept.
	valid := sign(t, jwt.SigningMethodHS256, testSecret, goodClaims())
	parts := strings.Split(valid, ".")
	noneWithSig := b64(`{"alg":"none","typ":"JWT"}`) + "." + parts[1] + "." + parts[2]

	big := goodClaims()
	big["pad"] = strings.Repeat("p", 4096)
	long := sign(t, jwt.SigningMethodHS256, testSecret, big)
	if len(long) <= 4096 {
		t.Fatalf("long token is only %d bytes", len(long))
	}

	cases := map[string]string{
		"expired": sign(t, jwt.SigningMethodHS256, testSecret, jwt.MapClaims{
			"sub": "alice", "role": "superadmin", "exp": now.Add(-time.Hour).Unix(),
		}),
		"expired beyond leeway": sign(t, jwt.SigningMethodHS256, testSecret, jwt.MapClaims{
			"sub": "alice", "role": "superadmin", "exp": now.Add(-2 * time.Minute).Unix(),
		}),
		"no exp": sign(t, jwt.SigningMethodHS256, testSecret, jwt.MapClaims{
			"sub": "alice", "role": "superadmin",
		}),
		"not yet valid": sign(t, jwt.SigningMethodHS256, testSecret, jwt.MapClaims{
			"sub": "alice", "role": "superadmin", "exp": now.Add(2 * time.Hour).Unix(), "nbf": now.Add(time.Hour).Unix(),
		}),
		"exp not a number": sign(t, jwt.SigningMethodHS256, testSecret, jwt.MapClaims{
			"sub": "alice", "role": "superadmin", "exp": "tomorrow",
		}),
		"other secret":                sign(t, jwt.SigningMethodHS256, other, goodClaims()),
		"alg none":                    noneToken,
		"alg NONE":                    noneUpper,
		"alg none with old signature": noneWithSig,
		"HS384 same secret":           sign(t, jwt.SigningMethodHS384, testSecret, goodClaims()),
		"HS512 same secret":           sign(t, jwt.SigningMethodHS512, testSecret, goodClaims()),
		"longer than 4096 bytes":      long,
		"tampered payload":            parts[0] + "." + b64(`{"sub":"alice","role":"superadmin","exp":9999999999}`) + "." + parts[2],
		"signature stripped":          parts[0] + "." + parts[1] + ".",
		"empty":                       "",
		"garbage":                     "garbage",
		"three dots":                  "...",
		"two dots":                    "a.b.c",
		"bearer prefix kept":          "Bearer " + valid,
		"not base64":                  "!!!.???.***",
		"binary":                      "\x00\xff\xfe.\x01.\x02",
		"role root": sign(t, jwt.SigningMethodHS256, testSecret, jwt.MapClaims{
			"sub": "alice", "role": "root", "exp": now.Add(time.Hour).Unix(),
		}),
		"no role": sign(t, jwt.SigningMethodHS256, testSecret, jwt.MapClaims{
			"sub": "alice", "exp": now.Add(time.Hour).Unix(),
		}),
		"no sub": sign(t, jwt.SigningMethodHS256, testSecret, jwt.MapClaims{
			"role": "superadmin", "exp": now.Add(time.Hour).Unix(),
		}),
		"member without team": sign(t, jwt.SigningMethodHS256, testSecret, jwt.MapClaims{
			"sub": "alice", "role": "member", "exp": now.Add(time.Hour).Unix(),
		}),
		"member with invalid team": sign(t, jwt.SigningMethodHS256, testSecret, jwt.MapClaims{
			"sub": "alice", "role": "member", "team": "../etc", "exp": now.Add(time.Hour).Unix(),
		}),
		"superadmin with team": sign(t, jwt.SigningMethodHS256, testSecret, jwt.MapClaims{
			"sub": "alice", "role": "superadmin", "team": "acme", "exp": now.Add(time.Hour).Unix(),
		}),
	}
	for name, tok := range cases {
		t.Run(name, func(t *testing.T) {
			c, err := a.Verify(tok)
			if !errors.Is(err, ErrUnauthorized) {
				t.Fatalf("Verify = %+v, %v; want ErrUnauthorized", c, err)
			}
			if c != (Claims{}) {
				t.Fatalf("refused token still returned claims %+v", c)
			}
			// The error is public (it reaches the 401 body): never the token.
			if len(tok) > 8 && strings.Contains(err.Error(), tok) {
				t.Fatalf("error echoes the token: %v", err)
			}
		})
	}

	// Control: the same builders produce an accepted token when nothing is wrong,
	// so the refusals above are for the stated reason.
	if _, err := a.Verify(valid); err != nil {
		t.Fatalf("control token refused: %v", err)
	}
	within := goodClaims()
	within["pad"] = strings.Repeat("p", 2000)
	if tok := sign(t, jwt.SigningMethodHS256, testSecret, within); len(tok) > 4096 {
		t.Fatalf("control token too long: %d", len(tok))
	} else if _, err := a.Verify(tok); err != nil {
		t.Fatalf("token under 4096 bytes refused: %v", err)
	}
	if _, err := a.Verify(sign(t, jwt.SigningMethodHS256, testSecret, jwt.MapClaims{
		"sub": "alice", "role": "superadmin", "exp": now.Add(-10 * time.Second).Unix(),
	})); err != nil {
		t.Fatalf("token expired 10s ago refused despite 30s leeway: %v", err)
	}
}

func TestVerifyUsesInjectedClock(t *testing.T) {
	a := newAuthority(t)
	base := time.Date(2030, 1, 1, 0, 0, 0, 0, time.UTC)
	a.now = func() time.Time { return base }
	tok, err := a.Mint(Claims{Subject: "n", Role: RoleNode}, time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := a.Verify(tok); err != nil {
		t.Fatalf("Verify at mint time: %v", err)
	}
	a.now = func() time.Time { return base.Add(time.Minute + 29*time.Second) }
	if _, err := a.Verify(tok); err != nil {
		t.Fatalf("Verify within leeway: %v", err)
	}
	a.now = func() time.Time { return base.Add(time.Minute + 31*time.Second) }
	if _, err := a.Verify(tok); !errors.Is(err, ErrUnauthorized) {
		t.Fatalf("Verify after expiry + leeway = %v, want ErrUnauthorized", err)
	}
}

func TestNewRefusesShortSecret(t *testing.T) {
	for _, n := range []int{0, 1, 16, MinSecretLen - 1} {
		if a, err := New(bytes.Repeat([]byte("k"), n), validTeam); err == nil || a != nil {
			t.Errorf("New with a %d-byte secret = %v, %v; want an error", n, a, err)
		}
	}
	if _, err := New(bytes.Repeat([]byte("k"), MinSecretLen), validTeam); err != nil {
		t.Errorf("New with a %d-byte secret: %v", MinSecretLen, err)
	}
}

func TestResolveSecretConfigured(t *testing.T) {
	dir := t.TempDir()
	got, err := ResolveSecret("configured-secret-configured-secret", dir)
	if err != nil || string(got) != "configured-secret-configured-secret" {
		t.Fatalf("ResolveSecret = %q, %v", got, err)
	}
	if _, err := os.Stat(filepath.Join(dir, secretFile)); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("a configured secret wrote a file: %v", err)
	}
	// No data dir needed when configured.
	if got, err := ResolveSecret("configured-secret-configured-secret", ""); err != nil || len(got) == 0 {
		t.Fatalf("ResolveSecret without data dir = %q, %v", got, err)
	}
}

func TestResolveSecretGenerated(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "data") // does not exist yet
	first, err := ResolveSecret("", dir)
	if err != nil {
		t.Fatal(err)
	}
	if len(first) < MinSecretLen {
		t.Fatalf("generated secret is %d bytes", len(first))
	}
	if _, err := New(first, validTeam); err != nil {
		t.Fatalf("generated secret not accepted by New: %v", err)
	}
	fi, err := os.Stat(filepath.Join(dir, secretFile))
	if err != nil {
		t.Fatal(err)
	}
	if perm := fi.Mode().Perm(); perm != 0o600 {
		t.Fatalf("secret file mode %o, want 600", perm)
	}
	di, err := os.Stat(dir)
	if err != nil {
		t.Fatal(err)
	}
	if perm := di.Mode().Perm(); perm&0o077 != 0 {
		t.Fatalf("data dir mode %o is open to others", perm)
	}
	second, err := ResolveSecret("", dir)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(first, second) {
		t.Fatalf("second call returned another secret: %q vs %q", first, second)
	}
	// Another data dir gets another secret.
	third, err := ResolveSecret("", t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	if bytes.Equal(first, third) {
		t.Fatal("two data dirs share a generated secret")
	}
}

func TestResolveSecretNoDataDir(t *testing.T) {
	if s, err := ResolveSecret("", ""); err == nil {
		t.Fatalf("ResolveSecret with neither = %q, want an error", s)
	}
}

func TestResolveSecretConcurrent(t *testing.T) {
	// Known bug (auth.go ResolveSecret): the winner creates the file with
	// O_EXCL and writes it afterwards, so a concurrent caller can read the
	// empty file and return an empty secret. Fails about 1 run in 5 without
	// a fix (write a temp file, then os.Link it into place). Remove this skip
	// once ResolveSecret is fixed.
	for round := range 20 {
		dir := filepath.Join(t.TempDir(), "fresh")
		const n = 10
		var (
			wg      sync.WaitGroup
			start   = make(chan struct{})
			secrets [n][]byte
			errs    [n]error
		)
		for i := range n {
			wg.Add(1)
			go func() {
				defer wg.Done()
				<-start
				secrets[i], errs[i] = ResolveSecret("", dir)
			}()
		}
		close(start)
		wg.Wait()
		for i := range n {
			if errs[i] != nil {
				t.Fatalf("round %d, caller %d: %v", round, i, errs[i])
			}
			if len(secrets[i]) < MinSecretLen {
				t.Fatalf("round %d, caller %d got a %d-byte secret %q (read a half-written file?)", round, i, len(secrets[i]), secrets[i])
			}
			if !bytes.Equal(secrets[i], secrets[0]) {
				t.Fatalf("round %d: callers 0 and %d got different secrets", round, i)
			}
		}
		onDisk, err := ResolveSecret("", dir)
		if err != nil || !bytes.Equal(onDisk, secrets[0]) {
			t.Fatalf("round %d: the file holds another secret than the callers got", round)
		}
	}
}

func jsonInt(v int64) string {
	b, _ := jwt.NewNumericDate(time.Unix(v, 0)).MarshalJSON()
	return string(b)
}

// TestVerifiedTokensAreBounded: the remembered tokens never exceed
// verifiedMax, and a token stays verifiable after the memory is cleared.
func TestVerifiedTokensAreBounded(t *testing.T) {
	a := newAuthority(t)
	first, err := a.Mint(Claims{Subject: "n0", Role: RoleNode}, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	for i := range verifiedMax + 10 {
		tok, err := a.Mint(Claims{Subject: fmt.Sprintf("n%d", i), Role: RoleNode}, time.Hour)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := a.Verify(tok); err != nil {
			t.Fatal(err)
		}
		if len(a.verified) > verifiedMax {
			t.Fatalf("%d tokens remembered", len(a.verified))
		}
	}
	if c, err := a.Verify(first); err != nil || c.Subject != "n0" {
		t.Fatalf("Verify after the memory was cleared: %+v, %v", c, err)
	}
	// Another signature: a character inside it changed (the last one
	// carries padding bits).
	i := len(first) - 10
	other := "A"
	if first[i] == 'A' {
		other = "B"
	}
	if _, err := a.Verify(first[:i] + other + first[i+1:]); !errors.Is(err, ErrUnauthorized) {
		t.Fatalf("a token with another signature: %v", err)
	}
}
