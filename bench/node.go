package bench

import (
	"bufio"
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/telapi/telkeys/bus"
	"github.com/telapi/telkeys/events"
	"github.com/telapi/telkeys/keyauth"
)

// nodeFigures is what "telkeys bench node" measures in its own process.
type nodeFigures struct {
	Keys        int64   `json:"keys"`
	Probes      int     `json:"probes"`
	WarmupMS    float64 `json:"warmup_ms"`
	RSSMiB      float64 `json:"rss_mib"`
	PeakRSSMiB  float64 `json:"peak_rss_mib"`
	HeapMiB     float64 `json:"heap_mib"`
	VerifyNS    float64 `json:"verify_ns"`
	VerifyOneNS float64 `json:"verify_one_key_ns"`
	VerifyAlloc float64 `json:"verify_allocs"`
	ParallelNS  float64 `json:"verify_parallel_ns"`
	SHA256NS    float64 `json:"sha256_ns"`
}

// nodeFiles writes what a node process needs: node credentials named name,
// and the event-signing public key to trust.
func (b *bench) nodeFiles(name string) (creds, keys string, err error) {
	data, err := b.creds(bus.RoleNode, name)
	if err != nil {
		return "", "", err
	}
	creds = filepath.Join(b.dir, name+".creds")
	if err := bus.WriteFile(creds, data); err != nil {
		return "", "", err
	}
	trusted, err := b.keys()
	if err != nil {
		return "", "", err
	}
	pem, err := events.EncodePublicKeys(trusted.Public()...)
	if err != nil {
		return "", "", err
	}
	keys = filepath.Join(b.dir, "events-public.pem")
	return creds, keys, os.WriteFile(keys, pem, 0o644)
}

// verifyLocal runs a keyauth node in a process of its own (benchNode) and
// reports Verify against SHA-256, and the node's warm-up and memory.
func (b *bench) verifyLocal(ctx context.Context) error {
	f, err := b.benchNode(ctx)
	if err != nil {
		return err
	}
	keys := fmt.Sprintf("%d keys", f.Keys)
	b.add(Figure{Scenario: "verify-local", Figure: "Verify, " + keys + " loaded, the same key each time", Value: f.VerifyOneNS, Unit: "ns/op"}.
		withFloor("SHA-256 of the key", f.SHA256NS).ratioAtMost(1.5))
	b.add(Figure{Scenario: "verify-local", Figure: fmt.Sprintf("Verify, %d keys in turn (cache misses)", f.Probes), Value: f.VerifyNS, Unit: "ns/op"}.
		withFloor("SHA-256 of the keys", f.SHA256NS).ratioAtMost(2.5))
	b.add(Figure{Scenario: "verify-local", Figure: "Verify allocations", Value: f.VerifyAlloc, Unit: "allocs/op"}.atMost(0))
	b.add(Figure{Scenario: "verify-local", Figure: fmt.Sprintf("Verify, keys in turn, %d goroutines (wall time per op)", runtime.NumCPU()), Value: f.ParallelNS, Unit: "ns/op"})
	b.add(Figure{Scenario: "verify-local", Figure: "keyauth warm-up (keyauth.New), " + keys, Value: f.WarmupMS, Unit: "ms"}.atMost(500))
	b.add(Figure{Scenario: "verify-local", Figure: "keyauth node RSS after warm-up, " + keys, Value: f.RSSMiB, Unit: "MiB"}.atMost(150))
	b.addHeapPerKey("verify-local", f)
	b.add(Figure{Scenario: "verify-local", Figure: "keyauth node peak RSS during warm-up", Value: f.PeakRSSMiB, Unit: "MiB"})
	return nil
}

// scale is verify-local's node at a size that takes long to store (10M
// keys by default): what a node costs in time and memory as keys grow.
// The issue set no target here; each figure stands beside 1M's in the
// README.
func (b *bench) scale(ctx context.Context) error {
	f, err := b.benchNode(ctx)
	if err != nil {
		return err
	}
	keys := fmt.Sprintf("%d keys", f.Keys)
	b.add(Figure{Scenario: "scale", Figure: "keyauth warm-up (keyauth.New), " + keys, Value: f.WarmupMS, Unit: "ms"})
	b.add(Figure{Scenario: "scale", Figure: "keyauth node RSS after warm-up, " + keys, Value: f.RSSMiB, Unit: "MiB"})
	b.addHeapPerKey("scale", f)
	b.add(Figure{Scenario: "scale", Figure: "keyauth node peak RSS during warm-up, " + keys, Value: f.PeakRSSMiB, Unit: "MiB"})
	b.add(Figure{Scenario: "scale", Figure: fmt.Sprintf("Verify, %s loaded, %d in turn", keys, f.Probes), Value: f.VerifyNS, Unit: "ns/op"}.
		withFloor("SHA-256 of the keys", f.SHA256NS))
	return nil
}

