package e2e

import (
	"context"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/telapi/telkeys/bus"
	"github.com/telapi/telkeys/bus/bustest"
	"github.com/telapi/telkeys/events"
	"github.com/telapi/telkeys/keyauth"
	"github.com/telapi/telkeys/node"
)

// A node or a validator cut off from NATS while a key is deleted: stale,
// it answers UNAVAILABLE; reconnected, it never accepts the deleted key.

// TestNodeCutOffFromNATS cuts a node off from NATS, deletes a key
// meanwhile, and checks that the node answers UNAVAILABLE once it is stale,
// and that after it reconnects it never accepts the deleted key.
func TestNodeCutOffFromNATS(t *testing.T) {
	s := startService(t)
	proxy := cutOffNATS(t, s)
	const staleness = 2 * time.Second
	addr, logs := startNodeInProcessLogged(t, node.Config{NATSURL: "nats://" + proxy.Addr, NATSCreds: s.credsFor(bus.RoleNode),
		EventsPublicKey: eventsKeyFile(t, s.cfg.DataDir),
		HTTPAddr:        "127.0.0.1:0", MaxStaleness: staleness, Name: "cutoff-node"})
	n := newNodeAPI(t, "cutoff-node", addr)

	s.configureTeam("acme", true, 100, nil)
	k := s.createKey("acme", "doomed")
	key, id := k["key"].(string), k["id"].(string)
	pollNode(t, 10*time.Second, "node accepts the new key", func() (response, error) { return n.apps(key) }, "200", "401 invalid_api_key")

	proxy.Cut()
	tCut := time.Now()
	s.deleteKey("acme", id)
	first503, accepted := watchUntilUnavailable(t, n, key, tCut, staleness)
	t.Logf("cut off: first 503 %v after the cut; %d × 200 for the deleted key before that (max staleness %v)",
		first503.Sub(tCut), accepted, staleness)
	if r, err := n.send("GET", "/readyz", nil, nil); err != nil || r.status != 503 {
		t.Fatalf("readyz while cut off: %v %v", outcome(r), err)
	}

	// Reconnect: 503 until it has caught up, then 401; never 200.
	proxy.Restore(t)
	tRestore := time.Now()
	pollNode(t, 10*time.Second, "after reconnecting, the deleted key is refused",
		func() (response, error) { return n.apps(key) }, "401 invalid_api_key", "503 unavailable")
	t.Logf("reconnected: first 401 %v after restoring the network", time.Since(tRestore))
	// The node said so, under its name: losing the bus at warn, regaining it at info.
	for _, want := range []string{`"level":"WARN","msg":"nats disconnected"`, `"level":"INFO","msg":"nats reconnected"`} {
		bustest.Eventually(t, 5*time.Second, "the node logs "+want, func() bool {
			for _, l := range strings.Split(logs.String(), "\n") {
				if strings.Contains(l, want) && strings.Contains(l, `"node":"cutoff-node"`) {
					return true
				}
			}
			return false
		})
	}
	waitSteadyRefusal(t, n, key)

	// It is current again: a new key works, without a 503 on the way.
	k2 := s.createKey("acme", "fresh")["key"].(string)
	pollNode(t, 5*time.Second, "node accepts a key created after the reconnect",
		func() (response, error) { return n.apps(k2) }, "200", "401 invalid_api_key")
	if r, err := n.send("GET", "/readyz", nil, nil); err != nil || r.status != 200 {
		t.Fatalf("readyz after reconnecting: %v %v", outcome(r), err)
	}
}

// watchUntilUnavailable asks a node cut off at tCut for a key deleted
// since. Until it is stale the node may still accept the key (it cannot
// know); once it answers 503 it must never accept it again. It returns
// when the node has answered 503 for half a second.
func watchUntilUnavailable(t *testing.T, n *nodeAPI, key string, tCut time.Time, staleness time.Duration) (first503 time.Time, accepted int) {
	t.Helper()
	for {
		r, err := n.apps(key)
		now := time.Now()
		if err != nil {
			t.Fatal(err)
		}
		switch o := outcome(r); o {
		case "200":
			if !first503.IsZero() {
				t.Fatalf("accepted the deleted key %v after answering 503", now.Sub(first503))
			}
			accepted++
		case "503 unavailable":
			if first503.IsZero() {
				first503 = now
				expectProblem(t, r, 503, "unavailable")
				if ra := r.header.Get("Retry-After"); ra == "" {
					t.Fatal("503 without Retry-After")
				}
			}
		default:
			t.Fatalf("while cut off: %s %s (a cut-off node cannot have learned of the delete)", o, r.body)
		}
		if first503.IsZero() && now.Sub(tCut) > 3*staleness {
			t.Fatalf("still answering 200 %v after the cut (max staleness %v)", now.Sub(tCut), staleness)
		}
		if !first503.IsZero() && now.Sub(first503) > 500*time.Millisecond {
			return first503, accepted
		}
		<-time.After(2 * time.Millisecond) // pace the observations
	}
}

// waitSteadyRefusal waits until a reconnected node that has refused a
// deleted key keeps refusing it. It may still flip back to 503 for up to
// a heartbeat period: keyauth can answer between the reconnect and
// noticing it (see TestReconnectNeverAnswersFromStaleState). A 503 then is
// harmless; a 200 never is.
func waitSteadyRefusal(t *testing.T, n *nodeAPI, key string) {
	t.Helper()
	flips := 0
	var streak time.Time
	// 401s over a few of keyauth's 50 ms checks.
	bustest.Eventually(t, 5*time.Second, "node steadily refusing after the reconnect", func() bool {
		r, err := n.apps(key)
		if err != nil {
			t.Fatal(err)
		}
		switch o := outcome(r); o {
		case "401 invalid_api_key":
			if streak.IsZero() {
				streak = time.Now()
			}
			return time.Since(streak) > 300*time.Millisecond
		case "503 unavailable":
			flips++
			streak = time.Time{}
			return false
		default:
			t.Fatalf("after reconnecting: %s %s", o, r.body)
			return false
		}
	})
	if flips > 0 {
		t.Logf("after its first 401 the node answered 503 %d times more (answered before noticing the reconnect)", flips)
	}
	for range 100 {
		r, err := n.apps(key)
		if err != nil {
			t.Fatal(err)
		}
		if o := outcome(r); o != "401 invalid_api_key" {
			t.Fatalf("after refusing the deleted key: %s %s", o, r.body)
		}
	}
}

