package sink

import (
	"context"
	"sync"
	"testing"
	"time"
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
