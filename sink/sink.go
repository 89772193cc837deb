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
	"strings"
	"sync"
	"time"

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
	// CreateDatabase: when InfluxDB 1.x answers that the database does not
	// exist, create it (if the Writer can) and write again.
	CreateDatabase bool
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
	} else if c.QueueDir != "" && c.MaxQueueBytes < MinQueueBytes {
		errs = append(errs, fmt.Errorf("queue max bytes must be at least %d (1MiB) with a queue dir, got %d", MinQueueBytes, c.MaxQueueBytes))
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

	// Owned by the writer goroutine.
	health  writeHealth
	rejects rejectLog
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
	s.health.log, s.rejects.log = log, log
	s.stats.since.Store(time.Now().UnixNano())
	if cfg.QueueDir == "" {
		s.q = newQueue(cfg.MaxQueueBytes, cfg.MaxQueueBytes, nil, nil)
		return s, nil
	}
	disk, recs, ls, err := openDiskQueue(cfg.QueueDir, segmentSize(cfg.MaxQueueBytes), log)
	if err != nil {
		return nil, fmt.Errorf("cannot open queue dir %s: %w", cfg.QueueDir, err)
	}
	s.q = newQueue(cfg.MaxMemoryBytes, cfg.MaxQueueBytes, disk, recs)
	s.stats.addDropped(DropCorrupt, int(ls.samples))
	var samples int64
	for _, r := range s.q.recs {
		samples += int64(r.samples)
	}
	s.stats.recovered.Add(samples + ls.samples)
	s.stats.queuedSamples.Add(samples)
	s.stats.queuedBytes.Add(s.q.payload)
	if samples > 0 {
		log.Info("queued data from an earlier run will be sent first", "samples", samples, "bytes", s.q.payload)
	}
	// An earlier run with a larger bound may have left more.
	s.dropLost(s.q.trim())
	return s, nil
}

// Appender returns the converter for a target's loop.
func (s *Sink) Appender(ident []scrape.Tag, o scrape.AppendOptions) scrape.Appender {
	return newConverter(s, ident, o)
}

// Ready reports whether data can go somewhere: InfluxDB takes writes, or
// the disk queue holds them.
func (s *Sink) Ready() bool {
	return s.cfg.QueueDir != "" || !s.stats.failing.Load()
}

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

// put hands a committed scrape to the batcher.
func (s *Sink) put(c *chunk) error {
	s.stats.scraped.Add(int64(c.samples))
	if c.lines == 0 {
		s.chunks.Put(c)
		return nil
	}
	select {
	case <-s.closing:
		s.stats.addDropped(DropShutdown, c.samples)
		return nil
	default:
	}
	s.stats.queuedSamples.Add(int64(c.samples))
	s.stats.queuedBytes.Add(int64(len(c.buf)))
	select {
	case s.in <- c:
	case <-s.closing:
		s.stats.queuedSamples.Add(-int64(c.samples))
		s.stats.queuedBytes.Add(-int64(len(c.buf)))
		s.stats.addDropped(DropShutdown, c.samples)
	}
	return nil
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
	samples, bytes, err := s.q.spill()
	s.stats.queuedSamples.Add(-int64(samples))
	s.stats.queuedBytes.Add(-bytes)
	s.stats.addDropped(DropShutdown, samples)
	if samples > 0 {
		s.log.Error("shutdown with data neither written nor queued on disk", "samples", samples, "bytes", bytes, "err", err)
	} else if q := s.stats.queuedSamples.Load(); q > 0 {
		s.log.Info("data left in the disk queue for the next run", "samples", q, "dir", s.cfg.QueueDir)
	}
	if err != nil {
		return fmt.Errorf("cannot spill to the disk queue: %w", err)
	}
	return nil
}

// dropLost counts data the queue bound pushed out.
func (s *Sink) dropLost(d lost) {
	if d.samples == 0 && d.bytes == 0 {
		return
	}
	s.stats.queuedSamples.Add(-d.samples)
	s.stats.queuedBytes.Add(-d.bytes)
	s.stats.addDropped(DropQueueFull, int(d.samples))
	s.log.Warn("queue full, dropped its oldest data (raise --queue-max-bytes to hold longer outages)", "samples", d.samples, "bytes", d.bytes)
}

