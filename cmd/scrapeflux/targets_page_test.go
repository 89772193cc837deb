package main

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/scrapeflux/scrapeflux/scrape/scrapetest"
	"github.com/scrapeflux/scrapeflux/sink/influxtest"
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
	if os.Getenv("CI") != "" {
		t.Fatal("chromium not found (CI=true: the /targets page test must run; make test installs it)")
	}
	t.Skip("chromium not found: install Debian's chromium package")
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
	srv := influxtest.Start(t)
	srv.CreateDB(t, "page")
	fleet, err := scrapetest.StartFleet(2, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer fleet.Close()
	const secret = "s3cr3t-token-value"
	dir := t.TempDir()
	tokenFile := filepath.Join(dir, "token")
	os.WriteFile(tokenFile, []byte(secret), 0o600)
	dead := fmt.Sprintf("http://127.0.0.1:%d/metrics", influxtest.FreePort(t))
	cfg := filepath.Join(dir, "c.yml")
	os.WriteFile(cfg, []byte(fmt.Sprintf(`jobs:
  - job_name: engines
    scrape_interval: 1s
    bearer_token_file: %s
    static_targets: [%s, %s, %s]
`, tokenFile, fleet.URLs[0], fleet.URLs[1], dead)), 0o644)
	listen := fmt.Sprintf("127.0.0.1:%d", influxtest.FreePort(t))
	d := startDaemon(t, "run", "--config", cfg, "--influx-url", srv.URL, "--influx-bucket", "page",
		"--listen", listen, "--queue-dir", t.TempDir(), "--log-level", "debug")
	defer d.cancel()
	waitUntil(t, "every target scraped", 15*time.Second, func() bool {
		resp, err := http.Get("http://" + listen + "/targets?format=json")
		if err != nil {
			return false
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		return strings.Count(string(b), `"Health":"up"`) == 2 && strings.Count(string(b), `"Health":"down"`) == 1
	})
	dom := string(headless(t, bin, "--dump-dom", "http://"+listen+"/targets"))
	if n := strings.Count(dom, `<tr class="up">`); n != 2 {
		t.Errorf("%d rows in state up, want 2:\n%s", n, dom)
	}
	if n := strings.Count(dom, `<tr class="down">`); n != 1 {
		t.Errorf("%d rows in state down, want 1", n)
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
