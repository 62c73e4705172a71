// Package listener keeps an HTTP server accepting connections through a
// shortage of file descriptors, for telkeys serve and telapi-node alike.
//
// The file-descriptor limit itself needs no code: since Go 1.19, a Go
// program on Unix raises its soft RLIMIT_NOFILE to the hard limit at start
// (Go 1.26 sets it one below, syscall/rlimit.go; go.dev/issue/46279).
// Only the hard limit bounds either process; the warning logged on
// running out gives the limit in force.
package listener

import (
	"errors"
	"log/slog"
	"net"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
)

// KeepAccepting wraps ln so that Accept waits out a shortage of file
// descriptors (EMFILE, ENFILE) or kernel memory (ENOBUFS, ENOMEM) instead
// of returning it: retrying after 5 ms, doubling up to 250 ms, until a
// descriptor is free or ln is closed. fasthttp (acceptConn in server.go)
// returns any such error from Serve as permanent, which stops the server
// and, in telkeys, the whole service. Meanwhile new connections wait in
// the kernel's accept queue, and the connections held are let go by the
// servers' read and idle timeouts.
//
// It logs a warning at the start of each burst of shortages: the first
// after a minute without any.
func KeepAccepting(ln net.Listener, log *slog.Logger) net.Listener {
	return &keepAccepting{Listener: ln, log: log, closed: make(chan struct{})}
}

// quiet is how long without a shortage ends a burst.
const quiet = time.Minute

type keepAccepting struct {
	net.Listener
	log       *slog.Logger
	closed    chan struct{}
	closeOnce sync.Once
	lastShort atomic.Int64 // UnixNano of the last shortage, 0 if none
}

func (l *keepAccepting) Accept() (net.Conn, error) {
	var delay time.Duration
	for {
		c, err := l.Listener.Accept()
		if err == nil || !shortage(err) {
			return c, err
		}
		now := time.Now()
		if last := l.lastShort.Swap(now.UnixNano()); last == 0 || now.Sub(time.Unix(0, last)) > quiet {
			l.log.Warn("http: out of file descriptors; new connections wait until some close",
				"addr", l.Addr().String(), "err", err, "nofile", nofile())
		}
		delay = min(max(2*delay, 5*time.Millisecond), 250*time.Millisecond)
		select {
		case <-time.After(delay):
		case <-l.closed: // the next Accept returns the listener's own error
		}
	}
}

func (l *keepAccepting) Close() error {
	l.closeOnce.Do(func() { close(l.closed) })
	return l.Listener.Close()
}

// shortage reports whether err is accept running out of descriptors or
// memory, which closing connections cures.
func shortage(err error) bool {
	return errors.Is(err, syscall.EMFILE) || errors.Is(err, syscall.ENFILE) ||
		errors.Is(err, syscall.ENOBUFS) || errors.Is(err, syscall.ENOMEM)
}
