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

	reloading sync.Mutex // serialises reloads; never held by readers
	// mu guards the fields below, never held while a reload runs, so
	// /metrics and /targets answer while jobs restart.
	mu          sync.Mutex
	lastOK      bool
	lastSuccess time.Time
	lastErr     string    // of the last failed reload, until one succeeds
	lastAttempt time.Time // of the last reload, failed or not
}

// reloadStatus is the last reload's outcome, for the targets page.
type reloadStatus struct {
	OK                   bool
	LastSuccess, Attempt time.Time
	Err                  string
}

func (r *reloader) status() reloadStatus {
	if r == nil {
		return reloadStatus{OK: true}
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	return reloadStatus{OK: r.lastOK, LastSuccess: r.lastSuccess, Attempt: r.lastAttempt, Err: r.lastErr}
}

func (r *reloader) record(err error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.lastAttempt = time.Now()
	if err != nil {
		r.lastOK, r.lastErr = false, err.Error()
		return
	}
	r.lastOK, r.lastSuccess, r.lastErr = true, r.lastAttempt, ""
}

func (r *reloader) ok() {
	r.mu.Lock()
	r.lastOK, r.lastSuccess = true, time.Now()
	r.mu.Unlock()
}

func (r *reloader) reload() error {
	r.reloading.Lock()
	defer r.reloading.Unlock()
	specs, err := r.load()
	if err != nil {
		r.record(err)
		r.log.Error("configuration reload failed, keeping the running one", "err", err)
		return err
	}
	started, stopped, kept, err := r.jobs.Apply(specs)
	r.record(err)
	if err != nil {
		r.log.Error("configuration reload could not start every job", "err", err)
		return err
	}
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

// collectors are the reload metrics, read from the last outcome.
func (r *reloader) collectors() []prometheus.Collector {
	read := func(f func(reloadStatus) float64) func() float64 {
		return func() float64 { return f(r.status()) }
	}
	return []prometheus.Collector{
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "scrapeflux_config_last_reload_successful", Help: "Whether the last configuration reload succeeded."},
			read(func(s reloadStatus) float64 {
				if s.OK {
					return 1
				}
				return 0
			})),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "scrapeflux_config_last_reload_success_timestamp_seconds", Help: "Time of the last successful configuration load."},
			read(func(s reloadStatus) float64 { return float64(s.LastSuccess.UnixNano()) / 1e9 })),
	}
}
