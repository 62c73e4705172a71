// Package api is the HTTP edge of telkeys: the management REST API (Fiber),
// bearer-token authentication, problem+json errors, health, readiness,
// metrics and the OpenAPI document. It translates HTTP to commands and
// queries and back; no other package sees Fiber.
package api

import (
	"bytes"
	"context"
	"embed"
	"encoding/json"
	"errors"
	"io/fs"
	"log/slog"
	"path"
	"strconv"
	"strings"
	"time"

	"github.com/gofiber/fiber/v2"
	"github.com/gofiber/fiber/v2/middleware/adaptor"
	"github.com/oklog/ulid/v2"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/telapi/telkeys/apikey"
	"github.com/telapi/telkeys/audit"
	"github.com/telapi/telkeys/auth"
	"github.com/telapi/telkeys/barrier"
	"github.com/telapi/telkeys/commands"
	"github.com/telapi/telkeys/domain"
	"github.com/telapi/telkeys/events"
	"github.com/telapi/telkeys/keyauth"
	"github.com/telapi/telkeys/projections"
)

// BodyLimit is the largest accepted request body.
const BodyLimit = 1 << 20

//go:embed openapi.json
var openAPIDoc []byte

// uiFiles is the web UI: plain HTML, CSS and JS modules, served at /.
//
//go:embed ui
var uiFiles embed.FS

// Commands is what the API asks of the write side.
type Commands interface {
	ConfigureTeamAccess(ctx context.Context, actor events.Actor, team string, cfg events.AccessConfig) (events.AccessConfig, commands.Result, error)
	SetPlatformFlag(ctx context.Context, actor events.Actor, flag string, enabled bool) (commands.Result, error)
	CreateKeyUntil(ctx context.Context, actor events.Actor, team, name string, scopes []string, expiresAt *time.Time) (commands.CreatedKey, error)
	DeleteKey(ctx context.Context, actor events.Actor, team, keyID string, requireEnabled bool) (commands.Result, error)
	RollKey(ctx context.Context, actor events.Actor, team, keyID string, grace time.Duration) (commands.CreatedKey, error)
	UpdateKey(ctx context.Context, actor events.Actor, team, keyID string, enabled *bool, name *string, requireEnabled bool) (domain.Key, commands.Result, error)
	ReportLeak(ctx context.Context, actor events.Actor, team, keyID string, hash []byte, l commands.Leak) (commands.Result, error)
}

// Queries is what the API asks of the read side.
type Queries interface {
	Team(ctx context.Context, team string) (projections.TeamRecord, error)
	TeamKeys(ctx context.Context, team string) ([]projections.KeyRecord, error)
	Teams(ctx context.Context) ([]projections.TeamRecord, error)
	WebRTC(ctx context.Context) (bool, error)
	LastUsed(ctx context.Context, team string) (map[string]int64, error)
	Quarantine(ctx context.Context) ([]projections.QuarantineRecord, error)
}

// Projection tells how far the read models are built.
type Projection interface {
	Wait(ctx context.Context, seq uint64) error
}

// AuditLog reads the event history.
type AuditLog interface {
	Page(ctx context.Context, f audit.Filter) ([]audit.View, error)
}

// Nodes is the registry of live TelAPI nodes and the revocation barrier
// (package barrier).
type Nodes interface {
	Wait(ctx context.Context, seq uint64, start time.Time) (confirmed, live int)
	Nodes() []barrier.Node
	Bound() time.Duration
}

// Verifier is the server's own validator (package keyauth).
type Verifier interface {
	Applied() uint64
	VerifyWait(ctx context.Context, key, scope string) keyauth.Result
	Usage(team string) (today, limit int64)
	WaitApplied(ctx context.Context, seq uint64) error
	Owner(key string) (team, keyID string, ok bool)
}

