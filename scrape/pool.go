// Package scrape keeps one loop per target, fetches and parses their
// exposition bodies on schedule, and hands every sample to an Appender made
// by the next stage. It sits between discovery (which tells it the targets)
// and the sink (which converts and writes what it appends).
package scrape

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"sort"
	"sync"
	"time"

	"github.com/scrapeflux/scrapeflux/discovery"
)

// Pool runs one scrape loop per target and reconciles them with each
// snapshot from discovery.
type Pool struct {
	cfg    Config
	app    Appendable
	client *http.Client
	log    *slog.Logger

	mu     sync.Mutex // guards loops and synced; held while reconciling
	loops  map[string]*loop
	synced bool // a first snapshot has been applied
}

// Synced reports whether discovery has delivered a first snapshot.
func (p *Pool) Synced() bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.synced
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
		TLSClientConfig:       tc,
		Proxy:                 http.ProxyFromEnvironment,
		DialContext:           (&net.Dialer{Timeout: cfg.Timeout, KeepAlive: 30 * time.Second}).DialContext,
		MaxIdleConns:          0,
		MaxIdleConnsPerHost:   2,
		IdleConnTimeout:       2*cfg.Interval + 30*time.Second,
		DisableCompression:    true,
		ResponseHeaderTimeout: cfg.Timeout,
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
		cfg:    cfg,
		app:    app,
		client: client,
		log:    log,
		loops:  map[string]*loop{},
	}, nil
}

// Run reconciles the loops with every snapshot received on ch until ctx is
// cancelled, then stops every loop and waits for them. It returns nil on
// cancellation.
func (p *Pool) Run(ctx context.Context, ch <-chan []discovery.Target) error {
	defer p.Sync(ctx, nil)
	for {
		select {
		case <-ctx.Done():
			return nil
		case ts := <-ch:
			p.Sync(ctx, ts)
			p.mu.Lock()
			p.synced = true
			p.mu.Unlock()
		}
	}
}

// Sync makes the running loops match targets: loops of removed targets are
// stopped and waited for before loops of new ones start; loops of targets
// still present keep running on their schedule. Loops started here stop when
// ctx is cancelled.
func (p *Pool) Sync(ctx context.Context, targets []discovery.Target) {
	p.mu.Lock()
	defer p.mu.Unlock()
	want := make(map[string]discovery.Target, len(targets))
	for _, t := range targets {
		if p.cfg.JobName != "" {
			t = withTag(t, "job", p.cfg.JobName)
		}
		t, keep, err := relabelTarget(t, p.cfg.RelabelConfigs)
		if err != nil {
			p.log.Warn("target dropped after relabeling", "err", err)
			continue
		}
		if keep {
			want[t.Key()] = t
		}
	}
	var stopping []*loop
	for k, l := range p.loops {
		if _, ok := want[k]; !ok {
			l.stop()
			stopping = append(stopping, l)
			delete(p.loops, k)
		}
	}
	for _, l := range stopping {
		<-l.done
	}
	started := 0
	for k, t := range want {
		if _, ok := p.loops[k]; ok {
			continue
		}
		f, err := newFetcher(p.client, t.URL, p.cfg)
		if err != nil {
			p.log.Warn("cannot start target", "target", t.Redacted(), "err", err)
			continue
		}
		l := newLoop(t, p.cfg, p.app.Appender(&t, p.cfg.appendOptions()), f, p.log)
		lctx, cancel := context.WithCancel(ctx)
		l.stop = cancel
		p.loops[k] = l
		go l.run(lctx)
		started++
	}
	if len(stopping) > 0 || started > 0 {
		p.log.Info("targets updated", "started", started, "stopped", len(stopping), "total", len(p.loops))
	}
}

// Targets returns the status of every running loop, ordered by URL.
func (p *Pool) Targets() []Status {
	p.mu.Lock()
	ls := make([]*loop, 0, len(p.loops))
	for _, l := range p.loops {
		ls = append(ls, l)
	}
	p.mu.Unlock()
	out := make([]Status, 0, len(ls))
	for _, l := range ls {
		out = append(out, l.snapshot())
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Target.URL < out[j].Target.URL })
	return out
}

func (c *Config) appendOptions() AppendOptions {
	return AppendOptions{MetricRelabelConfigs: c.MetricRelabelConfigs, LabelLimit: c.LabelLimit}
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
	l := newLoop(t, cfg, app, f, log)
	l.scrape(ctx, time.Now(), 0)
	st := l.snapshot()
	if st.Health != HealthUp {
		return st, fmt.Errorf("%w: %s", errScrapeFailed, st.LastError)
	}
	return st, nil
}
