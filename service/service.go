// Package service is telkeys serve: the one place where the parts meet. It
// starts (or connects to) NATS, sets up the streams and buckets, runs the
// projector, the server's own validator and the heartbeat, and serves the
// API; Shutdown stops them in the reverse order.
package service

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"path/filepath"
	"sync"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/oklog/ulid/v2"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"

	"github.com/telapi/telkeys/api"
	"github.com/telapi/telkeys/api/listener"
	"github.com/telapi/telkeys/audit"
	"github.com/telapi/telkeys/auth"
	"github.com/telapi/telkeys/barrier"
	"github.com/telapi/telkeys/bus"
	"github.com/telapi/telkeys/commands"
	"github.com/telapi/telkeys/events"
	"github.com/telapi/telkeys/keyauth"
	"github.com/telapi/telkeys/projections"
)

// Config is every setting of telkeys serve.
type Config struct {
	DataDir  string
	HTTPAddr string
	// NATSAddr is the embedded server's client listener; NATSTLSCert and
	// NATSTLSKey make it TLS only, and NATSAllowPlaintext lets it run
	// without TLS off loopback.
	NATSAddr           string
	NATSTLSCert        string
	NATSTLSKey         string
	NATSAllowPlaintext bool
	// NATSURL names an external server or cluster instead, reached with
	// the service credentials in NATSCreds, trusting NATSCA's TLS
	// certificates.
	NATSURL    string
	NATSCreds  string
	NATSCA     string
	Replicas   int
	AuthSecret string
	DevLogin   bool
	// SigningKey is the Ed25519 key that signs events, heartbeats and the
	// key index (PEM); every instance of a deployment uses the same one.
	// Empty: the one in the data dir, made on first start.
	SigningKey string
	// EventsPublicKey is a file of more keys to trust besides the signing
	// key's own: the previous ones while a key is rotated.
	EventsPublicKey string
	// RevocationWait bounds how long a command that takes access away
	// waits for the nodes to apply it: their MaxStaleness plus one
	// heartbeat period (0: barrier.DefaultBound).
	RevocationWait time.Duration
	// Issuer, when its JWKSURL is set, is the platform's identity
	// provider, whose tokens are accepted besides telkeys' own.
	Issuer auth.Issuer
	// LeakReportKeys is a file of GitHub secret scanning's public keys
	// (api.LoadLeakKeys): it turns on POST /v1/leaks/github. LeakAction is
	// what a report of a live key does: "revoke" (default) or "flag".
	LeakReportKeys string
	LeakAction     string
}

// SigningKeyPath is where telkeys serve keeps its event-signing key when
// no --signing-key is given.
func SigningKeyPath(dataDir string) string { return filepath.Join(dataDir, "events-signing.key") }

// keys returns the signer and the keys to trust.
func (c Config) keys() (*events.Signer, *events.Keys, error) {
	path, create := c.SigningKey, false
	if path == "" {
		path, create = SigningKeyPath(c.DataDir), true
	}
	signer, err := events.LoadSigningKey(path, create)
	if err != nil {
		return nil, nil, err
	}
	keys := events.NewKeys(signer.PublicKey())
	if c.EventsPublicKey != "" {
		more, err := events.ReadPublicKeys(c.EventsPublicKey)
		if err != nil {
			return nil, nil, err
		}
		keys.Merge(more)
	}
	return signer, keys, nil
}

