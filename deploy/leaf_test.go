package deploy

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/jwt/v2"
	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"

	"github.com/telapi/telkeys/apikey"
	"github.com/telapi/telkeys/auth"
	"github.com/telapi/telkeys/bus"
	"github.com/telapi/telkeys/bus/bustest"
	"github.com/telapi/telkeys/commands"
	"github.com/telapi/telkeys/events"
	"github.com/telapi/telkeys/keyauth"
	"github.com/telapi/telkeys/service"
)

// The edge site of the test: the leaf's credentials name, shared by the
// site's nodes, and the node's name.
const (
	site     = "edge-1"
	edgeNode = "edge-node-1"
)

// TestLeafNodeEdgeSite runs an edge site as the README sets it up: the
// cluster of deploy/nats, telkeys on it with R3 streams, a leaf node from
// deploy/nats/leaf.conf, and a validator that reaches NATS only through
// the leaf, with node credentials. Keys created and deleted on telkeys
// reach the validator through the leaf (and its reports reach telkeys'
// revocation barrier); when the site's link to the cluster drops, the
// validator fails closed within its max staleness, while still connected
// to its leaf; once the link is back it answers again, and a key deleted
// meanwhile is refused, never accepted.
func TestLeafNodeEdgeSite(t *testing.T) {
	const staleness = 2 * time.Second
	c := newCluster(t)
	c.start(t)
	waitJetStream(t, c)
	tk := startTelkeys(t, c, staleness+time.Second) // the barrier's bound: staleness + one heartbeat

	e := startEdge(t, c)
	nodeCreds := writeCreds(t, c.authority, site) // the node's own, of the site's name
	nc, err := bus.Dial(bus.ClientConfig{URLs: e.clientURL, Creds: nodeCreds, CA: c.ca, Name: edgeNode,
		Options: []nats.Option{nats.DontRandomize()}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	if got := nc.ConnectedServerName(); got != site || len(nc.Servers()) != 1 {
		t.Fatalf("the node is connected to %q and knows %v: want its leaf only", got, nc.Servers())
	}
	v := newValidator(t, nc, tk.keys, staleness)

	// Who else may use the leaf: nobody anonymous, and credentials give
	// there only what their role gives anywhere.
	checkLeafClients(t, c, e)

	// 1. Keys created and deleted on telkeys reach the edge.
	tk.configureTeam("acme")
	kept, doomed, cutoff := tk.createKey("acme", "kept"), tk.createKey("acme", "doomed"), tk.createKey("acme", "cut-off")
	until(t, 15*time.Second, "the edge validator accepts the new keys", func() bool {
		return v.Verify(kept, apikey.ScopeReadTeamApps).Code == keyauth.Valid &&
			v.Verify(doomed, apikey.ScopeReadTeamApps).Code == keyauth.Valid &&
			v.Verify(cutoff, apikey.ScopeReadTeamApps).Code == keyauth.Valid
	})
	reporter := site + "." + edgeNode
	until(t, 5*time.Second, "telkeys lists the edge node as current (its reports cross the leaf)", func() bool {
		return tk.nodeState(reporter) == "current"
	})
	if confirmed := tk.deleteKey("acme", tk.ids[doomed]); confirmed != "1/1" {
		t.Fatalf("DELETE confirmed by %s nodes; want 1/1, the edge node", confirmed)
	}
	// The barrier held the DELETE until the edge node had applied it.
	if got := v.Verify(doomed, apikey.ScopeReadTeamApps).Code; got != keyauth.NotFound {
		t.Fatalf("the edge answers %v for a key deleted and confirmed; want NOT_FOUND", got)
	}

	// 2. The site loses its link to the cluster; the node keeps its leaf.
	e.cut()
	tCut := time.Now()
	until(t, 5*time.Second, "the leaf notices it lost the cluster", func() bool { return e.leaf.NumLeafNodes() == 0 })
	first := watchUntilUnavailable(t, v, kept, tCut, staleness)
	t.Logf("cut off: the edge answered UNAVAILABLE %v after the cut (max staleness %v)", first.Sub(tCut), staleness)
	if !nc.IsConnected() || nc.Stats().Reconnects != 0 {
		t.Fatalf("the node lost its leaf (connected %v, reconnects %d): the test must cut the site's link only",
			nc.IsConnected(), nc.Stats().Reconnects)
	}
	// A delete while the site is cut off: the barrier cannot hear the
	// edge node, and answers once the bound has fenced it.
	if confirmed := tk.deleteKey("acme", tk.ids[cutoff]); confirmed != "0/0" && confirmed != "0/1" {
		t.Fatalf("DELETE while the site is cut off confirmed by %s nodes", confirmed)
	}
	for _, k := range []string{kept, cutoff} {
		if got := v.Verify(k, apikey.ScopeReadTeamApps).Code; got != keyauth.Unavailable {
			t.Fatalf("cut off, the edge answers %v; want UNAVAILABLE", got)
		}
	}

	// 3. The link is back: the edge answers again, from the events it
	// missed: the key deleted meanwhile is refused, never accepted.
	e.restore(t)
	tRestore := time.Now()
	until(t, 15*time.Second, "the edge answers VALID again for a key still valid", func() bool {
		if got := v.Verify(cutoff, apikey.ScopeReadTeamApps).Code; got == keyauth.Valid {
			t.Fatal("the edge accepted a key deleted while it was cut off")
		}
		return v.Verify(kept, apikey.ScopeReadTeamApps).Code == keyauth.Valid
	})
	t.Logf("restored: the edge answered VALID %v after the link came back", time.Since(tRestore))
	if got := v.Verify(cutoff, apikey.ScopeReadTeamApps).Code; got != keyauth.NotFound {
		t.Fatalf("back online, the edge answers %v for the key deleted meanwhile; want NOT_FOUND", got)
	}
	until(t, 5*time.Second, "telkeys lists the edge node as current again", func() bool {
		return tk.nodeState(reporter) == "current"
	})
}

// TestLeafLinkIsHeldToTheNodeRole links to the cluster a leaf that does
// not check its clients at all (no auth.conf, anyone may connect) with the
// site's node credentials, and has an anonymous client there try what a
// node must not do. The link's credentials bound what crosses it, not the
// leaf's own config: nothing is stored, nothing is deleted, and neither a
// heartbeat nor a report under another name reaches telkeys, while what a
// node may do (a report under the site's name, reading a stream's info)
// works.
func TestLeafLinkIsHeldToTheNodeRole(t *testing.T) {
	c := newCluster(t)
	c.start(t)
	waitJetStream(t, c)
	svc, err := bus.Dial(bus.ClientConfig{URLs: strings.Join(c.clients, ","), Creds: bustest.Creds(t, c.authority, bus.RoleService), CA: c.ca})
	if err != nil {
		t.Fatal(err)
	}
	defer svc.Close()
	js, err := bus.JetStream(svc)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	h, err := bus.Setup(ctx, js, 3)
	if err != nil {
		t.Fatal(err)
	}
	heard, err := svc.SubscribeSync(bus.HeartbeatSubject)
	if err != nil {
		t.Fatal(err)
	}
	reports, err := svc.SubscribeSync(bus.NodesAppliedPrefix + ">")
	if err != nil {
		t.Fatal(err)
	}
	if err := svc.Flush(); err != nil {
		t.Fatal(err)
	}
	before := streamAndProjector(t, ctx, h)

	conf := filepath.Join(t.TempDir(), "open-leaf.conf")
	text := fmt.Sprintf(`server_name: open-leaf
listen: 127.0.0.1:-1
leafnodes { remotes = [ { url: "tls://%s", credentials: %q, tls { ca_file: %q } } ] }
`, c.leafs[0], writeCreds(t, c.authority, site), c.ca)
	if err := os.WriteFile(conf, []byte(text), 0o600); err != nil {
		t.Fatal(err)
	}
	opts, err := server.ProcessConfigFile(conf)
	if err != nil {
		t.Fatal(err)
	}
	opts.NoSigs = true
	leaf, err := server.NewServer(opts)
	if err != nil {
		t.Fatal(err)
	}
	go leaf.Start()
	t.Cleanup(func() { leaf.Shutdown(); leaf.WaitForShutdown() })
	if !leaf.ReadyForConnections(10 * time.Second) {
		t.Fatal("the open leaf is not ready")
	}
	until(t, 10*time.Second, "the open leaf links to the cluster", func() bool { return leaf.NumLeafNodes() == 1 })
	nc, err := nats.Connect(leaf.ClientURL(), nats.CustomInboxPrefix(bus.InboxPrefix(bus.RoleNode)))
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()

	// What a node may do works through the link.
	until(t, 10*time.Second, "a stream's info through the link", func() bool {
		_, err := nc.Request(bus.ReadersAPIPrefix+".STREAM.INFO."+bus.EventStream, nil, time.Second)
		return err == nil
	})
	projector := bus.EventStream + "." + bus.ProjectorConsumer
	for _, p := range []struct{ subject, data string }{
		{bus.EventSubject(events.TeamAggregate("acme")), "forged"},
		{bus.HeartbeatSubject, "18446744073709551615"},
		{bus.NodeAppliedSubject("another-site", "n"), "1"},
		{"$JS.API.STREAM.PURGE." + bus.EventStream, ""},
		{bus.ReadersAPIPrefix + ".CONSUMER.DELETE." + projector, ""},
		{bus.ReadersAPIPrefix + ".CONSUMER.MSG.NEXT." + projector, `{"batch":10}`},
	} {
		if err := nc.PublishRequest(p.subject, nc.NewRespInbox(), []byte(p.data)); err != nil {
			t.Fatal(err)
		}
	}
	// Then a report under the site's name: the link keeps the order, so
	// once it has reached telkeys, the probes before it were refused.
	if err := nc.Publish(bus.NodeAppliedSubject(site, "n"), []byte("1")); err != nil {
		t.Fatal(err)
	}
	m, err := reports.NextMsg(10 * time.Second)
	if err != nil {
		t.Fatalf("a report under the site's name did not cross the link: %v", err)
	}
	if m.Subject != bus.NodeAppliedSubject(site, "n") {
		t.Fatalf("telkeys heard %s: a report under another name crossed the link", m.Subject)
	}
	if m, err := heard.NextMsg(100 * time.Millisecond); err == nil {
		t.Fatalf("a heartbeat from the site reached telkeys: %q", m.Data)
	}
	if after := streamAndProjector(t, ctx, h); after != before {
		t.Fatalf("the probes changed the events or the projector:\nbefore %+v\nafter  %+v", before, after)
	}
}

// streamAndProjector is what the probes must not change: the event stream
// and the projector's consumer.
func streamAndProjector(t *testing.T, ctx context.Context, h *bus.Handles) [4]uint64 {
	t.Helper()
	si, err := h.Events.Info(ctx)
	if err != nil {
		t.Fatal(err)
	}
	ci, err := h.Projector.Info(ctx)
	if err != nil {
		t.Fatalf("the projector's consumer: %v", err)
	}
	return [4]uint64{si.State.Msgs, si.State.LastSeq, ci.Delivered.Consumer, uint64(ci.Created.UnixNano())}
}

// watchUntilUnavailable asks the cut-off validator for a valid key until it
// answers UNAVAILABLE, and fails if it still answers VALID after its max
// staleness and 2 s, or answers anything else. It returns when it first
// answered UNAVAILABLE, having checked that it never answers VALID again
// over the next 300 ms.
func watchUntilUnavailable(t *testing.T, v *keyauth.Validator, key string, tCut time.Time, staleness time.Duration) time.Time {
	t.Helper()
	var first time.Time
	for {
		got := v.Verify(key, apikey.ScopeReadTeamApps).Code
		now := time.Now()
		switch {
		case got == keyauth.Unavailable && first.IsZero():
			first = now
		case got == keyauth.Valid && !first.IsZero():
			t.Fatalf("VALID again %v after the first UNAVAILABLE, while cut off", now.Sub(first))
		case got != keyauth.Valid && got != keyauth.Unavailable:
			t.Fatalf("cut off, the edge answers %v for a valid key", got)
		}
		if first.IsZero() && now.Sub(tCut) > staleness+2*time.Second {
			t.Fatalf("still VALID %v after the cut (max staleness %v): the edge does not fail closed", now.Sub(tCut), staleness)
		}
		if !first.IsZero() && now.Sub(first) > 300*time.Millisecond {
			return first
		}
		<-time.After(2 * time.Millisecond) // pace the observations
	}
}

// until polls cond until it holds, or fails the test (bustest.Eventually).
func until(t *testing.T, within time.Duration, what string, cond func() bool) {
	t.Helper()
	bustest.Eventually(t, within, what, cond)
}

// checkLeafClients: an anonymous client cannot connect to the leaf; a
// node there may not publish an event, nor hear others' replies; service
// credentials there reach nothing of telkeys (the telkeys account has no
// link to the cluster).
func checkLeafClients(t *testing.T, c *cluster, e *edge) {
	t.Helper()
	if nc, err := nats.Connect(e.clientURL, nats.RootCAs(c.ca), nats.MaxReconnects(0)); err == nil {
		nc.Close()
		t.Fatal("an anonymous client connected to the leaf")
	}

	refused := make(chan error, 4)
	nc, err := bus.Dial(bus.ClientConfig{URLs: e.clientURL, Creds: writeCreds(t, c.authority, site), CA: c.ca,
		Options: []nats.Option{nats.ErrorHandler(func(_ *nats.Conn, _ *nats.Subscription, err error) {
			select {
			case refused <- err:
			default:
			}
		})}})
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	expectRefused := func(what string, try func() error) {
		t.Helper()
		if err := try(); err != nil {
			t.Fatal(err)
		}
		select {
		case err := <-refused:
			if !strings.Contains(strings.ToLower(err.Error()), "permissions violation") {
				t.Fatalf("a node at the leaf trying to %s: %v", what, err)
			}
		case <-time.After(5 * time.Second):
			t.Fatalf("the leaf let a node %s", what)
		}
	}
	expectRefused("publish an event", func() error {
		return nc.Publish(bus.EventSubject(events.TeamAggregate("acme")), []byte("forged"))
	})
	expectRefused("hear other clients' replies", func() error {
		_, err := nc.SubscribeSync("_INBOX.>")
		return err
	})

	svc, err := bus.Dial(bus.ClientConfig{URLs: e.clientURL, Creds: bustest.Creds(t, c.authority, bus.RoleService), CA: c.ca})
	if err != nil {
		t.Fatal(err)
	}
	defer svc.Close()
	_, err = svc.Request("$JS.API.STREAM.INFO."+bus.EventStream, nil, time.Second)
	if err == nil {
		t.Fatal("service credentials at the leaf reached telkeys' streams")
	}
}

// edge is an edge site's leaf node, from deploy/nats/leaf.conf, whose link
// to each cluster node goes through a proxy that the test can cut.
type edge struct {
	leaf      *server.Server
	clientURL string
	proxies   []*bustest.CutProxy
}

func startEdge(t *testing.T, c *cluster) *edge {
	t.Helper()
	e := &edge{}
	for _, hub := range c.leafs {
		e.proxies = append(e.proxies, bustest.NewCutProxy(t, hub))
	}
	// The site's credentials: the node role, named for the site.
	siteCreds := writeCreds(t, c.authority, site)
	b, err := os.ReadFile(filepath.Join("nats", "leaf.conf"))
	if err != nil {
		t.Fatal(err)
	}
	port := freePorts(t, 1)[0]
	text := strings.NewReplacer(
		"listen: 0.0.0.0:4222", fmt.Sprintf("listen: 127.0.0.1:%d", port),
		"http: 127.0.0.1:8222", "",
		"/etc/nats/tls/server.pem", c.cert, "/etc/nats/tls/server-key.pem", c.key, "/etc/nats/tls/ca.pem", c.ca,
		"tls://n1:7422", "tls://"+e.proxies[0].Addr, "tls://n2:7422", "tls://"+e.proxies[1].Addr, "tls://n3:7422", "tls://"+e.proxies[2].Addr,
		"/etc/nats/edge-1.creds", siteCreds,
	).Replace(string(b))
	// Beside the cluster's auth.conf, which the leaf includes.
	conf := filepath.Join(c.dir, "leaf.conf")
	if err := os.WriteFile(conf, []byte(text), 0o600); err != nil {
		t.Fatal(err)
	}
	// The readers' account, as the README finds it: the issuer of node
	// credentials.
	t.Setenv("TELKEYS_READERS_ACCOUNT", issuer(t, siteCreds))
	opts, err := server.ProcessConfigFile(conf)
	if err != nil {
		t.Fatalf("leaf.conf: %v", err)
	}
	if opts.JetStream {
		t.Fatal("leaf.conf enables JetStream: the edge stores nothing")
	}
	opts.NoSigs = true
	ns, err := server.NewServer(opts)
	if err != nil {
		t.Fatal(err)
	}
	go ns.Start()
	t.Cleanup(func() { ns.Shutdown(); ns.WaitForShutdown() })
	if !ns.ReadyForConnections(10 * time.Second) {
		t.Fatal("the leaf is not ready")
	}
	e.leaf, e.clientURL = ns, fmt.Sprintf("tls://127.0.0.1:%d", port)
	until(t, 10*time.Second, "the leaf links to the cluster", func() bool { return ns.NumLeafNodes() == 1 })
	return e
}

// issuer returns the account that signed the credentials in file.
func issuer(t *testing.T, file string) string {
	t.Helper()
	data, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	token, err := jwt.ParseDecoratedJWT(data)
	if err != nil {
		t.Fatal(err)
	}
	uc, err := jwt.DecodeUserClaims(token)
	if err != nil {
		t.Fatal(err)
	}
	return uc.Issuer
}

// writeCreds mints node credentials named name.
func writeCreds(t *testing.T, a *bus.Authority, name string) string {
	t.Helper()
	data, err := a.Credentials(bus.RoleNode, name, 0)
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(t.TempDir(), name+".creds")
	if err := bus.WriteFile(path, data); err != nil {
		t.Fatal(err)
	}
	return path
}

func (e *edge) cut() {
	for _, p := range e.proxies {
		p.Cut()
	}
}

func (e *edge) restore(t *testing.T) {
	for _, p := range e.proxies {
		p.Restore(t)
	}
}

// newValidator starts the edge node's validator on nc, retrying while the
// leaf's link does not yet carry the cluster's interest.
func newValidator(t *testing.T, nc *nats.Conn, keys *events.Keys, staleness time.Duration) *keyauth.Validator {
	t.Helper()
	var v *keyauth.Validator
	until(t, 15*time.Second, "the edge validator loads through the leaf", func() bool {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		var err error
		v, err = keyauth.New(ctx, nc, keyauth.Config{Keys: keys, Name: edgeNode, MaxStaleness: staleness,
			Report: bus.NodeAppliedSubject(site, edgeNode)})
		if err != nil {
			t.Logf("keyauth.New through the leaf: %v", err)
		}
		return err == nil
	})
	t.Cleanup(v.Close)
	return v
}

// waitJetStream returns once the cluster's JetStream answers: a new
// cluster elects its meta leader a few seconds after it starts, and
// telkeys' first setup would wait out its whole 10 s timeout before then.
func waitJetStream(t *testing.T, c *cluster) {
	t.Helper()
	nc, err := bus.Dial(bus.ClientConfig{URLs: strings.Join(c.clients, ","), Creds: bustest.Creds(t, c.authority, bus.RoleService), CA: c.ca})
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	js, err := bus.JetStream(nc)
	if err != nil {
		t.Fatal(err)
	}
	until(t, 30*time.Second, "the cluster's JetStream answers", func() bool {
		ctx, cancel := context.WithTimeout(context.Background(), 500*time.Millisecond)
		defer cancel()
		_, err := js.AccountInfo(ctx)
		return err == nil
	})
}

// telkeys is telkeys serve, in process, on the cluster.
type telkeys struct {
	t    *testing.T
	svc  *service.Service
	auth *auth.Authority
	keys *events.Keys
	ids  map[string]string // key → id
}

const testSecret = "leaf-test-secret-0123456789abcdef0123456789"

func startTelkeys(t *testing.T, c *cluster, revocationWait time.Duration) *telkeys {
	t.Helper()
	signingKey := filepath.Join(t.TempDir(), "events-signing.key")
	signer, err := events.LoadSigningKey(signingKey, true)
	if err != nil {
		t.Fatal(err)
	}
	logs := &bustest.LogBuffer{}
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("telkeys' log:\n%s", logs)
		}
	})
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	svc, err := service.Start(ctx, service.Config{
		DataDir: t.TempDir(), HTTPAddr: "127.0.0.1:0",
		NATSURL: strings.Join(c.clients, ","), NATSCreds: bustest.Creds(t, c.authority, bus.RoleService), NATSCA: c.ca,
		SigningKey: signingKey, Replicas: 3, AuthSecret: testSecret, RevocationWait: revocationWait,
	}, slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: slog.LevelInfo})))
	if err != nil {
		t.Fatalf("telkeys serve --replicas 3 on the cluster: %v", err)
	}
	t.Cleanup(func() { _ = svc.Shutdown(context.Background()) })
	a, err := auth.New([]byte(testSecret), commands.ValidTeamID)
	if err != nil {
		t.Fatal(err)
	}
	return &telkeys{t: t, svc: svc, auth: a, keys: events.NewKeys(signer.PublicKey()), ids: map[string]string{}}
}

