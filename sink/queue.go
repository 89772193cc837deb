package sink

import (
	"context"
	"sync"
)

// batch is a run of whole lines ready to write.
type batch struct {
	buf     []byte
	lines   int
	samples int
}

// memQueue holds sealed batches in order between the batcher and the
// writer, bounded in bytes: when a push would exceed the bound, the oldest
// batches go (drop-oldest keeps the freshest data, which is what a
// dashboard wants after an outage). Safe for one pusher and one consumer.
type memQueue struct {
	max int64

	mu     sync.Mutex // guards the fields below
	items  []*batch
	busy   *batch // head batch being written: never dropped
	bytes  int64
	closed bool
	notify chan struct{} // signalled on push and close; capacity 1
}

func newMemQueue(max int64) *memQueue {
	return &memQueue{max: max, notify: make(chan struct{}, 1)}
}

// push appends b and returns the batches dropped to make room (never b
// itself, even when b alone exceeds the bound).
func (q *memQueue) push(b *batch) []*batch {
	q.mu.Lock()
	var dropped []*batch
	first := 0
	if len(q.items) > 0 && q.items[0] == q.busy {
		first = 1
	}
	for len(q.items) > first && q.bytes+int64(len(b.buf)) > q.max {
		d := q.items[first]
		dropped = append(dropped, d)
		q.bytes -= int64(len(d.buf))
		q.items = append(q.items[:first], q.items[first+1:]...)
	}
	q.items = append(q.items, b)
	q.bytes += int64(len(b.buf))
	q.mu.Unlock()
	q.signal()
	return dropped
}

// pushFront puts batches back at the head, in order, for a retry of their
// parts (after a split).
func (q *memQueue) pushFront(bs ...*batch) {
	q.mu.Lock()
	for _, b := range bs {
		q.bytes += int64(len(b.buf))
	}
	q.items = append(bs, q.items...)
	q.mu.Unlock()
	q.signal()
}

func (q *memQueue) signal() {
	select {
	case q.notify <- struct{}{}:
	default:
	}
}

// close tells the consumer no more pushes come.
func (q *memQueue) close() {
	q.mu.Lock()
	q.closed = true
	q.mu.Unlock()
	q.signal()
}

// peek waits for the head batch. It returns nil when the queue is closed
// and empty, or when ctx is done.
func (q *memQueue) peek(ctx context.Context) *batch {
	for {
		q.mu.Lock()
		if len(q.items) > 0 {
			b := q.items[0]
			q.busy = b
			q.mu.Unlock()
			return b
		}
		closed := q.closed
		q.mu.Unlock()
		if closed {
			return nil
		}
		select {
		case <-q.notify:
		case <-ctx.Done():
			return nil
		}
	}
}

// pop removes the head batch, the one peek returned.
func (q *memQueue) pop() {
	q.mu.Lock()
	defer q.mu.Unlock()
	q.bytes -= int64(len(q.items[0].buf))
	q.items[0] = nil
	q.items = q.items[1:]
	q.busy = nil
}

// drain removes and returns everything left.
func (q *memQueue) drain() []*batch {
	q.mu.Lock()
	defer q.mu.Unlock()
	out := q.items
	q.items, q.bytes, q.busy = nil, 0, nil
	return out
}
