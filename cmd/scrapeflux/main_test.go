package main

import (
	"bytes"
	"context"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"github.com/scrapeflux/scrapeflux/internal/servertest"
	"github.com/scrapeflux/scrapeflux/scrape/simulator"
)

func TestMain(m *testing.M) {
	// Re-executed as the scrapeflux binary by tests that need a process.
	if os.Getenv("SCRAPEFLUX_TEST_MAIN") == "1" {
		if d, err := time.ParseDuration(os.Getenv("SCRAPEFLUX_TEST_SLOW_DISK")); err == nil {
			queueFS = slowDisk{delay: d}
		}
		main()
		os.Exit(0)
	}
	goleak.VerifyTestMain(m)
}

// execute runs the root command in-process with args.
func execute(ctx context.Context, args ...string) (string, string, error) {
	var out, errb bytes.Buffer
	root := newCmdRoot(&out, &errb)
	root.SetArgs(args)
	err := root.ExecuteContext(ctx)
	return out.String(), errb.String(), err
}

func TestRunRejectsBadFlags(t *testing.T) {
	cases := []struct {
		args []string
		want string
	}{
		{[]string{"run", "--target", "http://127.0.0.1:1/metrics", "--influx-bucket", "b", "--interval", "5s", "--timeout", "10s"}, "timeout 10s must not exceed interval 5s"},
		{[]string{"run", "--influx-bucket", "b"}, "no targets: give --target URL (repeatable), --consul to discover them in Consul, --docker-swarm, --file-sd FILE, --http-sd URL, or --config FILE"},
		{[]string{"run", "--target", "http://127.0.0.1:1/metrics", "--influx-bucket", "b", "--interval", "2s", "--timeout", "3s"}, "timeout 3s must not exceed interval 2s"},
		{[]string{"run", "--target", "http://127.0.0.1:1/metrics"}, "--influx-bucket must be set"},
		{[]string{"run", "--target", "ftp://x/metrics", "--influx-bucket", "b"}, "scheme must be http or https"},
		{[]string{"run", "--target", "http://127.0.0.1:1/", "--influx-bucket", "b", "--layout", "v3"}, `unknown layout "v3"`},
		{[]string{"run", "--target", "http://127.0.0.1:1/", "--influx-bucket", "b", "--body-limit", "lots"}, "want a size"},
		{[]string{"run", "--target", "http://127.0.0.1:1/", "--influx-bucket", "b", "--influx-token-file", "/nonexistent"}, "--influx-token-file"},
		{[]string{"run", "--target", "http://127.0.0.1:1/", "--influx-bucket", "b", "--log-format", "xml"}, `--log-format "xml": want text or json`},
		{[]string{"run", "--target", "http://127.0.0.1:1/", "--influx-bucket", "b", "--log-level", "loud"}, `--log-level "loud"`},
		{[]string{"run", "--consul", "--consul-health", "sometimes", "--influx-bucket", "b"}, `consul health "sometimes"`},
		{[]string{"run", "--consul", "--consul-node-meta", "novalue", "--influx-bucket", "b"}, `--consul-node-meta "novalue": want key=value`},
		{[]string{"register", "--port", "0"}, "--port 0: want 1..65535"},
	}
	for _, tc := range cases {
		_, _, err := execute(context.Background(), tc.args...)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%v: err = %v, want %q", tc.args, err, tc.want)
		}
	}
}