func (b *bench) addHeapPerKey(scenario string, f nodeFigures) {
	if f.Keys > 0 {
		b.add(Figure{Scenario: scenario, Figure: fmt.Sprintf("keyauth heap per key, %d keys", f.Keys), Value: f.HeapMiB * (1 << 20) / float64(f.Keys), Unit: "B"})
	}
}

// benchNode runs "telkeys bench node" as a child process, so that its RSS
// and allocations are a keyauth node's alone, and hands it the sample
// keys.
func (b *bench) benchNode(ctx context.Context) (nodeFigures, error) {
	var f nodeFigures
	exe, err := os.Executable()
	if err != nil {
		return f, err
	}
	credsFile, keysFile, err := b.nodeFiles("bench-node")
	if err != nil {
		return f, err
	}
	cmd := exec.CommandContext(ctx, exe, "bench", "node", "--nats-url", b.svc.NATSURL, "--nats-creds", credsFile,
		"--events-public-key", keysFile)
	cmd.Stdin = strings.NewReader(strings.Join(b.data.sample, "\n"))
	cmd.Stderr = b.progress.w
	var out bytes.Buffer
	cmd.Stdout = &out
	if err := cmd.Run(); err != nil {
		return f, fmt.Errorf("bench node: %w", err)
	}
	if err := json.Unmarshal(out.Bytes(), &f); err != nil {
		return f, fmt.Errorf("bench node output %q: %w", out.String(), err)
	}
	return f, nil
}

// NodeUsage explains telkeys bench node.
const NodeUsage = `Usage: telkeys bench node --nats-url URL --nats-creds FILE --events-public-key FILE < keys

A keyauth node that measures itself and prints what it found as JSON: the
time keyauth.New takes to load every key, its memory after that, and the
time and allocations of Verify over the keys on stdin (one a line, every one
valid for READ_TEAM_APPS), against SHA-256 of the same keys. telkeys bench
runs it as a child process in its verify-local scenario, so that the figures
are a node's alone; it also measures a node against any running telkeys.
`

// RunNode is telkeys bench node: see NodeUsage.
func RunNode(ctx context.Context, natsURL, creds, publicKeys string, stdin io.Reader, stdout io.Writer) error {
	trusted, err := events.ReadPublicKeys(publicKeys)
	if err != nil {
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

	nc, err := bus.Dial(bus.ClientConfig{URLs: natsURL, Creds: creds, Name: "telkeys-bench-node"})
	if err != nil {
		return err
	}
	defer nc.Close()
	t0 := time.Now()
	v, err := keyauth.New(ctx, nc, keyauth.Config{Name: "bench-node-" + strconv.Itoa(os.Getpid()), Keys: trusted})
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
	f.VerifyNS, f.VerifyAlloc = timeOp(func(n int) {
		for i := range n {
			v.Verify(strs[i&mask], benchScope)
		}
	})
	f.VerifyOneNS, _ = timeOp(func(n int) {
		for range n {
			v.Verify(strs[0], benchScope)
		}
	})
	procs := runtime.GOMAXPROCS(0)
	f.ParallelNS, _ = timeOp(func(n int) {
		var wg sync.WaitGroup
		for p := range procs {
			wg.Go(func() {
				for i := p; i < n; i += procs {
					v.Verify(strs[i&mask], benchScope)
				}
			})
		}
		wg.Wait()
	})
	f.SHA256NS, _ = timeOp(func(n int) {
		for i := range n {
			_ = sha256.Sum256(keys[i&mask])
		}
	})
	return json.NewEncoder(stdout).Encode(f)
}

// timeOp runs op(n) with n growing until one run takes a second, as go
// test -bench does, and returns the time and heap allocations per
// operation of that run.
func timeOp(op func(n int)) (nsPerOp, allocsPerOp float64) {
	const target = time.Second
	n := 1
	for {
		var before, after runtime.MemStats
		runtime.ReadMemStats(&before)
		t0 := time.Now()
		op(n)
		took := time.Since(t0)
		runtime.ReadMemStats(&after)
		if took >= target || n >= 1e9 {
			// Whole allocations per operation, as go test -bench reports
			// them: the node's own goroutines allocate a little meanwhile.
			return float64(took.Nanoseconds()) / float64(n), float64((after.Mallocs - before.Mallocs) / uint64(n))
		}
		// Aim 20 % past the target, growing at most 100-fold at a time.
		next := int(float64(n) * 1.2 * float64(target) / float64(max(took, time.Microsecond)))
		n = min(max(next, n+1), 100*n)
	}
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
