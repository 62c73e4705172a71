package deploy

import (
	"context"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"

	"github.com/telapi/telkeys/audit"
	"github.com/telapi/telkeys/bus"
	"github.com/telapi/telkeys/bus/bustest"
)

// cluster is the three node configs of deploy/nats, made runnable on
// loopback: free ports, stores and certificates in temporary directories,
// and an auth.conf from a new authority, as the README's procedure makes.
type cluster struct {
	dir       string
	authority *bus.Authority
	files     []string
	clients   []string // client URLs
	leafs     []string // leafnode listeners, host:port
	ca        string
	cert, key string // the nodes' TLS certificate and key
}

func newCluster(t *testing.T) *cluster {
	t.Helper()
	c := &cluster{dir: t.TempDir()}
	var err error
	if c.authority, err = bus.LoadAuthority(filepath.Join(t.TempDir(), "authority"), true); err != nil {
		t.Fatal(err)
	}
	conf, err := c.authority.ServerConfig()
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(c.dir, "auth.conf"), []byte(conf), 0o600); err != nil {
		t.Fatal(err)
	}
	cert, key, ca := bustest.SelfSigned(t)
	c.ca, c.cert, c.key = ca, cert, key
	ports := freePorts(t, 9) // clients, routes, leafnodes
	var routes []string
	for i := range 3 {
		routes = append(routes, fmt.Sprintf("nats-route://127.0.0.1:%d", ports[3+i]))
	}
	for i := range 3 {
		src := filepath.Join("nats", fmt.Sprintf("n%d.conf", i+1))
		b, err := os.ReadFile(src)
		if err != nil {
			t.Fatal(err)
		}
		text := strings.NewReplacer(
			"listen: 0.0.0.0:4222", fmt.Sprintf("listen: 127.0.0.1:%d", ports[i]),
			"http: 127.0.0.1:8222", "",
			"listen: 0.0.0.0:6222", fmt.Sprintf("listen: 127.0.0.1:%d", ports[3+i]),
			"listen: 0.0.0.0:7422", fmt.Sprintf("listen: 127.0.0.1:%d", ports[6+i]),
			"store_dir: /data/jetstream", "store_dir: "+filepath.Join(t.TempDir(), "jetstream"),
			"/etc/nats/tls/server.pem", cert, "/etc/nats/tls/server-key.pem", key, "/etc/nats/tls/ca.pem", ca,
			"nats-route://n1:6222", routes[0], "nats-route://n2:6222", routes[1], "nats-route://n3:6222", routes[2],
		).Replace(string(b))
		dst := filepath.Join(c.dir, filepath.Base(src))
		if err := os.WriteFile(dst, []byte(text), 0o600); err != nil {
			t.Fatal(err)
		}
		c.files = append(c.files, dst)
		c.clients = append(c.clients, fmt.Sprintf("tls://127.0.0.1:%d", ports[i]))
		c.leafs = append(c.leafs, fmt.Sprintf("127.0.0.1:%d", ports[6+i]))
	}
	return c
}

func freePorts(t *testing.T, n int) []int {
	t.Helper()
	var ports []int
	for range n {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		defer ln.Close()
		ports = append(ports, ln.Addr().(*net.TCPAddr).Port)
	}
	return ports
}

// start runs the three nodes in this process until the test ends.
func (c *cluster) start(t *testing.T) {
	t.Helper()
	for _, f := range c.files {
		opts, err := server.ProcessConfigFile(f)
		if err != nil {
			t.Fatalf("%s: %v", f, err)
		}
		opts.NoSigs = true
		ns, err := server.NewServer(opts)
		if err != nil {
			t.Fatal(err)
		}
		go ns.Start()
		t.Cleanup(func() { ns.Shutdown(); ns.WaitForShutdown() })
		if !ns.ReadyForConnections(30 * time.Second) {
			t.Fatalf("%s: not ready", f)
		}
	}
}

func TestClusterConfigsAreValidAndDurable(t *testing.T) {
	c := newCluster(t)
	names := map[string]bool{}
	for _, f := range c.files {
		o, err := server.ProcessConfigFile(f)
		if err != nil {
			t.Fatalf("%s: %v", f, err)
		}
		if !o.JetStream || !o.SyncAlways {
			t.Errorf("%s: JetStream %v, sync always %v; both must be on", f, o.JetStream, o.SyncAlways)
		}
		if o.Cluster.Name != "telkeys" || len(o.Routes) != 3 {
			t.Errorf("%s: cluster %q with %d routes", f, o.Cluster.Name, len(o.Routes))
		}
		if len(o.TrustedOperators) != 1 || o.SystemAccount == "" {
			t.Errorf("%s: trusts %d operators, system account %q: want telkeys' operator only", f, len(o.TrustedOperators), o.SystemAccount)
		}
		if o.TLSConfig == nil || o.Cluster.TLSConfig == nil {
			t.Errorf("%s: client TLS %v, route TLS %v: the bus leaves the machine", f, o.TLSConfig != nil, o.Cluster.TLSConfig != nil)
		}
		if o.LeafNode.Port == 0 || o.LeafNode.TLSConfig == nil || !o.LeafNode.NoAdvertise {
			t.Errorf("%s: leafnode port %d, TLS %v, no_advertise %v: edge sites connect over TLS, to the addresses they name",
				f, o.LeafNode.Port, o.LeafNode.TLSConfig != nil, o.LeafNode.NoAdvertise)
		}
		if names[o.ServerName] {
			t.Errorf("%s: server name %q used twice", f, o.ServerName)
		}
		names[o.ServerName] = true
	}
	// Without the generated auth.conf a node does not start at all.
	if err := os.Remove(filepath.Join(c.dir, "auth.conf")); err != nil {
		t.Fatal(err)
	}
	if _, err := server.ProcessConfigFile(c.files[0]); err == nil {
		t.Fatal("a node config without auth.conf was accepted")
	}
}

// TestClusterRoles runs the deploy configs as a real 3-node cluster and
// proves there what TestRoles proves on the embedded server: anonymous
// clients are refused, and each role may do what it needs and nothing
// else, on R3 streams. An auditor then verifies the history over TLS.
func TestClusterRoles(t *testing.T) {
	c := newCluster(t)
	c.start(t)
	urls := strings.Join(c.clients, ",")
	if nc, err := nats.Connect(urls, nats.RootCAs(c.ca), nats.MaxReconnects(0)); err == nil {
		nc.Close()
		t.Fatal("an anonymous client connected to the cluster")
	}
	bustest.CheckRoles(t, urls, c.authority, 3, nats.RootCAs(c.ca))

	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	creds := bustest.Creds(t, c.authority, bus.RoleAuditor)
	nc, err := bus.Dial(bus.ClientConfig{URLs: urls, Creds: creds, CA: c.ca})
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	js, err := bus.JetStream(nc)
	if err != nil {
		t.Fatal(err)
	}
	// It reads and checks every message; the event bustest.CheckRoles
	// seeds is not signed, so it may be named as a problem.
	_, keys := bustest.Signer(t)
	sum, err := audit.Verify(ctx, js, keys, "", nil)
	if _, broken := err.(*audit.Broken); sum.LastSeq == 0 || (err != nil && !broken) {
		t.Fatalf("the auditor cannot verify the cluster's history: %+v %v", sum, err)
	}
}
