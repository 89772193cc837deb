package main

import (
	"context"
	"log/slog"
	"os"
	"os/signal"
	"sync"
	"syscall"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/scrapeflux/scrapeflux/scrape"
)

// reloader re-reads the configuration (file, flags and the secrets they
// name) and applies it to the running jobs. A configuration that does not
// load is rejected whole and the running one kept.
type reloader struct {
	log  *slog.Logger
	jobs *scrape.Manager
	load func() ([]scrape.JobSpec, error)

	mu          sync.Mutex // serialises reloads; guards the fields below
	lastOK      bool
	lastSuccess time.Time
}

var (
	descReloadOK = prometheus.NewDesc("scrapeflux_config_last_reload_successful", "Whether the last configuration reload succeeded.", nil, nil)
	descReloadTS = prometheus.NewDesc("scrapeflux_config_last_reload_success_timestamp_seconds", "Time of the last successful configuration load.", nil, nil)
)

func (r *reloader) ok() {
	r.mu.Lock()
	r.lastOK, r.lastSuccess = true, time.Now()
	r.mu.Unlock()
}

func (r *reloader) reload() error {
	r.mu.Lock()
	defer r.mu.Unlock()
	specs, err := r.load()
	if err != nil {
		r.lastOK = false
		r.log.Error("configuration reload failed, keeping the running one", "err", err)
		return err
	}
	started, stopped, kept, err := r.jobs.Apply(specs)
	if err != nil {
		r.lastOK = false
		r.log.Error("configuration reload could not start every job", "err", err)
		return err
	}
	r.lastOK, r.lastSuccess = true, time.Now()
	r.log.Info("configuration reloaded", "jobs_started", started, "jobs_stopped", stopped, "jobs_kept", kept)
	return nil
}

// onSIGHUP reloads on every SIGHUP until ctx ends.
func (r *reloader) onSIGHUP(ctx context.Context) error {
	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP)
	defer signal.Stop(hup)
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-hup:
			_ = r.reload() // logged; the old configuration runs on
		}
	}
}

func (r *reloader) Describe(ch chan<- *prometheus.Desc) { prometheus.DescribeByCollect(r, ch) }

func (r *reloader) Collect(ch chan<- prometheus.Metric) {
	r.mu.Lock()
	ok, ts := r.lastOK, r.lastSuccess
	r.mu.Unlock()
	v := 0.0
	if ok {
		v = 1
	}
	ch <- prometheus.MustNewConstMetric(descReloadOK, prometheus.GaugeValue, v)
	ch <- prometheus.MustNewConstMetric(descReloadTS, prometheus.GaugeValue, float64(ts.UnixNano())/1e9)
}
