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

// Metrics are discovery's own metrics: the Consul requests it makes and
// the instances it reads and cannot scrape. cmd makes one set and hands
// it to every Consul connection (ConsulConfig.Metrics); a connection
// without one counts nothing.
type Metrics struct {
	requests *prometheus.CounterVec
	errors   *prometheus.CounterVec
	duration *prometheus.HistogramVec
	skipped  prometheus.Counter
}

// NewMetrics makes a set of discovery's metrics, every query's series
// present from the start so that a rate over it works before the first
// error.
func NewMetrics() *Metrics {
	m := &Metrics{
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "scrapeflux_consul_requests_total",
			Help: "Requests to Consul, by query (blocking queries included).",
		}, []string{"query"}),
		errors: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "scrapeflux_consul_query_errors_total",
			Help: "Consul requests that failed, by query.",
		}, []string{"query"}),
		// Latency only of the requests that do not block: a blocking
		// query's duration is mostly its wait.
		duration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "scrapeflux_consul_query_duration_seconds",
			Help:    "Duration of Consul requests that do not block (the per-service reads of a refresh), by query.",
			Buckets: []float64{0.001, 0.005, 0.02, 0.1, 0.5, 2, 10},
		}, []string{"query"}),
		// Counted at each read; the log names each instance once.
		skipped: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "scrapeflux_consul_skipped_instances_total",
			Help: "Consul instances read but not scraped (no port, a bad scheme or address), counted at each read; the log names each once.",
		}),
	}
	for _, q := range []string{queryCatalog, queryHealth, queryMembers, queryInstance} {
		m.requests.WithLabelValues(q)
		m.errors.WithLabelValues(q)
	}
	m.duration.WithLabelValues(queryInstance)
	return m
}

func (m *Metrics) observe(query string, d time.Duration, err error) {
	if m == nil {
		return
	}
	m.requests.WithLabelValues(query).Inc()
	if query == queryInstance {
		m.duration.WithLabelValues(query).Observe(d.Seconds())
	}
	if err != nil {
		m.errors.WithLabelValues(query).Inc()
	}
}

func (m *Metrics) skip() {
	if m != nil {
		m.skipped.Inc()
	}
}

// Describe implements prometheus.Collector.
func (m *Metrics) Describe(ch chan<- *prometheus.Desc) {
	for _, c := range []prometheus.Collector{m.requests, m.errors, m.duration, m.skipped} {
		c.Describe(ch)
	}
}

// Collect implements prometheus.Collector.
func (m *Metrics) Collect(ch chan<- prometheus.Metric) {
	for _, c := range []prometheus.Collector{m.requests, m.errors, m.duration, m.skipped} {
		c.Collect(ch)
	}
}
