package main

import (
	"context"
	"flag"
	"fmt"
	"io/fs"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/scrapeflux/scrapeflux/discovery"
	"github.com/scrapeflux/scrapeflux/scrape"
	"github.com/scrapeflux/scrapeflux/sink"
	"github.com/scrapeflux/scrapeflux/sink/schema"
)

var updateMetrics = flag.Bool("update-metrics", false, "rewrite testdata/metrics.golden from what /metrics exposes")

// TestSelfMetricNames lists every self-metric family /metrics exposes with
// its labels (the cluster's included: the manager runs as a replica) and
// compares it with testdata/metrics.golden: dashboards and alerts depend
// on the names, so a rename or a lost label fails here. Every name the
// README's Self-monitoring section gives must be among them.
func TestSelfMetricNames(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		fmt.Fprintln(w, "# TYPE up_metric gauge\nup_metric 1")
	}))
	defer srv.Close()
	w, err := sink.NewInfluxWriter(sink.InfluxConfig{URL: "http://127.0.0.1:1", Bucket: "db", Timeout: time.Second})
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	cfg := sink.DefaultConfig()
	// The InfluxDB 3 schema guard's metrics, as after a held sample.
	cfg.Schema = schema.NewCatalog(schema.Limits{})
	cfg.Schema.Activate("Core")
	cfg.Schema.Database("db").Hold("t", 1, "a new table would pass the server's limit of 2000 tables", "job=j")
	def, err := sink.New(cfg, w, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	router := sink.NewRouter(def, nil, slog.New(slog.DiscardHandler))
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	shard := scrape.NewShard("a", 1)
	shard.SetMembers([]string{"a"})
	m := scrape.NewManager(ctx, router, shard, discovery.DefaultConsulConfig(), slog.New(slog.DiscardHandler))
	defer m.Stop()
	st := discovery.StaticConfig{srv.URL + "/metrics"}
	if _, _, _, err := m.Apply([]scrape.JobSpec{{Name: "j", Scrape: scrape.Config{Interval: time.Second, Timeout: time.Second, BodyLimit: 1 << 20, JobName: "j", MaxHourlySeries: 10},
		Sources: []discovery.Config{&st}}}); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(10 * time.Second)
	for ts := m.Targets(); len(ts) == 0 || ts[0].Health != scrape.HealthUp; ts = m.Targets() {
		if time.Now().After(deadline) {
			t.Fatal("target not up in 10s")
		}
		time.Sleep(20 * time.Millisecond)
	}
	mfs, err := selfMetrics(m, router, w, discovery.NewMetrics(), &reloader{}).Gather()
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	names := map[string]bool{}
	for _, mf := range mfs {
		if !strings.HasPrefix(mf.GetName(), "scrapeflux_") {
			continue
		}
		names[mf.GetName()] = true
		var labels []string
		for _, lp := range mf.GetMetric()[0].GetLabel() {
			labels = append(labels, lp.GetName())
		}
		sort.Strings(labels)
		got = append(got, fmt.Sprintf("%s %s {%s}", mf.GetName(), strings.ToLower(mf.GetType().String()), strings.Join(labels, ",")))
	}
	sort.Strings(got)
	const golden = "testdata/metrics.golden"
	if *updateMetrics {
		if err := os.WriteFile(golden, []byte(strings.Join(got, "\n")+"\n"), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	want, err := os.ReadFile(golden)
	if err != nil {
		t.Fatal(err)
	}
	wantLines := strings.Split(strings.TrimSpace(string(want)), "\n")
	for _, l := range wantLines {
		if !slices.Contains(got, l) {
			t.Errorf("/metrics lost %s", l)
		}
	}
	for _, l := range got {
		if !slices.Contains(wantLines, l) {
			t.Errorf("/metrics has %s, not in %s (run with -update-metrics and document it)", l, golden)
		}
	}
	readme, err := os.ReadFile("../../README.md")
	if err != nil {
		t.Fatal(err)
	}
	var missing []string
	section := string(readme)
	if i := strings.Index(section, "## Self-monitoring"); i >= 0 {
		section = section[i:]
		if j := strings.Index(section[3:], "\n## "); j >= 0 {
			section = section[:j+3]
		}
	}
	for _, n := range regexp.MustCompile("`(scrapeflux_[a-z0-9_]+)").FindAllStringSubmatch(section, -1) {
		if !names[n[1]] && !strings.HasSuffix(n[1], "_") { // scrapeflux_bucket_*: a prefix
			missing = append(missing, n[1])
		}
	}
	if len(missing) > 0 {
		t.Errorf("the README's Self-monitoring names metrics /metrics does not expose: %v", missing)
	}
}

// Every test and benchmark the README names as the source of a promise or
// a figure exists (a renamed or removed test fails here, not silently in
// the README), and a subtest it names is one its test runs by that name.
func TestREADMENamesExistingTests(t *testing.T) {
	readme, err := os.ReadFile("../../README.md")
	if err != nil {
		t.Fatal(err)
	}
	defined := map[string]bool{}
	err = filepath.WalkDir("../..", func(path string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() || !strings.HasSuffix(path, "_test.go") {
			return err
		}
		src, err := os.ReadFile(path)
		if err != nil {
			return err
		}
		for _, m := range regexp.MustCompile(`(?m)^func ((?:Test|Benchmark|Fuzz)\w+)\(`).FindAllSubmatch(src, -1) {
			defined[string(m[1])] = true
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	named := regexp.MustCompile(`\b((?:Test|Benchmark|Fuzz)[A-Z]\w*)`).FindAllSubmatch(readme, -1)
	if len(named) < 40 {
		t.Fatalf("the README names %d tests; the pattern is broken", len(named))
	}
	var missing []string
	for _, m := range named {
		if n := string(m[1]); !defined[n] && !slices.Contains(missing, n) {
			missing = append(missing, n)
		}
	}
	if len(missing) > 0 {
		t.Errorf("the README names tests that do not exist: %v", missing)
	}
}
