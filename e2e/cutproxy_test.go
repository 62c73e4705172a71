package e2e

import (
	"io"
	"net"
	"net/url"
	"sync"
	"testing"
	"time"
)

// cutOffNATS is a proxy to s's NATS server, for a client to connect
// through and be cut off by.
func cutOffNATS(t testing.TB, s *testService) *cutProxy {
	t.Helper()
	u, err := url.Parse(s.NATSURL)
	if err != nil {
		t.Fatal(err)
	}
	return newCutProxy(t, u.Host)
}

// cutProxy forwards TCP connections from its own address to target. Cut
// closes every connection and the listener, so new connections are refused
// (as when the network between a node and NATS goes down); Restore listens
// again on the same address.
type cutProxy struct {
	addr   string
	target string

	mu    sync.Mutex
	gen   int          // bumped by every Cut
	ln    net.Listener // nil while cut
	conns map[net.Conn]struct{}
	wg    sync.WaitGroup
}

func newCutProxy(t testing.TB, target string) *cutProxy {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := &cutProxy{addr: ln.Addr().String(), target: target, conns: map[net.Conn]struct{}{}}
	p.mu.Lock()
	p.serveLocked(ln)
	p.mu.Unlock()
	t.Cleanup(func() {
		p.Cut()
		p.wg.Wait()
	})
	return p
}

func (p *cutProxy) serveLocked(ln net.Listener) {
	p.ln = ln
	gen := p.gen
	p.wg.Add(1)
	go func() {
		defer p.wg.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			p.wg.Add(1)
			go func() {
				defer p.wg.Done()
				p.pipe(c, gen)
			}()
		}
	}()
}

func (p *cutProxy) pipe(client net.Conn, gen int) {
	server, err := net.Dial("tcp", p.target)
	if err != nil {
		client.Close()
		return
	}
	p.mu.Lock()
	if p.gen != gen { // cut while dialing
		p.mu.Unlock()
		client.Close()
		server.Close()
		return
	}
	p.conns[client], p.conns[server] = struct{}{}, struct{}{}
	p.mu.Unlock()
	done := make(chan struct{}, 2)
	go func() { _, _ = io.Copy(server, client); done <- struct{}{} }()
	go func() { _, _ = io.Copy(client, server); done <- struct{}{} }()
	<-done
	client.Close()
	server.Close()
	<-done
	p.mu.Lock()
	delete(p.conns, client)
	delete(p.conns, server)
	p.mu.Unlock()
}

// Cut closes every connection and refuses new ones.
func (p *cutProxy) Cut() {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.gen++
	if p.ln != nil {
		p.ln.Close()
		p.ln = nil
	}
	for c := range p.conns {
		c.Close()
	}
}

// Restore accepts connections again, on the same address.
func (p *cutProxy) Restore(t testing.TB) {
	t.Helper()
	var ln net.Listener
	var err error
	for deadline := time.Now().Add(5 * time.Second); ; {
		if ln, err = net.Listen("tcp", p.addr); err == nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("proxy cannot listen on %s again: %v", p.addr, err)
		}
		<-time.After(10 * time.Millisecond) // retry the listen
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	p.serveLocked(ln)
}
