package audit_test

import (
	"context"
	"fmt"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/telapi/telkeys/audit"
	"github.com/telapi/telkeys/bus"
	"github.com/telapi/telkeys/bus/bustest"
	"github.com/telapi/telkeys/events"
)

// BenchmarkVerify verifies a stream of 50,000 signed events (in memory,
// 1000 teams) with one checker and with GOMAXPROCS, next to a raw read of
// the same stream and to one events.Chain checking in the reading
// goroutine:
//
//	go test -run '^$' -bench Verify -benchtime 3x ./audit
func BenchmarkVerify(b *testing.B) {
	const n, teams = 50_000, 1000
	ns := bustest.NewServer(b)
	_, js := bustest.Connect(b, ns)
	ctx := context.Background()
	if _, err := js.CreateStream(ctx, jetstream.StreamConfig{Name: "SPEED", Subjects: []string{"speed.>"}, Storage: jetstream.MemoryStorage}); err != nil {
		b.Fatal(err)
	}
	signer, keys := bustest.Signer(b)
	prev := map[string][]byte{}
	var acks []jetstream.PubAckFuture
	for i := range n {
		agg := events.TeamAggregate(fmt.Sprintf("t%d", i%teams))
		h := make([]byte, 32)
		h[0], h[1], h[2] = byte(i), byte(i>>8), byte(i>>16)
		ev, err := events.New(fmt.Sprintf("evt_%d", i), agg, events.Actor{Subject: "bench", Role: "member"}, time.Now(), prev[agg],
			events.KeyCreated{KeyID: fmt.Sprintf("key_%d", i), Name: "k", Scopes: apps, Hash: h, Last4: "abcd"})
		if err != nil {
			b.Fatal(err)
		}
		signer.Seal(&ev)
		prev[agg] = ev.Hash
		data, _ := ev.Marshal()
		f, err := js.PublishAsync("speed."+agg, data)
		if err != nil {
			b.Fatal(err)
		}
		acks = append(acks, f)
	}
	for _, f := range acks {
		select {
		case <-f.Ok():
		case err := <-f.Err():
			b.Fatal(err)
		}
	}
	read := func(b *testing.B, each func(jetstream.Msg)) {
		cons, err := js.OrderedConsumer(ctx, "SPEED", jetstream.OrderedConsumerConfig{})
		if err != nil {
			b.Fatal(err)
		}
		got := 0
		if err := bus.ReadPending(ctx, cons, func(m jetstream.Msg, _ *jetstream.MsgMetadata) error { each(m); got++; return nil }); err != nil || got != n {
			b.Fatal(got, err)
		}
	}
	perSecond := func(b *testing.B, start time.Time) {
		b.ReportMetric(float64(n*b.N)/time.Since(start).Seconds(), "events/s")
	}
	b.Run("raw read", func(b *testing.B) {
		start := time.Now()
		for range b.N {
			read(b, func(jetstream.Msg) {})
		}
		perSecond(b, start)
	})
	b.Run("events.Chain in the reader", func(b *testing.B) {
		start := time.Now()
		for range b.N {
			c := events.NewChain(keys)
			read(b, func(m jetstream.Msg) {
				if _, _, err := c.Check(strings.TrimPrefix(m.Subject(), "speed."), m.Data()); err != nil {
					b.Fatal(err)
				}
			})
		}
		perSecond(b, start)
	})
	page := func(b *testing.B, log *audit.Log, after uint64) {
		views, err := log.Page(ctx, audit.Filter{Stream: "SPEED", After: after, Limit: 100})
		if err != nil || len(views) != 100 || views[0].Seq != after+1 {
			b.Fatal(len(views), err)
		}
	}
	b.Run("Page of 100 near the end, first", func(b *testing.B) {
		for range b.N {
			page(b, &audit.Log{JS: js, Keys: events.NewKeys(signer.PublicKey())}, n-1000)
		}
	})
	b.Run("Page of 100 near the end, after the page before it", func(b *testing.B) {
		log := &audit.Log{JS: js, Keys: keys}
		page(b, log, n-1100)
		b.ResetTimer()
		for range b.N {
			page(b, log, n-1000)
		}
	})
	for _, checkers := range []int{1, 0} {
		name := fmt.Sprintf("Verify, %d checker(s)", checkers)
		if checkers == 0 {
			name = "Verify, GOMAXPROCS checkers"
		}
		b.Run(name, func(b *testing.B) {
			if checkers == 1 {
				defer runtime.GOMAXPROCS(runtime.GOMAXPROCS(1)) // Verify checks on GOMAXPROCS goroutines
			}
			start := time.Now()
			for range b.N {
				sum, err := audit.Verify(ctx, js, keys, "SPEED", nil)
				if err != nil || sum.Events != n {
					b.Fatal(sum, err)
				}
			}
			perSecond(b, start)
		})
	}
}
