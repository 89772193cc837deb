package sink

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"net/http"
	"strconv"
	"sync"
	"time"

	"github.com/scrapeflux/scrapeflux/discovery"
	"github.com/scrapeflux/scrapeflux/scrape"
)

// Config of the sink.
type Config struct {
	Convert ConvertOptions
	// BatchSize: a batch is sent once it holds at least this many lines.
	// One scrape's lines always travel in the same batch.
	BatchSize int
	// FlushInterval: a partial batch is sent at least this often.
	FlushInterval time.Duration
	// QueueDir holds the disk queue: batches InfluxDB has not taken while
	// it is away or slow, and at shutdown. Empty: memory only.
	QueueDir string
	// MaxQueueBytes bounds the disk queue (or memory, without QueueDir);
	// past it the oldest data is dropped and counted.
	MaxQueueBytes int64
	// MaxMemoryBytes is how much waits in memory before batches go to the
	// disk queue.
	MaxMemoryBytes int64
	// ShutdownTimeout is how long Run keeps writing after shutdown began.
	ShutdownTimeout time.Duration
	// MinBackoff and MaxBackoff bound the wait between write retries.
	MinBackoff, MaxBackoff time.Duration
}

// Defaults of Config.
const (
	DefaultBatchSize       = 10000
	DefaultFlushInterval   = time.Second
	DefaultMaxQueueBytes   = 1 << 30
	DefaultMaxMemoryBytes  = 64 << 20
	DefaultQueueDir        = "scrapeflux-queue"
	segmentBytes           = 64 << 20
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
	if c.MaxMemoryBytes <= 0 {
		errs = append(errs, fmt.Errorf("memory max bytes must be positive, got %d", c.MaxMemoryBytes))
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

// WriteError is an answer from InfluxDB other than success.
type WriteError struct {
	StatusCode int
	// RetryAfter is what the server asked for, zero when it did not.
	RetryAfter time.Duration
	Message    string
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
	log     *slog.Logger
	stats   Stats

	in        chan *chunk
	chunks    sync.Pool
	bufs      chan []byte // buffers of written batches, for new ones
	q         *queue
	closeOnce sync.Once
	closing   chan struct{}
}

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
		in:      make(chan *chunk, 256),
		bufs:    make(chan []byte, 4),
		closing: make(chan struct{}),
	}
	memMax := cfg.MaxQueueBytes
	var disk *diskQueue
	if cfg.QueueDir != "" {
		var ls lost
		var err error
		disk, ls, err = openDiskQueue(cfg.QueueDir, cfg.MaxQueueBytes, segmentBytes, log)
		if err != nil {
			return nil, fmt.Errorf("cannot open queue dir %s: %w", cfg.QueueDir, err)
		}
		memMax = cfg.MaxMemoryBytes
		s.stats.addDropped(DropCorrupt, int(ls.samples))
		s.stats.recovered.Add(disk.samples + ls.samples)
		s.stats.queuedSamples.Add(disk.samples)
		s.stats.queuedBytes.Add(disk.payload)
		if disk.samples > 0 {
			log.Info("queued data from an earlier run will be sent first", "samples", disk.samples, "bytes", disk.payload)
		}
	}
	s.q = newQueue(memMax, disk)
	return s, nil
}

// Appender returns the converter for a target's loop.
func (s *Sink) Appender(t *discovery.Target, o scrape.AppendOptions) scrape.Appender {
	return newConverter(s, t, o)
}

// Ready reports whether data can go somewhere: InfluxDB takes writes, or
// the disk queue holds them.
func (s *Sink) Ready() bool {
	if s.cfg.QueueDir != "" {
		return true
	}
	s.q.mu.Lock()
	defer s.q.mu.Unlock()
	return !s.q.failing
}

// Stats returns the sample counters.
func (s *Sink) Stats() StatsSnapshot { return s.stats.snapshot() }

// Close tells the sink that no more scrapes will be committed.
func (s *Sink) Close() {
	s.closeOnce.Do(func() {
		close(s.closing)
		close(s.in)
	})
}

func (s *Sink) getChunk() *chunk {
	if c, ok := s.chunks.Get().(*chunk); ok {
		c.buf = c.buf[:0]
		return c
	}
	return &chunk{}
}

