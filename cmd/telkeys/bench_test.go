package main

import (
	"context"
	"fmt"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/telapi/telkeys/auth"
	"github.com/telapi/telkeys/bus"
	"github.com/telapi/telkeys/bus/bustest"
)

// BenchmarkCreateKeyHTTP16 measures POST /v1/teams/{team}/api-keys through
// a real listener on the embedded server (fsync always), 16 concurrent
// clients, each on its own team. Reports creates/s, p50 and p99.
func BenchmarkCreateKeyHTTP16(b *testing.B) {
	s := startService(b, func(c *ServeConfig) { c.LogLevel = "error" })
	const clients = 16
	per := make([]int, clients)
	for i := range b.N {
		per[i%clients]++
	}
	for c := range clients {
		for k := 0; k*1000 < per[c]; k++ {
			s.enableTeam(fmt.Sprintf("bench-%d-%d", c, k), 1000)
		}
	}
	lat := make([][]time.Duration, clients)
	b.ResetTimer()
	start := time.Now()
	var wg sync.WaitGroup
	for c := range clients {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range per[c] {
				team := fmt.Sprintf("bench-%d-%d", c, i/1000)
				tok := s.token(auth.RoleMember, team)
				t0 := time.Now()
				r := s.do("POST", "/v1/teams/"+team+"/api-keys", tok, `{"name":"bench","scopes":["READ_TEAM_APPS"]}`)
				lat[c] = append(lat[c], time.Since(t0))
				if r.status != 201 {
					b.Errorf("status %d: %s", r.status, r.body)
					return
				}
			}
		}()
	}
	wg.Wait()
	reportLatencies(b, time.Since(start), lat, "creates/s")
}

func reportLatencies(b *testing.B, elapsed time.Duration, lat [][]time.Duration, unit string) {
	b.StopTimer()
	all := slices.Concat(lat...)
	slices.Sort(all)
	b.ReportMetric(float64(len(all))/elapsed.Seconds(), unit)
	b.ReportMetric(float64(all[len(all)/2].Microseconds())/1000, "p50-ms")
	b.ReportMetric(float64(all[len(all)*99/100].Microseconds())/1000, "p99-ms")
	b.ReportMetric(0, "ns/op") // the figures above are the result
}

// BenchmarkRawPublish16 is the floor for BenchmarkCreateKeyHTTP16: 16
// publishers appending to their own subject on the same kind of embedded
// server (fsync always) with the expected-sequence header, nothing else.
func BenchmarkRawPublish16(b *testing.B) {
	ns := bustest.Server(b)
	_, js := bustest.Connect(b, ns)
	ctx := context.Background()
	if _, err := bus.Setup(ctx, js, 1); err != nil {
		b.Fatal(err)
	}
	const clients = 16
	per := make([]int, clients)
	for i := range b.N {
		per[i%clients]++
	}
	lat := make([][]time.Duration, clients)
	payload := make([]byte, 300)
	b.ResetTimer()
	start := time.Now()
	var wg sync.WaitGroup
	for c := range clients {
		wg.Add(1)
		go func() {
			defer wg.Done()
			subj := bus.EventSubject(fmt.Sprintf("team.raw-%d", c))
			var last uint64
			for range per[c] {
				t0 := time.Now()
				ack, err := js.Publish(ctx, subj, payload, jetstream.WithExpectLastSequencePerSubject(last))
				lat[c] = append(lat[c], time.Since(t0))
				if err != nil {
					b.Error(err)
					return
				}
				last = ack.Sequence
			}
		}()
	}
	wg.Wait()
	reportLatencies(b, time.Since(start), lat, "publishes/s")
}

// BenchmarkStartupToReady measures Start until /readyz answers 200, on a
// fresh data dir and on one that already holds 2000 keys.
func BenchmarkStartupToReady(b *testing.B) {
	for _, keys := range []int{0, 2000} {
		b.Run(fmt.Sprintf("keys=%d", keys), func(b *testing.B) {
			dir := b.TempDir()
			onDir := func(c *ServeConfig) { c.DataDir = dir; c.LogLevel = "error" }
			if keys > 0 {
				s := startService(b, onDir)
				for t := 0; t*1000 < keys; t++ {
					team := fmt.Sprintf("team-%d", t)
					s.enableTeam(team, 1000)
					for range min(1000, keys-t*1000) {
						s.createKey(team, "k")
					}
				}
				if err := s.Shutdown(context.Background()); err != nil {
					b.Fatal(err)
				}
			}
			var total time.Duration
			for b.Loop() {
				t0 := time.Now()
				s := startService(b, onDir) // returns once /readyz is 200
				total += time.Since(t0)
				if err := s.Shutdown(context.Background()); err != nil {
					b.Fatal(err)
				}
			}
			b.ReportMetric(float64(total.Microseconds())/1000/float64(b.N), "ms-to-ready")
		})
	}
}
