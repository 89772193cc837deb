package main

import (
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/scrapeflux/scrapeflux/internal/servertest"
)

// inventor is a target that puts a new ID in a label on every scrape
// (1,000 new series each time, for its first `inventing` scrapes) beside
// 100 series that never change.
type inventor struct {
	scrapes   atomic.Int64
	inventing int64
}

func (v *inventor) ServeHTTP(w http.ResponseWriter, _ *http.Request) {
	n := v.scrapes.Add(1)
	w.Header().Set("Content-Type", "text/plain; version=0.0.4")
	var b strings.Builder
	b.WriteString("# HELP stable A series that stays.\n# TYPE stable gauge\n")
	for i := 0; i < 100; i++ {
		fmt.Fprintf(&b, "stable{k=\"%d\"} %d\n", i, n)
	}
	if n <= v.inventing {
		b.WriteString("# HELP churn A label with a request ID in it.\n# TYPE churn gauge\n")
		for i := 0; i < 1000; i++ {
			fmt.Fprintf(&b, "churn{id=\"%08x-0000-4000-8000-%012x\"} 1\n", n, i)
		}
	}
	_, _ = w.Write([]byte(b.String()))
}

// metricValue reads one sample of the text exposition (series as
// written, labels included); -1 when it is not there.
func metricValue(text, series string) float64 {
	m := regexp.MustCompile(`(?m)^` + regexp.QuoteMeta(series) + ` (\S+)$`).FindStringSubmatch(text)
	if m == nil {
		return -1
	}
	v, _ := strconv.ParseFloat(m[1], 64)
	return v
}

// TestSeriesLimitRealInfluxDB is the cardinality promise against a real
// InfluxDB 1.8: a target inventing 1,000 series a scrape, limited to
// 2,000, adds at most 2,000 series while its 100 stable series keep
// arriving every scrape; what is held back is counted by reason and
// shown on /targets with the label that explodes, and the lint names it.
func TestSeriesLimitRealInfluxDB(t *testing.T) {
	srv := servertest.StartInfluxDB(t)
	srv.CreateDB(t, "card")
	inv := &inventor{inventing: 10}
	target := httptest.NewServer(inv)
	defer target.Close()
	listen := fmt.Sprintf("127.0.0.1:%d", servertest.FreePort(t))
	d := startDaemon(t, "run", "--target", target.URL+"/metrics", "--interval", "500ms", "--flush-interval", "100ms",
		"--series-limit", "2000", "--lint-interval", "400ms",
		"--influx-url", srv.URL, "--influx-bucket", "card", "--listen", listen, "--queue-dir", t.TempDir())
	// While it invents, the lint names the label and the kind of values.
	servertest.WaitFor(t, "the lint's finding on /targets and in /metrics", 20*time.Second, func() bool {
		_, js := httpGet(t, "http://"+listen+"/targets?format=json")
		var rows []targetRow
		if json.Unmarshal([]byte(js), &rows) != nil || len(rows) != 1 || rows[0].Lint == nil {
			return false
		}
		f, ok := rows[0].Lint.Finding("unbounded_label_value")
		if !ok {
			return false
		}
		if !strings.Contains(f.Example, `id="`) || !strings.Contains(f.Example, "(UUID)") {
			t.Fatalf("unbounded example %q", f.Example)
		}
		_, m := httpGet(t, "http://"+listen+"/metrics")
		return metricValue(m, `scrapeflux_lint_findings{rule="unbounded_label_value"}`) >= 1 &&
			metricValue(m, `scrapeflux_lint_targets{rule="unbounded_label_value"}`) == 1
	})
	if inv.scrapes.Load() > inv.inventing {
		t.Fatalf("the lint's finding was seen only after the target stopped inventing")
	}
	// Ten scrapes invent 10,000 series; the next ones show only the
	// stable ones.
	servertest.WaitFor(t, "fourteen scrapes", 30*time.Second, func() bool { return inv.scrapes.Load() >= 14 })
	var row targetRow
	servertest.WaitFor(t, "the scrapes' lines written", 10*time.Second, func() bool {
		_, m := httpGet(t, "http://"+listen+"/metrics")
		return metricValue(m, "scrapeflux_queued_samples") == 0
	})
	_, m := httpGet(t, "http://"+listen+"/metrics")
	_, js := httpGet(t, "http://"+listen+"/targets?format=json")
	var rows []targetRow
	if err := json.Unmarshal([]byte(js), &rows); err != nil || len(rows) != 1 {
		t.Fatalf("/targets: %v %s", err, js)
	}
	row = rows[0]
	d.stop(t)

	// 100 stable series and the first 1,900 invented ones fill the limit.
	const admitted = 1900
	card := srv.Query(t, "card", `SHOW SERIES EXACT CARDINALITY FROM churn`)
	if len(card) != 1 || len(card[0].Values) != 1 {
		t.Fatalf("cardinality: %+v", card)
	}
	if n, _ := card[0].Values[0][0].(json.Number).Int64(); n != admitted {
		t.Errorf("InfluxDB holds %d series of churn, want %d (limit 2000 less the 100 stable ones)", n, admitted)
	}
	up := srv.Query(t, "card", `SELECT count(gauge) FROM up`)
	if len(up) != 1 {
		t.Fatalf("up: %+v", up)
	}
	ups, _ := up[0].Values[0][1].(json.Number).Int64()
	if ups < 14 {
		t.Fatalf("%d scrapes written, want at least 14", ups)
	}
	stable := srv.Query(t, "card", `SELECT count(gauge) FROM stable GROUP BY k`)
	if len(stable) != 100 {
		t.Fatalf("%d stable series written, want 100", len(stable))
	}
	for _, r := range stable {
		if n, _ := r.Values[0][1].(json.Number).Int64(); n != ups {
			t.Errorf("stable k=%s: %d points for %d scrapes", r.Tags["k"], n, ups)
		}
	}
	// Every sample of a held-back series is counted, by reason.
	const heldBack = 10*1000 - admitted
	if v := metricValue(m, `scrapeflux_samples_dropped_total{reason="series_limit"}`); v != heldBack {
		t.Errorf("dropped series_limit = %v, want %d", v, heldBack)
	}
	if row.SeriesLimit != 2000 || row.SeriesHeldBack != heldBack || row.Series != 2000 || row.Health != "up" {
		t.Errorf("/targets row: limit %d, held back %d, series %d, health %s", row.SeriesLimit, row.SeriesHeldBack, row.Series, row.Health)
	}
	if v := metricValue(m, `scrapeflux_series{kind="all"}`); v != 2000 {
		t.Errorf(`scrapeflux_series{kind="all"} = %v, want 2000`, v)
	}
	if v := metricValue(m, "scrapeflux_series_limited_targets"); v != 1 {
		t.Errorf("scrapeflux_series_limited_targets = %v, want 1", v)
	}
	if len(row.WidestLabels) == 0 || row.WidestLabels[0].Name != "id" {
		t.Errorf("widest labels %+v, want id first", row.WidestLabels)
	}
	// The last lint, of a scrape with stable series only, is clean.
	if row.Lint == nil || len(row.Lint.Findings) != 0 {
		t.Errorf("last lint %+v", row.Lint)
	}
	if v := metricValue(m, `scrapeflux_lint_findings{rule="unbounded_label_value"}`); v != 0 {
		t.Errorf("lint_findings unbounded_label_value = %v after the target stopped inventing", v)
	}
}

