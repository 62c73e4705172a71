package bench

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/gofiber/fiber/v2"
	"github.com/nats-io/nats.go"
	"github.com/valyala/fasthttp"

	"github.com/telapi/telkeys/auth"
	"github.com/telapi/telkeys/bus"
	"github.com/telapi/telkeys/keyauth"
	"github.com/telapi/telkeys/node"
)

// httpConns is the number of connections of verify-http and node-gate.
const httpConns = 64

// httpLoad is a closed-loop HTTP load: workers, each on its own keep-alive
// connection, send a request as soon as the last one is answered, until
// each has sent perWorker requests (if > 0) or until the deadline (if set).
// fasthttp's client, because the load shares the CPUs with the server and
// net/http's client would take more of them.
type httpLoad struct {
	addr      string
	workers   int
	perWorker int
	duration  time.Duration
	// build sets up request i of worker w; want is the expected status.
	build func(w, i int, req *fasthttp.Request)
	want  int
}

type httpResult struct {
	requests int
	elapsed  time.Duration
	lat      latencies // sorted
}

func (r httpResult) rate() float64 { return float64(r.requests) / r.elapsed.Seconds() }

func (l httpLoad) run(ctx context.Context) (httpResult, error) {
	client := &fasthttp.HostClient{Addr: l.addr, MaxConns: l.workers, ReadTimeout: 30 * time.Second, WriteTimeout: 30 * time.Second}
	defer client.CloseIdleConnections()
	lat := make([]latencies, l.workers)
	errs := make([]error, l.workers)
	var deadline time.Time
	if l.duration > 0 {
		deadline = time.Now().Add(l.duration)
	}
	start := time.Now()
	var wg sync.WaitGroup
	for w := range l.workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			req, res := fasthttp.AcquireRequest(), fasthttp.AcquireResponse()
			defer fasthttp.ReleaseRequest(req)
			defer fasthttp.ReleaseResponse(res)
			for i := 0; l.perWorker <= 0 || i < l.perWorker; i++ {
				if (!deadline.IsZero() && time.Now().After(deadline)) || ctx.Err() != nil {
					return
				}
				req.Reset()
				l.build(w, i, req)
				req.SetHost(l.addr)
				t0 := time.Now()
				err := client.Do(req, res)
				lat[w] = append(lat[w], time.Since(t0))
				if err == nil && res.StatusCode() != l.want {
					err = fmt.Errorf("%s %s: status %d, want %d: %.300s", req.Header.Method(), req.URI().Path(), res.StatusCode(), l.want, res.Body())
				}
				if err != nil {
					errs[w] = err
					return
				}
			}
		}()
	}
	wg.Wait()
	r := httpResult{elapsed: time.Since(start)}
	var all latencies
	for w := range l.workers {
		if errs[w] != nil {
			return r, errs[w]
		}
		all = append(all, lat[w]...)
	}
	r.requests, r.lat = len(all), all.sorted()
	return r, ctx.Err()
}

// compare runs a load and its floor in turns, each for half the bench's
// duration twice, after a short warm-up of each, so that background work
// (a collection, a flush) falls on both alike.
func (b *bench) compare(ctx context.Context, what, floorWhat string, load, floor httpLoad) (r, f httpResult, err error) {
	for _, l := range []*httpLoad{&load, &floor} {
		l.duration = max(b.cfg.Duration/10, 200*time.Millisecond)
		if _, err := l.run(ctx); err != nil {
			return r, f, err
		}
		l.duration = b.cfg.Duration / 2
	}
	b.progress.printf("%s, then %s: %d connections, %s each, in turns", what, floorWhat, load.workers, b.cfg.Duration)
	for range 2 {
		// Garbage from earlier steps must not be collected on one side's
		// time only.
		runtime.GC()
		lr, err := load.run(ctx)
		if err != nil {
			return r, f, err
		}
		runtime.GC()
		fr, err := floor.run(ctx)
		if err != nil {
			return r, f, err
		}
		r, f = r.merge(lr), f.merge(fr)
	}
	b.progress.printf("%s: %.0f req/s, p50 %.2f ms, p99 %.2f ms; %s: %.0f req/s", what, r.rate(), ms(r.lat.at(0.5)), ms(r.lat.at(0.99)), floorWhat, f.rate())
	return r, f, nil
}

