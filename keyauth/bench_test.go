package keyauth

import (
	"crypto/sha256"
	"fmt"
	"runtime"
	"testing"
	"time"

	"github.com/telapi/telkeys/apikey"
)

// loaded returns a validator holding n keys, without a bus: Verify reads
// only memory, so this measures exactly what a node does per request.
func loaded(b *testing.B, n int) (*Validator, string) {
	v := &Validator{cfg: Config{}}
	v.cfg.setDefaults()
	v.st.init()
	v.lastHeard.Store(time.Now().Add(time.Hour).UnixNano()) // fresh for the whole run
	t := v.st.team("acme")
	v.st.setConfig(t, 1, true, apikey.Scopes(), nil)
	var probe string
	for i := range n {
		k, err := apikey.Generate()
		if err != nil {
			b.Fatal(err)
		}
		v.st.putKey(apikey.HashOf(k), &key{id: fmt.Sprintf("key_%026d", i), team: t, scopes: ScopeReadTeamApps})
		if i == n/2 {
			probe = k
		}
	}
	return v, probe
}

// BenchmarkVerify1M measures Verify of a valid key with 1M keys loaded,
// next to its floor: a bare SHA-256 of the same key.
func BenchmarkVerify1M(b *testing.B) {
	v, k := loaded(b, 1_000_000)
	var ms runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&ms)
	heap := float64(ms.HeapAlloc) / (1 << 20)
	b.Run("verify", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			if !v.Verify(k, apikey.ScopeReadTeamApps).Valid() {
				b.Fatal("not valid")
			}
		}
		b.ReportMetric(heap, "heap-MiB-1M-keys")
	})
	b.Run("sha256-floor", func(b *testing.B) {
		b.ReportAllocs()
		buf := []byte(k)
		for b.Loop() {
			_ = sha256.Sum256(buf)
		}
	})
	b.Run("verify-parallel", func(b *testing.B) {
		b.ReportAllocs()
		b.RunParallel(func(pb *testing.PB) {
			for pb.Next() {
				v.Verify(k, apikey.ScopeReadTeamApps)
			}
		})
	})
}
