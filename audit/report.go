package audit

import (
	"bufio"
	"context"
	"encoding/csv"
	"encoding/json"
	"fmt"
	"io"
	"strings"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/telapi/telkeys/events"
)

// WriteEvents replays the selected events to w in format "table", "jsonl"
// or "csv", flushing as it goes so that a long history streams out. With
// f.IncludeInvalid, a stored message that is not a valid event is marked:
// "invalid": reason in jsonl, the invalid column in csv, INVALID in a
// table.
func WriteEvents(ctx context.Context, js jetstream.JetStream, keys *events.Keys, f Filter, format string, w io.Writer, progress func(done, last uint64)) error {
	out := bufio.NewWriter(w)
	defer out.Flush()
	var write func(View) error
	switch format {
	case "jsonl":
		enc := json.NewEncoder(out)
		enc.SetEscapeHTML(false)
		write = func(v View) error { return enc.Encode(v) }
	case "csv":
		cw := csv.NewWriter(out)
		defer cw.Flush()
		if err := cw.Write([]string{"seq", "time", "actor_sub", "actor_role", "type", "aggregate", "payload", "prev", "hash", "id", "invalid"}); err != nil {
			return err
		}
		write = func(v View) error {
			p, _ := json.Marshal(v.Payload)
			return cw.Write([]string{fmt.Sprint(v.Seq), v.Time, v.Actor.Subject, v.Actor.Role, v.Type, v.Aggregate, string(p), v.Prev, v.Hash, v.ID, v.Invalid})
		}
	case "table":
		// Fixed columns, so that a streamed table stays aligned; a value
		// too long for its column is cut with "…" (jsonl and csv keep it
		// whole).
		row := func(seq, time, actor, typ, agg, rest string) string {
			return cell(seq, 9) + cell(time, 32) + cell(actor, 33) + cell(typ, 21) + cell(agg, 25) + rest + "\n"
		}
		fmt.Fprint(out, row("SEQ", "TIME", "ACTOR", "TYPE", "AGGREGATE", "PAYLOAD"))
		write = func(v View) error {
			p, _ := json.Marshal(v.Payload)
			mark := ""
			if v.Invalid != "" {
				mark = "  INVALID (" + v.Invalid + "): never applied"
			}
			_, err := fmt.Fprint(out, row(fmt.Sprint(v.Seq), v.Time, v.Actor.Subject+" ("+v.Actor.Role+")", v.Type, v.Aggregate, string(p)+mark))
			return err
		}
	default:
		return fmt.Errorf("--format %q: want table, jsonl or csv", format)
	}
	n := 0
	return Replay(ctx, js, keys, f, func(e Event) error {
		if n++; n%1000 == 0 {
			if err := out.Flush(); err != nil {
				return err
			}
		}
		return write(ViewOf(e))
	}, progress)
}

// WriteState writes a reconstructed state in format "table" or "json".
func WriteState(w io.Writer, st State, format string) error {
	switch format {
	case "json":
		enc := json.NewEncoder(w)
		enc.SetIndent("", "  ")
		return enc.Encode(st)
	case "table":
	default:
		return fmt.Errorf("--format %q: want table or json", format)
	}
	out := bufio.NewWriter(w)
	defer out.Flush()
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

// cell is s in a column of width runes, separated from the next by at
// least one space: padded, or cut with "…".
func cell(s string, width int) string {
	r := []rune(s)
	if len(r) >= width {
		return string(r[:width-2]) + "… "
	}
	return s + strings.Repeat(" ", width-len(r))
}
