package sink

import (
	"bytes"
	"context"
	"errors"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/scrapeflux/scrapeflux/sink/queue"

	"github.com/scrapeflux/scrapeflux/internal/servertest"
)

// blockingWriter takes nothing until released.
type blockingWriter struct {
	mu      sync.Mutex
	release chan struct{}
	calls   int
}

func (b *blockingWriter) Write(ctx context.Context, body []byte) error {
	b.mu.Lock()
	b.calls++
	b.mu.Unlock()
	select {
	case <-b.release:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// A batch refused with 400 and split is not done until its halves are
// answered for: shutting down in between leaves all of it queued.
func TestSplitBatchStaysQueuedUntilHalvesAnswered(t *testing.T) {
	w := &scripted{answers: []error{&WriteError{StatusCode: 400, Message: "bad"}}, then: &blockingWriter{release: make(chan struct{})}}
	cfg := fastConfig()
	cfg.QueueDir = t.TempDir()
	cfg.BatchSize = 8
	cfg.FlushInterval = time.Hour
	cfg.ShutdownTimeout = 100 * time.Millisecond
	st := runSink(t, cfg, w, func(s *Sink) { push(t, s, 8) })
	if st.QueuedSamples != 8 || st.DroppedTotal() != 0 {
		t.Fatalf("queued %d dropped %d, want 8 and 0", st.QueuedSamples, st.DroppedTotal())
	}
	fw := &fakeWriter{}
	cfg.ShutdownTimeout = time.Second
	st = runSink(t, cfg, fw, func(s *Sink) {})
	if st.Recovered != 8 || st.Written != 8 {
		t.Fatalf("next run recovered %d wrote %d, want 8 and 8", st.Recovered, st.Written)
	}
}

// scripted answers from a list, then hands over to another writer.
type scripted struct {
	mu      sync.Mutex
	answers []error
	then    Writer
}

func (s *scripted) Write(ctx context.Context, body []byte) error {
	s.mu.Lock()
	if len(s.answers) > 0 {
		err := s.answers[0]
		s.answers = s.answers[1:]
		s.mu.Unlock()
		return err
	}
	s.mu.Unlock()
	return s.then.Write(ctx, body)
}

// Run returns once its context is cancelled, without Close: it stops
// taking scrapes, keeps writing for ShutdownTimeout and spills the rest.
func TestRunReturnsOnCancelWithoutClose(t *testing.T) {
	cfg := fastConfig()
	cfg.QueueDir = t.TempDir()
	cfg.ShutdownTimeout = 100 * time.Millisecond
	s, err := New(cfg, &blockingWriter{release: make(chan struct{})}, discard)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- s.Run(ctx) }()
	push(t, s, 5)
	waitQueued(t, s, 5)
	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Run did not return within 10s of its context's end")
	}
	if st := s.Stats(); st.QueuedSamples != 5 || st.DroppedTotal() != 0 {
		t.Fatalf("queued %d dropped %d, want 5 on disk and none dropped", st.QueuedSamples, st.DroppedTotal())
	}
}

// Without a queue dir the queue lives in memory, bounded by
// --memory-max-bytes (64 MiB by default), not by --queue-max-bytes (1 GiB).
func TestMemoryOnlyQueueBoundedByMemoryMax(t *testing.T) {
	cfg := fastConfig()
	cfg.MaxMemoryBytes = 600
	cfg.BatchSize = 1
	down := &fakeWriter{}
	for i := 0; i < 10000; i++ {
		down.answers = append(down.answers, errors.New("down"))
	}
	cfg.ShutdownTimeout = 10 * time.Millisecond
	st := runSink(t, cfg, down, func(s *Sink) {
		push(t, s, 40)
		servertest.WaitFor(t, "the condition", 10*time.Second, func() bool { return s.Stats().Dropped["queue_full"] > 0 })
		if b := s.QueueStatus().Payload; b > 600+100 {
			t.Errorf("memory queue holds %d bytes, bound 600", b)
		}
	})
	if st.Dropped["queue_full"] == 0 {
		t.Fatal("nothing dropped past the memory bound")
	}
}

