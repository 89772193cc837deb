package main

import (
	"bufio"
	"bytes"
	"compress/gzip"
	"context"
	"flag"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/scrapeflux/scrapeflux/internal/servertest"

	"github.com/scrapeflux/scrapeflux/scrape/simulator"
)

var update = flag.Bool("update", false, "rewrite the golden files of convert telegraf")

// convert telegraf on Telegraf configurations: the config file and
// comments it prints are the golden files next to them (-update rewrites
// them), and the converted file passes check config.
func TestConvertTelegrafGolden(t *testing.T) {
	for _, name := range []string{"consul-v2", "static-v1"} {
		t.Run(name, func(t *testing.T) {
			in := filepath.Join("testdata", "telegraf", name+".conf")
			out, _, err := execute(context.Background(), "convert", "telegraf", in)
			if err != nil {
				t.Fatal(err)
			}
			golden := filepath.Join("testdata", "telegraf", name+".yml")
			if *update {
				os.WriteFile(golden, []byte(out), 0o644)
			}
			want, err := os.ReadFile(golden)
			if err != nil {
				t.Fatal(err)
			}
			if out != string(want) {
				t.Errorf("convert telegraf %s differs from %s:\n%s", in, golden, out)
			}
		})
	}
	out, _, _ := execute(context.Background(), "convert", "telegraf", filepath.Join("testdata", "telegraf", "consul-v2.conf"))
	f := filepath.Join(t.TempDir(), "scrapeflux.yml")
	os.WriteFile(f, []byte(out), 0o600)
	if _, _, err := execute(context.Background(), "check", "config", f); err != nil {
		t.Fatalf("the converted file does not pass check config: %v", err)
	}
	for _, bad := range []string{"not toml = = =", "[agent]\ninterval = \"10s\"\n"} {
		f := filepath.Join(t.TempDir(), "t.conf")
		os.WriteFile(f, []byte(bad), 0o600)
		if _, _, err := execute(context.Background(), "convert", "telegraf", f); err == nil {
			t.Errorf("%q converted without an error", bad)
		}
	}
}

// tuples explodes line protocol into measurement|tags|field keys, one per
// field, leaving out the measurements and fields named in skip.
func tuples(t *testing.T, lp string, url string, skip map[string]bool) map[string]bool {
	t.Helper()
	out := map[string]bool{}
	sc := bufio.NewScanner(strings.NewReader(lp))
	sc.Buffer(nil, 1<<20)
	for sc.Scan() {
		line := strings.ReplaceAll(sc.Text(), url, "TARGET_URL")
		if line == "" {
			continue
		}
		key, rest, _ := strings.Cut(line, " ")
		fields, _, _ := strings.Cut(rest, " ")
		m, tags, _ := strings.Cut(key, ",")
		if skip[m] {
			continue
		}
		for _, f := range strings.Split(fields, ",") {
			fk, _, _ := strings.Cut(f, "=")
			if skip[fk] {
				continue
			}
			out[m+"|"+tags+"|"+fk] = true
		}
	}
	return out
}

// capture is an InfluxDB stand-in keeping the lines written to it.
type capture struct {
	mu    sync.Mutex
	lines bytes.Buffer
}

func (c *capture) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if r.URL.Path == "/ping" {
		w.Header().Set("X-Influxdb-Version", "v2.7.12")
		w.WriteHeader(http.StatusNoContent)
		return
	}
	var body io.Reader = r.Body
	if r.Header.Get("Content-Encoding") == "gzip" {
		zr, err := gzip.NewReader(r.Body)
		if err != nil {
			http.Error(w, err.Error(), 400)
			return
		}
		body = zr
	}
	data, _ := io.ReadAll(body)
	c.mu.Lock()
	c.lines.Write(data)
	c.mu.Unlock()
	w.WriteHeader(http.StatusNoContent)
}

func (c *capture) String() string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.lines.String()
}

