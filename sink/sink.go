package sink

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/klauspost/compress/gzip"

	"github.com/scrapeflux/scrapeflux/scrape"
	"github.com/scrapeflux/scrapeflux/sink/queue"
	"github.com/scrapeflux/scrapeflux/sink/schema"
)

// Config of the sink.
type Config struct {
	Convert ConvertOptions
	// BatchSize: a batch is sent once it holds at least this many lines.
	// One scrape's lines always travel in the same batch.
	BatchSize int
	// FlushInterval: a partial batch is sent at least this often.
	FlushInterval time.Duration
	// QueueDir holds the disk queue (package queue): every sealed batch
	// until InfluxDB has answered for it. Empty: memory only.
	QueueDir string
	// MaxQueueBytes bounds the disk queue; past it the oldest data is
	// dropped and counted.
	MaxQueueBytes int64
	// MaxMemoryBytes bounds what waits in memory: the whole queue without
	// QueueDir, what the disk refused with one.
	MaxMemoryBytes int64
	// QueueSync says when the disk queue is synced (at most once per
	// FlushInterval by default).
	QueueSync queue.SyncPolicy
	// QueueFS is the disk queue's file layer (nil: the operating
	// system's; tests give a slow or failing one).
	QueueFS queue.FS
	// ShutdownTimeout is how long Run keeps writing after shutdown began.
	ShutdownTimeout time.Duration
	// MinBackoff and MaxBackoff bound the wait between write retries.
	MinBackoff, MaxBackoff time.Duration
	// CreateDatabase: when InfluxDB 1.x answers that the database does not
	// exist, create it (if the Writer can) and write again.
	CreateDatabase bool
	// MaxHourlySeries and MaxDailySeries bound the new series of all
	// targets together in an hour, a day (0: none).
	MaxHourlySeries, MaxDailySeries int
	// Schema is the InfluxDB 3 schema guard's catalog, shared by the
	// sinks of one server (nil: no guard). It applies once the writer
	// finds InfluxDB 3.
	Schema *schema.Catalog
	// SchemaListTimeout bounds the listing of a database's tables and
	// columns at start (0: 5s).
	SchemaListTimeout time.Duration
}

func (c *Config) listTimeout() time.Duration {
	if c.SchemaListTimeout > 0 {
		return c.SchemaListTimeout
	}
	return 5 * time.Second
}

// queueConfig is the queue's part of c.
func (c *Config) queueConfig(log *slog.Logger) queue.Config {
	return queue.Config{
		Dir: c.QueueDir, MaxBytes: c.MaxQueueBytes, MaxMemoryBytes: c.MaxMemoryBytes,
		Sync: c.QueueSync, SyncInterval: c.FlushInterval, Log: log, FS: c.QueueFS,
	}
}

// DatabaseCreator is a Writer that can create its InfluxDB 1.x database.
type DatabaseCreator interface {
	CreateDatabase(ctx context.Context) error
	Database() string
}

// Defaults of Config.
const (
	DefaultBatchSize       = 10000
	DefaultFlushInterval   = time.Second
	DefaultMaxQueueBytes   = 1 << 30
	DefaultMaxMemoryBytes  = 64 << 20
	DefaultQueueDir        = "scrapeflux-queue"
	DefaultShutdownTimeout = 10 * time.Second
	DefaultMeasurement     = "prometheus"
)

// DefaultConfig returns a Config with every default filled in.
func DefaultConfig() Config {
	return Config{
		Convert:         ConvertOptions{Layout: LayoutV1, Measurement: DefaultMeasurement},
		BatchSize:       DefaultBatchSize,
		FlushInterval:   DefaultFlushInterval,
		MaxQueueBytes:   DefaultMaxQueueBytes,
		MaxMemoryBytes:  DefaultMaxMemoryBytes,
		QueueDir:        DefaultQueueDir,
		ShutdownTimeout: DefaultShutdownTimeout,
		MinBackoff:      500 * time.Millisecond,
		MaxBackoff:      30 * time.Second,
	}
}