// batch owns the batch being filled: it appends committed scrapes and seals
// the batch into the queue (and so to disk) by size and by time. It never
// waits on InfluxDB.
func (s *Sink) batch() {
	tick := time.NewTicker(s.cfg.FlushInterval)
	defer tick.Stop()
	cur := &batch{}
	seal := func() {
		if cur.lines == 0 {
			return
		}
		dropped, reuse, err := s.q.push(cur)
		s.dropLost(dropped)
		if err != nil {
			s.log.Error("cannot write to the disk queue, keeping the batch in memory", "err", err)
		}
		var buf []byte
		if reuse {
			buf = cur.buf[:0]
		} else {
			select {
			case buf = <-s.bufs:
			default:
				buf = make([]byte, 0, len(cur.buf))
			}
		}
		cur = &batch{buf: buf}
	}
	add := func(c *chunk) {
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
	}
	for {
		select {
		case c := <-s.in:
			add(c)
		case <-tick.C:
			seal()
		case <-s.closing:
			// Producers have stopped: take what they handed over.
			for {
				select {
				case c := <-s.in:
					add(c)
					continue
				default:
				}
				break
			}
			seal()
			s.q.close()
			return
		}
	}
}

// write sends queued batches in order, merged up to BatchSize lines, until
// the queue is closed and empty or ctx ends.
func (s *Sink) write(ctx context.Context) {
	var merge []byte
	for {
		j := s.q.take(ctx, s.cfg.BatchSize, merge)
		if j == nil {
			return
		}
		if j.readErr != nil {
			var n int
			for _, r := range j.unreadable {
				n += r.samples
			}
			s.stats.addDropped(DropCorrupt, n)
			s.log.Error("cannot read a record back from the disk queue; it is lost", "samples", n, "err", j.readErr)
		}
		if j.lines > 0 && !s.deliver(ctx, j.body, j.lines, j.samples) {
			s.q.untake(j)
			return
		}
		if len(j.recs) > 1 || j.recs[0].buf == nil {
			merge = j.body[:0]
		}
		var samples, bytes int64
		for _, r := range j.recs {
			samples += int64(r.samples)
			bytes += r.size
		}
		s.stats.queuedSamples.Add(-samples)
		s.stats.queuedBytes.Add(-bytes)
		for _, b := range s.q.ack(j) {
			select {
			case s.bufs <- b[:0]:
			default:
			}
		}
		s.rejects.report(false)
	}
}

// part is a run of lines of a job still to be answered for.
type part struct {
	buf            []byte
	lines, samples int
}

// maxBisect bounds the extra requests spent isolating refused lines in one
// job when InfluxDB does not name them.
const maxBisect = 32

// deliver sends body until InfluxDB has answered for every line: written,
// or refused and counted. It reports false when ctx ended first; nothing
// of the job is then marked done (it is sent again, and InfluxDB keeps one
// point per series and time).
func (s *Sink) deliver(ctx context.Context, body []byte, lines, samples int) bool {
	parts := []part{{body, lines, samples}}
	budget := maxBisect
	attempt := 0
	created := false // one attempt to create a missing database per job
	for len(parts) > 0 {
		p := &parts[0]
		start := time.Now()
		err := s.w.Write(ctx, p.buf)
		act, wait := classify(err)
		s.stats.observeWrite(err, act, time.Since(start))
		if act != actDone && ctx.Err() != nil {
			return false
		}
		var we *WriteError
		errors.As(err, &we)
		switch act {
		case actDone:
			s.health.ok()
			s.stats.written.Add(int64(p.samples))
			parts, attempt = parts[1:], 0
			continue
		case actPartial, actBadData:
			s.health.ok()
			ref := parseRefusal(we.Message)
			if act == actPartial && ref.complete {
				// Stored but for the refused lines: never sent again.
				d := s.refused(p, ref, we.Message)
				s.stats.written.Add(int64(p.samples - d))
				parts, attempt = parts[1:], 0
				continue
			}
			// Nothing was stored, or the answer was cut short before it
			// named every refused line: take out the lines it names and
			// send the rest again (what was stored is stored once).
			if act == actBadData || budget > 0 {
				if rest, ok := s.takeOutNamed(p, ref, we.Message); ok {
					if act == actPartial {
						budget--
					}
					if rest.lines == 0 {
						parts = parts[1:]
					} else {
						*p = rest
					}
					continue
				}
			}
			if act == actPartial {
				// Stored, and nothing more can be learnt of the rest.
				s.stats.written.Add(int64(p.samples))
				parts, attempt = parts[1:], 0
				continue
			}
			fallthrough
		case actTooLarge:
			s.health.ok()
			if p.lines <= 1 || budget == 0 {
				s.dropRefused(p.lines, p.samples, refusalClass(we.Message), we.Message, firstLine(p.buf))
				parts = parts[1:]
				continue
			}
			budget--
			a, c := splitPart(*p)
			parts = append([]part{a, c}, parts[1:]...)
			continue
		}
		if we != nil && we.StatusCode == http.StatusNotFound && strings.Contains(we.Message, "database not found") && s.cfg.CreateDatabase && !created {
			if dc, ok := s.w.(DatabaseCreator); ok {
				created = true
				if cerr := dc.CreateDatabase(ctx); cerr == nil {
					s.log.Info("InfluxDB had no database "+strconv.Quote(dc.Database())+"; created it", "database", dc.Database())
					continue
				} else {
					err = fmt.Errorf("%w; and %w", err, cerr)
				}
			}
		}
		attempt++
		s.health.fail(ctx, err, act == actNeedsPerson, s.stats.queuedBytes.Load())
		d := backoff(attempt, s.cfg.MinBackoff, s.cfg.MaxBackoff)
		if act == actNeedsPerson {
			d = s.cfg.MaxBackoff
		}
		if wait > 0 {
			d = min(wait, maxRetryAfter)
		}
		if !sleepCtx(ctx, d) {
			return false
		}
	}
	return true
}

