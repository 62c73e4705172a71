package commands

import (
	"strings"
	"unicode"
	"unicode/utf8"

	"github.com/oklog/ulid/v2"

	"github.com/telapi/telkeys/apikey"
	"github.com/telapi/telkeys/events"
)

// Limits of the domain.
const (
	MaxTeamIDLen = 64
	MaxNameLen   = 64
	// MaxKeysLimit caps max_keys so that a team's key list stays one small
	// KV value (≈300 B a key).
	MaxKeysLimit = 1000
	// MaxRequestsPerDayLimit caps max_requests_per_day at a trillion.
	MaxRequestsPerDayLimit = 1_000_000_000_000
	// KeyIDPrefix starts every key id.
	KeyIDPrefix = "key_"
)

// ValidTeamID reports whether s is 1–64 characters of [A-Za-z0-9_-].
func ValidTeamID(s string) bool {
	if len(s) == 0 || len(s) > MaxTeamIDLen {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !('a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || c == '_' || c == '-') {
			return false
		}
	}
	return true
}

// ValidKeyID reports whether s is "key_" followed by a ULID.
func ValidKeyID(s string) bool {
	if !strings.HasPrefix(s, KeyIDPrefix) {
		return false
	}
	_, err := ulid.ParseStrict(s[len(KeyIDPrefix):])
	return err == nil
}

// NormalizeName trims a key name and checks it: 1–64 printable characters.
func NormalizeName(name string) (string, error) {
	if !utf8.ValidString(name) {
		return "", invalid("name", "must be valid UTF-8")
	}
	name = strings.TrimSpace(name)
	n := utf8.RuneCountInString(name)
	if n == 0 {
		return "", invalid("name", "must not be empty")
	}
	if n > MaxNameLen {
		return "", invalid("name", "must be at most 64 characters")
	}
	for _, r := range name {
		// IsPrint excludes control and format characters (bidi overrides,
		// zero-width joiners) and every space but U+0020. U+FFFD is what
		// encoding/json makes of a lone surrogate escape ("\ud800") or of
		// invalid UTF-8: never a name anyone typed.
		if !unicode.IsPrint(r) || r == utf8.RuneError {
			return "", invalid("name", "must contain only printable characters")
		}
	}
	return name, nil
}

// normalizeScopes checks a scope list for duplicates and unknown names and
// returns it in catalogue order. allowEmpty is false for keys.
func normalizeScopes(field string, scopes []string, allowEmpty bool) ([]string, error) {
	if len(scopes) == 0 && !allowEmpty {
		return nil, invalid(field, "must name at least one scope")
	}
	seen := make([]bool, len(apikey.Scopes()))
	for _, s := range scopes {
		i := apikey.ScopeIndex(s)
		if i < 0 {
			return nil, &unknownScope{field}
		}
		if seen[i] {
			return nil, invalid(field, "must not repeat a scope")
		}
		seen[i] = true
	}
	out := make([]string, 0, len(scopes))
	for i, s := range apikey.Scopes() {
		if seen[i] {
			out = append(out, s)
		}
	}
	return out, nil
}

// unknownScope is a scope outside the catalogue. For a key it is simply not
// allowed (422); in an access config it is a bad request (400).
type unknownScope struct{ field string }

func (e *unknownScope) Error() string { return e.field + ": unknown scope" }

// ValidateAccessConfig checks and normalises a configuration.
func ValidateAccessConfig(c events.AccessConfig) (events.AccessConfig, error) {
	scopes, err := normalizeScopes("allowed_scopes", c.AllowedScopes, true)
	if _, ok := err.(*unknownScope); ok {
		return c, invalid("allowed_scopes", "unknown scope; valid: "+strings.Join(apikey.Scopes(), ", "))
	}
	if err != nil {
		return c, err
	}
	c.AllowedScopes = scopes
	if c.MaxKeys < 0 || c.MaxKeys > MaxKeysLimit {
		return c, invalid("max_keys", "must be between 0 and 1000")
	}
	if m := c.MaxRequestsPerDay; m != nil && (*m < 0 || *m > MaxRequestsPerDayLimit) {
		return c, invalid("max_requests_per_day", "must be null or between 0 and 10^12")
	}
	return c, nil
}
