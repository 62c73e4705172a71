// Package bustest starts real embedded JetStream servers for tests: a
// random port, a store in t.TempDir(), fsync always, authentication on,
// shut down by Cleanup.
package bustest

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/telapi/telkeys/bus"
	"github.com/telapi/telkeys/events"
)

// Server is an embedded server that, like telkeys' own, trusts only its
// authority: every client connects with credentials of a role.
type Server struct {
	*server.Server
	Authority *bus.Authority
	dir       string
}

// NewServer starts an embedded server listening on a random loopback
// port, with a new authority.
func NewServer(t testing.TB) *Server {
	t.Helper()
	dir := t.TempDir()
	a, err := bus.LoadAuthority(bus.AuthDir(dir), true)
	if err != nil {
		t.Fatal(err)
	}
	ns, err := bus.StartEmbedded(bus.EmbeddedConfig{DataDir: dir, Addr: "127.0.0.1:0", Authority: a})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ns.Shutdown(); ns.WaitForShutdown() })
	return &Server{Server: ns, Authority: a, dir: dir}
}

// Creds writes credentials of role, signed by a, and returns their file.
func Creds(t testing.TB, a *bus.Authority, role bus.Role) string {
	t.Helper()
	data, err := a.Credentials(role, "test-"+string(role), 0)
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(t.TempDir(), string(role)+".creds")
	if err := bus.WriteFile(path, data); err != nil {
		t.Fatal(err)
	}
	return path
}

// Connect opens a TCP connection to s as the service, closed by Cleanup.
func Connect(t testing.TB, s *Server) (*nats.Conn, jetstream.JetStream) {
	t.Helper()
	return ConnectURL(t, s.ClientURL(), Creds(t, s.Authority, bus.RoleService))
}

// ConnectAs opens a TCP connection to s as role.
func (s *Server) ConnectAs(t testing.TB, role bus.Role) (*nats.Conn, jetstream.JetStream) {
	t.Helper()
	return ConnectURL(t, s.ClientURL(), Creds(t, s.Authority, role))
}

// ConnectURL opens a connection to a server by URL with the credentials
// in creds, closed by Cleanup.
func ConnectURL(t testing.TB, url, creds string) (*nats.Conn, jetstream.JetStream) {
	t.Helper()
	nc, err := bus.Dial(bus.ClientConfig{URLs: url, Creds: creds,
		Options: []nats.Option{nats.ReconnectWait(50 * time.Millisecond)}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	js, err := bus.JetStream(nc)
	if err != nil {
		t.Fatal(err)
	}
	return nc, js
}

// Setup starts a server, connects as the service and creates every
// stream and bucket.
func Setup(t testing.TB) (*Server, *nats.Conn, *bus.Handles) {
	t.Helper()
	ns := NewServer(t)
	nc, js := Connect(t, ns)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	h, err := bus.Setup(ctx, js, 1)
	if err != nil {
		t.Fatal(err)
	}
	return ns, nc, h
}

// LogBuffer collects log output from many goroutines: a slog handler's
// writer in tests that read what a component logged.
type LogBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *LogBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *LogBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// Eventually polls cond until it holds or the deadline passes.
func Eventually(t testing.TB, within time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(within)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("not within %v: %s", within, what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// Signer returns a new event-signing key and the keys that trust it.
func Signer(t testing.TB) (*events.Signer, *events.Keys) {
	t.Helper()
	_, key, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	s := events.NewSigner(key)
	return s, events.NewKeys(s.PublicKey())
}