// Validate rejects a config the sink cannot run, naming the field.
func (c *Config) Validate() error {
	var errs []error
	if c.BatchSize <= 0 {
		errs = append(errs, fmt.Errorf("batch size must be positive, got %d", c.BatchSize))
	}
	if c.FlushInterval <= 0 {
		errs = append(errs, fmt.Errorf("flush interval must be positive, got %s", c.FlushInterval))
	}
	if c.MaxQueueBytes <= 0 {
		errs = append(errs, fmt.Errorf("queue max bytes must be positive, got %d", c.MaxQueueBytes))
	}
	qc := c.queueConfig(nil)
	if err := qc.Validate(); err != nil {
		errs = append(errs, err)
	}
	if c.MaxHourlySeries < 0 || c.MaxDailySeries < 0 {
		errs = append(errs, fmt.Errorf("series budgets must not be negative, got %d hourly and %d daily", c.MaxHourlySeries, c.MaxDailySeries))
	}
	if c.ShutdownTimeout < 0 {
		errs = append(errs, fmt.Errorf("shutdown timeout must not be negative, got %s", c.ShutdownTimeout))
	}
	if c.MinBackoff <= 0 || c.MaxBackoff < c.MinBackoff {
		errs = append(errs, fmt.Errorf("backoff bounds %s..%s are invalid", c.MinBackoff, c.MaxBackoff))
	}
	if c.Convert.Layout != LayoutV1 && c.Convert.Layout != LayoutV2 {
		errs = append(errs, fmt.Errorf("layout %d is unknown", c.Convert.Layout))
	}
	if c.Convert.Layout == LayoutV2 && c.Convert.Measurement == "" {
		errs = append(errs, errors.New("measurement must not be empty with layout v2"))
	}
	return errors.Join(errs...)
}

// Writer sends one batch of line protocol. Implementations return a
// *WriteError for answers from the server, anything else for network
// trouble. Called from one goroutine.
type Writer interface {
	Write(ctx context.Context, body []byte) error
}

// A CompressingWriter is a Writer that sends bodies gzip'd, and also takes
// bodies gzip'd already. The sink then compresses each batch once, as its
// scrapes come, and queues it compressed: the disk queue writes and holds
// a sixth of the bytes, and a batch sent again is not compressed again.
type CompressingWriter interface {
	Writer
	// Compresses reports whether bodies are sent gzip'd.
	Compresses() bool
	// WriteCompressed sends body: gzip members (one or more) of lines
	// ending in a newline.
	WriteCompressed(ctx context.Context, body []byte) error
}

// WriteError is an answer from InfluxDB other than success.
type WriteError struct {
	StatusCode int
	// RetryAfter is what the server asked for, zero when it did not.
	RetryAfter time.Duration
	Message    string
	// Refused: the lines the answer names by number (InfluxDB 3).
	Refused []RefusedLine
	// Stored: the server stored every line but the Refused ones.
	Stored bool
}

func (e *WriteError) Error() string {
	return fmt.Sprintf("InfluxDB answered %d: %s", e.StatusCode, e.Message)
}

// chunk is one committed scrape, encoded.
type chunk struct {
	buf            []byte
	lines, samples int
}

// Sink batches committed scrapes and writes them. It implements
// scrape.Appendable. Shutdown order: stop every producer (the scrape pool),
// then call Close; Run then flushes what it holds within ShutdownTimeout and
// returns.
type Sink struct {
	cfg     Config
	convert ConvertOptions
	w       Writer
	cw      CompressingWriter // w, when it takes gzip'd bodies
	gzip    bool              // batches are queued gzip'd
	log     *slog.Logger
	stats   Stats

	chunks    sync.Pool
	bufs      chan []byte // buffers of written batches, for new ones
	q         *queue.Queue
	drops     dropLog // owned by the batcher
	closeOnce sync.Once
	closing   chan struct{}

	// The batch being filled. A scrape loop adds its committed lines
	// itself, under bmu (compressing them there when batches are gzip'd,
	// while they are still in its core's cache), so a scrape needs no
	// hand-over to another goroutine. A batch that reaches BatchSize is
	// sealed on the spot; the batcher goroutine seals by time and pushes
	// sealed batches into the queue, one pusher as the queue wants.
	bmu   sync.Mutex
	bcond sync.Cond // on bmu: sealed shrank, or the sink is closing
	// room is closed when sealed shrinks below maxSealed; nil while
	// nobody waits (see WaitRoom).
	room   chan struct{}
	cur    *queue.Batch
	gz     gzipBatch      // cur's gzip member when batches are gzip'd
	sealed []*queue.Batch // sealed, not taken by the batcher yet
	// pending: batches sealed and not yet pushed into the queue (sealed,
	// and those the batcher is pushing).
	pending int
	// permits bound the scrapes between WaitRoom and their commit while
	// the batcher is behind (see WaitRoom).
	permits chan struct{}
	sealedC chan struct{} // cap 1: sealed holds batches
	// batchCap: the largest plain batch so far, to size the next one.
	batchCap int

	// Budgets of new series over all targets; nil when not set. jobs:
	// each job's own (and what the budgets held back of it).
	hourly, daily *seriesBudget
	jobs          *jobBudgets

	// schema: the guard of the database this sink writes (nil: none);
	// listed: its tables were asked of the server.
	schema *schema.DB
	listed atomic.Bool

	// writeLines: most lines merged into one request (BatchSize, less
	// after InfluxDB refused a request as too large).
	writeLines atomic.Int64

	// Owned by the writer goroutine.
	health  writeHealth
	rejects rejectLog
}

