package bench

import (
	"bufio"
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/valyala/fasthttp"

	"github.com/telapi/telkeys/auth"
)

// nodeProcess is a telapi-node running as a process of its own.
type nodeProcess struct {
	cmd    *exec.Cmd
	base   string
	client fasthttp.Client
}

// nodeProcesses returns the bench's three telapi-node processes, started
// on first use (node-gate, revoke and quota share them) and stopped by
// close.
//
// Each scenario measures them idle: after their warm-up, or the flushes of
// what the scenario before had them verify, they keep a core busy for a
// while, so this waits until they settle.
func (b *bench) nodeProcesses(ctx context.Context) ([]*nodeProcess, error) {
	if b.procs == nil {
		b.progress.printf("starting 3 telapi-node processes")
		nodes, stop, err := b.startNodeProcesses(ctx, 3)
		if err != nil {
			return nil, err
		}
		b.procs, b.stopProcs = nodes, stop
	}
	b.progress.printf("waiting for the telapi-node processes to settle")
	settle(ctx, b.procs)
	return b.procs, nil
}

// startNodeProcesses starts n telapi-node processes (the binary beside
// this one, as make build leaves them) on the NATS under test, and waits
// until each listens and telkeys counts it as a live node.
func (b *bench) startNodeProcesses(ctx context.Context, n int) ([]*nodeProcess, func(), error) {
	bin, err := nodeBinary()
	if err != nil {
		return nil, nil, err
	}
	creds, keys, err := b.nodeFiles("bench-proc")
	if err != nil {
		return nil, nil, err
	}
	var nodes []*nodeProcess
	stop := func() {
		for _, p := range nodes {
			_ = p.cmd.Process.Kill()
			_ = p.cmd.Wait()
		}
	}
	for i := range n {
		p, err := startProcess(ctx, bin, "--nats-url", b.svc.NATSURL, "--nats-creds", creds, "--events-public-key", keys,
			"--http-addr", "127.0.0.1:0", "--name", fmt.Sprintf("proc-%d", i), "--log-format", "json", "--log-level", "info")
		if err != nil {
			stop()
			return nil, nil, err
		}
		nodes = append(nodes, p)
	}
	// The barrier waits only for nodes telkeys has heard: every one must
	// have reported before the first delete.
	tok := b.token(auth.RoleSuperadmin, "")
	deadline := time.Now().Add(30 * time.Second)
	for live := 0; live < n; {
		if time.Now().After(deadline) {
			stop()
			return nil, nil, fmt.Errorf("telkeys counts %d of %d node processes as live", live, n)
		}
		<-time.After(50 * time.Millisecond) // pace the polls
		live = 0
		req, _ := http.NewRequestWithContext(ctx, "GET", "http://"+b.svc.HTTPAddr+"/v1/nodes", nil)
		req.Header.Set("Authorization", "Bearer "+tok)
		res, err := http.DefaultClient.Do(req)
		if err != nil {
			continue
		}
		var body struct {
			Nodes []struct{ Name, State string }
		}
		_ = json.NewDecoder(res.Body).Decode(&body)
		res.Body.Close()
		for _, nd := range body.Nodes {
			if strings.HasPrefix(nd.Name, "bench-proc.") && nd.State == "current" {
				live++
			}
		}
	}
	return nodes, stop, nil
}

// nodeBinary is telapi-node beside this binary, as make build leaves it.
func nodeBinary() (string, error) {
	exe, err := os.Executable()
	if err != nil {
		return "", err
	}
	bin := filepath.Join(filepath.Dir(exe), "telapi-node")
	if _, err := os.Stat(bin); err != nil {
		return "", fmt.Errorf("the bench runs telapi-node beside telkeys (make build): %w", err)
	}
	return bin, nil
}

// startProcess starts a telapi-node with args (which must ask for JSON
// logs) and returns once it listens.
func startProcess(ctx context.Context, bin string, args ...string) (*nodeProcess, error) {
	cmd := exec.CommandContext(ctx, bin, args...)
	stderr, err := cmd.StderrPipe()
	if err != nil {
		return nil, err
	}
	if err := cmd.Start(); err != nil {
		return nil, err
	}
	p := &nodeProcess{cmd: cmd}
	addr := make(chan string, 1)
	go func() {
		sc := bufio.NewScanner(stderr)
		for sc.Scan() {
			var line struct{ Msg, Addr string }
			if json.Unmarshal(sc.Bytes(), &line) == nil && line.Msg == "http listening" {
				addr <- line.Addr
			}
		}
	}()
	select {
	case a := <-addr:
		p.base = "http://" + a
		return p, nil
	case <-time.After(60 * time.Second):
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
		return nil, errors.New("a telapi-node did not listen within 60s")
	}
}

