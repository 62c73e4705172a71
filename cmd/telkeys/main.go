// Command telkeys is the API key service of TelAPI.
//
//	telkeys serve   run the service (embedded NATS by default)
//	telkeys token   mint a bearer token for local use and tests
//	telkeys audit   replay, verify and reconstruct the history
//	telkeys bench   measure the service, each figure next to its floor
//
// Every flag can also be set with a TELKEYS_* environment variable; a flag
// on the command line wins. This file only reads flags: the work is done
// by the packages it calls.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/telapi/telkeys/audit"
	"github.com/telapi/telkeys/auth"
	"github.com/telapi/telkeys/barrier"
	"github.com/telapi/telkeys/bench"
	"github.com/telapi/telkeys/bus"
	"github.com/telapi/telkeys/cli"
	"github.com/telapi/telkeys/commands"
	"github.com/telapi/telkeys/events"
	"github.com/telapi/telkeys/service"
)

const usage = `telkeys: the API key service of TelAPI.

Usage:
  telkeys serve [flags]   run the service; with no flags it starts an embedded
                          NATS server with its data in ./data and the HTTP API on :8080
  telkeys token [flags]   print a bearer token signed with the service's secret
  telkeys events-key --out FILE
                          write the public key that nodes and auditors must trust
  telkeys credentials --role service|node|auditor --out FILE
                          write NATS credentials for a telkeys instance, a TelAPI
                          node or an auditor (or --nats-config: a cluster's auth)
  telkeys audit events|verify|state [flags]
                          replay, verify and reconstruct the event history (read only)
  telkeys bench [--quick] [--json] [--only a,b]
                          measure telkeys on its own embedded NATS: each figure
                          next to a floor measured in the same run

  telkeys --version       print the version, commit and Go version of this build

Run "telkeys <command> --help" for the flags of a command. Every flag can also
be set with an environment variable named after its command: serve's
--data-dir is TELKEYS_DATA_DIR, token's --team is TELKEYS_TOKEN_TEAM, audit's
--team is TELKEYS_AUDIT_TEAM, and so on; --help shows each one.
`

// envPrefix is serve's; every other command's variables carry its name
// (TELKEYS_TOKEN_TEAM), so that one variable never sets two commands.
const envPrefix = "TELKEYS"

// envOf is the environment prefix of a command other than serve.
func envOf(command string) string {
	return envPrefix + "_" + strings.ToUpper(strings.NewReplacer("-", "_", " ", "_").Replace(command))
}

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	args := os.Args[1:]
	if len(args) == 0 {
		fmt.Fprint(os.Stderr, usage)
		os.Exit(2)
	}
	var err error
	switch args[0] {
	case "serve":
		err = serve(ctx, args[1:])
	case "token":
		err = token(args[1:])
	case "credentials":
		err = credentials(args[1:])
	case "events-key":
		err = eventsKey(args[1:])
	case "audit":
		err = auditCmd(ctx, args[1:])
	case "bench":
		err = benchCmd(ctx, args[1:])
	case "-h", "--help", "help":
		fmt.Print(usage)
	case "--version", "version":
		fmt.Println(cli.Version("telkeys"))
	default:
		fmt.Fprintf(os.Stderr, "telkeys: unknown command %q\n\n%s", args[0], usage)
		err = cli.ErrUsage
	}
	os.Exit(cli.ExitCode(err, os.Stderr, "telkeys "+args[0]))
}

