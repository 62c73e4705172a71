package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"strconv"
	"sync"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/oklog/ulid/v2"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"

	"github.com/telapi/telkeys/api"
	"github.com/telapi/telkeys/audit"
	"github.com/telapi/telkeys/auth"
	"github.com/telapi/telkeys/bus"
	"github.com/telapi/telkeys/commands"
	"github.com/telapi/telkeys/keyauth"
	"github.com/telapi/telkeys/projections"
)

// ServeConfig is every setting of telkeys serve.
type ServeConfig struct {
	DataDir    string
	HTTPAddr   string
	NATSAddr   string
	NATSURL    string
	Replicas   int
	AuthSecret string
	LogFormat  string
	LogLevel   string
	DevLogin   bool
}

// Validate reports every problem at once.
func (c ServeConfig) Validate() error {
	var errs []error
	if c.HTTPAddr == "" {
		errs = append(errs, errors.New("--http-addr is required"))
	} else if _, _, err := net.SplitHostPort(c.HTTPAddr); err != nil {
		errs = append(errs, fmt.Errorf("--http-addr %q: %w", c.HTTPAddr, err))
	}
	if c.NATSURL == "" {
		if err := (bus.EmbeddedConfig{DataDir: c.DataDir, Addr: c.NATSAddr}).Validate(); err != nil {
			errs = append(errs, err)
		}
		if c.Replicas > 1 {
			errs = append(errs, errors.New("--replicas above 1 needs a NATS cluster (--nats-url); the embedded server is a single node"))
		}
	}
	if c.Replicas < 1 || c.Replicas > 5 {
		errs = append(errs, errors.New("--replicas must be between 1 and 5"))
	}
	if c.AuthSecret == "" && c.DataDir == "" {
		errs = append(errs, errors.New("--auth-secret or --data-dir is required"))
	}
	if c.AuthSecret != "" && len(c.AuthSecret) < auth.MinSecretLen {
		errs = append(errs, fmt.Errorf("--auth-secret must be at least %d bytes", auth.MinSecretLen))
	}
	return errors.Join(errs...)
}

func serveFlags(fs *flag.FlagSet) *ServeConfig {
	c := &ServeConfig{}
	fs.StringVar(&c.DataDir, "data-dir", "./data", "directory for the embedded NATS store and the generated auth secret")
	fs.StringVar(&c.HTTPAddr, "http-addr", ":8080", "address of the HTTP API and web UI")
	fs.StringVar(&c.NATSAddr, "nats-addr", "127.0.0.1:4222", "client listener of the embedded NATS server, for local TelAPI nodes (port 0 picks one)")
	fs.StringVar(&c.NATSURL, "nats-url", "", "comma-separated URLs of an external NATS server or cluster; when set, no embedded server starts")
	fs.IntVar(&c.Replicas, "replicas", 1, "replicas of every stream and bucket (3 or 5 on a cluster)")
	fs.StringVar(&c.AuthSecret, "auth-secret", "", "HS256 secret for bearer tokens, at least 32 bytes; if empty, one is generated once into --data-dir")
	fs.StringVar(&c.LogFormat, "log-format", "json", "log format: json or text")
	fs.StringVar(&c.LogLevel, "log-level", "info", "log level: debug, info, warn or error")
	fs.BoolVar(&c.DevLogin, "dev-login", false, "DEVELOPMENT ONLY: let anyone sign in to the web UI as any role and team, without a token")
	return c
}

func serveCmd(ctx context.Context, args []string, stderr io.Writer) error {
	fs := flag.NewFlagSet("serve", flag.ContinueOnError)
	cfg := serveFlags(fs)
	intro := "Usage: telkeys serve [flags]\n\nRuns the API key service: the REST API, the projections that build the read\n" +
		"models, and (unless --nats-url is set) an embedded NATS server with JetStream.\n" +
		"SIGINT or SIGTERM drains HTTP, then NATS, then stops.\n"
	if err := parseFlags(fs, args, stderr, intro); err != nil {
		return err
	}
	log, err := newLogger(stderr, cfg.LogFormat, cfg.LogLevel)
	if err != nil {
		return err
	}
	svc, err := Start(ctx, *cfg, log)
	if err != nil {
		return err
	}
	select {
	case <-ctx.Done():
		log.Info("shutting down")
	case err := <-svc.httpErr:
		log.Error("http server stopped", "err", err)
	}
	return svc.Shutdown(context.Background())
}

// Service is a running telkeys.
type Service struct {
	// HTTPAddr and NATSURL are where it listens (NATSURL: the embedded server
	// or the first external URL).
	HTTPAddr string
	NATSURL  string

	log       *slog.Logger
	ns        *server.Server
	nc        *nats.Conn
	api       *api.Server
	httpErr   chan error
	stopProj  context.CancelFunc
	projDone  chan struct{}
	bgCtx     context.Context
	bg        sync.WaitGroup
	trackSub  *nats.Subscription
	validator *keyauth.Validator
	h         *bus.Handles
	name      string
	closeOnce sync.Once
}

