package e2e

import (
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/telapi/telkeys/bus"
	"github.com/telapi/telkeys/bus/bustest"
)

// Connection floods (issue #11): telkeys serve and telapi-node as real
// processes with a low file-descriptor limit, flooded with more idle and
// slowloris connections than the limit allows.

const (
	// floodNofile is RLIMIT_NOFILE, soft and hard, of the flooded
	// processes. `ulimit -n` sets both: Go raises a soft limit to the hard
	// one at start, so a lower soft limit alone would not hold.
	floodNofile = 256
	// floodConns is how many connections the flood opens to each server.
	floodConns = 1000
	// floodReadTimeout is the ReadTimeout of both servers (api.New and
	// node.New): a connection must have sent a whole request within it.
	floodReadTimeout = 15 * time.Second
)

// startLimitedProcess is startProcess with RLIMIT_NOFILE set to nofile.
func startLimitedProcess(t *testing.T, name string, nofile int, binary string, args ...string) *process {
	t.Helper()
	script := fmt.Sprintf(`ulimit -n %d && exec "$0" "$@"`, nofile)
	return startProcess(t, name, "bash", append([]string{"-c", script, binary}, args...)...)
}

// floodTarget is one flooded server.
type floodTarget struct {
	p      *process
	addr   string
	ready  string // path that answers 200 when the server serves
	client *http.Client
}

// serves reports whether the server answers ready 200 on a new connection.
func (f *floodTarget) serves() bool {
	r, err := sendRequest(f.client, "GET", "http://"+f.addr+f.ready, nil, nil)
	return err == nil && r.status == 200
}

// openFDs is how many file descriptors the process holds (-1 if unknown).
func (f *floodTarget) openFDs() int {
	ents, err := os.ReadDir(fmt.Sprintf("/proc/%d/fd", f.p.cmd.Process.Pid))
	if err != nil {
		return -1
	}
	return len(ents)
}

// nofile is the process's RLIMIT_NOFILE, soft and hard, from /proc.
func (f *floodTarget) nofile() (soft, hard int) {
	b, _ := os.ReadFile(fmt.Sprintf("/proc/%d/limits", f.p.cmd.Process.Pid))
	for _, l := range strings.Split(string(b), "\n") {
		if rest, ok := strings.CutPrefix(l, "Max open files"); ok {
			_, _ = fmt.Sscan(rest, &soft, &hard)
		}
	}
	return soft, hard
}

// alive fails the test if the process has exited.
func (f *floodTarget) alive(t *testing.T, when string) {
	t.Helper()
	select {
	case <-f.p.done:
		t.Fatalf("%s exited %s: %v\n%s", f.p.name, when, f.p.cmd.ProcessState, f.p.logs)
	default:
	}
}

// slowloris is a connection that sent part of a request and sends one more
// byte of a header every half second; closed is when the server closed it.
type slowloris struct {
	conn    net.Conn
	opened  time.Time
	closed  chan struct{}
	closeAt atomic.Pointer[time.Time]
}

func openSlowloris(t *testing.T, addr string) *slowloris {
	t.Helper()
	c, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	s := &slowloris{conn: c, opened: time.Now(), closed: make(chan struct{})}
	t.Cleanup(func() { _ = c.Close() })
	if _, err := io.WriteString(c, "GET /healthz HTTP/1.1\r\nHost: flood\r\nX-Slow: "); err != nil {
		t.Fatal(err)
	}
	go func() { // the server closing the connection ends the read
		_, _ = io.Copy(io.Discard, c)
		now := time.Now()
		s.closeAt.Store(&now)
		close(s.closed)
	}()
	go func() {
		tick := time.NewTicker(500 * time.Millisecond)
		defer tick.Stop()
		for {
			select {
			case <-s.closed:
				return
			case <-tick.C:
				if _, err := c.Write([]byte("x")); err != nil {
					return
				}
			}
		}
	}()
	return s
}

