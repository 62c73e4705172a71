package api

import (
	"fmt"
	"slices"
	"strings"

	"github.com/gofiber/fiber/v2"

	"github.com/telapi/telkeys/auth"
	"github.com/telapi/telkeys/commands"
	"github.com/telapi/telkeys/events"
)

type ctxKey int

const claimsKey ctxKey = iota

// authenticate requires a valid bearer token on every /v1 route.
func (s *Server) authenticate(c *fiber.Ctx) error {
	h := c.Get(fiber.HeaderAuthorization)
	// The scheme is case-insensitive (RFC 9110 §11.1).
	ok := len(h) > 7 && strings.EqualFold(h[:7], "bearer ")
	if !ok {
		c.Set(fiber.HeaderWWWAuthenticate, `Bearer realm="telkeys"`)
		return fmt.Errorf("%w: missing bearer token", auth.ErrUnauthorized)
	}
	cl, err := s.cfg.Auth.Verify(strings.TrimSpace(h[7:]))
	if err != nil {
		c.Set(fiber.HeaderWWWAuthenticate, `Bearer realm="telkeys", error="invalid_token"`)
		return err
	}
	c.Locals(claimsKey, cl)
	return c.Next()
}

func claims(c *fiber.Ctx) auth.Claims {
	cl, _ := c.Locals(claimsKey).(auth.Claims)
	return cl
}

func actor(cl auth.Claims) events.Actor {
	return events.Actor{Subject: cl.Subject, Role: string(cl.Role)}
}

// allow passes if the caller has one of roles.
func allow(c *fiber.Ctx, roles ...auth.Role) (auth.Claims, error) {
	cl := claims(c)
	if !slices.Contains(roles, cl.Role) {
		return cl, errForbidden
	}
	return cl, nil
}

// teamParam returns the {team} path parameter; a malformed one is a 400.
func teamParam(c *fiber.Ctx) (string, error) {
	team := c.Params("team")
	if !commands.ValidTeamID(team) {
		return "", badRequest("team id must be 1-64 characters of A-Z a-z 0-9 _ -")
	}
	return team, nil
}

// allowTeam passes for the given roles, and for members of team when
// members is true.
func allowTeam(c *fiber.Ctx, team string, members bool, roles ...auth.Role) (auth.Claims, error) {
	cl := claims(c)
	if members && cl.Role == auth.RoleMember {
		if cl.Team != team {
			return cl, errForbidden
		}
		return cl, nil
	}
	return allow(c, roles...)
}
