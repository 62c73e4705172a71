package commands

import (
	"errors"
	"fmt"
)

// Errors of the commands themselves; the rules' errors are domain's. The
// API maps them all to HTTP in one place.
var (
	// ErrInvalid wraps every *ValidationError.
	ErrInvalid = errors.New("invalid request")
	// ErrBusy: optimistic concurrency kept failing; the caller may retry.
	ErrBusy = errors.New("too much concurrent change on this team, retry")
	// ErrExpiry: a key's expires_at is not in the future, or too far.
	ErrExpiry = errors.New("expires_at must be in the future and at most one year ahead")
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
