// Package bench is telkeys bench: it measures what users of telkeys care
// about, each figure next to a floor measured in the same run on the same
// machine.
package bench

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"runtime"
	"runtime/pprof"
	"slices"
	"strings"
	"syscall"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/telapi/telkeys/auth"
	"github.com/telapi/telkeys/bus"
	"github.com/telapi/telkeys/cli"
	"github.com/telapi/telkeys/commands"
	"github.com/telapi/telkeys/events"
	"github.com/telapi/telkeys/service"
)

// DefaultScenarios are the scenarios a plain telkeys bench runs, in the
// order of the report.
func DefaultScenarios() []string {
	return []string{"verify-local", "verify-http", "node-gate", "revoke", "quota", "create", "replay", "startup"}
}

// Scenarios are every scenario of telkeys bench: the default ones, then
// those that run only when --only names them (scale takes its time).
func Scenarios() []string { return append(DefaultScenarios(), "scale") }

// Config is every setting of telkeys bench.
type Config struct {
	Quick   bool
	JSON    bool
	Only    string
	NATSURL string
	// NATSCreds are service credentials for NATSURL.
	NATSCreds string
	// SigningKey is the deployment's event-signing key, for NATSURL.
	SigningKey string
	Keys       int
	Duration   time.Duration
	Deletes    int
	Creates    int
	// CPUProfile, if set, is where the bench writes a CPU profile of its
	// own process (telkeys, its embedded NATS and the load generators).
	CPUProfile string
	// LogLevel is the level of the service's log, on stderr.
	LogLevel string
}

// Validate reports every problem at once.
func (c Config) Validate() error {
	var errs []error
	for _, s := range c.only() {
		if !slices.Contains(Scenarios(), s) {
			errs = append(errs, fmt.Errorf("--only: unknown scenario %q; want some of %s", s, strings.Join(Scenarios(), ",")))
		}
	}
	if c.Keys < 1000 || c.Keys > 10_000_000 {
		errs = append(errs, errors.New("--keys must be between 1000 and 10000000"))
	}
	var lv slog.Level
	if err := lv.UnmarshalText([]byte(c.LogLevel)); err != nil {
		errs = append(errs, errors.New("--log-level: want debug, info, warn or error"))
	}
	if c.Duration < 100*time.Millisecond || c.Duration > 10*time.Minute {
		errs = append(errs, errors.New("--duration must be between 100ms and 10m"))
	}
	if c.Deletes < 1 || c.Deletes > 1000 {
		errs = append(errs, errors.New("--deletes must be between 1 and 1000 (they come from one team)"))
	}
	if c.Creates < benchCreateClients || c.Creates > benchCreateClients*1000 {
		errs = append(errs, fmt.Errorf("--creates must be between %d and %d", benchCreateClients, benchCreateClients*1000))
	}
	return errors.Join(errs...)
}

func (c Config) only() []string {
	if c.Only == "" {
		return nil
	}
	return strings.Split(c.Only, ",")
}

func (c Config) wants(scenario string) bool {
	if o := c.only(); len(o) > 0 {
		return slices.Contains(o, scenario)
	}
	return slices.Contains(DefaultScenarios(), scenario)
}

// Usage explains telkeys bench and its scenarios.
const Usage = `Usage: telkeys bench [flags]

Measures what users of telkeys care about, each figure next to a floor
measured in the same run on the same machine, and prints a table: figure,
value, floor, ratio, target. Progress goes to stderr, the report to stdout.

It starts its own embedded NATS server in a temporary directory (or uses
--nats-url, which must hold no telkeys events yet: the bench writes its own
history), stores --keys keys in teams of 1000, and runs:

  verify-local  keyauth Verify with every key loaded, in a process of its own
                (ns/op, allocs/op; keyauth warm-up time and RSS), vs SHA-256
  verify-http   POST /v1/keys/verify, 64 connections, vs a constant-200 route
                (GET /healthz) on the same server
  node-gate     GET /api/v1/apps through a TelAPI node, vs the same node with
                key checking switched off
  revoke        half the deletes with 3 keyauth nodes on their own connections:
                time from a DELETE response until each node refuses the key, vs
                core NATS publish-to-receive latency on the same connections;
                the other half with 3 telapi-node processes (beside telkeys, as
                make build leaves them): DELETE latency behind the revocation
                barrier, vs a create (which waits for no node) just before
                each DELETE; where the slowest DELETEs spent their time (their
                Server-Timing); the disk's own fsync latency; and every node
                asked at once after each 204
  quota         a daily limit of 2000 across 3 telapi-node processes: a burst
                (each node offered 5x the limit at once; admitted must be
                1980-2000), then a steady load at 80% of the limit spread over
                --duration (429s below the limit) and its request p99, vs the
                same load on a team without a limit
  create        POST /v1/teams/{team}/api-keys, 16 clients, vs raw JetStream
                publishes (same fsync, expected-sequence header, 16 publishers);
                the telapi-node processes stop first: nodes run elsewhere
  replay        audit verify and audit state of the whole history, vs a raw
                ordered-consumer read of the same stream
  startup       start until /readyz answers 200, with every key stored

and, only when --only names it:

  scale         a keyauth node's load time, RSS and heap per key, and Verify,
                at --keys (default 10,000,000 when scale runs alone). The
                history is stored and projected as for the other scenarios:
                at 10M keys that takes about 20 minutes on 2 cores

The history is written without fsync, to build it quickly; every figure
after that is measured with the embedded server's sync_interval: always.
Targets are goals, not pass/fail: the exit code says only whether the bench
ran. verify-local runs "telkeys bench node" (see "telkeys bench node --help")
so that the keyauth node it measures has a process of its own.
`

