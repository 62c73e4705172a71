package bustest

import (
	"context"
	"errors"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/telapi/telkeys/bus"
	"github.com/telapi/telkeys/events"
)

// CheckRoles proves the permission table (bus.Grants) on a real server or
// cluster at urls that trusts a, row by row: what each role may do works,
// and what it must not do is refused by the server, with nothing changed.
// It sets up the streams with replicas replicas. opts are added to every
// connection (e.g. the CA of a TLS cluster).
func CheckRoles(t *testing.T, urls string, a *bus.Authority, replicas int, opts ...nats.Option) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()

	if nc, err := nats.Connect(urls, append(opts, nats.MaxReconnects(0))...); err == nil {
		nc.Close()
		t.Fatal("an anonymous client connected")
	}
	svc := dialRole(t, urls, a, opts, bus.RoleService)
	sjs, _ := jetstream.New(svc.nc)
	var h *bus.Handles
	Eventually(t, time.Minute, "the streams are set up (a new cluster elects its leaders)", func() bool {
		sctx, c := context.WithTimeout(ctx, 10*time.Second)
		defer c()
		var err error
		if h, err = bus.Setup(sctx, sjs, replicas); err != nil {
			t.Logf("setup: %v", err)
		}
		return err == nil
	})
	seedHistory(t, ctx, sjs, h)
	t.Run("node may", func(t *testing.T) { nodeMay(t, ctx, dialRole(t, urls, a, opts, bus.RoleNode)) })
	t.Run("auditor may", func(t *testing.T) { auditorMay(t, ctx, dialRole(t, urls, a, opts, bus.RoleAuditor)) })
	before := snapshotState(t, ctx, h, sjs)

	for _, role := range []bus.Role{bus.RoleNode, bus.RoleAuditor} {
		t.Run(string(role)+" is refused", func(t *testing.T) {
			c := dialRole(t, urls, a, opts, role)
			heartbeats, err := svc.nc.SubscribeSync(bus.HeartbeatSubject)
			if err != nil {
				t.Fatal(err)
			}
			defer heartbeats.Unsubscribe()
			// An allowed request whose reply subject names an event or KV
			// subject: the server's answer must not be stored there (the
			// final state check below).
			for _, reply := range []string{bus.EventSubject(events.TeamAggregate("acme")), bus.KVSubject(bus.BucketReadModel, bus.CheckpointKey)} {
				if err := c.nc.PublishRequest("$JS.API.STREAM.INFO."+bus.EventStream, reply, nil); err != nil {
					t.Fatal(err)
				}
			}
			if err := c.nc.Flush(); err != nil {
				t.Fatal(err)
			}
			probes := refusedToAll()
			if role == bus.RoleAuditor {
				probes = append(probes, refusedToAuditors()...)
			}
			for _, p := range probes {
				t.Run(p.name, func(t *testing.T) { c.expectRefused(t, p) })
			}
			if err := svc.nc.Flush(); err != nil {
				t.Fatal(err)
			}
			if m, err := heartbeats.NextMsg(100 * time.Millisecond); err == nil {
				t.Fatalf("a %s's heartbeat reached the service: %q", role, m.Data)
			}
			if after := snapshotState(t, ctx, h, sjs); after != before {
				t.Fatalf("refused probes changed the state:\nbefore %+v\nafter  %+v", before, after)
			}
		})
	}
}

// probe is something a client tries: a publish (or a request, which is a
// publish with a reply subject) on subject, or a subscription.
type probe struct {
	name    string
	subject string
	data    string
	sub     bool
}