// maxSealed bounds the sealed batches waiting for the batcher: past it,
// committing waits (the disk queue is that slow).
const maxSealed = 4

// New makes a sink writing through w. With a QueueDir, what an earlier run
// left queued is sent first.
func New(cfg Config, w Writer, log *slog.Logger) (*Sink, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	s := &Sink{
		cfg:     cfg,
		convert: cfg.Convert,
		w:       w,
		log:     log,
		bufs:    make(chan []byte, 4),
		closing: make(chan struct{}),
		cur:     &queue.Batch{},
		sealedC: make(chan struct{}, 1),
	}
	s.bcond.L = &s.bmu
	s.permits = make(chan struct{}, maxBehind)
	s.writeLines.Store(int64(cfg.BatchSize))
	s.hourly = newSeriesBudget(cfg.MaxHourlySeries, time.Hour)
	s.daily = newSeriesBudget(cfg.MaxDailySeries, 24*time.Hour)
	s.jobs = &jobBudgets{}
	if cw, ok := w.(CompressingWriter); ok {
		s.cw, s.gzip = cw, cw.Compresses()
	}
	s.health.log, s.rejects.log = log, log
	s.stats.since.Store(time.Now().UnixNano())
	s.drops.log = log
	if st, ok := w.(ServerTeller); ok && cfg.Schema != nil {
		s.schema = cfg.Schema.Database(st.Database())
	}
	q, rec, err := queue.Open(cfg.queueConfig(log))
	if err != nil {
		return nil, fmt.Errorf("cannot open queue dir %s: %w", cfg.QueueDir, err)
	}
	s.q = q
	s.stats.addDropped(DropCorrupt, int(rec.Damaged.Samples))
	s.stats.recovered.Add(rec.Queued.Samples + rec.Damaged.Samples)
	s.stats.queuedSamples.Add(rec.Queued.Samples)
	s.stats.queuedBytes.Add(rec.Queued.Bytes)
	if rec.Queued.Samples > 0 {
		log.Info("queued data from an earlier run will be sent first", "samples", rec.Queued.Samples, "bytes", rec.Queued.Bytes)
	}
	// An earlier run with a larger bound may have left more.
	s.dropQueued(rec.Dropped)
	s.drops.report(time.Now(), true)
	s.noteServer()
	return s, nil
}

// Appender returns the converter for a target's loop.
func (s *Sink) Appender(ident []scrape.Tag, o scrape.AppendOptions) scrape.Appender {
	return newConverter(s, ident, o)
}

// Ready reports whether data can go somewhere: InfluxDB takes writes, or
// the disk queue holds them.
func (s *Sink) Ready() bool {
	if s.cfg.QueueDir != "" && s.q.Status().DiskError == "" {
		return true
	}
	return !s.stats.failing.Load()
}

// SeriesBudgets returns the series counted in the current hour and day
// windows, their budgets (0: none) and the series held back, in all.
func (s *Sink) SeriesBudgets() (hourUsed, hourLimit, dayUsed, dayLimit int, held int64) {
	hu, hl, hh := s.hourly.state()
	du, dl, dh := s.daily.state()
	return hu, hl, du, dl, hh + dh
}

// JobBudgets returns each job's series budgets and what they held back,
// by job name.
func (s *Sink) JobBudgets() []JobBudget { return s.jobs.state() }

// QueueStatus is the queue's state: its size and whether the disk takes
// writes.
func (s *Sink) QueueStatus() queue.Status { return s.q.Status() }

// Stats returns the sample counters.
func (s *Sink) Stats() StatsSnapshot { return s.stats.snapshot() }

// Close tells the sink that no more scrapes will be committed. The batcher
// then takes what was handed over and seals it; a Commit after Close does
// not panic, its samples are counted as dropped at shutdown.
func (s *Sink) Close() {
	s.closeOnce.Do(func() { close(s.closing) })
}

