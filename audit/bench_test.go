package audit_test

import (
	"context"
	"fmt"
	"os"
	"runtime"
	"strconv"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/telapi/telkeys/audit"
	"github.com/telapi/telkeys/bus"
	"github.com/telapi/telkeys/events"
)

// BenchmarkReplay measures replaying 1M events (AUDIT_BENCH_EVENTS to
// change), next to a raw ordered-consumer read of the same stream in the
// same run: verify (decode, hash, chain) and state (decode, apply). It
// reports events/s and the peak heap during each replay.
func BenchmarkReplay(b *testing.B) {
	n := 1_000_000
	if v, err := strconv.Atoi(os.Getenv("AUDIT_BENCH_EVENTS")); err == nil {
		n = v
	}
	// The history is written without fsync, to build it quickly: the
	// replay reads it the same way.
	ns, err := server.NewServer(&server.Options{Host: "127.0.0.1", Port: server.RANDOM_PORT, JetStream: true, StoreDir: b.TempDir(), NoSigs: true})
	if err != nil {
		b.Fatal(err)
	}
	go ns.Start()
	ns.ReadyForConnections(10 * time.Second)
	b.Cleanup(ns.Shutdown)
	nc, err := nats.Connect(ns.ClientURL())
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(nc.Close)
	js, _ := jetstream.New(nc, jetstream.WithPublishAsyncMaxPending(4096))
	ctx := context.Background()
	if _, err := bus.Setup(ctx, js, 1); err != nil {
		b.Fatal(err)
	}
	writeHistory(b, js, n)

	run := func(name string, f func() error) {
		b.Run(name, func(b *testing.B) {
			var peak atomic.Uint64
			stop := make(chan struct{})
			go func() {
				var ms runtime.MemStats
				t := time.NewTicker(20 * time.Millisecond)
				defer t.Stop()
				for {
					runtime.ReadMemStats(&ms)
					if ms.HeapInuse > peak.Load() {
						peak.Store(ms.HeapInuse)
					}
					select {
					case <-stop:
						return
					case <-t.C:
					}
				}
			}()
			start := time.Now()
			for range b.N {
				if err := f(); err != nil {
					b.Fatal(err)
				}
			}
			close(stop)
			b.ReportMetric(float64(n*b.N)/time.Since(start).Seconds(), "events/s")
			b.ReportMetric(float64(peak.Load())/(1<<20), "peak-heap-MiB")
			b.ReportMetric(0, "ns/op")
		})
	}
	run("raw-ordered-consumer", func() error {
		cons, err := js.OrderedConsumer(ctx, bus.EventStream, jetstream.OrderedConsumerConfig{})
		if err != nil {
			return err
		}
		for got := 0; got < n; {
			batch, err := cons.Fetch(500, jetstream.FetchMaxWait(5*time.Second))
			if err != nil {
				return err
			}
			for range batch.Messages() {
				got++
			}
		}
		return nil
	})
	run("audit-verify", func() error {
		sum, err := audit.Verify(ctx, js, "", nil)
		if err == nil && sum.Events != uint64(n) {
			err = fmt.Errorf("verified %d events", sum.Events)
		}
		return err
	})
	run("audit-state", func() error {
		_, err := audit.StateAt(ctx, js, "", time.Time{}, "")
		return err
	})
}

// writeHistory appends n valid events: 1000 teams, each configured, then
// keys created and deleted in turn, every chain intact.
func writeHistory(b *testing.B, js jetstream.JetStream, n int) {
	const teams = 1000
	last := map[string][]byte{}
	actor := events.Actor{Subject: "bench", Role: "member"}
	at := time.Now().Add(-time.Hour)
	for i := range n {
		agg := events.TeamAggregate("t" + strconv.Itoa(i%teams))
		var p events.Payload
		step := i / teams
		switch {
		case step == 0:
			p = events.TeamAccessConfigured{Enabled: true, AllowedScopes: []string{"READ_TEAM_APPS"}, MaxKeys: 1}
		case step%2 == 1:
			p = events.KeyCreated{KeyID: fmt.Sprintf("key_%026d", step), Name: "k", Scopes: []string{"READ_TEAM_APPS"}, Hash: make([]byte, 32), Last4: "abcd"}
		default:
			p = events.KeyDeleted{KeyID: fmt.Sprintf("key_%026d", step-1), Hash: make([]byte, 32)}
		}
		e, err := events.New(fmt.Sprintf("evt_%026d", i), agg, actor, at, last[agg], p)
		if err != nil {
			b.Fatal(err)
		}
		last[agg] = e.Hash
		data, _ := e.Marshal()
		if _, err := js.PublishAsync(bus.EventSubject(agg), data); err != nil {
			b.Fatal(err)
		}
	}
	select {
	case <-js.PublishAsyncComplete():
	case <-time.After(5 * time.Minute):
		b.Fatal("publishing the history timed out")
	}
}
