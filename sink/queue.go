package sink

import (
	"context"
	"sync"
)

// batch is a run of whole lines ready to write, gzip'd when gz.
type batch struct {
	buf     []byte
	lines   int
	samples int
	gz      bool
}

// record is one sealed batch in the queue.
type record struct {
	buf            []byte // payload in memory; nil when it is only on disk
	size           int64  // payload bytes
	lines, samples int
	disk           diskRecord // disk.seg is nil when the record is not on disk
	inflight       bool       // taken by the writer: never dropped
	gz             bool       // buf is gzip'd line protocol (one gzip member)
}

// queue holds sealed batches in order between the batcher (one pusher)
// and the writer (one consumer).
//
// With a disk queue every batch is appended to disk when it is sealed
// (write-through) and kept in memory too while memory holds less than
// memMax, so the writer rarely reads the disk back; the bound counts the
// bytes of the segment files. Without one, batches live in memory only and
// the bound counts their bytes. Past the bound the oldest records are
// dropped, never one the writer has taken and never the newest.
//
// The writer takes runs of records from the head (merged up to a batch
// size), and acknowledges them once InfluxDB has answered for every line;
// only then does the disk cursor move past them.
type queue struct {
	memMax, bound int64
	disk          *diskQueue // nil: memory only

	mu       sync.Mutex // guards the fields below and disk (except disk.read)
	recs     []*record  // oldest first; the taken ones form a prefix
	memBytes int64      // payload held in memory
	payload  int64      // payload of every record
	closed   bool
	notify   chan struct{} // signalled on push and close; capacity 1
}

func newQueue(memMax, bound int64, disk *diskQueue, recovered []diskRecord) *queue {
	q := &queue{memMax: memMax, bound: bound, disk: disk, notify: make(chan struct{}, 1)}
	for _, d := range recovered {
		q.recs = append(q.recs, &record{size: d.size - recordHeaderOf(d), lines: d.lines, samples: d.samples, disk: d, gz: d.gz})
		q.payload += d.size - recordHeaderOf(d)
	}
	return q
}

// recordHeaderOf is the header length of a recovered record (earlier
// versions wrote a shorter one).
func recordHeaderOf(d diskRecord) int64 {
	if d.v1 {
		return recordHeaderV1
	}
	return recordHeader
}

// push appends b. It returns what the bound made it drop, whether b's
// buffer may be reused at once (it went to disk only), and a disk error
// (b is then kept in memory).
func (q *queue) push(b *batch) (dropped lost, reuse bool, err error) {
	q.mu.Lock()
	defer q.signal()
	defer q.mu.Unlock()
	r := &record{buf: b.buf, size: int64(len(b.buf)), lines: b.lines, samples: b.samples, gz: b.gz}
	if q.disk != nil {
		r.disk, err = q.disk.append(b.buf, b.lines, b.samples, b.gz)
		if err == nil && q.memBytes+r.size > q.memMax {
			r.buf, reuse = nil, true
		}
	}
	if r.buf != nil {
		q.memBytes += r.size
	}
	q.recs = append(q.recs, r)
	q.payload += r.size
	return q.trim(), reuse, err
}

// over reports whether the queue is past its bounds.
func (q *queue) over() bool {
	if q.disk == nil {
		return q.payload > q.bound
	}
	// Records the disk could not take are bounded by memory.
	return q.disk.fileBytes > q.bound || q.memOnly() > q.memMax
}

func (q *queue) memOnly() int64 {
	var n int64
	if q.disk != nil && q.memBytes > q.memMax {
		for _, r := range q.recs {
			if r.disk.seg == nil {
				n += r.size
			}
		}
	}
	return n
}

// trim drops the oldest records (not taken ones, not the newest) until the
// queue is within its bound.
func (q *queue) trim() lost {
	var d lost
	i := 0
	for q.over() {
		for i < len(q.recs)-1 && q.recs[i].inflight {
			i++
		}
		if i >= len(q.recs)-1 {
			break
		}
		r := q.recs[i]
		q.recs = append(q.recs[:i], q.recs[i+1:]...)
		q.forget(r)
		d.bytes += r.size
		d.samples += int64(r.samples)
	}
	if d.samples > 0 && q.disk != nil {
		q.disk.saveCursor(q.firstOnDisk())
	}
	return d
}