func serve(ctx context.Context, args []string) error {
	fs := flag.NewFlagSet("serve", flag.ContinueOnError)
	var c service.Config
	fs.StringVar(&c.DataDir, "data-dir", "./data", "directory for the embedded NATS store and the generated auth secret")
	fs.StringVar(&c.HTTPAddr, "http-addr", ":8080", "address of the HTTP API and web UI (with --dev-login and no address given: 127.0.0.1:8080)")
	fs.StringVar(&c.NATSAddr, "nats-addr", "127.0.0.1:4222", "client listener of the embedded NATS server, for local TelAPI nodes (port 0 picks one)")
	fs.StringVar(&c.NATSTLSCert, "nats-tls-cert", "", "TLS certificate (PEM) of the embedded server's client listener; with --nats-tls-key")
	fs.StringVar(&c.NATSTLSKey, "nats-tls-key", "", "TLS key (PEM) of the embedded server's client listener")
	fs.BoolVar(&c.NATSAllowPlaintext, "nats-allow-plaintext", false, "let a --nats-addr off loopback run without TLS (credentials and events in clear)")
	fs.StringVar(&c.NATSURL, "nats-url", "", "comma-separated URLs of an external NATS server or cluster; when set, no embedded server starts")
	fs.StringVar(&c.NATSCreds, "nats-creds", "", "service credentials for --nats-url (telkeys credentials --role service)")
	fs.StringVar(&c.NATSCA, "nats-ca", "", "CA (PEM) that signed the NATS servers' TLS certificates, for --nats-url")
	fs.IntVar(&c.Replicas, "replicas", 1, "replicas of every stream and bucket (3 or 5 on a cluster)")
	fs.StringVar(&c.AuthSecret, "auth-secret", "", "HS256 secret for bearer tokens, at least 32 bytes; if empty, one is generated once into --data-dir")
	fs.BoolVar(&c.DevLogin, "dev-login", false, "DEVELOPMENT ONLY: let anyone sign in to the web UI as any role and team, without a token")
	fs.StringVar(&c.SigningKey, "signing-key", "", "Ed25519 key (PEM) that signs events; every instance of a deployment uses the same; empty: the one in --data-dir, made on first start")
	fs.DurationVar(&c.RevocationWait, "revocation-wait", barrier.DefaultBound, "how long a DELETE (or a team disabled, a scope removed, webrtc off) waits for every TelAPI node to apply it: the nodes' --max-staleness plus 1s")
	fs.StringVar(&c.EventsPublicKey, "events-public-key", "", "more event-signing public keys to trust (PEM), e.g. the previous key while rotating")
	fs.StringVar(&c.Issuer.JWKSURL, "jwks-url", "", "also accept tokens of the platform's identity provider: RS256, ES256 or EdDSA by a key of this JWKS (with --jwt-issuer and --jwt-audience)")
	fs.StringVar(&c.Issuer.Issuer, "jwt-issuer", "", "the iss those tokens must carry")
	fs.StringVar(&c.Issuer.Audience, "jwt-audience", "", "the aud those tokens must carry")
	fs.StringVar(&c.Issuer.RoleClaim, "jwt-role-claim", "role", "the claim of those tokens that holds the role (superadmin, auditor, member or node; anything else is refused)")
	fs.StringVar(&c.Issuer.TeamClaim, "jwt-team-claim", "team", "the claim of those tokens that holds a member's team")
	fs.StringVar(&c.LeakReportKeys, "leak-report-keys", "", "GitHub secret scanning's public keys (JSON of https://api.github.com/meta/public_keys/secret_scanning): turns on POST /v1/leaks/github")
	fs.StringVar(&c.LeakAction, "leak-action", "revoke", "what a leak report of a live key does: revoke (through the revocation barrier) or flag (only mark it)")
	logCfg := cli.LogFlags(fs)
	intro := "Usage: telkeys serve [flags]\n\nRuns the API key service: the REST API, the projections that build the read\n" +
		"models, and (unless --nats-url is set) an embedded NATS server with JetStream.\n" +
		"SIGINT or SIGTERM drains HTTP, then NATS, then stops.\n"
	if err := cli.Parse(fs, args, os.Stderr, envPrefix, intro); err != nil {
		return err
	}
	if c.DevLogin && !isSet(fs, "http-addr") {
		// Anyone who reaches a dev-login server is a superadmin: unless
		// told otherwise, only this machine can.
		c.HTTPAddr = "127.0.0.1:8080"
	}
	log, err := logCfg.NewLogger(os.Stderr)
	if err != nil {
		return err
	}
	return service.Run(ctx, c, log)
}

// isSet reports whether a flag was given, on the command line or in the
// environment.
func isSet(fs *flag.FlagSet, name string) bool {
	set := false
	fs.Visit(func(f *flag.Flag) { set = set || f.Name == name })
	return set
}

