// Package barrier is the revocation barrier: it keeps the registry of live
// TelAPI nodes and how far each has applied the event stream, and holds a
// command that takes access away until every live node has applied it, or
// until the bound has passed and every node that has not has fenced itself.
//
// Why the bound is enough: a node answers only while it has heard telkeys
// within its MaxStaleness, and a heartbeat counts only once the node has
// applied every event the heartbeat announces. A node that has not applied
// event S hears no counting heartbeat after S, so by S + MaxStaleness + one
// heartbeat period it answers UNAVAILABLE. The default bound is exactly
// that, for nodes on their default MaxStaleness.
package barrier

import (
	"context"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/telapi/telkeys/bus"
)

// DefaultBound is the nodes' default MaxStaleness (10 s) plus one
// heartbeat period (1 s).
const DefaultBound = 11 * time.Second

// Node is what the registry knows of one node.
type Node struct {
	// Name is "<credentials name>.<node name>".
	Name     string
	Applied  uint64
	LastSeen time.Time
	// Live: heard within the bound. A node that is not is not waited for.
	Live bool
}

// Registry tracks the nodes. It is safe for concurrent use.
type Registry struct {
	bound time.Duration
	now   func() time.Time

	mu      sync.Mutex
	nodes   map[string]*Node
	changed chan struct{} // closed and dropped on every report; nil: no waiter
}

// New returns a registry whose barrier waits at most bound, and that
// forgets nodes not heard for bound. now is the clock (nil: time.Now).
func New(bound time.Duration, now func() time.Time) *Registry {
	if now == nil {
		now = time.Now
	}
	return &Registry{bound: bound, now: now, nodes: map[string]*Node{}}
}

// Bound is how long Wait waits at most.
func (r *Registry) Bound() time.Duration { return r.bound }

// Subscribe listens to the nodes' reports until the subscription ends.
func (r *Registry) Subscribe(nc *nats.Conn) (*nats.Subscription, error) {
	return nc.Subscribe(bus.NodesAppliedPrefix+">", func(m *nats.Msg) {
		node := strings.TrimPrefix(m.Subject, bus.NodesAppliedPrefix)
		if string(m.Data) == bus.NodeLeaving {
			r.Leave(node)
			return
		}
		seq, err := strconv.ParseUint(string(m.Data), 10, 64)
		if err == nil {
			r.Report(node, seq)
		}
	})
}

// Report records that node has applied every event up to seq.
func (r *Registry) Report(node string, seq uint64) {
	r.mu.Lock()
	defer r.mu.Unlock()
	n := r.nodes[node]
	if n == nil {
		n = &Node{Name: node}
		r.nodes[node] = n
	}
	n.Applied = max(n.Applied, seq)
	n.LastSeen = r.now()
	r.wake()
}

// Leave forgets a node that has stopped: it refuses every key from then
// on, so no command waits for it any more.
func (r *Registry) Leave(node string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	delete(r.nodes, node)
	r.wake()
}

// wake tells the waiters that a node changed; the caller holds mu.
func (r *Registry) wake() {
	if r.changed != nil {
		close(r.changed)
		r.changed = nil
	}
}

// Nodes lists the nodes heard within the last ten bounds, by name; older
// ones are forgotten.
func (r *Registry) Nodes() []Node {
	r.mu.Lock()
	defer r.mu.Unlock()
	now := r.now()
	out := make([]Node, 0, len(r.nodes))
	for name, n := range r.nodes {
		if now.Sub(n.LastSeen) > 10*r.bound {
			delete(r.nodes, name)
			continue
		}
		c := *n
		c.Live = now.Sub(n.LastSeen) <= r.bound
		out = append(out, c)
	}
	slices.SortFunc(out, func(a, b Node) int { return strings.Compare(a.Name, b.Name) })
	return out
}

// Wait returns once every node live now has applied seq or left, or once
// the bound has passed since start (when seq was stored), or when ctx
// ends, and says how many of the live nodes that did not leave confirmed
// it.
func (r *Registry) Wait(ctx context.Context, seq uint64, start time.Time) (confirmed, live int) {
	deadline := time.NewTimer(r.bound - r.now().Sub(start))
	defer deadline.Stop()
	r.mu.Lock()
	defer r.mu.Unlock()
	now := r.now()
	var waiting []string
	for name, n := range r.nodes {
		if now.Sub(n.LastSeen) <= r.bound {
			waiting = append(waiting, name)
		}
	}
	live = len(waiting)
	for over := false; ; {
		waiting = slices.DeleteFunc(waiting, func(name string) bool {
			n := r.nodes[name]
			if n == nil { // left
				live--
				return true
			}
			return n.Applied >= seq
		})
		if len(waiting) == 0 || over {
			return live - len(waiting), live
		}
		if r.changed == nil {
			r.changed = make(chan struct{})
		}
		changed := r.changed
		r.mu.Unlock()
		select {
		case <-changed:
		case <-deadline.C:
			over = true
		case <-ctx.Done():
			over = true
		}
		r.mu.Lock()
	}
}
