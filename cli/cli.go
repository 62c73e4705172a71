// Package cli is how every telkeys command reads its settings and talks to
// its user: flags from the command line, then from the environment
// (PREFIX_FLAG_NAME), --help that lists both, structured logs, progress
// lines on a terminal, and exit codes.
package cli

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"runtime/debug"
	"strings"
	"time"

	"github.com/peterbourgon/ff/v3"
)

// Errors that decide a command's exit code without another message.
var (
	// ErrUsage: the command line is wrong; usage was printed. Exit 2.
	ErrUsage = errors.New("usage")
	// ErrFailed: the command ran and reported a failure itself. Exit 1.
	ErrFailed = errors.New("failed")
)

// Usage marks err as a problem with the command line, such as a setting
// that fails its config's Validate: exit code 2, with err's text.
func Usage(err error) error { return usageError{err} }

type usageError struct{ error }

func (e usageError) Unwrap() error        { return e.error }
func (e usageError) Is(target error) bool { return target == ErrUsage }

// ExitCode maps a command's error to its exit code, and prints errors
// the command has not already explained.
func ExitCode(err error, stderr io.Writer, command string) int {
	switch {
	case err == nil, errors.Is(err, flag.ErrHelp):
		return 0
	case errors.Is(err, ErrUsage):
		if err != ErrUsage { // not yet explained
			fmt.Fprintf(stderr, "%s: %v\n", command, err)
		}
		return 2
	case errors.Is(err, ErrFailed):
		return 1
	}
	fmt.Fprintf(stderr, "%s: %v\n", command, err)
	return 1
}

// Parse parses args into fs, then fills every flag not given on the
// command line from its environment variable, envPrefix + "_" + the flag's
// name in upper case with dashes as underscores (--data-dir is
// TELKEYS_DATA_DIR). --help prints intro and every flag with its variable.
// It refuses positional arguments.
func Parse(fs *flag.FlagSet, args []string, stderr io.Writer, envPrefix, intro string) error {
	fs.SetOutput(stderr)
	fs.Usage = func() {
		fmt.Fprint(stderr, intro, "\nFlags (each also read from the environment variable shown):\n")
		fs.VisitAll(func(f *flag.Flag) {
			def := ""
			if f.DefValue != "" {
				def = fmt.Sprintf(" (default %q)", f.DefValue)
			}
			fmt.Fprintf(stderr, "  --%s  [%s]%s\n      %s\n", f.Name, EnvName(envPrefix, f.Name), def, f.Usage)
		})
	}
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return err
		}
		return ErrUsage // the flag package printed the problem and the usage
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(stderr, "unexpected argument %q\n", fs.Arg(0))
		fs.Usage()
		return ErrUsage
	}
	// The command line is parsed: ff fills in only the flags it left unset.
	if err := ff.Parse(fs, nil, ff.WithEnvVarPrefix(envPrefix)); err != nil {
		return Usage(err)
	}
	return nil
}

// EnvName is the environment variable of a flag.
func EnvName(envPrefix, flagName string) string {
	return envPrefix + "_" + strings.ToUpper(strings.ReplaceAll(flagName, "-", "_"))
}

// Log is the --log-format and --log-level of a command.
type Log struct{ Format, Level string }

// LogFlags adds --log-format and --log-level to fs.
func LogFlags(fs *flag.FlagSet) *Log {
	l := &Log{}
	fs.StringVar(&l.Format, "log-format", "json", "log format: json or text")
	fs.StringVar(&l.Level, "log-level", "info", "log level: debug, info, warn or error")
	return l
}

// NewLogger returns a structured logger writing to w, or a usage error.
func (l Log) NewLogger(w io.Writer) (*slog.Logger, error) {
	log, err := NewLogger(w, l.Format, l.Level)
	if err != nil {
		return nil, Usage(err)
	}
	return log, nil
}

// NewLogger returns a structured logger writing to w in format "json" or
// "text" at level "debug", "info", "warn" or "error".
func NewLogger(w io.Writer, format, level string) (*slog.Logger, error) {
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

// Progress returns a reporter of long work ("replayed 5000 of 10000
// events") that rewrites one line on stderr when it is a terminal and the
// work is long, and does nothing otherwise.
func Progress(stderr io.Writer, what string) func(done, total uint64) {
	f, ok := stderr.(*os.File)
	if !ok {
		return nil
	}
	if fi, err := f.Stat(); err != nil || fi.Mode()&os.ModeCharDevice == 0 {
		return nil
	}
	var next time.Time
	return func(done, total uint64) {
		if total < 10_000 || time.Now().Before(next) && done < total {
			return
		}
		next = time.Now().Add(500 * time.Millisecond)
		fmt.Fprintf(f, "\r%s %d of %d (%.0f%%)   ", what, done, total, 100*float64(done)/float64(total))
		if done >= total {
			fmt.Fprintln(f)
		}
	}
}

// Version describes the running binary from its build info: the module's
// version (a tag, or a pseudo-version naming the commit, "+dirty" when
// built from uncommitted changes), or the commit when the build only knows
// "(devel)", and the Go version.
func Version(name string) string {
	bi, ok := debug.ReadBuildInfo()
	if !ok {
		return name + " (no build info)"
	}
	v := name + " " + bi.Main.Version
	if bi.Main.Version == "(devel)" {
		for _, s := range bi.Settings {
			switch {
			case s.Key == "vcs.revision":
				v += " " + s.Value[:min(12, len(s.Value))]
			case s.Key == "vcs.modified" && s.Value == "true":
				v += "+dirty"
			}
		}
	}
	return v + " " + bi.GoVersion
}
