package main

import (
	"bufio"
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/exec"
	"runtime"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/telapi/telkeys/keyauth"
)

// nodeFigures is what "telkeys bench-node" measures in its own process.
type nodeFigures struct {
	Keys        int64   `json:"keys"`
	Probes      int     `json:"probes"`
	WarmupMS    float64 `json:"warmup_ms"`
	RSSMiB      float64 `json:"rss_mib"`
	PeakRSSMiB  float64 `json:"peak_rss_mib"`
	HeapMiB     float64 `json:"heap_mib"`
	VerifyNS    float64 `json:"verify_ns"`
	VerifyOneNS float64 `json:"verify_one_key_ns"`
	VerifyAlloc int64   `json:"verify_allocs"`
	ParallelNS  float64 `json:"verify_parallel_ns"`
	SHA256NS    float64 `json:"sha256_ns"`
}

// verifyLocal runs "telkeys bench-node" as a child process, so that its
// RSS is a keyauth node's alone, and hands it the sample keys.
func (b *bench) verifyLocal(ctx context.Context) error {
	exe, err := os.Executable()
	if err != nil {
		return err
	}
	cmd := exec.CommandContext(ctx, exe, "bench-node", "--nats-url", b.svc.NATSURL)
	cmd.Stdin = strings.NewReader(strings.Join(b.data.sample, "\n"))
	cmd.Stderr = b.progress.w
	var out bytes.Buffer
	cmd.Stdout = &out
	if err := cmd.Run(); err != nil {
		return fmt.Errorf("bench-node: %w", err)
	}
	var f nodeFigures
	if err := json.Unmarshal(out.Bytes(), &f); err != nil {
		return fmt.Errorf("bench-node output %q: %w", out.String(), err)
	}
	keys := fmt.Sprintf("%d keys", f.Keys)
	b.add(figure{Scenario: "verify-local", Figure: "Verify, " + keys + " loaded, the same key each time", Value: f.VerifyOneNS, Unit: "ns/op"}.
		withFloor("SHA-256 of the key", f.SHA256NS).ratioAtMost(2.5))
	b.add(figure{Scenario: "verify-local", Figure: fmt.Sprintf("Verify, %d keys in turn (cache misses)", f.Probes), Value: f.VerifyNS, Unit: "ns/op"}.
		withFloor("SHA-256 of the keys", f.SHA256NS))
	b.add(figure{Scenario: "verify-local", Figure: "Verify allocations", Value: float64(f.VerifyAlloc), Unit: "allocs/op"}.atMost(0))
	b.add(figure{Scenario: "verify-local", Figure: fmt.Sprintf("Verify, keys in turn, %d goroutines (wall time per op)", runtime.NumCPU()), Value: f.ParallelNS, Unit: "ns/op"})
	b.add(figure{Scenario: "verify-local", Figure: "keyauth warm-up (keyauth.New), " + keys, Value: f.WarmupMS, Unit: "ms"})
	b.add(figure{Scenario: "verify-local", Figure: "keyauth node RSS after warm-up, " + keys, Value: f.RSSMiB, Unit: "MiB"}.atMost(300))
	b.add(figure{Scenario: "verify-local", Figure: "keyauth node peak RSS during warm-up", Value: f.PeakRSSMiB, Unit: "MiB"})
	return nil
}

// benchNodeCmd is a keyauth node that measures itself: warm-up, memory,
// and Verify of the keys on stdin against SHA-256 of the same keys. It
// prints nodeFigures as JSON.
func benchNodeCmd(ctx context.Context, args []string, stdin io.Reader, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("bench-node", flag.ContinueOnError)
	url := fs.String("nats-url", "", "NATS server of the telkeys under test")
	if err := parseFlags(fs, args, stderr, "Usage: telkeys bench-node --nats-url URL < keys\n\nPart of telkeys bench: a keyauth node measuring itself.\n"); err != nil {
		return err
	}
	var keys [][]byte
	sc := bufio.NewScanner(stdin)
	for sc.Scan() {
		if k := strings.TrimSpace(sc.Text()); k != "" {
			keys = append(keys, []byte(k))
		}
	}
	if len(keys) == 0 {
		return errors.New("no keys on stdin")
	}
	for len(keys)&(len(keys)-1) != 0 { // a power of two, to index with a mask
		keys = keys[:len(keys)-1]
	}
	strs := make([]string, len(keys))
	for i, k := range keys {
		strs[i] = string(k)
	}
	mask := len(keys) - 1
	f := nodeFigures{Probes: len(keys)}

	nc, err := nats.Connect(*url, nats.Name("telkeys-bench-node"))
	if err != nil {
		return err
	}
	defer nc.Close()
	t0 := time.Now()
	v, err := keyauth.New(ctx, nc, keyauth.Config{Name: "bench-node-" + strconv.Itoa(os.Getpid())})
	if err != nil {
		return err
	}
	defer v.Close()
	f.WarmupMS = ms(time.Since(t0))
	runtime.GC()
	var m runtime.MemStats
	runtime.ReadMemStats(&m)
	f.HeapMiB = float64(m.HeapAlloc) / (1 << 20)
	f.RSSMiB, f.PeakRSSMiB = procMemory()
	f.Keys = v.Keys()

	for _, k := range strs {
		if r := v.Verify(k, benchScope); !r.Valid() {
			return fmt.Errorf("a stored key does not verify: %s", r.Code)
		}
	}
	verify := testing.Benchmark(func(b *testing.B) {
		b.ReportAllocs()
		for i := range b.N {
			v.Verify(strs[i&mask], benchScope)
		}
	})
	one := testing.Benchmark(func(b *testing.B) {
		for range b.N {
			v.Verify(strs[0], benchScope)
		}
	})
	parallel := testing.Benchmark(func(b *testing.B) {
		b.RunParallel(func(pb *testing.PB) {
			for i := 0; pb.Next(); i++ {
				v.Verify(strs[i&mask], benchScope)
			}
		})
	})
	floor := testing.Benchmark(func(b *testing.B) {
		b.ReportAllocs()
		for i := range b.N {
			_ = sha256.Sum256(keys[i&mask])
		}
	})
	f.VerifyNS = float64(verify.NsPerOp())
	if verify.N > 0 {
		f.VerifyNS = float64(verify.T.Nanoseconds()) / float64(verify.N)
		f.VerifyAlloc = int64(verify.MemAllocs) / int64(verify.N)
	}
	if one.N > 0 {
		f.VerifyOneNS = float64(one.T.Nanoseconds()) / float64(one.N)
	}
	if parallel.N > 0 {
		f.ParallelNS = float64(parallel.T.Nanoseconds()) / float64(parallel.N)
	}
	if floor.N > 0 {
		f.SHA256NS = float64(floor.T.Nanoseconds()) / float64(floor.N)
	}
	return json.NewEncoder(stdout).Encode(f)
}

// procMemory returns this process's resident set and its peak, in MiB, from
// /proc (Linux); zeros elsewhere.
func procMemory() (rss, peak float64) {
	data, err := os.ReadFile("/proc/self/status")
	if err != nil {
		return 0, 0
	}
	for line := range strings.Lines(string(data)) {
		name, val, ok := strings.Cut(line, ":")
		if !ok {
			continue
		}
		kb, err := strconv.ParseFloat(strings.TrimSuffix(strings.TrimSpace(val), " kB"), 64)
		if err != nil {
			continue
		}
		switch name {
		case "VmRSS":
			rss = kb / 1024
		case "VmHWM":
			peak = kb / 1024
		}
	}
	return rss, peak
}
