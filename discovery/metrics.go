package discovery

import (
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// The Consul requests scrapeflux makes, as labelled in its metrics.
const (
	queryCatalog  = "catalog services" // blocking
	queryHealth   = "health state"     // blocking
	queryMembers  = "cluster members"  // blocking
	queryInstance = "health service"   // one per service at each refresh, not blocking
)

// queryMetrics records Consul requests, errors and, for the requests that
// do not block, latency: a blocking query's duration is mostly its wait.
type queryMetrics struct {
	requests *prometheus.CounterVec
	errors   *prometheus.CounterVec
	duration *prometheus.HistogramVec
}

var consulQueryDuration = newQueryMetrics()

func newQueryMetrics() queryMetrics {
	m := queryMetrics{
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "scrapeflux_consul_requests_total",
			Help: "Requests to Consul, by query (blocking queries included).",
		}, []string{"query"}),
		errors: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "scrapeflux_consul_query_errors_total",
			Help: "Consul requests that failed, by query.",
		}, []string{"query"}),
		duration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "scrapeflux_consul_query_duration_seconds",
			Help:    "Duration of Consul requests that do not block (the per-service reads of a refresh), by query.",
			Buckets: []float64{0.001, 0.005, 0.02, 0.1, 0.5, 2, 10},
		}, []string{"query"}),
	}
	// Every series exists from the start, so a rate over it works before
	// the first error.
	for _, q := range []string{queryCatalog, queryHealth, queryMembers, queryInstance} {
		m.requests.WithLabelValues(q)
		m.errors.WithLabelValues(q)
	}
	m.duration.WithLabelValues(queryInstance)
	return m
}

func (m queryMetrics) observe(query string, d time.Duration, err error) {
	m.requests.WithLabelValues(query).Inc()
	if query == queryInstance {
		m.duration.WithLabelValues(query).Observe(d.Seconds())
	}
	if err != nil {
		m.errors.WithLabelValues(query).Inc()
	}
}

// consulSkipped counts Consul instances read and not scraped (no port, a
// scheme or address that makes no URL), each time they are read.
var consulSkipped = prometheus.NewCounter(prometheus.CounterOpts{
	Name: "scrapeflux_consul_skipped_instances_total",
	Help: "Consul instances read but not scraped (no port, a bad scheme or address), counted at each read; the log names each once.",
})

// Collectors returns the package's self-metrics for registration.
func Collectors() []prometheus.Collector {
	return []prometheus.Collector{consulQueryDuration.requests, consulQueryDuration.errors, consulQueryDuration.duration, consulSkipped}
}
