package e2e

import (
	"os/exec"
	"strings"
	"testing"
)

// The command lines explain themselves: versions from the build info,
// every audit flag in its --help, and environment variables that name
// their command, so one variable never sets two commands.
func TestCommandLine(t *testing.T) {
	code, out, _ := runTelkeys(t, "--version")
	if code != 0 || !strings.HasPrefix(out, "telkeys ") || !strings.Contains(out, " go1.") {
		t.Fatalf("telkeys --version: exit %d %q", code, out)
	}
	b, err := exec.Command(bin.telapiNode, "--version").CombinedOutput()
	if err != nil || !strings.HasPrefix(string(b), "telapi-node ") || !strings.Contains(string(b), " go1.") {
		t.Fatalf("telapi-node --version: %v %q", err, b)
	}
	code, _, help := runTelkeys(t, "audit", "--help")
	for _, want := range []string{"--events-public-key", "--nats-creds", "--team", "[TELKEYS_AUDIT_TEAM]", "telkeys audit verify"} {
		if code != 0 || !strings.Contains(help, want) {
			t.Fatalf("audit --help: exit %d, no %q in:\n%s", code, want, help)
		}
	}
	_, _, help = runTelkeys(t, "token", "--help")
	if !strings.Contains(help, "[TELKEYS_TOKEN_TEAM]") {
		t.Fatalf("token --help names no TELKEYS_TOKEN_TEAM:\n%s", help)
	}
	// TELKEYS_TEAM is nobody's: a member token without --team fails even
	// when it is set.
	cmd := exec.Command(bin.telkeys, "token", "--auth-secret", testSecret, "--role", "member")
	cmd.Env = append(cmd.Environ(), "TELKEYS_TEAM=acme", "TELKEYS_AUDIT_TEAM=acme")
	if b, err := cmd.CombinedOutput(); err == nil {
		t.Fatalf("token --role member took its team from another command's variable: %s", b)
	}
	cmd = exec.Command(bin.telkeys, "token", "--auth-secret", testSecret, "--role", "member")
	cmd.Env = append(cmd.Environ(), "TELKEYS_TOKEN_TEAM=acme")
	if b, err := cmd.Output(); err != nil || strings.Count(string(b), ".") != 2 {
		t.Fatalf("token with TELKEYS_TOKEN_TEAM: %v %q", err, b)
	}
}