// Config wires the API.
type Config struct {
	Commands   Commands
	Queries    Queries
	Projection Projection
	Verifier   Verifier
	Nodes      Nodes
	Audit      AuditLog
	Auth       *auth.Authority
	// Ready reports why the service cannot serve yet, or nil.
	Ready   func(context.Context) error
	Metrics *Metrics
	// Gatherer serves /metrics.
	Gatherer prometheus.Gatherer
	Log      *slog.Logger
	// Now is the clock for requests_today and similar; tests inject theirs.
	Now func() time.Time
	// LeakKeys verify GitHub secret scanning's leak reports (POST
	// /v1/leaks/github); none: the route answers 404. LeakAction is what a
	// report of a live key does: LeakRevoke (default) or LeakFlag.
	LeakKeys   LeakKeys
	LeakAction LeakAction
	// DevLogin lets anyone get a token for any role from GET /v1/dev/token.
	// For local development only.
	DevLogin bool
}

// Validate reports every missing dependency at once.
func (c Config) Validate() error {
	var errs []error
	for name, missing := range map[string]bool{
		"Commands": c.Commands == nil, "Queries": c.Queries == nil, "Projection": c.Projection == nil, "Verifier": c.Verifier == nil, "Nodes": c.Nodes == nil, "Audit": c.Audit == nil,
		"Auth": c.Auth == nil, "Ready": c.Ready == nil, "Metrics": c.Metrics == nil,
		"Gatherer": c.Gatherer == nil, "Log": c.Log == nil,
	} {
		if missing {
			errs = append(errs, errors.New("api: "+name+" is required"))
		}
	}
	return errors.Join(errs...)
}

// Server is the HTTP API.
type Server struct {
	cfg Config
	app *fiber.App
}

// New builds the Fiber app with every route.
func New(cfg Config) (*Server, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	s := &Server{cfg: cfg}
	s.app = fiber.New(fiber.Config{
		AppName:               "telkeys",
		BodyLimit:             BodyLimit,
		Immutable:             true, // params outlive the request buffer
		DisableStartupMessage: true,
		// A connection must send a whole request within ReadTimeout
		// (slowloris) and may stay idle between requests for IdleTimeout.
		ReadTimeout:  15 * time.Second,
		WriteTimeout: 15 * time.Second,
		IdleTimeout:  60 * time.Second,
		// Connections served at once; fasthttp answers more with 503 and
		// closes them (its default, 256Ki, is no limit).
		Concurrency: 8192,
		JSONEncoder: jsonMarshal,
		// Errors raised before routing (body too large, bad request line).
		ErrorHandler: func(c *fiber.Ctx, err error) error {
			// GitHub's partner contract wants a 400 for a body over 1 MiB.
			var fe *fiber.Error
			if errors.As(err, &fe) && fe.Code == fiber.StatusRequestEntityTooLarge && c.Path() == "/v1/leaks/github" {
				err = badRequest("the report is over 1 MiB")
			}
			writeProblem(c, err)
			return nil
		},
	})
	s.app.Use(s.observe)
	s.app.Use(s.ui)
	s.app.Get("/healthz", s.healthz)
	s.app.Get("/readyz", s.readyz)
	s.app.Get("/metrics", adaptor.HTTPHandler(promhttp.HandlerFor(cfg.Gatherer, promhttp.HandlerOpts{})))
	s.app.Get("/openapi.json", func(c *fiber.Ctx) error {
		c.Set(fiber.HeaderContentType, fiber.MIMEApplicationJSON)
		return c.Send(openAPIDoc)
	})

	// Public /v1 routes come before the group that authenticates the rest.
	s.app.Get("/v1/ui-config", func(c *fiber.Ctx) error { return c.JSON(fiber.Map{"dev_login": cfg.DevLogin}) })
	s.app.Get("/v1/dev/token", s.devToken)
	// Leak reports carry a signature, not a bearer token: routed before
	// the group that requires one.
	s.app.Post("/v1/leaks/github", s.reportLeaks)
	v1 := s.app.Group("/v1", s.authenticate)
	v1.Get("/platform/flags", s.getFlags)
	v1.Put("/platform/flags/webrtc", s.putWebRTC)
	v1.Get("/teams", s.listTeams)
	v1.Get("/teams/:team/api-access", s.getAccess)
	v1.Put("/teams/:team/api-access", s.putAccess)
	v1.Get("/teams/:team/api-keys", s.listKeys)
	v1.Post("/teams/:team/api-keys", s.createKey)
	v1.Delete("/teams/:team/api-keys/:id", s.deleteKey)
	v1.Patch("/teams/:team/api-keys/:id", s.patchKey)
	v1.Post("/teams/:team/api-keys/:id/roll", s.rollKey)
	v1.Post("/keys/verify", s.verify)
	v1.Get("/audit/events", s.auditEvents)
	v1.Get("/audit/quarantine", s.auditQuarantine)
	v1.Get("/nodes", s.listNodes)
	return s, nil
}

