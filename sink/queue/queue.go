package queue

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"strings"
	"sync"
	"time"
)

// SyncPolicy says when the queue's files are made durable (fdatasync).
type SyncPolicy int

const (
	// SyncInterval syncs the segment being written and the cursor at most
	// once per Config.SyncInterval, when something changed.
	SyncInterval SyncPolicy = iota
	// SyncAlways syncs every record before Push returns and every cursor
	// move.
	SyncAlways
	// SyncNever leaves it to the operating system (and Close).
	SyncNever
)

var syncNames = [...]string{"interval", "always", "never"}

func (p SyncPolicy) String() string { return syncNames[p] }

// ParseSyncPolicy reads "interval", "always" or "never".
func ParseSyncPolicy(s string) (SyncPolicy, error) {
	for i, n := range syncNames {
		if strings.EqualFold(s, n) {
			return SyncPolicy(i), nil
		}
	}
	return 0, fmt.Errorf("unknown queue sync policy %q: use interval, always or never", s)
}

// Config of a Queue.
type Config struct {
	// Dir holds the segment files; empty: memory only.
	Dir string
	// MaxBytes bounds the segment files (with Dir).
	MaxBytes int64
	// MaxMemoryBytes bounds the payload held in memory: without Dir all of
	// the queue, with Dir what the disk refused (a copy of what it took
	// is kept too, while there is room, so replays rarely read the disk).
	MaxMemoryBytes int64
	Sync           SyncPolicy
	// SyncInterval: how often SyncInterval syncs.
	SyncInterval time.Duration
	// FS is the file layer; nil: the operating system's.
	FS  FS
	Log *slog.Logger
	// Now is the clock; nil: time.Now.
	Now func() time.Time
	// RetryMin and RetryMax bound the wait between attempts to write to a
	// disk that refused a write; zero: 1s and 30s.
	RetryMin, RetryMax time.Duration
}

// MinBytes is the smallest disk bound accepted.
const MinBytes = 1 << 20

// Validate rejects a config the queue cannot run, naming the field.
func (c *Config) Validate() error {
	var errs []error
	if c.MaxMemoryBytes <= 0 {
		errs = append(errs, fmt.Errorf("memory max bytes must be positive, got %d", c.MaxMemoryBytes))
	}
	if c.Dir != "" && c.MaxBytes < MinBytes {
		errs = append(errs, fmt.Errorf("queue max bytes must be at least %d (1MiB) with a queue dir, got %d", MinBytes, c.MaxBytes))
	}
	if c.Sync < SyncInterval || c.Sync > SyncNever {
		errs = append(errs, fmt.Errorf("queue sync policy %d is unknown", c.Sync))
	}
	if c.Sync == SyncInterval && c.Dir != "" && c.SyncInterval <= 0 {
		errs = append(errs, fmt.Errorf("queue sync interval must be positive, got %s", c.SyncInterval))
	}
	return errors.Join(errs...)
}

// Batch is a run of whole lines, gzip'd (one member) when GZ.
type Batch struct {
	Buf            []byte
	Lines, Samples int
	GZ             bool
}

// Drops is what the bounds made the queue drop, by reason.
type Drops struct {
	// Full: the oldest data, to stay within the disk bound (or the memory
	// bound without a disk).
	Full Amount
	// DiskError: the oldest data the disk refused, to stay within the
	// memory bound while the disk refuses writes.
	DiskError Amount
}

func (d *Drops) add(o Drops) { d.Full.add(o.Full); d.DiskError.add(o.DiskError) }

// IsZero reports whether nothing was dropped.
func (d Drops) IsZero() bool { return d.Full.IsZero() && d.DiskError.IsZero() }

// Recovered is what Open found of an earlier run.
type Recovered struct {
	// Queued: the records still to send.
	Queued Amount
	// Damaged: what damaged or torn records cost.
	Damaged Amount
	// Dropped: what a smaller bound than the earlier run's made Open drop.
	Dropped Drops
}

// record is one pushed batch.
type record struct {
	buf            []byte // payload in memory; nil when it is only on disk
	size           int64  // payload bytes
	lines, samples int
	disk           diskRecord // disk.seg is nil when the record is not on disk
	inflight       bool       // taken by the writer: never dropped
	gz             bool
}

func (r *record) onDisk() bool { return r.disk.seg != nil }

// Queue holds sealed batches in order between one pusher and one taker.
type Queue struct {
	cfg  Config
	log  *slog.Logger
	now  func() time.Time
	disk *diskLog // nil: memory only

	mu           sync.Mutex // guards the fields below and disk (except disk.read)
	recs         []*record  // oldest first; the taken ones form a prefix
	memBytes     int64      // payload held in memory
	memOnlyBytes int64      // payload of records not on disk
	payload      int64      // payload of every record
	closed       bool
	notify       chan struct{} // signalled on push and close; capacity 1
	lastSync     time.Time
	fault        diskFault
}

