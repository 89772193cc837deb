// Package scrape keeps one loop per target, fetches and parses their
// exposition bodies on schedule, and hands every sample to an Appender made
// by the next stage. It sits between discovery (which tells it the targets)
// and the sink (which converts and writes what it appends).
package scrape

import (
	"bytes"
	"context"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/scrapeflux/scrapeflux/discovery"
)

// Pool runs one scrape loop per target and reconciles them with each
// snapshot from discovery. With a Shard it runs loops only for the targets
// this replica owns.
type Pool struct {
	cfg     Config
	app     Appendable
	client  *http.Client
	log     *slog.Logger
	shard   *Shard   // nil: every target is ours
	name    string   // the config job this pool runs, for the page
	metrics *Metrics // where its loops count

	syncMu sync.Mutex // serialises Sync; never held by readers

	mu         sync.Mutex // guards the fields below; never held while waiting
	loops      map[string]*loop
	skipped    map[string]Status // targets another replica owns
	synced     bool              // a first snapshot has been applied
	discovered int               // targets in the latest snapshot
	// lastDiscovery: the latest snapshot as discovered, with outcomes.
	lastDiscovery []DiscoveredTarget
	handovers     int64 // targets handed to other replicas
	syncs         int64 // reconciliations Run made
}

// SyncGap is the least time between two reconciliations on discovery's
// word: snapshots that come closer together are coalesced, and the last
// of them is applied when the gap has passed. Prometheus's discovery
// manager sends at most one update every 5 s; half a second bounds the
// work of a churning source (every snapshot of 3,000 targets is a full
// reconciliation) and keeps a new target's wait under a second.
const SyncGap = 500 * time.Millisecond

// Synced reports whether discovery has delivered a first snapshot.
func (p *Pool) Synced() bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.synced
}

// Handovers counts targets this pool handed to other replicas.
func (p *Pool) Handovers() int64 {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.handovers
}

// NewHTTPClient returns the client scrape loops share: keep-alive to every
// target, no transparent decompression (the fetcher does it to enforce the
// size limit after decompression), and no redirects to other hosts.
func NewHTTPClient(cfg Config) (*http.Client, error) {
	tc, err := cfg.TLS.build()
	if err != nil {
		return nil, err
	}
	tr := &http.Transport{
		TLSClientConfig:        tc,
		Proxy:                  http.ProxyFromEnvironment,
		DialContext:            (&net.Dialer{Timeout: cfg.Timeout, KeepAlive: 30 * time.Second}).DialContext,
		MaxIdleConns:           0,
		MaxIdleConnsPerHost:    2,
		IdleConnTimeout:        2*cfg.Interval + 30*time.Second,
		DisableCompression:     true,
		ResponseHeaderTimeout:  cfg.Timeout,
		MaxResponseHeaderBytes: maxHeaderBytes,
	}
	return &http.Client{
		Transport: tr,
		CheckRedirect: func(req *http.Request, via []*http.Request) error {
			if len(via) >= 5 {
				return fmt.Errorf("stopped after %d redirects", len(via))
			}
			// Credentials must not follow a redirect to another host.
			if req.URL.Host != via[0].URL.Host {
				return fmt.Errorf("redirect to another host %s refused", req.URL.Host)
			}
			return nil
		},
	}, nil
}

// NewPool makes a pool; cfg must be valid.
func NewPool(cfg Config, app Appendable, log *slog.Logger) (*Pool, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	client, err := NewHTTPClient(cfg)
	if err != nil {
		return nil, err
	}
	return &Pool{
		cfg:     cfg,
		app:     app,
		client:  client,
		log:     log,
		loops:   map[string]*loop{},
		skipped: map[string]Status{},
		metrics: NewMetrics(),
	}, nil
}

// SetMetrics makes the pool's loops count in m (a Manager's, shared by
// its pools) rather than in the pool's own. Call it before Run.
func (p *Pool) SetMetrics(m *Metrics) { p.metrics = m }

// Interval is the pool's scrape interval.
func (p *Pool) Interval() time.Duration { return p.cfg.Interval }

// SetShard makes the pool scrape only the targets shard says this replica
// owns. Call it before Run.
func (p *Pool) SetShard(s *Shard) { p.shard = s }

