package scrape

import (
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"syscall"
	"testing"
	"time"
)

// BenchmarkFetch fetches and inflates a gzip'd body of 1,000 series from
// a loopback server, through each target's own connection (direct) and
// through the shared http.Transport (client), and reports the process CPU
// per scrape (the in-process server's share included, the same in both).
// Back to back, and paced: 8 targets each scraped every 50 ms, so that the
// process goes idle between scrapes as the daemon does (b.N scrapes in
// all; -benchtime 800x takes 5 s).
func BenchmarkFetch(b *testing.B) {
	var sb strings.Builder
	for i := 0; i < 1000; i++ {
		fmt.Fprintf(&sb, "engine_daemon_generic_%d_total{container=\"c%05d\",image=\"registry.example.com/team/app:%d\",node=\"swarm1\"} %d\n", i/20, i%20, i%7, i*7919)
	}
	zbody := gzipped(b, sb.String())
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/plain; version=0.0.4")
		w.Header().Set("Content-Encoding", "gzip")
		w.Write(zbody)
	}))
	defer srv.Close()
	cfg := testConfig()
	const loops, every = 8, 50 * time.Millisecond
	for _, paced := range []bool{false, true} {
		for _, direct := range []bool{true, false} {
			name := map[bool]string{true: "direct", false: "client"}[direct]
			if paced {
				name += "/paced"
			}
			b.Run(name, func(b *testing.B) {
				client, err := NewHTTPClient(cfg)
				if err != nil {
					b.Fatal(err)
				}
				defer client.CloseIdleConnections()
				n := 1
				if paced {
					n = loops
				}
				fs := make([]*fetcher, n)
				for i := range fs {
					if fs[i], err = newFetcher(client, srv.URL, cfg); err != nil {
						b.Fatal(err)
					}
					defer fs[i].close()
					if !direct {
						fs[i].direct = nil
					}
				}
				errs := make(chan error, n)
				b.ResetTimer()
				cpu0 := cpuTime()
				for i, f := range fs {
					go func() {
						var err error
						for j := i; j < b.N && err == nil; j += n {
							if paced {
								time.Sleep(every)
							}
							var body []byte
							if body, _, err = f.fetch(context.Background(), "10"); err == nil && len(body) != sb.Len() {
								err = fmt.Errorf("%d bytes, want %d", len(body), sb.Len())
							}
							f.release()
						}
						errs <- err
					}()
				}
				for range fs {
					if err := <-errs; err != nil {
						b.Fatal(err)
					}
				}
				b.ReportMetric(float64((cpuTime()-cpu0).Microseconds())/float64(b.N), "cpu-us/scrape")
			})
		}
	}
}

// cpuTime is the CPU time the process has used, user and system.
func cpuTime() time.Duration {
	var ru syscall.Rusage
	_ = syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}