// TestJobSeriesBudgetRealInfluxDB: a job's own max_hourly_series bounds
// the new series of that job only: a noisy job inventing 5,000 series is
// held at its budget while a quiet job's 2,000 new series all reach a
// real InfluxDB 1.8 under a global budget the noisy one would have spent.
// What was held back is counted by job and shown on /targets.
func TestJobSeriesBudgetRealInfluxDB(t *testing.T) {
	srv := servertest.StartInfluxDB(t)
	srv.CreateDB(t, "jobs")
	noisy, quiet := &inventor{inventing: 5}, &inventor{inventing: 2}
	nt, qt := httptest.NewServer(noisy), httptest.NewServer(quiet)
	defer nt.Close()
	defer qt.Close()
	dir := t.TempDir()
	cfg := filepath.Join(dir, "c.yml")
	os.WriteFile(cfg, []byte(fmt.Sprintf(`jobs:
  - job_name: noisy
    scrape_interval: 300ms
    max_hourly_series: 1500
    static_targets: [%s/metrics]
  - job_name: quiet
    scrape_interval: 300ms
    static_targets: [%s/metrics]
`, nt.URL, qt.URL)), 0o600)
	listen := fmt.Sprintf("127.0.0.1:%d", servertest.FreePort(t))
	d := startDaemon(t, "run", "--config", cfg, "--max-hourly-series", "4000", "--flush-interval", "100ms",
		"--influx-url", srv.URL, "--influx-bucket", "jobs", "--listen", listen, "--queue-dir", dir+"/q")
	servertest.WaitFor(t, "both targets done inventing", 30*time.Second, func() bool { return noisy.scrapes.Load() > 6 && quiet.scrapes.Load() > 3 })
	servertest.WaitFor(t, "the scrapes' lines written", 10*time.Second, func() bool {
		_, m := httpGet(t, "http://"+listen+"/metrics")
		return metricValue(m, "scrapeflux_queued_samples") == 0
	})
	_, m := httpGet(t, "http://"+listen+"/metrics")
	_, page := httpGet(t, "http://"+listen+"/targets")
	d.stop(t)

	churn := func(job string) int {
		return len(srv.Query(t, "jobs", `SELECT count(gauge) FROM churn WHERE job='`+job+`' GROUP BY id`))
	}
	if n := churn("quiet"); n != 2000 {
		t.Errorf("the quiet job has %d churn series in InfluxDB, want all 2,000", n)
	}
	// The budget is a Bloom filter: past it, about 0.06 % of the series
	// offered pass for known ones (2 of the 3,600 here, on average).
	admitted := churn("noisy")
	if admitted == 0 || admitted > 1500-100+10 {
		t.Errorf("the noisy job has %d churn series in InfluxDB, want some, within its budget of 1,500 less its 100 stable series (and the filter's few)", admitted)
	}
	if v := metricValue(m, `scrapeflux_job_samples_dropped_total{job="noisy",reason="series_budget"}`); v != float64(5000-admitted) {
		t.Errorf("noisy job's dropped samples %v, want the %d churn samples not admitted", v, 5000-admitted)
	}
	if v := metricValue(m, `scrapeflux_job_samples_dropped_total{job="quiet",reason="series_budget"}`); v != 0 {
		t.Errorf("quiet job's dropped samples %v, want 0", v)
	}
	if u, l := metricValue(m, `scrapeflux_job_series_budget{job="noisy",kind="used",window="hour"}`), metricValue(m, `scrapeflux_job_series_budget{job="noisy",kind="limit",window="hour"}`); u != 1500 || l != 1500 {
		t.Errorf("noisy job's budget %v of %v, want 1500 of 1500", u, l)
	}
	if want := fmt.Sprintf("series budget: 1500 of 1500 new series this hour, %d samples of new series held back", 5000-admitted); !strings.Contains(page, want) {
		t.Errorf("/targets does not say %q", want)
	}
	t.Logf("noisy job: %d of 5,000 churn series admitted under its budget of 1,500; quiet job: all 2,000", admitted)
}
