package api

import (
	"crypto/ecdsa"
	"crypto/sha256"
	"crypto/x509"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"os"
	"unicode/utf8"

	"github.com/gofiber/fiber/v2"

	"github.com/telapi/telkeys/apikey"
	"github.com/telapi/telkeys/commands"
	"github.com/telapi/telkeys/domain"
	"github.com/telapi/telkeys/events"
)

// LeakKeys are the public keys that sign leak reports, by key identifier:
// GitHub secret scanning's, from the JSON it publishes at
// https://api.github.com/meta/public_keys/secret_scanning.
type LeakKeys map[string]*ecdsa.PublicKey

// LoadLeakKeys reads a file in the shape of GitHub's public-key list:
// {"public_keys":[{"key_identifier","key","is_current"}]}, each key an
// ECDSA P-256 public key in PEM. Keys that are not current are kept: a
// report signed just before a rotation still verifies.
func LoadLeakKeys(path string) (LeakKeys, error) {
	raw, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("leak report keys: %w", err)
	}
	var list struct {
		PublicKeys []struct {
			KeyIdentifier string `json:"key_identifier"`
			Key           string `json:"key"`
		} `json:"public_keys"`
	}
	if err := json.Unmarshal(raw, &list); err != nil {
		return nil, fmt.Errorf("leak report keys: %s: %w", path, err)
	}
	keys := LeakKeys{}
	for _, k := range list.PublicKeys {
		block, _ := pem.Decode([]byte(k.Key))
		if block == nil {
			return nil, fmt.Errorf("leak report keys: %s: key %q is not PEM", path, k.KeyIdentifier)
		}
		pub, err := x509.ParsePKIXPublicKey(block.Bytes)
		ec, ok := pub.(*ecdsa.PublicKey)
		if err != nil || !ok {
			return nil, fmt.Errorf("leak report keys: %s: key %q is not an ECDSA public key", path, k.KeyIdentifier)
		}
		keys[k.KeyIdentifier] = ec
	}
	if len(keys) == 0 {
		return nil, fmt.Errorf("leak report keys: %s holds no key", path)
	}
	return keys, nil
}

// verify checks GitHub's signature of body: ECDSA with SHA-256, DER,
// base64, by the key named id.
func (k LeakKeys) verify(id, sig string, body []byte) bool {
	pub, ok := k[id]
	if !ok || sig == "" {
		return false
	}
	der, err := base64.StdEncoding.DecodeString(sig)
	if err != nil {
		return false
	}
	digest := sha256.Sum256(body)
	return ecdsa.VerifyASN1(pub, digest[:], der)
}

// LeakAction is what a leak report of a live key does.
type LeakAction string

// The leak actions.
const (
	LeakRevoke LeakAction = "revoke" // the key stops working, through the revocation barrier
	LeakFlag   LeakAction = "flag"   // the key is only marked leaked
)

// maxLeakReports bounds the tokens of one report.
const maxLeakReports = 1000

var errLeakSignature = errors.New("missing or bad Github-Public-Key-Signature")

type leakReport struct {
	Token  *string `json:"token"`
	Type   string  `json:"type"`
	URL    string  `json:"url"`
	Source string  `json:"source"`
}

type leakFeedback struct {
	TokenHash string `json:"token_hash"`
	TokenType string `json:"token_type"`
	Label     string `json:"label"`
}

// leakReporter is who leak-report events name.
var leakReporter = events.Actor{Subject: "github-secret-scanning", Role: "leak-reporter"}

// reportLeaks takes GitHub secret scanning's partner reports: a signed
// JSON array of tokens found in public places. Each of our live keys among
// them is revoked (or, with LeakFlag, marked), and the answer is GitHub's
// feedback array, which names tokens by their SHA-256, never by value.
func (s *Server) reportLeaks(c *fiber.Ctx) error {
	if len(s.cfg.LeakKeys) == 0 {
		return fiber.NewError(fiber.StatusNotFound)
	}
	if !s.cfg.LeakKeys.verify(c.Get("Github-Public-Key-Identifier"), c.Get("Github-Public-Key-Signature"), c.Body()) {
		return errLeakSignature
	}
	var reports []leakReport
	if err := json.Unmarshal(c.Body(), &reports); err != nil {
		return badRequest("body must be a JSON array of {token, type, url, source}")
	}
	if len(reports) > maxLeakReports {
		return badRequest(fmt.Sprintf("at most %d tokens per report", maxLeakReports))
	}
	// Every entry is checked before any is acted on: a bad one refuses
	// the whole report, never half of it.
	for _, r := range reports {
		switch {
		case r.Token == nil:
			return badRequest("every entry needs a token")
		case len(r.URL) > 2048 || !utf8.ValidString(r.URL):
			return badRequest("every url must be UTF-8, at most 2048 bytes")
		case len(r.Source) > 64 || !utf8.ValidString(r.Source):
			return badRequest("every source must be UTF-8, at most 64 bytes")
		}
	}
	out := make([]leakFeedback, 0, len(reports))
	for _, r := range reports {
		h := apikey.HashOf(*r.Token)
		fb := leakFeedback{TokenHash: hex.EncodeToString(h[:]), TokenType: r.Type, Label: "false_positive"}
		if team, id, ok := s.cfg.Verifier.Owner(*r.Token); ok {
			res, err := s.cfg.Commands.ReportLeak(c.UserContext(), leakReporter, team, id, h[:], commands.Leak{
				URL: r.URL, Source: r.Source, Reporter: "github", Revoke: s.cfg.LeakAction != LeakFlag,
			})
			switch {
			case err == nil:
				fb.Label = "true_positive"
				if res.Seq > 0 {
					s.readYourWrites(c, res)
				}
			case !errors.Is(err, domain.ErrKeyNotFound): // deleted meanwhile: not ours any more
				return err
			}
		}
		out = append(out, fb)
	}
	c.Set(fiber.HeaderCacheControl, "no-store")
	return c.JSON(out)
}
