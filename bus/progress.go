package bus

import (
	"context"
	"sync"
	"sync/atomic"
	"time"
)

// Progress is a stream sequence that only grows, such as "every event up
// to here is applied", with a way to wait for it. The zero value is ready
// to use; it must not be copied.
type Progress struct {
	seq     atomic.Uint64 // read without the lock: validators read it often
	mu      sync.Mutex
	changed chan struct{} // closed and dropped when seq grows; nil: no waiter
}

// Advance raises the sequence to seq; a lower seq changes nothing.
func (p *Progress) Advance(seq uint64) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if seq > p.seq.Load() {
		p.seq.Store(seq)
		if p.changed != nil {
			close(p.changed)
			p.changed = nil
		}
	}
}

// Load returns the sequence.
func (p *Progress) Load() uint64 { return p.seq.Load() }

// Wait blocks until the sequence is at least seq or ctx ends. While it
// waits, it calls poll (if not nil) every pollEvery: a poll that learns
// of progress elsewhere calls Advance.
func (p *Progress) Wait(ctx context.Context, seq uint64, pollEvery time.Duration, poll func()) error {
	var tick <-chan time.Time
	if poll != nil {
		t := time.NewTicker(pollEvery)
		defer t.Stop()
		tick = t.C
	}
	for {
		p.mu.Lock()
		if p.seq.Load() >= seq {
			p.mu.Unlock()
			return nil
		}
		if p.changed == nil {
			p.changed = make(chan struct{})
		}
		changed := p.changed
		p.mu.Unlock()
		select {
		case <-changed:
		case <-tick:
			poll()
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}

// Every calls f every period, and whenever kick (which may be nil) fires,
// in a goroutine counted by wg, until ctx ends. Calls never overlap.
func Every(ctx context.Context, wg *sync.WaitGroup, period time.Duration, kick <-chan struct{}, f func(context.Context)) {
	wg.Add(1)
	go func() {
		defer wg.Done()
		t := time.NewTicker(period)
		defer t.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case <-t.C:
			case <-kick:
			}
			f(ctx)
		}
	}()
}
