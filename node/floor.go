package node

import (
	"context"
	"errors"
	"log/slog"
	"net"

	"github.com/gofiber/fiber/v2"

	"github.com/telapi/telkeys/keyauth"
)

// The floors of telkeys bench's node gate: the same node with key checking
// off, and a bare Fiber route answering the same body. They let the bench
// tell what the gate costs from what the HTTP server and the route cost,
// each in a telapi-node process of its own. They serve on loopback only:
// a node without key checking must never face a network.
const (
	FloorOff  = "off"
	FloorBare = "bare"
)

// FloorTeam is the team the floors answer for.
const FloorTeam = "bench-0000"

// openVerifier admits every key, for FloorTeam, without a limit.
type openVerifier struct{}

func (openVerifier) VerifyWait(context.Context, string, string) keyauth.Result {
	return keyauth.Result{Code: keyauth.Valid, Team: FloorTeam, Scopes: keyauth.ScopeReadTeamApps, Limit: -1}
}

func (openVerifier) Current() bool { return true }

// appsBody is what GET /api/v1/apps answers for team.
func appsBody(team any) fiber.Map {
	return fiber.Map{"team": team, "apps": []fiber.Map{{"id": "app_default", "name": "Default"}}}
}

// ServeFloor runs a floor (FloorOff or FloorBare) on addr, a loopback
// address, until ctx ends. It needs no NATS.
func ServeFloor(ctx context.Context, floor, addr string, log *slog.Logger) error {
	host, _, err := net.SplitHostPort(addr)
	if ip := net.ParseIP(host); err != nil || ip == nil || !ip.IsLoopback() {
		return errors.New("--bench-floor serves on a loopback --http-addr only: it checks no key")
	}
	var app *fiber.App
	switch floor {
	case FloorOff:
		app = New(openVerifier{}, make([]byte, 32))
	case FloorBare:
		app = fiber.New(serverConfig()) // the same server: the floor of the gate, not of its timeouts

		app.Get("/api/v1/apps", func(c *fiber.Ctx) error { return c.JSON(appsBody(FloorTeam)) })
	default:
		return errors.New("--bench-floor must be off or bare")
	}
	return listen(ctx, app, addr, log.With("floor", floor))
}
