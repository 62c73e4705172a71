package bench

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"net/http"
	"runtime"
	"sync"
	"time"

	"github.com/gofiber/fiber/v2"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/oklog/ulid/v2"
	"github.com/valyala/fasthttp"

	"github.com/telapi/telkeys/apikey"
	"github.com/telapi/telkeys/audit"
	"github.com/telapi/telkeys/auth"
	"github.com/telapi/telkeys/bus"
	"github.com/telapi/telkeys/events"
	"github.com/telapi/telkeys/keyauth"
)

// replay reads the whole history three ways: raw, as audit verify (decode,
// hash, chain) and as audit state (decode, apply).
func (b *bench) replay(ctx context.Context) error {
	s, err := b.js.Stream(ctx, bus.EventStream)
	if err != nil {
		return err
	}
	info, err := s.Info(ctx)
	if err != nil {
		return err
	}
	n := info.State.Msgs
	tick := func(what string) func(done, last uint64) {
		return func(done, last uint64) { b.progress.tick(what, int(done), int(last)) }
	}
	timed := func(f func() error) (float64, error) {
		t0 := time.Now()
		err := f()
		return float64(n) / time.Since(t0).Seconds(), err
	}
	raw, err := timed(func() error {
		cctx, cancel := context.WithTimeout(ctx, bus.ScanTimeout)
		cons, err := b.js.OrderedConsumer(cctx, bus.EventStream, jetstream.OrderedConsumerConfig{})
		cancel()
		if err != nil {
			return err
		}
		var got uint64
		return bus.ReadPending(ctx, cons, func(jetstream.Msg, *jetstream.MsgMetadata) error {
			if got++; got%1000 == 0 || got == n {
				tick("raw ordered-consumer read")(got, n)
			}
			return nil
		})
	})
	if err != nil {
		return err
	}
	keys, err := b.keys()
	if err != nil {
		return err
	}
	verify, err := timed(func() error {
		sum, err := audit.Verify(ctx, b.js, keys, "", tick("audit verify"))
		if err == nil && sum.Events != n {
			err = fmt.Errorf("audit verify saw %d of %d events", sum.Events, n)
		}
		return err
	})
	if err != nil {
		return err
	}
	state, err := timed(func() error {
		_, err := audit.StateAt(ctx, b.js, keys, "", time.Time{}, "")
		return err
	})
	if err != nil {
		return err
	}
	floor := "raw ordered consumer"
	b.add(Figure{Scenario: "replay", Figure: fmt.Sprintf("audit verify (every signature checked), %d events", n), Value: verify, Unit: "events/s"}.withFloor(floor, raw).ratioAtLeast(0.3))
	b.add(Figure{Scenario: "replay", Figure: fmt.Sprintf("audit state, %d events", n), Value: state, Unit: "events/s"}.withFloor(floor, raw).ratioAtLeast(0.6))
	return b.signingCost()
}

// signingCost is what signed events cost, in this process: signing an
// event when it is appended (every create and delete), and the one
// validity check (decode, hash, signature, chain) that every reader runs
// on every event it applies: nodes, the projector, the write model, audit.
func (b *bench) signingCost() error {
	s, err := b.signer()
	if err != nil {
		return err
	}
	plain, err := apikey.Generate()
	if err != nil {
		return err
	}
	h := apikey.HashOf(plain)
	agg := events.TeamAggregate(benchTeam(0))
	ev, err := events.New("evt_"+ulid.Make().String(), agg, events.Actor{Subject: "telkeys-bench", Role: "member"}, time.Now(), nil,
		events.KeyCreated{KeyID: "key_" + ulid.Make().String(), Name: "bench", Scopes: []string{benchScope}, Hash: h[:], Last4: apikey.Last4(plain)})
	if err != nil {
		return err
	}
	s.Seal(&ev)
	keys := events.NewKeys(s.PublicKey())
	sign, _ := timeOp(func(n int) {
		for range n {
			s.Seal(&ev)
		}
	})
	// A reader remembers the last 1024 signatures it verified; checking
	// 8192 different events in turn measures the check of a new one.
	wires := make([][]byte, 8192)
	for i := range wires {
		ev.ID = "evt_" + ulid.Make().String()
		ev.Hash = ev.ComputeHash()
		s.Seal(&ev)
		if wires[i], err = ev.Marshal(); err != nil {
			return err
		}
	}
	check, _ := timeOp(func(n int) {
		for i := range n {
			if _, _, err := events.NewChain(keys).Check(agg, wires[i%len(wires)]); err != nil {
				panic(err) // the bench made it: valid
			}
		}
	})
	hash, _ := timeOp(func(n int) {
		for range n {
			_ = ev.ComputeHash()
		}
	})
	b.add(Figure{Scenario: "replay", Figure: "sign an event (Ed25519), once per create or delete", Value: sign / 1000, Unit: "µs"})
	b.add(Figure{Scenario: "replay", Figure: "check an event (decode, hash, signature, chain), per event applied", Value: check / 1000, Unit: "µs"}.
		withFloor("hash an event", hash/1000))
	return nil
}

