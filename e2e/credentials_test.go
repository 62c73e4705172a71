package e2e

// The locked bus as its users meet it: telkeys serve refuses anonymous NATS
// clients, "telkeys credentials" writes what each role needs, and
// telapi-node and "telkeys audit" work with their credentials and stop
// cleanly, with one line naming the file and the reason, without them.

import (
	"bytes"
	"context"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/telapi/telkeys/bus"
)

// runNode runs telapi-node until it exits (or 20 s) and returns its exit
// code and stderr.
func runNode(t *testing.T, args ...string) (int, string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, bin.telapiNode, append([]string{"--http-addr", "127.0.0.1:0"}, args...)...)
	out, _ := cmd.CombinedOutput()
	if ctx.Err() != nil {
		t.Fatalf("telapi-node %v did not exit within 20s (it must not hang):\n%s", args, out)
	}
	return cmd.ProcessState.ExitCode(), string(out)
}

func TestCredentials(t *testing.T) {
	dir := t.TempDir()
	c := startTelkeysProcess(t, dir)
	s := serviceAt(t, c.base)
	s.enableTeam("acme", 10)

	if nc, err := nats.Connect(c.natsURL, nats.MaxReconnects(0)); err == nil {
		nc.Close()
		t.Fatal("the embedded NATS of telkeys serve accepted an anonymous client")
	}
	seeds, _ := filepath.Glob(filepath.Join(dir, "nats-auth", "*.nk"))
	if len(seeds) != 4 {
		t.Fatalf("telkeys serve kept %d seeds in its data dir, want operator, telkeys, readers and system accounts", len(seeds))
	}
	for _, f := range seeds {
		if fi, err := os.Stat(f); err != nil || fi.Mode().Perm() != 0o600 {
			t.Errorf("%s: mode %v, %v", f, fi.Mode().Perm(), err)
		}
	}

	write := func(t *testing.T, dataDir, role string, extra ...string) string {
		t.Helper()
		out := filepath.Join(t.TempDir(), role+".creds")
		args := append([]string{"credentials", "--data-dir", dataDir, "--role", role, "--out", out}, extra...)
		if code, _, stderr := runTelkeys(t, args...); code != 0 {
			t.Fatalf("telkeys credentials --role %s: exit %d\n%s", role, code, stderr)
		}
		if fi, err := os.Stat(out); err != nil || fi.Mode().Perm() != 0o600 {
			t.Fatalf("%s: %v", out, err)
		}
		return out
	}

	t.Run("a node with node credentials serves", func(t *testing.T) {
		p := startNodeProcess(t, "with-creds", "--nats-url", c.natsURL, "--nats-creds", write(t, dir, "node"),
			"--events-public-key", eventsKeyFile(t, dir),
			"--http-addr", "127.0.0.1:0")
		k := s.createKey("acme", "k")
		n := newNodeAPI(t, "with-creds", p.waitListening(t, 30*time.Second))
		key := k["key"].(string)
		pollNode(t, 10*time.Second, "the new key on the node", func() (response, error) { return n.apps(key) }, "200")
	})
	t.Run("an auditor verifies with auditor credentials", func(t *testing.T) {
		code, out, stderr := runTelkeys(t, "audit", "verify", "--nats-url", c.natsURL, "--nats-creds", write(t, dir, "auditor"),
			"--events-public-key", eventsKeyFile(t, dir))
		if code != 0 || !strings.Contains(out, "intact") {
			t.Fatalf("exit %d: %s%s", code, out, stderr)
		}
	})

	other := t.TempDir() // another authority, unknown to this server
	if code, _, stderr := runTelkeys(t, "credentials", "--data-dir", other, "--role", "node", "--out", filepath.Join(other, "x.creds")); code != 1 ||
		!strings.Contains(stderr, "no such file") {
		t.Fatalf("credentials from a data dir without an authority: exit %d %s", code, stderr)
	}
	if code, _, stderr := runTelkeys(t, "credentials", "--data-dir", other, "--nats-config", filepath.Join(other, "auth.conf")); code != 0 {
		t.Fatalf("making another authority: exit %d %s", code, stderr)
	}
	for _, bad := range []struct {
		name, reason string
		creds        func(t *testing.T) []string
	}{
		{"no credentials", "none given", func(*testing.T) []string { return nil }},
		{"a missing file", "no such file", func(t *testing.T) []string {
			return []string{"--nats-creds", filepath.Join(t.TempDir(), "none.creds")}
		}},
		{"a file that is not credentials", "JWT", func(t *testing.T) []string {
			f := filepath.Join(t.TempDir(), "junk.creds")
			if err := os.WriteFile(f, []byte("junk"), 0o600); err != nil {
				t.Fatal(err)
			}
			return []string{"--nats-creds", f}
		}},
		{"expired credentials", "expired at", func(t *testing.T) []string {
			return []string{"--nats-creds", write(t, dir, "node", "--ttl", "1ns")}
		}},
		{"credentials of another authority", "Authorization Violation", func(t *testing.T) []string {
			return []string{"--nats-creds", write(t, other, "node")}
		}},
	} {
		t.Run("a node with "+bad.name+" stops", func(t *testing.T) {
			creds := bad.creds(t)
			code, out := runNode(t, append([]string{"--nats-url", c.natsURL, "--events-public-key", eventsKeyFile(t, dir)}, creds...)...)
			lines := strings.Split(strings.TrimSpace(out), "\n")
			if code != 1 || len(lines) != 1 || !strings.Contains(out, bad.reason) || (len(creds) == 2 && !strings.Contains(out, creds[1])) {
				t.Fatalf("exit %d, want 1 and one line naming the file and %q:\n%s", code, bad.reason, out)
			}
		})
		t.Run("an auditor with "+bad.name+" stops", func(t *testing.T) {
			code, out, stderr := runTelkeys(t, append([]string{"audit", "verify", "--nats-url", c.natsURL,
				"--events-public-key", eventsKeyFile(t, dir)}, bad.creds(t)...)...)
			if code != 1 || out != "" || !strings.Contains(stderr, bad.reason) || strings.Count(strings.TrimSpace(stderr), "\n") != 0 {
				t.Fatalf("exit %d, stdout %q, stderr %q", code, out, stderr)
			}
		})
	}
	if code, _, stderr := runTelkeys(t, "credentials", "--data-dir", dir, "--role", "admin", "--out", filepath.Join(t.TempDir(), "x")); code != 2 ||
		!strings.Contains(stderr, "unknown role") {
		t.Fatalf("an unknown role: exit %d %s", code, stderr)
	}
}

