package audit

import (
	"bytes"
	"context"
	"errors"
	"fmt"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/telapi/telkeys/events"
)

// Broken names the first event where the history is not intact.
type Broken struct {
	Seq     uint64
	EventID string
	Reason  string
}

func (b *Broken) Error() string {
	return fmt.Sprintf("history broken at seq %d (event %s): %s", b.Seq, b.EventID, b.Reason)
}

// Summary is what an intact history holds.
type Summary struct {
	Events     uint64
	Aggregates int
	FirstSeq   uint64
	LastSeq    uint64
}

// Verify replays a whole stream and checks that every event's hash matches
// its content, that every event's prev is the hash of the previous event of
// its aggregate (which also catches an event stored twice), and that stream
// sequences are continuous. It returns a *Broken error for the first
// problem. Memory grows with the number of aggregates, not of events.
func Verify(ctx context.Context, js jetstream.JetStream, stream string, progress func(done, last uint64)) (Summary, error) {
	var s Summary
	last := map[string][]byte{}
	err := Replay(ctx, js, Filter{Stream: stream}, func(e Event) error {
		env := e.Envelope
		switch {
		case s.Events == 0:
			if e.Seq != 1 {
				return &Broken{e.Seq, env.ID, fmt.Sprintf("the stream starts at seq %d, not 1: earlier events are missing", e.Seq)}
			}
			s.FirstSeq = e.Seq
		case e.Seq != s.LastSeq+1:
			return &Broken{e.Seq, env.ID, fmt.Sprintf("seq %d follows %d: events are missing", e.Seq, s.LastSeq)}
		}
		if !bytes.Equal(env.ComputeHash(), env.Hash) {
			return &Broken{e.Seq, env.ID, "its hash does not match its content (altered)"}
		}
		if prev := last[env.Aggregate]; !bytes.Equal(env.Prev, prev) {
			return &Broken{e.Seq, env.ID, fmt.Sprintf("its prev is not the hash of the previous event of %s (an event was dropped, inserted or reordered)", env.Aggregate)}
		}
		last[env.Aggregate] = env.Hash
		s.Events++
		s.LastSeq = e.Seq
		return nil
	}, progress)
	s.Aggregates = len(last)
	var malformed *Broken
	if err != nil && !errors.As(err, &malformed) && errors.Is(err, events.ErrMalformed) {
		return s, &Broken{Seq: s.LastSeq + 1, Reason: err.Error()}
	}
	return s, err
}
