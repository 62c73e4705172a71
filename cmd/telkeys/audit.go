package main

import (
	"bufio"
	"context"
	"encoding/csv"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/telapi/telkeys/audit"
	"github.com/telapi/telkeys/events"
)

const auditUsage = `Usage:
  telkeys audit events [--nats-url U] [--team T] [--type X] [--since t] [--until t] [--format table|jsonl|csv]
  telkeys audit verify [--nats-url U]
  telkeys audit state  --at <RFC3339> [--team T] [--format table|json] [--nats-url U]

events  streams the history in order: sequence, time, actor, type, aggregate, payload.
verify  recomputes every hash and prev link and checks sequences; exit 0 if intact,
        1 with the first broken event otherwise.
state   replays up to --at and shows team configs, the keys active then, and the flags.

Auditors need read access to the event stream only (see deploy/nats/accounts.conf).
`

func auditCmd(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	if len(args) == 0 || args[0] == "-h" || args[0] == "--help" {
		fmt.Fprint(stderr, auditUsage)
		if len(args) == 0 {
			return errUsage
		}
		return nil
	}
	fs := flag.NewFlagSet("audit "+args[0], flag.ContinueOnError)
	url := fs.String("nats-url", "nats://127.0.0.1:4222", "NATS server(s), comma-separated; credentials as nats://user:password@host:port")
	team := fs.String("team", "", "only this team's events")
	typ := fs.String("type", "", "only events of this type: PlatformFlagSet, TeamAccessConfigured, KeyCreated, KeyDeleted")
	since := fs.String("since", "", "only events stored at or after this RFC 3339 time")
	until := fs.String("until", "", "only events stored at or before this RFC 3339 time")
	at := fs.String("at", "", "the moment to reconstruct (state), RFC 3339")
	format := fs.String("format", "table", "output: table, jsonl or csv (events); table or json (state)")
	if err := parseFlags(fs, args[1:], stderr, auditUsage); err != nil {
		return err
	}
	f := audit.Filter{Team: *team, Type: events.Type(*typ)}
	var err error
	if f.Since, err = parseTime("--since", *since); err != nil {
		return err
	}
	if f.Until, err = parseTime("--until", *until); err != nil {
		return err
	}
	nc, err := nats.Connect(*url, nats.Name("telkeys audit"))
	if err != nil {
		return fmt.Errorf("connect to NATS: %w", err)
	}
	defer nc.Close()
	js, err := jetstream.New(nc)
	if err != nil {
		return err
	}
	out := bufio.NewWriter(stdout)
	defer out.Flush()
	progress := progressLine(stderr)
	switch args[0] {
	case "events":
		return auditEvents(ctx, js, f, *format, out, progress)
	case "verify":
		sum, err := audit.Verify(ctx, js, "", progress)
		var b *audit.Broken
		if errors.As(err, &b) {
			fmt.Fprintf(out, "BROKEN at seq %d, event %s: %s\n", b.Seq, b.EventID, b.Reason)
			return errBroken
		}
		if err != nil {
			return err
		}
		fmt.Fprintf(out, "intact: %d events (seq %d to %d) in %d aggregates; every hash and prev link verified\n",
			sum.Events, sum.FirstSeq, sum.LastSeq, sum.Aggregates)
		return nil
	case "state":
		t, err := parseTime("--at", *at)
		if err != nil || t.IsZero() {
			return errors.Join(err, errors.New("--at is required"))
		}
		st, err := audit.StateAt(ctx, js, "", t, *team)
		if err != nil {
			return err
		}
		return printState(out, st, *format)
	}
	return fmt.Errorf("unknown audit command %q", args[0])
}

// errBroken makes the process exit non-zero without another message.
var errBroken = errors.New("history is not intact")

func parseTime(name, s string) (time.Time, error) {
	if s == "" {
		return time.Time{}, nil
	}
	t, err := time.Parse(time.RFC3339Nano, s)
	if err != nil {
		return t, fmt.Errorf("%s: want RFC 3339, like 2026-11-26T10:00:00Z", name)
	}
	return t, nil
}