// do sends an API request as role (of team), and returns the status, the
// body and the response's headers.
func (k *telkeys) do(method, path string, role auth.Role, team string, body any) (int, []byte, http.Header) {
	k.t.Helper()
	tok, err := k.auth.Mint(auth.Claims{Subject: string(role) + "-test", Role: role, Team: team}, time.Minute)
	if err != nil {
		k.t.Fatal(err)
	}
	var r io.Reader
	if body != nil {
		b, _ := json.Marshal(body)
		r = strings.NewReader(string(b))
	}
	req, err := http.NewRequest(method, "http://"+k.svc.HTTPAddr+path, r)
	if err != nil {
		k.t.Fatal(err)
	}
	req.Header.Set("Authorization", "Bearer "+tok)
	req.Header.Set("Content-Type", "application/json")
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		k.t.Fatalf("%s %s: %v", method, path, err)
	}
	defer res.Body.Close()
	b, err := io.ReadAll(res.Body)
	if err != nil {
		k.t.Fatal(err)
	}
	return res.StatusCode, b, res.Header
}

func (k *telkeys) configureTeam(team string) {
	k.t.Helper()
	body := map[string]any{"enabled": true, "max_keys": 10,
		"allowed_scopes": []string{apikey.ScopeCreateCallToken, apikey.ScopeReadCallToken, apikey.ScopeReadTeamApps}}
	if status, b, _ := k.do("PUT", "/v1/teams/"+team+"/api-access", auth.RoleSuperadmin, "", body); status != 200 {
		k.t.Fatalf("configure %s: %d %s", team, status, b)
	}
}

