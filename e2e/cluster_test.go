package e2e

// The cluster, proven: deploy/local/up.sh starts three nats-server
// processes, two telkeys instances at R3 and two TelAPI nodes; writers
// create and delete keys while readers verify them on both nodes; one
// server is killed and restarted, another paused for 10 s; the recorded
// history is checked with porcupine, and the stream and read models are
// checked for lost and duplicated writes.

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/anishathalye/porcupine"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/telapi/telkeys/auth"
	"github.com/telapi/telkeys/bus"
	"github.com/telapi/telkeys/bus/bustest"
)

// localCluster is what up.sh wrote to cluster.env.
type localCluster struct {
	env map[string]string
	dir string
}

// upCluster runs deploy/local/up.sh in a temporary directory and
// down.sh when the test ends.
func upCluster(t *testing.T) *localCluster {
	t.Helper()
	dir := filepath.Join(t.TempDir(), "cluster")
	up := exec.Command("../deploy/local/up.sh", dir)
	out, err := up.CombinedOutput()
	t.Cleanup(func() {
		if b, err := exec.Command("../deploy/local/down.sh", dir).CombinedOutput(); err != nil {
			t.Errorf("down.sh: %v\n%s", err, b)
		}
		if t.Failed() {
			logs, _ := filepath.Glob(filepath.Join(dir, "logs", "*"))
			for _, l := range logs {
				b, _ := os.ReadFile(l)
				lines := strings.Split(strings.TrimSpace(string(b)), "\n")
				var notable []string // a server's starts, stops and errors
				for _, line := range lines {
					for _, m := range []string{"Starting nats-server", "Server is ready", "Exiting", "[FTL]", "leader", "Trapped"} {
						if strings.Contains(line, m) {
							notable = append(notable, line)
							break
						}
					}
				}
				t.Logf("--- %s (notable)\n%s\n--- (last lines)\n%s", filepath.Base(l), strings.Join(notable[max(0, len(notable)-40):], "\n"),
					strings.Join(lines[max(0, len(lines)-15):], "\n"))
			}
		}
	})
	if err != nil {
		t.Fatalf("up.sh: %v\n%s", err, out)
	}
	f, err := os.Open(filepath.Join(dir, "cluster.env"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	c := &localCluster{env: map[string]string{}, dir: dir}
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		k, v, ok := strings.Cut(strings.TrimSpace(sc.Text()), "=")
		if !ok || strings.HasPrefix(k, "#") {
			continue
		}
		if len(v) >= 2 && (v[0] == '\'' || v[0] == '"') && v[len(v)-1] == v[0] {
			v = v[1 : len(v)-1]
		}
		c.env[k] = v
	}
	for _, k := range []string{"NATS_URLS", "NATS_PID_1", "NATS_PID_2", "NATS_PID_3", "NATS_CMD_1", "NATS_CMD_2", "NATS_CMD_3",
		"TELKEYS_URL_1", "TELKEYS_URL_2", "TELKEYS_DATA_1", "TELKEYS_DATA_2", "NODE_URL_1", "NODE_URL_2",
		"SERVICE_CREDS", "NODE_CREDS", "AUDITOR_CREDS", "EVENTS_PUBLIC_KEY"} {
		if c.env[k] == "" {
			t.Fatalf("cluster.env has no %s", k)
		}
	}
	return c
}

// token mints a token with `telkeys token --data-dir $TELKEYS_DATA_1`, as
// a user of the cluster would.
func (c *localCluster) token(t *testing.T, role auth.Role, team string) string {
	t.Helper()
	args := []string{"token", "--data-dir", c.env["TELKEYS_DATA_1"], "--role", string(role)}
	if team != "" {
		args = append(args, "--team", team)
	}
	code, out, errOut := runTelkeys(t, args...)
	if code != 0 {
		t.Fatalf("telkeys token: %d %s", code, errOut)
	}
	return strings.TrimSpace(out)
}

// serverPid is the pid of server i (1-3), which changes on a restart.
func (c *localCluster) serverPid(t *testing.T, i int) int {
	t.Helper()
	pid, err := strconv.Atoi(c.env[fmt.Sprint("NATS_PID_", i)])
	if err != nil {
		t.Fatal(err)
	}
	return pid
}

// restart runs NATS_CMD_i detached, as an operator would, and records the
// new pid so that the test's end stops it.
func (c *localCluster) restart(t *testing.T, i int) {
	t.Helper()
	cmd := exec.Command("bash", "-c", "exec "+c.env[fmt.Sprint("NATS_CMD_", i)])
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { _ = cmd.Wait() }()
	c.env[fmt.Sprint("NATS_PID_", i)] = strconv.Itoa(cmd.Process.Pid)
	t.Cleanup(func() { _ = cmd.Process.Kill() })
}

// eventsLeader is the server (1-3) that leads the event stream.
func eventsLeader(t *testing.T, js jetstream.JetStream) int {
	t.Helper()
	var leader string
	bustest.Eventually(t, 30*time.Second, "the event stream has a leader", func() bool {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		st, err := js.Stream(ctx, bus.EventStream)
		if err != nil {
			return false
		}
		i, err := st.Info(ctx)
		if err != nil || i.Cluster == nil {
			return false
		}
		leader = i.Cluster.Leader
		return leader != ""
	})
	n, err := strconv.Atoi(strings.TrimPrefix(leader, "n"))
	if err != nil || n < 1 || n > 3 {
		t.Fatalf("event stream leader %q is none of n1, n2, n3", leader)
	}
	return n
}

func TestClusterFaults(t *testing.T) {
	c := upCluster(t)
	_, js := bustest.ConnectURL(t, c.env["NATS_URLS"], c.env["SERVICE_CREDS"])

	services := []string{c.env["TELKEYS_URL_1"], c.env["TELKEYS_URL_2"]}
	nodes := []string{c.env["NODE_URL_1"], c.env["NODE_URL_2"]}
	admin := c.token(t, auth.RoleSuperadmin, "")
	const writers, readersPerNode = 4, 2
	teams := make([]string, writers)
	tokens := make([]string, writers)
	client := &http.Client{Timeout: 10 * time.Second}
	for w := range writers {
		teams[w] = fmt.Sprintf("fault-%d", w)
		tokens[w] = c.token(t, auth.RoleMember, teams[w])
		body := `{"enabled":true,"allowed_scopes":["READ_TEAM_APPS"],"max_keys":1000}`
		r, err := sendRequest(client, "PUT", services[w%2]+"/v1/teams/"+teams[w]+"/api-access",
			map[string]string{"Authorization": "Bearer " + admin}, []byte(body))
		if err != nil || r.status != 200 {
			t.Fatalf("configure %s: %v %d %s", teams[w], err, r.status, r.body)
		}
	}

	h := newHistory()
	var (
		mu         sync.Mutex
		plain      = map[string]string{} // key id → plaintext
		keys       []string              // ids, in creation order
		deleted    = map[string]bool{}   // 204 or 404 after a retry
		acked      = map[string]string{} // created key id → team
		writeOK    []write               // every write's outcome
		node503    = make([][]sample, len(nodes))
		unavail    int // 503 answers from telkeys
		internal   []string
		unanswered int // deletes that never got an answer
	)
	recordWrite := func(call, ret int64, ok bool) {
		mu.Lock()
		writeOK = append(writeOK, write{call, ret, ok})
		mu.Unlock()
	}
	record := func(s *[]sample, at int64, ok bool) {
		mu.Lock()
		*s = append(*s, sample{at, ok})
		mu.Unlock()
	}
	send := func(method, url, tok string, body []byte) (response, error) {
		return sendRequest(client, method, url, map[string]string{"Authorization": "Bearer " + tok}, body)
	}
	noteStatus := func(what string, r response, err error) {
		mu.Lock()
		defer mu.Unlock()
		switch {
		case err != nil:
			unavail++
		case r.status == 503:
			if r.header.Get("Retry-After") == "" {
				internal = append(internal, what+": 503 without Retry-After")
			}
			unavail++
		case r.status >= 500:
			internal = append(internal, fmt.Sprintf("%s: %d %s", what, r.status, r.body))
		}
	}

	var wg sync.WaitGroup
	stop := make(chan struct{})
	stopped := func() bool {
		select {
		case <-stop:
			return true
		default:
			return false
		}
	}
	for w := range writers {
		wg.Go(func() {
			var mine []string // live keys of this writer
			for i := 0; !stopped(); i++ {
				svc := services[i%2]
				if len(mine) < 8 || (len(mine) < 20 && rand.IntN(2) == 0) {
					call := h.now()
					r, err := send("POST", svc+"/v1/teams/"+teams[w]+"/api-keys", tokens[w], []byte(`{"name":"k","scopes":["READ_TEAM_APPS"]}`))
					ret := h.now()
					noteStatus("create", r, err)
					recordWrite(call, ret, err == nil && r.status == 201)
					if err != nil || r.status != 201 {
						continue // not created, or created unseen: never verified
					}
					var k struct{ ID, Key string }
					_ = json.Unmarshal(r.body, &k)
					h.add(w, keyOp{kind: opCreate, key: k.ID}, nil, call, ret)
					mu.Lock()
					plain[k.ID], acked[k.ID] = k.Key, teams[w]
					keys = append(keys, k.ID)
					mu.Unlock()
					mine = append(mine, k.ID)
					continue
				}
				j := rand.IntN(len(mine))
				id := mine[j]
				mine = slices.Delete(mine, j, j+1)
				// Retried until it answers: a 404 after an unanswered try
				// means that try deleted it.
				call, done := h.now(), false
				for try := 0; try < 100 && !done; try++ {
					tryCall := h.now()
					r, err := send("DELETE", services[(i+try)%2]+"/v1/teams/"+teams[w]+"/api-keys/"+id, tokens[w], nil)
					noteStatus("delete", r, err)
					recordWrite(tryCall, h.now(), err == nil && r.status == 204)
					if err == nil && (r.status == 204 || (r.status == 404 && try > 0)) {
						h.add(w, keyOp{kind: opDelete, key: id}, nil, call, h.now())
						mu.Lock()
						deleted[id] = true
						mu.Unlock()
						done = true
					} else if err == nil && r.status != 503 {
						t.Errorf("DELETE %s: %d %s", id, r.status, r.body)
						done = true
					}
					if !done {
						select {
						case <-stop:
							try = 100
						case <-time.After(200 * time.Millisecond): // the 503 asked to retry later
						}
					}
				}
				if !done {
					h.add(w, keyOp{kind: opMaybeDelete, key: id}, nil, call, pending)
					mu.Lock()
					unanswered++
					mu.Unlock()
				}
			}
		})
	}
	for n, base := range nodes {
		for r := range readersPerNode {
			wg.Go(func() {
				id0 := writers + n*readersPerNode + r
				for !stopped() {
					mu.Lock()
					if len(keys) == 0 {
						mu.Unlock()
						<-time.After(10 * time.Millisecond) // pace until the first key exists
						continue
					}
					// Mostly recent keys: those whose deletes are in flight.
					id := keys[max(0, len(keys)-1-rand.IntN(min(len(keys), 40)))]
					key := plain[id]
					mu.Unlock()
					call := h.now()
					res, err := sendRequest(client, "GET", base+"/api/v1/apps", map[string]string{"X-API-Key": key}, nil)
					ret := h.now()
					if err != nil {
						continue
					}
					record(&node503[n], ret, res.status != 503)
					switch res.status {
					case 200:
						h.add(id0, keyOp{kind: opVerify, key: id, node: fmt.Sprint("node-", n+1)}, valid(true), call, ret)
					case 401:
						h.add(id0, keyOp{kind: opVerify, key: id, node: fmt.Sprint("node-", n+1)}, valid(false), call, ret)
					case 503: // fenced: no answer about the key
					default:
						t.Errorf("node %d: %d %s", n+1, res.status, res.body)
					}
				}
			})
		}
	}
	// writesAfter: 20 writes called after at have succeeded.
	writesAfter := func(at int64) func() bool {
		return func() bool {
			mu.Lock()
			defer mu.Unlock()
			n := 0
			for _, w := range writeOK {
				if w.ok && w.call >= at {
					n++
				}
			}
			return n >= 20
		}
	}
	// firstWriteAfter: how long after at the first write called after it
	// succeeded (the write outage a fault at at caused).
	firstWriteAfter := func(at int64) time.Duration {
		mu.Lock()
		defer mu.Unlock()
		first := int64(pending)
		for _, w := range writeOK {
			if w.ok && w.call >= at {
				first = min(first, w.ret)
			}
		}
		return time.Duration(first - at)
	}

	bustest.Eventually(t, 60*time.Second, "writes flow", writesAfter(0))

	// 1. Kill the event stream's leader, and restart it.
	killed := eventsLeader(t, js)
	t.Logf("%v: killing n%d, the event stream's leader", time.Now().Format("15:04:05.000"), killed)
	tKill := h.now()
	if err := syscall.Kill(c.serverPid(t, killed), syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	bustest.Eventually(t, 60*time.Second, "writes flow again after the leader was killed", writesAfter(tKill))
	failoverKill := firstWriteAfter(tKill)
	t.Logf("%v: writes again after %v; restarting n%d", time.Now().Format("15:04:05.000"), failoverKill, killed)
	c.restart(t, killed)
	tRestart := h.now()
	bustest.Eventually(t, 60*time.Second, "writes flow after the restart", writesAfter(tRestart))

	// 2. Pause for 10 s a server that leads no stream if there is one,
	// else one that does not lead the event stream.
	led := streamLeaders(t, js)
	leader := eventsLeader(t, js)
	paused := 0
	for i := 1; i <= 3 && paused == 0; i++ {
		if len(led[i]) == 0 && i != killed {
			paused = i
		}
	}
	for paused == 0 || paused == leader || paused == killed {
		paused = 1 + (paused % 3)
	}
	pid := c.serverPid(t, paused)
	t.Logf("%v: pausing n%d, leader of %v (n%d leads the event stream)", time.Now().Format("15:04:05.000"), paused, led[paused], leader)
	tPause := h.now()
	if err := syscall.Kill(pid, syscall.SIGSTOP); err != nil {
		t.Fatal(err)
	}
	resumed := false
	t.Cleanup(func() {
		if !resumed {
			_ = syscall.Kill(pid, syscall.SIGCONT)
		}
	})
	<-time.After(10 * time.Second) // the pause lasts 10 s
	if err := syscall.Kill(pid, syscall.SIGCONT); err != nil {
		t.Fatal(err)
	}
	resumed = true
	tResume := h.now()
	bustest.Eventually(t, 30*time.Second, "writes flow after the pause", writesAfter(tResume))
	failoverPause := firstWriteAfter(tPause)
	if failoverKill > 30*time.Second || failoverPause > 30*time.Second {
		t.Errorf("writes stopped for %v after the leader was killed and %v after a server was paused; failover must take seconds", failoverKill, failoverPause)
	}
	close(stop)
	wg.Wait()

	// The history against the model.
	res, after := h.check(time.Minute)
	if res != porcupine.Ok {
		t.Errorf("the history is not linearizable against the key model: %s", res)
	}
	if after != 0 {
		t.Errorf("%d verifications accepted a key after its delete had answered", after)
	}
	for _, e := range internal {
		t.Errorf("telkeys answered: %s", e)
	}

	// Lost and duplicated writes: both instances list exactly the keys
	// acknowledged and not deleted, and the stream holds each event once.
	lost := map[string]bool{}
	for i, svc := range services {
		listed := map[string]bool{}
		for w, team := range teams {
			r, err := send("GET", svc+"/v1/teams/"+team+"/api-keys", tokens[w], nil)
			if err != nil || r.status != 200 {
				t.Fatalf("list %s on telkeys %d: %v %d", team, i+1, err, r.status)
			}
			for _, k := range r.json(t)["keys"].([]any) {
				listed[k.(map[string]any)["id"].(string)] = true
			}
		}
		for id := range acked {
			switch {
			case deleted[id] && listed[id]:
				t.Errorf("telkeys %d lists key %s, deleted with a 204", i+1, id)
			case !deleted[id] && !listed[id] && !maybeDeleted(h, id):
				lost[id] = true
				t.Errorf("telkeys %d does not list key %s, created with a 201", i+1, id)
			}
		}
	}
	created, dups := checkEventStreamAt(t, c.env["NATS_URLS"], c.env["AUDITOR_CREDS"])
	for id := range acked {
		if !created[id] && !deleted[id] && !maybeDeleted(h, id) {
			t.Errorf("key %s got a 201 but has no KeyCreated event", id)
		}
	}

	mu.Lock()
	defer mu.Unlock()
	t.Logf("cluster faults: %d operations; %d creates and %d deletes acknowledged, %d deletes never answered, %d answers 503/unreachable; "+
		"lost %d, duplicates %d, accepted after delete %d, porcupine %s",
		len(h.ops), len(acked), len(deleted), unanswered, unavail, len(lost), dups, after, res)
	t.Logf("failover: event-stream leader n%d killed: writes again after %v; n%d paused 10 s (n%d leads the event stream): writes again after %v",
		killed, failoverKill.Round(time.Millisecond), paused, leader, failoverPause.Round(time.Millisecond))
	for n := range nodes {
		var total time.Duration
		for _, g := range gaps(node503[n]) {
			total += g
		}
		t.Logf("node-%d answered 503 for %v in all", n+1, total.Round(time.Millisecond))
	}
}

// write is one create or delete: when it was called, when it answered,
// and whether it succeeded.
type write struct {
	call, ret int64
	ok        bool
}

// streamLeaders lists the streams and consumers each server (1-3) leads
// (an R1 consumer is led by the server that holds it).
func streamLeaders(t *testing.T, js jetstream.JetStream) map[int][]string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	out := map[int][]string{}
	add := func(leader, what string) {
		if n, err := strconv.Atoi(strings.TrimPrefix(leader, "n")); err == nil {
			out[n] = append(out[n], what)
		}
	}
	l := js.ListStreams(ctx)
	for info := range l.Info() {
		if info.Cluster == nil {
			continue
		}
		add(info.Cluster.Leader, info.Config.Name)
		st, err := js.Stream(ctx, info.Config.Name)
		if err != nil {
			t.Fatal(err)
		}
		cl := st.ListConsumers(ctx)
		for ci := range cl.Info() {
			if ci.Cluster != nil {
				add(ci.Cluster.Leader, info.Config.Name+">"+ci.Name)
			}
		}
	}
	if err := l.Err(); err != nil {
		t.Fatal(err)
	}
	return out
}

// maybeDeleted reports whether a delete of id was tried and never answered.
func maybeDeleted(h *history, id string) bool {
	h.mu.Lock()
	defer h.mu.Unlock()
	for _, o := range h.ops {
		if in := o.Input.(keyOp); in.key == id && in.kind == opMaybeDelete {
			return true
		}
	}
	return false
}
