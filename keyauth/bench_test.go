package keyauth

import (
	"bufio"
	"bytes"
	"crypto/sha256"
	"fmt"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/telapi/telkeys/apikey"
	"github.com/telapi/telkeys/events"
)

// loaded returns a validator holding n keys, without a bus: Verify reads
// only memory, so this measures exactly what a node does per request. It
// returns 1024 of the keys, spread over the map, to verify in turn.
func loaded(b *testing.B, n int) (*Validator, []string) {
	v := &Validator{cfg: Config{}}
	v.cfg.setDefaults()
	v.st.init(nil)
	v.lastHeard.Store(time.Now().Add(time.Hour).UnixNano()) // fresh for the whole run
	v.clock.Store(time.Now().UnixNano())
	t := v.st.team("acme")
	v.st.setConfig(t, 1, true, apikey.Scopes(), nil)
	var probes []string
	for i := range n {
		k, err := apikey.Generate()
		if err != nil {
			b.Fatal(err)
		}
		v.st.putKey(apikey.HashOf(k), []byte(fmt.Sprintf("key_%026d", i)), t, ScopeReadTeamApps, 1, 0, false)
		if i%max(1, n/1024) == 0 && len(probes) < 1024 {
			probes = append(probes, k)
		}
	}
	// Copied together, as keys read from requests would be: hot in cache,
	// unlike strings made among a million others.
	buf := []byte(strings.Join(probes, ""))
	for i := range probes {
		probes[i] = string(buf[i*apikey.Len : (i+1)*apikey.Len])
	}
	return v, probes
}

// BenchmarkVerify1M measures Verify of a valid key with 1M keys loaded,
// next to its floor: a bare SHA-256 of the same key.
func BenchmarkVerify1M(b *testing.B) {
	v, keys := loaded(b, 1_000_000)
	bufs := make([][]byte, len(keys))
	for i, k := range keys {
		bufs[i] = []byte(k)
	}
	mask := len(keys) - 1
	var ms runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&ms)
	heap := float64(ms.HeapAlloc) / (1 << 20)
	b.Run("verify", func(b *testing.B) {
		b.ReportAllocs()
		for i := 0; b.Loop(); i++ {
			if !v.Verify(keys[i&mask], apikey.ScopeReadTeamApps).Valid() {
				b.Fatal("not valid")
			}
		}
		b.ReportMetric(heap, "heap-MiB-1M-keys")
	})
	b.Run("sha256-floor", func(b *testing.B) {
		b.ReportAllocs()
		for i := 0; b.Loop(); i++ {
			_ = sha256.Sum256(bufs[i&mask])
		}
	})
	b.Run("verify-parallel", func(b *testing.B) {
		b.ReportAllocs()
		b.RunParallel(func(pb *testing.PB) {
			for i := 0; pb.Next(); i++ {
				v.Verify(keys[i&mask], apikey.ScopeReadTeamApps)
			}
		})
	})
}

// BenchmarkDecodeIndex1M measures reading a key index of 1M keys from
// memory into an empty state: what keyauth.New spends past the transfer.
func BenchmarkDecodeIndex1M(b *testing.B) {
	src, _ := loaded(b, 1_000_000)
	_, data := src.encodeIndex()
	b.ReportMetric(float64(len(data))/(1<<20), "index-MiB")
	for b.Loop() {
		v := &Validator{cfg: Config{}}
		v.cfg.setDefaults()
		v.st.init(events.NewKeys())
		if _, err := v.decodeIndex(bufio.NewReaderSize(bytes.NewReader(data), 64<<10), 1<<62, uint64(len(data))); err != nil {
			b.Fatal(err)
		}
	}
}
