package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/scrapeflux/scrapeflux/internal/servertest"
	"github.com/scrapeflux/scrapeflux/scrape/simulator"
)

// chromium finds the headless browser the Makefile installs; under CI a
// missing one fails the test.
func chromium(t *testing.T) string {
	t.Helper()
	for _, name := range []string{"chromium", "chromium-browser"} {
		if p, err := exec.LookPath(name); err == nil {
			return p
		}
	}
	servertest.Unavailable(t, "chromium not found: install Debian's chromium package (make test does it)")
	return ""
}

func headless(t *testing.T, bin string, args ...string) []byte {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	base := []string{"--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
		"--disable-background-networking", "--disable-component-update", "--disable-sync",
		"--user-data-dir=" + t.TempDir()}
	out, err := exec.CommandContext(ctx, bin, append(base, args...)...).Output()
	if err != nil {
		t.Fatalf("chromium %v: %v", args, err)
	}
	return out
}

// TestTargetsPageInChromium loads /targets in headless Chromium during a
// run with live and dead targets and asserts the rows and their states;
// the screenshot is kept as a test artifact. Secrets must not show.
func TestTargetsPageInChromium(t *testing.T) {
	bin := chromium(t)
	srv := servertest.StartInfluxDB(t)
	srv.CreateDB(t, "page")
	fleet, err := simulator.StartFleet(2, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer fleet.Close()
	const secret = "s3cr3t-token-value"
	dir := t.TempDir()
	tokenFile := filepath.Join(dir, "token")
	os.WriteFile(tokenFile, []byte(secret), 0o600)
	dead := fmt.Sprintf("http://127.0.0.1:%d/metrics", servertest.FreePort(t))
	cfg := filepath.Join(dir, "c.yml")
	os.WriteFile(cfg, []byte(fmt.Sprintf(`jobs:
  - job_name: engines
    scrape_interval: 1s
    bearer_token_file: %s
    static_targets: [%s, %s, %s]
`, tokenFile, fleet.URLs[0], fleet.URLs[1], dead)), 0o644)
	listen := fmt.Sprintf("127.0.0.1:%d", servertest.FreePort(t))
	d := startDaemon(t, "run", "--config", cfg, "--influx-url", srv.URL, "--influx-bucket", "page",
		"--listen", listen, "--queue-dir", t.TempDir(), "--log-level", "debug")
	defer d.cancel()
	servertest.WaitFor(t, "every target scraped", 15*time.Second, func() bool {
		resp, err := http.Get("http://" + listen + "/targets?format=json")
		if err != nil {
			return false
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		return strings.Count(string(b), `"health":"up"`) == 2 && strings.Count(string(b), `"health":"down"`) == 1
	})
	dom := string(headless(t, bin, "--dump-dom", "http://"+listen+"/targets"))
	if n := strings.Count(dom, `<tr class="up">`); n != 2 {
		t.Errorf("%d rows in state up, want 2:\n%s", n, dom)
	}
	if n := strings.Count(dom, `<tr class="down">`); n != 1 {
		t.Errorf("%d rows in state down, want 1", n)
	}
	// The engines' expositions break no lint rule; the dead target has
	// no lint.
	if n := strings.Count(dom, `<td class="lint">clean</td>`); n != 2 {
		t.Errorf("%d lint cells say clean, want 2", n)
	}
	if !strings.Contains(dom, "connection refused") || !strings.Contains(dom, "<td>engines</td>") {
		t.Errorf("page lacks the dead target's error or the job:\n%s", dom)
	}
	shot := filepath.Join(os.TempDir(), "scrapeflux-targets.png")
	if a := os.Getenv("SCRAPEFLUX_ARTIFACTS"); a != "" {
		shot = filepath.Join(a, "targets.png")
	}
	headless(t, bin, "--screenshot="+shot, "--window-size=1400,400", "http://"+listen+"/targets")
	if st, err := os.Stat(shot); err != nil || st.Size() < 1000 {
		t.Errorf("no screenshot at %s: %v", shot, err)
	} else {
		t.Logf("screenshot of /targets: %s", shot)
	}
	resp, err := http.Get("http://" + listen + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	metrics, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	for _, want := range []string{"scrapeflux_scrape_duration_seconds_count", "scrapeflux_samples_written_total",
		`scrapeflux_samples_dropped_total{reason="non_finite"}`, `scrapeflux_targets{health="down"} 1`, "scrapeflux_queued_bytes", "go_goroutines"} {
		if !strings.Contains(string(metrics), want) {
			t.Errorf("/metrics lacks %s", want)
		}
	}
	d.stop(t)
	for where, text := range map[string]string{"/targets": dom, "/metrics": string(metrics), "logs": d.stderr} {
		if strings.Contains(text, secret) {
			t.Errorf("bearer token shown in %s", where)
		}
	}
}

// TestTargetsPageAt5000 renders /targets in headless Chromium with 5,000
// targets in two jobs, a tenth of them down: the page holds one page of
// rows, the job summary counts them all, and the state, job and search
// filters and the JSON work. The render time is logged and a screenshot
// kept as a test artifact.
func TestTargetsPageAt5000(t *testing.T) {
	bin := chromium(t)
	metrics := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if strings.HasSuffix(r.URL.Path, "0") {
			http.Error(w, "engine unavailable", http.StatusServiceUnavailable)
			return
		}
		io.WriteString(w, "# TYPE x gauge\nx 1\n")
	}))
	defer metrics.Close()
	influx := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.Copy(io.Discard, r.Body)
		w.WriteHeader(http.StatusNoContent)
	}))
	defer influx.Close()
	var cfg strings.Builder
	cfg.WriteString("jobs:\n")
	for _, job := range []string{"engines-a", "engines-b"} {
		fmt.Fprintf(&cfg, "  - job_name: %s\n    scrape_interval: 10s\n    static_targets:\n", job)
		for i := 0; i < 2500; i++ {
			fmt.Fprintf(&cfg, "      - %s/%s/%d\n", metrics.URL, job, i)
		}
	}
	file := filepath.Join(t.TempDir(), "c.yml")
	os.WriteFile(file, []byte(cfg.String()), 0o644)
	listen := fmt.Sprintf("127.0.0.1:%d", servertest.FreePort(t))
	d := startDaemon(t, "run", "--config", file, "--influx-url", influx.URL, "--influx-bucket", "b",
		"--listen", listen, "--queue-dir", t.TempDir())
	defer d.stop(t)
	var rows []targetRow
	get := func(query string) []targetRow {
		resp, err := http.Get("http://" + listen + "/targets?format=json" + query)
		if err != nil {
			return nil
		}
		defer resp.Body.Close()
		rows = nil
		json.NewDecoder(resp.Body).Decode(&rows)
		return rows
	}
	// Every target known (discovery runs after the listener is up), then
	// every one scraped once.
	servertest.WaitFor(t, "every target scraped once", 60*time.Second, func() bool {
		if len(get("")) != 5000 {
			return false
		}
		return get("&state=unknown") != nil && len(rows) == 0
	})

	start := time.Now()
	dom := string(headless(t, bin, "--dump-dom", "http://"+listen+"/targets"))
	t.Logf("/targets with 5000 targets: %d bytes of DOM, loaded and dumped by Chromium in %s", len(dom), time.Since(start).Round(time.Millisecond))
	for _, want := range []string{"4500 up, 500 down", "5000 in all", "showing 1-200 (page 1 of 25)", ">engines-a</a>", ">engines-b</a>", `http-equiv="refresh" content="10"`, "InfluxDB writes:"} {
		if !strings.Contains(dom, want) {
			t.Errorf("page lacks %q", want)
		}
	}
	if n := strings.Count(dom, `<td class="state">`); n != pageSize {
		t.Errorf("%d target rows on a page, want %d", n, pageSize)
	}
	down := string(headless(t, bin, "--dump-dom", "http://"+listen+"/targets?state=down&job=engines-b"))
	if !strings.Contains(down, "250 matching in job engines-b") || strings.Count(down, `<tr class="down"><td>engines-b</td>`) != 200 || strings.Contains(down, `<tr class="up"><td>`) {
		t.Errorf("state and job filter: %.3000s", down)
	}
	one := string(headless(t, bin, "--dump-dom", "http://"+listen+"/targets?q=engines-a/2321"))
	if !strings.Contains(one, "1 matching") || !strings.Contains(one, "/engines-a/2321") {
		t.Errorf("search: %.3000s", one)
	}
	shot := filepath.Join(os.TempDir(), "scrapeflux-targets-5000.png")
	if a := os.Getenv("SCRAPEFLUX_ARTIFACTS"); a != "" {
		shot = filepath.Join(a, "targets-5000.png")
	}
	headless(t, bin, "--screenshot="+shot, "--window-size=1400,1000", "http://"+listen+"/targets?state=down")
	if st, err := os.Stat(shot); err != nil || st.Size() < 1000 {
		t.Errorf("no screenshot at %s: %v", shot, err)
	}

	resp, err := http.Get("http://" + listen + "/targets?format=json")
	if err != nil {
		t.Fatal(err)
	}
	var raw []map[string]any
	json.NewDecoder(resp.Body).Decode(&raw)
	resp.Body.Close()
	if len(raw) != 5000 {
		t.Fatalf("JSON has %d targets, want 5000", len(raw))
	}
	for _, k := range []string{"url", "job", "instance", "tags", "health", "last_scrape", "duration_seconds", "scrapes", "failures", "last_error", "interval_seconds"} {
		if _, ok := raw[0][k]; !ok {
			t.Errorf("JSON lacks %q: %v", k, raw[0])
		}
	}
	_, body := httpGet(t, "http://"+listen+"/targets?format=json&q=nothing-matches")
	if strings.TrimSpace(body) != "[]" {
		t.Errorf("no match gives %q, want []", body)
	}
}
