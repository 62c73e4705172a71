package deploy

import (
	"context"
	"path/filepath"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/telapi/telkeys/apikey"
	"github.com/telapi/telkeys/audit"
	"github.com/telapi/telkeys/bus"
	"github.com/telapi/telkeys/commands"
	"github.com/telapi/telkeys/events"
)

// A server run with accounts.conf: telkeys writes the history; the auditor
// user replays and verifies it, and is refused when it writes.
func TestAuditorIsReadOnly(t *testing.T) {
	t.Setenv("TELKEYS_NATS_PASSWORD", "telkeys-test-password")
	t.Setenv("AUDITOR_NATS_PASSWORD", "auditor-test-password")
	opts, err := server.ProcessConfigFile(filepath.Join("nats", "accounts.conf"))
	if err != nil {
		t.Fatal(err)
	}
	opts.Host, opts.Port = "127.0.0.1", server.RANDOM_PORT
	opts.JetStream, opts.StoreDir, opts.SyncAlways, opts.NoSigs = true, t.TempDir(), true, true
	ns, err := server.NewServer(opts)
	if err != nil {
		t.Fatal(err)
	}
	go ns.Start()
	if !ns.ReadyForConnections(10 * time.Second) {
		t.Fatal("server not ready")
	}
	t.Cleanup(func() { ns.Shutdown(); ns.WaitForShutdown() })
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()

	connect := func(user, pass string) (*nats.Conn, jetstream.JetStream) {
		nc, err := nats.Connect(ns.ClientURL(), nats.UserInfo(user, pass))
		if err != nil {
			t.Fatalf("connect as %s: %v", user, err)
		}
		t.Cleanup(nc.Close)
		js, _ := jetstream.New(nc)
		return nc, js
	}
	_, tjs := connect("telkeys", "telkeys-test-password")
	h, err := bus.Setup(ctx, tjs, 1)
	if err != nil {
		t.Fatal(err)
	}
	cmds, err := commands.New(commands.Config{JS: tjs, Events: h.Events, Snapshots: h.Snapshots})
	if err != nil {
		t.Fatal(err)
	}
	actor := events.Actor{Subject: "root", Role: "superadmin"}
	if _, _, err := cmds.ConfigureTeamAccess(ctx, actor, "acme", events.AccessConfig{Enabled: true, AllowedScopes: apikey.Scopes(), MaxKeys: 3}); err != nil {
		t.Fatal(err)
	}
	if _, err := cmds.CreateKey(ctx, events.Actor{Subject: "m", Role: "member"}, "acme", "k", []string{apikey.ScopeReadTeamApps}); err != nil {
		t.Fatal(err)
	}

	if _, err := nats.Connect(ns.ClientURL(), nats.UserInfo("auditor", "wrong")); err == nil {
		t.Fatal("a wrong password was accepted")
	}
	_, ajs := connect("auditor", "auditor-test-password")
	sum, err := audit.Verify(ctx, ajs, bus.EventStream, nil)
	if err != nil || sum.Events != 2 {
		t.Fatalf("the auditor cannot replay: %+v %v", sum, err)
	}

	short, cancelShort := context.WithTimeout(ctx, 2*time.Second)
	defer cancelShort()
	if _, err := ajs.Publish(short, bus.EventSubject(events.TeamAggregate("acme")), []byte("forged")); err == nil {
		t.Error("the auditor could publish an event")
	}
	if err := ajs.DeleteStream(short, bus.EventStream); err == nil {
		t.Error("the auditor could delete the event stream")
	}
	if st, err := ajs.Stream(short, bus.EventStream); err == nil {
		if err := st.Purge(short); err == nil {
			t.Error("the auditor could purge the event stream")
		}
	}
	if _, err := ajs.Stream(short, bus.KVStream(bus.BucketReadModel)); err == nil {
		t.Error("the auditor could open the read models")
	}
	info, err := h.Events.Info(ctx)
	if err != nil || info.State.Msgs != 2 {
		t.Fatalf("the history changed: %+v %v", info, err)
	}
}