// settle waits, at most 60 s, until the processes used less than 5 % of a
// core over the last second together.
func settle(ctx context.Context, nodes []*nodeProcess) {
	cpu := func() (total time.Duration) {
		for _, n := range nodes {
			b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", n.cmd.Process.Pid))
			if err != nil {
				return -1 // not Linux: nothing to wait for
			}
			// utime and stime, in clock ticks (100 per second), are the
			// 12th and 13th fields after the command's closing parenthesis.
			f := strings.Fields(string(b[strings.LastIndexByte(string(b), ')')+1:]))
			if len(f) < 13 {
				return -1
			}
			u, _ := strconv.ParseInt(f[11], 10, 64)
			s, _ := strconv.ParseInt(f[12], 10, 64)
			total += time.Duration(u+s) * 10 * time.Millisecond
		}
		return total
	}
	last := cpu()
	for deadline := time.Now().Add(60 * time.Second); last >= 0 && time.Now().Before(deadline) && ctx.Err() == nil; {
		<-time.After(time.Second) // one second of CPU time, sampled
		now := cpu()
		if now-last < 50*time.Millisecond {
			return
		}
		last = now
	}
}

// revokeAcrossProcesses deletes keys while three telapi-node processes
// serve, and after each 204 asks every node at once whether it still
// accepts the key: the revocation barrier's promise is that none does.
func (b *bench) revokeAcrossProcesses(ctx context.Context, keys []storedKey) error {
	nodes, err := b.nodeProcesses(ctx)
	if err != nil {
		return err
	}
	client := &http.Client{Timeout: 30 * time.Second, Transport: &http.Transport{MaxIdleConnsPerHost: 4}}
	defer client.CloseIdleConnections()
	apps := func(p *nodeProcess, key string) (int, error) {
		req, _ := http.NewRequestWithContext(ctx, "GET", p.base+"/api/v1/apps", nil)
		req.Header.Set("X-API-Key", key)
		res, err := client.Do(req)
		if err != nil {
			return 0, err
		}
		res.Body.Close()
		return res.StatusCode, nil
	}
	for _, p := range nodes { // every node has the keys before they go
		for deadline := time.Now().Add(30 * time.Second); ; {
			if st, err := apps(p, keys[len(keys)-1].plain); err == nil && st == 200 {
				break
			}
			if time.Now().After(deadline) {
				return errors.New("a telapi-node does not accept a stored key")
			}
			<-time.After(10 * time.Millisecond) // pace the polls
		}
	}
	create, err := b.floorCreates(ctx, client, len(keys))
	if err != nil {
		return err
	}
	var floor latencies
	disk, err := fsyncLatency(b.dir, len(keys))
	if err != nil {
		return err
	}
	tok := b.token(auth.RoleMember, benchTeam(0))
	var took latencies
	var parts []deleteParts
	accepted := 0
	for i, k := range keys {
		c, err := create()
		if err != nil {
			return err
		}
		floor = append(floor, c)
		req, _ := http.NewRequestWithContext(ctx, "DELETE", "http://"+b.svc.HTTPAddr+"/v1/teams/"+k.team+"/api-keys/"+k.id, nil)
		req.Header.Set("Authorization", "Bearer "+tok)
		t0 := time.Now()
		res, err := client.Do(req)
		if err != nil {
			return err
		}
		took = append(took, time.Since(t0))
		res.Body.Close()
		if res.StatusCode != 204 {
			return fmt.Errorf("DELETE: status %d", res.StatusCode)
		}
		parts = append(parts, parseServerTiming(res.Header.Get("Server-Timing"), took[len(took)-1]))
		var wg sync.WaitGroup
		var mu sync.Mutex
		for _, p := range nodes {
			wg.Go(func() {
				if st, err := apps(p, k.plain); err == nil && st == 200 {
					mu.Lock()
					accepted++
					mu.Unlock()
				}
			})
		}
		wg.Wait()
		b.progress.tick("deletes with 3 telapi-node processes (each after a create)", i+1, len(keys))
	}
	b.addSlowestParts(parts)
	took, floor = took.sorted(), floor.sorted()
	what := fmt.Sprintf("3 telapi-node processes, %d deletes", len(keys))
	name := "POST create, one before each DELETE"
	b.add(Figure{Scenario: "revoke", Figure: "DELETE with the barrier, " + what + ", p50", Value: ms(took.at(0.5)), Unit: "ms"}.withFloor(name, ms(floor.at(0.5))))
	b.add(Figure{Scenario: "revoke", Figure: "DELETE with the barrier, " + what + ", p99", Value: ms(took.at(0.99)), Unit: "ms"}.withFloor(name, ms(floor.at(0.99))).atMost(5))
	disk = disk.sorted()
	b.add(Figure{Scenario: "revoke", Figure: "disk: append 512 bytes to a file beside the store and fsync it, one at a time, p50", Value: ms(disk.at(0.5)), Unit: "ms"})
	b.add(Figure{Scenario: "revoke", Figure: "disk: the same, p99", Value: ms(disk.at(0.99)), Unit: "ms"})
	b.add(Figure{Scenario: "revoke", Figure: "checks that found a deleted key accepted after its 204, " + what, Value: float64(accepted), Unit: "checks"}.atMost(0))
	return nil
}

