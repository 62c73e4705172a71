package e2e

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"net/http"
	"os/exec"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/telapi/telkeys/bus/bustest"
	"github.com/telapi/telkeys/node"
)

// TelAPI nodes (package node) and the binaries as processes: an HTTP
// client per node, polling a node for an outcome, and the log watcher
// that tells when a process or in-process node listens.

// nodeAPI talks to one TelAPI node over its own keep-alive connections. It
// never fails the test itself, so goroutines may use it.
type nodeAPI struct {
	name   string
	base   string
	client *http.Client
}

func newNodeAPI(t testing.TB, name, addr string) *nodeAPI {
	t.Helper()
	tr := &http.Transport{MaxIdleConnsPerHost: 4}
	t.Cleanup(tr.CloseIdleConnections)
	return &nodeAPI{name: name, base: "http://" + addr, client: &http.Client{Transport: tr, Timeout: 5 * time.Second}}
}

func (n *nodeAPI) send(method, path string, hdr map[string]string, body []byte) (response, error) {
	return sendRequest(n.client, method, n.base+path, hdr, body)
}

// apps is GET /api/v1/apps (READ_TEAM_APPS) with the key in X-API-Key.
func (n *nodeAPI) apps(key string) (response, error) {
	return n.send("GET", "/api/v1/apps", map[string]string{"X-API-Key": key}, nil)
}

// outcome is "200", or "401 invalid_api_key" and the like for a problem.
func outcome(r response) string {
	var p struct{ Code string }
	if r.status >= 400 && json.Unmarshal(r.body, &p) == nil && p.Code != "" {
		return fmt.Sprintf("%d %s", r.status, p.Code)
	}
	return fmt.Sprint(r.status)
}

// pollNode sends req until it gives want, failing the test at the deadline.
// Every other outcome must be in allowed (nil: anything goes).
func pollNode(t testing.TB, within time.Duration, what string, req func() (response, error), want string, allowed ...string) response {
	t.Helper()
	deadline := time.Now().Add(within)
	var last string
	for {
		r, err := req()
		if err != nil {
			last = err.Error()
		} else {
			last = outcome(r)
			if last == want {
				return r
			}
			if allowed != nil && !slices.Contains(allowed, last) {
				t.Fatalf("%s: got %s (body %s), want %s or one of %v", what, last, r.body, want, allowed)
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: no %s within %v; last answer %s", what, want, within, last)
		}
		<-time.After(2 * time.Millisecond) // pace the observations
	}
}

// logWatcher is the io.Writer a telkeys or a node logs JSON lines to. It
// keeps the lines to show when a test fails, less the access log (a line
// per request), and picks out the HTTP address (sent once on addr) and
// the embedded NATS server's client URL.
type logWatcher struct {
	logs    bustest.LogBuffer
	addr    chan string
	mu      sync.Mutex
	partial []byte
	natsURL string
	sent    bool
}

func newLogWatcher() *logWatcher { return &logWatcher{addr: make(chan string, 1)} }

func (w *logWatcher) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.partial = append(w.partial, p...)
	for {
		i := bytes.IndexByte(w.partial, '\n')
		if i < 0 {
			break
		}
		line := w.partial[:i+1]
		w.partial = w.partial[i+1:]
		if bytes.Contains(line, []byte(`"msg":"http"`)) {
			continue
		}
		_, _ = w.logs.Write(line)
		var l struct {
			Msg, Addr string
			ClientURL string `json:"client_url"`
		}
		if json.Unmarshal(line, &l) != nil {
			continue
		}
		switch {
		case strings.HasPrefix(l.Msg, "embedded NATS server started"):
			w.natsURL = l.ClientURL
		case l.Msg == "http listening" && l.Addr != "" && !w.sent:
			w.addr <- l.Addr
			w.sent = true
		}
	}
	return len(p), nil
}

// NATSURL is the client URL of the embedded NATS server, once logged.
func (w *logWatcher) NATSURL() string {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.natsURL
}

