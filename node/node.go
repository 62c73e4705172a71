// Package node is a small TelAPI node: the WebRTC call-session endpoints,
// gated by API keys through keyauth, and a webhook endpoint that API keys
// do not govern (it checks its own HMAC signature). It shows how a real
// TelAPI node embeds keyauth; the call tokens and apps it returns are
// placeholders.
package node

import (
	"context"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/gofiber/fiber/v2"
	"github.com/oklog/ulid/v2"

	"github.com/telapi/telkeys/api/listener"
	"github.com/telapi/telkeys/api/problem"
	"github.com/telapi/telkeys/apikey"
	"github.com/telapi/telkeys/bus"
	"github.com/telapi/telkeys/events"
	"github.com/telapi/telkeys/keyauth"
)

// Config is every setting of the node.
type Config struct {
	NATSURL string
	// NATSCreds are node credentials (telkeys credentials --role node);
	// NATSCA the CA of the servers' TLS certificates, if not the system's.
	NATSCreds string
	NATSCA    string
	// EventsPublicKey is a file of the event-signing public keys to trust
	// (PEM, from telkeys events-key): the node applies no event, key index
	// or heartbeat that one of them did not sign.
	EventsPublicKey string
	HTTPAddr        string
	Name            string
	MaxStaleness    time.Duration
	FailOpen        bool
	WebhookSecret   string
}

// Validate reports every problem at once.
func (c Config) Validate() error {
	var errs []error
	if c.NATSURL == "" {
		errs = append(errs, errors.New("--nats-url is required"))
	}
	if c.Name != "" && !bus.ValidName(c.Name) {
		errs = append(errs, errors.New("--name must be 1-64 characters of A-Z a-z 0-9 _ -"))
	}
	if c.EventsPublicKey == "" {
		errs = append(errs, errors.New("--events-public-key is required: the telkeys event-signing public key (telkeys events-key --out FILE); without it the node cannot tell telkeys' events from forged ones"))
	}
	if _, _, err := net.SplitHostPort(c.HTTPAddr); err != nil {
		errs = append(errs, fmt.Errorf("--http-addr %q: %w", c.HTTPAddr, err))
	}
	if c.MaxStaleness <= 0 {
		errs = append(errs, errors.New("--max-staleness must be positive"))
	}
	return errors.Join(errs...)
}

// DefaultName is a node's name when none is given: its host and process
// id, which tell an operator where it runs.
func DefaultName() string {
	host, _ := os.Hostname()
	var b strings.Builder
	for _, r := range host {
		if r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '-' || r == '_' {
			b.WriteRune(r)
		} else {
			b.WriteByte('_')
		}
	}
	name := b.String()
	if name == "" {
		name = "node"
	}
	return fmt.Sprintf("%.50s-%d", name, os.Getpid())
}

// Serve runs the node until ctx ends.
func Serve(ctx context.Context, c Config, log *slog.Logger) error {
	if err := c.Validate(); err != nil {
		return err
	}
	keys, err := events.ReadPublicKeys(c.EventsPublicKey)
	if err != nil {
		return err
	}
	if c.WebhookSecret == "" {
		var b [32]byte
		_, _ = rand.Read(b[:])
		c.WebhookSecret = hex.EncodeToString(b[:])
	}
	if c.Name == "" {
		c.Name = DefaultName()
	}
	// bus.Dial logs losing the bus (warn) and regaining it (info), with
	// the node's name; its pings notice a dead connection within 1.5 s.
	nc, err := bus.Dial(bus.ClientConfig{
		URLs: c.NATSURL, Creds: c.NATSCreds, CA: c.NATSCA, Name: "telapi-node " + c.Name, Log: log.With("node", c.Name),
		Want: bus.RoleNode,
	})
	if err != nil {
		return err
	}
	defer nc.Close()
	_, credsName, err := bus.CheckCredentials(c.NATSCreds) // read by Dial just now
	if err != nil {
		return err
	}
	v, err := keyauth.New(ctx, nc, keyauth.Config{Keys: keys, Name: c.Name, MaxStaleness: c.MaxStaleness, FailOpen: c.FailOpen, Log: log,
		Report: bus.NodeAppliedSubject(credsName, c.Name)})
	if err != nil {
		return err
	}
	defer v.Close()
	return listen(ctx, New(v, []byte(c.WebhookSecret)), c.HTTPAddr, log.With("node", c.Name))
}

