package sink

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"path/filepath"
	"regexp"
	"sort"
	"sync"
	"time"

	"github.com/scrapeflux/scrapeflux/scrape"
	"github.com/scrapeflux/scrapeflux/sink/queue"
)

// Router sends each job's points to its bucket (a config job's bucket:,
// as Telegraf's database_tag/bucket_tag users route them): a Sink per
// bucket, each with its own writer, queue (a sub-directory of the queue
// dir) and retries, so a bucket that fails never holds back another's
// data and its failures are counted apart. Jobs without a bucket go to
// the default sink. It implements scrape.Appendable; the series budgets
// are shared by every bucket.
type Router struct {
	def     *Sink
	newSink func(bucket string) (*Sink, error)
	log     *slog.Logger

	mu      sync.Mutex // guards the fields below
	sinks   map[string]*Sink
	ctx     context.Context // of Run, once it started
	wg      sync.WaitGroup
	errs    []error
	closing bool
}

// NewRouter routes to def by default and to sinks newSink makes, once a
// bucket is first asked for.
func NewRouter(def *Sink, newSink func(bucket string) (*Sink, error), log *slog.Logger) *Router {
	return &Router{def: def, newSink: newSink, log: log, sinks: map[string]*Sink{}}
}

// BucketConfig derives a bucket's sink config from the default one: its
// queue in a directory of its own under the queue dir.
func BucketConfig(def Config, bucket string) Config {
	c := def
	if c.QueueDir != "" {
		c.QueueDir = filepath.Join(def.QueueDir, "bucket-"+unsafeChars.ReplaceAllString(bucket, "_"))
	}
	return c
}

var unsafeChars = regexp.MustCompile(`[^A-Za-z0-9._-]`)

// Appender returns the converter for a target's loop, writing to the
// bucket its job names.
func (r *Router) Appender(ident []scrape.Tag, o scrape.AppendOptions) scrape.Appender {
	return r.sinkFor(o.Bucket).Appender(ident, o)
}

func (r *Router) sinkFor(bucket string) *Sink {
	if bucket == "" {
		return r.def
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if s, ok := r.sinks[bucket]; ok {
		return s
	}
	s, err := r.newSink(bucket)
	if err != nil {
		// Its points are not lost: they go to the default bucket, said.
		r.log.Error("cannot set up the bucket of a job; its points go to the default bucket", "bucket", bucket, "err", err)
		return r.def
	}
	s.hourly, s.daily, s.jobs = r.def.hourly, r.def.daily, r.def.jobs
	r.sinks[bucket] = s
	if r.closing {
		s.Close()
	}
	if r.ctx != nil {
		r.start(s)
	}
	return s
}

func (r *Router) start(s *Sink) {
	r.wg.Add(1)
	go func() {
		defer r.wg.Done()
		if err := s.Run(r.ctx); err != nil {
			r.mu.Lock()
			r.errs = append(r.errs, err)
			r.mu.Unlock()
		}
	}()
}

// Run runs every sink until Close has been called and each has written
// what it could (see Sink.Run).
func (r *Router) Run(ctx context.Context) error {
	r.mu.Lock()
	r.ctx = ctx
	for _, s := range r.sinks {
		r.start(s)
	}
	r.mu.Unlock()
	err := r.def.Run(ctx)
	r.wg.Wait()
	r.mu.Lock()
	defer r.mu.Unlock()
	return errors.Join(append([]error{err}, r.errs...)...)
}

// Close tells every sink that no more scrapes come.
func (r *Router) Close() {
	r.mu.Lock()
	r.closing = true
	all := r.all()
	r.mu.Unlock()
	for _, s := range all {
		s.Close()
	}
}

// all is every sink, the default first; mu is held.
func (r *Router) all() []*Sink {
	out := []*Sink{r.def}
	names := make([]string, 0, len(r.sinks))
	for b := range r.sinks {
		names = append(names, b)
	}
	sort.Strings(names)
	for _, b := range names {
		out = append(out, r.sinks[b])
	}
	return out
}

// Stats adds up the counters of every bucket.
func (r *Router) Stats() StatsSnapshot {
	r.mu.Lock()
	all := r.all()
	r.mu.Unlock()
	st := all[0].Stats()
	for _, s := range all[1:] {
		st.add(s.Stats())
	}
	return st
}

// Ready reports whether every bucket's data can go somewhere.
func (r *Router) Ready() bool {
	r.mu.Lock()
	all := r.all()
	r.mu.Unlock()
	for _, s := range all {
		if !s.Ready() {
			return false
		}
	}
	return true
}

// QueueStatus adds up the queues; a disk error of any is said.
func (r *Router) QueueStatus() queue.Status {
	r.mu.Lock()
	all := r.all()
	r.mu.Unlock()
	qs := all[0].QueueStatus()
	for _, s := range all[1:] {
		o := s.QueueStatus()
		qs.Records += o.Records
		qs.Lines += o.Lines
		qs.Payload += o.Payload
		qs.Memory += o.Memory
		qs.MemoryOnly += o.MemoryOnly
		qs.Disk += o.Disk
		if qs.DiskError == "" {
			qs.DiskError, qs.DiskErrorSince = o.DiskError, o.DiskErrorSince
		}
	}
	return qs
}

// SeriesBudgets are the budgets every bucket shares.
func (r *Router) SeriesBudgets() (hourUsed, hourLimit, dayUsed, dayLimit int, held int64) {
	return r.def.SeriesBudgets()
}

// JobBudgets returns each job's series budgets (shared by every bucket).
func (r *Router) JobBudgets() []JobBudget { return r.def.JobBudgets() }

// BucketStatus is one routed bucket's state, for pages and metrics.
type BucketStatus struct {
	Bucket              string
	Written, Queued     int64
	ConsecutiveFailures int64
	LastError           string
	Undelivered         time.Duration
}

// Buckets returns the state of the buckets jobs route to (not the
// default one).
func (r *Router) Buckets() []BucketStatus {
	// The map is copied under the lock: a job's first scrape may add a
	// bucket while /metrics or /targets reads them.
	r.mu.Lock()
	names := make([]string, 0, len(r.sinks))
	sinks := make(map[string]*Sink, len(r.sinks))
	for b, s := range r.sinks {
		names = append(names, b)
		sinks[b] = s
	}
	r.mu.Unlock()
	sort.Strings(names)
	out := make([]BucketStatus, 0, len(names))
	now := time.Now()
	for _, b := range names {
		st := sinks[b].Stats()
		out = append(out, BucketStatus{Bucket: b, Written: st.Written, Queued: st.QueuedSamples,
			ConsecutiveFailures: st.ConsecutiveFailures, LastError: st.LastWriteError, Undelivered: st.Undelivered(now)})
	}
	return out
}

// String names the router's buckets, for logs.
func (r *Router) String() string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return fmt.Sprintf("default + %d buckets", len(r.sinks))
}