// String is every line kept, and an unfinished last one.
func (w *logWatcher) String() string {
	w.mu.Lock()
	defer w.mu.Unlock()
	return strings.TrimSpace(w.logs.String() + string(w.partial))
}

// process is telkeys or telapi-node running as a separate OS process,
// killed when the test ends.
type process struct {
	name string
	cmd  *exec.Cmd
	logs *logWatcher
	done chan struct{} // closed once it has exited
}

func startProcess(t *testing.T, name, binary string, args ...string) *process {
	t.Helper()
	cmd := exec.Command(binary, args...)
	w := newLogWatcher()
	cmd.Stderr = w
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	p := &process{name: name, cmd: cmd, logs: w, done: make(chan struct{})}
	go func() {
		_ = cmd.Wait()
		close(p.done)
	}()
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		<-p.done
		if t.Failed() {
			t.Logf("log of %s:\n%s", name, w)
		}
	})
	return p
}

// waitListening returns the process's HTTP address once it has logged it.
func (p *process) waitListening(t *testing.T, within time.Duration) string {
	t.Helper()
	select {
	case a := <-p.logs.addr:
		return a
	case <-p.done:
		t.Fatalf("%s exited before listening: %v\n%s", p.name, p.cmd.ProcessState, p.logs)
	case <-time.After(within):
		t.Fatalf("%s did not listen within %v\n%s", p.name, within, p.logs)
	}
	return ""
}

// startNodeProcess starts telapi-node; waitListening returns its address.
func startNodeProcess(t *testing.T, name string, args ...string) *process {
	t.Helper()
	return startProcess(t, name, bin.telapiNode, append([]string{"--name", name}, args...)...)
}

// telkeysProcess is telkeys serve, with its embedded NATS, running as a
// separate process and listening.
type telkeysProcess struct {
	*process
	base    string
	natsURL string
	dataDir string
}

func startTelkeysProcess(t *testing.T, dataDir string) *telkeysProcess {
	t.Helper()
	p := startProcess(t, "telkeys on "+dataDir, bin.telkeys, "serve", "--data-dir", dataDir, "--http-addr", "127.0.0.1:0",
		"--nats-addr", "127.0.0.1:0", "--auth-secret", testSecret, "--log-format", "json")
	c := &telkeysProcess{process: p, base: "http://" + p.waitListening(t, 60*time.Second), dataDir: dataDir}
	// telkeys logs the NATS URL before it listens for HTTP.
	if c.natsURL = p.logs.NATSURL(); c.natsURL == "" {
		t.Fatal("telkeys did not log its embedded NATS client_url before listening")
	}
	return c
}

// startNodeInProcess runs node.Serve in a goroutine until the test ends
// and returns the node's HTTP address.
func startNodeInProcess(t *testing.T, cfg node.Config) (addr string) {
	t.Helper()
	addr, _ = startNodeInProcessLogged(t, cfg)
	return addr
}

// startNodeInProcessLogged is startNodeInProcess, and the node's log.
func startNodeInProcessLogged(t *testing.T, cfg node.Config) (addr string, log fmt.Stringer) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	w := newLogWatcher()
	exit := make(chan error, 1)
	go func() { exit <- node.Serve(ctx, cfg, slog.New(slog.NewJSONHandler(w, nil))) }()
	t.Cleanup(func() {
		cancel()
		select {
		case err := <-exit:
			if err != nil {
				t.Errorf("node stopped: %v", err)
			}
		case <-time.After(15 * time.Second):
			t.Error("node did not stop within 15s of its context ending")
		}
		if t.Failed() {
			t.Logf("log of the node:\n%s", w)
		}
	})
	select {
	case addr = <-w.addr:
	case err := <-exit:
		exit <- err
		t.Fatalf("node stopped before listening: %v\n%s", err, w)
	case <-time.After(30 * time.Second):
		t.Fatalf("node did not listen within 30s:\n%s", w)
	}
	return addr, w
}
