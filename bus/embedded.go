package bus

import (
	"errors"
	"fmt"
	"log/slog"
	"net"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
)

// EmbeddedConfig configures the in-process nats-server.
type EmbeddedConfig struct {
	// DataDir holds the JetStream file store (in DataDir/jetstream).
	DataDir string
	// Addr is the client listener, host:port. Port 0 picks a free port.
	Addr string
	// Logger receives the server's log lines.
	Logger *slog.Logger
}

// Validate reports every problem at once.
func (c EmbeddedConfig) Validate() error {
	var errs []error
	if c.DataDir == "" {
		errs = append(errs, errors.New("data dir is required"))
	}
	if _, _, err := splitAddr(c.Addr); err != nil {
		errs = append(errs, fmt.Errorf("nats addr %q: %w", c.Addr, err))
	}
	return errors.Join(errs...)
}

// StartEmbedded starts a single nats-server with JetStream on file storage
// and waits until it accepts connections.
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
	opts := &server.Options{
		ServerName: "telkeys",
		Host:       host,
		Port:       port,
		JetStream:  true,
		StoreDir:   filepath.Join(cfg.DataDir, "jetstream"),
		SyncAlways: true,
		NoSigs:     true, // telkeys handles signals and shuts the server down itself
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

// ConnectEmbedded opens an in-process connection to ns, bypassing TCP.
func ConnectEmbedded(ns *server.Server, name string) (*nats.Conn, error) {
	return nats.Connect("", nats.InProcessServer(ns), nats.Name(name), nats.MaxReconnects(-1))
}

// Connect dials an external server or cluster; urls is comma-separated.
// It reconnects forever: telkeys is useless without NATS, and readiness
// reports the outage.
func Connect(urls, name string, log *slog.Logger) (*nats.Conn, error) {
	return nats.Connect(urls,
		nats.Name(name),
		nats.MaxReconnects(-1),
		nats.ReconnectWait(250*time.Millisecond),
		nats.DisconnectErrHandler(func(_ *nats.Conn, err error) {
			log.Warn("nats disconnected", "err", err)
		}),
		nats.ReconnectHandler(func(c *nats.Conn) {
			log.Info("nats reconnected", "url", c.ConnectedUrlRedacted())
		}),
	)
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
