// Package coretest runs the event-sourced core of telkeys for tests of the
// packages built on it: a real embedded JetStream server, the commands and
// a projector, with no HTTP.
package coretest

import (
	"context"
	"log/slog"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/telapi/telkeys/bus"
	"github.com/telapi/telkeys/bus/bustest"
	"github.com/telapi/telkeys/commands"
	"github.com/telapi/telkeys/events"
	"github.com/telapi/telkeys/projections"
)

// Actors for commands.
var (
	Admin  = events.Actor{Subject: "root", Role: "superadmin"}
	Member = events.Actor{Subject: "m", Role: "member"}
)

// Core is a running core. Its projector runs until Stop or the test ends.
type Core struct {
	T       testing.TB
	NS      *bustest.Server
	NC      *nats.Conn
	JS      jetstream.JetStream
	H       *bus.Handles
	Cmds    *commands.Handler
	Tracker *projections.Tracker
	Read    *projections.ReadModel
	// Signer signs the commands' events; Keys trust it.
	Signer *events.Signer
	Keys   *events.Keys
	stop   func()
}

// Start starts a server, the commands and a projector.
func Start(t testing.TB) *Core {
	t.Helper()
	ns, nc, h := bustest.Setup(t)
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	signer, keys := bustest.Signer(t)
	cmds, err := commands.New(commands.Config{JS: js, Events: h.Events, Snapshots: h.Snapshots, Signer: signer, Keys: keys})
	if err != nil {
		t.Fatal(err)
	}
	c := &Core{T: t, NS: ns, NC: nc, JS: js, H: h, Cmds: cmds, Read: projections.NewReadModel(h), Signer: signer, Keys: keys}
	c.StartProjector()
	t.Cleanup(func() { c.Stop() })
	return c
}

// StartProjector starts a new projector (and tracker), as a restart would.
func (c *Core) StartProjector() {
	c.T.Helper()
	tr, err := projections.NewTracker(context.Background(), c.H)
	if err != nil {
		c.T.Fatal(err)
	}
	c.Tracker = tr
	p := projections.NewProjector(c.H, c.JS, c.NC, tr, c.Keys, slog.New(slog.DiscardHandler))
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); _ = p.Run(ctx) }()
	c.stop = func() { cancel(); <-done }
}

// Stop stops the projector.
func (c *Core) Stop() {
	if c.stop != nil {
		c.stop()
		c.stop = nil
	}
}

// Wait waits until the read models include seq.
func (c *Core) Wait(seq uint64) {
	c.T.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	if err := c.Tracker.Wait(ctx, seq); err != nil {
		c.T.Fatalf("read models did not reach event %d: %v", seq, err)
	}
}

// Configure sets a team's access as the superadmin.
func (c *Core) Configure(team string, cfg events.AccessConfig) uint64 {
	c.T.Helper()
	_, res, err := c.Cmds.ConfigureTeamAccess(context.Background(), Admin, team, cfg)
	if err != nil {
		c.T.Fatal(err)
	}
	return res.Seq
}

// Create creates a key as a member.
func (c *Core) Create(team string, scopes ...string) commands.CreatedKey {
	c.T.Helper()
	k, err := c.Cmds.CreateKey(context.Background(), Member, team, "k", scopes)
	if err != nil {
		c.T.Fatal(err)
	}
	return k
}