// revoke deletes keys through the REST API and measures, for each of three
// keyauth nodes, the time from the DELETE response until the node refuses
// the key. A goroutine per node spins on Verify from the moment the
// response is back, so a figure includes waking it: an upper bound. The
// floor is core NATS: a publish from the bench's connection to a
// subscription on each node's connection.
func (b *bench) revoke(ctx context.Context) error {
	if err := b.startNodes(ctx, 3); err != nil {
		return err
	}
	all := b.data.first[:min(b.cfg.Deletes, len(b.data.first))]
	keys, later := all[:len(all)/2], all[len(all)/2:] // later: for the node processes
	client := &http.Client{Timeout: 30 * time.Second}
	defer client.CloseIdleConnections()
	tok := b.token(auth.RoleMember, benchTeam(0))
	var lat latencies
	firstLook := 0
	for i, k := range keys {
		for _, n := range b.nodes {
			if c := n.v.Verify(k.plain, benchScope).Code; c != keyauth.Valid {
				return fmt.Errorf("a node answers %s for a stored key before its deletion", c)
			}
		}
		got, first, err := b.deleteAndWatch(ctx, client, tok, k)
		if err != nil {
			return err
		}
		lat = append(lat, got...)
		firstLook += first
		b.progress.tick("deletes", i+1, len(keys))
	}
	floor, err := b.pubSubLatency(ctx, len(keys))
	if err != nil {
		return err
	}
	lat, floor = lat.sorted(), floor.sorted()
	name := "core NATS pub→recv, same connections"
	what := fmt.Sprintf("DELETE response → refused, 3 nodes × %d deletes", len(keys))
	b.add(Figure{Scenario: "revoke", Figure: what + ", p50", Value: us(lat.at(0.5)), Unit: "µs"}.withFloor(name, us(floor.at(0.5))))
	b.add(Figure{Scenario: "revoke", Figure: what + ", p99", Value: us(lat.at(0.99)), Unit: "µs"}.withFloor(name, us(floor.at(0.99))).atMost(1000))
	b.add(Figure{Scenario: "revoke", Figure: what + ", max", Value: us(lat.at(1)), Unit: "µs"}.withFloor(name, us(floor.at(1))))
	b.add(Figure{Scenario: "revoke", Figure: "nodes already refusing when the DELETE response arrived", Value: 100 * float64(firstLook) / float64(len(lat)), Unit: "%"})
	// The barrier is measured with the node processes alone: these nodes
	// leave (and say so), and their heaps no longer load this process.
	b.stopNodes()
	return b.revokeAcrossProcesses(ctx, later)
}

