package bus_test

import (
	"context"
	"errors"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/telapi/telkeys/bus"
)

func TestProgress(t *testing.T) {
	var p bus.Progress
	p.Advance(5)
	p.Advance(3) // never goes back
	if p.Load() != 5 {
		t.Fatalf("at %d, want 5", p.Load())
	}
	if err := p.Wait(context.Background(), 5, 0, nil); err != nil {
		t.Fatal(err)
	}
	done := make(chan error)
	go func() { done <- p.Wait(context.Background(), 7, 0, nil) }()
	p.Advance(6)
	select {
	case err := <-done:
		t.Fatalf("returned at 6 while waiting for 7: %v", err)
	case <-time.After(20 * time.Millisecond): // a wrong return would come at once
	}
	p.Advance(7)
	if err := <-done; err != nil {
		t.Fatal(err)
	}

	// A poll that learns of progress elsewhere ends the wait.
	var polls atomic.Int32
	err := p.Wait(context.Background(), 9, time.Millisecond, func() {
		if polls.Add(1) == 3 {
			p.Advance(9)
		}
	})
	if err != nil || polls.Load() != 3 {
		t.Fatalf("err %v after %d polls", err, polls.Load())
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if err := p.Wait(ctx, 100, 0, nil); !errors.Is(err, context.Canceled) {
		t.Fatalf("a cancelled wait returned %v", err)
	}
}

func TestEvery(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	kick := make(chan struct{})
	calls := make(chan struct{}, 10)
	bus.Every(ctx, &wg, time.Hour, kick, func(context.Context) { calls <- struct{}{} })
	kick <- struct{}{}
	<-calls // a kick runs it before the period
	cancel()
	wg.Wait() // and it stops with its context
	if len(calls) != 0 {
		t.Fatalf("%d calls after the kick", len(calls))
	}
}
