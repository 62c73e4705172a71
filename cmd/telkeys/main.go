// Command telkeys is the API key service of TelAPI.
//
//	telkeys serve   run the service (embedded NATS by default)
//	telkeys token   mint a bearer token for local use and tests
//	telkeys audit   replay, verify and reconstruct the history
//	telkeys bench   measure the service, each figure next to its floor
//
// Every flag can also be set with a TELKEYS_* environment variable; a flag
// on the command line wins.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"strings"
	"syscall"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	os.Exit(run(ctx, os.Args[1:], os.Stdout, os.Stderr))
}

const usage = `telkeys: the API key service of TelAPI.

Usage:
  telkeys serve [flags]   run the service; with no flags it starts an embedded
                          NATS server with its data in ./data and the HTTP API on :8080
  telkeys token [flags]   print a bearer token signed with the service's secret
  telkeys audit events|verify|state [flags]
                          replay, verify and reconstruct the event history (read only)
  telkeys bench [--quick] [--json] [--only a,b]
                          measure telkeys on its own embedded NATS: each figure
                          next to a floor measured in the same run

Run "telkeys <command> --help" for the flags of a command. Every flag can also
be set with an environment variable: --data-dir is TELKEYS_DATA_DIR, and so on.
`

// run is main without the process: it returns the exit code.
func run(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 {
		fmt.Fprint(stderr, usage)
		return 2
	}
	var err error
	switch args[0] {
	case "serve":
		err = serveCmd(ctx, args[1:], stderr)
	case "token":
		err = tokenCmd(args[1:], stdout, stderr)
	case "audit":
		err = auditCmd(ctx, args[1:], stdout, stderr)
	case "bench":
		err = benchCmd(ctx, args[1:], stdout, stderr)
	case "bench-node": // telkeys bench runs itself this way; see bench --help
		err = benchNodeCmd(ctx, args[1:], os.Stdin, stdout, stderr)
	case "-h", "--help", "help":
		fmt.Fprint(stdout, usage)
		return 0
	default:
		fmt.Fprintf(stderr, "telkeys: unknown command %q\n\n%s", args[0], usage)
		return 2
	}
	switch {
	case err == nil:
		return 0
	case errors.Is(err, flag.ErrHelp):
		return 0
	case errors.Is(err, errUsage):
		return 2
	case errors.Is(err, errBroken):
		return 1
	default:
		fmt.Fprintf(stderr, "telkeys %s: %v\n", args[0], err)
		return 1
	}
}

var errUsage = errors.New("usage")

// parseFlags parses args, then fills every flag not given on the command
// line from its TELKEYS_* environment variable.
func parseFlags(fs *flag.FlagSet, args []string, stderr io.Writer, intro string) error {
	fs.SetOutput(stderr)
	fs.Usage = func() {
		fmt.Fprint(stderr, intro, "\nFlags (each also read from the environment variable shown):\n")
		fs.VisitAll(func(f *flag.Flag) {
			def := ""
			if f.DefValue != "" {
				def = fmt.Sprintf(" (default %q)", f.DefValue)
			}
			fmt.Fprintf(stderr, "  --%s  [%s]%s\n      %s\n", f.Name, envName(f.Name), def, f.Usage)
		})
	}
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return err
		}
		return errUsage
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(stderr, "unexpected argument %q\n", fs.Arg(0))
		fs.Usage()
		return errUsage
	}
	set := map[string]bool{}
	fs.Visit(func(f *flag.Flag) { set[f.Name] = true })
	var errs []error
	fs.VisitAll(func(f *flag.Flag) {
		if v, ok := os.LookupEnv(envName(f.Name)); ok && !set[f.Name] {
			if err := fs.Set(f.Name, v); err != nil {
				errs = append(errs, fmt.Errorf("%s: %w", envName(f.Name), err))
			}
		}
	})
	return errors.Join(errs...)
}

func envName(flagName string) string {
	return "TELKEYS_" + strings.ToUpper(strings.ReplaceAll(flagName, "-", "_"))
}

// newLogger returns a structured logger writing to w.
func newLogger(w io.Writer, format, level string) (*slog.Logger, error) {
	var lv slog.Level
	if err := lv.UnmarshalText([]byte(level)); err != nil {
		return nil, fmt.Errorf("log level %q: want debug, info, warn or error", level)
	}
	opts := &slog.HandlerOptions{Level: lv}
	switch format {
	case "json":
		return slog.New(slog.NewJSONHandler(w, opts)), nil
	case "text":
		return slog.New(slog.NewTextHandler(w, opts)), nil
	}
	return nil, fmt.Errorf("log format %q: want json or text", format)
}
