package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/http/pprof"
	"os"
	"runtime"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"github.com/prometheus/exporter-toolkit/web"
	"gopkg.in/yaml.v3"

	"github.com/scrapeflux/scrapeflux/discovery"
	"github.com/scrapeflux/scrapeflux/scrape"
	"github.com/scrapeflux/scrapeflux/sink"
)

// webServer serves the daemon's own /metrics, /healthz, /readyz and
// /targets.
type webServer struct {
	addr    string
	pprof   bool
	targets interface {
		Targets() []scrape.Status
		Handovers() int64
		Ready() bool
		Summaries() []scrape.JobSummary
		Discovery() []scrape.JobDiscovery
		prometheus.Collector
	}
	sink   *sink.Router
	influx interface {
		Server() sink.ServerInfo
		prometheus.Collector
	}
	discovery *discovery.Metrics
	shard     *scrape.Shard // nil: not a replica
	// readyWrite: /readyz fails once writes have failed this long.
	readyWrite time.Duration
	reload     *reloader
	log        *slog.Logger
	ln         net.Listener
	// webConfig is the exporter-toolkit web configuration file (TLS,
	// client certificates, basic auth users), read again on every
	// connection and request; enableReload serves POST /-/reload.
	webConfig    string
	enableReload bool
}

func (w *webServer) listen() error {
	if w.addr == "" {
		return nil
	}
	if err := web.Validate(w.webConfig); err != nil {
		return fmt.Errorf("--web-config %s: %w", w.webConfig, err)
	}
	host, _, err := net.SplitHostPort(w.addr)
	if err != nil {
		return fmt.Errorf("--listen %q: %w", w.addr, err)
	}
	if (w.enableReload || w.pprof) && !isLoopback(host) {
		authed, err := webConfigAuthenticates(w.webConfig)
		if err != nil {
			return fmt.Errorf("--web-config %s: %w", w.webConfig, err)
		}
		if !authed {
			return fmt.Errorf("--web-enable-reload and --pprof are refused on %s, which is not a loopback address, without authentication: "+
				"give --web-config with basic_auth_users or client_auth_type: RequireAndVerifyClientCert, or listen on 127.0.0.1 (reload also works with SIGHUP)", w.addr)
		}
	}
	if !isLoopback(host) {
		if authed, err := webConfigAuthenticates(w.webConfig); err == nil && !authed {
			w.log.Warn("--listen "+w.addr+" is reachable from other hosts without authentication: anyone who reaches it reads /metrics and /targets (target addresses, errors); give --web-config with basic_auth_users and TLS, or listen on 127.0.0.1", "listen", w.addr)
		}
	}
	ln, err := net.Listen("tcp", w.addr)
	if err != nil {
		return fmt.Errorf("cannot listen on --listen %s: %w", w.addr, err)
	}
	w.ln = ln
	return nil
}

func isLoopback(host string) bool {
	if host == "localhost" {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

// webConfigAuthenticates reports whether the web configuration file makes
// clients authenticate: basic auth users, or verified client certificates.
func webConfigAuthenticates(path string) (bool, error) {
	if path == "" {
		return false, nil
	}
	data, err := os.ReadFile(path)
	if err != nil {
		return false, err
	}
	var c web.Config
	if err := yaml.Unmarshal(data, &c); err != nil {
		return false, err
	}
	return len(c.Users) > 0 || c.TLSConfig.ClientAuth == "RequireAndVerifyClientCert", nil
}

func (w *webServer) boundAddr() string {
	if w.ln == nil {
		return ""
	}
	return w.ln.Addr().String()
}

func (w *webServer) run(ctx context.Context) error {
	if w.ln == nil {
		return nil
	}
	reg := selfMetrics(w.targets, w.sink, w.influx, w.discovery, w.reload)
	mux := http.NewServeMux()
	mux.Handle("/metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{}))
	mux.HandleFunc("/healthz", func(rw http.ResponseWriter, r *http.Request) { fmt.Fprintln(rw, "ok") })
	mux.HandleFunc("/readyz", func(rw http.ResponseWriter, r *http.Request) {
		if !w.targets.Ready() {
			http.Error(rw, "waiting for a first snapshot from discovery", http.StatusServiceUnavailable)
			return
		}
		if !w.sink.Ready() {
			msg := "InfluxDB is failing and there is no disk queue to hold data"
			if qs := w.sink.QueueStatus(); qs.DiskError != "" {
				msg = "InfluxDB is failing and the disk queue refuses writes (" + qs.DiskError + "): data waits in memory up to --memory-max-bytes"
			}
			http.Error(rw, msg, http.StatusServiceUnavailable)
			return
		}
		if st := w.sink.Stats(); w.readyWrite > 0 && st.Undelivered(time.Now()) > w.readyWrite {
			http.Error(rw, fmt.Sprintf("no write to InfluxDB for %s (%d failed attempts; data is queued): %s",
				st.Undelivered(time.Now()).Round(time.Second), st.ConsecutiveFailures, st.LastWriteError), http.StatusServiceUnavailable)
			return
		}
		fmt.Fprintln(rw, "ready")
	})
	mux.HandleFunc("/targets", w.targetsPage)
	mux.HandleFunc("/service-discovery", w.discoveryPage)
	mux.HandleFunc("/-/reload", func(rw http.ResponseWriter, r *http.Request) {
		if !w.enableReload {
			http.Error(rw, "reload over HTTP is off: start with --web-enable-reload, or send SIGHUP", http.StatusForbidden)
			return
		}
		if r.Method != http.MethodPost && r.Method != http.MethodPut {
			http.Error(rw, "POST to reload", http.StatusMethodNotAllowed)
			return
		}
		if err := w.reload.reload(); err != nil {
			http.Error(rw, "reload failed, old configuration kept: "+err.Error(), http.StatusBadRequest)
			return
		}
		fmt.Fprintln(rw, "reloaded")
	})
	if w.pprof {
		mux.HandleFunc("/debug/pprof/", pprof.Index)
		mux.HandleFunc("/debug/pprof/profile", pprof.Profile)
		mux.HandleFunc("/debug/pprof/symbol", pprof.Symbol)
		mux.HandleFunc("/debug/pprof/trace", pprof.Trace)
	}
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}
	errc := make(chan error, 1)
	noSystemd := false
	flags := &web.FlagConfig{WebListenAddresses: &[]string{}, WebSystemdSocket: &noSystemd, WebConfigFile: &w.webConfig}
	go func() { errc <- web.Serve(w.ln, srv, flags, w.log) }()
	select {
	case err := <-errc:
		return fmt.Errorf("web server stopped: %w", err)
	case <-ctx.Done():
		sctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		_ = srv.Shutdown(sctx)
		if err := <-errc; err != nil && !errors.Is(err, http.ErrServerClosed) {
			return err
		}
		return nil
	}
}

// selfMetrics is the registry /metrics serves: each package's collector
// (the manager's targets and cluster, the sink's counters and queues, the
// writer's server, the reloads, discovery and scrape counters), the build
// and the Go runtime. influx may be nil.
func selfMetrics(targets prometheus.Collector, snk *sink.Router, influx prometheus.Collector, disc *discovery.Metrics, reload *reloader) *prometheus.Registry {
	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}), targets, snk,
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "scrapeflux_build_info", Help: "The running build: version and Go version.",
			ConstLabels: prometheus.Labels{"version": fullVersion(), "goversion": runtime.Version()}}, func() float64 { return 1 }))
	reg.MustRegister(reload.collectors()...)
	if influx != nil {
		reg.MustRegister(influx)
	}
	reg.MustRegister(disc)
	return reg
}
