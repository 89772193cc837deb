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
	disk    bool // came from the disk queue
	// own tells that buf belongs to this batch alone (split halves share
	// their parent's), so it can be reused once written.
	own bool
}

// queue holds sealed batches in order between the batcher (one pusher) and
// the writer (one consumer). Batches stay in memory while InfluxDB keeps
// up. With a disk queue, they go to disk instead while the writer is
// failing, while memory holds more than memMax, and while the disk queue is
// not empty; since the disk only receives batches once memory stops taking
// them, whatever is in memory is older than what is on disk, and the
// writer serves memory first: the order is kept. Without a disk queue,
// memory is bounded by memMax by dropping the oldest batches.
type queue struct {
	memMax int64
	disk   *diskQueue // nil: memory only

	mu       sync.Mutex // guards the fields below and disk
	mem      []*batch
	memBytes int64
	busy     *batch // head batch being written: never dropped
	failing  bool
	closed   bool
	notify   chan struct{} // signalled on push and close; capacity 1
}

func newQueue(memMax int64, disk *diskQueue) *queue {
	return &queue{memMax: memMax, disk: disk, notify: make(chan struct{}, 1)}
}

// push appends b and returns what had to be dropped to make room: memory
// batches (memory only), or samples from the disk queue's head. An error
// means the disk failed; b is then kept in memory.
func (q *queue) push(b *batch) ([]*batch, lost, error) {
	q.mu.Lock()
	defer q.signal()
	defer q.mu.Unlock()
	if q.disk != nil && (q.failing || !q.disk.empty() || q.memBytes+int64(len(b.buf)) > q.memMax) {
		d, err := q.disk.append(b)
		if err == nil {
			return nil, d, nil
		}
		q.mem = append(q.mem, b)
		q.memBytes += int64(len(b.buf))
		return nil, d, err
	}
	var dropped []*batch
	first := 0
	if len(q.mem) > 0 && q.mem[0] == q.busy {
		first = 1
	}
	for len(q.mem) > first && q.memBytes+int64(len(b.buf)) > q.memMax {
		d := q.mem[first]
		dropped = append(dropped, d)
		q.memBytes -= int64(len(d.buf))
		q.mem = append(q.mem[:first], q.mem[first+1:]...)
	}
	q.mem = append(q.mem, b)
	q.memBytes += int64(len(b.buf))
	return dropped, lost{}, nil
}

// pushFront puts batches back at the head, in order (the parts of a split
// head batch).
func (q *queue) pushFront(bs ...*batch) {
	q.mu.Lock()
	for _, b := range bs {
		b.disk = false
		q.memBytes += int64(len(b.buf))
	}
	q.mem = append(bs, q.mem...)
	q.mu.Unlock()
	q.signal()
}

func (q *queue) signal() {
	select {
	case q.notify <- struct{}{}:
	default:
	}
}

// setFailing tells the queue whether writes are failing; while they are,
// new batches go to disk, where a crash cannot lose them.
func (q *queue) setFailing(f bool) {
	q.mu.Lock()
	q.failing = f
	q.mu.Unlock()
}

// close tells the consumer no more pushes come.
func (q *queue) close() {
	q.mu.Lock()
	q.closed = true
	q.mu.Unlock()
	q.signal()
}

// peek waits for the head batch: memory first, then disk. It returns nil
// when the queue is closed and empty, or when ctx is done.
func (q *queue) peek(ctx context.Context) (*batch, error) {
	for {
		q.mu.Lock()
		if len(q.mem) > 0 {
			b := q.mem[0]
			q.busy = b
			q.mu.Unlock()
			return b, nil
		}
		if q.disk != nil && !q.disk.empty() {
			b, err := q.disk.peek(nil)
			q.mu.Unlock()
			if err != nil {
				return nil, err
			}
			b.disk = true
			return b, nil
		}
		closed := q.closed
		q.mu.Unlock()
		if closed {
			return nil, nil
		}
		select {
		case <-q.notify:
		case <-ctx.Done():
			return nil, nil
		}
	}
}

// pop removes the head batch, the one peek returned.
func (q *queue) pop(b *batch) {
	q.mu.Lock()
	defer q.mu.Unlock()
	if b.disk {
		q.disk.ack()
		return
	}
	q.memBytes -= int64(len(q.mem[0].buf))
	q.mem[0] = nil
	q.mem = q.mem[1:]
	q.busy = nil
}

// spill moves what memory holds to disk (at shutdown). It returns the
// batches it could not keep (all of them without a disk queue) and what the
// disk bound made it drop.
func (q *queue) spill() (left []*batch, dropped lost, err error) {
	q.mu.Lock()
	defer q.mu.Unlock()
	mem := q.mem
	q.mem, q.memBytes, q.busy = nil, 0, nil
	if q.disk == nil {
		return mem, dropped, nil
	}
	for i, b := range mem {
		d, err := q.disk.append(b)
		dropped.add(d)
		if err != nil {
			return mem[i:], dropped, err
		}
	}
	return nil, dropped, q.disk.close()
}