func token(args []string) error {
	fs := flag.NewFlagSet("token", flag.ContinueOnError)
	role := fs.String("role", "", "role of the token: superadmin, auditor, member or node (required)")
	team := fs.String("team", "", "team id, required for members and refused for other roles")
	sub := fs.String("sub", "", "subject (who holds the token); defaults to \"<role>-cli\"")
	ttl := fs.Duration("ttl", time.Hour, "how long the token is valid, e.g. 30m or 24h")
	dataDir := fs.String("data-dir", "./data", "data directory of the service, where its generated secret is kept")
	secret := fs.String("auth-secret", "", "HS256 secret (at least 32 bytes); if empty, the one kept in --data-dir")
	intro := "Usage: telkeys token --role R [--team T] [--sub S] [--ttl D]\n\n" +
		"Prints a bearer token signed with the same secret that \"telkeys serve\" uses\n" +
		"(same --data-dir and --auth-secret), and nothing else.\n"
	if err := cli.Parse(fs, args, os.Stderr, envOf(fs.Name()), intro); err != nil {
		return err
	}
	if *role == "" {
		return cli.Usage(errors.New("--role is required"))
	}
	if *sub == "" {
		*sub = *role + "-cli"
	}
	key, err := auth.ResolveSecret(*secret, *dataDir)
	if err != nil {
		return err
	}
	a, err := auth.New(key, commands.ValidTeamID)
	if err != nil {
		return err
	}
	tok, err := a.Mint(auth.Claims{Subject: *sub, Role: auth.Role(*role), Team: *team}, *ttl)
	if err != nil {
		return err
	}
	_, err = fmt.Println(tok)
	return err
}

func eventsKey(args []string) error {
	fs := flag.NewFlagSet("events-key", flag.ContinueOnError)
	dataDir := fs.String("data-dir", "./data", "data directory of the service, where its signing key is kept")
	key := fs.String("signing-key", "", "the signing key (PEM) instead of the one in --data-dir")
	out := fs.String("out", "", "file to write the public key to (PEM); required")
	intro := "Usage: telkeys events-key --out FILE [--data-dir D | --signing-key K]\n\n" +
		"Writes the public key of the key that signs telkeys' events, heartbeats and key\n" +
		"index: what TelAPI nodes and auditors trust (--events-public-key). To rotate, give\n" +
		"them a file with the old and the new key (concatenate both outputs) first.\n"
	if err := cli.Parse(fs, args, os.Stderr, envOf(fs.Name()), intro); err != nil {
		return err
	}
	if *out == "" {
		return cli.Usage(errors.New("--out is required"))
	}
	path := *key
	if path == "" {
		path = service.SigningKeyPath(*dataDir)
	}
	signer, err := events.LoadSigningKey(path, false)
	if err != nil {
		return err
	}
	pem, err := events.EncodePublicKeys(signer.PublicKey())
	if err != nil {
		return err
	}
	return os.WriteFile(*out, pem, 0o644)
}

func credentials(args []string) error {
	fs := flag.NewFlagSet("credentials", flag.ContinueOnError)
	dataDir := fs.String("data-dir", "./data", "data directory of the service, where its NATS authority is kept (made only with --nats-config)")
	role := fs.String("role", "", "service, node or auditor")
	out := fs.String("out", "", "file to write the credentials to (mode 0600)")
	name := fs.String("name", "", "who holds them, as the server will log it (default \"<role>\")")
	ttl := fs.Duration("ttl", 0, "how long they are valid, e.g. 720h; 0: until the authority changes")
	natsConfig := fs.String("nats-config", "", "instead: write the server configuration that trusts this authority, to include in every NATS node's config")
	intro := "Usage: telkeys credentials --role R --out FILE [--name N] [--ttl D]\n" +
		"       telkeys credentials --nats-config FILE\n\n" +
		"Writes NATS credentials (a .creds file, as the nats CLI's --creds takes) signed by the\n" +
		"NATS authority in --data-dir: the one \"telkeys serve\" made on its first start, or a\n" +
		"new one. Each role may do only what it needs (see the README, Security). With\n" +
		"--nats-config it writes the authorization block of a NATS cluster instead.\n"
	if err := cli.Parse(fs, args, os.Stderr, envOf(fs.Name()), intro); err != nil {
		return err
	}
	if (*natsConfig == "") == (*out == "" || *role == "") {
		return cli.Usage(errors.New("give --role and --out, or --nats-config"))
	}
	// Credentials come from an authority that exists (telkeys serve made
	// it, or --nats-config for a cluster): a mistyped --data-dir must not
	// quietly make credentials that no server trusts.
	a, err := bus.LoadAuthority(bus.AuthDir(*dataDir), *natsConfig != "")
	if err != nil {
		return err
	}
	if *natsConfig != "" {
		conf, err := a.ServerConfig()
		if err != nil {
			return err
		}
		return bus.WriteFile(*natsConfig, []byte(conf))
	}
	if *name == "" {
		*name = *role
	}
	creds, err := a.Credentials(bus.Role(*role), *name, *ttl)
	if err != nil {
		return cli.Usage(err)
	}
	return bus.WriteFile(*out, creds)
}

