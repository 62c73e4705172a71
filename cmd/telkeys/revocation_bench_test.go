package main

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net/http"
	"runtime"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/telapi/telkeys/auth"
	"github.com/telapi/telkeys/keyauth"
)

// BenchmarkRevocationPropagation measures how long after a DELETE response
// three validators (each on its own NATS connection, as three TelAPI nodes
// would be) still accept the deleted key. Each op creates a key, waits until
// all three accept it, deletes it through the REST API, then spins on each
// validator from the moment the DELETE response is back until it refuses
// the key. Reports p50, p99 and max of those times (µs; 3 per op) and the
// share of validators that already refused at their first look. The time
// includes waking the spinning goroutine, so it is an upper bound.
func BenchmarkRevocationPropagation(b *testing.B) {
	s := startService(b, func(c *ServeConfig) { c.LogLevel = "error" })
	s.configureTeam("bench", true, 10, nil) // no daily limit
	const scope = "READ_TEAM_APPS"
	vs := make([]*keyauth.Validator, 3)
	for i := range vs {
		nc, err := nats.Connect(s.NATSURL)
		if err != nil {
			b.Fatal(err)
		}
		b.Cleanup(nc.Close)
		v, err := keyauth.New(context.Background(), nc, keyauth.Config{Name: fmt.Sprintf("bench-node-%d", i)})
		if err != nil {
			b.Fatal(err)
		}
		b.Cleanup(v.Close) // before nc.Close
		vs[i] = v
	}

	lat := make([]time.Duration, 0, len(vs)*b.N)
	var deletes []time.Duration
	atFirstLook := 0
	b.ResetTimer()
	for range b.N {
		k := s.createKey("bench", "k", scope)
		key, id := k["key"].(string), k["id"].(string)
		for _, v := range vs {
			deadline := time.Now().Add(10 * time.Second)
			for !v.Verify(key, scope).Valid() {
				if time.Now().After(deadline) {
					b.Fatalf("a validator did not accept a new key within 10s: %v", v.Verify(key, scope).Code)
				}
				runtime.Gosched()
			}
		}

		var t0 time.Time
		start := make(chan struct{})
		got := make([]time.Duration, len(vs))
		first := make([]bool, len(vs))
		errs := make([]error, len(vs))
		var wg sync.WaitGroup
		for i, v := range vs {
			wg.Add(1)
			go func() {
				defer wg.Done()
				<-start
				for n := 0; ; n++ {
					if v.Verify(key, scope).Code == keyauth.NotFound {
						got[i] = max(0, time.Since(t0))
						first[i] = n == 0
						return
					}
					if n%1024 == 1023 {
						if time.Since(t0) > 10*time.Second {
							errs[i] = fmt.Errorf("validator %d still accepts the key 10s after the DELETE", i)
							return
						}
						runtime.Gosched()
					}
				}
			}()
		}
		d0 := time.Now()
		s.deleteKey("bench", id)
		t0 = time.Now()
		close(start)
		deletes = append(deletes, t0.Sub(d0))
		wg.Wait()
		for i, err := range errs {
			if err != nil {
				b.Fatal(err)
			}
			lat = append(lat, got[i])
			if first[i] {
				atFirstLook++
			}
		}
	}
	b.StopTimer()
	slices.Sort(lat)
	slices.Sort(deletes)
	us := func(d time.Duration) float64 { return float64(d.Nanoseconds()) / 1e3 }
	b.ReportMetric(us(lat[len(lat)/2]), "p50-us")
	b.ReportMetric(us(lat[len(lat)*99/100]), "p99-us")
	b.ReportMetric(us(lat[len(lat)-1]), "max-us")
	b.ReportMetric(100*float64(atFirstLook)/float64(len(lat)), "pct-refused-at-first-look")
	b.ReportMetric(us(deletes[len(deletes)/2])/1000, "delete-p50-ms")
	b.ReportMetric(0, "ns/op")
}

// BenchmarkVerifyEndpoint measures POST /v1/keys/verify with a node token,
// from 64 concurrent clients sharing one keep-alive client, b.N requests in
// all. Reports requests per second, p50 and p99.
func BenchmarkVerifyEndpoint(b *testing.B) {
	s := startService(b, func(c *ServeConfig) { c.LogLevel = "error" })
	s.configureTeam("bench", true, 10, nil) // no daily limit
	key := s.createKey("bench", "k", "READ_TEAM_APPS")["key"].(string)
	body := []byte(fmt.Sprintf(`{"key":%q,"scope":"READ_TEAM_APPS"}`, key))
	tok := "Bearer " + s.token(auth.RoleNode, "")
	tr := &http.Transport{MaxIdleConnsPerHost: 64}
	b.Cleanup(tr.CloseIdleConnections)
	client := &http.Client{Transport: tr, Timeout: 30 * time.Second}
	verify := func() error {
		req, err := http.NewRequest("POST", s.base+"/v1/keys/verify", bytes.NewReader(body))
		if err != nil {
			return err
		}
		req.Header.Set("Authorization", tok)
		req.Header.Set("Content-Type", "application/json")
		res, err := client.Do(req)
		if err != nil {
			return err
		}
		out, err := io.ReadAll(res.Body)
		res.Body.Close()
		if err != nil {
			return err
		}
		if res.StatusCode != 200 || !strings.Contains(string(out), `"valid":true`) {
			return fmt.Errorf("status %d: %s", res.StatusCode, out)
		}
		return nil
	}
	if err := verify(); err != nil {
		b.Fatal(err)
	}

	const clients = 64
	lat := make([][]time.Duration, clients)
	var next atomic.Int64
	var wg sync.WaitGroup
	b.ResetTimer()
	start := time.Now()
	for c := range clients {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for next.Add(1) <= int64(b.N) {
				t0 := time.Now()
				if err := verify(); err != nil {
					b.Error(err)
					return
				}
				lat[c] = append(lat[c], time.Since(t0))
			}
		}()
	}
	wg.Wait()
	if b.Failed() {
		return
	}
	reportLatencies(b, time.Since(start), lat, "req/s")
}
