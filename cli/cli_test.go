package cli

import (
	"bytes"
	"errors"
	"flag"
	"strings"
	"testing"
)

func TestParse(t *testing.T) {
	newFS := func() (*flag.FlagSet, *string, *int) {
		fs := flag.NewFlagSet("x", flag.ContinueOnError)
		return fs, fs.String("data-dir", "./data", "where"), fs.Int("replicas", 1, "how many")
	}
	t.Run("the command line wins over the environment", func(t *testing.T) {
		t.Setenv("TK_DATA_DIR", "/from/env")
		t.Setenv("TK_REPLICAS", "3")
		fs, dir, n := newFS()
		if err := Parse(fs, []string{"--data-dir", "/from/flag"}, &bytes.Buffer{}, "TK", ""); err != nil {
			t.Fatal(err)
		}
		if *dir != "/from/flag" || *n != 3 {
			t.Fatalf("data-dir %q, replicas %d", *dir, *n)
		}
	})
	t.Run("a bad environment value is a usage error", func(t *testing.T) {
		t.Setenv("TK_REPLICAS", "three")
		fs, _, _ := newFS()
		var stderr bytes.Buffer
		err := Parse(fs, nil, &stderr, "TK", "")
		if !errors.Is(err, ErrUsage) || ExitCode(err, &stderr, "x") != 2 || !strings.Contains(stderr.String(), "TK_REPLICAS") {
			t.Fatalf("err %v, stderr %q", err, stderr.String())
		}
	})
	t.Run("help lists every flag with its variable", func(t *testing.T) {
		fs, _, _ := newFS()
		var stderr bytes.Buffer
		err := Parse(fs, []string{"--help"}, &stderr, "TK", "Usage: x\n")
		if ExitCode(err, &stderr, "x") != 0 || !strings.Contains(stderr.String(), "--data-dir  [TK_DATA_DIR]") {
			t.Fatalf("err %v, stderr %q", err, stderr.String())
		}
	})
	t.Run("positional arguments are refused", func(t *testing.T) {
		fs, _, _ := newFS()
		var stderr bytes.Buffer
		if err := Parse(fs, []string{"extra"}, &stderr, "TK", ""); ExitCode(err, &stderr, "x") != 2 {
			t.Fatalf("err %v", err)
		}
	})
}