// put hands a committed scrape to the batcher.
func (s *Sink) put(c *chunk) error {
	s.stats.scraped.Add(int64(c.samples))
	if c.lines == 0 {
		s.chunks.Put(c)
		return nil
	}
	s.stats.queuedSamples.Add(int64(c.samples))
	s.stats.queuedBytes.Add(int64(len(c.buf)))
	s.in <- c
	return nil
}

// Run batches and writes until Close has been called and everything is
// written, or until ShutdownTimeout after ctx is cancelled or Close is
// called. What is left then goes to the disk queue for the next run, or
// without one is dropped and counted.
func (s *Sink) Run(ctx context.Context) error {
	wctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go func() {
		select {
		case <-ctx.Done():
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
	left, dropped, err := s.q.spill()
	s.dropLost(dropped)
	var samples int
	for _, b := range left {
		samples += b.samples
		s.release(b)
	}
	s.stats.addDropped(DropShutdown, samples)
	if samples > 0 {
		s.log.Error("shutdown with data neither written nor queued on disk", "samples", samples, "batches", len(left), "err", err)
	} else if q := s.stats.queuedSamples.Load(); q > 0 {
		s.log.Info("data left in the disk queue for the next run", "samples", q, "dir", s.cfg.QueueDir)
	}
	if err != nil {
		return fmt.Errorf("cannot spill to the disk queue: %w", err)
	}
	return nil
}

// dropLost counts data the disk bound pushed out.
func (s *Sink) dropLost(d lost) {
	if d.samples == 0 && d.bytes == 0 {
		return
	}
	s.stats.queuedSamples.Add(-d.samples)
	s.stats.queuedBytes.Add(-d.bytes)
	s.stats.addDropped(DropQueueFull, int(d.samples))
	s.log.Warn("disk queue full, dropped its oldest data", "samples", d.samples, "bytes", d.bytes)
}

// batch owns the batch being filled: it appends committed scrapes and seals
// the batch into the queue by size and by time. It never waits on InfluxDB.
func (s *Sink) batch() {
	tick := time.NewTicker(s.cfg.FlushInterval)
	defer tick.Stop()
	cur := &batch{own: true}
	seal := func() {
		if cur.lines == 0 {
			return
		}
		dropped, lostOnDisk, err := s.q.push(cur)
		for _, d := range dropped {
			s.stats.addDropped(DropQueueFull, d.samples)
			s.release(d)
			s.log.Warn("queue full, dropped oldest batch", "samples", d.samples)
		}
		s.dropLost(lostOnDisk)
		if err != nil {
			s.log.Error("cannot write to the disk queue, keeping the batch in memory", "err", err)
		}
		var buf []byte
		select {
		case buf = <-s.bufs:
		default:
			buf = make([]byte, 0, len(cur.buf))
		}
		cur = &batch{buf: buf, own: true}
	}
	for {
		select {
		case c, ok := <-s.in:
			if !ok {
				seal()
				s.q.close()
				return
			}
			cur.buf = append(cur.buf, c.buf...)
			cur.lines += c.lines
			cur.samples += c.samples
			// Chunks that grew huge are not kept for reuse.
			if cap(c.buf) <= 1<<20 {
				s.chunks.Put(c)
			}
			if cur.lines >= s.cfg.BatchSize {
				seal()
			}
		case <-tick.C:
			seal()
		}
	}
}

func (s *Sink) release(b *batch) {
	s.stats.queuedSamples.Add(-int64(b.samples))
	s.stats.queuedBytes.Add(-int64(len(b.buf)))
}

// write sends queued batches in order until the queue is closed and empty
// or ctx ends.
func (s *Sink) write(ctx context.Context) {
	attempt := 0
	failing := ""
	for {
		b, err := s.q.peek(ctx)
		if err != nil {
			s.log.Error("cannot read the disk queue", "err", err)
			if !sleepCtx(ctx, s.cfg.MaxBackoff) {
				return
			}
			continue
		}
		if b == nil {
			return
		}
		err = s.w.Write(ctx, b.buf)
		if err == nil {
			s.q.pop(b)
			s.release(b)
			s.stats.written.Add(int64(b.samples))
			if b.own && !b.disk {
				select {
				case s.bufs <- b.buf[:0]:
				default:
				}
			}
			if failing != "" {
				s.q.setFailing(false)
				s.log.Info("writes to InfluxDB recovered", "after_attempts", attempt)
			}
			attempt, failing = 0, ""
			continue
		}
		if ctx.Err() != nil {
			return
		}
		var we *WriteError
		isWE := errors.As(err, &we)
		switch {
		case isWE && (we.StatusCode == http.StatusRequestEntityTooLarge ||
			we.StatusCode == http.StatusBadRequest || we.StatusCode == http.StatusUnprocessableEntity):
			s.q.pop(b)
			if b.lines > 1 {
				// Split to find what the server refuses; the halves go back
				// to the head of the queue so order is kept.
				a, c := splitBatch(b)
				s.q.pushFront(a, c)
				continue
			}
			s.release(b)
			s.stats.addDropped(DropRejected, b.samples)
			s.log.Warn("InfluxDB rejected a line, dropped it", "status", we.StatusCode, "err", we.Message,
				"line", string(bytes.TrimSpace(b.buf)))
			continue
		}
		attempt++
		s.q.setFailing(true)
		// Refused credentials or a missing bucket need a person: keep the
		// data, retry slowly, say it loudly.
		needsPerson := isWE && (we.StatusCode == http.StatusUnauthorized || we.StatusCode == http.StatusForbidden || we.StatusCode == http.StatusNotFound)
		if msg := err.Error(); msg != failing {
			lvl := slog.LevelWarn
			if needsPerson {
				lvl = slog.LevelError
			}
			s.log.Log(ctx, lvl, "cannot write to InfluxDB, will retry", "err", err, "queued_bytes", s.stats.queuedBytes.Load())
			failing = msg
		} else {
			s.log.Debug("cannot write to InfluxDB, will retry", "err", err, "attempt", attempt)
		}
		wait := backoff(attempt, s.cfg.MinBackoff, s.cfg.MaxBackoff)
		if needsPerson {
			wait = s.cfg.MaxBackoff
		}
		if isWE && we.RetryAfter > 0 {
			wait = min(we.RetryAfter, maxRetryAfter)
		}
		if !sleepCtx(ctx, wait) {
			return
		}
	}
}

// sleepCtx waits d or until ctx ends; it reports whether d passed.
func sleepCtx(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-ctx.Done():
		return false
	}
}

// maxRetryAfter caps what a server may ask us to wait.
const maxRetryAfter = 5 * time.Minute

// backoff is capped exponential with full jitter over its upper half.
func backoff(attempt int, lo, hi time.Duration) time.Duration {
	d := lo << min(attempt-1, 20)
	if d > hi || d <= 0 {
		d = hi
	}
	return d/2 + rand.N(d/2+1)
}

// splitBatch cuts b in two at the line boundary nearest its middle.
func splitBatch(b *batch) (*batch, *batch) {
	half := b.lines / 2
	cut := 0
	for i := 0; i < half; i++ {
		cut += bytes.IndexByte(b.buf[cut:], '\n') + 1
	}
	a := &batch{buf: b.buf[:cut:cut], lines: half}
	c := &batch{buf: b.buf[cut:], lines: b.lines - half}
	a.samples = countSamples(a.buf)
	c.samples = b.samples - a.samples
	return a, c
}

// countSamples counts the fields of every line: the unescaped '=' after
// the first unescaped space of each line (values are numbers, so no quoted
// strings can hide one).
func countSamples(buf []byte) int {
	n := 0
	for len(buf) > 0 {
		end := bytes.IndexByte(buf, '\n')
		if end < 0 {
			end = len(buf)
		}
		line := buf[:end]
		inFields := false
		for i := 0; i < len(line); i++ {
			switch line[i] {
			case '\\':
				i++
			case ' ':
				if inFields {
					i = len(line)
				}
				inFields = true
			case '=':
				if inFields {
					n++
				}
			}
		}
		buf = buf[min(end+1, len(buf)):]
	}
	return n
}

// parseRetryAfter reads a Retry-After header: seconds or an HTTP date.
func parseRetryAfter(v string, now time.Time) time.Duration {
	if v == "" {
		return 0
	}
	if secs, err := strconv.Atoi(v); err == nil && secs > 0 {
		return time.Duration(secs) * time.Second
	}
	if t, err := http.ParseTime(v); err == nil && t.After(now) {
		return t.Sub(now)
	}
	return 0
}