// flood opens n connections to addr, 64 at a time, for at most 3 s (a
// full accept queue drops the handshakes), and returns those that
// connected, and the last dial error. Every fourth sends the start of a
// request and nothing more; the others send nothing.
func flood(addr string, n int) (conns []net.Conn, lastErr error) {
	deadline := time.Now().Add(3 * time.Second)
	var (
		mu   sync.Mutex
		next atomic.Int64
		wg   sync.WaitGroup
	)
	for range 64 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := next.Add(1) - 1; i < int64(n) && time.Now().Before(deadline); i = next.Add(1) - 1 {
				c, err := net.DialTimeout("tcp", addr, time.Second)
				if err != nil {
					mu.Lock()
					lastErr = err
					mu.Unlock()
					continue
				}
				if i%4 == 0 {
					_, _ = io.WriteString(c, "GET /readyz HTTP/1.1\r\nHost: fl")
				}
				mu.Lock()
				conns = append(conns, c)
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	return conns, lastErr
}

// TestFlood floods telkeys serve (with its embedded NATS) and a
// telapi-node with more connections than their file-descriptor limit. Both
// must stay up while flooded, serve again promptly once the flood ends,
// and close slowloris connections at their read timeout.
func TestFlood(t *testing.T) {
	if runtime.GOOS != "linux" {
		t.Skip("needs bash's ulimit and /proc")
	}
	var own syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &own); err != nil || own.Cur < 2*floodConns+256 {
		t.Skipf("the test itself needs %d file descriptors; RLIMIT_NOFILE is %d", 2*floodConns+256, own.Cur)
	}
	t0 := time.Now()
	dataDir := t.TempDir()
	tk := startLimitedProcess(t, "telkeys", floodNofile, bin.telkeys, "serve", "--data-dir", dataDir,
		"--http-addr", "127.0.0.1:0", "--nats-addr", "127.0.0.1:0", "--auth-secret", testSecret, "--log-format", "json")
	tkAddr := tk.waitListening(t, 60*time.Second)
	natsURL := tk.logs.NATSURL()
	if natsURL == "" {
		t.Fatal("telkeys did not log its embedded NATS client_url before listening")
	}
	nd := startLimitedProcess(t, "telapi-node", floodNofile, bin.telapiNode, "--name", "flood-node",
		"--nats-url", natsURL, "--nats-creds", natsCreds(t, dataDir, bus.RoleNode), "--events-public-key", eventsKeyFile(t, dataDir),
		"--http-addr", "127.0.0.1:0", "--max-staleness", "5s")
	ndAddr := nd.waitListening(t, 30*time.Second)

	// Requests on a new connection each: a new connection is what a
	// flooded server can no longer take.
	tr := &http.Transport{DisableKeepAlives: true}
	t.Cleanup(tr.CloseIdleConnections)
	client := &http.Client{Transport: tr, Timeout: 2 * time.Second}
	targets := []*floodTarget{
		{p: tk, addr: tkAddr, ready: "/readyz", client: client},
		{p: nd, addr: ndAddr, ready: "/readyz", client: client},
	}
	for _, f := range targets {
		bustest.Eventually(t, 15*time.Second, f.p.name+" GET "+f.ready+" answers 200", f.serves)
		if soft, hard := f.nofile(); soft != floodNofile || hard != floodNofile {
			t.Fatalf("%s runs with RLIMIT_NOFILE %d (hard %d), want %d", f.p.name, soft, hard, floodNofile)
		}
	}
	t.Logf("started in %v", time.Since(t0).Round(time.Millisecond))

	// Slowloris connections first, so that each server accepts them at
	// once and their read timeout starts now.
	slow := make([][]*slowloris, len(targets))
	for i, f := range targets {
		for range 4 {
			slow[i] = append(slow[i], openSlowloris(t, f.addr))
		}
	}

	// The flood, on both servers at once.
	floods := make([][]net.Conn, len(targets))
	dialErrs := make([]error, len(targets))
	var wg sync.WaitGroup
	for i, f := range targets {
		wg.Add(1)
		go func() {
			defer wg.Done()
			floods[i], dialErrs[i] = flood(f.addr, floodConns)
		}()
	}
	wg.Wait()
	closeFlood := sync.OnceFunc(func() {
		for _, cs := range floods {
			for _, c := range cs {
				_ = c.Close()
			}
		}
	})
	t.Cleanup(closeFlood)
	for i, f := range targets {
		f.alive(t, "under the flood")
		if len(floods[i]) <= floodNofile {
			t.Fatalf("%s: only %d of %d connections opened, not more than the limit %d; last dial error: %v",
				f.p.name, len(floods[i]), floodConns, floodNofile, dialErrs[i])
		}
	}

	// Held: each server runs out of descriptors and says so once, and
	// stays up.
	peak := make([]int, len(targets))
	for i, f := range targets {
		bustest.Eventually(t, 5*time.Second, f.p.name+" logs that it ran out of file descriptors", func() bool {
			peak[i] = max(peak[i], f.openFDs())
			f.alive(t, "under the flood")
			return strings.Contains(f.p.logs.String(), "out of file descriptors")
		})
	}
	for _, f := range targets {
		select {
		case <-f.p.done:
			f.alive(t, "under the flood")
		case <-time.After(time.Second): // held a second longer, still up
		}
		var warnings []string
		for _, l := range strings.Split(f.p.logs.String(), "\n") {
			if strings.Contains(l, "out of file descriptors") {
				warnings = append(warnings, l)
			}
		}
		if len(warnings) != 1 {
			t.Errorf("%s logged running out of file descriptors %d times, want once per burst:\n%s", f.p.name, len(warnings), strings.Join(warnings, "\n"))
		} else {
			t.Logf("%s: %s", f.p.name, warnings[0])
		}
	}

	// The flood ends: both serve again, on new connections.
	closeFlood()
	ended := time.Now()
	for i, f := range targets {
		bustest.Eventually(t, 10*time.Second, f.p.name+" GET "+f.ready+" answers 200 after the flood", func() bool {
			f.alive(t, "after the flood")
			return f.serves()
		})
		t.Logf("%s: RLIMIT_NOFILE %d; %d connections opened and held (+%d slowloris), peak %d open descriptors; serving again %v after the flood ended",
			f.p.name, floodNofile, len(floods[i]), len(slow[i]), peak[i], time.Since(ended).Round(time.Millisecond))
	}

	// Slowloris connections are closed by the server at its read timeout,
	// not held for as long as the client keeps trickling.
	for i, f := range targets {
		for _, s := range slow[i] {
			deadline := s.opened.Add(floodReadTimeout + 3*time.Second)
			select {
			case <-s.closed:
			case <-time.After(time.Until(deadline)):
				t.Fatalf("%s still holds a slowloris connection %v after it opened (read timeout %v)", f.p.name, time.Since(s.opened).Round(time.Millisecond), floodReadTimeout)
			}
			if held := s.closeAt.Load().Sub(s.opened); held < floodReadTimeout-time.Second {
				t.Errorf("%s closed a slowloris connection after %v, before its read timeout %v", f.p.name, held, floodReadTimeout)
			}
		}
		f.alive(t, "after the flood")
	}
	t.Logf("slowloris connections closed by both servers within %v of opening; test took %v", floodReadTimeout+3*time.Second, time.Since(t0).Round(time.Millisecond))
}
