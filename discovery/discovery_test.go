package discovery

import (
	"context"
	"sync/atomic"
	"testing"
	"time"
)

// blocking is a discoverer that sends one snapshot and returns only when
// its context ends, counting how many of it are running.
type blocking struct {
	targets []Target
	running *atomic.Int32
}

func (b blocking) Run(ctx context.Context, ch chan<- []Target) error {
	b.running.Add(1)
	defer b.running.Add(-1)
	select {
	case ch <- b.targets:
	case <-ctx.Done():
		return nil
	}
	<-ctx.Done()
	return nil
}

// Merge sends the union of its sources, deduplicated, and has joined every
// source when it returns.
func TestMergeUnionAndJoin(t *testing.T) {
	a, _ := NewTarget("http://127.0.0.1:1/metrics", "j")
	b, _ := NewTarget("http://127.0.0.1:2/metrics", "j")
	var running atomic.Int32
	ctx, cancel := context.WithCancel(context.Background())
	ch := make(chan []Target)
	done := make(chan error)
	go func() {
		done <- Merge(ctx, ch, blocking{[]Target{a}, &running}, blocking{[]Target{a, b}, &running}, &Static{Targets: []Target{b}})
	}()
	var last []Target
	deadline := time.After(5 * time.Second)
	for len(last) != 2 {
		select {
		case last = <-ch:
		case <-deadline:
			t.Fatalf("no merged snapshot of 2 targets: %v", last)
		}
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if n := running.Load(); n != 0 {
		t.Errorf("%d discoverers still running after Merge returned", n)
	}
}

func TestStaticSendsOnceAndWaits(t *testing.T) {
	s, err := NewStatic("j", []string{"http://127.0.0.1:1/metrics", "http://127.0.0.1:1/metrics", "http://127.0.0.1:2"})
	if err != nil {
		t.Fatal(err)
	}
	if len(s.Targets) != 2 || s.Targets[1].URL != "http://127.0.0.1:2/metrics" {
		t.Fatalf("targets %v: duplicates not dropped or /metrics not added", s.Targets)
	}
	ctx, cancel := context.WithCancel(context.Background())
	ch := make(chan []Target)
	done := make(chan error)
	go func() { done <- s.Run(ctx, ch) }()
	if got := <-ch; len(got) != 2 {
		t.Errorf("snapshot %v", got)
	}
	select {
	case <-ch:
		t.Error("a second snapshot from a static list")
	case <-time.After(100 * time.Millisecond):
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
}
