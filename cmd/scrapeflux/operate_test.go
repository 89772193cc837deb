package main

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"io"
	"log/slog"
	"math/big"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hashicorp/consul/api"

	"github.com/scrapeflux/scrapeflux/discovery"
	"github.com/scrapeflux/scrapeflux/internal/servertest"
	"github.com/scrapeflux/scrapeflux/scrape"
	"github.com/scrapeflux/scrapeflux/scrape/simulator"
	"github.com/scrapeflux/scrapeflux/sink"
)

// scrapeTimes records when each simulated target was scraped.
type scrapeTimes struct {
	mu    sync.Mutex
	times map[int][]time.Time
}

func (s *scrapeTimes) wrap(i int, h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		s.mu.Lock()
		s.times[i] = append(s.times[i], time.Now())
		s.mu.Unlock()
		h.ServeHTTP(w, r)
	})
}

func (s *scrapeTimes) get(i int) []time.Time {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]time.Time(nil), s.times[i]...)
}

// TestConfigRelabelAndReload runs the daemon from a config file against
// real Consul and InfluxDB: target relabeling drops a canary by its Consul
// meta and renames a tag, metric relabeling drops series by name; then a
// reload changes one job's interval while the other job's loops keep their
// schedule, and a bad config is rejected with the old one kept.
func TestConfigRelabelAndReload(t *testing.T) {
	agent := servertest.StartConsul(t, servertest.ConsulOptions{})
	srv := servertest.StartInfluxDB(t)
	srv.CreateDB(t, "cfg")
	st := &scrapeTimes{times: map[int][]time.Time{}}
	capture := simulator.Captures()["docker-engine-18.09.3-ce"]
	var urls []string
	for i := 0; i < 3; i++ {
		s := httptest.NewServer(st.wrap(i, simulator.NewTarget(capture, i)))
		defer s.Close()
		urls = append(urls, s.URL+"/metrics")
	}
	passing := &api.AgentServiceCheck{TTL: "1h", Status: api.HealthPassing}
	agent.Register(t, "e0", "docker-engine", urls[0], []string{"prometheus"}, map[string]string{"role": "worker"}, passing)
	agent.Register(t, "e1", "docker-engine", urls[1], []string{"prometheus"}, map[string]string{"role": "canary"}, passing)

	cfgFile := filepath.Join(t.TempDir(), "scrapeflux.yml")
	writeCfg := func(staticInterval string) {
		cfg := fmt.Sprintf(`jobs:
  - job_name: engines
    scrape_interval: 1s
    consul:
      services: [docker-engine]
    relabel_configs:
      - source_labels: [__meta_consul_service_metadata_role]
        regex: canary
        action: drop
      - source_labels: [__meta_consul_node]
        target_label: host
      - regex: node
        action: labeldrop
    metric_relabel_configs:
      - source_labels: [__name__]
        regex: go_.*
        action: drop
  - job_name: static
    scrape_interval: %s
    static_targets: [%s]
`, staticInterval, urls[2])
		if err := os.WriteFile(cfgFile, []byte(cfg), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	writeCfg("1s")
	listen := fmt.Sprintf("127.0.0.1:%d", servertest.FreePort(t))
	d := startDaemon(t, "run", "--web-enable-reload", "--config", cfgFile, "--consul-addr", agent.Addr, "--consul-wait", "5s",
		"--flush-interval", "100ms", "--influx-url", srv.URL, "--influx-bucket", "cfg",
		"--listen", listen, "--queue-dir", t.TempDir())
	defer d.cancel()

	servertest.WaitFor(t, "both jobs scraped", 15*time.Second, func() bool { return len(st.get(0)) >= 3 && len(st.get(2)) >= 3 })
	if n := len(st.get(1)); n != 0 {
		t.Errorf("canary dropped by relabeling was scraped %d times", n)
	}
	// Tags renamed, series dropped by name: as InfluxDB returns them.
	hosts := srv.Query(t, "cfg", `SHOW TAG VALUES FROM up WITH KEY = "host"`)
	if len(hosts) == 0 || len(hosts[0].Values) != 1 {
		t.Errorf("host tag values: %+v", hosts)
	}
	if nodes := srv.Query(t, "cfg", `SHOW TAG VALUES FROM up WITH KEY = "node"`); len(nodes) != 0 {
		t.Errorf("node tag still written: %+v", nodes)
	}
	if goSeries := srv.Query(t, "cfg", `SHOW MEASUREMENTS WITH MEASUREMENT =~ /^go_/ WHERE "job" = 'engines'`); len(goSeries) != 0 {
		t.Errorf("go_* measurements written despite metric relabeling: %+v", goSeries)
	}
	if other := srv.Query(t, "cfg", `SHOW MEASUREMENTS WITH MEASUREMENT =~ /^engine_daemon/ WHERE "job" = 'engines'`); len(other) == 0 {
		t.Error("engine_daemon_* measurements missing")
	}

	post := func() (int, string) {
		resp, err := http.Post("http://"+listen+"/-/reload", "", nil)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b)
	}
	// Reload with the static job at 2s; the engines job is unchanged, so its
	// loop (and its scrape count on /targets) goes on.
	scrapesOf := func(job string) int64 {
		resp, err := http.Get("http://" + listen + "/targets?format=json")
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		var rows []targetRow
		if err := json.NewDecoder(resp.Body).Decode(&rows); err != nil {
			t.Fatal(err)
		}
		for _, r := range rows {
			if r.Job == job {
				return r.Scrapes
			}
		}
		return -1
	}
	engineBefore, staticBefore := scrapesOf("engines"), scrapesOf("static")
	reloadAt := time.Now()
	writeCfg("2s")
	if code, body := post(); code != http.StatusOK {
		t.Fatalf("reload: %d %s", code, body)
	}
	// Watch the changed job's target until the new loop has scraped it
	// three times at its new interval.
	scrapedSince := func(from time.Time) int {
		n := 0
		for _, ts := range st.get(2) {
			if ts.After(from) {
				n++
			}
		}
		return n
	}
	servertest.WaitFor(t, "the changed job scraped 3 times at its new interval", 20*time.Second, func() bool { return scrapedSince(reloadAt.Add(2*time.Second)) >= 3 })
	elapsed := time.Since(reloadAt)
	if after := scrapesOf("engines"); after < engineBefore+int64(elapsed/time.Second)-1 {
		t.Errorf("unchanged job's loop restarted or stalled: %d scrapes before reload, %d after %s", engineBefore, after, elapsed.Round(time.Second))
	}
	// The new loop at 2s has made about elapsed/2s scrapes; the old one at
	// 1s would count on from where it was.
	if after := scrapesOf("static"); after > int64(elapsed/(2*time.Second))+1 {
		t.Errorf("changed job's loop was not restarted: %d scrapes before reload, %d after %s", staticBefore, after, elapsed.Round(time.Second))
	}
	engine := st.get(0)
	for i := 1; i < len(engine); i++ {
		if gap := engine[i].Sub(engine[i-1]); gap > 1900*time.Millisecond {
			t.Errorf("unchanged job's target had a %s gap between scrapes (interval 1s)", gap)
		}
	}
	var after []time.Time
	for _, ts := range st.get(2) {
		if ts.After(reloadAt.Add(2 * time.Second)) {
			after = append(after, ts)
		}
	}
	for i := 1; i < len(after); i++ {
		if gap := after[i].Sub(after[i-1]); gap < 1500*time.Millisecond {
			t.Errorf("changed job still scraped every %s after reload, want 2s", gap)
		}
	}
	if len(after) < 1 {
		t.Error("changed job not scraped after reload")
	}

	// A bad config is rejected; the running one goes on.
	os.WriteFile(cfgFile, []byte("jobs:\n  - job_name: x\n    scrape_interval: 1s\n    scrape_timeout: 5s\n    static_targets: [http://127.0.0.1:1/]\n"), 0o644)
	if code, body := post(); code != http.StatusBadRequest || !strings.Contains(body, "must not exceed interval") {
		t.Errorf("bad reload answered %d %q", code, body)
	}
	before := len(st.get(0))
	servertest.WaitFor(t, "scraping goes on after a rejected reload", 5*time.Second, func() bool { return len(st.get(0)) > before })
	resp, err := http.Get("http://" + listen + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	metrics, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if !strings.Contains(string(metrics), "scrapeflux_config_last_reload_successful 0") {
		t.Error("failed reload not exposed as scrapeflux_config_last_reload_successful 0")
	}
	d.stop(t)
}

// TestTLSTarget scrapes a target served over TLS with a test CA, and fails
// clearly with the wrong CA.
func TestTLSTarget(t *testing.T) {
	target := httptest.NewTLSServer(simulator.NewTarget(simulator.Captures()["docker-engine-18.09.3-ce"], 0))
	defer target.Close()
	dir := t.TempDir()
	writeCA := func(name string, s *httptest.Server) string {
		p := filepath.Join(dir, name)
		pemBytes := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: s.Certificate().Raw})
		if err := os.WriteFile(p, pemBytes, 0o644); err != nil {
			t.Fatal(err)
		}
		return p
	}
	good, wrong := writeCA("good.pem", target), filepath.Join(dir, "wrong.pem")
	if err := os.WriteFile(wrong, otherCA(t), 0o644); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		ca      string
		wantErr string
	}{{good, ""}, {wrong, "certificate signed by unknown authority"}} {
		cfg := filepath.Join(dir, "c.yml")
		os.WriteFile(cfg, []byte(fmt.Sprintf("jobs:\n  - job_name: tls\n    static_targets: [%s/metrics]\n    tls_config:\n      ca_file: %s\n      server_name: example.com\n", target.URL, tc.ca)), 0o644)
		specs, err := loadConfig(cfg, defaultConsulForTest(), nil)
		if err != nil {
			t.Fatal(err)
		}
		out, err := scrapeSpec(t, specs[0])
		if tc.wantErr == "" {
			if err != nil || !strings.Contains(out, "engine_daemon_engine_info") {
				t.Errorf("good CA: err %v, output %.200s", err, out)
			}
		} else if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
			t.Errorf("wrong CA: err = %v, want %q", err, tc.wantErr)
		}
	}
}