// every runs f every period until the projector's context (the service's
// background work) ends.
func (s *Service) every(period time.Duration, f func(context.Context)) {
	s.bg.Add(1)
	go func() {
		defer s.bg.Done()
		t := time.NewTicker(period)
		defer t.Stop()
		for {
			select {
			case <-s.bgCtx.Done():
				return
			case <-t.C:
				f(s.bgCtx)
			}
		}
	}()
}

// heartbeat tells validators that telkeys is alive and how far the event
// stream is, so that they can tell when they are cut off or behind.
func heartbeat(ctx context.Context, nc *nats.Conn, h *bus.Handles, log *slog.Logger) {
	ctx, cancel := context.WithTimeout(ctx, time.Second)
	defer cancel()
	info, err := h.Events.Info(ctx)
	if err != nil {
		log.Debug("heartbeat: stream info", "err", err)
		return
	}
	_ = nc.Publish(bus.HeartbeatSubject, strconv.AppendUint(nil, info.State.LastSeq, 10))
}

// Start wires every part of telkeys and starts serving. This is the one
// place where the parts meet.
func Start(ctx context.Context, cfg ServeConfig, log *slog.Logger) (svc *Service, err error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	svc = &Service{log: log, httpErr: make(chan error, 1)}
	t0 := time.Now()
	stage := func(name string) { log.Debug("startup", "stage", name, "ms", time.Since(t0).Milliseconds()) }
	defer func() {
		if err != nil {
			_ = svc.Shutdown(context.Background())
		}
	}()

	if cfg.NATSURL == "" {
		svc.ns, err = bus.StartEmbedded(bus.EmbeddedConfig{DataDir: cfg.DataDir, Addr: cfg.NATSAddr, Logger: log})
		if err != nil {
			return nil, err
		}
		svc.NATSURL = svc.ns.ClientURL()
		svc.nc, err = bus.ConnectEmbedded(svc.ns, "telkeys")
		log.Warn("embedded NATS server started; every write is fsynced before it is acknowledged",
			"client_url", svc.NATSURL, "store", cfg.DataDir)
	} else {
		svc.NATSURL = cfg.NATSURL
		svc.nc, err = bus.Connect(cfg.NATSURL, "telkeys", log)
	}
	if err != nil {
		return nil, fmt.Errorf("connect to NATS: %w", err)
	}
	js, err := jetstream.New(svc.nc)
	if err != nil {
		return nil, err
	}
	stage("nats connected")
	h, err := setupWithRetry(ctx, js, cfg.Replicas, log)
	if err != nil {
		return nil, err
	}
	stage("streams and buckets set up")
	svc.h, svc.name = h, "telkeys-"+ulid.Make().String()

	secret, err := auth.ResolveSecret(cfg.AuthSecret, cfg.DataDir)
	if err != nil {
		return nil, fmt.Errorf("auth secret: %w", err)
	}
	authority, err := auth.New(secret, commands.ValidTeamID)
	if err != nil {
		return nil, err
	}

	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	metrics := api.NewMetrics(reg)

	tracker, err := projections.NewTracker(ctx, h)
	if err != nil {
		return nil, err
	}
	if svc.trackSub, err = tracker.Subscribe(svc.nc); err != nil {
		return nil, err
	}
	info, err := h.Events.Info(ctx)
	if err != nil {
		return nil, err
	}
	readyAt := info.State.LastSeq // ready once the read models include what was stored before start

	projector := projections.NewProjector(h, js, svc.nc, tracker, log.With("component", "projector"))
	projector.OnPending = func(n uint64) { metrics.ProjectionPending.Set(float64(n)) }
	svc.bgCtx, svc.stopProj = context.WithCancel(context.Background())
	svc.projDone = make(chan struct{})
	go func() {
		defer close(svc.projDone)
		if err := projector.Run(svc.bgCtx); err != nil {
			log.Error("projector stopped", "err", err)
		}
	}()

	svc.validator, err = keyauth.New(ctx, svc.nc, keyauth.Config{Name: svc.name, Log: log.With("component", "keyauth")})
	if err != nil {
		return nil, err
	}
	stage("validator loaded")
	svc.every(time.Second, func(ctx context.Context) { heartbeat(ctx, svc.nc, h, log) })
	// The key index lets validators start from one object instead of every
	// KV record; refreshed once enough has changed, and at shutdown.
	svc.every(30*time.Second, func(ctx context.Context) { svc.writeKeyIndex(ctx, keyIndexEvery) })

	cmds, err := commands.New(commands.Config{
		JS: js, Events: h.Events, Snapshots: h.Snapshots,
		Log: log.With("component", "commands"), Observe: metrics.ObserveCommand,
	})
	if err != nil {
		return nil, err
	}
	svc.api, err = api.New(api.Config{
		Commands: cmds, Queries: projections.NewReadModel(h), Projection: tracker, Verifier: svc.validator, Audit: audit.Log{JS: js}, Auth: authority,
		Metrics: metrics, Gatherer: reg, Log: log, DevLogin: cfg.DevLogin,
		Ready: func(ctx context.Context) error {
			if !svc.nc.IsConnected() {
				return errors.New("not connected to NATS")
			}
			ctx, cancel := context.WithTimeout(ctx, 200*time.Millisecond)
			defer cancel()
			if tracker.Wait(ctx, readyAt) != nil {
				return fmt.Errorf("read models at event %d of %d", tracker.Applied(), readyAt)
			}
			return nil
		},
	})
	if err != nil {
		return nil, err
	}
	ln, err := net.Listen("tcp", cfg.HTTPAddr)
	if err != nil {
		return nil, err
	}
	svc.HTTPAddr = ln.Addr().String()
	go func() { svc.httpErr <- svc.api.App().Listener(api.Linger(ln)) }()
	if cfg.DevLogin {
		log.Warn("!!! --dev-login is ON: anyone who can reach " + svc.HTTPAddr + " can sign in as any role, superadmin included. Never use it outside local development. !!!")
	}
	log.Info("http listening", "addr", svc.HTTPAddr, "events", readyAt, "startup_ms", time.Since(t0).Milliseconds())
	return svc, nil
}