// TestReconnectNeverAnswersFromStaleState: a validator cut off from NATS
// beyond MaxStaleness while events (then a key's deletion) are stored must,
// after it reconnects, never return VALID for the deleted key, not even for
// a moment before it has applied what it missed.
//
// It failed in about one reconnect in three when keyauth noticed reconnects
// only on a 50 ms tick, while the first event or heartbeat on the new
// connection already counted as fresh.
func TestReconnectNeverAnswersFromStaleState(t *testing.T) {
	s := startService(t)
	proxy := cutOffNATS(t, s)
	// The node's connection settings (package node).
	nc, err := bus.Dial(bus.ClientConfig{URLs: "nats://" + proxy.Addr, Creds: s.credsFor(bus.RoleNode),
		Options: []nats.Option{nats.PingInterval(2 * time.Second), nats.MaxPingsOutstanding(2)}})
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	const staleness = 1500 * time.Millisecond
	keys, err := events.ReadPublicKeys(eventsKeyFile(t, s.cfg.DataDir))
	if err != nil {
		t.Fatal(err)
	}
	v, err := keyauth.New(context.Background(), nc, keyauth.Config{Name: "race", MaxStaleness: staleness, Keys: keys})
	if err != nil {
		t.Fatal(err)
	}
	defer v.Close()

	s.configureTeam("acme", true, 100, nil)
	s.configureTeam("other", true, 100, nil)
	const rounds = 3
	for round := range rounds {
		k := s.createKey("acme", "doomed")
		key, id := k["key"].(string), k["id"].(string)
		bustest.Eventually(t, 10*time.Second, "validator knows the key", func() bool { return v.Verify(key, "READ_TEAM_APPS").Valid() })

		proxy.Cut()
		// Events the node misses: some others first, then the deletion.
		for i := range 50 {
			s.configureTeam("other", i%2 == 0, 100, nil)
		}
		s.deleteKey("acme", id)
		bustest.Eventually(t, 3*staleness, "validator goes stale", func() bool {
			return v.Verify(key, "READ_TEAM_APPS").Code == keyauth.Unavailable
		})

		var valid, notFound, unavailable atomic.Int64
		stop := runWorkers(t, 2, func() bool {
			switch v.Verify(key, "READ_TEAM_APPS").Code {
			case keyauth.Valid:
				valid.Add(1)
			case keyauth.NotFound:
				notFound.Add(1)
			case keyauth.Unavailable:
				unavailable.Add(1)
			}
			return true
		})
		proxy.Restore(t)
		bustest.Eventually(t, 10*time.Second, "validator current again", func() bool {
			return v.Current() && v.Verify(key, "READ_TEAM_APPS").Code == keyauth.NotFound
		})
		stop()
		t.Logf("round %d after reconnecting: %d VALID, %d NOT_FOUND, %d UNAVAILABLE for the deleted key",
			round, valid.Load(), notFound.Load(), unavailable.Load())
		if valid.Load() > 0 {
			t.Errorf("round %d: the deleted key was VALID %d times after the reconnect", round, valid.Load())
		}
	}
}

// TestLimitedTeamOnANodeCutOff: a node cut off from NATS serves a limited
// team from the block it has reserved, then answers 429 with Retry-After:
// 1 (the key is fine; the node cannot reserve), and admits again once it
// can reserve.
func TestLimitedTeamOnANodeCutOff(t *testing.T) {
	s := startService(t)
	proxy := cutOffNATS(t, s)
	addr := startNodeInProcess(t, node.Config{NATSURL: "nats://" + proxy.Addr, NATSCreds: s.credsFor(bus.RoleNode),
		EventsPublicKey: eventsKeyFile(t, s.cfg.DataDir), HTTPAddr: "127.0.0.1:0", MaxStaleness: 10 * time.Second, Name: "capped-node"})
	n := newNodeAPI(t, "capped-node", addr)
	limit := int64(10_000)
	s.configureTeam("capped", true, 10, &limit)
	key := s.createKey("capped", "k")["key"].(string)
	pollNode(t, 10*time.Second, "node accepts the new key", func() (response, error) { return n.apps(key) }, "200", "401 invalid_api_key")

	proxy.Cut()
	admitted := 0
	for {
		r, err := n.apps(key)
		if err != nil {
			t.Fatal(err)
		}
		if r.status == 200 {
			admitted++
			if admitted > int(limit)/16 {
				t.Fatalf("admitted %d without the bus: more than a block", admitted)
			}
			continue
		}
		expectProblem(t, r, 429, "rate_limited")
		if ra := r.header.Get("Retry-After"); ra != "1" {
			t.Fatalf("429 while cut off: Retry-After %q, want 1", ra)
		}
		break
	}
	t.Logf("cut off: %d admitted from the node's block, then 429 with Retry-After: 1", admitted)
	proxy.Restore(t)
	// After a reconnect a node answers 503 until it has caught up.
	pollNode(t, 15*time.Second, "admitted again once the node can reserve", func() (response, error) { return n.apps(key) }, "200", "429 rate_limited", "503 unavailable")
}