// createKey creates a key and returns it (its id in k.ids).
func (k *telkeys) createKey(team, name string) string {
	k.t.Helper()
	status, b, _ := k.do("POST", "/v1/teams/"+team+"/api-keys", auth.RoleMember, team,
		map[string]any{"name": name, "scopes": []string{apikey.ScopeReadTeamApps}})
	var out struct{ Key, ID string }
	if status != 201 || json.Unmarshal(b, &out) != nil || out.Key == "" {
		k.t.Fatalf("create key %s in %s: %d %s", name, team, status, b)
	}
	k.ids[out.Key] = out.ID
	return out.Key
}

// deleteKey deletes a key and returns how many live nodes confirmed it
// (Telkeys-Nodes-Confirmed).
func (k *telkeys) deleteKey(team, id string) string {
	k.t.Helper()
	status, b, h := k.do("DELETE", "/v1/teams/"+team+"/api-keys/"+id, auth.RoleMember, team, nil)
	if status != 204 {
		k.t.Fatalf("delete %s: %d %s", id, status, b)
	}
	return h.Get("Telkeys-Nodes-Confirmed")
}

// nodeState is the state GET /v1/nodes shows for the node reporting as
// name, "" if it is not listed.
func (k *telkeys) nodeState(name string) string {
	k.t.Helper()
	status, b, _ := k.do("GET", "/v1/nodes", auth.RoleAuditor, "", nil)
	var out struct {
		Nodes []struct{ Name, State string }
	}
	if status != 200 || json.Unmarshal(b, &out) != nil {
		k.t.Fatalf("GET /v1/nodes: %d %s", status, b)
	}
	for _, n := range out.Nodes {
		if n.Name == name {
			return n.State
		}
	}
	return ""
}