// SetName names the config job the pool runs (its targets' Status
// carries it). Before Run.
func (p *Pool) SetName(name string) { p.name = name }

// Run reconciles the loops with every snapshot received on ch, and with
// every membership change of the shard, until ctx is cancelled; then it
// stops every loop and waits for them. It returns nil on cancellation.
func (p *Pool) Run(ctx context.Context, ch <-chan []discovery.Target) error {
	defer p.Sync(ctx, nil)
	var changed <-chan struct{}
	if p.shard != nil {
		_, changed = p.shard.Members()
	}
	// Fires when a target handed to another replica has been scraped for
	// its last interval here.
	handover := time.NewTimer(time.Hour)
	handover.Stop()
	defer handover.Stop()
	var last []discovery.Target
	have, warnedEmpty := false, false
	// A snapshot within SyncGap of the last reconciliation waits for
	// throttle; a newer one replaces it meanwhile.
	throttle := time.NewTimer(time.Hour)
	throttle.Stop()
	defer throttle.Stop()
	var lastSync time.Time
	pending := false
	for {
		select {
		case <-ctx.Done():
			return nil
		case last = <-ch:
			have = true
			if wait := SyncGap - time.Since(lastSync); wait > 0 {
				if !pending {
					pending = true
					throttle.Reset(wait)
				}
				continue
			}
		case <-throttle.C:
		case <-changed:
			_, changed = p.shard.Members()
		case <-handover.C:
		}
		if !have {
			continue
		}
		if pending {
			pending = false
			throttle.Stop()
		}
		lastSync = time.Now()
		if next := p.Sync(ctx, last); !next.IsZero() {
			handover.Reset(time.Until(next))
		}
		switch {
		case len(last) == 0 && !warnedEmpty:
			p.log.Warn("discovery found no targets: check the Consul service names, tag and node meta filters (--consul-service, --consul-tag, --consul-node-meta) or the job's targets")
			warnedEmpty = true
		case len(last) > 0 && warnedEmpty:
			p.log.Info("discovery found targets", "targets", len(last))
			warnedEmpty = false
		}
		p.mu.Lock()
		p.synced = true
		p.discovered = len(last)
		p.syncs++
		p.mu.Unlock()
	}
}

// Discovered is the number of targets in the latest snapshot from
// discovery, before sharding and target relabeling.
func (p *Pool) Discovered() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.discovered
}

// DiscoveredTarget is one instance of the last discovery snapshot: its
// labels before relabeling, and what became of it.
type DiscoveredTarget struct {
	// URL, Tags and Meta as discovery gave them (the URL redacted).
	URL  string            `json:"url"`
	Tags map[string]string `json:"tags"`
	Meta map[string]string `json:"meta,omitempty"`
	// Outcome: "scraped" (as Scraped), "dropped by relabeling",
	// "relabeling failed: ...", "another replica's".
	Outcome string `json:"outcome"`
	Scraped string `json:"scraped_as,omitempty"`
	// RelabelSteps: what each of the job's relabel rules did to the
	// instance's labels, up to the one that dropped it.
	RelabelSteps []RelabelStep `json:"relabel_steps,omitempty"`

	in discovery.Target // what relabeling started from
}

// maxShownDiscovered bounds the instances kept for the discovery page.
const maxShownDiscovered = 5000

// DiscoveredTargets returns the last snapshot's instances, as discovered.
// With relabel rules, each comes with their trace, made when asked for
// (by the same rules the pool applied), not at every discovery update.
func (p *Pool) DiscoveredTargets() []DiscoveredTarget {
	p.mu.Lock()
	out := slices.Clone(p.lastDiscovery)
	p.mu.Unlock()
	if len(p.cfg.RelabelConfigs) == 0 {
		return out
	}
	for i := range out {
		if lb, err := TargetLabels(out[i].in); err == nil {
			out[i].RelabelSteps, _ = TraceRelabel(lb, p.cfg.RelabelConfigs, p.cfg.RelabelLines)
		}
	}
	return out
}