// TestMessagesSayWhatToDo: each message names the flag or the fix.
func TestMessagesSayWhatToDo(t *testing.T) {
	html := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/html; charset=utf-8")
		io.WriteString(w, "<html><body>Login</body></html>")
	}))
	defer html.Close()
	empty := filepath.Join(t.TempDir(), "empty.yml")
	os.WriteFile(empty, []byte("\n"), 0o644)
	cases := []struct {
		args []string
		want string
	}{
		{[]string{"scrape", "127.0.0.1:29323/metrics"}, `has no scheme: write http://127.0.0.1:29323/metrics`},
		{[]string{"scrape", html.URL + "/metrics"}, "the target answered with a web page (text/html), not metrics: check the URL's path"},
		{[]string{"scrape", "--timeout", "0", "http://127.0.0.1:1/metrics"}, "--timeout must be positive, got 0s"},
		{[]string{"run", "--target", "http://127.0.0.1:1/metrics"}, "--influx-bucket must be set"},
		{[]string{"run", "--influx-bucket", "b"}, "--consul to discover them in Consul"},
		{[]string{"check", "config", empty}, "is empty: a config file needs at least a jobs: list"},
		{[]string{"simulate", "--capture", "nosuch"}, `--capture "nosuch" is not a capture: choose from `},
		{[]string{"run", "--consul-health", "passin", "--target", "http://127.0.0.1:1/metrics", "--influx-bucket", "b"}, "--consul-health needs --consul"},
	}
	for _, tc := range cases {
		_, _, err := execute(context.Background(), tc.args...)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%v:\n got %v\nwant %q", tc.args, err, tc.want)
		}
	}
	// A bad layout is reported once, by its flag.
	_, _, err := execute(context.Background(), "run", "--target", "http://127.0.0.1:1/", "--influx-bucket", "b", "--layout", "v3",
		"--basic-auth-user", "u", "--basic-auth-password-file", empty)
	if err == nil || strings.Count(err.Error(), "layout") != 2 || strings.Contains(err.Error(), "layout 0") {
		t.Errorf("bad layout: %v", err)
	}
	out, _, err := execute(context.Background(), "--version")
	if err != nil || !strings.HasPrefix(out, "scrapeflux ") {
		t.Errorf("--version: %q, %v", out, err)
	}
	help, _, _ := execute(context.Background(), "run", "--help")
	for _, ln := range strings.Split(help, "\n") {
		if strings.Contains(ln, "--timeout ") && strings.Count(ln, "default") != 1 {
			t.Errorf("--timeout help names its default %d times: %s", strings.Count(ln, "default"), ln)
		}
	}
}