// refusedToAll is what neither a node nor an auditor may do: forge
// events, heartbeats or read models, or touch the streams, buckets and
// the projector's consumer.
func refusedToAll() []probe {
	team := `{"enabled":true,"allowed_scopes":["READ_TEAM_APPS"],"max_keys":1000}`
	projector := bus.EventStream + "." + bus.ProjectorConsumer
	return []probe{
		{name: "publish an event", subject: bus.EventSubject(events.TeamAggregate("acme")), data: "forged"},
		{name: "publish a platform event", subject: bus.EventSubject(events.PlatformAggregate), data: "forged"},
		{name: "publish a heartbeat", subject: bus.HeartbeatSubject, data: "18446744073709551615"},
		{name: "publish a projection hint", subject: bus.ProjectedSubject, data: "999999"},
		{name: "write the read models", subject: bus.KVSubject(bus.BucketReadModel, bus.TeamPrefix+"acme"), data: team},
		{name: "write a snapshot", subject: bus.KVSubject(bus.BucketSnapshots, "team.acme"), data: "x"},
		{name: "write the key index", subject: "$O." + bus.BucketKeyIndex + ".C.forged", data: "x"},
		{name: "purge the read models", subject: "$JS.API.STREAM.PURGE." + bus.KVStream(bus.BucketReadModel)},
		{name: "purge the events", subject: "$JS.API.STREAM.PURGE." + bus.EventStream},
		{name: "delete the event stream", subject: "$JS.API.STREAM.DELETE." + bus.EventStream},
		{name: "update the event stream", subject: "$JS.API.STREAM.UPDATE." + bus.EventStream,
			data: `{"name":"` + bus.EventStream + `","subjects":["telkeys.events.>"],"max_age":1000000000}`},
		{name: "create a stream", subject: "$JS.API.STREAM.CREATE.FORGED", data: `{"name":"FORGED","subjects":["forged.>"]}`},
		{name: "delete a message", subject: "$JS.API.STREAM.MSG.DELETE." + bus.EventStream, data: `{"seq":1}`},
		{name: "delete the projector's consumer", subject: "$JS.API.CONSUMER.DELETE." + projector},
		{name: "recreate the projector's consumer", subject: "$JS.API.CONSUMER.CREATE." + projector,
			data: `{"stream_name":"` + bus.EventStream + `","config":{"durable_name":"projector","ack_policy":"none"}}`},
		{name: "pull the projector's events", subject: "$JS.API.CONSUMER.MSG.NEXT." + projector, data: `{"batch":1}`},
		{name: "ack for the projector", subject: "$JS.ACK." + projector + ".1.1.1.1.1"},
		{name: "list the consumers", subject: "$JS.API.CONSUMER.NAMES." + bus.EventStream},
		{name: "delete the usage counters", subject: "$JS.API.STREAM.DELETE." + bus.UsageStream},
		{name: "purge the reservations", subject: "$JS.API.STREAM.PURGE." + bus.QuotaStream},
		{name: "delete a reservation counter", subject: "$JS.API.STREAM.MSG.DELETE." + bus.QuotaStream, data: `{"seq":1}`},
		{name: "subscribe to everything", subject: ">", sub: true},
		{name: "subscribe to others' replies", subject: "_INBOX.>", sub: true},
	}
}

// refusedToAuditors is what nodes may do and auditors may not.
func refusedToAuditors() []probe {
	return []probe{
		{name: "publish usage", subject: bus.UsageSubject("acme", time.Now()), data: ""},
		{name: "reserve under a daily limit", subject: bus.QuotaSubject("acme", time.Now()), data: ""},
		{name: "publish a last-used time", subject: bus.LastUsedSubject("acme", "key_x"), data: "1"},
		{name: "hear heartbeats", subject: bus.HeartbeatSubject, sub: true},
	}
}

// roleConn is a connection of one role that records the server's
// permission errors.
type roleConn struct {
	role bus.Role
	nc   *nats.Conn
	mu   sync.Mutex
	errs []string
	got  chan struct{}
}

func dialRole(t *testing.T, urls string, a *bus.Authority, opts []nats.Option, role bus.Role) *roleConn {
	t.Helper()
	c := &roleConn{role: role, got: make(chan struct{}, 64)}
	nc, err := bus.Dial(bus.ClientConfig{URLs: urls, Creds: Creds(t, a, role), Name: "check-" + string(role),
		Options: append(opts, nats.ErrorHandler(func(_ *nats.Conn, _ *nats.Subscription, err error) {
			c.mu.Lock()
			c.errs = append(c.errs, err.Error())
			c.mu.Unlock()
			c.got <- struct{}{}
		}))})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	c.nc = nc
	return c
}

// expectRefused tries p and waits for the server's permissions violation
// naming p's subject.
func (c *roleConn) expectRefused(t *testing.T, p probe) {
	t.Helper()
	var err error
	if p.sub {
		var sub *nats.Subscription
		if sub, err = c.nc.SubscribeSync(p.subject); err == nil {
			defer sub.Unsubscribe()
		}
	} else {
		err = c.nc.PublishRequest(p.subject, c.nc.NewRespInbox(), []byte(p.data))
	}
	if err != nil {
		t.Fatal(err)
	}
	kind := "Publish"
	if p.sub {
		kind = "Subscription"
	}
	want := `Permissions Violation for ` + kind + ` to "` + p.subject + `"`
	deadline := time.After(5 * time.Second)
	for {
		c.mu.Lock()
		for _, e := range c.errs {
			if strings.Contains(e, want) {
				c.mu.Unlock()
				return
			}
		}
		c.mu.Unlock()
		select {
		case <-c.got:
		case <-deadline:
			t.Fatalf("the server did not refuse a %s: no %q", c.role, want)
		}
	}
}