func (c *Config) setDefaults() {
	pick := func(v *int, full, quick int) {
		if *v == 0 {
			*v = full
			if c.Quick {
				*v = quick
			}
		}
	}
	if c.Keys == 0 && c.Only == "scale" {
		c.Keys = 10_000_000
	}
	pick(&c.Keys, 1_000_000, 10_000)
	pick(&c.Deletes, 1000, 50)
	pick(&c.Creates, 3200, 160)
	if c.Duration == 0 {
		c.Duration = 10 * time.Second
		if c.Quick {
			c.Duration = time.Second
		}
	}
}

// Run runs the bench: progress on stderr, the report on stdout. The error
// says only whether the bench ran, not whether targets were met.
func Run(ctx context.Context, cfg Config, stdout, stderr io.Writer) error {
	cfg.setDefaults()
	if err := cfg.Validate(); err != nil {
		return cli.Usage(err)
	}
	dir, err := os.MkdirTemp("", "telkeys-bench-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	if cfg.CPUProfile != "" {
		f, err := os.Create(cfg.CPUProfile)
		if err != nil {
			return err
		}
		defer f.Close()
		if err := pprof.StartCPUProfile(f); err != nil {
			return err
		}
		defer pprof.StopCPUProfile()
	}

	var secret [32]byte
	_, _ = rand.Read(secret[:])
	b := &bench{cfg: cfg, dir: dir, progress: newProgress(stderr), secret: hex.EncodeToString(secret[:])}
	if b.auth, err = auth.New([]byte(b.secret), commands.ValidTeamID); err != nil {
		return err
	}
	defer b.close()
	if err := b.run(ctx); err != nil {
		return err
	}
	rep := Report{
		Date: time.Now().UTC().Format(time.RFC3339), Quick: cfg.Quick, Keys: cfg.Keys,
		CPUs: runtime.NumCPU(), GoVersion: runtime.Version(), Figures: b.figures,
	}
	slices.SortStableFunc(rep.Figures, func(a, b Figure) int {
		return slices.Index(Scenarios(), a.Scenario) - slices.Index(Scenarios(), b.Scenario)
	})
	if cfg.JSON {
		enc := json.NewEncoder(stdout)
		enc.SetIndent("", "  ")
		return enc.Encode(rep)
	}
	return rep.table(stdout)
}

// bench is one run of the harness: the service under test and what the
// scenarios share.
type bench struct {
	cfg      Config
	dir      string // the embedded server's store
	progress *progress
	secret   string
	auth     *auth.Authority
	data     dataset
	svc      *service.Service
	nc       *nats.Conn // the bench's own client connection
	js       jetstream.JetStream
	nodes    []*benchNode // keyauth validators on their own connections
	// procs are telapi-node processes (nodeProcesses); stopProcs stops them.
	procs     []*nodeProcess
	stopProcs func()
	figures   []Figure
}

func (b *bench) run(ctx context.Context) error {
	needsData := false
	for _, s := range Scenarios() {
		needsData = needsData || (s != "create" && b.cfg.wants(s))
	}
	if needsData {
		if err := b.load(ctx); err != nil {
			return fmt.Errorf("storing the history: %w", err)
		}
		if err := b.firstStart(ctx); err != nil {
			return err
		}
		// The bulk load left the kernel a lot to write back, which would
		// stall the fsyncs that every figure after it includes.
		b.progress.printf("writing the bulk load back to disk (sync)")
		syscall.Sync()
	}
	if err := b.startup(ctx); err != nil {
		return fmt.Errorf("startup: %w", err)
	}
	steps := []struct {
		name string
		run  func(context.Context) error
	}{
		{"verify-local", b.verifyLocal},
		{"scale", b.scale},
		{"replay", b.replay},
		{"verify-http", b.verifyHTTP},
		{"node-gate", b.nodeGate},
		{"revoke", b.revoke},
		{"quota", b.quota},
		{"create", b.create},
	}
	for _, s := range steps {
		if !b.cfg.wants(s.name) {
			continue
		}
		b.progress.printf("%s: starting", s.name)
		if err := s.run(ctx); err != nil {
			return fmt.Errorf("%s: %w", s.name, err)
		}
	}
	return nil
}

