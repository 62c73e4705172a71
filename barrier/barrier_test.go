package barrier

import (
	"context"
	"sync"
	"testing"
	"time"
)

// clock is a settable clock.
type clock struct {
	mu  sync.Mutex
	now time.Time
}

func (c *clock) Now() time.Time { c.mu.Lock(); defer c.mu.Unlock(); return c.now }
func (c *clock) Add(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.now = c.now.Add(d)
}

func TestWait(t *testing.T) {
	clk := &clock{now: time.Now()}
	r := New(time.Hour, clk.Now)
	r.Report("node.a", 5)
	r.Report("node.b", 5)
	r.Report("node.gone", 5)
	clk.Add(2 * time.Hour) // every node is stale
	r.Report("node.a", 5)
	r.Report("node.b", 5)

	done := make(chan [2]int)
	go func() {
		c, l := r.Wait(context.Background(), 7, clk.Now())
		done <- [2]int{c, l}
	}()
	r.Report("node.a", 7)
	select {
	case got := <-done:
		t.Fatalf("returned %v before node.b applied 7", got)
	case <-time.After(20 * time.Millisecond): // a wrong return comes at once
	}
	r.Report("node.b", 8)
	if got := <-done; got != [2]int{2, 2} {
		t.Fatalf("confirmed/live %v, want 2/2: a stale node is not waited for", got)
	}

	// The bound: a node that never confirms is waited for only until the
	// bound has passed since the event was stored.
	short := New(30*time.Millisecond, nil)
	short.Report("node.slow", 1)
	start := time.Now()
	if c, l := short.Wait(context.Background(), 2, start); c != 0 || l != 1 {
		t.Fatalf("confirmed/live %d/%d, want 0/1", c, l)
	}
	if took := time.Since(start); took < 30*time.Millisecond {
		t.Fatalf("returned after %v, before the bound", took)
	}
	nodes := r.Nodes()
	if len(nodes) != 3 || !nodes[0].Live || nodes[2].Name != "node.gone" || nodes[2].Live {
		t.Fatalf("nodes %+v", nodes)
	}
}

// A node that leaves is not waited for, nor counted, from then on.
func TestLeave(t *testing.T) {
	r := New(time.Hour, nil)
	r.Report("node.a", 1)
	r.Report("node.b", 1)
	done := make(chan [2]int)
	go func() {
		c, l := r.Wait(context.Background(), 2, time.Now())
		done <- [2]int{c, l}
	}()
	r.Report("node.a", 2)
	select {
	case got := <-done:
		t.Fatalf("returned %v before node.b applied 2 or left", got)
	case <-time.After(20 * time.Millisecond): // a wrong return comes at once
	}
	r.Leave("node.b")
	if got := <-done; got != [2]int{1, 1} {
		t.Fatalf("confirmed/live %v, want 1/1", got)
	}
	if nodes := r.Nodes(); len(nodes) != 1 || nodes[0].Name != "node.a" {
		t.Fatalf("nodes %+v, want node.a only", nodes)
	}
}