// Validate reports every problem at once.
func (c Config) Validate() error {
	var errs []error
	if c.HTTPAddr == "" {
		errs = append(errs, errors.New("--http-addr is required"))
	} else if _, _, err := net.SplitHostPort(c.HTTPAddr); err != nil {
		errs = append(errs, fmt.Errorf("--http-addr %q: %w", c.HTTPAddr, err))
	}
	if c.NATSURL == "" {
		if err := c.embedded(&bus.Authority{}).Validate(); err != nil {
			errs = append(errs, err)
		}
		if c.Replicas > 1 {
			errs = append(errs, errors.New("--replicas above 1 needs a NATS cluster (--nats-url); the embedded server is a single node"))
		}
	} else {
		if c.NATSCreds == "" {
			errs = append(errs, errors.New("--nats-url needs --nats-creds: service credentials from \"telkeys credentials --role service\""))
		}
		if c.SigningKey == "" {
			errs = append(errs, errors.New("--nats-url needs --signing-key: every instance of a deployment signs events with the same key"))
		}
	}
	if c.Replicas < 1 || c.Replicas > 5 {
		errs = append(errs, errors.New("--replicas must be between 1 and 5"))
	}
	if c.AuthSecret == "" && c.DataDir == "" {
		errs = append(errs, errors.New("--auth-secret or --data-dir is required"))
	}
	if c.Issuer.JWKSURL != "" {
		if err := c.Issuer.Validate(); err != nil {
			errs = append(errs, err)
		}
	}
	if c.LeakAction != "" && c.LeakAction != string(api.LeakRevoke) && c.LeakAction != string(api.LeakFlag) {
		errs = append(errs, errors.New("--leak-action must be revoke or flag"))
	}
	if c.LeakReportKeys != "" {
		if _, err := api.LoadLeakKeys(c.LeakReportKeys); err != nil {
			errs = append(errs, fmt.Errorf("--leak-report-keys: %w", err))
		}
	}
	if c.AuthSecret != "" && len(c.AuthSecret) < auth.MinSecretLen {
		errs = append(errs, fmt.Errorf("--auth-secret must be at least %d bytes", auth.MinSecretLen))
	}
	return errors.Join(errs...)
}

// embedded is the embedded server's configuration.
func (c Config) embedded(a *bus.Authority) bus.EmbeddedConfig {
	return bus.EmbeddedConfig{
		DataDir: c.DataDir, Addr: c.NATSAddr, Authority: a,
		TLSCert: c.NATSTLSCert, TLSKey: c.NATSTLSKey, AllowPlaintext: c.NATSAllowPlaintext,
	}
}

// Run starts telkeys and serves until ctx ends or the HTTP server fails,
// then shuts down.
func Run(ctx context.Context, cfg Config, log *slog.Logger) error {
	svc, err := Start(ctx, cfg, log)
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
	name      string
	signer    *events.Signer
	ns        *server.Server
	nc        *nats.Conn
	h         *bus.Handles
	validator *keyauth.Validator
	api       *api.Server
	cmds      *commands.Handler
	httpErr   chan error
	trackSub  *nats.Subscription
	nodesSub  *nats.Subscription
	stopBg    context.CancelFunc // stops the projector and the periodic work
	bg        sync.WaitGroup
	closeOnce sync.Once
}