func (s *Sink) getChunk() *chunk {
	if c, ok := s.chunks.Get().(*chunk); ok {
		c.buf = c.buf[:0]
		return c
	}
	return &chunk{}
}

// put adds a committed scrape to the batch being filled, in the caller's
// goroutine. The chunk goes back to the pool.
func (s *Sink) put(c *chunk) error {
	s.stats.scraped.Add(int64(c.samples))
	defer func() {
		// Chunks that grew huge are not kept for reuse.
		if cap(c.buf) <= 1<<20 {
			s.chunks.Put(c)
		}
	}()
	if c.lines == 0 {
		return nil
	}
	s.bmu.Lock()
	defer s.bmu.Unlock()
	for s.pending >= maxSealed && !s.isClosing() {
		s.bcond.Wait()
	}
	// Checked under bmu: the batcher's last seal, also under bmu, takes
	// every scrape added before Close and none after.
	if s.isClosing() {
		s.stats.addDropped(DropShutdown, c.samples)
		return nil
	}
	s.stats.queuedSamples.Add(int64(c.samples))
	s.stats.queuedBytes.Add(int64(len(c.buf)))
	if s.gzip {
		if !s.gz.open {
			s.gz.start(s.newBuf(64 << 10))
		}
		s.gz.write(c.buf)
	} else {
		s.cur.Buf = append(s.cur.Buf, c.buf...)
	}
	s.cur.Lines += c.lines
	s.cur.Samples += c.samples
	if s.cur.Lines >= s.cfg.BatchSize {
		s.sealLocked()
		select {
		case s.sealedC <- struct{}{}:
		default:
		}
	}
	return nil
}

// WaitRoom waits while the sink cannot take another scrape (the batcher
// is behind: a slow or refusing disk queue). A scrape loop calls it
// before it fetches, so a stalled queue holds loops back while they hold
// no body and no CPU slot. While the batcher is behind, at most
// maxBehind scrapes are let through at once (each holds a permit until
// its commit), so the loops waiting do not all fetch together when room
// comes: memory does not grow with the number of targets. It reports
// whether the caller holds a permit, to give back with releasePermit.
func (s *Sink) WaitRoom(ctx context.Context) (bool, error) {
	for {
		s.bmu.Lock()
		if s.isClosing() || s.pending == 0 {
			s.bmu.Unlock()
			return false, nil
		}
		if s.pending < maxSealed {
			s.bmu.Unlock()
			select {
			case s.permits <- struct{}{}:
				return true, nil
			case <-s.closing:
				return false, nil
			case <-ctx.Done():
				return false, ctx.Err()
			}
		}
		if s.room == nil {
			s.room = make(chan struct{})
		}
		room := s.room
		s.bmu.Unlock()
		select {
		case <-room:
		case <-s.closing:
		case <-ctx.Done():
			return false, ctx.Err()
		}
	}
}

// maxBehind bounds the scrapes between WaitRoom and their commit while
// the batcher is behind.
const maxBehind = 64

func (s *Sink) releasePermit() { <-s.permits }

func (s *Sink) isClosing() bool {
	select {
	case <-s.closing:
		return true
	default:
		return false
	}
}

// newBuf returns a buffer of a written batch, or a new one of capacity n.
func (s *Sink) newBuf(n int) []byte {
	select {
	case b := <-s.bufs:
		return b[:0]
	default:
		return make([]byte, 0, n)
	}
}

// sealLocked seals the batch being filled, if it holds lines, for the
// batcher to push. bmu is held.
func (s *Sink) sealLocked() {
	b := s.cur
	if b.Lines == 0 {
		return
	}
	if s.gzip {
		buf, plain := s.gz.finish()
		b.Buf, b.GZ = buf, true
		s.stats.queuedBytes.Add(int64(len(buf)) - plain)
	}
	s.sealed = append(s.sealed, b)
	s.pending++
	s.cur = &queue.Batch{}
	if !s.gzip {
		// Room for the largest batch so far and some: growing it scrape
		// by scrape would copy it over and over.
		s.batchCap = max(s.batchCap, len(b.Buf))
		s.cur.Buf = s.newBuf(s.batchCap + s.batchCap/4)
	}
}