func TestScrapeCommand(t *testing.T) {
	fleet, err := simulator.StartFleet(1, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer fleet.Close()
	out, _, err := execute(context.Background(), "scrape", fleet.URLs[0])
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(out, "engine_daemon_engine_cpus_cpus,instance=127.0.0.1:") || !strings.Contains(out, "up,instance=") {
		t.Errorf("unexpected output:\n%s", out)
	}
	_, _, err = execute(context.Background(), "scrape", "http://127.0.0.1:1/metrics")
	if err == nil || !strings.Contains(err.Error(), "connection refused") {
		t.Errorf("dead target: err = %v, want connection refused", err)
	}
}

func influxCount(t *testing.T, srv *servertest.InfluxDB, q string) map[string]int64 {
	t.Helper()
	out := map[string]int64{}
	for _, r := range srv.Query(t, "e2e", q) {
		for _, v := range r.Values {
			n, _ := v[1].(json.Number).Int64()
			out[r.Tags["instance"]] += n
		}
	}
	return out
}

// TestEndToEnd runs the daemon against three simulated engines and one dead
// target with a real InfluxDB, and checks what a query returns.
func TestEndToEnd(t *testing.T) {
	srv := servertest.StartInfluxDB(t)
	srv.CreateDB(t, "e2e")
	fleet, err := simulator.StartFleet(3, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer fleet.Close()
	dead := fmt.Sprintf("http://127.0.0.1:%d/metrics", servertest.FreePort(t))
	args := []string{"run", "--interval", "1s", "--timeout", "500ms", "--flush-interval", "200ms",
		"--influx-url", srv.URL, "--influx-bucket", "e2e", "--listen", "", "--job", "docker", "--target", dead, "--queue-dir", t.TempDir()}
	for _, u := range fleet.URLs {
		args = append(args, "--target", u)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 4500*time.Millisecond)
	defer cancel()
	if _, stderr, err := execute(ctx, args...); err != nil {
		t.Fatalf("run: %v\n%s", err, stderr)
	}

	up := influxCount(t, srv, `SELECT count(gauge) FROM up GROUP BY instance`)
	if len(up) != 4 {
		t.Fatalf("up written for %d instances, want 4: %v", len(up), up)
	}
	for inst, n := range up {
		if n < 3 || n > 5 {
			t.Errorf("%s: %d scrapes in 4.5s at 1s, want 3..5", inst, n)
		}
	}
	deadInst := strings.TrimSuffix(strings.TrimPrefix(dead, "http://"), "/metrics")
	res := srv.Query(t, "e2e", `SELECT max(gauge), min(gauge) FROM up GROUP BY instance`)
	for _, r := range res {
		maxV, minV := r.Values[0][1].(json.Number).String(), r.Values[0][2].(json.Number).String()
		want := "1"
		if r.Tags["instance"] == deadInst {
			want = "0"
		}
		if maxV != want || minV != want {
			t.Errorf("%s: up between %s and %s, want always %s", r.Tags["instance"], minV, maxV, want)
		}
	}
	// Every live engine's samples arrive, tagged; the dead one wrote none.
	cpus := influxCount(t, srv, `SELECT count(gauge) FROM engine_daemon_engine_cpus_cpus GROUP BY instance, job`)
	if len(cpus) != 3 || cpus[deadInst] != 0 {
		t.Errorf("engine_daemon_engine_cpus_cpus by instance = %v, want the 3 live engines", cpus)
	}
	for inst := range cpus {
		if cpus[inst] != up[inst] {
			t.Errorf("%s: %d points of a gauge for %d scrapes", inst, cpus[inst], up[inst])
		}
	}
	// A histogram lands as one point with count, sum and a field per bound,
	// and its counters grow from scrape to scrape.
	h := srv.Query(t, "e2e", fmt.Sprintf(`SELECT "count", "sum", "0.005", "+Inf" FROM engine_daemon_container_actions_seconds WHERE action = 'start' AND instance = '%s'`,
		strings.TrimSuffix(strings.TrimPrefix(fleet.URLs[0], "http://"), "/metrics")))
	if len(h) != 1 || len(h[0].Values) < 3 {
		t.Fatalf("histogram points: %+v", h)
	}
	first, _ := h[0].Values[0][1].(json.Number).Float64()
	last, _ := h[0].Values[len(h[0].Values)-1][1].(json.Number).Float64()
	if last <= first {
		t.Errorf("histogram count did not grow: %v -> %v", first, last)
	}
	inf, _ := h[0].Values[0][4].(json.Number).Float64()
	if inf != first {
		t.Errorf("+Inf bucket %v != count %v", inf, first)
	}
}

// TestSIGTERMFlushes runs the binary with batching that would hold every
// line, sends SIGTERM, and expects the held lines in InfluxDB.
func TestSIGTERMFlushes(t *testing.T) {
	srv := servertest.StartInfluxDB(t)
	srv.CreateDB(t, "e2e")
	fleet, err := simulator.StartFleet(2, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer fleet.Close()
	cmd := exec.Command(os.Args[0], "run", "--interval", "500ms", "--timeout", "400ms",
		"--flush-interval", "1h", "--batch-size", "10000000", "--listen", "127.0.0.1:0",
		"--influx-url", srv.URL, "--influx-bucket", "e2e", "--target", fleet.URLs[0], "--target", fleet.URLs[1], "--queue-dir", t.TempDir())
	cmd.Env = append(os.Environ(), "SCRAPEFLUX_TEST_MAIN=1")
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(10 * time.Second)
	for fleet.Targets[0].Scrapes() < 2 || fleet.Targets[1].Scrapes() < 2 {
		if time.Now().After(deadline) {
			cmd.Process.Kill()
			cmd.Wait()
			t.Fatalf("targets not scraped:\n%s", stderr.String())
		}
		time.Sleep(50 * time.Millisecond)
	}
	if n := influxCount(t, srv, `SELECT count(gauge) FROM up GROUP BY instance`); len(n) != 0 {
		t.Fatalf("points written before shutdown despite 1h flush interval: %v", n)
	}
	cmd.Process.Signal(syscall.SIGTERM)
	if err := cmd.Wait(); err != nil {
		t.Fatalf("exit: %v\n%s", err, stderr.String())
	}
	up := influxCount(t, srv, `SELECT count(gauge) FROM up GROUP BY instance`)
	if len(up) != 2 {
		t.Fatalf("after SIGTERM up points by instance = %v, want both targets\n%s", up, stderr.String())
	}
	if !strings.Contains(stderr.String(), "scrapeflux stopped") {
		t.Errorf("no clean stop logged:\n%s", stderr.String())
	}
}

// TestKill9DuringOutage: scrapeflux is killed with SIGKILL while InfluxDB
// is away; a new process on the same queue dir sends what the first one
// queued once InfluxDB is back.
func TestKill9DuringOutage(t *testing.T) {
	srv := servertest.StartInfluxDB(t)
	srv.CreateDB(t, "e2e")
	srv.Stop()
	fleet, err := simulator.StartFleet(2, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer fleet.Close()
	queue := t.TempDir()
	start := func() (*exec.Cmd, *lockedBuffer) {
		return startProcess(t, "run", "--interval", "300ms", "--timeout", "200ms",
			"--flush-interval", "50ms", "--listen", "", "--queue-dir", queue,
			"--influx-url", srv.URL, "--influx-bucket", "e2e", "--influx-timeout", "500ms",
			"--target", fleet.URLs[0], "--target", fleet.URLs[1])
	}
	first, firstErr := start()
	if !servertest.Eventually(20*time.Second, func() bool { return fleet.Targets[0].Scrapes() >= 8 && fleet.Targets[1].Scrapes() >= 8 }) {
		first.Process.Kill()
		first.Wait()
		t.Fatalf("targets not scraped 8 times in 20s:\n%s", firstErr)
	}
	first.Process.Kill()
	first.Wait()
	killedAt := fleet.Targets[0].Scrapes() + fleet.Targets[1].Scrapes()

	srv.Restart(t)
	second, stderr := start()
	upPoints := func() int {
		up := influxCount(t, srv, `SELECT count(gauge) FROM up GROUP BY instance`)
		return int(up[strings.TrimSuffix(strings.TrimPrefix(fleet.URLs[0], "http://"), "/metrics")] +
			up[strings.TrimSuffix(strings.TrimPrefix(fleet.URLs[1], "http://"), "/metrics")])
	}
	// The replay is done when InfluxDB holds as many points as there were
	// scrapes before the kill (or, if some were lost, when 20 s passed).
	servertest.Eventually(20*time.Second, func() bool { return upPoints() >= killedAt })
	second.Process.Signal(syscall.SIGTERM)
	if err := second.Wait(); err != nil {
		t.Fatalf("second run: %v\n%s", err, stderr)
	}
	total := fleet.Targets[0].Scrapes() + fleet.Targets[1].Scrapes()
	got := upPoints()
	// Per target, the scrape in flight at the kill and the last batch not
	// yet sealed (50ms) may be lost; nothing else.
	t.Logf("scrapes %d (%d before the kill), up points %d, lost %d", total, killedAt, got, total-got)
	if got < total-4 {
		t.Fatalf("InfluxDB has %d up points for %d scrapes (%d before the kill)\n%s", got, total, killedAt, stderr)
	}
	if !strings.Contains(stderr.String(), "queued data from an earlier run") {
		t.Errorf("second run did not report replaying the queue:\n%s", stderr)
	}
}

// TestKill9WhileInfluxDBSlow: InfluxDB answers, but slowly (3 s a write),
// so scrapes pile up behind the writer; scrapeflux is killed with SIGKILL.
// Everything sealed was already on disk: the next process sends it, and
// only the batch being filled and the scrapes in flight may be missing.
// A second process on the same queue dir is refused while the first runs.
func TestKill9WhileInfluxDBSlow(t *testing.T) {
	srv := servertest.StartInfluxDB(t)
	srv.CreateDB(t, "e2e")
	target, _ := url.Parse(srv.URL)
	rp := httputil.NewSingleHostReverseProxy(target)
	slow := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if strings.Contains(r.URL.Path, "write") {
			select {
			case <-time.After(3 * time.Second):
			case <-r.Context().Done():
				return
			}
		}
		rp.ServeHTTP(w, r)
	}))
	defer slow.Close()
	fleet, err := simulator.StartFleet(2, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer fleet.Close()
	queue := t.TempDir()
	start := func(influx string) (*exec.Cmd, *lockedBuffer) {
		return startProcess(t, "run", "--interval", "300ms", "--timeout", "200ms",
			"--flush-interval", "50ms", "--listen", "", "--queue-dir", queue,
			"--influx-url", influx, "--influx-bucket", "e2e", "--influx-timeout", "10s",
			"--target", fleet.URLs[0], "--target", fleet.URLs[1])
	}
	first, firstErr := start(slow.URL)
	if !servertest.Eventually(20*time.Second, func() bool { return fleet.Targets[0].Scrapes() >= 12 && fleet.Targets[1].Scrapes() >= 12 }) {
		first.Process.Kill()
		first.Wait()
		t.Fatalf("targets not scraped 12 times in 20s:\n%s", firstErr)
	}
	// A second process on the same queue dir is refused, naming the holder.
	intruder, intruderErr := start(srv.URL)
	werr := intruder.Wait()
	if werr == nil || !strings.Contains(intruderErr.String(), "in use by another process") ||
		!strings.Contains(intruderErr.String(), fmt.Sprintf("pid %d", first.Process.Pid)) {
		t.Errorf("second process on the queue dir: exit %v\n%s", werr, intruderErr)
	}
	first.Process.Kill()
	first.Wait()
	killed := fleet.Targets[0].Scrapes() + fleet.Targets[1].Scrapes()

	second, stderr := start(srv.URL)
	instances := []string{
		strings.TrimSuffix(strings.TrimPrefix(fleet.URLs[0], "http://"), "/metrics"),
		strings.TrimSuffix(strings.TrimPrefix(fleet.URLs[1], "http://"), "/metrics"),
	}
	var got int64
	servertest.Eventually(20*time.Second, func() bool {
		up := influxCount(t, srv, `SELECT count(gauge) FROM up GROUP BY instance`)
		got = up[instances[0]] + up[instances[1]]
		return got >= int64(killed)
	})
	second.Process.Signal(syscall.SIGTERM)
	if err := second.Wait(); err != nil {
		t.Fatalf("second run: %v\n%s", err, stderr)
	}
	total := fleet.Targets[0].Scrapes() + fleet.Targets[1].Scrapes()
	up := influxCount(t, srv, `SELECT count(gauge) FROM up GROUP BY instance`)
	got = up[instances[0]] + up[instances[1]]
	// Scraped before the kill but missing: per target at most the scrape in
	// flight and the 50ms batch not yet sealed.
	lost := int64(total) - got
	t.Logf("scrapes %d (%d before the kill), up points %d, lost %d", total, killed, got, lost)
	if lost > 4 {
		t.Fatalf("InfluxDB has %d up points for %d scrapes (%d before the kill): %d lost\nfirst run:\n%s\nsecond run:\n%s", got, total, killed, lost, firstErr, stderr)
	}
}

// startProcess runs scrapeflux with args as a process of its own (so a
// test can kill it with SIGKILL), its stderr kept.
func startProcess(t *testing.T, args ...string) (*exec.Cmd, *lockedBuffer) {
	t.Helper()
	cmd := exec.Command(os.Args[0], args...)
	cmd.Env = append(os.Environ(), "SCRAPEFLUX_TEST_MAIN=1")
	stderr := &lockedBuffer{}
	cmd.Stderr = stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	return cmd, stderr
}

// scrape takes the same TLS and authentication flags as run, so it
// reaches every target run can.
func TestScrapeCommandTLSAndAuth(t *testing.T) {
	const token = "scrape-token-31d"
	srv := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Header.Get("Authorization") != "Bearer "+token {
			http.Error(w, "unauthorized", http.StatusUnauthorized)
			return
		}
		io.WriteString(w, "# TYPE secret_gauge gauge\nsecret_gauge 7\n")
	}))
	defer srv.Close()
	dir := t.TempDir()
	ca := filepath.Join(dir, "ca.pem")
	os.WriteFile(ca, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: srv.Certificate().Raw}), 0o600)
	tok := filepath.Join(dir, "token")
	os.WriteFile(tok, []byte(token+"\n"), 0o600)
	out, _, err := execute(context.Background(), "scrape", "--tls-ca-file", ca, "--bearer-token-file", tok, srv.URL+"/metrics")
	if err != nil || !strings.Contains(out, "secret_gauge,") {
		t.Fatalf("scrape with TLS and a bearer token: %v\n%s", err, out)
	}
	if strings.Contains(out, token) {
		t.Fatal("the token is in the output")
	}
	if _, _, err := execute(context.Background(), "scrape", "--tls-ca-file", ca, srv.URL+"/metrics"); err == nil || !strings.Contains(err.Error(), "401") {
		t.Fatalf("without the token: %v", err)
	}
}