// Start wires every part of telkeys and starts serving.
func Start(ctx context.Context, cfg Config, log *slog.Logger) (svc *Service, err error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	t0 := time.Now()
	stage := func(name string) { log.Debug("startup", "stage", name, "ms", time.Since(t0).Milliseconds()) }
	svc = &Service{log: log, name: "telkeys-" + ulid.Make().String(), httpErr: make(chan error, 1)}
	started := svc // "return nil, err" sets svc to nil before this runs
	defer func() {
		if err != nil { // the caller reports err: one line, not a shutdown's
			started.log = slog.New(slog.DiscardHandler)
			_ = started.Shutdown(context.Background())
		}
	}()
	signer, keys, err := cfg.keys()
	if err != nil {
		return nil, err
	}
	svc.signer = signer
	js, err := svc.connect(ctx, cfg)
	if err != nil {
		return nil, err
	}
	stage("nats connected")
	if svc.h, err = setupWithRetry(ctx, js, cfg.Replicas, log); err != nil {
		return nil, err
	}
	stage("streams and buckets set up")
	if err := refuseUnsignedHistory(ctx, svc.h.Events); err != nil {
		return nil, err
	}

	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	metrics := api.NewMetrics(reg)
	// Background work runs until Shutdown, not until ctx, which only
	// bounds the start.
	bg, stopBg := context.WithCancel(context.Background())
	svc.stopBg = stopBg
	tracker, readyAt, err := svc.startProjector(ctx, bg, js, keys, metrics)
	if err != nil {
		return nil, err
	}
	if svc.validator, err = keyauth.New(ctx, svc.nc, keyauth.Config{Name: svc.name, Keys: keys, Signer: signer, Log: log.With("component", "keyauth"),
		// Without a key index (a first start on a long history) the
		// validator checks every event's signature while the projector
		// does the same: at ten million events that took more than the
		// ten minutes this once allowed (bench --only scale). Only ctx
		// (a signal) stops it.
		ReadyTimeout: 24 * time.Hour}); err != nil {
		return nil, err
	}
	stage("validator loaded")
	svc.startPeriodic(bg)

	authority, err := newAuthority(cfg)
	if err != nil {
		return nil, err
	}
	if cfg.Issuer.JWKSURL != "" {
		cfg.Issuer.Log = log.With("component", "auth")
		if err := authority.TrustIssuer(bg, cfg.Issuer); err != nil { // refreshed until Shutdown
			return nil, err
		}
	}
	if cfg.RevocationWait <= 0 {
		cfg.RevocationWait = barrier.DefaultBound
	}
	nodes := barrier.New(cfg.RevocationWait, nil)
	if svc.nodesSub, err = nodes.Subscribe(svc.nc); err != nil {
		return nil, err
	}
	reg.MustRegister(api.NodeLag(nodes, svc.validator))
	svc.cmds, err = commands.New(commands.Config{
		JS: js, Events: svc.h.Events, Snapshots: svc.h.Snapshots, Signer: signer, Keys: keys,
		Log: log.With("component", "commands"), Observe: metrics.ObserveCommand,
	})
	if err != nil {
		return nil, err
	}
	var leakKeys api.LeakKeys
	if cfg.LeakReportKeys != "" {
		if leakKeys, err = api.LoadLeakKeys(cfg.LeakReportKeys); err != nil {
			return nil, err
		}
	}
	svc.api, err = api.New(api.Config{
		LeakKeys: leakKeys, LeakAction: api.LeakAction(cfg.LeakAction),
		Commands: svc.cmds, Queries: projections.NewReadModel(svc.h), Projection: tracker, Verifier: svc.validator, Nodes: nodes,
		Audit: &audit.Log{JS: js, Keys: keys}, Auth: authority, Metrics: metrics, Gatherer: reg, Log: log, DevLogin: cfg.DevLogin,
		Ready: func(ctx context.Context) error { return svc.ready(ctx, tracker, readyAt) },
	})
	if err != nil {
		return nil, err
	}
	if err := svc.listen(cfg); err != nil {
		return nil, err
	}
	log.Info("http listening", "addr", svc.HTTPAddr, "events", readyAt, "startup_ms", time.Since(t0).Milliseconds())
	return svc, nil
}

// connect starts the embedded server, unless cfg names an external one,
// and connects to it with service credentials. The embedded server trusts
// the authority kept in the data dir, made on first start.
func (s *Service) connect(ctx context.Context, cfg Config) (jetstream.JetStream, error) {
	client := bus.ClientConfig{Name: "telkeys", Log: s.log, Want: bus.RoleService}
	if cfg.NATSURL == "" {
		authority, err := bus.LoadAuthority(bus.AuthDir(cfg.DataDir), true)
		if err != nil {
			return nil, err
		}
		if s.ns, err = bus.StartEmbedded(cfg.embedded(authority)); err != nil {
			return nil, err
		}
		s.NATSURL = s.ns.ClientURL()
		if client.CredsData, err = authority.Credentials(bus.RoleService, s.name, 0); err != nil {
			return nil, err
		}
		client.InProcess = s.ns
		s.log.Warn("embedded NATS server started; every write is fsynced before it is acknowledged",
			"client_url", s.NATSURL, "store", cfg.DataDir, "tls", cfg.NATSTLSCert != "")
	} else {
		s.NATSURL = cfg.NATSURL
		client.URLs, client.Creds, client.CA = cfg.NATSURL, cfg.NATSCreds, cfg.NATSCA
	}
	var err error
	if s.nc, err = bus.Dial(client); err != nil {
		return nil, err
	}
	return jetstream.New(s.nc)
}