// A converted Telegraf configuration writes what Telegraf wrote: the same
// measurements, tag sets (url, no job or instance) and fields, for both
// metric versions, checked against Telegraf 1.39.3's own output on the
// Docker engine capture (testdata/telegraf/parity-v*.telegraf.lp). Only
// scrapeflux's own series (up, scrape_duration_seconds,
// scrape_samples_scraped) are extra.
func TestConvertTelegrafParity(t *testing.T) {
	fleet, err := simulator.StartFleet(1, 0, "docker-engine-18.09.3-ce")
	if err != nil {
		t.Fatal(err)
	}
	defer fleet.Close()
	target := fleet.URLs[0]
	for _, v := range []string{"1", "2"} {
		t.Run("metric_version="+v, func(t *testing.T) {
			cap := &capture{}
			influx := httptest.NewServer(cap)
			defer influx.Close()
			conf, _ := os.ReadFile(filepath.Join("testdata", "telegraf", "parity-v"+v+".conf"))
			conf = bytes.ReplaceAll(conf, []byte("TARGET_URL"), []byte(target))
			conf = bytes.ReplaceAll(conf, []byte("INFLUX_URL"), []byte(influx.URL))
			dir := t.TempDir()
			os.WriteFile(filepath.Join(dir, "telegraf.conf"), conf, 0o600)
			yml, _, err := execute(context.Background(), "convert", "telegraf", filepath.Join(dir, "telegraf.conf"))
			if err != nil {
				t.Fatal(err)
			}
			os.WriteFile(filepath.Join(dir, "scrapeflux.yml"), []byte(yml), 0o600)
			os.WriteFile(filepath.Join(dir, "token"), []byte("t\n"), 0o600)
			d := startDaemon(t, "run", "--config", filepath.Join(dir, "scrapeflux.yml"), "--influx-url", influx.URL,
				"--influx-org", "o", "--influx-bucket", "b", "--influx-token-file", filepath.Join(dir, "token"),
				"--listen", "", "--queue-dir", dir+"/q", "--flush-interval", "100ms")
			ours := func() map[string]bool {
				return tuples(t, cap.String(), target, map[string]bool{"up": true, "scrape_duration_seconds": true, "scrape_samples_scraped": true})
			}
			golden, _ := os.ReadFile(filepath.Join("testdata", "telegraf", "parity-v"+v+".telegraf.lp"))
			want := tuples(t, string(golden), "TARGET_URL", nil)
			servertest.WaitFor(t, "a scrape written", 30*time.Second, func() bool { return len(ours()) >= len(want) })
			d.stop(t)
			got := ours()
			var missing, extra []string
			for k := range want {
				if !got[k] {
					missing = append(missing, k)
				}
			}
			for k := range got {
				if !want[k] {
					extra = append(extra, k)
				}
			}
			sort.Strings(missing)
			sort.Strings(extra)
			if len(missing) > 0 || len(extra) > 0 {
				t.Fatalf("against Telegraf's output: %d missing, %d extra\nmissing: %s\nextra: %s", len(missing), len(extra),
					strings.Join(head(missing, 10), "\n  "), strings.Join(head(extra, 10), "\n  "))
			}
			t.Logf("metric_version %s: %d measurement/tags/field triples, all as Telegraf wrote them", v, len(want))
		})
	}
}

func head(s []string, n int) []string {
	if len(s) > n {
		return append(s[:n], fmt.Sprintf("... %d more", len(s)-n))
	}
	return s
}

