package service

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/telapi/telkeys/auth"
	"github.com/telapi/telkeys/bus"
	"github.com/telapi/telkeys/commands"
	"github.com/telapi/telkeys/events"
)

const testSecret = "test-secret-0123456789abcdef0123456789abcdef"

// start runs telkeys on a real embedded JetStream server and a real HTTP
// listener, on random ports, until the test ends.
func start(t *testing.T) *Service {
	t.Helper()
	s, err := Start(context.Background(), Config{
		DataDir: t.TempDir(), HTTPAddr: "127.0.0.1:0", NATSAddr: "127.0.0.1:0", Replicas: 1,
		AuthSecret: testSecret,
	}, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = s.Shutdown(context.Background()) })
	return s
}

// setWebRTC sets the platform flag through the API and returns the
// sequence of its event.
func setWebRTC(t *testing.T, s *Service, on bool) uint64 {
	t.Helper()
	a, err := auth.New([]byte(testSecret), commands.ValidTeamID)
	if err != nil {
		t.Fatal(err)
	}
	tok, err := a.Mint(auth.Claims{Subject: "test", Role: auth.RoleSuperadmin}, time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	req, _ := http.NewRequest("PUT", "http://"+s.HTTPAddr+"/v1/platform/flags/webrtc", strings.NewReader(fmt.Sprintf(`{"enabled":%v}`, on)))
	req.Header.Set("Authorization", "Bearer "+tok)
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	res.Body.Close()
	if res.StatusCode != 200 {
		t.Fatalf("PUT webrtc: %d", res.StatusCode)
	}
	info, err := s.h.Events.Info(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	return info.State.LastSeq
}

// TestKeyIndexHasOneWriter: while another instance holds the key index
// lock, an instance does not write the index; once it is free, it does.
func TestKeyIndexHasOneWriter(t *testing.T) {
	s := start(t)
	ctx := context.Background()
	seq := setWebRTC(t, s, false) // something to index
	if err := s.validator.WaitApplied(ctx, seq); err != nil {
		t.Fatal(err)
	}
	if _, err := s.h.Snapshots.Create(ctx, bus.KeyIndexLock, []byte("other-instance")); err != nil {
		t.Fatal(err)
	}
	s.writeKeyIndex(ctx, 1)
	if _, err := s.h.KeyIndex.GetInfo(ctx, bus.KeyIndexObject); !errors.Is(err, jetstream.ErrObjectNotFound) {
		t.Fatalf("written while another instance held the lock: %v", err)
	}
	if err := s.h.Snapshots.Delete(ctx, bus.KeyIndexLock); err != nil {
		t.Fatal(err)
	}
	s.writeKeyIndex(ctx, 1)
	info, err := s.h.KeyIndex.GetInfo(ctx, bus.KeyIndexObject)
	if err != nil || info.Metadata["seq"] == "" {
		t.Fatalf("not written once the lock was free: %+v, %v", info, err)
	}
	if _, err := s.h.Snapshots.Get(ctx, bus.KeyIndexLock); !errors.Is(err, jetstream.ErrKeyNotFound) {
		t.Fatalf("the lock was not released: %v", err)
	}
}

// TestRefusesAnUnsignedHistory: a store written before events were signed
// is refused at start, with a message that says what to do.
func TestRefusesAnUnsignedHistory(t *testing.T) {
	dir := t.TempDir()
	cfg := Config{DataDir: dir, HTTPAddr: "127.0.0.1:0", NATSAddr: "127.0.0.1:0", Replicas: 1, AuthSecret: testSecret}
	s, err := Start(context.Background(), cfg, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	ev, err := events.New("evt_old", events.PlatformAggregate, events.Actor{Subject: "old"}, time.Now(), nil,
		events.PlatformFlagSet{Flag: events.FlagWebRTC, Enabled: true})
	if err != nil {
		t.Fatal(err)
	}
	data, _ := ev.Marshal()
	js, _ := jetstream.New(s.nc)
	if _, err := js.Publish(context.Background(), bus.EventSubject(events.PlatformAggregate), data); err != nil {
		t.Fatal(err)
	}
	if err := s.Shutdown(context.Background()); err != nil {
		t.Fatal(err)
	}
	_, err = Start(context.Background(), cfg, slog.New(slog.DiscardHandler))
	if err == nil || !strings.Contains(err.Error(), "did not sign its events") || !strings.Contains(err.Error(), "empty data dir") {
		t.Fatalf("started on an unsigned history: %v", err)
	}
}
