package e2e

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/telapi/telkeys/auth"
	"github.com/telapi/telkeys/bus"
	"github.com/telapi/telkeys/bus/bustest"
	"github.com/telapi/telkeys/commands"
	"github.com/telapi/telkeys/events"
	"github.com/telapi/telkeys/service"
)

// The shared harness: the binaries, an in-process telkeys, HTTP requests
// to it and reads of its JetStream.

// bin holds telkeys and telapi-node, built once for the tests that run
// them as real processes, with the race detector when the tests have it.
var bin struct{ telkeys, telapiNode string }

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "telkeys-e2e-bin-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	bin.telkeys, bin.telapiNode = filepath.Join(dir, "telkeys"), filepath.Join(dir, "telapi-node")
	args := []string{"build"}
	if raceEnabled {
		args = append(args, "-race")
	}
	for out, pkg := range map[string]string{bin.telkeys: "../cmd/telkeys", bin.telapiNode: "../cmd/telapi-node"} {
		cmd := exec.Command("go", append(args, "-o", out, pkg)...)
		if b, err := cmd.CombinedOutput(); err != nil {
			fmt.Fprintf(os.Stderr, "go build %s: %v\n%s", pkg, err, b)
			os.Exit(1)
		}
	}
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

// runTelkeys runs the telkeys binary to its end and returns its exit
// code, stdout and stderr.
func runTelkeys(t testing.TB, args ...string) (code int, stdout, stderr string) {
	t.Helper()
	var out, errOut bytes.Buffer
	cmd := exec.Command(bin.telkeys, args...)
	cmd.Stdout, cmd.Stderr = &out, &errOut
	err := cmd.Run()
	var exit *exec.ExitError
	if err != nil && !errors.As(err, &exit) {
		t.Fatal(err)
	}
	return cmd.ProcessState.ExitCode(), out.String(), errOut.String()
}

const testSecret = "test-secret-0123456789abcdef0123456789abcdef"

// testService is a telkeys the tests talk to over HTTP: started in-process
// through Start (Service, cfg and logs set), or running elsewhere
// (serviceAt: base only).
type testService struct {
	*service.Service
	t    testing.TB
	cfg  service.Config
	logs *bustest.LogBuffer
	auth *auth.Authority
	base string
	// natsCreds are service credentials for the service's NATS.
	natsCreds string
}