// fsyncLatency appends 512 bytes to a file in dir and fsyncs it, n times,
// one at a time, as the embedded server does for each event: the disk's
// part of every command, measured beside the commands.
func fsyncLatency(dir string, n int) (latencies, error) {
	f, err := os.CreateTemp(dir, "fsync-probe-")
	if err != nil {
		return nil, err
	}
	defer os.Remove(f.Name())
	defer f.Close()
	buf := make([]byte, 512)
	var took latencies
	for range n {
		t0 := time.Now()
		if _, err := f.Write(buf); err != nil {
			return nil, err
		}
		if err := f.Sync(); err != nil {
			return nil, err
		}
		took = append(took, time.Since(t0))
	}
	return took, nil
}

// deleteParts is where one DELETE's time went, from its Server-Timing
// header: the command before its append (authentication, the decision,
// signing), the append (the event's fsync), the barrier, the read models,
// and the rest (HTTP on both ends, and the client).
type deleteParts struct {
	total                                time.Duration
	decide, append, barrier, read, other time.Duration
}

func parseServerTiming(h string, total time.Duration) deleteParts {
	d := deleteParts{total: total}
	for part := range strings.SplitSeq(h, ",") {
		name, dur, _ := strings.Cut(strings.TrimSpace(part), ";dur=")
		ms, _ := strconv.ParseFloat(dur, 64)
		v := time.Duration(ms * float64(time.Millisecond))
		switch name {
		case "command":
			d.decide = v // the append is taken out below
		case "append":
			d.append = v
		case "barrier":
			d.barrier = v
		case "read":
			d.read = v
		}
	}
	d.other = total - d.decide - d.barrier - d.read
	d.decide -= d.append
	return d
}

// addSlowestParts reports where the slowest 1 % of the deletes spent
// their time, on average: what the DELETE p99 is made of.
func (b *bench) addSlowestParts(parts []deleteParts) {
	slices.SortFunc(parts, func(a, b deleteParts) int { return cmp.Compare(b.total, a.total) })
	slow := parts[:max(1, len(parts)/100)]
	for _, p := range []struct {
		name string
		of   func(deleteParts) time.Duration
	}{
		{"the event's append (fsync)", func(d deleteParts) time.Duration { return d.append }},
		{"the command before its append", func(d deleteParts) time.Duration { return d.decide }},
		{"the barrier", func(d deleteParts) time.Duration { return d.barrier }},
		{"the read models", func(d deleteParts) time.Duration { return d.read }},
		{"HTTP and the client", func(d deleteParts) time.Duration { return d.other }},
	} {
		var sum time.Duration
		for _, d := range slow {
			sum += p.of(d)
		}
		b.add(Figure{Scenario: "revoke", Figure: fmt.Sprintf("slowest %d DELETEs, mean time in %s (Server-Timing)", len(slow), p.name),
			Value: ms(sum / time.Duration(len(slow))), Unit: "ms"})
	}
}

// floorCreates returns a function that creates one key in a team of its
// own, with the same client, and returns its latency: a command that
// appends one event and waits for the read models, but for no node. The
// revoke scenario calls it between deletes, so that the floor and the
// deletes see the same moments of a noisy machine.
func (b *bench) floorCreates(ctx context.Context, client *http.Client, n int) (func() (time.Duration, error), error) {
	const team = "bench-barrier-floor"
	cfg := fmt.Sprintf(`{"enabled":true,"allowed_scopes":[%q],"max_keys":%d}`, benchScope, n)
	body := fmt.Sprintf(`{"name":"floor","scopes":[%q]}`, benchScope)
	do := func(method, path, tok, body string) (int, error) {
		req, _ := http.NewRequestWithContext(ctx, method, "http://"+b.svc.HTTPAddr+path, strings.NewReader(body))
		req.Header.Set("Authorization", "Bearer "+tok)
		req.Header.Set("Content-Type", "application/json")
		res, err := client.Do(req)
		if err != nil {
			return 0, err
		}
		_, _ = io.Copy(io.Discard, res.Body)
		res.Body.Close()
		return res.StatusCode, nil
	}
	if st, err := do("PUT", "/v1/teams/"+team+"/api-access", b.token(auth.RoleSuperadmin, ""), cfg); err != nil || st != 200 {
		return nil, errors.Join(err, fmt.Errorf("configure %s: status %d", team, st))
	}
	tok := b.token(auth.RoleMember, team)
	return func() (time.Duration, error) {
		t0 := time.Now()
		st, err := do("POST", "/v1/teams/"+team+"/api-keys", tok, body)
		took := time.Since(t0)
		if err == nil && st != 201 {
			err = fmt.Errorf("create: status %d", st)
		}
		return took, err
	}, nil
}
