package scrape

import (
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// Metrics are the scrape loops' own metrics: a Manager owns one set and
// collects it with the rest (a Pool on its own makes its own), so nothing
// is counted in package state. They only go up: a target that goes away
// keeps what it counted, and a job's series stays after its last target.
type Metrics struct {
	duration                                 prometheus.Histogram
	scrapes, failures, failureKinds, skipped *prometheus.CounterVec
}

// NewMetrics makes a set of the loops' metrics, every failure kind's
// series present from the start.
func NewMetrics() *Metrics {
	m := &Metrics{
		duration: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "scrapeflux_scrape_duration_seconds",
			Help:    "Duration of scrapes (fetch, parse and convert), successful or not.",
			Buckets: []float64{0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10},
		}),
		scrapes: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "scrapeflux_scrapes_total",
			Help: "Scrapes run, by job.",
		}, []string{"job"}),
		failures: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "scrapeflux_scrape_failures_total",
			Help: "Scrapes that failed, by job.",
		}, []string{"job"}),
		// By kind, over every job: the kinds are few, the jobs may be many
		// (one per Consul service).
		failureKinds: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "scrapeflux_scrape_failure_kinds_total",
			Help: "Scrapes that failed, by kind: timeout, refused, reset, dns, tls, http_status, body_limit, sample_limit, label_limit, parse, other.",
		}, []string{"kind"}),
		skipped: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "scrapeflux_scrapes_skipped_total",
			Help: "Scrape intervals skipped because a scrape overran, by job.",
		}, []string{"job"}),
	}
	for _, k := range []string{FailTimeout, FailRefused, FailReset, FailDNS, FailTLS, FailHTTPStatus, FailBodyLimit, FailSampleLimit, FailLabelLimit, FailParse, FailOther} {
		m.failureKinds.WithLabelValues(k)
	}
	return m
}

func (m *Metrics) collectors() []prometheus.Collector {
	return []prometheus.Collector{m.duration, m.scrapes, m.failures, m.failureKinds, m.skipped}
}

// Describe implements prometheus.Collector.
func (m *Metrics) Describe(ch chan<- *prometheus.Desc) {
	for _, c := range m.collectors() {
		c.Describe(ch)
	}
}

// Collect implements prometheus.Collector.
func (m *Metrics) Collect(ch chan<- prometheus.Metric) {
	for _, c := range m.collectors() {
		c.Collect(ch)
	}
}

// loopMetrics are a loop's children of the counters, looked up once.
type loopMetrics struct {
	scrapes, failures, skipped prometheus.Counter
	duration                   prometheus.Observer
	failureKinds               *prometheus.CounterVec
}

func (m *Metrics) loop(job string) loopMetrics {
	return loopMetrics{scrapes: m.scrapes.WithLabelValues(job), failures: m.failures.WithLabelValues(job),
		skipped: m.skipped.WithLabelValues(job), duration: m.duration, failureKinds: m.failureKinds}
}

// The targets' metrics, read from the running pools at collection time.
var (
	descMembers    = prometheus.NewDesc("scrapeflux_cluster_members", "Live replicas of the cluster as this replica sees them (itself included).", nil, nil)
	descMChanges   = prometheus.NewDesc("scrapeflux_cluster_membership_changes_total", "Changes of the cluster's member list seen.", nil, nil)
	descHandover   = prometheus.NewDesc("scrapeflux_cluster_handovers_total", "Targets handed over to other replicas.", nil, nil)
	descRoles      = prometheus.NewDesc("scrapeflux_cluster_targets", "Targets by this replica's role: owned, leaving (handed over, scraped one more interval), skipped (another replica's).", []string{"role"}, nil)
	descTargets    = prometheus.NewDesc("scrapeflux_targets", "Targets by health.", []string{"health"}, nil)
	descJobTargets = prometheus.NewDesc("scrapeflux_job_targets", "Targets this replica scrapes, by job and health (alert on health=\"down\").", []string{"job", "health"}, nil)
	descDiscFail   = prometheus.NewDesc("scrapeflux_discovery_failing", "1 while a job's discovery (Consul, file_sd, http_sd) fails; its last targets are kept meanwhile.", []string{"job"}, nil)
	descDiscOK     = prometheus.NewDesc("scrapeflux_discovery_last_success_timestamp_seconds", "When a job's discovery last read its targets in full (0: not yet, or static targets only).", []string{"job"}, nil)
	descLint       = prometheus.NewDesc("scrapeflux_lint_findings", "Findings of the last lint of every target's exposition, by rule (families, series or labels; see --lint-interval).", []string{"rule"}, nil)
	descLintT      = prometheus.NewDesc("scrapeflux_lint_targets", "Targets whose last lint found the rule broken.", []string{"rule"}, nil)
	descSeries     = prometheus.NewDesc("scrapeflux_series", "Series of all targets over the last hour (tracked when --series-limit, series_limit or a budget is set), and of them first seen in it (kind=new).", []string{"kind"}, nil)
	descSeriesHeld = prometheus.NewDesc("scrapeflux_series_limited_targets", "Targets whose series limit is full: their new series are held back.", nil, nil)
	descLag        = prometheus.NewDesc("scrapeflux_scrape_start_lag_max_seconds", "Largest lag of a scrape's start behind its schedule among the last scrapes of every target.", nil, nil)
)

// Describe implements prometheus.Collector.
func (j *Manager) Describe(ch chan<- *prometheus.Desc) { prometheus.DescribeByCollect(j, ch) }

// Collect implements prometheus.Collector: targets by health and job,
// lint findings, series, start lag, discovery state and, for a replica,
// the cluster as its shard sees it.
func (j *Manager) Collect(ch chan<- prometheus.Metric) {
	health := map[Health]int{HealthUp: 0, HealthDown: 0, HealthUnknown: 0}
	roles := map[string]int{RoleOwned: 0, RoleLeaving: 0, RoleSkipped: 0}
	perJob := map[string]map[Health]int{}
	lintN, lintT := map[string]int{}, map[string]int{}
	var series, newSeries, limited int
	var lag time.Duration
	for _, t := range j.Targets() {
		roles[t.Role]++
		if t.Role == RoleSkipped {
			continue
		}
		job := t.Target.Tag("job")
		if perJob[job] == nil {
			perJob[job] = map[Health]int{HealthUp: 0, HealthDown: 0, HealthUnknown: 0}
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
	for _, rule := range LintRules {
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
	for _, js := range j.Summaries() {
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
	ch <- prometheus.MustNewConstMetric(descLag, prometheus.GaugeValue, lag.Seconds())
	j.metrics.Collect(ch)
	if j.shard != nil {
		members, _ := j.shard.Members()
		ch <- prometheus.MustNewConstMetric(descMembers, prometheus.GaugeValue, float64(len(members)))
		ch <- prometheus.MustNewConstMetric(descMChanges, prometheus.CounterValue, float64(j.shard.Changes()))
		ch <- prometheus.MustNewConstMetric(descHandover, prometheus.CounterValue, float64(j.Handovers()))
		for _, r := range []string{RoleOwned, RoleLeaving, RoleSkipped} {
			ch <- prometheus.MustNewConstMetric(descRoles, prometheus.GaugeValue, float64(roles[r]), r)
		}
	}
}
