package e2e

// The revocation barrier, seen by clients of real telapi-node processes:
// once a DELETE has answered, no node that answers accepts the key.

import (
	"fmt"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/telapi/telkeys/auth"
	"github.com/telapi/telkeys/bus"
	"github.com/telapi/telkeys/bus/bustest"
)

func TestRevocationBarrier(t *testing.T) {
	const staleness, bound = 2 * time.Second, 3 * time.Second
	t.Setenv("TELKEYS_REVOCATION_WAIT", bound.String()) // read by the telkeys child
	dir := t.TempDir()
	c := startTelkeysProcess(t, dir)
	s := serviceAt(t, c.base)
	creds, keys := natsCreds(t, dir, bus.RoleNode), eventsKeyFile(t, dir)
	var procs []*process
	var apis []*nodeAPI
	for i := range 3 {
		name := fmt.Sprintf("barrier-%d", i)
		p := startNodeProcess(t, name, "--nats-url", c.natsURL, "--nats-creds", creds, "--events-public-key", keys,
			"--http-addr", "127.0.0.1:0", "--max-staleness", staleness.String())
		procs = append(procs, p)
		apis = append(apis, newNodeAPI(t, name, p.waitListening(t, 30*time.Second)))
	}
	s.configureTeam("acme", true, 1000, nil)
	const n = 300
	created := make([]map[string]any, n)
	for i := range created {
		created[i] = s.createKey("acme", fmt.Sprint("k", i))
	}
	for _, a := range apis {
		last := created[n-1]["key"].(string)
		pollNode(t, 10*time.Second, a.name+" has every key", func() (response, error) { return a.apps(last) }, "200", "401 invalid_api_key")
	}
	bustest.Eventually(t, 5*time.Second, "telkeys lists 3 current nodes", func() bool { return len(currentNodes(t, s)) == 3 })

	del := func(t *testing.T, id string) response {
		t.Helper()
		r := s.do("DELETE", "/v1/teams/acme/api-keys/"+id, s.token(auth.RoleMember, "acme"), nil)
		if r.status != 204 {
			t.Fatalf("DELETE %s: %d %s", id, r.status, r.body)
		}
		return r
	}

	t.Run("no node accepts a key once its DELETE has answered", func(t *testing.T) {
		accepted := 0
		for _, k := range created[:n-2] {
			r := del(t, k["id"].(string))
			if got := r.header.Get("Telkeys-Nodes-Confirmed"); got != "3/3" {
				t.Fatalf("Telkeys-Nodes-Confirmed %q, want 3/3", got)
			}
			var wg sync.WaitGroup
			var mu sync.Mutex
			for _, a := range apis { // every node at once
				wg.Go(func() {
					r, err := a.apps(k["key"].(string))
					if err == nil && r.status == 200 {
						mu.Lock()
						accepted++
						mu.Unlock()
					}
				})
			}
			wg.Wait()
		}
		t.Logf("%d deletes × 3 nodes: %d checks accepted a deleted key", n-2, accepted)
		if accepted != 0 {
			t.Fatalf("%d checks accepted a key after its DELETE answered 204", accepted)
		}
	})

	t.Run("a paused node is not waited for beyond the bound, and refuses when it answers again", func(t *testing.T) {
		k := created[n-2]
		paused := procs[0]
		if err := paused.cmd.Process.Signal(syscall.SIGSTOP); err != nil {
			t.Fatal(err)
		}
		start := time.Now()
		r := del(t, k["id"].(string))
		took := time.Since(start)
		if err := paused.cmd.Process.Signal(syscall.SIGCONT); err != nil {
			t.Fatal(err)
		}
		if got := r.header.Get("Telkeys-Nodes-Confirmed"); got != "2/3" {
			t.Fatalf("Telkeys-Nodes-Confirmed %q, want 2/3", got)
		}
		if took > bound+2*time.Second {
			t.Fatalf("the DELETE waited %v, beyond the %v bound", took, bound)
		}
		// Server-Timing says where the wait went: the barrier.
		timing := serverTiming(t, r.header.Get("Server-Timing"))
		if timing["barrier"] < bound/2 || timing["append"] <= 0 || timing["append"] > timing["command"] || timing["barrier"] > took {
			t.Fatalf("Server-Timing %q after %v with a %v bound", r.header.Get("Server-Timing"), took, bound)
		}
		if r, err := apis[0].apps(k["key"].(string)); err != nil || r.status == 200 {
			t.Fatalf("the paused node's first answer: %v %v", outcome(r), err)
		}
	})

	t.Run("a node that stops says so and is dropped at once", func(t *testing.T) {
		stopped := procs[1]
		if err := stopped.cmd.Process.Signal(syscall.SIGTERM); err != nil {
			t.Fatal(err)
		}
		<-stopped.done
		// A node that goes silent stays listed, stale, for ten bounds; one
		// that said it was leaving is no longer listed at all.
		bustest.Eventually(t, bound, "telkeys drops the stopped node", func() bool {
			return len(listedNodes(t, s, "")) == 2 && len(currentNodes(t, s)) == 2
		})
	})

	t.Run("a node that vanishes is not waited for after the bound", func(t *testing.T) {
		gone := procs[2]
		if err := gone.cmd.Process.Kill(); err != nil {
			t.Fatal(err)
		}
		<-gone.done
		bustest.Eventually(t, 2*bound, "telkeys sees the node go stale", func() bool { return len(currentNodes(t, s)) == 1 })
		if listed := listedNodes(t, s, "stale"); len(listed) != 1 {
			t.Fatalf("stale nodes %v, want the killed one", listed)
		}
		k := created[n-1]
		start := time.Now()
		if got := del(t, k["id"].(string)).header.Get("Telkeys-Nodes-Confirmed"); got != "1/1" {
			t.Fatalf("Telkeys-Nodes-Confirmed %q, want 1/1", got)
		}
		t.Logf("a DELETE with one live node took %v", time.Since(start))
	})
}

// currentNodes lists the nodes GET /v1/nodes shows as current.
func currentNodes(t *testing.T, s *testService) []string {
	t.Helper()
	return listedNodes(t, s, "current")
}

// listedNodes lists the nodes GET /v1/nodes shows in state ("": any).
func listedNodes(t *testing.T, s *testService, state string) []string {
	t.Helper()
	r := s.do("GET", "/v1/nodes", s.token(auth.RoleAuditor, ""), nil)
	if r.status != 200 {
		t.Fatalf("GET /v1/nodes: %d %s", r.status, r.body)
	}
	var out []string
	for _, n := range r.json(t)["nodes"].([]any) {
		if n := n.(map[string]any); state == "" || n["state"] == state {
			out = append(out, n["name"].(string))
		}
	}
	return out
}

// serverTiming parses a command's Server-Timing header into its parts.
func serverTiming(t *testing.T, h string) map[string]time.Duration {
	t.Helper()
	out := map[string]time.Duration{}
	for part := range strings.SplitSeq(h, ",") {
		name, dur, ok := strings.Cut(strings.TrimSpace(part), ";dur=")
		ms, err := strconv.ParseFloat(dur, 64)
		if !ok || err != nil || ms < 0 {
			t.Fatalf("Server-Timing %q: bad part %q", h, part)
		}
		out[name] = time.Duration(ms * float64(time.Millisecond))
	}
	if len(out) != 4 {
		t.Fatalf("Server-Timing %q: want command, append, barrier and read", h)
	}
	return out
}