func defaultConsulForTest() discovery.ConsulConfig { return discovery.DefaultConsulConfig() }

func scrapeSpec(t *testing.T, spec scrape.JobSpec) (string, error) {
	t.Helper()
	tg, err := discovery.NewTarget((*spec.Sources[0].(*discovery.StaticConfig))[0], spec.Name)
	if err != nil {
		t.Fatal(err)
	}
	var buf bytes.Buffer
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	err = scrapeOnceTo(context.Background(), spec.Scrape, sink.ConvertOptions{Layout: sink.LayoutV1}, tg, &buf, log)
	return buf.String(), err
}

// otherCA is a self-signed CA certificate that signed nothing we serve.
func otherCA(t *testing.T) []byte {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(7),
		Subject:               pkix.Name{CommonName: "other test CA"},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(time.Hour),
		IsCA:                  true,
		BasicConstraintsValid: true,
		KeyUsage:              x509.KeyUsageCertSign,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})
}

// TestReloadRereadsInfluxToken: the token file is read again on reload and
// later writes carry the new token.
func TestReloadRereadsInfluxToken(t *testing.T) {
	var mu sync.Mutex
	seen := map[string]bool{}
	influx := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.Copy(io.Discard, r.Body)
		if r.URL.Path != "/ping" { // writes only: /ping is asked before the listener is up
			mu.Lock()
			seen[r.Header.Get("Authorization")] = true
			mu.Unlock()
		}
		w.WriteHeader(http.StatusNoContent)
	}))
	defer influx.Close()
	fleet, err := simulator.StartFleet(1, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer fleet.Close()
	dir := t.TempDir()
	tokenFile := filepath.Join(dir, "token")
	os.WriteFile(tokenFile, []byte("first-token\n"), 0o600)
	listen := fmt.Sprintf("127.0.0.1:%d", servertest.FreePort(t))
	d := startDaemon(t, "run", "--target", fleet.URLs[0], "--interval", "300ms", "--flush-interval", "50ms",
		"--influx-url", influx.URL, "--influx-bucket", "b", "--influx-token-file", tokenFile,
		"--web-enable-reload", "--listen", listen, "--queue-dir", t.TempDir())
	defer d.cancel()
	has := func(h string) func() bool {
		return func() bool { mu.Lock(); defer mu.Unlock(); return seen[h] }
	}
	servertest.WaitFor(t, "writes with the first token", 10*time.Second, has("Token first-token"))
	os.WriteFile(tokenFile, []byte("second-token\n"), 0o600)
	resp, err := http.Post("http://"+listen+"/-/reload", "", nil)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("reload: %s", resp.Status)
	}
	servertest.WaitFor(t, "writes with the second token", 10*time.Second, has("Token second-token"))
	d.stop(t)
	if strings.Contains(d.stderr, "first-token") || strings.Contains(d.stderr, "second-token") {
		t.Error("token in the logs")
	}
}