// Drops are logged when they start and then as one summary a minute by
// reason, not once per batch.
func TestDropLogSummarises(t *testing.T) {
	var logs bytes.Buffer
	d := dropLog{log: slog.New(slog.NewTextHandler(&logs, nil))}
	t0 := time.Unix(1_700_000_000, 0)
	for i := 0; i < 120; i++ { // two minutes of a drop per second
		d.add(DropDiskError, queue.Amount{Bytes: 100, Samples: 10})
		d.report(t0.Add(time.Duration(i)*time.Second), false)
	}
	d.report(t0.Add(121*time.Second), true)
	if n := strings.Count(logs.String(), "reason=disk_error"); n != 3 {
		t.Fatalf("two minutes of drops took %d log lines, want 3 (start, a minute later, final):\n%s", n, logs.String())
	}
	if !strings.Contains(logs.String(), "samples=600") || !strings.Contains(logs.String(), "free space") {
		t.Fatalf("summary does not give counts and what to do:\n%s", logs.String())
	}
}

// While the batcher is behind (a disk queue that takes a second per
// append), WaitRoom holds scrape loops back before they fetch, and lets
// them go once there is room.
func TestWaitRoomHoldsLoopsBack(t *testing.T) {
	s, err := New(fastConfig(), &fakeWriter{}, discard)
	if err != nil {
		t.Fatal(err)
	}
	// No batcher runs: sealed batches pile up as behind a stalled disk.
	for i := 0; i < maxSealed; i++ {
		s.bmu.Lock()
		s.sealed = append(s.sealed, &queue.Batch{Lines: 1})
		s.pending++
		s.bmu.Unlock()
	}
	waiting := make(chan error, 1)
	go func() { _, err := s.WaitRoom(context.Background()); waiting <- err }()
	select {
	case <-waiting:
		t.Fatal("WaitRoom returned with the hand-off full")
	case <-time.After(50 * time.Millisecond):
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, err := s.WaitRoom(ctx); err == nil {
		t.Fatal("WaitRoom ignored its context")
	}
	ran := make(chan error, 1)
	go func() { ran <- s.Run(context.Background()) }() // the batcher takes the sealed batches
	select {
	case err := <-waiting:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("WaitRoom did not return once the batcher took the batches")
	}
	s.Close()
	if err := <-ran; err != nil {
		t.Fatal(err)
	}
}

// While the batcher is behind, at most maxBehind scrapes get past
// WaitRoom before they commit: the loops waiting do not all fetch at
// once when room comes.
func TestWaitRoomBoundsScrapesWhileBehind(t *testing.T) {
	s, err := New(fastConfig(), &fakeWriter{}, discard)
	if err != nil {
		t.Fatal(err)
	}
	s.bmu.Lock()
	s.pending = 1 // behind, with room
	s.bmu.Unlock()
	passed := 0
	for i := 0; i < maxBehind+10; i++ {
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Millisecond)
		permit, err := s.WaitRoom(ctx)
		cancel()
		if err == nil && permit {
			passed++
		}
	}
	if passed != maxBehind {
		t.Fatalf("%d scrapes let through while behind, want %d", passed, maxBehind)
	}
	s.releasePermit()
	if permit, err := s.WaitRoom(context.Background()); err != nil || !permit {
		t.Fatalf("a permit given back does not let the next one through: %v %v", permit, err)
	}
	s.bmu.Lock()
	s.pending = 0 // caught up: no permits needed
	s.bmu.Unlock()
	if permit, err := s.WaitRoom(context.Background()); err != nil || permit {
		t.Fatalf("caught up, WaitRoom still took a permit: %v %v", permit, err)
	}
}