func (r httpResult) merge(o httpResult) httpResult {
	return httpResult{requests: r.requests + o.requests, elapsed: r.elapsed + o.elapsed, lat: append(r.lat, o.lat...).sorted()}
}

// verifyHTTP loads POST /v1/keys/verify with the stored keys, then GET
// /healthz, a constant 200 on the same server, middleware and all.
func (b *bench) verifyHTTP(ctx context.Context) error {
	bearer := []byte("Bearer " + b.token(auth.RoleNode, ""))
	bodies := make([][]byte, len(b.data.sample))
	for i, k := range b.data.sample {
		bodies[i] = []byte(`{"key":"` + k + `","scope":"` + benchScope + `"}`)
	}
	verify, floor, err := b.compare(ctx, "POST /v1/keys/verify", "GET /healthz", httpLoad{
		addr: b.svc.HTTPAddr, workers: httpConns, want: 200,
		build: func(w, i int, req *fasthttp.Request) {
			req.Header.SetMethod(fiber.MethodPost)
			req.SetRequestURI("/v1/keys/verify")
			req.Header.SetBytesV(fiber.HeaderAuthorization, bearer)
			req.Header.SetContentType(fiber.MIMEApplicationJSON)
			req.SetBody(bodies[(w*7919+i)%len(bodies)])
		},
	}, httpLoad{
		addr: b.svc.HTTPAddr, workers: httpConns, want: 200,
		build: func(w, i int, req *fasthttp.Request) {
			req.SetRequestURI("/healthz")
			req.Header.SetBytesV(fiber.HeaderAuthorization, bearer)
		},
	})
	if err != nil {
		return err
	}
	b.addHTTP("verify-http", "POST /v1/keys/verify", verify, floor, "GET /healthz, same server", 0.8)
	return nil
}

func (b *bench) addHTTP(scenario, what string, r, floor httpResult, floorName string, target float64) {
	conns := fmt.Sprintf(", %d conns", httpConns)
	b.add(Figure{Scenario: scenario, Figure: what + conns, Value: r.rate(), Unit: "req/s"}.withFloor(floorName, floor.rate()).ratioAtLeast(target))
	b.add(Figure{Scenario: scenario, Figure: what + " p50", Value: ms(r.lat.at(0.5)), Unit: "ms"}.withFloor(floorName, ms(floor.lat.at(0.5))))
	b.add(Figure{Scenario: scenario, Figure: what + " p99", Value: ms(r.lat.at(0.99)), Unit: "ms"}.withFloor(floorName, ms(floor.lat.at(0.99))))
}

