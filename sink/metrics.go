package sink

import "github.com/prometheus/client_golang/prometheus"

// The sink's self-metrics. The counters live where the sink counts them
// (atomics on the hot path, one set per bucket's sink, summed by the
// router); the router reads them at collection time, so the metrics and
// the /targets page never disagree.
var (
	descScraped   = prometheus.NewDesc("scrapeflux_samples_scraped_total", "Samples committed by scrapes.", nil, nil)
	descWritten   = prometheus.NewDesc("scrapeflux_samples_written_total", "Samples InfluxDB accepted.", nil, nil)
	descRecov     = prometheus.NewDesc("scrapeflux_samples_recovered_total", "Samples found in the disk queue at start, left by an earlier run.", nil, nil)
	descDropped   = prometheus.NewDesc("scrapeflux_samples_dropped_total", "Samples not written, by reason.", []string{"reason"}, nil)
	descQueued    = prometheus.NewDesc("scrapeflux_queued_samples", "Samples accepted and not yet written.", nil, nil)
	descQBytes    = prometheus.NewDesc("scrapeflux_queued_bytes", "Bytes of line protocol not yet written.", nil, nil)
	descQDisk     = prometheus.NewDesc("scrapeflux_queue_disk_bytes", "Bytes of the disk queue's segment files.", nil, nil)
	descQDiskMax  = prometheus.NewDesc("scrapeflux_queue_disk_max_bytes", "Bound of the disk queue's files (--queue-max-bytes; 0: no disk queue).", nil, nil)
	descQMem      = prometheus.NewDesc("scrapeflux_queue_memory_bytes", "Bytes of queued line protocol held in memory.", []string{"kind"}, nil)
	descQMemMax   = prometheus.NewDesc("scrapeflux_queue_memory_max_bytes", "Bound of queued data in memory that is not on disk (--memory-max-bytes).", nil, nil)
	descQFault    = prometheus.NewDesc("scrapeflux_queue_disk_failing", "1 while the disk queue refuses writes (full or failing disk): new data waits in memory.", nil, nil)
	descRejected  = prometheus.NewDesc("scrapeflux_samples_rejected_total", "Samples InfluxDB refused, by its reason (parse, type_conflict, retention, limit, other).", []string{"reason"}, nil)
	descWrites    = prometheus.NewDesc("scrapeflux_influx_writes_total", "Write requests to InfluxDB by outcome (ok: InfluxDB answered for every line, failed: retried).", []string{"outcome"}, nil)
	descWriteDur  = prometheus.NewDesc("scrapeflux_influx_write_seconds_total", "Time spent in write requests to InfluxDB.", nil, nil)
	descAnswers   = prometheus.NewDesc("scrapeflux_influx_write_answers_total", "Answers to write requests by status: 204, 400, 401, 403, 404, 413, 422, 429, other_4xx, 5xx, network (no answer), other.", []string{"status"}, nil)
	descLatency   = prometheus.NewDesc("scrapeflux_influx_write_duration_seconds", "Duration of write requests to InfluxDB.", nil, nil)
	descLastOK    = prometheus.NewDesc("scrapeflux_influx_last_write_timestamp_seconds", "Time of the last write InfluxDB answered (0: none yet).", nil, nil)
	descConsec    = prometheus.NewDesc("scrapeflux_influx_consecutive_failures", "Failed write attempts since the last answered one.", nil, nil)
	descJobBudget = prometheus.NewDesc("scrapeflux_job_series_budget", "Series counted against a job's own max_hourly_series and max_daily_series in the current window (used), and the budget (limit).", []string{"job", "window", "kind"}, nil)
	descJobDrop   = prometheus.NewDesc("scrapeflux_job_samples_dropped_total", "Samples of a configuration file's job dropped, by reason: series_budget (held back by the job's budget or the global one).", []string{"job", "reason"}, nil)
	descBudget    = prometheus.NewDesc("scrapeflux_series_budget", "Series counted against --max-hourly-series and --max-daily-series in the current window (used), and the budget (limit; 0: none).", []string{"window", "kind"}, nil)
	descBucketW   = prometheus.NewDesc("scrapeflux_bucket_samples_written_total", "Samples InfluxDB accepted, by the bucket a job routes to (bucket:; the default bucket is in scrapeflux_samples_written_total only).", []string{"bucket"}, nil)
	descBucketQ   = prometheus.NewDesc("scrapeflux_bucket_queued_samples", "Samples queued for a routed bucket.", []string{"bucket"}, nil)
	descSchemaLim = prometheus.NewDesc("scrapeflux_influx3_schema_limit", "Limits of the InfluxDB 3 schema guard, by kind: databases, tables (across databases) and columns (per table, time included); 0: not known (learnt from refusals). Absent unless InfluxDB 3 is written to.", []string{"kind"}, nil)
	descSchemaTab = prometheus.NewDesc("scrapeflux_influx3_schema_tables", "Tables the InfluxDB 3 schema guard knows in a database, and the columns of the widest (kind tables, widest_table_columns).", []string{"database", "kind"}, nil)
	descSchemaHld = prometheus.NewDesc("scrapeflux_influx3_schema_held_samples_total", "Samples the InfluxDB 3 schema guard held back because the table or column they would make passes the server's limits, by database and table (at most 1000 tables a database, others as _other).", []string{"database", "table"}, nil)
	descBucketF   = prometheus.NewDesc("scrapeflux_bucket_consecutive_failures", "Failed write attempts to a routed bucket since its last answered one.", []string{"bucket"}, nil)
)

