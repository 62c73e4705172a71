package keyauth_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/telapi/telkeys/apikey"
	"github.com/telapi/telkeys/bus"
	"github.com/telapi/telkeys/bus/bustest"
	"github.com/telapi/telkeys/events"
	"github.com/telapi/telkeys/keyauth"
)

// BenchmarkWarmup measures keyauth.New on a history of 100k keys in 100
// teams: replaying the event stream, and from a key index of it.
func BenchmarkWarmup(b *testing.B) {
	const keys, teams = 100_000, 100
	ns, nc, _ := bustest.Setup(b)
	js, err := jetstream.New(nc, jetstream.WithPublishAsyncMaxPending(4096))
	if err != nil {
		b.Fatal(err)
	}
	signer, trusted := bustest.Signer(b)
	prev, n := map[string][]byte{}, 0
	actor := events.Actor{Subject: "bench", Role: "superadmin"}
	publish := func(agg string, p events.Payload) {
		if n++; n%2048 == 0 { // the store fsyncs: let acks catch up
			<-js.PublishAsyncComplete()
		}
		ev, err := events.New(fmt.Sprintf("evt_%d", n), agg, actor, time.Now(), prev[agg], p)
		if err != nil {
			b.Fatal(err)
		}
		signer.Seal(&ev)
		data, err := ev.Marshal()
		if err != nil {
			b.Fatal(err)
		}
		if _, err := js.PublishAsync(bus.EventSubject(agg), data); err != nil {
			b.Fatal(err)
		}
		prev[agg] = ev.Hash
	}
	for t := range teams {
		publish(events.TeamAggregate(fmt.Sprintf("team-%d", t)), events.TeamAccessConfigured{AccessConfig: events.AccessConfig{
			Enabled: true, AllowedScopes: apikey.Scopes(), MaxKeys: 1000}})
	}
	for i := range keys {
		k, _ := apikey.Generate()
		h := apikey.HashOf(k)
		publish(events.TeamAggregate(fmt.Sprintf("team-%d", i%teams)), events.KeyCreated{
			KeyID: fmt.Sprintf("key_%026d", i), Name: "k", Scopes: []string{apikey.ScopeReadTeamApps}, Hash: h[:], Last4: apikey.Last4(k)})
	}
	<-js.PublishAsyncComplete()
	vnc, _ := ns.ConnectAs(b, bus.RoleNode)
	warmup := func(b *testing.B, vnc *nats.Conn, signer *events.Signer) *keyauth.Validator {
		v, err := keyauth.New(context.Background(), vnc, keyauth.Config{Keys: trusted, Signer: signer})
		if err != nil {
			b.Fatal(err)
		}
		if v.Keys() != keys {
			b.Fatalf("%d keys loaded", v.Keys())
		}
		return v
	}
	b.Run("events", func(b *testing.B) {
		for b.Loop() {
			warmup(b, vnc, nil).Close()
		}
	})
	v := warmup(b, nc, signer) // the service's connection and key: nodes may not write the index
	if _, err := v.WriteKeyIndex(context.Background(), 1); err != nil {
		b.Fatal(err)
	}
	v.Close()
	b.Run("key-index", func(b *testing.B) {
		for b.Loop() {
			warmup(b, vnc, nil).Close()
		}
	})
}