// Sync makes the running loops match targets: loops of removed targets are
// stopped and waited for before loops of new ones start; loops of targets
// still present keep running on their schedule. A target this replica no
// longer owns is scraped for one more interval (the new owner starts at its
// next slot, so both scrape the slot in between and no slot is missed);
// Sync returns when that interval ends, zero if no handover is pending.
// Loops started here stop when ctx is cancelled.
func (p *Pool) Sync(ctx context.Context, targets []discovery.Target) time.Time {
	p.syncMu.Lock()
	defer p.syncMu.Unlock()
	now := time.Now()
	want := make(map[string]discovery.Target, len(targets))
	skipped := map[string]Status{}
	var shown []DiscoveredTarget
	for _, t := range targets {
		var dt *DiscoveredTarget
		if len(shown) < maxShownDiscovered {
			shown = append(shown, discoveredOf(t))
			dt = &shown[len(shown)-1]
		}
		outcome := func(o, as string) {
			if dt != nil {
				dt.Outcome, dt.Scraped = o, as
			}
		}
		if p.cfg.JobName != "" {
			t = withTag(t, "job", p.cfg.JobName)
		}
		for _, tg := range p.cfg.Tags {
			t = withTag(t, tg.Key, tg.Value)
		}
		if dt != nil {
			dt.in = t
		}
		t, keep, err := relabelTarget(t, p.cfg.RelabelConfigs)
		if err != nil {
			p.log.Warn("target dropped after relabeling", "err", err)
			outcome("relabeling failed: "+err.Error(), "")
			continue
		}
		if !keep {
			outcome("dropped by relabeling", "")
			continue
		}
		if p.cfg.URLTag != "" {
			t = withTag(t, p.cfg.URLTag, t.Redacted())
		}
		k := t.Key()
		if p.shard != nil {
			if owners := p.shard.Owners(k); !slices.Contains(owners, p.shard.Self()) {
				skipped[k] = Status{Target: t, Health: HealthSkipped, Role: RoleSkipped, Owners: owners, Interval: p.cfg.Interval, ConfigJob: p.name}
				outcome("another replica's", t.Redacted())
				continue
			}
		}
		outcome("scraped", t.Redacted())
		want[k] = t
	}

	p.mu.Lock()
	p.lastDiscovery = shown
	var stopping []*loop
	var next time.Time
	for k, l := range p.loops {
		if _, ok := want[k]; ok {
			l.setLeaving(time.Time{})
			continue
		}
		sk, other := skipped[k]
		if other {
			leave := l.leavingAt()
			if leave.IsZero() {
				leave = now.Add(p.cfg.Interval)
				l.setLeaving(leave)
				p.handovers++
				p.log.Info("target handed over, scraping it one more interval", "target", l.target.Redacted(),
					"job", l.target.Tag("job"), "owners", sk.Owners)
			}
			if leave.After(now) {
				delete(skipped, k) // still ours for now: shown as leaving
				if next.IsZero() || leave.Before(next) {
					next = leave
				}
				continue
			}
		}
		l.stop()
		stopping = append(stopping, l)
		delete(p.loops, k)
	}
	p.skipped = skipped
	p.mu.Unlock()

	for _, l := range stopping {
		<-l.done
	}

	var started []string
	for k, t := range want {
		p.mu.Lock()
		_, ok := p.loops[k]
		p.mu.Unlock()
		if ok {
			continue
		}
		f, err := newFetcher(p.client, t.URL, p.cfg)
		if err != nil {
			p.log.Warn("cannot start target", "target", t.Redacted(), "job", t.Tag("job"), "err", err)
			continue
		}
		ident := IdentityTags(t)
		if len(p.cfg.OmitTags) > 0 {
			ident = slices.DeleteFunc(ident, func(tg Tag) bool { return slices.Contains(p.cfg.OmitTags, tg.Key) })
		}
		l := newLoop(t, p.cfg, p.app.Appender(ident, p.cfg.AppendOptions()), f, p.metrics, p.log)
		l.status.ConfigJob = p.name
		lctx, cancel := context.WithCancel(ctx)
		l.stop = cancel
		p.mu.Lock()
		p.loops[k] = l
		p.mu.Unlock()
		go l.run(lctx)
		started = append(started, t.Redacted())
	}
	if len(stopping) > 0 || len(started) > 0 {
		var stopped []string
		for _, l := range stopping {
			stopped = append(stopped, l.target.Redacted())
		}
		p.mu.Lock()
		total := len(p.loops)
		p.mu.Unlock()
		p.log.Info("targets updated", "started", len(started), "stopped", len(stopping), "total", total,
			"started_targets", listSome(started), "stopped_targets", listSome(stopped))
	}
	return next
}

