package commands

import (
	"errors"
	"fmt"
)

// Domain errors. The API maps them to HTTP in one place.
var (
	// ErrInvalid wraps every *ValidationError.
	ErrInvalid = errors.New("invalid request")
	// ErrTeamDisabled: the team's API access is off (or never configured).
	ErrTeamDisabled = errors.New("team API access is disabled")
	// ErrMaxKeysReached: the team already has max_keys active keys.
	ErrMaxKeysReached = errors.New("team has reached its maximum number of API keys")
	// ErrScopeNotAllowed: a requested scope is not in the team's allowed scopes.
	ErrScopeNotAllowed = errors.New("scope not allowed for this team")
	// ErrKeyNotFound: no active key with that id in that team.
	ErrKeyNotFound = errors.New("API key not found")
	// ErrBusy: optimistic concurrency kept failing; the caller may retry.
	ErrBusy = errors.New("too much concurrent change on this team, retry")
)

// ValidationError says which field is wrong and why. Its text never
// contains the rejected value, which may be anything a caller sent.
type ValidationError struct {
	Field  string
	Reason string
}

func (e *ValidationError) Error() string { return fmt.Sprintf("%s: %s", e.Field, e.Reason) }

// Unwrap makes errors.Is(err, ErrInvalid) true.
func (e *ValidationError) Unwrap() error { return ErrInvalid }

func invalid(field, reason string) error { return &ValidationError{Field: field, Reason: reason} }

// ScopeError names the scope that is not allowed. Scope is empty for a
// name outside the catalogue, which is never echoed back.
type ScopeError struct{ Scope string }

func (e *ScopeError) Error() string {
	if e.Scope == "" {
		return "unknown scope: valid scopes are CREATE_CALL_TOKEN, READ_CALL_TOKEN, READ_TEAM_APPS"
	}
	return fmt.Sprintf("scope %s is not allowed for this team", e.Scope)
}

// Unwrap makes errors.Is(err, ErrScopeNotAllowed) true.
func (e *ScopeError) Unwrap() error { return ErrScopeNotAllowed }