// Native histograms, asked for with PrometheusProto, are written as
// histogram lines with a field per bucket bound, sum and count; without
// it the same exporter serves text and its classic buckets.
func TestNativeHistogramsOverProtobuf(t *testing.T) {
	reg := prometheus.NewRegistry()
	h := prometheus.NewHistogram(prometheus.HistogramOpts{
		Name: "request_seconds", Help: "Request latency.",
		NativeHistogramBucketFactor: 2, NativeHistogramZeroThreshold: 0.001,
	})
	reg.MustRegister(h)
	for _, v := range []float64{0.003, 0.3, 0.3, 3} {
		h.Observe(v)
	}
	srv := httptest.NewServer(promhttp.HandlerFor(reg, promhttp.HandlerOpts{}))
	defer srv.Close()
	out, _, err := execute(context.Background(), "scrape", "--scrape-protocols", "PrometheusProto,PrometheusText0.0.4", srv.URL)
	if err != nil {
		t.Fatal(err)
	}
	var line string
	for _, l := range strings.Split(out, "\n") {
		if strings.HasPrefix(l, "request_seconds,") {
			line = l
		}
	}
	// Buckets of a factor of 2 (schema 0): (2^-9,2^-8], (0.25,0.5], (2,4];
	// cumulative counts at their upper bounds.
	for _, f := range []string{"0.00390625=1,", "0.5=3,", "4=4,", "+Inf=4,", "count=4", "sum=3.60"} {
		if !strings.Contains(line, f) {
			t.Fatalf("native histogram line lacks %s:\n%s", f, out)
		}
	}
	// The text formats cannot carry native buckets: only +Inf, sum and
	// count of this native-only histogram arrive.
	out, _, err = execute(context.Background(), "scrape", srv.URL)
	if err != nil || !strings.Contains(out, " +Inf=4,") || strings.Contains(out, "0.5=") {
		t.Fatalf("text: %v\n%s", err, out)
	}
}

// A queue dir on a read-only filesystem (a real tmpfs remounted ro) stops
// run at start with a message that names the dir, says it is read-only
// and what to do.
func TestReadOnlyQueueDirStartMessage(t *testing.T) {
	mnt := t.TempDir()
	if out, err := exec.Command("mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", mnt).CombinedOutput(); err != nil {
		servertest.Unavailable(t, "cannot mount a tmpfs (needs root): %v: %s", err, out)
	}
	t.Cleanup(func() { exec.Command("umount", "-l", mnt).Run() })
	if out, err := exec.Command("mount", "-o", "remount,ro", mnt).CombinedOutput(); err != nil {
		t.Fatalf("remount ro: %v: %s", err, out)
	}
	dir := filepath.Join(mnt, "queue")
	_, _, err := execute(context.Background(), "run", "--target", "http://127.0.0.1:1/metrics", "--influx-url", "http://127.0.0.1:1",
		"--influx-bucket", "b", "--listen", "", "--queue-dir", dir)
	if err == nil {
		t.Fatal("run started on a read-only queue dir")
	}
	for _, want := range []string{dir, "read-only", "--queue-dir"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("start message %q lacks %q", err, want)
		}
	}
}