// A job with a bucket of its own writes there, through its own queue and
// retries: a bucket that fails holds back no other bucket's data, its
// failures are counted apart, and what it queued arrives once it
// recovers.
func TestBucketPerJob(t *testing.T) {
	fleet, err := simulator.StartFleet(2, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer fleet.Close()
	var mu sync.Mutex
	lines := map[string]int{}
	stamps := map[int64]bool{} // the routed bucket's distinct timestamps: one a scrape
	failing := true
	influx := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/ping" {
			w.Header().Set("X-Influxdb-Version", "v2.7.12")
			w.Header().Set("X-Influxdb-Build", "OSS")
			w.WriteHeader(http.StatusNoContent)
			return
		}
		bucket := r.URL.Query().Get("bucket")
		mu.Lock()
		down := failing && bucket == "other"
		mu.Unlock()
		if down {
			w.Header().Set("Content-Type", "application/json")
			w.WriteHeader(http.StatusServiceUnavailable)
			w.Write([]byte(`{"code":"unavailable","message":"service unavailable"}`))
			return
		}
		var body io.Reader = r.Body
		if r.Header.Get("Content-Encoding") == "gzip" {
			body, _ = gzip.NewReader(r.Body)
		}
		data, _ := io.ReadAll(body)
		mu.Lock()
		lines[bucket] += bytes.Count(data, []byte("\n"))
		if bucket == "other" {
			for _, l := range bytes.Split(bytes.TrimSpace(data), []byte("\n")) {
				if ts, err := strconv.ParseInt(string(l[bytes.LastIndexByte(l, ' ')+1:]), 10, 64); err == nil {
					stamps[ts] = true
				}
			}
		}
		mu.Unlock()
		w.WriteHeader(http.StatusNoContent)
	}))
	defer influx.Close()
	dir := t.TempDir()
	cfg := filepath.Join(dir, "c.yml")
	os.WriteFile(cfg, []byte(fmt.Sprintf(`jobs:
  - job_name: main
    scrape_interval: 500ms
    static_targets: [%s]
  - job_name: routed
    scrape_interval: 500ms
    bucket: other
    static_targets: [%s]
`, fleet.URLs[0], fleet.URLs[1])), 0o600)
	listen := fmt.Sprintf("127.0.0.1:%d", servertest.FreePort(t))
	d := startDaemon(t, "run", "--config", cfg, "--influx-url", influx.URL, "--influx-bucket", "default",
		"--listen", listen, "--queue-dir", dir+"/q", "--flush-interval", "100ms", "--shutdown-timeout", "2s")
	count := func(b string) int { mu.Lock(); defer mu.Unlock(); return lines[b] }
	servertest.WaitFor(t, "the default bucket written while the other fails", 20*time.Second, func() bool { return count("default") > 1000 })
	if n := count("other"); n != 0 {
		t.Fatalf("%d lines reached the failing bucket", n)
	}
	servertest.WaitFor(t, "the failing bucket's failures counted apart", 20*time.Second, func() bool {
		_, m := httpGet(t, "http://"+listen+"/metrics")
		return strings.Contains(m, `scrapeflux_bucket_consecutive_failures{bucket="other"}`) && !strings.Contains(m, `scrapeflux_bucket_consecutive_failures{bucket="other"} 0`)
	})
	if _, err := os.Stat(filepath.Join(dir, "q", "bucket-other")); err != nil {
		t.Fatalf("the routed bucket has no queue of its own: %v", err)
	}
	// Every scrape the routed job made while its bucket failed must
	// arrive: new scrapes alone would not bring timestamps from before
	// the recovery.
	_, m := httpGet(t, "http://"+listen+"/metrics")
	queued := int(metricValue(m, `scrapeflux_scrapes_total{job="routed"}`))
	if queued < 4 {
		t.Fatalf("the routed job scraped %d times while its bucket failed", queued)
	}
	recovered := time.Now().UnixNano()
	mu.Lock()
	failing = false
	mu.Unlock()
	before := func() int {
		mu.Lock()
		defer mu.Unlock()
		n := 0
		for ts := range stamps {
			if ts < recovered {
				n++
			}
		}
		return n
	}
	servertest.WaitFor(t, "every scrape queued while the bucket failed delivered", 30*time.Second, func() bool { return before() >= queued })
	t.Logf("%d scrapes queued while the bucket failed, %d delivered after it recovered", queued, before())
	d.stop(t)
}
