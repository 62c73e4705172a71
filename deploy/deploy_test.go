package deploy

import (
	"path/filepath"
	"testing"

	"github.com/nats-io/nats-server/v2/server"
)

func TestClusterConfigsAreValidAndDurable(t *testing.T) {
	files, err := filepath.Glob("nats/n*.conf")
	if err != nil || len(files) != 3 {
		t.Fatalf("want 3 node configs, got %v (%v)", files, err)
	}
	names := map[string]bool{}
	for _, f := range files {
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
		if names[o.ServerName] {
			t.Errorf("%s: server name %q used twice", f, o.ServerName)
		}
		names[o.ServerName] = true
	}
}
