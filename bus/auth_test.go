package bus_test

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/telapi/telkeys/bus"
	"github.com/telapi/telkeys/bus/bustest"
)

// TestRoles proves every row of the permission table on the embedded
// server, each allowed action and each refusal.
func TestRoles(t *testing.T) {
	ns := bustest.NewServer(t)
	bustest.CheckRoles(t, ns.ClientURL(), ns.Authority, 1)
}

func TestAuthorityFiles(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "auth")
	if _, err := bus.LoadAuthority(dir, false); err == nil {
		t.Fatal("loaded an authority that does not exist")
	}
	a, err := bus.LoadAuthority(dir, true)
	if err != nil {
		t.Fatal(err)
	}
	if fi, err := os.Stat(dir); err != nil || fi.Mode().Perm() != 0o700 {
		t.Fatalf("authority dir: %v %v", fi.Mode(), err)
	}
	seeds, _ := filepath.Glob(filepath.Join(dir, "*.nk"))
	for _, f := range seeds {
		if fi, _ := os.Stat(f); fi.Mode().Perm() != 0o600 {
			t.Errorf("%s has mode %v", f, fi.Mode().Perm())
		}
	}
	if len(seeds) != 4 {
		t.Fatalf("seeds %v", seeds)
	}
	again, err := bus.LoadAuthority(dir, true)
	if err != nil || again.AccountID() != a.AccountID() {
		t.Fatalf("a second load made another authority: %v", err)
	}
}

// TestBadCredentials: a missing, unreadable, malformed, expired or
// foreign credentials file fails at once with the file and the reason.
func TestBadCredentials(t *testing.T) {
	ns := bustest.NewServer(t)
	dir := t.TempDir()
	write := func(name string, data []byte) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, data, 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	expired, err := ns.Authority.Credentials(bus.RoleNode, "old", time.Nanosecond)
	if err != nil {
		t.Fatal(err)
	}
	other, err := bus.LoadAuthority(filepath.Join(dir, "other"), true)
	if err != nil {
		t.Fatal(err)
	}
	foreign, _ := other.Credentials(bus.RoleService, "stranger", 0)
	unreadable := write("unreadable.creds", []byte("x"))
	if err := os.Chmod(unreadable, 0); err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		name, path, reason string
	}{
		{"missing", filepath.Join(dir, "none.creds"), "no such file"},
		{"malformed", write("garbage.creds", []byte("not credentials")), "JWT"},
		{"expired", write("expired.creds", expired), "expired at"},
		{"signed by another authority", write("foreign.creds", foreign), "Authorization Violation"},
	} {
		t.Run(c.name, func(t *testing.T) {
			start := time.Now()
			nc, err := bus.Dial(bus.ClientConfig{URLs: ns.ClientURL(), Creds: c.path})
			if err == nil {
				nc.Close()
				t.Fatal("connected")
			}
			if !strings.Contains(err.Error(), c.reason) || !strings.Contains(err.Error(), filepath.Base(c.path)) {
				t.Fatalf("error %q does not name the file and %q", err, c.reason)
			}
			if time.Since(start) > 5*time.Second {
				t.Fatalf("took %v to fail", time.Since(start))
			}
		})
	}
	if os.Geteuid() != 0 { // root reads any file
		if _, err := bus.Dial(bus.ClientConfig{URLs: ns.ClientURL(), Creds: unreadable}); !errors.Is(err, bus.ErrCredentials) ||
			!strings.Contains(err.Error(), "permission denied") {
			t.Fatalf("unreadable: %v", err)
		}
	}
}

// TestEmbeddedListener: off loopback the embedded server needs TLS (or an
// explicit plaintext opt-in); with TLS, clients that trust its CA connect
// and plaintext clients are refused.
func TestEmbeddedListener(t *testing.T) {
	a, err := bus.LoadAuthority(t.TempDir(), true)
	if err != nil {
		t.Fatal(err)
	}
	open := bus.EmbeddedConfig{DataDir: t.TempDir(), Addr: "0.0.0.0:0", Authority: a}
	if err := open.Validate(); err == nil || !strings.Contains(err.Error(), "not on loopback") {
		t.Fatalf("a listener on every interface without TLS: %v", err)
	}
	open.AllowPlaintext = true
	if err := open.Validate(); err != nil {
		t.Fatalf("with --nats-allow-plaintext: %v", err)
	}
	if err := (bus.EmbeddedConfig{DataDir: t.TempDir(), Addr: "127.0.0.1:0"}).Validate(); err == nil {
		t.Fatal("an embedded server without an authority")
	}

	cert, key, ca := bustest.SelfSigned(t)
	ns, err := bus.StartEmbedded(bus.EmbeddedConfig{DataDir: t.TempDir(), Addr: "127.0.0.1:0", Authority: a, TLSCert: cert, TLSKey: key})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ns.Shutdown(); ns.WaitForShutdown() })
	creds := bustest.Creds(t, a, bus.RoleAuditor)
	nc, err := bus.Dial(bus.ClientConfig{URLs: ns.ClientURL(), Creds: creds, CA: ca})
	if err != nil {
		t.Fatalf("TLS client: %v", err)
	}
	if !nc.TLSRequired() {
		t.Error("the connection is not TLS")
	}
	nc.Close()
	if nc, err := bus.Dial(bus.ClientConfig{URLs: ns.ClientURL(), Creds: creds,
		Options: []nats.Option{nats.MaxReconnects(0)}}); err == nil {
		nc.Close()
		t.Fatal("a client that does not trust the server's CA connected")
	}
}

// TestAdoptsAnUnauthenticatedStore: a data dir written by a telkeys
// without authentication keeps its history.
func TestAdoptsAnUnauthenticatedStore(t *testing.T) {
	dir := t.TempDir()
	old := filepath.Join(dir, "jetstream", "jetstream", "$G", "streams", "TELKEYS_EVENTS")
	if err := os.MkdirAll(old, 0o700); err != nil {
		t.Fatal(err)
	}
	a, err := bus.LoadAuthority(bus.AuthDir(dir), true)
	if err != nil {
		t.Fatal(err)
	}
	ns, err := bus.StartEmbedded(bus.EmbeddedConfig{DataDir: dir, Addr: "127.0.0.1:0", Authority: a})
	if err != nil {
		t.Fatal(err)
	}
	ns.Shutdown()
	ns.WaitForShutdown()
	if _, err := os.Stat(filepath.Join(dir, "jetstream", "jetstream", a.AccountID(), "streams", "TELKEYS_EVENTS")); err != nil {
		t.Fatalf("the old store was not moved to the telkeys account: %v", err)
	}
}
