package audit

import (
	"context"
	"fmt"
	"strings"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/telapi/telkeys/events"
)

// The reasons of problems that are not a message's own (the others are
// events.Invalid's).
const (
	ReasonMissingStart = "missing_start" // the stream does not start at sequence 1
	ReasonGap          = "gap"           // stream sequences are not continuous
)

// Problem is one place where the history is not intact.
type Problem struct {
	Seq uint64
	// EventID is the id of the message's event, if it decoded.
	EventID string
	// Reason is short and stable: events.Reason* for a message that is not
	// a valid event, or ReasonMissingStart, ReasonGap.
	Reason string
	Detail string
}

func (p Problem) String() string {
	id := ""
	if p.EventID != "" {
		id = " (event " + p.EventID + ")"
	}
	return fmt.Sprintf("seq %d%s: %s: %s", p.Seq, id, p.Reason, p.Detail)
}

// Broken is a history that is not intact: every problem, in stream order.
type Broken struct{ Problems []Problem }

func (b *Broken) Error() string {
	var s strings.Builder
	fmt.Fprintf(&s, "history broken: %d problem(s)", len(b.Problems))
	for i, p := range b.Problems {
		if i == 3 {
			fmt.Fprintf(&s, "; …")
			break
		}
		s.WriteString("; " + p.String())
	}
	return s.String()
}

// Summary is what a history holds.
type Summary struct {
	// Events are the valid events, Invalid the other stored messages.
	Events     uint64
	Invalid    uint64
	Aggregates int // with at least one valid event
	// FirstSeq and LastSeq are the first and last stream sequences read.
	FirstSeq uint64
	LastSeq  uint64
}

// Verify replays a whole stream and checks every message with keys
// (events.Chain: it decodes, belongs to its subject, its hash matches its
// content and is signed by a trusted key, and its prev is the hash of the
// last valid event of its aggregate, so an event dropped, reordered,
// replayed or forged shows), and that stream sequences start at 1 and are
// continuous. It goes on past every problem: the summary counts the valid
// events, and the error, a *Broken, lists every problem. Memory grows
// with the number of aggregates and of problems, not of events.
func Verify(ctx context.Context, js jetstream.JetStream, keys *events.Keys, stream string, progress func(done, last uint64)) (Summary, error) {
	var s Summary
	var problems []Problem
	aggregates := map[string]struct{}{}
	err := Replay(ctx, js, keys, Filter{Stream: stream, IncludeInvalid: true}, func(e Event) error {
		switch {
		case s.FirstSeq == 0:
			s.FirstSeq = e.Seq
			if e.Seq != 1 {
				problems = append(problems, Problem{Seq: e.Seq, Reason: ReasonMissingStart,
					Detail: fmt.Sprintf("the stream starts at seq %d, not 1: earlier messages are missing", e.Seq)})
			}
		case e.Seq != s.LastSeq+1:
			problems = append(problems, Problem{Seq: e.Seq, Reason: ReasonGap,
				Detail: fmt.Sprintf("seq %d follows %d: messages are missing", e.Seq, s.LastSeq)})
		}
		s.LastSeq = e.Seq
		if bad := e.Invalid; bad != nil {
			s.Invalid++
			problems = append(problems, Problem{Seq: e.Seq, EventID: e.Envelope.ID, Reason: bad.Reason, Detail: describe(bad, e.Aggregate)})
			return nil
		}
		s.Events++
		aggregates[e.Envelope.Aggregate] = struct{}{}
		return nil
	}, progress)
	s.Aggregates = len(aggregates)
	if err != nil {
		return s, err
	}
	if len(problems) > 0 {
		return s, &Broken{Problems: problems}
	}
	return s, nil
}

// describe says what an invalid message means for the history.
func describe(bad *events.Invalid, aggregate string) string {
	switch bad.Reason {
	case events.ReasonBadHash:
		return "its hash does not match its content (altered)"
	case events.ReasonOutOfPlace:
		return "its prev is not the hash of the last valid event of " + aggregate + " (an event was dropped, inserted, replayed or reordered)"
	case events.ReasonUnsigned:
		return "not signed (forged)"
	case events.ReasonUntrustedKey:
		return "signed by a key that is not trusted (forged, or a key missing from --events-public-key)"
	case events.ReasonBadSignature:
		return "its signature does not verify (forged or altered)"
	}
	return bad.Err.Error()
}
