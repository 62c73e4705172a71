package bus

import (
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/nats-io/jwt/v2"
	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// EmbeddedConfig configures the in-process nats-server.
type EmbeddedConfig struct {
	// DataDir holds the JetStream file store (in DataDir/jetstream).
	DataDir string
	// Addr is the client listener, host:port. Port 0 picks a free port.
	Addr string
	// Authority is whom the server trusts: only clients with credentials
	// it signed may connect. Required: the bus is never open.
	Authority *Authority
	// TLSCert and TLSKey, both or neither, make the listener TLS only.
	TLSCert, TLSKey string
	// AllowPlaintext lets a listener that is not on loopback run without
	// TLS: credentials and events would cross the network in clear.
	AllowPlaintext bool
	// NoFsync acknowledges writes before they reach the disk. Only for a
	// bulk load that is thrown away if the machine fails (telkeys bench).
	NoFsync bool
	// Logger receives the server's log lines.
	Logger *slog.Logger
}

// Validate reports every problem at once.
func (c EmbeddedConfig) Validate() error {
	var errs []error
	if c.DataDir == "" {
		errs = append(errs, errors.New("data dir is required"))
	}
	if c.Authority == nil {
		errs = append(errs, errors.New("an authority is required: the embedded server never accepts anonymous clients"))
	}
	host, _, err := splitAddr(c.Addr)
	if err != nil {
		errs = append(errs, fmt.Errorf("nats addr %q: %w", c.Addr, err))
	}
	if (c.TLSCert == "") != (c.TLSKey == "") {
		errs = append(errs, errors.New("--nats-tls-cert and --nats-tls-key go together"))
	}
	if err == nil && c.TLSCert == "" && !c.AllowPlaintext && !isLoopback(host) {
		errs = append(errs, fmt.Errorf("--nats-addr %q is not on loopback: give --nats-tls-cert and --nats-tls-key, "+
			"or --nats-allow-plaintext to send credentials and events over the network in clear", c.Addr))
	}
	return errors.Join(errs...)
}

func isLoopback(host string) bool {
	if host == "localhost" {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

// StartEmbedded starts a single nats-server with JetStream on file storage
// and waits until it accepts connections. It trusts cfg.Authority only.
//
// Every write is fsynced before it is acknowledged (sync_interval: always):
// with the default 2-minute interval, an OS crash or power loss can lose
// acknowledged events (Jepsen, NATS 2.12.1), and a lost KeyDeleted would
// bring a revoked key back.
func StartEmbedded(cfg EmbeddedConfig) (*server.Server, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	host, port, _ := splitAddr(cfg.Addr)
	if port == 0 {
		port = server.RANDOM_PORT
	}
	auth, err := cfg.Authority.ServerConfig()
	if err != nil {
		return nil, err
	}
	opts := &server.Options{}
	if err := opts.ProcessConfigString(auth); err != nil {
		return nil, fmt.Errorf("bus: embedded server auth: %w", err)
	}
	opts.ServerName = "telkeys"
	opts.Host, opts.Port = host, port
	opts.JetStream = true
	opts.StoreDir = filepath.Join(cfg.DataDir, "jetstream")
	opts.SyncAlways = !cfg.NoFsync
	opts.NoSigs = true // telkeys handles signals and shuts the server down itself
	if cfg.TLSCert != "" {
		opts.TLSConfig, err = server.GenTLSConfig(&server.TLSConfigOpts{CertFile: cfg.TLSCert, KeyFile: cfg.TLSKey})
		if err != nil {
			return nil, fmt.Errorf("bus: embedded server TLS: %w", err)
		}
		opts.TLS = true
	}
	if err := adoptAnonymousStore(opts.StoreDir, cfg.Authority.AccountID()); err != nil {
		return nil, err
	}
	ns, err := server.NewServer(opts)
	if err != nil {
		return nil, fmt.Errorf("bus: embedded server: %w", err)
	}
	if cfg.Logger != nil {
		ns.SetLoggerV2(serverLogger{cfg.Logger.With("component", "nats-server")}, false, false, false)
	}
	go ns.Start()
	if !ns.ReadyForConnections(30 * time.Second) {
		ns.Shutdown()
		return nil, errors.New("bus: embedded server did not become ready in 30s")
	}
	return ns, nil
}

// adoptAnonymousStore moves the streams that a telkeys without
// authentication stored for the anonymous global account ($G) to the
// telkeys account, so that an existing data dir keeps its history.
func adoptAnonymousStore(storeDir, account string) error {
	old, now := filepath.Join(storeDir, "jetstream", "$G"), filepath.Join(storeDir, "jetstream", account)
	if _, err := os.Stat(old); err != nil {
		return nil
	}
	if _, err := os.Stat(now); err == nil {
		return nil
	}
	if err := os.Rename(old, now); err != nil {
		return fmt.Errorf("bus: moving the unauthenticated store to the telkeys account: %w", err)
	}
	return nil
}

// ClientConfig is how a telkeys process connects to NATS.
type ClientConfig struct {
	// URLs are the servers, comma-separated; or InProcess, an embedded
	// server reached without TCP.
	URLs      string
	InProcess *server.Server
	// Creds is a .creds file from "telkeys credentials"; CredsData the
	// same bytes, for credentials minted in memory. The role they carry
	// decides where replies arrive (InboxPrefix).
	Creds     string
	CredsData []byte
	// CA is the file of the CA that signed the servers' TLS certificates;
	// empty: the system's roots, for tls:// URLs.
	CA   string
	Name string
	Log  *slog.Logger
	// Want, if set, is the role the credentials must carry: with another
	// role's, a client would only meet permission errors later.
	Want Role
	// Options are added last, e.g. faster pings for a node.
	Options []nats.Option
}

// Dial connects with credentials. It fails at once, saying which file and
// why, when the credentials are missing, unreadable, malformed or expired,
// or when the server refuses them. Once connected it reconnects forever:
// telkeys is useless without NATS, and readiness reports the outage.
func Dial(c ClientConfig) (*nats.Conn, error) {
	if c.Log == nil {
		c.Log = slog.New(slog.DiscardHandler)
	}
	data, source := c.CredsData, "credentials"
	if data == nil {
		if c.Creds == "" {
			return nil, fmt.Errorf("%w: none given (--nats-creds; \"telkeys credentials\" writes them)", ErrCredentials)
		}
		var err error
		if data, err = os.ReadFile(c.Creds); err != nil {
			return nil, fmt.Errorf("%w: %s: %v", ErrCredentials, c.Creds, errors.Unwrap(err))
		}
		source = c.Creds
	}
	role, _, err := checkCredentials(data, source)
	if err != nil {
		return nil, err
	}
	if c.Want != "" && role != c.Want {
		return nil, fmt.Errorf("%w: %s holds %s credentials; %s credentials are needed (telkeys credentials --role %s)", ErrCredentials, source, role, c.Want, c.Want)
	}
	token, _ := jwt.ParseDecoratedJWT(data)
	kp, _ := jwt.ParseDecoratedUserNKey(data)
	seed, _ := kp.Seed()
	opts := []nats.Option{
		nats.Name(c.Name),
		nats.UserJWTAndSeed(token, string(seed)),
		nats.CustomInboxPrefix(InboxPrefix(role)),
		nats.MaxReconnects(-1),
		nats.ReconnectWait(250 * time.Millisecond),
		nats.PingInterval(PingInterval),
		nats.MaxPingsOutstanding(MaxPingsOut),
		nats.DisconnectErrHandler(func(_ *nats.Conn, err error) {
			if err != nil {
				c.Log.Warn("nats disconnected", "err", err)
			}
		}),
		nats.ReconnectHandler(func(nc *nats.Conn) {
			c.Log.Info("nats reconnected", "url", nc.ConnectedUrlRedacted())
		}),
		nats.ErrorHandler(func(_ *nats.Conn, _ *nats.Subscription, err error) {
			c.Log.Warn("nats", "err", err) // permission violations, slow consumers
		}),
	}
	if c.CA != "" {
		opts = append(opts, nats.RootCAs(c.CA))
	}
	if c.InProcess != nil {
		opts = append(opts, nats.InProcessServer(c.InProcess))
	}
	nc, err := nats.Connect(c.URLs, append(opts, c.Options...)...)
	if err != nil {
		return nil, fmt.Errorf("connect to NATS as %s (%s): %w", role, source, err)
	}
	return nc, nil
}

func splitAddr(addr string) (string, int, error) {
	host, p, err := net.SplitHostPort(addr)
	if err != nil {
		return "", 0, err
	}
	port, err := strconv.Atoi(p)
	if err != nil || port < 0 || port > 65535 {
		return "", 0, fmt.Errorf("bad port %q", p)
	}
	return host, port, nil
}

// serverLogger adapts slog to nats-server's Logger.
type serverLogger struct{ l *slog.Logger }

func (s serverLogger) Noticef(f string, v ...any) { s.l.Info(msg(f, v)) }
func (s serverLogger) Warnf(f string, v ...any)   { s.l.Warn(msg(f, v)) }
func (s serverLogger) Fatalf(f string, v ...any)  { s.l.Error(msg(f, v)) }
func (s serverLogger) Errorf(f string, v ...any)  { s.l.Error(msg(f, v)) }
func (s serverLogger) Debugf(f string, v ...any)  { s.l.Debug(msg(f, v)) }
func (s serverLogger) Tracef(f string, v ...any)  {}

func msg(f string, v []any) string { return strings.TrimSpace(fmt.Sprintf(f, v...)) }

// JetStream returns the JetStream API of the telkeys account as nc reaches
// it: directly for the service, through their account's imports for
// nodes and auditors (ReadersAPIPrefix), told apart by nc's inbox prefix,
// which Dial sets from the credentials' role.
func JetStream(nc *nats.Conn, opts ...jetstream.JetStreamOpt) (jetstream.JetStream, error) {
	if p := nc.Opts.InboxPrefix; p == InboxPrefix(RoleNode) || p == InboxPrefix(RoleAuditor) {
		return jetstream.NewWithAPIPrefix(nc, ReadersAPIPrefix, opts...)
	}
	return jetstream.New(nc, opts...)
}