const auditUsage = `Usage:
  telkeys audit events [--team T] [--type X] [--since t] [--until t] [--format table|jsonl|csv] [--include-invalid] COMMON
  telkeys audit verify COMMON
  telkeys audit state  --at <RFC3339> [--team T] [--format table|json] COMMON
  COMMON: [--nats-url U] --nats-creds F --events-public-key K

Every stored message is checked as telkeys checks it (decodes, on its aggregate's
subject, hash, Ed25519 signature by a key in --events-public-key, prev = the last
valid event of its aggregate); one that fails is not a valid event, never applied.
events  streams the valid events in order: sequence, time, actor, type, aggregate,
        payload; --include-invalid shows the others too, marked with the reason.
verify  checks every message and that sequences start at 1 and are continuous; exit 0
        if intact, else 1 and one line per problem: BROKEN at seq N (event ID): reason.
state   replays the valid events up to --at: team configs, the keys active then, flags.

Auditors need read access to the event stream only: credentials of the auditor role
(telkeys credentials --role auditor --out auditor.creds), and the keys to trust
(telkeys events-key --data-dir D --out events-public.pem).
`

func auditCmd(ctx context.Context, args []string) error {
	if len(args) == 0 {
		fmt.Fprint(os.Stderr, auditUsage)
		return cli.ErrUsage
	}
	if args[0] == "-h" || args[0] == "--help" {
		args = []string{"", "--help"} // the usage with every flag
	}
	fs := flag.NewFlagSet("audit "+args[0], flag.ContinueOnError)
	url := fs.String("nats-url", "nats://127.0.0.1:4222", "NATS server(s), comma-separated")
	creds := fs.String("nats-creds", "", "auditor credentials (telkeys credentials --role auditor); required")
	ca := fs.String("nats-ca", "", "CA (PEM) that signed the NATS servers' TLS certificates")
	keysFile := fs.String("events-public-key", "", "event-signing public keys to trust (PEM, from telkeys events-key); required")
	invalid := fs.Bool("include-invalid", false, "events: also show stored messages that are not valid events, marked")
	team := fs.String("team", "", "only this team's events")
	typ := fs.String("type", "", "only events of this type: PlatformFlagSet, TeamAccessConfigured, KeyCreated, KeyDeleted")
	since := fs.String("since", "", "only events stored at or after this RFC 3339 time")
	until := fs.String("until", "", "only events stored at or before this RFC 3339 time")
	at := fs.String("at", "", "the moment to reconstruct (state), RFC 3339")
	format := fs.String("format", "table", "output: table, jsonl or csv (events); table or json (state)")
	if err := cli.Parse(fs, args[1:], os.Stderr, envOf("audit"), auditUsage); err != nil {
		return err
	}
	if *keysFile == "" {
		return cli.Usage(errors.New("--events-public-key is required: the keys whose events to trust (telkeys events-key)"))
	}
	keys, err := events.ReadPublicKeys(*keysFile)
	if err != nil {
		return err
	}
	f := audit.Filter{Team: *team, Type: events.Type(*typ), IncludeInvalid: *invalid}
	if f.Since, err = parseTime("--since", *since); err != nil {
		return err
	}
	if f.Until, err = parseTime("--until", *until); err != nil {
		return err
	}
	nc, err := bus.Dial(bus.ClientConfig{URLs: *url, Creds: *creds, CA: *ca, Name: "telkeys audit"})
	if err != nil {
		return err
	}
	defer nc.Close()
	js, err := bus.JetStream(nc)
	if err != nil {
		return err
	}
	progress := cli.Progress(os.Stderr, "replayed")
	switch args[0] {
	case "events":
		return audit.WriteEvents(ctx, js, keys, f, *format, os.Stdout, progress)
	case "verify":
		return auditVerify(ctx, js, keys, os.Stdout, progress)
	case "state":
		t, err := parseTime("--at", *at)
		if err != nil || t.IsZero() {
			return cli.Usage(errors.Join(err, errors.New("--at is required")))
		}
		st, err := audit.StateAt(ctx, js, keys, "", t, *team)
		if err != nil {
			return err
		}
		return audit.WriteState(os.Stdout, st, *format)
	}
	return cli.Usage(fmt.Errorf("unknown audit command %q", args[0]))
}

