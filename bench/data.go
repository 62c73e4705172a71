package bench

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/oklog/ulid/v2"

	"github.com/telapi/telkeys/apikey"
	"github.com/telapi/telkeys/bus"
	"github.com/telapi/telkeys/commands"
	"github.com/telapi/telkeys/events"
	"github.com/telapi/telkeys/service"
)

// keysPerTeam is the most keys a team may hold (max_keys ≤ 1000).
const keysPerTeam = 1000

// dataset is the history the bench stores, and the few plaintext keys it
// keeps to use them.
type dataset struct {
	teams  int
	events int
	// sample are keys spread over every team, for verifications.
	sample []string
	// first are the keys of the first team, in order, for deletions.
	first []storedKey
}

type storedKey struct{ team, id, plain string }

const benchScope = apikey.ScopeReadTeamApps

func benchTeam(i int) string { return fmt.Sprintf("bench-%04d", i) }

// load writes the history: every team configured (enabled, all scopes,
// max_keys 1000, no daily limit), then its keys, each event on its team's
// hash chain, exactly as commands would have written them. It writes
// without fsync (an embedded server of its own on the data dir, shut down
// cleanly afterwards), since only reading it is measured.
func (b *bench) load(ctx context.Context) error {
	url := b.cfg.NATSURL
	if url == "" {
		a, err := bus.LoadAuthority(bus.AuthDir(b.dir), true)
		if err != nil {
			return err
		}
		ns, err := bus.StartEmbedded(bus.EmbeddedConfig{DataDir: b.dir, Addr: "127.0.0.1:0", Authority: a, NoFsync: true})
		if err != nil {
			return err
		}
		defer func() { ns.Shutdown(); ns.WaitForShutdown() }()
		url = ns.ClientURL()
	}
	nc, err := b.dial(url, bus.RoleService, "telkeys-bench-load")
	if err != nil {
		return err
	}
	defer nc.Close()
	js, err := jetstream.New(nc, jetstream.WithPublishAsyncMaxPending(4096))
	if err != nil {
		return err
	}
	if s, err := js.Stream(ctx, bus.EventStream); err == nil {
		if info, err := s.Info(ctx); err == nil && info.State.Msgs > 0 {
			return fmt.Errorf("%s already holds %d events; the bench writes its own history, so point --nats-url at a scratch server", bus.EventStream, info.State.Msgs)
		}
	}
	if _, err := bus.Setup(ctx, js, 1); err != nil {
		return err
	}

	d := dataset{teams: (b.cfg.Keys + keysPerTeam - 1) / keysPerTeam}
	perTeamSample := (1024 + d.teams - 1) / d.teams
	actor := events.Actor{Subject: "telkeys-bench", Role: "member"}
	admin := events.Actor{Subject: "telkeys-bench", Role: "superadmin"}
	total := b.cfg.Keys + d.teams
	signer, err := b.signer()
	if err != nil {
		return err
	}
	publish := func(agg string, who events.Actor, prev []byte, p events.Payload) ([]byte, error) {
		ev, err := events.New("evt_"+ulid.Make().String(), agg, who, time.Now(), prev, p)
		if err != nil {
			return nil, err
		}
		signer.Seal(&ev)
		msg, err := commands.EventMsg(ev)
		if err != nil {
			return nil, err
		}
		if _, err := js.PublishMsgAsync(msg, jetstream.WithMsgID(ev.ID)); err != nil {
			return nil, err
		}
		d.events++
		if d.events%2048 == 0 { // a server that fsyncs every write acks slowly
			if err := waitPublished(ctx, js); err != nil {
				return nil, err
			}
		}
		b.progress.tick("storing the history", d.events, total)
		return ev.Hash, nil
	}
	for t := range d.teams {
		agg := events.TeamAggregate(benchTeam(t))
		prev, err := publish(agg, admin, nil, events.TeamAccessConfigured{AccessConfig: events.AccessConfig{Enabled: true, AllowedScopes: apikey.Scopes(), MaxKeys: keysPerTeam}})
		if err != nil {
			return err
		}
		for k := range min(keysPerTeam, b.cfg.Keys-t*keysPerTeam) {
			plain, err := apikey.Generate()
			if err != nil {
				return err
			}
			h := apikey.HashOf(plain)
			id := commands.KeyIDPrefix + ulid.Make().String()
			prev, err = publish(agg, actor, prev, events.KeyCreated{
				KeyID: id, Name: fmt.Sprintf("bench key %d", k), Scopes: []string{benchScope}, Hash: h[:], Last4: apikey.Last4(plain),
			})
			if err != nil {
				return err
			}
			if k < perTeamSample {
				d.sample = append(d.sample, plain)
			}
			if t == 0 {
				d.first = append(d.first, storedKey{team: benchTeam(t), id: id, plain: plain})
			}
		}
		if err := ctx.Err(); err != nil {
			return err
		}
	}
	if err := waitPublished(ctx, js); err != nil {
		return err
	}
	b.data = d
	return nil
}

