package scrape

import (
	"context"
	"encoding/json"
	"log/slog"
	"slices"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/scrapeflux/scrapeflux/discovery"
)

// JobSpec is a job ready to run: resolved defaults and secrets. Two specs
// that marshal alike are the same job (a reload keeps it running).
type JobSpec struct {
	Name   string
	Scrape Config
	// Sources find the job's targets; the manager builds each the same
	// way (discovery.Config) and names none.
	Sources []discovery.Config
}

// Manager runs one scrape pool and its discoverers per job, all feeding
// one Appendable, and applies new job lists on reload (as Prometheus's
// scrape manager applies a new config): a job whose spec is unchanged keeps
// running (its loops keep their schedule); a changed job is stopped and
// started again; removed jobs stop, new ones start. Safe for concurrent
// use; Apply and Stop are serialised and wait for loops without holding
// the lock readers (Targets, Ready, the metrics) need.
type Manager struct {
	ctx     context.Context
	app     Appendable
	shard   *Shard // nil: not a replica
	log     *slog.Logger
	consul  discovery.ConsulConfig // the connection consul: sections use
	metrics *Metrics               // its pools' loops count here
	applyMu sync.Mutex             // serialises Apply and Stop
	mu      sync.Mutex             // guards running
	running map[string]*runningJob
}

type runningJob struct {
	fingerprint string
	pool        *Pool
	reporters   []discovery.StatusReporter
	sources     string // "static, consul, file_sd" as configured
	cancel      context.CancelFunc
	done        chan struct{}
}

// NewManager makes a manager whose jobs run until ctx ends or Stop; with a
// shard, every pool scrapes only this replica's share. consul is the
// connection (address, TLS, token) of the jobs' consul: sections.
func NewManager(ctx context.Context, app Appendable, shard *Shard, consul discovery.ConsulConfig, log *slog.Logger) *Manager {
	return &Manager{ctx: ctx, app: app, shard: shard, consul: consul, metrics: NewMetrics(), log: log, running: map[string]*runningJob{}}
}

// fingerprint is what a job is: each source by its kind and config.
func fingerprint(s JobSpec) string {
	type source struct {
		Kind   string
		Config discovery.Config
	}
	srcs := make([]source, len(s.Sources))
	for i, c := range s.Sources {
		srcs[i] = source{discovery.KeyOf(c), c}
	}
	b, _ := json.Marshal(struct {
		Name    string
		Scrape  Config
		Sources []source
	}{s.Name, s.Scrape, srcs})
	return string(b)
}

// Apply makes the running jobs match specs. Specs must be valid; a job
// that cannot start is reported and the others still run.
func (j *Manager) Apply(specs []JobSpec) (started, stopped, kept int, err error) {
	j.applyMu.Lock()
	defer j.applyMu.Unlock()
	want := map[string]JobSpec{}
	for _, s := range specs {
		want[s.Name] = s
	}
	j.mu.Lock()
	var stopping []*runningJob
	for name, r := range j.running {
		if s, ok := want[name]; ok && fingerprint(s) == r.fingerprint {
			continue
		}
		r.cancel()
		stopping = append(stopping, r)
		delete(j.running, name)
	}
	j.mu.Unlock()
	for _, r := range stopping {
		<-r.done
	}
	stopped = len(stopping)
	for _, s := range specs {
		j.mu.Lock()
		_, ok := j.running[s.Name]
		j.mu.Unlock()
		if ok {
			kept++
			continue
		}
		r, serr := j.start(s)
		if serr != nil {
			err = serr
			continue
		}
		j.mu.Lock()
		j.running[s.Name] = r
		j.mu.Unlock()
		started++
	}
	return started, stopped, kept, err
}

