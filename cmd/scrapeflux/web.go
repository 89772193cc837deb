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
	}
	sink   *sink.Router
	influx interface{ Server() sink.ServerInfo }
	shard  *scrape.Shard // nil: not a replica
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
	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
		&selfCollector{targets: w.targets, sink: w.sink, influx: w.influx, shard: w.shard}, w.reload)
	reg.MustRegister(discovery.Collectors()...)
	reg.MustRegister(scrape.Collectors()...)
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

// selfCollector exposes the pool's and sink's counters at collection time.
type selfCollector struct {
	targets interface {
		Targets() []scrape.Status
		Handovers() int64
		Summaries() []scrape.JobSummary
	}
	sink   *sink.Router
	influx interface{ Server() sink.ServerInfo } // nil in tests without a writer
	shard  *scrape.Shard
}

var (
	descScraped    = prometheus.NewDesc("scrapeflux_samples_scraped_total", "Samples committed by scrapes.", nil, nil)
	descWritten    = prometheus.NewDesc("scrapeflux_samples_written_total", "Samples InfluxDB accepted.", nil, nil)
	descRecov      = prometheus.NewDesc("scrapeflux_samples_recovered_total", "Samples found in the disk queue at start, left by an earlier run.", nil, nil)
	descDropped    = prometheus.NewDesc("scrapeflux_samples_dropped_total", "Samples not written, by reason.", []string{"reason"}, nil)
	descQueued     = prometheus.NewDesc("scrapeflux_queued_samples", "Samples accepted and not yet written.", nil, nil)
	descQBytes     = prometheus.NewDesc("scrapeflux_queued_bytes", "Bytes of line protocol not yet written.", nil, nil)
	descQDisk      = prometheus.NewDesc("scrapeflux_queue_disk_bytes", "Bytes of the disk queue's segment files.", nil, nil)
	descQDiskMax   = prometheus.NewDesc("scrapeflux_queue_disk_max_bytes", "Bound of the disk queue's files (--queue-max-bytes; 0: no disk queue).", nil, nil)
	descQMem       = prometheus.NewDesc("scrapeflux_queue_memory_bytes", "Bytes of queued line protocol held in memory.", []string{"kind"}, nil)
	descQMemMax    = prometheus.NewDesc("scrapeflux_queue_memory_max_bytes", "Bound of queued data in memory that is not on disk (--memory-max-bytes).", nil, nil)
	descQFault     = prometheus.NewDesc("scrapeflux_queue_disk_failing", "1 while the disk queue refuses writes (full or failing disk): new data waits in memory.", nil, nil)
	descRejected   = prometheus.NewDesc("scrapeflux_samples_rejected_total", "Samples InfluxDB refused, by its reason (parse, type_conflict, retention, limit, other).", []string{"reason"}, nil)
	descWrites     = prometheus.NewDesc("scrapeflux_influx_writes_total", "Write requests to InfluxDB by outcome (ok: InfluxDB answered for every line, failed: retried).", []string{"outcome"}, nil)
	descWriteDur   = prometheus.NewDesc("scrapeflux_influx_write_seconds_total", "Time spent in write requests to InfluxDB.", nil, nil)
	descAnswers    = prometheus.NewDesc("scrapeflux_influx_write_answers_total", "Answers to write requests by status: 204, 400, 401, 403, 404, 413, 422, 429, other_4xx, 5xx, network (no answer), other.", []string{"status"}, nil)
	descLatency    = prometheus.NewDesc("scrapeflux_influx_write_duration_seconds", "Duration of write requests to InfluxDB.", nil, nil)
	descLastOK     = prometheus.NewDesc("scrapeflux_influx_last_write_timestamp_seconds", "Time of the last write InfluxDB answered (0: none yet).", nil, nil)
	descConsec     = prometheus.NewDesc("scrapeflux_influx_consecutive_failures", "Failed write attempts since the last answered one.", nil, nil)
	descMembers    = prometheus.NewDesc("scrapeflux_cluster_members", "Live replicas of the cluster as this replica sees them (itself included).", nil, nil)
	descMChanges   = prometheus.NewDesc("scrapeflux_cluster_membership_changes_total", "Changes of the cluster's member list seen.", nil, nil)
	descHandover   = prometheus.NewDesc("scrapeflux_cluster_handovers_total", "Targets handed over to other replicas.", nil, nil)
	descRoles      = prometheus.NewDesc("scrapeflux_cluster_targets", "Targets by this replica's role: owned, leaving (handed over, scraped one more interval), skipped (another replica's).", []string{"role"}, nil)
	descTargets    = prometheus.NewDesc("scrapeflux_targets", "Targets by health.", []string{"health"}, nil)
	descJobTargets = prometheus.NewDesc("scrapeflux_job_targets", "Targets this replica scrapes, by job and health (alert on health=\"down\").", []string{"job", "health"}, nil)
	descBudget     = prometheus.NewDesc("scrapeflux_series_budget", "Series counted against --max-hourly-series and --max-daily-series in the current window (used), and the budget (limit; 0: none).", []string{"window", "kind"}, nil)
	descBucketW    = prometheus.NewDesc("scrapeflux_bucket_samples_written_total", "Samples InfluxDB accepted, by the bucket a job routes to (bucket:; the default bucket is in scrapeflux_samples_written_total only).", []string{"bucket"}, nil)
	descBucketQ    = prometheus.NewDesc("scrapeflux_bucket_queued_samples", "Samples queued for a routed bucket.", []string{"bucket"}, nil)
	descBucketF    = prometheus.NewDesc("scrapeflux_bucket_consecutive_failures", "Failed write attempts to a routed bucket since its last answered one.", []string{"bucket"}, nil)
	descDiscFail   = prometheus.NewDesc("scrapeflux_discovery_failing", "1 while a job's discovery (Consul, file_sd, http_sd) fails; its last targets are kept meanwhile.", []string{"job"}, nil)
	descDiscOK     = prometheus.NewDesc("scrapeflux_discovery_last_success_timestamp_seconds", "When a job's discovery last read its targets in full (0: not yet, or static targets only).", []string{"job"}, nil)
	descInflux     = prometheus.NewDesc("scrapeflux_influxdb_info", "The InfluxDB written to, as its /ping says: version, build and the write API used.", []string{"version", "build", "api"}, nil)
	descBuild      = prometheus.NewDesc("scrapeflux_build_info", "The running build: version and Go version.", []string{"version", "goversion"}, nil)
	descLint       = prometheus.NewDesc("scrapeflux_lint_findings", "Findings of the last lint of every target's exposition, by rule (families, series or labels; see --lint-interval).", []string{"rule"}, nil)
	descLintT      = prometheus.NewDesc("scrapeflux_lint_targets", "Targets whose last lint found the rule broken.", []string{"rule"}, nil)
	descSeries     = prometheus.NewDesc("scrapeflux_series", "Series of all targets over the last hour (tracked when --series-limit, series_limit or a budget is set), and of them first seen in it (kind=new).", []string{"kind"}, nil)
	descSeriesHeld = prometheus.NewDesc("scrapeflux_series_limited_targets", "Targets whose series limit is full: their new series are held back.", nil, nil)
	descLag        = prometheus.NewDesc("scrapeflux_scrape_start_lag_max_seconds", "Largest lag of a scrape's start behind its schedule among the last scrapes of every target.", nil, nil)
)