// listSome names up to ten targets for a log line.
func listSome(ts []string) string {
	sort.Strings(ts)
	if len(ts) > 10 {
		return strings.Join(ts[:10], ",") + fmt.Sprintf(",… (%d more)", len(ts)-10)
	}
	return strings.Join(ts, ",")
}

// Targets returns the status of every running loop, ordered by URL.
func (p *Pool) Targets() []Status {
	p.mu.Lock()
	ls := make([]*loop, 0, len(p.loops))
	for _, l := range p.loops {
		ls = append(ls, l)
	}
	out := make([]Status, 0, len(ls)+len(p.skipped))
	for _, st := range p.skipped {
		out = append(out, st)
	}
	p.mu.Unlock()
	for _, l := range ls {
		st := l.snapshot()
		if p.shard != nil {
			st.Owners = p.shard.Owners(l.target.Key())
			st.Role = RoleOwned
			if !l.leavingAt().IsZero() {
				st.Role = RoleLeaving
			}
		}
		out = append(out, st)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Target.URL < out[j].Target.URL })
	return out
}

// AppendOptions are the rules the job's Appenders apply.
func (c *Config) AppendOptions() AppendOptions {
	return AppendOptions{MetricRelabelConfigs: c.MetricRelabelConfigs, LabelLimit: c.LabelLimit,
		LabelNameLengthLimit: c.LabelNameLengthLimit, LabelValueLengthLimit: c.LabelValueLengthLimit, SeriesLimit: c.SeriesLimit, Bucket: c.Bucket,
		Layout: c.Layout, Measurement: c.Measurement,
		Job: c.JobName, MaxHourlySeries: c.MaxHourlySeries, MaxDailySeries: c.MaxDailySeries}
}

// ScrapeOnce scrapes t once with cfg and feeds app, for the one-shot
// command. It returns the error that made the scrape fail, if any; app gets
// the synthetic series either way.
func ScrapeOnce(ctx context.Context, cfg Config, t discovery.Target, app Appender, log *slog.Logger) (Status, error) {
	if err := cfg.Validate(); err != nil {
		return Status{}, err
	}
	client, err := NewHTTPClient(cfg)
	if err != nil {
		return Status{}, err
	}
	f, err := newFetcher(client, t.URL, cfg)
	if err != nil {
		return Status{}, err
	}
	defer f.close()
	l := newLoop(t, cfg, app, f, NewMetrics(), log) // one scrape: its counts go nowhere
	now := time.Now()
	l.scrape(ctx, now, now, 0)
	st := l.snapshot()
	if st.Health != HealthUp {
		return st, fmt.Errorf("%w: %s", errScrapeFailed, st.LastError)
	}
	return st, nil
}

// FetchOnce fetches t's exposition once with cfg (its TLS, auth, timeout,
// body limit and protocols), for the lint command: the body and its
// content type.
func FetchOnce(ctx context.Context, cfg Config, t discovery.Target) ([]byte, string, error) {
	if err := cfg.Validate(); err != nil {
		return nil, "", err
	}
	client, err := NewHTTPClient(cfg)
	if err != nil {
		return nil, "", err
	}
	f, err := newFetcher(client, t.URL, cfg)
	if err != nil {
		return nil, "", err
	}
	defer f.close()
	ctx, cancel := context.WithTimeout(ctx, cfg.Timeout)
	defer cancel()
	body, ct, err := f.fetch(ctx, strconv.FormatFloat(cfg.Timeout.Seconds(), 'f', -1, 64))
	if err != nil {
		return nil, "", err
	}
	body = bytes.Clone(body)
	f.release()
	return body, ct, nil
}

// discoveredOf is t as discovery gave it, for the discovery page.
func discoveredOf(t discovery.Target) DiscoveredTarget {
	d := DiscoveredTarget{URL: t.Redacted(), Tags: make(map[string]string, len(t.Tags))}
	for _, tg := range t.Tags {
		d.Tags[tg.Key] = tg.Value
	}
	if len(t.Meta) > 0 {
		d.Meta = make(map[string]string, len(t.Meta))
		for k, v := range t.Meta {
			d.Meta[k] = v
		}
	}
	return d
}