// TestServeStartFailures: whatever stops telkeys serve from starting on an
// external NATS ends it with exit status 1 and one log line naming the
// cause, never a panic or a hang.
func TestServeStartFailures(t *testing.T) {
	dir := t.TempDir()
	c := startTelkeysProcess(t, dir)
	service := natsCreds(t, dir, bus.RoleService)
	signing := filepath.Join(dir, "events-signing.key") // written on first start
	if _, err := os.Stat(signing); err != nil {
		matches, _ := filepath.Glob(filepath.Join(dir, "*.pem"))
		t.Fatalf("no signing key at %s (%v); pem files: %v", signing, err, matches)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	closed := "nats://" + ln.Addr().String()
	ln.Close()
	for _, bad := range []struct {
		name, reason string
		args         []string
	}{
		{"an unreachable cluster", "no servers available", []string{"--nats-url", closed, "--nats-creds", service}},
		{"node credentials", "service", []string{"--nats-url", c.natsURL, "--nats-creds", natsCreds(t, dir, bus.RoleNode)}},
		{"a stream config the server cannot apply (R3 on one server)", "replicas", []string{"--nats-url", c.natsURL, "--nats-creds", service, "--replicas", "3"}},
	} {
		t.Run(bad.name, func(t *testing.T) {
			args := append([]string{"serve", "--data-dir", t.TempDir(), "--http-addr", "127.0.0.1:0", "--auth-secret", testSecret,
				"--signing-key", signing, "--log-format", "json"}, bad.args...)
			cmd := exec.Command(bin.telkeys, args...)
			var out bytes.Buffer
			cmd.Stdout, cmd.Stderr = &out, &out
			if err := cmd.Start(); err != nil {
				t.Fatal(err)
			}
			done := make(chan error, 1)
			go func() { done <- cmd.Wait() }()
			select {
			case <-done:
			case <-time.After(60 * time.Second):
				_ = cmd.Process.Kill()
				t.Fatalf("telkeys serve did not exit within 60 s:\n%s", out.String())
			}
			lines := strings.Split(strings.TrimSpace(out.String()), "\n")
			if code := cmd.ProcessState.ExitCode(); code != 1 || len(lines) != 1 || !strings.Contains(strings.ToLower(out.String()), bad.reason) {
				t.Fatalf("exit %d, want 1 and one line saying %q:\n%s", code, bad.reason, out.String())
			}
		})
	}
}