// waitPublished waits until every asynchronous publish is acknowledged.
func waitPublished(ctx context.Context, js jetstream.JetStream) error {
	select {
	case <-js.PublishAsyncComplete():
		return nil
	case <-time.After(5 * time.Minute):
		return errors.New("publishing the history timed out")
	case <-ctx.Done():
		return ctx.Err()
	}
}

// firstStart starts telkeys once on the stored history, which it projects
// into the read models before it is ready, and stops it again.
func (b *bench) firstStart(ctx context.Context) error {
	b.progress.printf("first start: projecting %d events into the read models", b.data.events)
	t0 := time.Now()
	svc, err := service.Start(ctx, b.serveConfig(), b.logger())
	if err != nil {
		return err
	}
	defer svc.Shutdown(context.Background())
	if err := b.waitReady(ctx, svc, 30*time.Minute); err != nil {
		return err
	}
	took := time.Since(t0)
	b.add(Figure{Scenario: "startup", Figure: fmt.Sprintf("first start: project %d events, then ready", b.data.events),
		Value: float64(b.data.events) / took.Seconds(), Unit: "events/s"})
	return svc.Shutdown(ctx)
}

// startup starts the telkeys that every other scenario uses, and measures
// the time until /readyz answers 200 (with the history already projected).
func (b *bench) startup(ctx context.Context) error {
	b.progress.printf("startup: starting telkeys on the stored history (fsync always)")
	t0 := time.Now()
	svc, err := service.Start(ctx, b.serveConfig(), b.logger())
	if err != nil {
		return err
	}
	b.svc = svc
	if err := b.waitReady(ctx, svc, 5*time.Minute); err != nil {
		return err
	}
	took := time.Since(t0)
	if b.data.events > 0 {
		b.add(Figure{Scenario: "startup", Figure: fmt.Sprintf("start → /readyz 200, %d keys stored", b.cfg.Keys),
			Value: ms(took), Unit: "ms"}.atMost(2000))
	}
	if b.nc, err = b.dial(svc.NATSURL, bus.RoleService, "telkeys-bench"); err != nil {
		return err
	}
	b.js, err = jetstream.New(b.nc)
	return err
}

// waitReady polls /readyz until it answers 200, reporting its reason.
func (b *bench) waitReady(ctx context.Context, svc *service.Service, limit time.Duration) error {
	client := &http.Client{Timeout: 5 * time.Second}
	deadline := time.Now().Add(limit)
	last := ""
	for {
		res, err := client.Get("http://" + svc.HTTPAddr + "/readyz")
		if err == nil {
			var body [256]byte
			n, _ := res.Body.Read(body[:])
			res.Body.Close()
			if res.StatusCode == 200 {
				return nil
			}
			if reason := strings.TrimSpace(string(body[:n])); reason != last && time.Since(b.progress.next) > 0 {
				b.progress.next = time.Now().Add(time.Second)
				b.progress.printf("waiting for /readyz: %s", reason)
				last = reason
			}
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("/readyz did not answer 200 within %s", limit)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(5 * time.Millisecond):
		}
	}
}