// diskFault is the state of a disk that refuses writes.
type diskFault struct {
	err                   error // nil: the disk takes writes
	since, retry, lastLog time.Time
	attempt               int
}

// Open opens the queue, and with a Dir what an earlier run left in it.
func Open(cfg Config) (*Queue, Recovered, error) {
	var rec Recovered
	if err := cfg.Validate(); err != nil {
		return nil, rec, err
	}
	if cfg.FS == nil {
		cfg.FS = OS{}
	}
	if cfg.Log == nil {
		cfg.Log = slog.New(slog.DiscardHandler)
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.RetryMin <= 0 {
		cfg.RetryMin = time.Second
	}
	if cfg.RetryMax < cfg.RetryMin {
		cfg.RetryMax = max(30*time.Second, cfg.RetryMin)
	}
	q := &Queue{cfg: cfg, log: cfg.Log, now: cfg.Now, notify: make(chan struct{}, 1)}
	q.lastSync = q.now()
	if cfg.Dir == "" {
		return q, rec, nil
	}
	d, found, damaged, err := openLog(cfg.FS, cfg.Dir, segmentSize(cfg.MaxBytes), cfg.Sync, cfg.Log)
	if err != nil {
		return nil, rec, err
	}
	q.disk = d
	rec.Damaged = damaged
	for _, f := range found {
		n := f.payload()
		q.recs = append(q.recs, &record{size: n, lines: f.lines, samples: f.samples, disk: f, gz: f.gz})
		q.payload += n
		rec.Queued.add(Amount{Bytes: n, Samples: int64(f.samples)})
	}
	q.mu.Lock()
	rec.Dropped = q.trim()
	q.mu.Unlock()
	return q, rec, nil
}

// Push appends b. It returns what the bounds made it drop, and whether
// b's buffer may be reused at once (the disk took it and memory holds no
// copy). A disk that refuses the write costs nothing here: b stays in
// memory and is written to disk, in order, once the disk takes writes
// again (see Tick).
func (q *Queue) Push(b Batch) (d Drops, reuse bool) {
	q.mu.Lock()
	defer q.signal()
	defer q.mu.Unlock()
	r := &record{buf: b.Buf, size: int64(len(b.Buf)), lines: b.Lines, samples: b.Samples, gz: b.GZ}
	q.recs = append(q.recs, r)
	q.payload += r.size
	q.memBytes += r.size
	q.memOnlyBytes += r.size
	if q.disk != nil && q.writeDisk() && q.memBytes > q.cfg.MaxMemoryBytes {
		// On disk, and memory holds enough copies already.
		q.uncache(r)
		reuse = true
	}
	d = q.trim()
	q.maybeSync()
	return d, reuse
}

// writeDisk appends the records memory holds alone, oldest first, unless
// the disk refused a write and its retry is not due. It reports whether
// all of them are on disk now.
func (q *Queue) writeDisk() bool {
	now := q.now()
	if q.fault.err != nil && now.Before(q.fault.retry) {
		return false
	}
	written := 0
	for _, r := range q.recs {
		if r.onDisk() {
			continue
		}
		dr, err := q.disk.append(r.buf, r.lines, r.samples, r.gz)
		if err != nil {
			q.diskFailed(now, err)
			return false
		}
		r.disk = dr
		q.memOnlyBytes -= r.size
		written++
	}
	if q.fault.err != nil {
		q.log.Info("the disk queue takes writes again; what waited in memory is on disk now",
			"dir", q.cfg.Dir, "refused_for", now.Sub(q.fault.since).Round(time.Second).String(), "batches_written", written)
		q.fault = diskFault{}
		q.memOnlyBytes = max(q.memOnlyBytes, 0)
	}
	return true
}

// diskFailed records a refused write or sync: said once when it starts,
// once a minute while it lasts.
func (q *Queue) diskFailed(now time.Time, err error) {
	f := &q.fault
	if f.err == nil {
		f.since, f.lastLog = now, now
		q.log.Error("cannot write to the disk queue; new data waits in memory (up to --memory-max-bytes, then the oldest of it is dropped) and the disk is tried again: free space on it or fix it",
			"dir", q.cfg.Dir, "err", err)
	} else if now.Sub(f.lastLog) >= time.Minute {
		f.lastLog = now
		q.log.Warn("the disk queue still refuses writes; new data waits in memory",
			"dir", q.cfg.Dir, "err", err, "for", now.Sub(f.since).Round(time.Second).String(), "memory_only_bytes", q.memOnlyBytes)
	}
	f.err = err
	f.attempt++
	d := q.cfg.RetryMin << min(f.attempt-1, 16)
	if d > q.cfg.RetryMax || d <= 0 {
		d = q.cfg.RetryMax
	}
	f.retry = now.Add(d/2 + rand.N(d/2+1))
}

// Tick syncs when the policy says so and tries a refusing disk again when
// its retry is due. The pusher calls it at least every SyncInterval.
func (q *Queue) Tick() Drops {
	q.mu.Lock()
	defer q.mu.Unlock()
	var d Drops
	if q.disk != nil && q.memOnlyBytes > 0 && q.writeDisk() {
		d = q.trim()
	}
	q.maybeSync()
	return d
}

// maybeSync syncs the files when the policy's interval has passed.
func (q *Queue) maybeSync() {
	if q.disk == nil || q.cfg.Sync != SyncInterval {
		return
	}
	now := q.now()
	if now.Sub(q.lastSync) < q.cfg.SyncInterval || !(q.disk.dirtySeg || q.disk.dirtyCur) {
		return
	}
	q.lastSync = now
	if err := q.disk.syncFiles(); err != nil {
		q.diskFailed(now, err)
	}
}

// Sync makes everything pushed and acknowledged so far durable, whatever
// the policy.
func (q *Queue) Sync() error {
	q.mu.Lock()
	defer q.mu.Unlock()
	if q.disk == nil {
		return nil
	}
	q.lastSync = q.now()
	return q.disk.syncFiles()
}

// uncache lets go of the memory copy of r, which is on disk.
func (q *Queue) uncache(r *record) {
	if r.buf != nil && r.onDisk() {
		r.buf = nil
		q.memBytes -= r.size
	}
}

// trim drops records until the queue is within its bounds: never a taken
// one, never the newest, and never a record on disk to make room in
// memory.
func (q *Queue) trim() Drops {
	var d Drops
	if q.disk == nil {
		d.Full = q.dropOldest(func(*record) bool { return true }, func() bool { return q.payload > q.cfg.MaxMemoryBytes })
		return d
	}
	d.Full = q.dropOldest((*record).onDisk, func() bool { return q.disk.fileBytes > q.cfg.MaxBytes })
	if q.memBytes > q.cfg.MaxMemoryBytes {
		// Copies of what is on disk go first: they cost nothing.
		for _, r := range q.recs {
			if q.memBytes <= q.cfg.MaxMemoryBytes {
				break
			}
			if !r.inflight {
				q.uncache(r)
			}
		}
	}
	d.DiskError = q.dropOldest(func(r *record) bool { return !r.onDisk() }, func() bool { return q.memOnlyBytes > q.cfg.MaxMemoryBytes })
	if !d.Full.IsZero() || !d.DiskError.IsZero() {
		q.saveCursor()
	}
	return d
}

// dropOldest drops the oldest records that match while over holds.
func (q *Queue) dropOldest(match func(*record) bool, over func() bool) Amount {
	var l Amount
	for i := 0; over() && i < len(q.recs)-1; {
		r := q.recs[i]
		if r.inflight || !match(r) {
			i++
			continue
		}
		q.recs = append(q.recs[:i], q.recs[i+1:]...)
		q.forget(r)
		l.add(Amount{Bytes: r.size, Samples: int64(r.samples)})
	}
	return l
}

// forget releases what r holds.
func (q *Queue) forget(r *record) {
	q.payload -= r.size
	if r.buf != nil {
		q.memBytes -= r.size
	}
	if r.onDisk() {
		q.disk.release(r.disk)
	} else {
		q.memOnlyBytes -= r.size
	}
}

func (q *Queue) saveCursor() {
	var first *diskRecord
	for _, r := range q.recs {
		if r.onDisk() {
			first = &r.disk
			break
		}
	}
	if err := q.disk.saveCursor(first); err != nil {
		q.diskFailed(q.now(), err)
	}
}

func (q *Queue) signal() {
	select {
	case q.notify <- struct{}{}:
	default:
	}
}

// Close tells the taker no more pushes come.
func (q *Queue) Close() {
	q.mu.Lock()
	q.closed = true
	q.mu.Unlock()
	q.signal()
}

// Status is the queue's state, for pages and metrics.
type Status struct {
	Records, Lines int
	// Payload: line protocol bytes queued; Memory: held in memory;
	// MemoryOnly: in memory and not on disk; Disk: of the segment files.
	Payload, Memory, MemoryOnly, Disk int64
	// MaxDisk (0: no disk) and MaxMemory are the bounds.
	MaxDisk, MaxMemory int64
	// DiskError is the disk's last refusal while it refuses writes, since
	// DiskErrorSince; empty when it takes them.
	DiskError      string
	DiskErrorSince time.Time
}

// Status returns the queue's state.
func (q *Queue) Status() Status {
	q.mu.Lock()
	defer q.mu.Unlock()
	s := Status{Records: len(q.recs), Payload: q.payload, Memory: q.memBytes, MemoryOnly: q.memOnlyBytes, MaxMemory: q.cfg.MaxMemoryBytes}
	for _, r := range q.recs {
		s.Lines += r.lines
	}
	if q.disk != nil {
		s.Disk, s.MaxDisk = q.disk.fileBytes, q.cfg.MaxBytes
		if q.fault.err != nil {
			s.DiskError, s.DiskErrorSince = q.fault.err.Error(), q.fault.since
		}
	}
	return s
}

// Job is a run of records the taker took, as one body: gzip'd records are
// taken together and their members concatenated (a gzip stream may hold
// several), plain ones together.
type Job struct {
	recs []*record
	// Body: the lines to send; Lines and Samples count them.
	Body           []byte
	Lines, Samples int
	GZ             bool
	// Merged: Body was built in the buffer given to Take.
	Merged bool
	// Taken: payload bytes and samples of every record taken, unreadable
	// ones included.
	Taken Amount
	// Unreadable: records whose payload could not be read back from disk
	// (ReadErr says why); they are not in Body.
	Unreadable Amount
	ReadErr    error
}

// Records is how many records j took.
func (j *Job) Records() int { return len(j.recs) }

// Take waits for records and takes the oldest ones, up to maxLines lines
// (at least one record), as one body built in buf. It returns nil when the
// queue is closed and empty, or when ctx is done.
func (q *Queue) Take(ctx context.Context, maxLines int, buf []byte) *Job {
	for {
		q.mu.Lock()
		if len(q.recs) > 0 {
			j := &Job{GZ: q.recs[0].gz}
			for _, r := range q.recs {
				if len(j.recs) > 0 && (j.Lines+r.lines > maxLines || r.gz != j.GZ) {
					break
				}
				r.inflight = true
				j.recs = append(j.recs, r)
				j.Lines += r.lines
				j.Samples += r.samples
				j.Taken.add(Amount{Bytes: r.size, Samples: int64(r.samples)})
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
// others are copied into buf, reading the disk where needed. Taken records
// are not dropped, and a taken record's memory copy is kept, so no lock is
// needed.
func (q *Queue) fill(j *Job, buf []byte) {
	if len(j.recs) == 1 && j.recs[0].buf != nil {
		j.Body = j.recs[0].buf
		return
	}
	j.Merged = true
	buf = buf[:0]
	for _, r := range j.recs {
		if r.buf != nil || !r.onDisk() {
			buf = append(buf, r.buf...)
			continue
		}
		var err error
		if buf, err = q.disk.read(r.disk, buf); err != nil {
			j.Unreadable.add(Amount{Bytes: r.size, Samples: int64(r.samples)})
			j.ReadErr = err
			j.Lines -= r.lines
			j.Samples -= r.samples
		}
	}
	j.Body = buf
}

// Ack removes j's records: every line of them was answered for. It returns
// the memory buffers that may be reused.
func (q *Queue) Ack(j *Job) (reuse [][]byte) {
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
		q.saveCursor()
		q.maybeSync()
	}
	return reuse
}

// Untake gives j's records back untouched (shutdown came first).
func (q *Queue) Untake(j *Job) {
	q.mu.Lock()
	defer q.mu.Unlock()
	for _, r := range j.recs {
		r.inflight = false
	}
}

// Spill makes what is left survive the process, at shutdown: records the
// disk has not got are appended now, everything is synced and the files
// closed. It returns what it could not keep (all of it without a disk).
func (q *Queue) Spill() (left Amount, err error) {
	q.mu.Lock()
	defer q.mu.Unlock()
	if q.disk == nil {
		for _, r := range q.recs {
			left.add(Amount{Bytes: r.size, Samples: int64(r.samples)})
		}
		return left, nil
	}
	q.fault.retry = time.Time{} // one more try, whatever the backoff says
	if !q.writeDisk() {
		err = q.fault.err
		for _, r := range q.recs {
			if !r.onDisk() {
				left.add(Amount{Bytes: r.size, Samples: int64(r.samples)})
			}
		}
	}
	q.saveCursor()
	if cerr := q.disk.close(); err == nil {
		err = cerr
	}
	return left, err
}