// deleteAndWatch deletes k and returns how long after the response each
// node took to refuse it, and how many already refused at the first look.
func (b *bench) deleteAndWatch(ctx context.Context, client *http.Client, tok string, k storedKey) (latencies, int, error) {
	var t0 time.Time
	start := make(chan struct{})
	got := make(latencies, len(b.nodes))
	first := make([]bool, len(b.nodes))
	errs := make([]error, len(b.nodes))
	var wg sync.WaitGroup
	for i, n := range b.nodes {
		wg.Add(1)
		go func() {
			defer wg.Done()
			<-start
			for try := 0; ; try++ {
				if n.v.Verify(k.plain, benchScope).Code == keyauth.NotFound {
					got[i], first[i] = max(0, time.Since(t0)), try == 0
					return
				}
				// Yield every time: three spinners on two cores must not
				// starve the goroutines that deliver the event.
				runtime.Gosched()
				if try%1024 == 1023 && (time.Since(t0) > 10*time.Second || ctx.Err() != nil) {
					errs[i] = fmt.Errorf("node %d still accepts a key 10s after its DELETE response", i)
					return
				}
			}
		}()
	}
	req, _ := http.NewRequestWithContext(ctx, "DELETE", "http://"+b.svc.HTTPAddr+"/v1/teams/"+k.team+"/api-keys/"+k.id, nil)
	req.Header.Set("Authorization", "Bearer "+tok)
	res, err := client.Do(req)
	t0 = time.Now()
	close(start)
	if err == nil {
		res.Body.Close()
		if res.StatusCode != 204 {
			err = fmt.Errorf("DELETE: status %d", res.StatusCode)
		}
	}
	wg.Wait()
	firstLooks := 0
	for i := range b.nodes {
		err = errors.Join(err, errs[i])
		if first[i] {
			firstLooks++
		}
	}
	return got, firstLooks, err
}

// pubSubLatency publishes n messages, one at a time, to a subscription on
// each node's connection, and returns every publish-to-receive time.
func (b *bench) pubSubLatency(ctx context.Context, n int) (latencies, error) {
	// Under the nodes' inbox prefix: the one subject they may subscribe to
	// besides the heartbeat.
	subject := bus.InboxPrefix(bus.RoleNode) + ".bench." + nats.NewInbox()[len("_INBOX."):]
	recv := make(chan time.Duration, 3*n)
	for _, node := range b.nodes {
		sub, err := node.nc.Subscribe(subject, func(m *nats.Msg) {
			sent := time.Unix(0, int64(binary.BigEndian.Uint64(m.Data)))
			recv <- time.Since(sent)
		})
		if err != nil {
			return nil, err
		}
		defer sub.Unsubscribe()
		if err := node.nc.Flush(); err != nil {
			return nil, err
		}
	}
	var lat latencies
	var buf [8]byte
	for range n {
		binary.BigEndian.PutUint64(buf[:], uint64(time.Now().UnixNano()))
		if err := b.nc.Publish(subject, buf[:]); err != nil {
			return nil, err
		}
		for range b.nodes {
			select {
			case d := <-recv:
				lat = append(lat, d)
			case <-time.After(5 * time.Second):
				return nil, fmt.Errorf("a core NATS message took more than 5s")
			case <-ctx.Done():
				return nil, ctx.Err()
			}
		}
	}
	return lat, nil
}

// benchCreateClients is the number of concurrent clients of create.
const benchCreateClients = 16

