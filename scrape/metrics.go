package scrape

import "github.com/prometheus/client_golang/prometheus"

var scrapeDuration = prometheus.NewHistogram(prometheus.HistogramOpts{
	Name:    "scrapeflux_scrape_duration_seconds",
	Help:    "Duration of scrapes (fetch, parse and convert), successful or not.",
	Buckets: []float64{0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10},
})

// Collectors returns the package's self-metrics for registration.
func Collectors() []prometheus.Collector {
	return []prometheus.Collector{scrapeDuration}
}