// listen serves app on addr until ctx ends.
func listen(ctx context.Context, app *fiber.App, addr string, log *slog.Logger) error {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return err
	}
	log.Info("http listening", "addr", ln.Addr().String())
	errc := make(chan error, 1)
	// Running out of file descriptors (a connection flood) must not end
	// Serve: the listener waits it out.
	go func() { errc <- app.Listener(listener.KeepAccepting(ln, log)) }()
	select {
	case <-ctx.Done():
		return app.ShutdownWithTimeout(5 * time.Second)
	case err := <-errc:
		return err
	}
}

// Verifier is what the node needs of keyauth.
type Verifier interface {
	VerifyWait(ctx context.Context, key, scope string) keyauth.Result
	Current() bool
}

// writeProblem answers with an RFC 9457 problem.
func writeProblem(c *fiber.Ctx, status int, code, detail string) error {
	return problem.Write(c, problem.New(status, code, detail))
}

// serverConfig is the node's HTTP server: its floors use it too.
func serverConfig() fiber.Config {
	return fiber.Config{
		DisableStartupMessage: true,
		BodyLimit:             1 << 20,
		// A connection must send a whole request within ReadTimeout
		// (slowloris) and may stay idle between requests for IdleTimeout.
		ReadTimeout:  15 * time.Second,
		WriteTimeout: 15 * time.Second,
		IdleTimeout:  60 * time.Second,
		// Connections served at once; fasthttp answers more with 503 and
		// closes them (its default, 256Ki, is no limit).
		Concurrency: 8192,
	}
}

// New returns the node's Fiber app.
func New(v Verifier, webhookSecret []byte) *fiber.App {
	app := fiber.New(serverConfig())
	app.Get("/healthz", func(c *fiber.Ctx) error { return c.JSON(fiber.Map{"status": "ok"}) })
	app.Get("/readyz", func(c *fiber.Ctx) error {
		if !v.Current() {
			return c.Status(503).JSON(fiber.Map{"status": "stale"})
		}
		return c.JSON(fiber.Map{"status": "ready"})
	})
	api := app.Group("/api/v1")
	api.Post("/call-tokens", gate(v, apikey.ScopeCreateCallToken), func(c *fiber.Ctx) error {
		var tok [24]byte
		_, _ = rand.Read(tok[:])
		return c.Status(201).JSON(fiber.Map{
			"id": "ct_" + ulid.Make().String(), "team": c.Locals(teamKey),
			"token": hex.EncodeToString(tok[:]), "expires_at": time.Now().Add(time.Hour).UTC().Format(time.RFC3339),
		})
	})
	api.Get("/call-tokens/:id", gate(v, apikey.ScopeReadCallToken), func(c *fiber.Ctx) error {
		return c.JSON(fiber.Map{"id": c.Params("id"), "team": c.Locals(teamKey), "status": "active"})
	})
	api.Get("/apps", gate(v, apikey.ScopeReadTeamApps), func(c *fiber.Ctx) error {
		return c.JSON(appsBody(c.Locals(teamKey)))
	})
	api.Post("/webhooks", func(c *fiber.Ctx) error {
		sig, ok := strings.CutPrefix(c.Get("X-Telapi-Signature"), "sha256=")
		got, err := hex.DecodeString(sig)
		mac := hmac.New(sha256.New, webhookSecret)
		mac.Write(c.Body())
		if !ok || err != nil || !hmac.Equal(got, mac.Sum(nil)) {
			return writeProblem(c, 401, "invalid_signature", "X-Telapi-Signature must be sha256=<hex HMAC-SHA256 of the body>")
		}
		return c.Status(202).JSON(fiber.Map{"accepted": true})
	})
	return app
}

