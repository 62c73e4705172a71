package e2e

import (
	"context"
	"path/filepath"
	"sync"
	"testing"

	"github.com/telapi/telkeys/auth"
	"github.com/telapi/telkeys/bus"
	"github.com/telapi/telkeys/bus/bustest"
	"github.com/telapi/telkeys/events"
	"github.com/telapi/telkeys/service"
)

// Several telkeys instances on one NATS: max_keys holds across them, a
// write on one is read on the other, and projection fails over.

// startPair starts two telkeys instances sharing one NATS server (the first
// one's embedded server), each with its own HTTP port.
func startPair(t *testing.T) (a, b *testService) {
	t.Helper()
	a = startService(t)
	b = startService(t, sharingNATSOf(a))
	return a, b
}

func TestMaxKeysUnderConcurrencyAcrossTwoInstances(t *testing.T) {
	a, b := startPair(t)
	a.enableTeam("acme", 3)
	tok := a.token(auth.RoleMember, "acme")

	// FailNow may not be called from these goroutines: they collect
	// transport errors for the test to report.
	var wg sync.WaitGroup
	var mu sync.Mutex
	statuses := map[int]int{}
	var errs []error
	for i := range 50 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			s := a
			if i%2 == 1 {
				s = b
			}
			r, err := s.trySend("POST", "/v1/teams/acme/api-keys", map[string]string{"Authorization": bearer(tok)}, keyBody("k"))
			mu.Lock()
			defer mu.Unlock()
			if err != nil {
				errs = append(errs, err)
				return
			}
			statuses[r.status]++
		}()
	}
	wg.Wait()
	if len(errs) > 0 {
		t.Fatalf("%d creates failed: %v", len(errs), errs)
	}
	if statuses[201] != 3 || statuses[409] != 47 || len(statuses) != 2 {
		t.Fatalf("statuses %v, want exactly 3 × 201 and 47 × 409", statuses)
	}
	for _, s := range []*testService{a, b} {
		r := s.do("GET", "/v1/teams/acme/api-keys", tok, nil)
		if n := len(r.json(t)["keys"].([]any)); n != 3 {
			t.Fatalf("instance lists %d keys, want 3", n)
		}
	}
}

// After a command returns on one instance, the next query on the other
// instance reflects it.
func TestReadYourWritesAcrossInstances(t *testing.T) {
	a, b := startPair(t)
	a.enableTeam("acme", 100)
	tok := a.token(auth.RoleMember, "acme")
	for i := range 20 {
		writer, reader := a, b
		if i%2 == 1 {
			writer, reader = b, a
		}
		id := writer.createKey("acme", "k")["id"].(string)
		r := reader.do("GET", "/v1/teams/acme/api-keys", tok, nil)
		keys := r.json(t)["keys"].([]any)
		if len(keys) != i+1 || keys[i].(map[string]any)["id"] != id {
			t.Fatalf("round %d: the other instance does not see the new key: %s", i, r.body)
		}
	}
	// Deletes too.
	r := a.do("GET", "/v1/teams/acme/api-keys", tok, nil)
	first := r.json(t)["keys"].([]any)[0].(map[string]any)["id"].(string)
	b.deleteKey("acme", first)
	r = a.do("GET", "/v1/teams/acme/api-keys", tok, nil)
	for _, k := range r.json(t)["keys"].([]any) {
		if k.(map[string]any)["id"] == first {
			t.Fatal("deleted key still listed on the other instance")
		}
	}
}

// Two instances on an external NATS: when one stops, the other's projector
// takes over (the consumer's pin moves) and keeps the read models current.
func TestProjectionFailsOverWhenAnInstanceStops(t *testing.T) {
	ns := bustest.NewServer(t)
	creds := bustest.Creds(t, ns.Authority, bus.RoleService)
	key := filepath.Join(t.TempDir(), "signing.key") // one deployment, one key
	if _, err := events.LoadSigningKey(key, true); err != nil {
		t.Fatal(err)
	}
	external := func(c *service.Config) { c.NATSURL, c.NATSCreds, c.SigningKey = ns.ClientURL(), creds, key }
	a, b := startService(t, external), startService(t, external)
	a.enableTeam("acme", 100)
	tok := a.token(auth.RoleMember, "acme")
	for i := range 6 {
		s := a
		if i%2 == 1 {
			s = b
		}
		s.createKey("acme", "before")
	}
	if err := a.Shutdown(context.Background()); err != nil {
		t.Fatal(err)
	}
	for i := range 5 {
		id := b.createKey("acme", "after")["id"].(string)
		r := b.do("GET", "/v1/teams/acme/api-keys", tok, nil)
		keys := r.json(t)["keys"].([]any)
		if len(keys) != 7+i || keys[6+i].(map[string]any)["id"] != id {
			t.Fatalf("after failover, create %d is not listed: %s", i, r.body)
		}
	}
}