func httpGet(t *testing.T, url string) (int, string) {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		return 0, err.Error()
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

// TestWriteFailuresVisible: InfluxDB 1.8 with authentication refuses the
// token. /readyz turns not ready once writes have failed past the
// threshold and says what to do, /metrics counts the failures, and the log
// says it once (not per attempt) with what to do.
func TestWriteFailuresVisible(t *testing.T) {
	srv := servertest.StartInfluxDBWithAuth(t, "admin", "right")
	srv.CreateDB(t, "e2e")
	fleet, err := simulator.StartFleet(1, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer fleet.Close()
	tokenFile := filepath.Join(t.TempDir(), "token")
	os.WriteFile(tokenFile, []byte("admin:wrong\n"), 0o600)
	listen := fmt.Sprintf("127.0.0.1:%d", servertest.FreePort(t))
	d := startDaemon(t, "run", "--target", fleet.URLs[0], "--interval", "300ms", "--flush-interval", "50ms",
		"--influx-url", srv.URL, "--influx-bucket", "e2e", "--influx-token-file", tokenFile,
		"--ready-write-timeout", "1s", "--shutdown-timeout", "1s", "--listen", listen, "--queue-dir", t.TempDir())
	var body string
	servertest.WaitFor(t, "/readyz reports the failing writes", 15*time.Second, func() bool {
		var code int
		code, body = httpGet(t, "http://"+listen+"/readyz")
		return code == http.StatusServiceUnavailable && strings.Contains(body, "no write to InfluxDB")
	})
	for _, want := range []string{"401", "check the token file"} {
		if !strings.Contains(body, want) {
			t.Errorf("/readyz does not say %q: %s", want, body)
		}
	}
	_, metrics := httpGet(t, "http://"+listen+"/metrics")
	for _, want := range []string{`scrapeflux_influx_writes_total{outcome="failed"}`, "scrapeflux_influx_consecutive_failures", "scrapeflux_influx_last_write_timestamp_seconds 0",
		"scrapeflux_influx_write_duration_seconds_bucket", `scrapeflux_influx_write_answers_total{status="204"} 0`} {
		if !strings.Contains(metrics, want) {
			t.Errorf("/metrics lacks %s", want)
		}
	}
	if strings.Contains(metrics, `scrapeflux_influx_consecutive_failures 0`) {
		t.Error("consecutive failures shown as 0")
	}
	if strings.Contains(metrics, `scrapeflux_influx_write_answers_total{status="401"} 0`) || !strings.Contains(metrics, `scrapeflux_influx_write_answers_total{status="401"}`) {
		t.Error("the 401 answers are not counted by status")
	}
	d.stop(t)
	if n := strings.Count(d.stderr, "cannot write to InfluxDB"); n != 1 {
		t.Errorf("%d failure lines, want 1 while the failure lasts under a minute:\n%s", n, d.stderr)
	}
	if !strings.Contains(d.stderr, "check the token file") {
		t.Errorf("the log does not say what to do:\n%s", d.stderr)
	}
	if strings.Contains(d.stderr, "wrong") {
		t.Error("the password is in the log")
	}
}

// TestTelegrafStyleFlags: --tag adds a tag to every point, --url-tag
// writes the target URL as Telegraf's url tag, and --bearer-token-file
// authenticates the --target targets.
func TestTelegrafStyleFlags(t *testing.T) {
	srv := servertest.StartInfluxDB(t)
	srv.CreateDB(t, "tg")
	target := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Header.Get("Authorization") != "Bearer engine-token" {
			http.Error(w, "unauthorized", http.StatusUnauthorized)
			return
		}
		io.WriteString(w, "# TYPE engine_x gauge\nengine_x 7\n")
	}))
	defer target.Close()
	tokenFile := filepath.Join(t.TempDir(), "bearer")
	os.WriteFile(tokenFile, []byte("engine-token\n"), 0o600)
	d := startDaemon(t, "run", "--target", target.URL+"/metrics", "--interval", "300ms", "--flush-interval", "50ms",
		"--tag", "env=prod", "--tag", "dc=eu1", "--url-tag", "url", "--bearer-token-file", tokenFile,
		"--influx-url", srv.URL, "--influx-bucket", "tg", "--listen", "", "--queue-dir", t.TempDir())
	servertest.WaitFor(t, "points of engine_x", 10*time.Second, func() bool { return srv.Count(t, "tg", "engine_x", "gauge") > 0 })
	d.stop(t)
	res := srv.Query(t, "tg", `SELECT last(gauge) FROM engine_x GROUP BY *`)
	if len(res) != 1 {
		t.Fatalf("series: %+v", res)
	}
	tags := res[0].Tags
	if tags["env"] != "prod" || tags["dc"] != "eu1" || tags["url"] != target.URL+"/metrics" {
		t.Errorf("tags %v, want env=prod dc=eu1 url=%s/metrics", tags, target.URL)
	}
	if strings.Contains(d.stderr, "engine-token") {
		t.Error("bearer token in the logs")
	}
}
