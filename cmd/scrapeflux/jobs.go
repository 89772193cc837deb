package main

import (
	"context"
	"encoding/json"
	"log/slog"
	"sort"
	"sync"
	"time"

	"github.com/scrapeflux/scrapeflux/discovery"
	"github.com/scrapeflux/scrapeflux/scrape"
)

// jobs runs one scrape pool and its discoverers per job, all feeding one
// sink, and applies new job lists on reload: a job whose spec is unchanged
// keeps running (its loops keep their schedule); a changed job is stopped
// and started again; removed jobs stop, new ones start.
type jobs struct {
	ctx     context.Context
	app     scrape.Appendable
	shard   *scrape.Shard // nil: not a replica
	log     *slog.Logger
	mu      sync.Mutex // guards running and serialises apply
	running map[string]*runningJob
}

type runningJob struct {
	fingerprint string
	pool        *scrape.Pool
	cancel      context.CancelFunc
	done        chan struct{}
}

func newJobs(ctx context.Context, app scrape.Appendable, shard *scrape.Shard, log *slog.Logger) *jobs {
	return &jobs{ctx: ctx, app: app, shard: shard, log: log, running: map[string]*runningJob{}}
}

func fingerprint(s jobSpec) string {
	b, _ := json.Marshal(s)
	return string(b)
}

// apply makes the running jobs match specs. Specs must be valid; a job
// that cannot start is reported and the others still run.
func (j *jobs) apply(specs []jobSpec) (started, stopped, kept int, err error) {
	j.mu.Lock()
	defer j.mu.Unlock()
	want := map[string]jobSpec{}
	for _, s := range specs {
		want[s.Name] = s
	}
	for name, r := range j.running {
		if s, ok := want[name]; ok && fingerprint(s) == r.fingerprint {
			continue
		}
		r.cancel()
		<-r.done
		delete(j.running, name)
		stopped++
	}
	for _, s := range specs {
		if _, ok := j.running[s.Name]; ok {
			kept++
			continue
		}
		r, serr := j.start(s)
		if serr != nil {
			err = serr
			continue
		}
		j.running[s.Name] = r
		started++
	}
	return started, stopped, kept, err
}

func (j *jobs) start(s jobSpec) (*runningJob, error) {
	// The job of a config entry; Consul targets carry their service name
	// as their job tag, which their own log lines show.
	log := j.log.With("config_job", s.Name)
	var sources []discovery.Discoverer
	if len(s.Static) > 0 {
		st, err := discovery.NewStatic(s.Name, s.Static)
		if err != nil {
			return nil, err
		}
		sources = append(sources, st)
	}
	if s.Consul != nil {
		c, err := discovery.NewConsul(*s.Consul, log.With("component", "consul"))
		if err != nil {
			return nil, err
		}
		sources = append(sources, c)
	}
	pool, err := scrape.NewPool(s.Scrape, j.app, log.With("component", "scrape"))
	if err != nil {
		return nil, err
	}
	if j.shard != nil {
		pool.SetShard(j.shard)
	}
	ctx, cancel := context.WithCancel(j.ctx)
	r := &runningJob{fingerprint: fingerprint(s), pool: pool, cancel: cancel, done: make(chan struct{})}
	ch := make(chan []discovery.Target)
	var wg sync.WaitGroup
	wg.Add(2)
	go func() {
		defer wg.Done()
		if err := discovery.Merge(ctx, ch, sources...); err != nil {
			log.Error("discovery stopped", "err", err)
		}
	}()
	go func() {
		defer wg.Done()
		_ = pool.Run(ctx, ch)
	}()
	go func() {
		wg.Wait()
		close(r.done)
	}()
	return r, nil
}

// stop stops every job and waits for their loops.
func (j *jobs) stop() {
	j.mu.Lock()
	defer j.mu.Unlock()
	for name, r := range j.running {
		r.cancel()
		<-r.done
		delete(j.running, name)
	}
}

// Ready reports whether every job's discovery has delivered a snapshot.
func (j *jobs) Ready() bool {
	j.mu.Lock()
	defer j.mu.Unlock()
	for _, r := range j.running {
		if !r.pool.Synced() {
			return false
		}
	}
	return len(j.running) > 0
}

// maxInterval is the longest scrape interval of the running jobs.
func (j *jobs) maxInterval() time.Duration {
	j.mu.Lock()
	defer j.mu.Unlock()
	var d time.Duration
	for _, r := range j.running {
		d = max(d, r.pool.Interval())
	}
	return d
}

// Handovers counts targets handed to other replicas by the running jobs.
func (j *jobs) Handovers() int64 {
	j.mu.Lock()
	defer j.mu.Unlock()
	var n int64
	for _, r := range j.running {
		n += r.pool.Handovers()
	}
	return n
}

// jobSummary is one running job as the targets page shows it.
type jobSummary struct {
	Name       string `json:"name"`
	Synced     bool   `json:"synced"`
	Discovered int    `json:"discovered"`
}

// Summaries describes the running jobs, by name.
func (j *jobs) Summaries() []jobSummary {
	j.mu.Lock()
	defer j.mu.Unlock()
	out := make([]jobSummary, 0, len(j.running))
	for name, r := range j.running {
		out = append(out, jobSummary{Name: name, Synced: r.pool.Synced(), Discovered: r.pool.Discovered()})
	}
	sort.Slice(out, func(a, b int) bool { return out[a].Name < out[b].Name })
	return out
}

// Targets returns the status of every target of every job.
func (j *jobs) Targets() []scrape.Status {
	j.mu.Lock()
	pools := make([]*scrape.Pool, 0, len(j.running))
	for _, r := range j.running {
		pools = append(pools, r.pool)
	}
	j.mu.Unlock()
	var out []scrape.Status
	for _, p := range pools {
		out = append(out, p.Targets()...)
	}
	sort.Slice(out, func(a, b int) bool {
		if ja, jb := out[a].Target.Tag("job"), out[b].Target.Tag("job"); ja != jb {
			return ja < jb
		}
		return out[a].Target.URL < out[b].Target.URL
	})
	return out
}