// App returns the Fiber app, for Listen and Shutdown.
func (s *Server) App() *fiber.App { return s.app }

// observe is the outermost middleware: it turns errors into problems, then
// writes the access log and the HTTP metrics. The access log holds the
// method, path, status and caller identity; never a header or a body.
func (s *Server) observe(c *fiber.Ctx) error {
	start := time.Now()
	rid := ulid.Make().String()
	c.Set("X-Request-Id", rid)
	err := c.Next()
	code := ""
	if err != nil {
		pr := writeProblem(c, err)
		code = pr.Code
		switch {
		case pr.Status == fiber.StatusServiceUnavailable: // the bus, or contention: the client retries
			s.cfg.Log.Warn("request not served now", "request_id", rid, "code", pr.Code, "err", err)
		case pr.Status >= 500:
			s.cfg.Log.Error("request failed", "request_id", rid, "err", err)
		}
	}
	status := c.Response().StatusCode()
	route := c.Route().Path
	s.cfg.Metrics.observeHTTP(c.Method(), route, status, time.Since(start))
	attrs := []any{
		"request_id", rid, "method", c.Method(), "route", route, "path", redactKeys(c.Path()),
		"status", status, "duration_ms", float64(time.Since(start).Microseconds()) / 1000,
	}
	if code != "" {
		attrs = append(attrs, "code", code)
	}
	if cl, ok := c.Locals(claimsKey).(auth.Claims); ok {
		attrs = append(attrs, "sub", cl.Subject, "role", string(cl.Role))
	}
	s.cfg.Log.Info("http", attrs...)
	return nil
}

// redactKeys masks whatever looks like an API key ("tk_" and at least 16
// base62 characters) in s: a caller who puts a key in a URL (DELETE by key
// instead of id, a mistyped route) must not get it into a log line.
func redactKeys(s string) string {
	const minRun = 16
	var b strings.Builder
	for {
		i := strings.Index(s, apikey.Prefix)
		if i < 0 {
			if b.Len() == 0 {
				return s
			}
			b.WriteString(s)
			return b.String()
		}
		j := i + len(apikey.Prefix)
		for j < len(s) && ('0' <= s[j] && s[j] <= '9' || 'A' <= s[j] && s[j] <= 'Z' || 'a' <= s[j] && s[j] <= 'z') {
			j++
		}
		b.WriteString(s[:i])
		if j-i-len(apikey.Prefix) >= minRun {
			b.WriteString(apikey.Prefix + "[redacted]")
		} else {
			b.WriteString(s[i:j])
		}
		s = s[j:]
	}
}

// ui serves the embedded web UI for GET requests that name one of its
// files ("/" is index.html), and passes everything else on.
func (s *Server) ui(c *fiber.Ctx) error {
	if c.Method() != fiber.MethodGet && c.Method() != fiber.MethodHead {
		return c.Next()
	}
	name := strings.TrimPrefix(c.Path(), "/")
	if name == "" {
		name = "index.html"
	}
	if strings.Contains(name, "..") || strings.HasPrefix(name, "v1/") {
		return c.Next()
	}
	b, err := fs.ReadFile(uiFiles, "ui/"+name)
	if err != nil {
		return c.Next()
	}
	c.Type(strings.TrimPrefix(path.Ext(name), "."), "utf-8")
	c.Set(fiber.HeaderCacheControl, "no-cache")
	c.Set("X-Content-Type-Options", "nosniff")
	c.Set("Referrer-Policy", "no-referrer")
	c.Set(fiber.HeaderContentSecurityPolicy, "default-src 'self'; img-src 'self' data:; frame-ancestors 'none'; base-uri 'none'; form-action 'self'")
	return c.Send(b)
}