// Describe implements prometheus.Collector.
func (r *Router) Describe(ch chan<- *prometheus.Desc) { prometheus.DescribeByCollect(r, ch) }

// Collect implements prometheus.Collector: the sink's counters, queues,
// routed buckets and series budgets.
func (r *Router) Collect(ch chan<- prometheus.Metric) {
	st := r.Stats()
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
	for i, ub := range WriteLatencyBuckets {
		cum += uint64(st.LatencyCounts[i])
		buckets[ub] = cum
	}
	count = cum + uint64(st.LatencyCounts[len(WriteLatencyBuckets)])
	ch <- prometheus.MustNewConstHistogram(descLatency, count, st.WriteTime.Seconds(), buckets)
	var last float64
	if !st.LastWrite.IsZero() {
		last = float64(st.LastWrite.UnixNano()) / 1e9
	}
	ch <- prometheus.MustNewConstMetric(descLastOK, prometheus.GaugeValue, last)
	ch <- prometheus.MustNewConstMetric(descConsec, prometheus.GaugeValue, float64(st.ConsecutiveFailures))
	ch <- prometheus.MustNewConstMetric(descQueued, prometheus.GaugeValue, float64(st.QueuedSamples))
	ch <- prometheus.MustNewConstMetric(descQBytes, prometheus.GaugeValue, float64(st.QueuedBytes))
	qs := r.QueueStatus()
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
	for _, b := range r.Buckets() {
		ch <- prometheus.MustNewConstMetric(descBucketW, prometheus.CounterValue, float64(b.Written), b.Bucket)
		ch <- prometheus.MustNewConstMetric(descBucketQ, prometheus.GaugeValue, float64(b.Queued), b.Bucket)
		ch <- prometheus.MustNewConstMetric(descBucketF, prometheus.GaugeValue, float64(b.ConsecutiveFailures), b.Bucket)
	}
	if cat := r.def.cfg.Schema; cat.Active() {
		l := cat.Limits()
		ch <- prometheus.MustNewConstMetric(descSchemaLim, prometheus.GaugeValue, float64(l.Databases), "databases")
		ch <- prometheus.MustNewConstMetric(descSchemaLim, prometheus.GaugeValue, float64(l.Tables), "tables")
		ch <- prometheus.MustNewConstMetric(descSchemaLim, prometheus.GaugeValue, float64(l.Columns), "columns")
		for _, db := range cat.Databases() {
			u := db.Usage()
			ch <- prometheus.MustNewConstMetric(descSchemaTab, prometheus.GaugeValue, float64(u.Tables), u.Database, "tables")
			ch <- prometheus.MustNewConstMetric(descSchemaTab, prometheus.GaugeValue, float64(u.WidestColumns), u.Database, "widest_table_columns")
			for _, h := range u.Held {
				ch <- prometheus.MustNewConstMetric(descSchemaHld, prometheus.CounterValue, float64(h.Samples), u.Database, h.Table)
			}
		}
	}
	hu, hl, du, dl, _ := r.SeriesBudgets()
	for _, b := range []struct {
		w         string
		used, lim int
	}{{"hour", hu, hl}, {"day", du, dl}} {
		ch <- prometheus.MustNewConstMetric(descBudget, prometheus.GaugeValue, float64(b.used), b.w, "used")
		ch <- prometheus.MustNewConstMetric(descBudget, prometheus.GaugeValue, float64(b.lim), b.w, "limit")
	}
	for _, j := range r.JobBudgets() {
		ch <- prometheus.MustNewConstMetric(descJobDrop, prometheus.CounterValue, float64(j.DroppedSamples), j.Job, "series_budget")
		for _, b := range []struct {
			w         string
			used, lim int
		}{{"hour", j.HourUsed, j.HourLimit}, {"day", j.DayUsed, j.DayLimit}} {
			if b.lim > 0 {
				ch <- prometheus.MustNewConstMetric(descJobBudget, prometheus.GaugeValue, float64(b.used), j.Job, b.w, "used")
				ch <- prometheus.MustNewConstMetric(descJobBudget, prometheus.GaugeValue, float64(b.lim), j.Job, b.w, "limit")
			}
		}
	}
}

var descInflux = prometheus.NewDesc("scrapeflux_influxdb_info", "The InfluxDB written to, as its /ping says: version, build and the write API used.", []string{"version", "build", "api"}, nil)

// Describe implements prometheus.Collector.
func (w *InfluxWriter) Describe(ch chan<- *prometheus.Desc) { ch <- descInflux }

// Collect implements prometheus.Collector: the server written to.
func (w *InfluxWriter) Collect(ch chan<- prometheus.Metric) {
	si := w.Server()
	ch <- prometheus.MustNewConstMetric(descInflux, prometheus.GaugeValue, 1, si.Version, si.Build, si.API.String())
}
