package main

import (
	"bufio"
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

const module = "github.com/telapi/telkeys/"

// deps returns, for each package of this module that pkgs build on, the
// packages it imports (go list -deps: what the binaries contain, not
// their tests).
func deps(t *testing.T, pkgs ...string) map[string][]string {
	t.Helper()
	cmd := exec.Command("go", append([]string{"list", "-deps", "-f", "{{.ImportPath}} {{join .Imports \" \"}}"}, pkgs...)...)
	cmd.Dir = "../.."
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("go list: %v", err)
	}
	m := map[string][]string{}
	for line := range strings.Lines(string(out)) {
		f := strings.Fields(line)
		if len(f) > 0 && strings.HasPrefix(f[0], module) {
			m[strings.TrimPrefix(f[0], module)] = f[1:]
		}
	}
	return m
}

// TestLayout holds the layout that issue #10 set: binaries built from our
// packages import no "testing", TelAPI nodes need only events, bus, apikey
// and keyauth, the fold of a history imports only events, auditors do not
// need the commands, and the mains stay thin.
func TestLayout(t *testing.T) {
	for pkg, imports := range deps(t, "./cmd/...") {
		if slices.Contains(imports, "testing") {
			t.Errorf("%s imports testing, and the binaries with it", pkg)
		}
	}
	only := map[string][]string{
		"keyauth": {"apikey", "bus", "events", "keyauth"},
		"domain":  {"events", "domain"},
		"audit":   {"audit", "bus", "domain", "events"},
	}
	for pkg, allowed := range only {
		for dep := range deps(t, "./"+pkg) {
			if !slices.Contains(allowed, dep) {
				t.Errorf("%s builds on %s; it may build only on %v", pkg, dep, allowed)
			}
		}
	}

	lines := 0
	files, _ := filepath.Glob("../*/*.go")
	for _, f := range files {
		if strings.HasSuffix(f, "_test.go") {
			continue
		}
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		sc := bufio.NewScanner(bytes.NewReader(b))
		for sc.Scan() {
			lines++
		}
	}
	if lines == 0 || lines >= 500 {
		t.Errorf("cmd/ holds %d lines of non-test Go; mains only read flags (< 500)", lines)
	}
}