func auditVerify(ctx context.Context, js jetstream.JetStream, keys *events.Keys, out io.Writer, progress func(done, last uint64)) error {
	sum, err := audit.Verify(ctx, js, keys, "", progress)
	var b *audit.Broken
	if errors.As(err, &b) {
		for _, p := range b.Problems {
			fmt.Fprintf(out, "BROKEN at %s\n", p)
		}
		fmt.Fprintf(out, "%d problem(s); %d valid events and %d invalid messages (seq %d to %d) in %d aggregates\n",
			len(b.Problems), sum.Events, sum.Invalid, sum.FirstSeq, sum.LastSeq, sum.Aggregates)
		return cli.ErrFailed
	}
	if err != nil {
		return err
	}
	_, err = fmt.Fprintf(out, "intact: %d events (seq %d to %d) in %d aggregates; every hash, signature and prev link verified\n",
		sum.Events, sum.FirstSeq, sum.LastSeq, sum.Aggregates)
	return err
}

func parseTime(name, s string) (time.Time, error) {
	if s == "" {
		return time.Time{}, nil
	}
	t, err := time.Parse(time.RFC3339Nano, s)
	if err != nil {
		return t, cli.Usage(fmt.Errorf("%s: want RFC 3339, like 2026-11-26T10:00:00Z", name))
	}
	return t, nil
}

func benchCmd(ctx context.Context, args []string) error {
	if len(args) > 0 && args[0] == "node" {
		fs := flag.NewFlagSet("bench node", flag.ContinueOnError)
		url := fs.String("nats-url", "nats://127.0.0.1:4222", "NATS server of the telkeys to measure against")
		creds := fs.String("nats-creds", "", "node credentials (telkeys credentials --role node)")
		keys := fs.String("events-public-key", "", "the event-signing public keys to trust (telkeys events-key)")
		if err := cli.Parse(fs, args[1:], os.Stderr, envOf(fs.Name()), bench.NodeUsage); err != nil {
			return err
		}
		return bench.RunNode(ctx, *url, *creds, *keys, os.Stdin, os.Stdout)
	}
	if len(args) > 0 && args[0] == "load" {
		fs := flag.NewFlagSet("bench load", flag.ContinueOnError)
		addr := fs.String("addr", "", "HOST:PORT of the HTTP server to load")
		keys := fs.String("keys", "", "file of API keys, one a line, sent in turn as X-API-Key")
		conns := fs.Int("conns", 64, "keep-alive connections")
		d := fs.Duration("duration", 5*time.Second, "how long to load")
		if err := cli.Parse(fs, args[1:], os.Stderr, envOf(fs.Name()), bench.LoadUsage); err != nil {
			return err
		}
		return bench.RunLoad(ctx, *addr, *keys, *conns, *d, os.Stdout)
	}
	fs := flag.NewFlagSet("bench", flag.ContinueOnError)
	var c bench.Config
	fs.BoolVar(&c.Quick, "quick", false, "shrink every scenario to a few seconds (10000 keys, 1s loads, 50 deletes, 160 creates), to check that the harness works")
	fs.BoolVar(&c.JSON, "json", false, "print the report as JSON instead of a table")
	fs.StringVar(&c.Only, "only", "", "comma-separated scenarios to run (default: all): "+strings.Join(bench.Scenarios(), ","))
	fs.StringVar(&c.NATSURL, "nats-url", "", "use this NATS server instead of an embedded one; it must hold no telkeys events")
	fs.StringVar(&c.NATSCreds, "nats-creds", "", "service credentials for --nats-url")
	fs.StringVar(&c.SigningKey, "signing-key", "", "the deployment's event-signing key, for --nats-url")
	fs.IntVar(&c.Keys, "keys", 0, "keys to store (default 1000000, or 10000 with --quick)")
	fs.DurationVar(&c.Duration, "duration", 0, "length of each HTTP load (default 10s, or 1s with --quick)")
	fs.IntVar(&c.Deletes, "deletes", 0, "keys to delete in revoke (default 1000, or 50 with --quick)")
	fs.IntVar(&c.Creates, "creates", 0, "keys to create in create (default 3200, or 160 with --quick)")
	fs.StringVar(&c.LogLevel, "log-level", "error", "log level of the telkeys under test, on stderr: debug shows where startup time goes")
	fs.StringVar(&c.CPUProfile, "cpuprofile", "", "write a CPU profile of the whole run to this file (go tool pprof)")
	if err := cli.Parse(fs, args, os.Stderr, envOf(fs.Name()), bench.Usage); err != nil {
		return err
	}
	return bench.Run(ctx, c, os.Stdout, os.Stderr)
}