type ctxKey int

const teamKey ctxKey = iota

// gate admits requests whose API key has scope, and answers the rest with
// the status and problem code of the verification.
func gate(v Verifier, scope string) fiber.Handler {
	return func(c *fiber.Ctx) error {
		key := c.Get("X-API-Key")
		if h := c.Get(fiber.HeaderAuthorization); key == "" && len(h) > 7 && strings.EqualFold(h[:7], "bearer ") {
			key = strings.TrimSpace(h[7:])
		}
		if key == "" {
			c.Set(fiber.HeaderWWWAuthenticate, `Bearer realm="telapi"`)
			return writeProblem(c, 401, "missing_api_key", "send an API key in Authorization: Bearer or X-API-Key")
		}
		// Current reads the real clock (Verify reads a copy refreshed every
		// 10 ms): a node resumed after a pause longer than its staleness
		// bound must not answer from the state it had before.
		r := keyauth.Result{Code: keyauth.Unavailable}
		if v.Current() {
			r = v.VerifyWait(c.UserContext(), key, scope)
		}
		if r.Limit >= 0 && (r.Code == keyauth.Valid || r.Code == keyauth.RateLimited) {
			reset := secondsToUTCMidnight(time.Now())
			c.Set("RateLimit-Policy", fmt.Sprintf(`"daily";q=%d;w=86400`, r.Limit))
			c.Set("RateLimit", fmt.Sprintf(`"daily";r=%d;t=%d`, max(r.Limit-r.RequestsToday, 0), reset))
		}
		switch r.Code {
		case keyauth.Valid:
			c.Locals(teamKey, r.Team)
			return c.Next()
		case keyauth.NotFound:
			c.Set(fiber.HeaderWWWAuthenticate, `Bearer realm="telapi", error="invalid_token"`)
			return writeProblem(c, 401, "invalid_api_key", "the API key is unknown, malformed or deleted")
		case keyauth.Expired:
			c.Set(fiber.HeaderWWWAuthenticate, `Bearer realm="telapi", error="invalid_token", error_description="expired"`)
			return writeProblem(c, 401, "expired_api_key", "the API key has expired")
		case keyauth.Disabled:
			c.Set(fiber.HeaderWWWAuthenticate, `Bearer realm="telapi", error="invalid_token", error_description="disabled"`)
			return writeProblem(c, 401, "disabled_api_key", "the API key is disabled")
		case keyauth.InsufficientScope:
			return writeProblem(c, 403, "insufficient_scope", "the API key lacks scope "+scope)
		case keyauth.TeamAPIDisabled:
			return writeProblem(c, 403, "team_api_disabled", "API access is disabled for the key's team")
		case keyauth.WebRTCDisabled:
			return writeProblem(c, 403, "webrtc_disabled", "the platform's WebRTC feature is turned off")
		case keyauth.RateLimited:
			if r.Reserving {
				c.Set(fiber.HeaderRetryAfter, "1")
				return writeProblem(c, 429, "rate_limited", "this node cannot reserve requests under the team's daily limit right now; retry in a second")
			}
			c.Set(fiber.HeaderRetryAfter, strconv.FormatInt(secondsToUTCMidnight(time.Now()), 10))
			return writeProblem(c, 429, "rate_limited", "the team's daily request limit is reached; it resets at 00:00 UTC")
		default:
			return writeProblem(c, 503, "unavailable", "this node cannot verify keys right now")
		}
	}
}

func secondsToUTCMidnight(now time.Time) int64 {
	now = now.UTC()
	next := time.Date(now.Year(), now.Month(), now.Day()+1, 0, 0, 0, 0, time.UTC)
	return int64(next.Sub(now).Seconds() + 0.999)
}