// startService starts telkeys with a real embedded JetStream server and a
// real HTTP listener on random ports; mods adjust the config (e.g. NATSURL
// to share another instance's NATS, or DataDir to restart on the same
// store).
func startService(t testing.TB, mods ...func(*service.Config)) *testService {
	t.Helper()
	cfg := service.Config{
		DataDir: t.TempDir(), HTTPAddr: "127.0.0.1:0", NATSAddr: "127.0.0.1:0",
		Replicas: 1, AuthSecret: testSecret,
	}
	for _, m := range mods {
		m(&cfg)
	}
	logs := &bustest.LogBuffer{}
	log := slog.New(slog.NewJSONHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	svc, err := service.Start(context.Background(), cfg, log)
	if err != nil {
		t.Fatal(err)
	}
	s := &testService{Service: svc, t: t, cfg: cfg, logs: logs, auth: newAuthority(t), base: "http://" + svc.HTTPAddr, natsCreds: cfg.NATSCreds}
	if cfg.NATSURL == "" {
		s.natsCreds = natsCreds(t, cfg.DataDir, bus.RoleService)
	}
	t.Cleanup(func() {
		// Connections the client dialed but never used would hold the
		// graceful shutdown until its timeout.
		http.DefaultClient.CloseIdleConnections()
		_ = svc.Shutdown(context.Background())
		if t.Failed() || testing.Verbose() {
			for _, l := range strings.Split(logs.String(), "\n") {
				if !strings.Contains(l, `"msg":"http"`) && !strings.Contains(l, `"level":"DEBUG"`) && l != "" {
					t.Logf("%s: %s", svc.HTTPAddr, l)
				}
			}
		}
	})
	s.waitReady()
	return s
}

// serviceAt is a testService for the telkeys at base (e.g. a separate
// process), once it is ready.
func serviceAt(t testing.TB, base string) *testService {
	t.Helper()
	s := &testService{t: t, base: base, auth: newAuthority(t)}
	s.waitReady()
	return s
}

// newAuthority mints tokens the services under test accept.
func newAuthority(t testing.TB) *auth.Authority {
	t.Helper()
	a, err := auth.New([]byte(testSecret), commands.ValidTeamID)
	if err != nil {
		t.Fatal(err)
	}
	return a
}

// withT is s reporting to t, for use in a subtest: a helper must not fail
// the parent test from the subtest's goroutine.
func (s *testService) withT(t testing.TB) *testService {
	c := *s
	c.t = t
	return &c
}

func (s *testService) waitReady() {
	s.t.Helper()
	bustest.Eventually(s.t, 30*time.Second, "GET /readyz answers 200", func() bool {
		r, err := s.trySend("GET", "/readyz", nil, nil)
		return err == nil && r.status == 200
	})
}

// token mints a token for role (and team for members).
func (s *testService) token(role auth.Role, team string) string {
	s.t.Helper()
	tok, err := s.auth.Mint(auth.Claims{Subject: string(role) + "-test", Role: role, Team: team}, time.Hour)
	if err != nil {
		s.t.Fatal(err)
	}
	return tok
}

type response struct {
	status int
	header http.Header
	body   []byte
}

func (r response) json(t testing.TB) map[string]any {
	t.Helper()
	var m map[string]any
	if err := json.Unmarshal(r.body, &m); err != nil {
		t.Fatalf("status %d, body %q: %v", r.status, r.body, err)
	}
	return m
}

// problemCode returns the problem code, checking the media type.
func (r response) problemCode(t testing.TB) string {
	t.Helper()
	if ct := r.header.Get("Content-Type"); ct != "application/problem+json" {
		t.Fatalf("status %d with content type %q, want application/problem+json; body %q", r.status, ct, r.body)
	}
	code, _ := r.json(t)["code"].(string)
	return code
}

func expectProblem(t testing.TB, r response, status int, code string) {
	t.Helper()
	if r.status != status {
		t.Fatalf("status %d, want %d; body %s", r.status, status, r.body)
	}
	if got := r.problemCode(t); got != code {
		t.Fatalf("code %q, want %q; body %s", got, code, r.body)
	}
}

// refusal is a request and the problem it must be answered with.
type refusal struct {
	method, path, token string
	body                any // as for do
	status              int
	code                string
}

// expectRefusals sends each request in order, in a subtest of its own so
// that every refusal is checked even when one is wrong.
func (s *testService) expectRefusals(t *testing.T, rs []refusal) {
	t.Helper()
	for _, r := range rs {
		t.Run(fmt.Sprintf("%s %s %d %s", r.method, r.path, r.status, r.code), func(t *testing.T) {
			expectProblem(t, s.withT(t).do(r.method, r.path, r.token, r.body), r.status, r.code)
		})
	}
}

// strs is a decoded JSON array of strings.
func strs(v any) []string {
	var out []string
	for _, x := range v.([]any) {
		out = append(out, x.(string))
	}
	return out
}

// sendRequest sends one request with client and reads the whole answer.
// A JSON content type is set when there is a body; hdr may override it.
func sendRequest(client *http.Client, method, url string, hdr map[string]string, body []byte) (response, error) {
	var rd io.Reader
	if body != nil {
		rd = bytes.NewReader(body)
	}
	req, err := http.NewRequest(method, url, rd)
	if err != nil {
		return response{}, err
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	for k, v := range hdr {
		req.Header.Set(k, v)
	}
	res, err := client.Do(req)
	if err != nil {
		return response{}, err
	}
	defer res.Body.Close()
	b, err := io.ReadAll(res.Body)
	if err != nil {
		return response{}, err
	}
	return response{status: res.StatusCode, header: res.Header, body: b}, nil
}

// trySend sends body exactly as given, with exactly the given headers (no
// Authorization unless hdr has one), and returns transport errors.
func (s *testService) trySend(method, path string, hdr map[string]string, body []byte) (response, error) {
	return sendRequest(http.DefaultClient, method, s.base+path, hdr, body)
}

// send is trySend failing the test on a transport error.
func (s *testService) send(method, path string, hdr map[string]string, body []byte) response {
	s.t.Helper()
	r, err := s.trySend(method, path, hdr, body)
	if err != nil {
		s.t.Fatalf("%s %s: %v", method, path, err)
	}
	return r
}

// do sends a request with token as a bearer token (none if ""); body is
// sent as is if it is a string or []byte, else as JSON.
func (s *testService) do(method, path, token string, body any) response {
	s.t.Helper()
	var b []byte
	switch v := body.(type) {
	case nil:
	case string:
		b = []byte(v)
	case []byte:
		b = v
	default:
		j, err := json.Marshal(v)
		if err != nil {
			s.t.Fatal(err)
		}
		b = j
	}
	hdr := map[string]string{}
	if token != "" {
		hdr["Authorization"] = "Bearer " + token
	}
	return s.send(method, path, hdr, b)
}

// configureTeam sets a team's API access as a superadmin. perDay nil means
// no daily limit. No scopes means all three.
func (s *testService) configureTeam(team string, enabled bool, maxKeys int, perDay *int64, scopes ...string) {
	s.t.Helper()
	if len(scopes) == 0 {
		scopes = []string{"CREATE_CALL_TOKEN", "READ_CALL_TOKEN", "READ_TEAM_APPS"}
	}
	body := map[string]any{"enabled": enabled, "allowed_scopes": scopes, "max_keys": maxKeys}
	if perDay != nil {
		body["max_requests_per_day"] = *perDay
	}
	r := s.do("PUT", "/v1/teams/"+team+"/api-access", s.token(auth.RoleSuperadmin, ""), body)
	if r.status != 200 {
		s.t.Fatalf("configure %s: %d %s", team, r.status, r.body)
	}
}

// enableTeam enables a team with a daily limit of 1000 requests.
func (s *testService) enableTeam(team string, maxKeys int, scopes ...string) {
	s.t.Helper()
	s.configureTeam(team, true, maxKeys, new(int64(1000)), scopes...)
}

// createKey creates a key as a member of team and returns the response body.
func (s *testService) createKey(team, name string, scopes ...string) map[string]any {
	s.t.Helper()
	if len(scopes) == 0 {
		scopes = []string{"READ_TEAM_APPS"}
	}
	r := s.do("POST", "/v1/teams/"+team+"/api-keys", s.token(auth.RoleMember, team), map[string]any{"name": name, "scopes": scopes})
	if r.status != 201 {
		s.t.Fatalf("create key in %s: %d %s", team, r.status, r.body)
	}
	return r.json(s.t)
}

// deleteKey deletes a key as a member of its team and returns when the
// DELETE response has arrived.
func (s *testService) deleteKey(team, id string) {
	s.t.Helper()
	if r := s.do("DELETE", "/v1/teams/"+team+"/api-keys/"+id, s.token(auth.RoleMember, team), nil); r.status != 204 {
		s.t.Fatalf("delete %s: %d %s", id, r.status, r.body)
	}
}

// js connects to the service's NATS as a separate client, with service
// credentials.
func (s *testService) js() jetstream.JetStream {
	s.t.Helper()
	_, js := bustest.ConnectURL(s.t, s.NATSURL, s.natsCreds)
	return js
}

// credsFor writes credentials of role for the service's embedded NATS.
func (s *testService) credsFor(role bus.Role) string {
	s.t.Helper()
	if s.cfg.NATSURL != "" || s.cfg.DataDir == "" {
		s.t.Fatal("credsFor: this service does not run the NATS server")
	}
	return natsCreds(s.t, s.cfg.DataDir, role)
}

// sharingNATSOf makes a service use a's embedded NATS, as a second
// instance would, with service credentials and a's signing key.
func sharingNATSOf(a *testService) func(*service.Config) {
	creds := a.credsFor(bus.RoleService)
	return func(c *service.Config) {
		c.NATSURL, c.NATSCreds, c.SigningKey = a.NATSURL, creds, service.SigningKeyPath(a.cfg.DataDir)
	}
}

// eventsKeyFile writes the public key of the signing key telkeys serve
// keeps in dataDir, as "telkeys events-key" does: what nodes trust.
func eventsKeyFile(t testing.TB, dataDir string) string {
	t.Helper()
	s, err := events.LoadSigningKey(service.SigningKeyPath(dataDir), false)
	if err != nil {
		t.Fatal(err)
	}
	pem, err := events.EncodePublicKeys(s.PublicKey())
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(t.TempDir(), "events-public.pem")
	if err := os.WriteFile(path, pem, 0o644); err != nil {
		t.Fatal(err)
	}
	return path
}

// natsCreds writes credentials of role signed by the NATS authority that
// telkeys serve keeps in dataDir.
func natsCreds(t testing.TB, dataDir string, role bus.Role) string {
	t.Helper()
	a, err := bus.LoadAuthority(bus.AuthDir(dataDir), false)
	if err != nil {
		t.Fatal(err)
	}
	return bustest.Creds(t, a, role)
}

// eventCount is the number of messages in the event stream.
func (s *testService) eventCount() uint64 {
	s.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	st, err := s.js().Stream(ctx, bus.EventStream)
	if err != nil {
		s.t.Fatal(err)
	}
	info, err := st.Info(ctx)
	if err != nil {
		s.t.Fatal(err)
	}
	return info.State.Msgs
}

// allMessages reads every message of a stream, in order.
func allMessages(t testing.TB, js jetstream.JetStream, stream string) []jetstream.Msg {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	st, err := js.Stream(ctx, stream)
	if err != nil {
		t.Fatal(err)
	}
	info, err := st.Info(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if info.State.Msgs == 0 {
		return nil
	}
	cons, err := js.OrderedConsumer(ctx, stream, jetstream.OrderedConsumerConfig{})
	if err != nil {
		t.Fatal(err)
	}
	var out []jetstream.Msg
	for uint64(len(out)) < info.State.Msgs {
		m, err := cons.Next(jetstream.FetchMaxWait(5 * time.Second))
		if bus.IsUnavailable(err) && ctx.Err() == nil {
			continue // a cluster server just came back: the ordered consumer starts over where it was
		}
		if err != nil {
			t.Fatalf("read %s after %d of %d: %v", stream, len(out), info.State.Msgs, err)
		}
		out = append(out, m)
	}
	return out
}

// runWorkers calls f from n goroutines, each until f returns false or
// stop is called. stop returns once every goroutine has returned; it is
// also called when the test ends, so that a test stopped by a failure
// leaves none behind.
func runWorkers(t testing.TB, n int, f func() bool) (stop func()) {
	done := make(chan struct{})
	var wg sync.WaitGroup
	for range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				select {
				case <-done:
					return
				default:
				}
				if !f() {
					return
				}
			}
		}()
	}
	stop = sync.OnceFunc(func() {
		close(done)
		wg.Wait()
	})
	t.Cleanup(stop)
	return stop
}
