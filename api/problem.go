package api

import (
	"errors"
	"net/http"

	"github.com/gofiber/fiber/v2"

	"github.com/telapi/telkeys/api/problem"
	"github.com/telapi/telkeys/auth"
	"github.com/telapi/telkeys/bus"
	"github.com/telapi/telkeys/commands"
	"github.com/telapi/telkeys/domain"
)

// Sentinels of the HTTP layer itself.
var (
	errForbidden  = errors.New("your role or team may not do this")
	errBadRequest = errors.New("bad request")
)

// requestError is a 400 with a public detail.
type requestError struct{ detail string }

func (e *requestError) Error() string { return e.detail }
func (e *requestError) Unwrap() error { return errBadRequest }

func badRequest(detail string) error { return &requestError{detail} }

// problemFor is the one place where errors become HTTP answers. Internal
// errors get a generic detail; their text is logged, never sent.
func problemFor(err error) problem.Problem {
	var (
		ve *commands.ValidationError
		se *domain.ScopeError
		re *requestError
		fe *fiber.Error
	)
	p := problem.New
	switch {
	case errors.As(err, &ve):
		return p(400, "invalid_request", ve.Error())
	case errors.As(err, &re):
		return p(400, "invalid_request", re.detail)
	case errors.Is(err, auth.ErrUnauthorized):
		return p(401, "unauthorized", err.Error())
	case errors.Is(err, errForbidden):
		return p(403, "forbidden", errForbidden.Error())
	case errors.Is(err, domain.ErrTeamDisabled):
		return p(403, "team_api_disabled", "API access is not enabled for this team; a superadmin must enable it")
	case errors.Is(err, domain.ErrKeyNotFound):
		return p(404, "not_found", err.Error())
	case errors.Is(err, domain.ErrMaxKeysReached):
		return p(409, "max_keys_reached", err.Error())
	case errors.Is(err, domain.ErrAlreadyRolled):
		return p(409, "key_already_rolled", err.Error())
	case errors.Is(err, domain.ErrKeyExpired):
		return p(409, "key_expired", err.Error())
	case errors.Is(err, commands.ErrExpiry):
		return p(422, "invalid_expires_at", err.Error())
	case errors.Is(err, errLeakSignature):
		return p(401, "bad_signature", err.Error())
	case errors.As(err, &se):
		return p(422, "scope_not_allowed", se.Error())
	case errors.Is(err, commands.ErrBusy):
		return p(503, "busy", err.Error())
	case bus.IsUnavailable(err):
		// Whether a command that got this took effect is unknown: a retry
		// of a delete finds the key gone (404), of a create a new key.
		return p(503, "unavailable", bus.ErrUnavailable.Error())
	case errors.As(err, &fe):
		switch fe.Code {
		case fiber.StatusRequestEntityTooLarge:
			return p(413, "body_too_large", "the request body is over 1 MiB")
		case fiber.StatusNotFound:
			return p(404, "not_found", "no such route")
		case fiber.StatusMethodNotAllowed:
			return p(405, "method_not_allowed", "this route does not accept that method")
		}
		if fe.Code >= 400 && fe.Code < 500 {
			return p(fe.Code, "invalid_request", http.StatusText(fe.Code))
		}
	}
	return p(500, "internal", "internal error; it has been logged")
}

// writeProblem sends the problem for err.
func writeProblem(c *fiber.Ctx, err error) problem.Problem {
	pr := problemFor(err)
	_ = problem.Write(c, pr)
	return pr
}
