package keyauth_test

import (
	"context"
	"encoding/hex"
	"fmt"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/vmihailenco/msgpack/v5"

	"github.com/telapi/telkeys/apikey"
	"github.com/telapi/telkeys/bus"
	"github.com/telapi/telkeys/bus/bustest"
	"github.com/telapi/telkeys/keyauth"
	"github.com/telapi/telkeys/projections"
)

// BenchmarkWarmup measures keyauth.New on read models holding 100k keys in
// 100 teams, written straight into the bucket as the projector writes them.
func BenchmarkWarmup(b *testing.B) {
	const keys, teams = 100_000, 100
	ns, nc, _ := bustest.Setup(b)
	js, err := jetstream.New(nc, jetstream.WithPublishAsyncMaxPending(4096))
	if err != nil {
		b.Fatal(err)
	}
	put := func(name string, v any) {
		data, err := msgpack.Marshal(v)
		if err != nil {
			b.Fatal(err)
		}
		if _, err := js.PublishAsync("$KV."+bus.BucketReadModel+"."+name, data); err != nil {
			b.Fatal(err)
		}
	}
	for t := range teams {
		team := fmt.Sprintf("team-%d", t)
		put(bus.TeamPrefix+team, projections.TeamRecord{Seq: 1, Team: team, Configured: true, Enabled: true, AllowedScopes: apikey.Scopes(), MaxKeys: 1000})
	}
	for i := range keys {
		k, _ := apikey.Generate()
		h := apikey.HashOf(k)
		put(bus.KeyPrefix+hex.EncodeToString(h[:]), projections.KeyRecord{
			Seq: uint64(i + 2), ID: fmt.Sprintf("key_%026d", i), Team: fmt.Sprintf("team-%d", i%teams),
			Name: "k", Scopes: []string{apikey.ScopeReadTeamApps}, Hash: hex.EncodeToString(h[:]), Last4: apikey.Last4(k), CreatedAt: time.Now(),
		})
	}
	<-js.PublishAsyncComplete()
	vnc, _ := bustest.Connect(b, ns)
	b.ResetTimer()
	for b.Loop() {
		v, err := keyauth.New(context.Background(), vnc, keyauth.Config{})
		if err != nil {
			b.Fatal(err)
		}
		if v.Keys() != keys {
			b.Fatalf("%d keys loaded", v.Keys())
		}
		v.Close()
	}
	_ = nats.ErrTimeout
}