// keyIndexEvery is how many events the validator must be ahead of the
// stored key index before telkeys writes a new one (besides at shutdown).
const keyIndexEvery = 10_000

// keyIndexLock, in the snapshots bucket, names the instance writing the
// key index: two writes at once would each purge only the chunks they
// saw, and leave a whole copy of the index behind.
const keyIndexLock = "lock.keyindex"

func (s *Service) writeKeyIndex(ctx context.Context, minEvents uint64) {
	ctx, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	locks := s.h.Snapshots
	rev, err := locks.Create(ctx, keyIndexLock, []byte(s.name))
	if errors.Is(err, jetstream.ErrKeyExists) {
		// Held, unless its holder died while writing: a write takes
		// seconds, not minutes.
		e, gerr := locks.Get(ctx, keyIndexLock)
		if gerr != nil || time.Since(e.Created()) < 2*time.Minute {
			return
		}
		rev, err = locks.Update(ctx, keyIndexLock, []byte(s.name), e.Revision())
	}
	if err != nil {
		s.log.Debug("key index: another instance is writing it", "err", err)
		return
	}
	defer func() {
		dctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = locks.Delete(dctx, keyIndexLock, jetstream.LastRevision(rev))
	}()
	t0 := time.Now()
	seq, err := s.validator.WriteKeyIndex(ctx, minEvents)
	if err != nil {
		s.log.Warn("key index not written", "err", err)
		return
	}
	s.log.Debug("key index", "event", seq, "ms", time.Since(t0).Milliseconds())
}

// setupWithRetry creates streams and buckets, retrying while a fresh
// cluster has no JetStream meta leader yet.
func setupWithRetry(ctx context.Context, js jetstream.JetStream, replicas int, log *slog.Logger) (*bus.Handles, error) {
	deadline := time.Now().Add(60 * time.Second)
	for {
		sctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		h, err := bus.Setup(sctx, js, replicas)
		cancel()
		if err == nil || time.Now().After(deadline) || ctx.Err() != nil {
			return h, err
		}
		log.Warn("stream setup failed, retrying", "err", err)
		select {
		case <-time.After(time.Second):
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
}

// Shutdown drains HTTP, stops the projector, drains NATS and stops the
// embedded server, in that order.
func (s *Service) Shutdown(ctx context.Context) error {
	var err error
	s.closeOnce.Do(func() {
		if s.api != nil {
			err = s.api.App().ShutdownWithTimeout(10 * time.Second)
		}
		if s.stopProj != nil {
			s.stopProj()
			<-s.projDone
			s.bg.Wait()
		}
		if s.validator != nil {
			s.writeKeyIndex(ctx, 1)
			s.validator.Close()
		}
		if s.trackSub != nil {
			_ = s.trackSub.Unsubscribe()
		}
		if s.nc != nil {
			if derr := s.nc.Drain(); derr == nil {
				for !s.nc.IsClosed() && ctx.Err() == nil {
					time.Sleep(5 * time.Millisecond)
				}
			}
			s.nc.Close()
		}
		if s.ns != nil {
			s.ns.Shutdown()
			s.ns.WaitForShutdown()
		}
		s.log.Info("stopped")
	})
	return err
}