// refused counts what a partial write refused and returns its samples:
// the lines the answer names exactly, and for "dropped=N" points it does
// not name, N lines' worth at the part's average.
func (s *Sink) refused(p *part, ref refusal, msg string) int {
	var lines, samples int
	example := ""
	forLines(p.buf, func(ln []byte) {
		if ref.names(ln) {
			lines++
			samples += countSamples(ln)
			if example == "" {
				example = string(ln)
			}
		}
	})
	if ref.dropped > 0 && p.lines > lines {
		per := float64(p.samples-samples) / float64(p.lines-lines)
		samples += max(ref.dropped, int(float64(ref.dropped)*per+0.5))
		lines += ref.dropped
	}
	samples = min(samples, p.samples)
	if lines > 0 {
		s.dropRefused(lines, samples, ref.reason, msg, example)
	}
	return samples
}

// takeOutNamed removes from p the lines a 400 names; nothing of p was
// stored, so the rest goes again. It reports false when the answer names
// none of p's lines.
func (s *Sink) takeOutNamed(p *part, ref refusal, msg string) (part, bool) {
	if len(ref.lines) == 0 && len(ref.prefix) < minPrefix {
		return part{}, false
	}
	var rest part
	var lines, samples int
	example := ""
	forLines(p.buf, func(ln []byte) {
		if ref.names(ln) {
			lines++
			samples += countSamples(ln)
			if example == "" {
				example = string(ln)
			}
			return
		}
		rest.buf = append(rest.buf, ln...)
		rest.buf = append(rest.buf, '\n')
		rest.lines++
	})
	if lines == 0 {
		return part{}, false
	}
	rest.samples = p.samples - samples
	s.dropRefused(lines, samples, ref.reason, msg, example)
	return rest, true
}

// dropRefused counts lines InfluxDB refused, by its reason.
func (s *Sink) dropRefused(lines, samples int, class, msg, example string) {
	s.stats.addDropped(DropRejected, samples)
	s.stats.addRejected(class, samples)
	s.rejects.add(lines, samples, class, msg, example)
}

func forLines(buf []byte, fn func([]byte)) {
	for len(buf) > 0 {
		i := bytes.IndexByte(buf, '\n')
		if i < 0 {
			i = len(buf)
		}
		if i > 0 {
			fn(buf[:i])
		}
		buf = buf[min(i+1, len(buf)):]
	}
}

func firstLine(buf []byte) string {
	if i := bytes.IndexByte(buf, '\n'); i >= 0 {
		return string(buf[:i])
	}
	return string(buf)
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

// splitPart cuts p in two at the line boundary nearest its middle.
func splitPart(p part) (part, part) {
	half := p.lines / 2
	cut := 0
	for i := 0; i < half; i++ {
		cut += bytes.IndexByte(p.buf[cut:], '\n') + 1
	}
	a := part{buf: p.buf[:cut:cut], lines: half}
	c := part{buf: p.buf[cut:], lines: p.lines - half}
	a.samples = countSamples(a.buf)
	c.samples = p.samples - a.samples
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