// nodeMay does what a node needs: read the events through its own
// consumer, read the key index, hear heartbeats, publish usage and
// last-used times.
func nodeMay(t *testing.T, ctx context.Context, c *roleConn) {
	js, _ := bus.JetStream(c.nc)
	h, err := bus.Open(ctx, js)
	if err != nil {
		t.Fatalf("open the streams a node reads: %v", err)
	}
	readEvents(t, ctx, js)
	if h.KeyIndex == nil {
		t.Fatal("no key index store")
	}
	if _, err := h.KeyIndex.GetBytes(ctx, bus.KeyIndexObject); err != nil {
		t.Fatalf("read the key index: %v", err)
	}
	msg := nats.NewMsg(bus.UsageSubject("acme", time.Now()))
	msg.Header.Set("Nats-Incr", "+1")
	if _, err := js.PublishMsg(ctx, msg); err != nil {
		t.Fatalf("publish a usage increment: %v", err)
	}
	if _, err := h.Usage.GetLastMsgForSubject(ctx, bus.UsageSubject("acme", time.Now())); err != nil {
		t.Fatalf("read a usage counter: %v", err)
	}
	msg = nats.NewMsg(bus.QuotaSubject("acme", time.Now()))
	msg.Header.Set("Nats-Incr", "+5")
	if _, err := js.PublishMsg(ctx, msg); err != nil {
		t.Fatalf("reserve under a daily limit: %v", err)
	}
	if _, err := h.Quota.GetLastMsgForSubject(ctx, bus.QuotaSubject("acme", time.Now())); err != nil {
		t.Fatalf("read a reservation counter: %v", err)
	}
	if _, err := js.Publish(ctx, bus.LastUsedSubject("acme", "key_x"), []byte("1")); err != nil {
		t.Fatalf("publish a last-used time: %v", err)
	}
	if _, err := c.nc.SubscribeSync(bus.HeartbeatSubject); err != nil {
		t.Fatal(err)
	}
	if err := c.nc.Flush(); err != nil || len(c.errs) > 0 {
		t.Fatalf("a node was refused what it needs: %v %v", err, c.errs)
	}
}

// auditorMay replays the event history through its own consumer.
func auditorMay(t *testing.T, ctx context.Context, c *roleConn) {
	js, _ := bus.JetStream(c.nc)
	readEvents(t, ctx, js)
	if err := c.nc.Flush(); err != nil || len(c.errs) > 0 {
		t.Fatalf("an auditor was refused what it needs: %v %v", err, c.errs)
	}
}

func readEvents(t *testing.T, ctx context.Context, js jetstream.JetStream) {
	t.Helper()
	cons, err := js.OrderedConsumer(ctx, bus.EventStream, jetstream.OrderedConsumerConfig{})
	if err != nil {
		t.Fatalf("create a consumer on the events: %v", err)
	}
	n := 0
	if err := bus.ReadPending(ctx, cons, func(jetstream.Msg, *jetstream.MsgMetadata) error { n++; return nil }); err != nil || n == 0 {
		t.Fatalf("read %d events: %v", n, err)
	}
}

// seedHistory stores one event and a key index, so that there is
// something to forge, purge or read.
func seedHistory(t *testing.T, ctx context.Context, js jetstream.JetStream, h *bus.Handles) {
	t.Helper()
	ev, err := events.New("evt_check", events.PlatformAggregate, events.Actor{Subject: "check", Role: "superadmin"},
		time.Now(), nil, events.PlatformFlagSet{Flag: events.FlagWebRTC, Enabled: true})
	if err != nil {
		t.Fatal(err)
	}
	data, _ := ev.Marshal()
	if _, err := js.Publish(ctx, bus.EventSubject(ev.Aggregate), data); err != nil {
		t.Fatal(err)
	}
	if _, err := h.ReadModel.Put(ctx, bus.TeamPrefix+"acme", []byte("real")); err != nil {
		t.Fatal(err)
	}
	if _, err := h.KeyIndex.PutBytes(ctx, bus.KeyIndexObject, []byte("index")); err != nil {
		t.Fatal(err)
	}
}

// state is what a refused probe must leave as it was.
type state struct {
	events, readModel, snapshots, keyIndex, usage uint64
	eventsMaxAge                                  time.Duration
	projectorAckPolicy                            jetstream.AckPolicy
	projectorDelivered                            uint64
	streams                                       string
	indexDigest                                   string
}

func snapshotState(t *testing.T, ctx context.Context, h *bus.Handles, js jetstream.JetStream) state {
	t.Helper()
	var s state
	for _, x := range []struct {
		name string
		n    *uint64
	}{
		{bus.EventStream, &s.events}, {bus.KVStream(bus.BucketReadModel), &s.readModel},
		{bus.KVStream(bus.BucketSnapshots), &s.snapshots}, {bus.ObjectStream(bus.BucketKeyIndex), &s.keyIndex},
		{bus.UsageStream, &s.usage},
	} {
		st, err := js.Stream(ctx, x.name)
		if err != nil {
			t.Fatalf("%s: %v", x.name, err)
		}
		info, err := st.Info(ctx)
		if err != nil {
			t.Fatal(err)
		}
		*x.n = info.State.LastSeq
		if x.name == bus.EventStream {
			s.eventsMaxAge = info.Config.MaxAge
		}
	}
	ci, err := h.Projector.Info(ctx)
	if err != nil {
		t.Fatalf("the projector's consumer: %v", err)
	}
	s.projectorAckPolicy, s.projectorDelivered = ci.Config.AckPolicy, ci.Delivered.Stream
	var names []string
	for n := range js.StreamNames(ctx).Name() {
		names = append(names, n)
	}
	slices.Sort(names)
	s.streams = strings.Join(names, " ")
	info, err := h.KeyIndex.GetInfo(ctx, bus.KeyIndexObject)
	if err != nil && !errors.Is(err, jetstream.ErrObjectNotFound) {
		t.Fatal(err)
	}
	if info != nil {
		s.indexDigest = info.Digest
	}
	return s
}
