package scrape

import "github.com/prometheus/client_golang/prometheus"

var scrapeDuration = prometheus.NewHistogram(prometheus.HistogramOpts{
	Name:    "scrapeflux_scrape_duration_seconds",
	Help:    "Duration of scrapes (fetch, parse and convert), successful or not.",
	Buckets: []float64{0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10},
})

// Counters of scrapes by job. They only go up: a target that goes away
// keeps what it counted, and a job's series stays after its last target.
var (
	scrapesTotal = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "scrapeflux_scrapes_total",
		Help: "Scrapes run, by job.",
	}, []string{"job"})
	scrapeFailures = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "scrapeflux_scrape_failures_total",
		Help: "Scrapes that failed, by job.",
	}, []string{"job"})
	// By kind, over every job: the kinds are few, the jobs may be many
	// (one per Consul service).
	scrapeFailureKinds = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "scrapeflux_scrape_failure_kinds_total",
		Help: "Scrapes that failed, by kind: timeout, refused, reset, dns, tls, http_status, body_limit, sample_limit, label_limit, parse, other.",
	}, []string{"kind"})
	scrapesSkipped = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "scrapeflux_scrapes_skipped_total",
		Help: "Scrape intervals skipped because a scrape overran, by job.",
	}, []string{"job"})
)

// loopMetrics are a loop's children of the counters, looked up once.
type loopMetrics struct {
	scrapes, failures, skipped prometheus.Counter
}

func newLoopMetrics(job string) loopMetrics {
	return loopMetrics{scrapes: scrapesTotal.WithLabelValues(job), failures: scrapeFailures.WithLabelValues(job), skipped: scrapesSkipped.WithLabelValues(job)}
}

func init() {
	for _, k := range []string{FailTimeout, FailRefused, FailReset, FailDNS, FailTLS, FailHTTPStatus, FailBodyLimit, FailSampleLimit, FailLabelLimit, FailParse, FailOther} {
		scrapeFailureKinds.WithLabelValues(k)
	}
}

// Collectors returns the package's self-metrics for registration.
func Collectors() []prometheus.Collector {
	return []prometheus.Collector{scrapeDuration, scrapesTotal, scrapeFailures, scrapeFailureKinds, scrapesSkipped}
}