// devToken mints a token for any role, when --dev-login is on.
func (s *Server) devToken(c *fiber.Ctx) error {
	if !s.cfg.DevLogin {
		return fiber.ErrNotFound
	}
	role := auth.Role(c.Query("role"))
	team := c.Query("team")
	if role != auth.RoleMember {
		team = ""
	}
	tok, err := s.cfg.Auth.Mint(auth.Claims{Subject: "dev-" + string(role), Role: role, Team: team}, 8*time.Hour)
	if err != nil {
		return badRequest("role must be superadmin, auditor, member or node, and a member needs a valid team")
	}
	c.Set(fiber.HeaderCacheControl, "no-store")
	return c.JSON(fiber.Map{"token": tok})
}

func (s *Server) healthz(c *fiber.Ctx) error {
	return c.JSON(fiber.Map{"status": "ok"})
}

func (s *Server) readyz(c *fiber.Ctx) error {
	if err := s.cfg.Ready(c.UserContext()); err != nil {
		c.Set(fiber.HeaderRetryAfter, "1")
		return c.Status(fiber.StatusServiceUnavailable).JSON(fiber.Map{"status": "not ready", "reason": err.Error()})
	}
	return c.JSON(fiber.Map{"status": "ready"})
}

// readYourWrites waits until the read models and this server's validator
// include seq, so that the next query on any instance sees the command that
// produced it, and this server's verify endpoint already refuses a key
// deleted by it. The command has already happened, so a timeout is logged,
// not returned.
//
// The answer's Server-Timing header says where its time went: the command
// (append is the part spent storing the event), the revocation barrier and
// the read models.
func (s *Server) readYourWrites(c *fiber.Ctx, res commands.Result) {
	seq := res.Seq
	t0 := time.Now()
	command := t0.Sub(c.Context().Time())
	var barrier time.Duration
	if res.Revokes {
		// The revocation barrier: answer once every live node refuses
		// what the command took away, or once the bound has fenced the
		// nodes that have not applied it.
		bctx, cancel := context.WithTimeout(c.UserContext(), s.cfg.Nodes.Bound()+time.Second)
		confirmed, live := s.cfg.Nodes.Wait(bctx, seq, res.Event.Time)
		cancel()
		barrier = time.Since(t0)
		c.Set("Telkeys-Nodes-Confirmed", strconv.Itoa(confirmed)+"/"+strconv.Itoa(live))
		if confirmed < live {
			s.cfg.Log.Warn("revocation barrier: nodes did not confirm within the bound; they have fenced themselves",
				"seq", seq, "confirmed", confirmed, "live", live)
		}
	}
	ctx, cancel := context.WithTimeout(c.UserContext(), 10*time.Second)
	defer cancel()
	if err := s.cfg.Verifier.WaitApplied(ctx, seq); err != nil {
		s.cfg.Log.Warn("validator lags behind a command", "seq", seq, "err", err)
	}
	if err := s.cfg.Projection.Wait(ctx, seq); err != nil {
		s.cfg.Log.Warn("read models lag behind a command", "seq", seq, "err", err)
	}
	c.Set("Server-Timing", serverTiming(command, res.Append, barrier, time.Since(t0)-barrier))
}

// serverTiming formats a command's Server-Timing header (durations in ms).
func serverTiming(command, appendEvent, barrier, readModels time.Duration) string {
	b := make([]byte, 0, 96)
	for i, p := range []struct {
		name string
		d    time.Duration
	}{{"command", command}, {"append", appendEvent}, {"barrier", barrier}, {"read", readModels}} {
		if i > 0 {
			b = append(b, ", "...)
		}
		b = append(b, p.name...)
		b = append(b, ";dur="...)
		b = strconv.AppendFloat(b, float64(p.d.Microseconds())/1000, 'f', 3, 64)
	}
	return string(b)
}

// jsonMarshal encodes without HTML escaping, so names show as typed.
func jsonMarshal(v any) ([]byte, error) {
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(v); err != nil {
		return nil, err
	}
	return bytes.TrimSuffix(buf.Bytes(), []byte("\n")), nil
}