func (j *Manager) start(s JobSpec) (*runningJob, error) {
	// The job of a config entry; Consul targets carry their service name
	// as their job tag, which their own log lines show.
	log := j.log.With("config_job", s.Name)
	var sources []discovery.Discoverer
	var reporters []discovery.StatusReporter
	var kinds []string
	for _, c := range s.Sources {
		d, err := c.NewDiscoverer(discovery.DiscovererOptions{Job: s.Name, Consul: j.consul, Logger: log.With("component", c.Name())})
		if err != nil {
			return nil, err
		}
		sources = append(sources, d)
		if r, ok := d.(discovery.StatusReporter); ok {
			reporters = append(reporters, r)
		}
		if !slices.Contains(kinds, c.Name()) {
			kinds = append(kinds, c.Name())
		}
	}
	pool, err := NewPool(s.Scrape, j.app, log.With("component", "scrape"))
	if err != nil {
		return nil, err
	}
	pool.SetMetrics(j.metrics)
	if j.shard != nil {
		pool.SetShard(j.shard)
	}
	pool.SetName(s.Name)
	ctx, cancel := context.WithCancel(j.ctx)
	r := &runningJob{fingerprint: fingerprint(s), pool: pool, reporters: reporters, sources: strings.Join(kinds, ", "), cancel: cancel, done: make(chan struct{})}
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

// Stop stops every job and waits for their loops.
func (j *Manager) Stop() {
	j.applyMu.Lock()
	defer j.applyMu.Unlock()
	j.mu.Lock()
	running := j.running
	j.running = map[string]*runningJob{}
	j.mu.Unlock()
	for _, r := range running {
		r.cancel()
	}
	for _, r := range running {
		<-r.done
	}
}

// Ready reports whether every job's discovery has delivered a snapshot.
func (j *Manager) Ready() bool {
	j.mu.Lock()
	defer j.mu.Unlock()
	for _, r := range j.running {
		if !r.pool.Synced() {
			return false
		}
	}
	return len(j.running) > 0
}

// MaxInterval is the longest scrape interval of the running jobs.
func (j *Manager) MaxInterval() time.Duration {
	j.mu.Lock()
	defer j.mu.Unlock()
	var d time.Duration
	for _, r := range j.running {
		d = max(d, r.pool.Interval())
	}
	return d
}

// Handovers counts targets handed to other replicas by the running jobs.
func (j *Manager) Handovers() int64 {
	j.mu.Lock()
	defer j.mu.Unlock()
	var n int64
	for _, r := range j.running {
		n += r.pool.Handovers()
	}
	return n
}

// JobSummary is one running job as the targets page shows it.
type JobSummary struct {
	Name       string `json:"name"`
	Synced     bool   `json:"synced"`
	Discovered int    `json:"discovered"`
	// Sources: how its targets are found: static, consul, file_sd, http_sd.
	Sources string `json:"sources"`
	// Discovery is the state of its discoverers that can fail.
	Discovery discovery.Status `json:"discovery"`
}

// Summaries describes the running jobs, by name.
func (j *Manager) Summaries() []JobSummary {
	j.mu.Lock()
	defer j.mu.Unlock()
	out := make([]JobSummary, 0, len(j.running))
	for name, r := range j.running {
		js := JobSummary{Name: name, Synced: r.pool.Synced(), Discovered: r.pool.Discovered(), Sources: r.sources}
		for _, rep := range r.reporters {
			st := rep.Status()
			if st.Err != "" && js.Discovery.Err == "" {
				js.Discovery.Err, js.Discovery.ErrSince = st.Err, st.ErrSince
			}
			if st.LastSuccess.After(js.Discovery.LastSuccess) {
				js.Discovery.LastSuccess = st.LastSuccess
			}
			js.Discovery.Skipped = append(js.Discovery.Skipped, st.Skipped...)
		}
		out = append(out, js)
	}
	sort.Slice(out, func(a, b int) bool { return out[a].Name < out[b].Name })
	return out
}

// Targets returns the status of every target of every job.
func (j *Manager) Targets() []Status {
	j.mu.Lock()
	pools := make([]*Pool, 0, len(j.running))
	for _, r := range j.running {
		pools = append(pools, r.pool)
	}
	j.mu.Unlock()
	var out []Status
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

// JobDiscovery is one job's last discovery snapshot, as discovered.
type JobDiscovery struct {
	Job     string             `json:"job"`
	Targets []DiscoveredTarget `json:"targets"`
}

// Discovery returns every job's last snapshot with what became of each
// instance, by job name.
func (j *Manager) Discovery() []JobDiscovery {
	j.mu.Lock()
	out := make([]JobDiscovery, 0, len(j.running))
	for name, r := range j.running {
		out = append(out, JobDiscovery{Job: name, Targets: r.pool.DiscoveredTargets()})
	}
	j.mu.Unlock()
	sort.Slice(out, func(a, b int) bool { return out[a].Job < out[b].Job })
	return out
}
