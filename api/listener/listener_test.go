package listener

import (
	"errors"
	"log/slog"
	"net"
	"os"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/telapi/telkeys/bus/bustest"
)

// fakeListener returns errs from Accept in turn, then a connection; after
// Close, net.ErrClosed.
type fakeListener struct {
	errs   []error
	closed chan struct{}
}

func (f *fakeListener) Accept() (net.Conn, error) {
	select {
	case <-f.closed:
		return nil, &net.OpError{Op: "accept", Net: "tcp", Err: net.ErrClosed}
	default:
	}
	if len(f.errs) > 0 {
		err := f.errs[0]
		f.errs = f.errs[1:]
		return nil, err
	}
	c, _ := net.Pipe()
	return c, nil
}

func (f *fakeListener) Close() error   { close(f.closed); return nil }
func (f *fakeListener) Addr() net.Addr { return &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1)} }

func acceptErr(errno syscall.Errno) error {
	return &net.OpError{Op: "accept", Net: "tcp", Err: os.NewSyscallError("accept4", errno)}
}

func TestKeepAcceptingWaitsOutAShortage(t *testing.T) {
	var logs bustest.LogBuffer
	f := &fakeListener{closed: make(chan struct{}), errs: []error{
		acceptErr(syscall.EMFILE), acceptErr(syscall.EMFILE), acceptErr(syscall.ENFILE), acceptErr(syscall.EMFILE),
	}}
	ln := KeepAccepting(f, slog.New(slog.NewJSONHandler(&logs, nil)))
	c, err := ln.Accept()
	if err != nil {
		t.Fatalf("Accept: %v, want the connection after the shortage", err)
	}
	_ = c.Close()
	// Another burst within a minute of the last: no second warning.
	f.errs = []error{acceptErr(syscall.EMFILE)}
	if _, err := ln.Accept(); err != nil {
		t.Fatal(err)
	}
	if n := strings.Count(logs.String(), "out of file descriptors"); n != 1 {
		t.Fatalf("%d warnings, want 1 for the burst:\n%s", n, logs.String())
	}
}

func TestKeepAcceptingReturnsOtherErrors(t *testing.T) {
	boom := errors.New("boom")
	f := &fakeListener{closed: make(chan struct{}), errs: []error{boom}}
	if _, err := KeepAccepting(f, slog.New(slog.DiscardHandler)).Accept(); err != boom {
		t.Fatalf("Accept: %v, want %v", err, boom)
	}
}

func TestKeepAcceptingCloseEndsTheWait(t *testing.T) {
	errs := make([]error, 1000) // about 4 minutes of retries
	for i := range errs {
		errs[i] = acceptErr(syscall.EMFILE)
	}
	f := &fakeListener{closed: make(chan struct{}), errs: errs}
	ln := KeepAccepting(f, slog.New(slog.DiscardHandler))
	done := make(chan error, 1)
	go func() {
		_, err := ln.Accept()
		done <- err
	}()
	_ = ln.Close()
	select {
	case err := <-done:
		if !errors.Is(err, net.ErrClosed) {
			t.Fatalf("Accept after Close: %v, want net.ErrClosed", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Accept still waiting 5 s after Close")
	}
}