// forget releases what r holds.
func (q *queue) forget(r *record) {
	q.payload -= r.size
	if r.buf != nil {
		q.memBytes -= r.size
	}
	if r.disk.seg != nil {
		q.disk.release(r.disk)
	}
}

func (q *queue) firstOnDisk() *diskRecord {
	for _, r := range q.recs {
		if r.disk.seg != nil {
			return &r.disk
		}
	}
	return nil
}

func (q *queue) signal() {
	select {
	case q.notify <- struct{}{}:
	default:
	}
}

// close tells the consumer no more pushes come.
func (q *queue) close() {
	q.mu.Lock()
	q.closed = true
	q.mu.Unlock()
	q.signal()
}

// job is a run of records the writer took, as one body: gzip'd records
// are taken together and their members concatenated (a gzip stream may
// hold several), plain ones together.
type job struct {
	recs           []*record
	body           []byte
	lines, samples int
	gz             bool
	// readErr: records whose payload could not be read back from disk;
	// they are not in body.
	unreadable []*record
	readErr    error
}

// take waits for records and takes the oldest ones, up to maxLines lines
// (at least one record), as one body built in buf. It returns nil when
// the queue is closed and empty, or when ctx is done.
func (q *queue) take(ctx context.Context, maxLines int, buf []byte) *job {
	for {
		q.mu.Lock()
		if len(q.recs) > 0 {
			j := &job{gz: q.recs[0].gz}
			for _, r := range q.recs {
				if len(j.recs) > 0 && (j.lines+r.lines > maxLines || r.gz != j.gz) {
					break
				}
				r.inflight = true
				j.recs = append(j.recs, r)
				j.lines += r.lines
				j.samples += r.samples
			}
			q.mu.Unlock()
			q.fill(j, buf)
			return j
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

// fill builds j's body: a single record in memory is used as it is,
// others are copied into buf, reading the disk where needed. Taken
// records are not dropped or moved, so no lock is needed.
func (q *queue) fill(j *job, buf []byte) {
	if len(j.recs) == 1 && j.recs[0].buf != nil {
		j.body = j.recs[0].buf
		return
	}
	buf = buf[:0]
	for _, r := range j.recs {
		if r.buf != nil {
			buf = append(buf, r.buf...)
			continue
		}
		var err error
		if buf, err = q.disk.read(r.disk, buf); err != nil {
			j.unreadable = append(j.unreadable, r)
			j.readErr = err
			j.lines -= r.lines
			j.samples -= r.samples
		}
	}
	j.body = buf
}

// ack removes j's records: InfluxDB has answered for every line of them.
// It returns the memory buffers that may be reused.
func (q *queue) ack(j *job) (reuse [][]byte) {
	q.mu.Lock()
	defer q.mu.Unlock()
	n := len(j.recs)
	for _, r := range q.recs[:n] {
		q.forget(r)
		if r.buf != nil {
			reuse = append(reuse, r.buf)
		}
	}
	clear(q.recs[:n])
	q.recs = q.recs[n:]
	if q.disk != nil {
		if len(q.recs) == 0 {
			q.disk.drained()
		}
		q.disk.saveCursor(q.firstOnDisk())
	}
	return reuse
}

// untake gives j's records back untouched (shutdown came first).
func (q *queue) untake(j *job) {
	q.mu.Lock()
	defer q.mu.Unlock()
	for _, r := range j.recs {
		r.inflight = false
	}
}

// spill makes sure what is left survives the process (at shutdown):
// records the disk has not got are appended now. It returns the samples it
// and bytes it could not keep (all without a disk queue), and closes the
// disk.
func (q *queue) spill() (left int, leftBytes int64, err error) {
	q.mu.Lock()
	defer q.mu.Unlock()
	if q.disk == nil {
		for _, r := range q.recs {
			left += r.samples
			leftBytes += r.size
		}
		return left, leftBytes, nil
	}
	for _, r := range q.recs {
		if r.disk.seg != nil || err != nil {
			if r.disk.seg == nil {
				left += r.samples
				leftBytes += r.size
			}
			continue
		}
		r.disk, err = q.disk.append(r.buf, r.lines, r.samples, r.gz)
		if err != nil {
			left += r.samples
			leftBytes += r.size
		}
	}
	q.disk.saveCursor(q.firstOnDisk())
	if cerr := q.disk.close(); err == nil {
		err = cerr
	}
	return left, leftBytes, err
}
