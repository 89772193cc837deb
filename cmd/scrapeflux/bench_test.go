package main

import (
	"context"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sync/errgroup"

	"github.com/scrapeflux/scrapeflux/discovery"
	"github.com/scrapeflux/scrapeflux/scrape"
	"github.com/scrapeflux/scrapeflux/scrape/simulator"
	"github.com/scrapeflux/scrapeflux/sink"
)

func cpuTime() time.Duration {
	var ru syscall.Rusage
	syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// BenchmarkPipeline runs the whole pipeline in-process — simulated engines
// on loopback, the scrape pool, the sink and a loopback InfluxDB stand-in
// that discards what it gets — until b.N samples are written, and reports
// samples per CPU-second. The simulated engines run in the same process, so
// their cost is included: the figure is a lower bound for scrapeflux alone.
func BenchmarkPipeline(b *testing.B) {
	const targets = 50
	fleet, err := simulator.StartFleet(targets, 0)
	if err != nil {
		b.Fatal(err)
	}
	defer fleet.Close()
	var reqs atomic.Int64
	influx := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.Copy(io.Discard, r.Body)
		reqs.Add(1)
		w.WriteHeader(http.StatusNoContent)
	}))
	defer influx.Close()
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	w, err := sink.NewInfluxWriter(sink.InfluxConfig{URL: influx.URL, Bucket: "b", Timeout: 10 * time.Second})
	if err != nil {
		b.Fatal(err)
	}
	defer w.Close()
	cfg := sink.DefaultConfig()
	cfg.QueueDir = b.TempDir()
	snk, err := sink.New(cfg, w, log)
	if err != nil {
		b.Fatal(err)
	}
	pool, err := scrape.NewPool(scrape.Config{Interval: 200 * time.Millisecond, Timeout: 200 * time.Millisecond, BodyLimit: 50 << 20}, snk, log)
	if err != nil {
		b.Fatal(err)
	}
	static, err := discovery.NewStatic("bench", fleet.URLs)
	if err != nil {
		b.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	g, gctx := errgroup.WithContext(ctx)
	ch := make(chan []discovery.Target)
	g.Go(func() error { return static.Run(gctx, ch) })
	g.Go(func() error { defer snk.Close(); return pool.Run(gctx, ch) })
	g.Go(func() error { return snk.Run(gctx) })

	// Warm up: every target scraped twice, so caches are filled.
	deadline := time.Now().Add(2 * time.Minute)
	for snk.Stats().Written < int64(2*targets*300) {
		if time.Now().After(deadline) {
			b.Fatal("pipeline did not warm up within 2 minutes")
		}
		time.Sleep(10 * time.Millisecond)
	}
	b.ResetTimer()
	start, cpu0, w0 := time.Now(), cpuTime(), snk.Stats().Written
	deadline = time.Now().Add(5 * time.Minute)
	for snk.Stats().Written-w0 < int64(b.N) {
		if time.Now().After(deadline) {
			b.Fatalf("only %d of %d samples written within 5 minutes", snk.Stats().Written-w0, b.N)
		}
		time.Sleep(5 * time.Millisecond)
	}
	cpu := cpuTime() - cpu0
	written := snk.Stats().Written - w0
	wall := time.Since(start)
	b.StopTimer()
	cancel()
	if err := g.Wait(); err != nil {
		b.Fatal(err)
	}
	b.ReportMetric(float64(written)/cpu.Seconds(), "samples/cpu-s")
	b.ReportMetric(float64(written)/wall.Seconds(), "samples/s")
}