// Run batches and writes until Close has been called and everything is
// written, or until ShutdownTimeout after ctx is cancelled or Close is
// called. What is left then stays in the disk queue for the next run, or
// without one is dropped and counted.
func (s *Sink) Run(ctx context.Context) error {
	wctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go func() {
		select {
		case <-ctx.Done():
			// Cancelled without Close: stop taking scrapes, as Close does.
			s.Close()
		case <-s.closing:
		case <-wctx.Done():
			return
		}
		t := time.NewTimer(s.cfg.ShutdownTimeout)
		defer t.Stop()
		select {
		case <-t.C:
			cancel()
		case <-wctx.Done():
		}
	}()
	done := make(chan struct{})
	go func() {
		defer close(done)
		s.batch()
	}()
	s.write(wctx)
	<-done
	s.rejects.report(true)
	left, err := s.q.Spill()
	s.stats.queuedSamples.Add(-left.Samples)
	s.stats.queuedBytes.Add(-left.Bytes)
	s.stats.addDropped(DropShutdown, int(left.Samples))
	s.drops.report(time.Now(), true)
	if left.Samples > 0 {
		s.log.Error("shutdown with data neither written nor queued on disk", "samples", left.Samples, "bytes", left.Bytes, "err", err)
	} else if q := s.stats.queuedSamples.Load(); q > 0 {
		s.log.Info("data left in the disk queue for the next run", "samples", q, "dir", s.cfg.QueueDir)
	}
	if err != nil {
		return fmt.Errorf("cannot spill to the disk queue: %w", err)
	}
	return nil
}

// gzipBatch is the batch being filled when batches are queued gzip'd:
// each committed scrape is compressed as it comes, so the batch's plain
// lines are never copied into one buffer.
type gzipBatch struct {
	zw    *gzip.Writer
	out   bytes.Buffer
	plain int64 // bytes of lines written to zw since the last seal
	open  bool  // zw holds an unfinished member
}

// start opens a gzip member written into buf.
func (g *gzipBatch) start(buf []byte) {
	g.out = *bytes.NewBuffer(buf[:0])
	if g.zw == nil {
		g.zw, _ = gzip.NewWriterLevel(&g.out, gzip.BestSpeed)
	} else {
		g.zw.Reset(&g.out)
	}
	g.open = true
}

// write compresses lines into the open member.
func (g *gzipBatch) write(lines []byte) {
	// Writes to a bytes.Buffer do not fail.
	_, _ = g.zw.Write(lines)
	g.plain += int64(len(lines))
}

// finish ends the member and returns it with the plain bytes it holds.
func (g *gzipBatch) finish() ([]byte, int64) {
	_ = g.zw.Close()
	b, n := g.out.Bytes(), g.plain
	g.out, g.plain, g.open = bytes.Buffer{}, 0, false
	return b, n
}

// dropQueued counts data the queue's bounds pushed out.
func (s *Sink) dropQueued(d queue.Drops) {
	for _, x := range []struct {
		l queue.Amount
		r DropReason
	}{{d.Full, DropQueueFull}, {d.DiskError, DropDiskError}} {
		if x.l.IsZero() {
			continue
		}
		s.stats.queuedSamples.Add(-x.l.Samples)
		s.stats.queuedBytes.Add(-x.l.Bytes)
		s.stats.addDropped(x.r, int(x.l.Samples))
		s.drops.add(x.r, x.l)
	}
}

// batch seals the batch being filled by time and pushes sealed batches
// into the queue (and so to disk). It never waits on InfluxDB. Once the
// sink is closing it seals what scrapes added and returns.
func (s *Sink) batch() {
	tick := time.NewTicker(s.cfg.FlushInterval)
	defer tick.Stop()
	for {
		seal, final := false, false
		select {
		case <-s.sealedC:
		case <-tick.C:
			seal = true
		case <-s.closing:
			seal, final = true, true
		}
		s.bmu.Lock()
		if seal {
			s.sealLocked()
		}
		todo := s.sealed
		s.sealed = nil
		s.bmu.Unlock()
		for _, b := range todo {
			dropped, reuse := s.q.Push(*b)
			s.bmu.Lock()
			s.pending--
			s.bcond.Broadcast()
			if s.room != nil {
				close(s.room)
				s.room = nil
			}
			s.bmu.Unlock()
			s.dropQueued(dropped)
			if reuse {
				// The batch went to disk only: its buffer is free.
				select {
				case s.bufs <- b.Buf[:0]:
				default:
				}
			}
		}
		if seal {
			s.dropQueued(s.q.Tick())
		}
		s.drops.report(time.Now(), final)
		if final {
			s.q.Close()
			return
		}
	}
}