// create creates keys over HTTP, 16 clients each in a team of its own, then
// publishes as many raw events to a stream of the same kind on the same
// server (16 publishers, expected-sequence header). No node runs meanwhile.
func (b *bench) create(ctx context.Context) error {
	// The node processes of the scenarios before would check every event
	// appended here, on the same two cores as telkeys and its floor. In a
	// deployment they run on machines of their own.
	b.stopProcesses()
	per := b.cfg.Creates / benchCreateClients
	admin := "Bearer " + b.token(auth.RoleSuperadmin, "")
	toks := make([]string, benchCreateClients)
	for c := range benchCreateClients {
		team := fmt.Sprintf("bench-create-%02d", c)
		toks[c] = "Bearer " + b.token(auth.RoleMember, team)
		body := fmt.Sprintf(`{"enabled":true,"allowed_scopes":[%q],"max_keys":1000}`, benchScope)
		if _, err := (httpLoad{addr: b.svc.HTTPAddr, workers: 1, perWorker: 1, want: 200, build: func(_, _ int, req *fasthttp.Request) {
			req.Header.SetMethod(fiber.MethodPut)
			req.SetRequestURI("/v1/teams/" + team + "/api-access")
			req.Header.Set(fiber.HeaderAuthorization, admin)
			req.Header.SetContentType(fiber.MIMEApplicationJSON)
			req.SetBodyString(body)
		}}).run(ctx); err != nil {
			return err
		}
	}
	b.progress.printf("create: %d clients × %d keys over HTTP", benchCreateClients, per)
	body := []byte(`{"name":"bench","scopes":["` + benchScope + `"]}`)
	r, err := httpLoad{addr: b.svc.HTTPAddr, workers: benchCreateClients, perWorker: per, want: 201, build: func(w, _ int, req *fasthttp.Request) {
		req.Header.SetMethod(fiber.MethodPost)
		req.SetRequestURI(fmt.Sprintf("/v1/teams/bench-create-%02d/api-keys", w))
		req.Header.Set(fiber.HeaderAuthorization, toks[w])
		req.Header.SetContentType(fiber.MIMEApplicationJSON)
		req.SetBody(body)
	}}.run(ctx)
	if err != nil {
		return err
	}
	b.progress.printf("create: %d publishers × %d raw events", benchCreateClients, per)
	floor, err := b.rawPublishes(ctx, per)
	if err != nil {
		return err
	}
	name := "raw JetStream publishes"
	what := fmt.Sprintf("POST /v1/teams/{team}/api-keys, %d clients", benchCreateClients)
	b.add(Figure{Scenario: "create", Figure: what, Value: r.rate(), Unit: "creates/s"}.withFloor(name, floor.rate()).ratioAtLeast(0.5))
	b.add(Figure{Scenario: "create", Figure: "create p50", Value: ms(r.lat.at(0.5)), Unit: "ms"}.withFloor(name, ms(floor.lat.at(0.5))))
	b.add(Figure{Scenario: "create", Figure: "create p99", Value: ms(r.lat.at(0.99)), Unit: "ms"}.withFloor(name, ms(floor.lat.at(0.99))))
	return nil
}

// rawPublishes appends per events of about an event's size from each of 16
// publishers to its own subject of a scratch stream configured like the
// event stream, each with the expected last sequence of its subject.
func (b *bench) rawPublishes(ctx context.Context, per int) (httpResult, error) {
	const stream = "TELKEYS_BENCH_FLOOR"
	cfg := bus.EventStreamConfig(1)
	cfg.Name, cfg.Subjects, cfg.DenyDelete, cfg.DenyPurge = stream, []string{"telkeys-bench-floor.>"}, false, false
	if _, err := b.js.CreateOrUpdateStream(ctx, cfg); err != nil {
		return httpResult{}, err
	}
	defer b.js.DeleteStream(context.Background(), stream)
	payload := make([]byte, 320)
	lat := make([]latencies, benchCreateClients)
	errs := make([]error, benchCreateClients)
	start := time.Now()
	var wg sync.WaitGroup
	for c := range benchCreateClients {
		wg.Add(1)
		go func() {
			defer wg.Done()
			subject := fmt.Sprintf("telkeys-bench-floor.%d", c)
			var last uint64
			for range per {
				t0 := time.Now()
				ack, err := b.js.Publish(ctx, subject, payload, jetstream.WithExpectLastSequencePerSubject(last))
				lat[c] = append(lat[c], time.Since(t0))
				if err != nil {
					errs[c] = err
					return
				}
				last = ack.Sequence
			}
		}()
	}
	wg.Wait()
	r := httpResult{elapsed: time.Since(start)}
	var all latencies
	for c := range benchCreateClients {
		if errs[c] != nil {
			return r, errs[c]
		}
		all = append(all, lat[c]...)
	}
	r.requests, r.lat = len(all), all.sorted()
	return r, nil
}
