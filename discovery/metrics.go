package discovery

import (
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// queryMetrics records Consul query latency and errors.
type queryMetrics struct {
	duration *prometheus.HistogramVec
	errors   *prometheus.CounterVec
}

var consulQueryDuration = queryMetrics{
	duration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
		Name:    "scrapeflux_consul_query_duration_seconds",
		Help:    "Duration of Consul queries (blocking ones included), by query.",
		Buckets: []float64{0.005, 0.02, 0.1, 0.5, 2, 10, 40},
	}, []string{"query"}),
	errors: prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "scrapeflux_consul_query_errors_total",
		Help: "Consul queries that failed, by query.",
	}, []string{"query"}),
}

func (m queryMetrics) observe(query string, d time.Duration, err error) {
	m.duration.WithLabelValues(query).Observe(d.Seconds())
	if err != nil {
		m.errors.WithLabelValues(query).Inc()
	}
}

// Collectors returns the package's self-metrics for registration.
func Collectors() []prometheus.Collector {
	return []prometheus.Collector{consulQueryDuration.duration, consulQueryDuration.errors}
}