// refuseUnsignedHistory stops a start on a store written before events were
// signed: every one of its events would be quarantined. No deployment of
// that version exists, so the message says to start afresh.
func refuseUnsignedHistory(ctx context.Context, stream jetstream.Stream) error {
	info, err := stream.Info(ctx)
	if err != nil || info.State.Msgs == 0 {
		return err
	}
	m, err := stream.GetMsg(ctx, info.State.FirstSeq)
	if err != nil {
		return err
	}
	if e, err := events.Unmarshal(m.Data); err == nil && len(e.Sig) == 0 {
		return fmt.Errorf("the event stream was written by a telkeys that did not sign its events (event %d is unsigned), "+
			"and this one trusts signed events only: start from an empty data dir (move the old one away), "+
			"or read the old history with the telkeys that wrote it", info.State.FirstSeq)
	}
	return nil
}

// setupWithRetry creates streams and buckets, retrying while a fresh
// cluster has no JetStream meta leader yet, or not every server has
// reported to it (a peer offline for placement); a configuration the servers
// refuse (R3 on a single server, say) fails at once.
func setupWithRetry(ctx context.Context, js jetstream.JetStream, replicas int, log *slog.Logger) (*bus.Handles, error) {
	deadline := time.Now().Add(60 * time.Second)
	for {
		// Short attempts: on a fresh cluster the first requests may go
		// unanswered until the meta leader is elected.
		sctx, cancel := context.WithTimeout(ctx, 3*time.Second)
		h, err := bus.Setup(sctx, js, replicas)
		cancel()
		transient := bus.IsUnavailable(err) || bus.IsPeerOffline(err)
		if err == nil || !transient || time.Now().After(deadline) || ctx.Err() != nil {
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

// startProjector starts building the read models, and returns the tracker
// of their progress and the sequence they must reach before the service
// is ready: everything stored before it started.
func (s *Service) startProjector(ctx, bg context.Context, js jetstream.JetStream, keys *events.Keys, metrics *api.Metrics) (*projections.Tracker, uint64, error) {
	tracker, err := projections.NewTracker(ctx, s.h)
	if err != nil {
		return nil, 0, err
	}
	if s.trackSub, err = tracker.Subscribe(s.nc); err != nil {
		return nil, 0, err
	}
	info, err := s.h.Events.Info(ctx)
	if err != nil {
		return nil, 0, err
	}
	projector := projections.NewProjector(s.h, js, s.nc, tracker, keys, s.log.With("component", "projector"))
	projector.OnPending = func(n uint64) { metrics.ProjectionPending.Set(float64(n)) }
	projector.OnQuarantine = metrics.Quarantined
	s.bg.Add(1)
	go func() {
		defer s.bg.Done()
		if err := projector.Run(bg); err != nil {
			s.log.Error("projector stopped", "err", err)
		}
	}()
	return tracker, info.State.LastSeq, nil
}

// startPeriodic starts the heartbeat and the key-index writer.
func (s *Service) startPeriodic(ctx context.Context) {
	bus.Every(ctx, &s.bg, time.Second, nil, s.heartbeat)
	// The key index lets validators start from one object instead of
	// replaying the history; refreshed once enough has changed, and at
	// shutdown.
	bus.Every(ctx, &s.bg, 30*time.Second, nil, func(ctx context.Context) { s.writeKeyIndex(ctx, keyIndexEvery) })
}

// heartbeat tells validators that telkeys is alive and how far the event
// stream is, so that they can tell when they are cut off or behind.
func (s *Service) heartbeat(ctx context.Context) {
	ctx, cancel := context.WithTimeout(ctx, time.Second)
	defer cancel()
	info, err := s.h.Events.Info(ctx)
	if err != nil {
		s.log.Debug("heartbeat: stream info", "err", err)
		return
	}
	_ = s.nc.Publish(bus.HeartbeatSubject, s.signer.SignHeartbeat(info.State.LastSeq, time.Now()))
}

func newAuthority(cfg Config) (*auth.Authority, error) {
	secret, err := auth.ResolveSecret(cfg.AuthSecret, cfg.DataDir)
	if err != nil {
		return nil, fmt.Errorf("auth secret: %w", err)
	}
	return auth.New(secret, commands.ValidTeamID)
}

// ready reports why the service cannot serve yet: it is cut off from
// NATS, or its read models do not yet include what was stored before it
// started.
func (s *Service) ready(ctx context.Context, tracker *projections.Tracker, readyAt uint64) error {
	if !s.nc.IsConnected() {
		return errors.New("not connected to NATS")
	}
	ctx, cancel := context.WithTimeout(ctx, 200*time.Millisecond)
	defer cancel()
	if tracker.Wait(ctx, readyAt) != nil {
		return fmt.Errorf("read models at event %d of %d", tracker.Applied(), readyAt)
	}
	return nil
}

func (s *Service) listen(cfg Config) error {
	ln, err := net.Listen("tcp", cfg.HTTPAddr)
	if err != nil {
		return err
	}
	s.HTTPAddr = ln.Addr().String()
	// An accept error stops the service (Run), so running out of file
	// descriptors must not be one: the listener waits it out.
	go func() { s.httpErr <- s.api.App().Listener(api.Linger(listener.KeepAccepting(ln, s.log))) }()
	if cfg.DevLogin {
		s.log.Warn("!!! --dev-login is ON: anyone who can reach " + s.HTTPAddr + " can sign in as any role, superadmin included. Never use it outside local development. !!!")
	}
	return nil
}

// keyIndexEvery is how many events the validator must be ahead of the
// stored key index before telkeys writes a new one (besides at shutdown).
const keyIndexEvery = 10_000

// writeKeyIndex stores the validator's state as the key index, under a
// lock (bus.KeyIndexLock): two writes at once would each purge only the
// chunks they saw, and leave a whole copy of the index behind.
func (s *Service) writeKeyIndex(ctx context.Context, minEvents uint64) {
	ctx, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	locks := s.h.Snapshots
	rev, err := locks.Create(ctx, bus.KeyIndexLock, []byte(s.name))
	if errors.Is(err, jetstream.ErrKeyExists) {
		// Held, unless its holder died while writing: a write takes
		// seconds, not minutes.
		e, gerr := locks.Get(ctx, bus.KeyIndexLock)
		if gerr != nil || time.Since(e.Created()) < 2*time.Minute {
			return
		}
		rev, err = locks.Update(ctx, bus.KeyIndexLock, []byte(s.name), e.Revision())
	}
	if err != nil {
		s.log.Debug("key index: another instance is writing it", "err", err)
		return
	}
	defer func() {
		dctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = locks.Delete(dctx, bus.KeyIndexLock, jetstream.LastRevision(rev))
	}()
	t0 := time.Now()
	seq, err := s.validator.WriteKeyIndex(ctx, minEvents)
	if err != nil {
		s.log.Warn("key index not written", "err", err)
		return
	}
	s.log.Debug("key index", "event", seq, "ms", time.Since(t0).Milliseconds())
}

// Shutdown drains HTTP, stops the projector and the periodic work, writes
// the key index, drains NATS and stops the embedded server, in that order.
func (s *Service) Shutdown(ctx context.Context) error {
	var err error
	s.closeOnce.Do(func() {
		if s.api != nil {
			// Requests still running after the grace period (a command
			// waiting out a bus outage) are cut: worth a warning, not a
			// failed exit.
			if herr := s.api.App().ShutdownWithTimeout(10 * time.Second); errors.Is(herr, context.DeadlineExceeded) {
				s.log.Warn("shutdown: requests still running after 10 s were cut")
			} else {
				err = herr
			}
		}
		if s.stopBg != nil {
			s.stopBg()
			s.bg.Wait()
		}
		if s.cmds != nil {
			s.cmds.Wait() // snapshots still being stored
		}
		if s.validator != nil {
			s.writeKeyIndex(ctx, 1)
			s.validator.Close()
		}
		for _, sub := range []*nats.Subscription{s.trackSub, s.nodesSub} {
			if sub != nil {
				_ = sub.Unsubscribe()
			}
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
