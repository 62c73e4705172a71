package audit

import (
	"context"
	"errors"
	"runtime"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/telapi/telkeys/bus"
	"github.com/telapi/telkeys/events"
)

// Checking a signature costs about 50 µs, far more than reading a message,
// so messages are checked in parallel: a reader cuts the stream into
// batches, checkers run events.Keys.Check on them (everything but a
// message's place in its aggregate's chain), and the caller's goroutine
// takes the batches in stream order and links each message into the chain
// (events.Chain.Link). Together the two halves are events.Chain.Check
// (TestParallelCheckIsChainCheck).

// checkFunc is events.Keys.Check, or CheckContent for a replay that
// verifies only the last event of each chain (Filter.headsOnly).
type checkFunc func(aggregate string, data []byte) (events.Envelope, events.Payload, error)

// defaultBatch is how many messages a checker takes at once.
const defaultBatch = 256

// item is one stored message, then its verdict.
type item struct {
	seq     uint64
	agg     string
	data    []byte
	stored  time.Time
	pending uint64

	env events.Envelope
	p   events.Payload
	err error
}

type batch struct {
	items []item
	done  chan struct{} // closed once every item has its verdict but for its place
}

// readChecked reads a stream through an ordered consumer made with cfg
// until stop says so or nothing is pending, checks every message, and
// calls fn with each in stream order from the calling goroutine, until fn
// returns an error (bus.ErrStop: stop without one). chain is the state
// before the first message; it ends after the last one fn saw.
func readChecked(ctx context.Context, js jetstream.JetStream, check checkFunc, src source, cfg jetstream.OrderedConsumerConfig,
	checkers, batchSize int, chain *events.Chain, stop func(*jetstream.MsgMetadata) bool, fn func(*item) error) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	cctx, ccancel := context.WithTimeout(ctx, bus.ScanTimeout)
	cons, err := js.OrderedConsumer(cctx, src.name, cfg)
	ccancel()
	if err != nil {
		return err
	}
	n := checkers
	if n <= 0 {
		n = runtime.GOMAXPROCS(0)
	}
	if batchSize <= 0 {
		batchSize = defaultBatch
	}
	work := make(chan *batch, 2*n)
	ordered := make(chan *batch, 2*n+2)
	var wg sync.WaitGroup
	var readErr error
	wg.Go(func() {
		defer close(work)
		defer close(ordered)
		cur := &batch{done: make(chan struct{})}
		send := func() error {
			for _, ch := range []chan *batch{ordered, work} {
				select {
				case ch <- cur:
				case <-ctx.Done():
					return ctx.Err()
				}
			}
			cur = &batch{items: make([]item, 0, batchSize), done: make(chan struct{})}
			return nil
		}
		readErr = bus.ReadPending(ctx, cons, func(m jetstream.Msg, md *jetstream.MsgMetadata) error {
			if stop(md) {
				return bus.ErrStop
			}
			cur.items = append(cur.items, item{seq: md.Sequence.Stream, agg: strings.TrimPrefix(m.Subject(), src.prefix),
				data: m.Data(), stored: md.Timestamp, pending: md.NumPending})
			if len(cur.items) == batchSize || md.NumPending == 0 {
				return send()
			}
			return nil
		})
		if len(cur.items) > 0 && readErr == nil {
			readErr = send()
		}
	})
	for range n {
		wg.Go(func() {
			for b := range work {
				for i := range b.items {
					it := &b.items[i]
					it.env, it.p, it.err = check(it.agg, it.data)
					it.data = nil
				}
				close(b.done)
			}
		})
	}
	err = func() error {
		for b := range ordered {
			select {
			case <-b.done:
			case <-ctx.Done():
				return ctx.Err()
			}
			for i := range b.items {
				it := &b.items[i]
				if it.err == nil {
					if it.err = chain.Link(it.env); it.err != nil {
						it.p = nil
					}
				}
				if err := fn(it); err != nil {
					return err
				}
			}
		}
		return nil
	}()
	cancel()
	wg.Wait()
	switch {
	case errors.Is(err, bus.ErrStop):
		return nil
	case err != nil:
		return err
	}
	return readErr
}
