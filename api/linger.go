package api

import (
	"io"
	"net"
	"sync"
	"time"
)

// Linger wraps a listener so that closing a connection first stops
// writing, then reads and discards what the client is still sending, for
// up to a second or 16 MiB, as net/http does. fasthttp answers a body that
// is too large from its headers and closes at once; without lingering, the
// unread body makes the kernel reset the connection and the client may see
// the reset instead of the 413.
func Linger(ln net.Listener) net.Listener { return lingerListener{ln} }

type lingerListener struct{ net.Listener }

func (l lingerListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if tc, ok := c.(*net.TCPConn); ok && err == nil {
		return &lingerConn{TCPConn: tc}, nil
	}
	return c, err
}

type lingerConn struct {
	*net.TCPConn
	once sync.Once
}

func (c *lingerConn) Close() error {
	var err error
	c.once.Do(func() {
		if err = c.TCPConn.CloseWrite(); err != nil {
			err = c.TCPConn.Close()
			return
		}
		go func() {
			_ = c.TCPConn.SetReadDeadline(time.Now().Add(time.Second))
			_, _ = io.CopyN(io.Discard, c.TCPConn, 16<<20)
			_ = c.TCPConn.Close()
		}()
	})
	return err
}