// serveConfig is how the bench runs telkeys: the embedded server on the
// bench's data dir (sync always), or the given NATS.
func (b *bench) serveConfig() service.Config {
	return service.Config{
		DataDir: b.dir, HTTPAddr: "127.0.0.1:0", NATSAddr: "127.0.0.1:0", NATSURL: b.cfg.NATSURL, NATSCreds: b.cfg.NATSCreds,
		SigningKey: b.cfg.SigningKey,
		Replicas:   1, AuthSecret: b.secret,
	}
}

func (b *bench) logger() *slog.Logger {
	log, _ := cli.NewLogger(b.progress.w, "text", b.cfg.LogLevel) // validated
	return log
}

// signer is the key that signs the bench's history, the one the telkeys
// under test signs with: the data dir's, or --signing-key.
func (b *bench) signer() (*events.Signer, error) {
	if b.cfg.SigningKey != "" {
		return events.LoadSigningKey(b.cfg.SigningKey, false)
	}
	return events.LoadSigningKey(service.SigningKeyPath(b.dir), true)
}

// keys are the keys that trust the bench's history.
func (b *bench) keys() (*events.Keys, error) {
	s, err := b.signer()
	if err != nil {
		return nil, err
	}
	return events.NewKeys(s.PublicKey()), nil
}

// creds are credentials of role for the NATS under test: minted from the
// embedded server's authority, or the service credentials given with
// --nats-url (the bench cannot mint for a deployment it does not own).
func (b *bench) creds(role bus.Role, name string) ([]byte, error) {
	if b.cfg.NATSURL != "" {
		return os.ReadFile(b.cfg.NATSCreds)
	}
	a, err := bus.LoadAuthority(bus.AuthDir(b.dir), true)
	if err != nil {
		return nil, err
	}
	return a.Credentials(role, name, 0)
}

// dial connects to the NATS under test as role.
func (b *bench) dial(url string, role bus.Role, name string) (*nats.Conn, error) {
	creds, err := b.creds(role, name)
	if err != nil {
		return nil, err
	}
	return bus.Dial(bus.ClientConfig{URLs: url, CredsData: creds, Name: name})
}

func (b *bench) close() {
	b.stopNodes()
	b.stopProcesses()
	if b.nc != nil {
		b.nc.Close()
	}
	if b.svc != nil {
		_ = b.svc.Shutdown(context.Background())
	}
}

// stopProcesses stops the telapi-node processes, if any run.
func (b *bench) stopProcesses() {
	if b.stopProcs != nil {
		b.stopProcs()
		b.procs, b.stopProcs = nil, nil
	}
}

// stopNodes stops the in-process keyauth nodes.
func (b *bench) stopNodes() {
	for _, n := range b.nodes {
		n.close()
	}
	b.nodes = nil
}

func (b *bench) token(role auth.Role, team string) string {
	tok, err := b.auth.Mint(auth.Claims{Subject: "telkeys-bench", Role: role, Team: team}, 2*time.Hour)
	if err != nil {
		panic(err) // only a bad team id fails, and the bench makes its own
	}
	return tok
}

func (b *bench) add(f Figure) { b.figures = append(b.figures, f) }

// progress reports what the bench is doing on stderr: phase lines, and for
// long loops at most one line a second.
type progress struct {
	w     io.Writer
	start time.Time
	next  time.Time
}

func newProgress(w io.Writer) *progress { return &progress{w: w, start: time.Now()} }

func (p *progress) printf(format string, args ...any) {
	fmt.Fprintf(p.w, "[%6.1fs] %s\n", time.Since(p.start).Seconds(), fmt.Sprintf(format, args...))
}

// tick reports done of total, at most once a second, and always at the end.
func (p *progress) tick(what string, done, total int) {
	if now := time.Now(); done == total || now.After(p.next) {
		p.next = now.Add(time.Second)
		p.printf("%s: %d/%d (%.0f%%)", what, done, total, 100*float64(done)/float64(max(total, 1)))
	}
}