// nodeGate loads GET /api/v1/apps on a telapi-node process that checks
// keys, then on its two floors, each a telapi-node process too: the same
// node with key checking off, and a bare Fiber route answering the same
// body. The load comes from telkeys bench load, in a process of its own,
// and the three run in turns.
func (b *bench) nodeGate(ctx context.Context) error {
	nodes, err := b.nodeProcesses(ctx)
	if err != nil {
		return err
	}
	bin, err := nodeBinary()
	if err != nil {
		return err
	}
	var floors []*nodeProcess
	defer func() {
		for _, p := range floors {
			_ = p.cmd.Process.Kill()
			_ = p.cmd.Wait()
		}
	}()
	for _, floor := range []string{node.FloorOff, node.FloorBare} {
		p, err := startProcess(ctx, bin, "--bench-floor", floor, "--http-addr", "127.0.0.1:0", "--log-format", "json", "--nats-creds", "x", "--events-public-key", "x")
		if err != nil {
			return err
		}
		floors = append(floors, p)
	}
	keysFile := filepath.Join(b.dir, "node-gate-keys.txt")
	if err := os.WriteFile(keysFile, []byte(strings.Join(b.data.sample, "\n")), 0o600); err != nil {
		return err
	}
	exe, err := os.Executable()
	if err != nil {
		return err
	}
	load := func(p *nodeProcess, d time.Duration) (LoadFigures, error) {
		out, err := exec.CommandContext(ctx, exe, "bench", "load", "--addr", strings.TrimPrefix(p.base, "http://"),
			"--keys", keysFile, "--conns", strconv.Itoa(httpConns), "--duration", d.String()).Output()
		var f LoadFigures
		if err == nil {
			err = json.Unmarshal(out, &f)
		}
		return f, err
	}
	targets := []struct {
		name string
		p    *nodeProcess
	}{{"keys checked", nodes[0]}, {"key checking off", floors[0]}, {"bare Fiber route", floors[1]}}
	for _, t := range targets { // warm-up
		if _, err := load(t.p, max(b.cfg.Duration/10, 200*time.Millisecond)); err != nil {
			return fmt.Errorf("node-gate, %s: %w", t.name, err)
		}
	}
	b.progress.printf("node-gate: telapi-node GET /api/v1/apps with keys checked, key checking off, and a bare route, %d connections from another process, %s each, in turns", httpConns, b.cfg.Duration)
	sums := make([]LoadFigures, len(targets))
	for range 2 {
		for i, t := range targets {
			f, err := load(t.p, b.cfg.Duration/2)
			if err != nil {
				return fmt.Errorf("node-gate, %s: %w", t.name, err)
			}
			// Rates add up; latencies are the mean of the two turns.
			sums[i].Requests += f.Requests
			sums[i].Seconds += f.Seconds
			sums[i].P50MS += f.P50MS / 2
			sums[i].P99MS += f.P99MS / 2
		}
	}
	rate := func(f LoadFigures) float64 { return float64(f.Requests) / f.Seconds }
	gated, off, bare := sums[0], sums[1], sums[2]
	what := fmt.Sprintf("telapi-node GET /api/v1/apps, %d conns from another process", httpConns)
	b.add(Figure{Scenario: "node-gate", Figure: what, Value: rate(gated), Unit: "req/s"}.withFloor("bare Fiber route, same body, own process", rate(bare)).ratioAtLeast(0.95))
	b.add(Figure{Scenario: "node-gate", Figure: what + ", vs key checking off", Value: rate(gated), Unit: "req/s"}.withFloor("same node, key checking off, own process", rate(off)))
	b.add(Figure{Scenario: "node-gate", Figure: "telapi-node GET /api/v1/apps p50", Value: gated.P50MS, Unit: "ms"}.withFloor("bare Fiber route", bare.P50MS))
	b.add(Figure{Scenario: "node-gate", Figure: "telapi-node GET /api/v1/apps p99", Value: gated.P99MS, Unit: "ms"}.withFloor("bare Fiber route", bare.P99MS))
	b.progress.printf("node-gate: %.0f req/s checked, %.0f off, %.0f bare", rate(gated), rate(off), rate(bare))
	return nil
}

// benchNode is a keyauth validator on a NATS connection of its own, as on
// a TelAPI node.
type benchNode struct {
	nc *nats.Conn
	v  *keyauth.Validator
}

func (n *benchNode) close() {
	n.v.Close()
	n.nc.Close()
}

// startNodes makes sure there are n validators, starting the missing ones
// in parallel. Each holds every key, so the node gate starts only the one
// it needs: the others would only add to what the collector marks.
func (b *bench) startNodes(ctx context.Context, n int) error {
	more := n - len(b.nodes)
	if more <= 0 {
		return nil
	}
	b.progress.printf("starting %d keyauth node(s) on their own connections", more)
	keys, err := b.keys()
	if err != nil {
		return err
	}
	nodes := make([]*benchNode, more)
	errs := make([]error, more)
	var wg sync.WaitGroup
	for i := range nodes {
		wg.Add(1)
		go func() {
			defer wg.Done()
			name := "bench-node-" + strconv.Itoa(len(b.nodes)+i)
			nc, err := b.dial(b.svc.NATSURL, bus.RoleNode, name)
			if err != nil {
				errs[i] = err
				return
			}
			v, err := keyauth.New(ctx, nc, keyauth.Config{Name: name, Keys: keys, Report: bus.NodeAppliedSubject(name, name)})
			if err != nil {
				nc.Close()
				errs[i] = err
				return
			}
			nodes[i] = &benchNode{nc: nc, v: v}
		}()
	}
	wg.Wait()
	for _, n := range nodes {
		if n != nil {
			b.nodes = append(b.nodes, n)
		}
	}
	return errors.Join(errs...)
}