// progressLine reports replay progress on stderr when it is a terminal and
// the replay is long; otherwise it does nothing.
func progressLine(stderr io.Writer) func(done, last uint64) {
	f, ok := stderr.(*os.File)
	if !ok {
		return nil
	}
	if fi, err := f.Stat(); err != nil || fi.Mode()&os.ModeCharDevice == 0 {
		return nil
	}
	var next time.Time
	return func(done, last uint64) {
		if last < 10_000 || time.Now().Before(next) {
			return
		}
		next = time.Now().Add(500 * time.Millisecond)
		fmt.Fprintf(f, "\rreplayed %d of %d events (%.0f%%)   ", done, last, 100*float64(done)/float64(last))
		if done >= last {
			fmt.Fprintln(f)
		}
	}
}

func auditEvents(ctx context.Context, js jetstream.JetStream, f audit.Filter, format string, out *bufio.Writer, progress func(done, last uint64)) error {
	var write func(audit.View) error
	switch format {
	case "jsonl":
		enc := json.NewEncoder(out)
		enc.SetEscapeHTML(false)
		write = func(v audit.View) error { return enc.Encode(v) }
	case "csv":
		w := csv.NewWriter(out)
		defer w.Flush()
		if err := w.Write([]string{"seq", "time", "actor_sub", "actor_role", "type", "aggregate", "payload", "prev", "hash", "id"}); err != nil {
			return err
		}
		write = func(v audit.View) error {
			p, _ := json.Marshal(v.Payload)
			return w.Write([]string{fmt.Sprint(v.Seq), v.Time, v.Actor.Subject, v.Actor.Role, v.Type, v.Aggregate, string(p), v.Prev, v.Hash, v.ID})
		}
	case "table":
		fmt.Fprintf(out, "%-8s %-30s %-24s %-20s %-20s %s\n", "SEQ", "TIME", "ACTOR", "TYPE", "AGGREGATE", "PAYLOAD")
		write = func(v audit.View) error {
			p, _ := json.Marshal(v.Payload)
			_, err := fmt.Fprintf(out, "%-8d %-30s %-24s %-20s %-20s %s\n", v.Seq, v.Time, v.Actor.Subject+" ("+v.Actor.Role+")", v.Type, v.Aggregate, p)
			return err
		}
	default:
		return fmt.Errorf("--format %q: want table, jsonl or csv", format)
	}
	n := 0
	return audit.Replay(ctx, js, f, func(e audit.Event) error {
		if n++; n%1000 == 0 {
			if err := out.Flush(); err != nil { // stream out as we go
				return err
			}
		}
		return write(audit.ViewOf(e))
	}, progress)
}

func printState(out io.Writer, st audit.State, format string) error {
	switch format {
	case "json":
		enc := json.NewEncoder(out)
		enc.SetIndent("", "  ")
		return enc.Encode(st)
	case "table":
	default:
		return fmt.Errorf("--format %q: want table or json", format)
	}
	fmt.Fprintf(out, "state at %s (after event %d)\nplatform: webrtc %v\n", st.At.UTC().Format(time.RFC3339), st.Seq, st.WebRTC)
	for _, t := range st.Teams {
		limit := "unlimited"
		if t.MaxRequestsPerDay != nil {
			limit = fmt.Sprint(*t.MaxRequestsPerDay)
		}
		fmt.Fprintf(out, "\nteam %s: enabled %v, scopes %v, max keys %d, requests/day %s\n", t.Team, t.Enabled, t.AllowedScopes, t.MaxKeys, limit)
		for _, k := range t.Keys {
			fmt.Fprintf(out, "  %s  %-24q %v  created %s\n", k.ID, k.Name, k.Scopes, k.CreatedAt.UTC().Format(time.RFC3339))
		}
	}
	return nil
}