func (c *selfCollector) Describe(ch chan<- *prometheus.Desc) { prometheus.DescribeByCollect(c, ch) }

func (c *selfCollector) Collect(ch chan<- prometheus.Metric) {
	st := c.sink.Stats()
	ch <- prometheus.MustNewConstMetric(descScraped, prometheus.CounterValue, float64(st.Scraped))
	ch <- prometheus.MustNewConstMetric(descWritten, prometheus.CounterValue, float64(st.Written))
	ch <- prometheus.MustNewConstMetric(descRecov, prometheus.CounterValue, float64(st.Recovered))
	for reason, n := range st.Dropped {
		ch <- prometheus.MustNewConstMetric(descDropped, prometheus.CounterValue, float64(n), reason)
	}
	for reason, n := range st.Rejected {
		ch <- prometheus.MustNewConstMetric(descRejected, prometheus.CounterValue, float64(n), reason)
	}
	ch <- prometheus.MustNewConstMetric(descWrites, prometheus.CounterValue, float64(st.WritesOK), "ok")
	ch <- prometheus.MustNewConstMetric(descWrites, prometheus.CounterValue, float64(st.WritesFailed), "failed")
	ch <- prometheus.MustNewConstMetric(descWriteDur, prometheus.CounterValue, st.WriteTime.Seconds())
	for status, n := range st.Answers {
		ch <- prometheus.MustNewConstMetric(descAnswers, prometheus.CounterValue, float64(n), status)
	}
	buckets := map[float64]uint64{}
	var cum, count uint64
	for i, ub := range sink.WriteLatencyBuckets {
		cum += uint64(st.LatencyCounts[i])
		buckets[ub] = cum
	}
	count = cum + uint64(st.LatencyCounts[len(sink.WriteLatencyBuckets)])
	ch <- prometheus.MustNewConstHistogram(descLatency, count, st.WriteTime.Seconds(), buckets)
	var last float64
	if !st.LastWrite.IsZero() {
		last = float64(st.LastWrite.UnixNano()) / 1e9
	}
	ch <- prometheus.MustNewConstMetric(descLastOK, prometheus.GaugeValue, last)
	ch <- prometheus.MustNewConstMetric(descConsec, prometheus.GaugeValue, float64(st.ConsecutiveFailures))
	ch <- prometheus.MustNewConstMetric(descQueued, prometheus.GaugeValue, float64(st.QueuedSamples))
	ch <- prometheus.MustNewConstMetric(descQBytes, prometheus.GaugeValue, float64(st.QueuedBytes))
	qs := c.sink.QueueStatus()
	ch <- prometheus.MustNewConstMetric(descQDisk, prometheus.GaugeValue, float64(qs.Disk))
	ch <- prometheus.MustNewConstMetric(descQDiskMax, prometheus.GaugeValue, float64(qs.MaxDisk))
	ch <- prometheus.MustNewConstMetric(descQMem, prometheus.GaugeValue, float64(qs.MemoryOnly), "not_on_disk")
	ch <- prometheus.MustNewConstMetric(descQMem, prometheus.GaugeValue, float64(qs.Memory-qs.MemoryOnly), "copy_of_disk")
	ch <- prometheus.MustNewConstMetric(descQMemMax, prometheus.GaugeValue, float64(qs.MaxMemory))
	var failing float64
	if qs.DiskError != "" {
		failing = 1
	}
	ch <- prometheus.MustNewConstMetric(descQFault, prometheus.GaugeValue, failing)
	health := map[scrape.Health]int{scrape.HealthUp: 0, scrape.HealthDown: 0, scrape.HealthUnknown: 0}
	roles := map[string]int{scrape.RoleOwned: 0, scrape.RoleLeaving: 0, scrape.RoleSkipped: 0}
	perJob := map[string]map[scrape.Health]int{}
	lintN, lintT := map[string]int{}, map[string]int{}
	var series, newSeries, limited int
	var lag time.Duration
	for _, t := range c.targets.Targets() {
		roles[t.Role]++
		if t.Role == scrape.RoleSkipped {
			continue
		}
		job := t.Target.Tag("job")
		if perJob[job] == nil {
			perJob[job] = map[scrape.Health]int{scrape.HealthUp: 0, scrape.HealthDown: 0, scrape.HealthUnknown: 0}
		}
		perJob[job][t.Health]++
		health[t.Health]++
		lag = max(lag, t.LastStartDelay)
		series += t.Cardinality.Series
		newSeries += t.Cardinality.NewLastHour
		if t.Cardinality.Limit > 0 && t.Cardinality.Series >= t.Cardinality.Limit {
			limited++
		}
		if t.Lint != nil {
			for _, f := range t.Lint.Findings {
				lintN[f.Rule] += f.Count
				lintT[f.Rule]++
			}
		}
	}
	ch <- prometheus.MustNewConstMetric(descSeries, prometheus.GaugeValue, float64(series), "all")
	ch <- prometheus.MustNewConstMetric(descSeries, prometheus.GaugeValue, float64(newSeries), "new")
	ch <- prometheus.MustNewConstMetric(descSeriesHeld, prometheus.GaugeValue, float64(limited))
	for _, rule := range scrape.LintRules {
		ch <- prometheus.MustNewConstMetric(descLint, prometheus.GaugeValue, float64(lintN[rule]), rule)
		ch <- prometheus.MustNewConstMetric(descLintT, prometheus.GaugeValue, float64(lintT[rule]), rule)
	}
	for h, n := range health {
		ch <- prometheus.MustNewConstMetric(descTargets, prometheus.GaugeValue, float64(n), string(h))
	}
	for job, hs := range perJob {
		for h, n := range hs {
			ch <- prometheus.MustNewConstMetric(descJobTargets, prometheus.GaugeValue, float64(n), job, string(h))
		}
	}
	ch <- prometheus.MustNewConstMetric(descBuild, prometheus.GaugeValue, 1, fullVersion(), runtime.Version())
	for _, b := range c.sink.Buckets() {
		ch <- prometheus.MustNewConstMetric(descBucketW, prometheus.CounterValue, float64(b.Written), b.Bucket)
		ch <- prometheus.MustNewConstMetric(descBucketQ, prometheus.GaugeValue, float64(b.Queued), b.Bucket)
		ch <- prometheus.MustNewConstMetric(descBucketF, prometheus.GaugeValue, float64(b.ConsecutiveFailures), b.Bucket)
	}
	for _, js := range c.targets.Summaries() {
		failing := 0.0
		if js.Discovery.Err != "" {
			failing = 1
		}
		var ok float64
		if !js.Discovery.LastSuccess.IsZero() {
			ok = float64(js.Discovery.LastSuccess.UnixNano()) / 1e9
		}
		ch <- prometheus.MustNewConstMetric(descDiscFail, prometheus.GaugeValue, failing, js.Name)
		ch <- prometheus.MustNewConstMetric(descDiscOK, prometheus.GaugeValue, ok, js.Name)
	}
	hu, hl, du, dl, _ := c.sink.SeriesBudgets()
	for _, b := range []struct {
		w         string
		used, lim int
	}{{"hour", hu, hl}, {"day", du, dl}} {
		ch <- prometheus.MustNewConstMetric(descBudget, prometheus.GaugeValue, float64(b.used), b.w, "used")
		ch <- prometheus.MustNewConstMetric(descBudget, prometheus.GaugeValue, float64(b.lim), b.w, "limit")
	}
	if c.influx != nil {
		si := c.influx.Server()
		ch <- prometheus.MustNewConstMetric(descInflux, prometheus.GaugeValue, 1, si.Version, si.Build, si.API.String())
	}
	ch <- prometheus.MustNewConstMetric(descLag, prometheus.GaugeValue, lag.Seconds())
	if c.shard != nil {
		members, _ := c.shard.Members()
		ch <- prometheus.MustNewConstMetric(descMembers, prometheus.GaugeValue, float64(len(members)))
		ch <- prometheus.MustNewConstMetric(descMChanges, prometheus.CounterValue, float64(c.shard.Changes()))
		ch <- prometheus.MustNewConstMetric(descHandover, prometheus.CounterValue, float64(c.targets.Handovers()))
		for _, r := range []string{scrape.RoleOwned, scrape.RoleLeaving, scrape.RoleSkipped} {
			ch <- prometheus.MustNewConstMetric(descRoles, prometheus.GaugeValue, float64(roles[r]), r)
		}
	}
}
