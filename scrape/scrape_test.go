package scrape

import (
	"bytes"
	"compress/gzip"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/prometheus/common/model"
	"github.com/prometheus/prometheus/model/labels"
	"github.com/prometheus/prometheus/model/relabel"
	"go.uber.org/goleak"
	"gopkg.in/yaml.v3"

	"github.com/scrapeflux/scrapeflux/discovery"

	"github.com/scrapeflux/scrapeflux/internal/servertest"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

var discard = slog.New(slog.NewTextHandler(io.Discard, nil))

// recorded is one sample as an appender saw it.
type recorded struct {
	name, family string
	typ          model.MetricType
	labels       string
	value        float64
	ts           int64
}

// recorder is an Appender keeping committed scrapes.
type recorder struct {
	mu        sync.Mutex
	pending   []recorded
	commits   [][]recorded
	rollbacks int
	lset      labels.Labels
}

func (r *recorder) Append(s *Sample) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	s.Labels(&r.lset)
	r.pending = append(r.pending, recorded{string(s.Name), string(s.Family), s.Type, r.lset.String(), s.Value, s.Timestamp})
	return nil
}

func (r *recorder) Commit() error {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.commits = append(r.commits, r.pending)
	r.pending = nil
	return nil
}

func (r *recorder) Rollback() {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.pending = nil
	r.rollbacks++
}

func (r *recorder) last() []recorded {
	r.mu.Lock()
	defer r.mu.Unlock()
	if len(r.commits) == 0 {
		return nil
	}
	return r.commits[len(r.commits)-1]
}

func (r *recorder) Appender([]Tag, AppendOptions) Appender { return r }

func value(rs []recorded, name string) (float64, bool) {
	for _, r := range rs {
		if r.name == name {
			return r.value, true
		}
	}
	return 0, false
}

func testConfig() Config {
	return Config{Interval: time.Second, Timeout: 500 * time.Millisecond, BodyLimit: 1 << 20}
}

func scrapeOnce(t *testing.T, cfg Config, url string) ([]recorded, error) {
	t.Helper()
	tg, err := discovery.NewTarget(url, "test")
	if err != nil {
		t.Fatal(err)
	}
	r := &recorder{}
	_, err = ScrapeOnce(context.Background(), cfg, tg, r, discard)
	if len(r.commits) != 1 {
		t.Fatalf("want exactly one commit, got %d", len(r.commits))
	}
	return r.last(), err
}

const body = `# HELP http_requests_total Requests.
# TYPE http_requests_total counter
http_requests_total{code="200",method="get"} 1027 1395066363000
http_requests_total{code="400",method="post"} 3
# TYPE rpc_duration_seconds summary
rpc_duration_seconds{quantile="0.5"} 4773
rpc_duration_seconds_sum 1.7560473e+07
rpc_duration_seconds_count 2693
# TYPE req_seconds histogram
req_seconds_bucket{le="0.1"} 1
req_seconds_bucket{le="+Inf"} 2
req_seconds_sum 0.3
req_seconds_count 2
no_type_metric 7
`

func TestScrapeParsesFamiliesAndSynthetics(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if !strings.Contains(r.Header.Get("Accept"), "text/plain;version=0.0.4") {
			t.Errorf("Accept header %q does not offer the text format", r.Header.Get("Accept"))
		}
		w.Header().Set("Content-Type", "text/plain; version=0.0.4")
		io.WriteString(w, body)
	}))
	defer srv.Close()
	got, err := scrapeOnce(t, testConfig(), srv.URL+"/metrics")
	if err != nil {
		t.Fatal(err)
	}
	want := map[string][2]string{ // name -> family, type
		"http_requests_total":      {"http_requests_total", "counter"},
		"rpc_duration_seconds":     {"rpc_duration_seconds", "summary"},
		"rpc_duration_seconds_sum": {"rpc_duration_seconds", "summary"},
		"req_seconds_bucket":       {"req_seconds", "histogram"},
		"req_seconds_count":        {"req_seconds", "histogram"},
		"no_type_metric":           {"no_type_metric", "unknown"},
		"up":                       {"up", "gauge"},
	}
	seen := map[string]bool{}
	for _, r := range got {
		if w, ok := want[r.name]; ok {
			seen[r.name] = true
			if r.family != w[0] || string(r.typ) != w[1] {
				t.Errorf("%s: family %s type %s, want %s %s", r.name, r.family, r.typ, w[0], w[1])
			}
		}
	}
	for n := range want {
		if !seen[n] {
			t.Errorf("sample %s missing", n)
		}
	}
	if n, _ := value(got, "scrape_samples_scraped"); n != 10 {
		t.Errorf("scrape_samples_scraped = %v, want 10", n)
	}
	if up, _ := value(got, "up"); up != 1 {
		t.Errorf("up = %v, want 1", up)
	}
	// Without honor_timestamps the exposed timestamp is replaced.
	for _, r := range got {
		if r.ts == 1395066363000 {
			t.Errorf("exposed timestamp kept without HonorTimestamps")
		}
	}
	cfg := testConfig()
	cfg.HonorTimestamps = true
	got, err = scrapeOnce(t, cfg, srv.URL+"/metrics")
	if err != nil {
		t.Fatal(err)
	}
	if got[0].ts != 1395066363000 {
		t.Errorf("HonorTimestamps: ts = %d, want 1395066363000", got[0].ts)
	}
}

func TestScrapeFailuresWriteOnlyUpZero(t *testing.T) {
	big := strings.Repeat("a_metric 1\n", 20000) // 220 KB
	var gz bytes.Buffer
	zw := gzip.NewWriter(&gz)
	zw.Write([]byte(big))
	zw.Close()
	cases := []struct {
		name    string
		handler http.HandlerFunc
		cfg     func(*Config)
		errText string
	}{
		{"non-200", func(w http.ResponseWriter, r *http.Request) {
			http.Error(w, "nope", http.StatusServiceUnavailable)
		}, nil, "503"},
		{"parse error mid-body", func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Content-Type", "text/plain; version=0.0.4")
			io.WriteString(w, "good 1\nalso_good 2\nbad{ 3\n")
		}, nil, "cannot parse body after 2 samples"},
		{"over limit", func(w http.ResponseWriter, r *http.Request) {
			io.WriteString(w, big)
		}, func(c *Config) { c.BodyLimit = 100 << 10 }, "exceeds the size limit"},
		{"gzip bomb over limit after decompression", func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Content-Encoding", "gzip")
			w.Write(gz.Bytes())
		}, func(c *Config) { c.BodyLimit = 100 << 10 }, "exceeds the size limit"},
		{"gzip body itself over the limit", func(w http.ResponseWriter, r *http.Request) {
			// Random bytes do not compress: the compressed body alone is
			// past the limit, and is not read whole.
			noise := make([]byte, 300<<10)
			rand.NewChaCha8([32]byte{1}).Read(noise)
			w.Header().Set("Content-Encoding", "gzip")
			zw := gzip.NewWriter(w)
			zw.Write(noise)
			zw.Close()
		}, func(c *Config) { c.BodyLimit = 100 << 10 }, "exceeds the size limit"},
		{"timeout", func(w http.ResponseWriter, r *http.Request) {
			select {
			case <-r.Context().Done():
			case <-time.After(5 * time.Second):
			}
		}, func(c *Config) { c.Timeout = 100 * time.Millisecond }, "scrape timed out after 100ms"},
		{"invalid OpenMetrics without EOF", func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Content-Type", "application/openmetrics-text; version=1.0.0")
			io.WriteString(w, "# TYPE a gauge\na 1\n")
		}, nil, "parse"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			srv := httptest.NewServer(tc.handler)
			defer srv.Close()
			cfg := testConfig()
			if tc.cfg != nil {
				tc.cfg(&cfg)
			}
			got, err := scrapeOnce(t, cfg, srv.URL)
			if err == nil || !strings.Contains(err.Error(), tc.errText) {
				t.Fatalf("err = %v, want one containing %q", err, tc.errText)
			}
			var names []string
			for _, r := range got {
				names = append(names, r.name)
			}
			if fmt.Sprint(names) != "[up scrape_duration_seconds scrape_samples_scraped]" {
				t.Fatalf("committed %v, want only the synthetic series", names)
			}
			if up, _ := value(got, "up"); up != 0 {
				t.Errorf("up = %v, want 0", up)
			}
		})
	}
}

func TestScrapeGzipAndUnknownContentType(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Header.Get("Accept-Encoding") != "gzip" {
			t.Errorf("Accept-Encoding = %q", r.Header.Get("Accept-Encoding"))
		}
		w.Header().Set("Content-Encoding", "gzip")
		w.Header().Set("Content-Type", "application/x-weird")
		zw := gzip.NewWriter(w)
		io.WriteString(zw, "a 1\nb 2\n")
		zw.Close()
	}))
	defer srv.Close()
	got, err := scrapeOnce(t, testConfig(), srv.URL)
	if err != nil {
		t.Fatal(err)
	}
	if v, ok := value(got, "b"); !ok || v != 2 {
		t.Fatalf("b = %v (found %v), want 2", v, ok)
	}
}

func TestConfigValidate(t *testing.T) {
	cases := []struct {
		cfg  Config
		want string
	}{
		{Config{Interval: time.Second, Timeout: 2 * time.Second, BodyLimit: 1}, "timeout 2s must not exceed interval 1s"},
		{Config{Interval: 0, Timeout: time.Second, BodyLimit: 1}, "interval must be positive"},
		{Config{Interval: time.Second, Timeout: time.Second, BodyLimit: 0}, "body limit must be positive"},
	}
	for _, tc := range cases {
		err := tc.cfg.Validate()
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("Validate(%+v) = %v, want %q", tc.cfg, err, tc.want)
		}
	}
	good := testConfig()
	if err := good.Validate(); err != nil {
		t.Errorf("valid config rejected: %v", err)
	}
}

func TestOffsetsSpreadAndStable(t *testing.T) {
	for _, c := range []struct {
		interval, step time.Duration
	}{{10 * time.Second, 100 * time.Millisecond}, {500 * time.Millisecond, 50 * time.Millisecond}} {
		cfg := Config{Interval: c.interval}
		now := time.Unix(1700000000, 0).Add(123456789)
		buckets := map[int64]int{}
		starts := map[int64]int{}
		for i := 0; i < 100; i++ {
			tg, _ := discovery.NewTarget(fmt.Sprintf("http://127.0.0.1:%d/metrics", 20000+i), "j")
			l := &loop{target: tg, cfg: cfg}
			off := l.offset(now)
			if off < 0 || off >= cfg.Interval {
				t.Fatalf("offset %s outside [0, interval)", off)
			}
			// The absolute phase within the interval is the same at any time.
			start := now.Add(off).UnixNano()
			later := now.Add(3*time.Second + 7*time.Millisecond)
			if a, b := start%int64(cfg.Interval), later.Add(l.offset(later)).UnixNano()%int64(cfg.Interval); a != b {
				t.Fatalf("phase moved: %d vs %d", a, b)
			}
			// Starts sit on the grid, so that several share a wake-up.
			if start%int64(c.step) != 0 {
				t.Fatalf("interval %s: start %d is off the %s grid", c.interval, start, c.step)
			}
			buckets[int64(off*10/cfg.Interval)]++
			starts[start]++
		}
		if len(buckets) < 8 {
			t.Errorf("interval %s: 100 targets fell into only %d of 10 slots: %v", c.interval, len(buckets), buckets)
		}
		if len(starts) == 100 {
			t.Errorf("interval %s: 100 targets on a %s grid never share a start", c.interval, c.step)
		}
	}
}

func TestPoolReconciles(t *testing.T) {
	var mu sync.Mutex
	hits := map[string]int{}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		hits[r.URL.Path]++
		mu.Unlock()
		io.WriteString(w, "x 1\n")
	}))
	defer srv.Close()
	cfg := Config{Interval: 100 * time.Millisecond, Timeout: 100 * time.Millisecond, BodyLimit: 1 << 20}
	rec := &recorder{}
	p, err := NewPool(cfg, rec, discard)
	if err != nil {
		t.Fatal(err)
	}
	tg := func(path string) discovery.Target {
		x, _ := discovery.NewTarget(srv.URL+path, "j")
		return x
	}
	ctx, cancel := context.WithCancel(context.Background())
	ch := make(chan []discovery.Target)
	done := make(chan error)
	go func() { done <- p.Run(ctx, ch) }()

	ch <- []discovery.Target{tg("/a"), tg("/b")}
	servertest.WaitFor(t, "the condition", 10*time.Second, func() bool { mu.Lock(); defer mu.Unlock(); return hits["/a"] >= 2 && hits["/b"] >= 2 })
	before := loopOf(p, tg("/a"))
	ch <- []discovery.Target{tg("/a"), tg("/c")}
	servertest.WaitFor(t, "the condition", 10*time.Second, func() bool { mu.Lock(); defer mu.Unlock(); return hits["/c"] >= 2 })
	if loopOf(p, tg("/a")) != before {
		t.Error("unchanged target /a got a new loop")
	}
	if loopOf(p, tg("/b")) != nil {
		t.Error("removed target /b still has a loop")
	}
	mu.Lock()
	bHits, cHits := hits["/b"], hits["/c"]
	mu.Unlock()
	// Three more scrapes of /c: /b would have been scraped meanwhile.
	servertest.WaitFor(t, "three more scrapes of /c", 10*time.Second, func() bool { mu.Lock(); defer mu.Unlock(); return hits["/c"] >= cHits+3 })
	mu.Lock()
	if hits["/b"] != bHits {
		t.Errorf("removed target /b scraped after removal: %d -> %d", bHits, hits["/b"])
	}
	mu.Unlock()
	if n := len(p.Targets()); n != 2 {
		t.Errorf("Targets() has %d entries, want 2", n)
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatalf("Run returned %v on cancellation", err)
	}
	if n := len(p.Targets()); n != 0 {
		t.Errorf("loops left after Run returned: %d", n)
	}
}

func loopOf(p *Pool, t discovery.Target) *loop {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.loops[t.Key()]
}

func TestAuthAndRedirects(t *testing.T) {
	other := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Header.Get("Authorization") != "" {
			t.Errorf("credentials followed a redirect to another host")
		}
		io.WriteString(w, "x 1\n")
	}))
	defer other.Close()
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/away":
			http.Redirect(w, r, other.URL+"/metrics", http.StatusFound)
		case "/same":
			http.Redirect(w, r, "/metrics", http.StatusFound)
		default:
			if u, p, ok := r.BasicAuth(); !ok || u != "scraper" || p != "pw" {
				http.Error(w, "who are you", http.StatusUnauthorized)
				return
			}
			io.WriteString(w, "x 1\n")
		}
	}))
	defer srv.Close()
	cfg := testConfig()
	cfg.BasicAuthUser, cfg.BasicAuthPassword = "scraper", "pw"
	if _, err := scrapeOnce(t, cfg, srv.URL+"/metrics"); err != nil {
		t.Errorf("basic auth: %v", err)
	}
	if _, err := scrapeOnce(t, cfg, srv.URL+"/same"); err != nil {
		t.Errorf("redirect on the same host: %v", err)
	}
	if _, err := scrapeOnce(t, cfg, srv.URL+"/away"); err == nil || !strings.Contains(err.Error(), "redirect to another host") {
		t.Errorf("redirect to another host: err = %v", err)
	}
	cfg.BasicAuthPassword = "wrong"
	if _, err := scrapeOnce(t, cfg, srv.URL+"/metrics"); err == nil || !strings.Contains(err.Error(), "401") {
		t.Errorf("wrong password: err = %v", err)
	}
}

func TestSampleLimitFailsScrape(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.WriteString(w, "a 1\nb 2\nc 3\n")
	}))
	defer srv.Close()
	cfg := testConfig()
	cfg.SampleLimit = 2
	got, err := scrapeOnce(t, cfg, srv.URL)
	if !errors.Is(err, errScrapeFailed) || !strings.Contains(err.Error(), "sample limit exceeded") {
		t.Fatalf("err = %v", err)
	}
	if up, _ := value(got, "up"); up != 0 || len(got) != 3 {
		t.Errorf("committed %v, want only up=0 and the synthetic series", got)
	}
}

func relabelConfigs(t *testing.T, y string) []*relabel.Config {
	t.Helper()
	var cs []*relabel.Config
	if err := yaml.Unmarshal([]byte(y), &cs); err != nil {
		t.Fatal(err)
	}
	for _, c := range cs {
		if err := c.Validate(model.UTF8Validation); err != nil {
			t.Fatal(err)
		}
	}
	return cs
}

func TestTargetRelabeling(t *testing.T) {
	tg, _ := discovery.NewTarget("http://10.0.0.1:9323/metrics", "docker-engine", discovery.Tag{Key: "node", Value: "n1"})
	tg.Meta = map[string]string{"__meta_consul_service_metadata_role": "canary"}
	drop := relabelConfigs(t, `
- source_labels: [__meta_consul_service_metadata_role]
  regex: canary
  action: drop`)
	if _, keep, _ := relabelTarget(tg, drop); keep {
		t.Error("canary kept")
	}
	rename := relabelConfigs(t, `
- source_labels: [node]
  target_label: host
- regex: node
  action: labeldrop
- source_labels: [__address__]
  regex: (.*):9323
  target_label: __address__
  replacement: $1:9100
- target_label: __metrics_path__
  replacement: /probe`)
	out, keep, err := relabelTarget(tg, rename)
	if err != nil || !keep {
		t.Fatalf("keep %v err %v", keep, err)
	}
	if out.URL != "http://10.0.0.1:9100/probe" || out.Tag("host") != "n1" || out.Tag("node") != "" || out.Tag("instance") != "10.0.0.1:9323" || out.Meta != nil {
		t.Errorf("relabeled target %+v", out)
	}
}

// A target that stays down is logged when it goes down, again every five
// minutes while it stays down, and when it recovers.
func TestDeadTargetLoggedAtACadence(t *testing.T) {
	var buf bytes.Buffer
	tg, _ := discovery.NewTarget("http://127.0.0.1:1/metrics", "docker-engine")
	l := newLoop(tg, testConfig(), &recorder{}, nil, NewMetrics(), slog.New(slog.NewTextHandler(&buf, nil)))
	t0 := time.Unix(1_000_000, 0)
	err := errors.New("connection refused")
	for i := 0; i <= 11; i++ { // down for 11 minutes, a scrape a minute
		l.report(t0.Add(time.Duration(i)*time.Minute), 0, 0, 0, nil, err, false, nil)
	}
	l.report(t0.Add(12*time.Minute), 0, 0, 5, nil, nil, false, nil)
	out := buf.String()
	if n := strings.Count(out, "level=WARN"); n != 3 {
		t.Errorf("%d warnings over 11 minutes down, want 3 (at 0, 5 and 10 minutes):\n%s", n, out)
	}
	if !strings.Contains(out, "scrape recovered") || !strings.Contains(out, "down_for=12m0s") {
		t.Errorf("recovery not logged with the downtime:\n%s", out)
	}
	if !strings.Contains(out, "job=docker-engine") {
		t.Errorf("log lines do not carry the target's job:\n%s", out)
	}
}

// A hung target's timeouts carry a new local port in their text at every
// scrape: they are one kind of failure, logged when it starts and at the
// cadence, not at every scrape (22 lines in 20 s before, for one target
// at 1 s). A change of kind is logged at once.
func TestHungTargetLogGroupedByKind(t *testing.T) {
	var buf bytes.Buffer
	tg, _ := discovery.NewTarget("http://127.0.0.1:1/metrics", "docker-engine")
	l := newLoop(tg, testConfig(), &recorder{}, nil, NewMetrics(), slog.New(slog.NewTextHandler(&buf, nil)))
	t0 := time.Unix(1_000_000, 0)
	for i := 0; i < 20; i++ {
		err := fmt.Errorf("scrape timed out after 1s: %w", &net.OpError{Op: "read", Net: "tcp",
			Source: &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1), Port: 40000 + i}, Err: os.ErrDeadlineExceeded})
		l.report(t0.Add(time.Duration(i)*time.Second), 0, 0, 0, nil, err, false, nil)
	}
	if n := strings.Count(buf.String(), "level=WARN"); n != 1 {
		t.Fatalf("20 timeouts in 20 s logged %d times, want once:\n%s", n, buf.String())
	}
	if !strings.Contains(buf.String(), "kind=timeout") {
		t.Fatalf("the kind is not logged:\n%s", buf.String())
	}
	l.report(t0.Add(21*time.Second), 0, 0, 0, nil, &StatusError{Code: 503, Status: "503 Service Unavailable"}, false, nil)
	if !strings.Contains(buf.String(), `kind="http_status 503"`) {
		t.Fatalf("a change of kind is not logged at once:\n%s", buf.String())
	}
}

func TestFailureKinds(t *testing.T) {
	for _, c := range []struct {
		err     error
		parsing bool
		want    string
	}{
		{context.DeadlineExceeded, false, FailTimeout},
		{&net.OpError{Op: "dial", Err: syscall.ECONNREFUSED}, false, FailRefused},
		{&net.OpError{Op: "read", Err: syscall.ECONNRESET}, false, FailReset},
		{&net.DNSError{Err: "no such host", Name: "x"}, false, FailDNS},
		{&StatusError{Code: 404, Status: "404 Not Found"}, false, FailHTTPStatus},
		{fmt.Errorf("%w of 10 bytes", ErrBodyTooLarge), false, FailBodyLimit},
		{fmt.Errorf("%w: more than 5", ErrSampleLimit), true, FailSampleLimit},
		{fmt.Errorf("%w: label", ErrLabelLimit), true, FailLabelLimit},
		{errors.New("cannot parse body: bad"), true, FailParse},
		{errors.New("something"), false, FailOther},
	} {
		if got, _ := failureKind(c.err, c.parsing); got != c.want {
			t.Errorf("failureKind(%v) = %s, want %s", c.err, got, c.want)
		}
	}
}

// Counters only go up: removing 3 of 4 targets leaves scrapes_total and
// scrape_failures_total where they were (it took scrapes_total from 83
// to 2 when they were sums over the running targets), and a job's series
// stays after its last target.
func TestCountersSurviveTargetRemoval(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/bad" {
			w.WriteHeader(http.StatusInternalServerError)
			return
		}
		io.WriteString(w, "x 1\n")
	}))
	defer srv.Close()
	cfg := Config{Interval: 50 * time.Millisecond, Timeout: 50 * time.Millisecond, BodyLimit: 1 << 20}
	p, err := NewPool(cfg, &recorder{}, discard)
	if err != nil {
		t.Fatal(err)
	}
	const job = "counters-job"
	tg := func(path string) discovery.Target {
		x, _ := discovery.NewTarget(srv.URL+path, job)
		return x
	}
	scrapes := func() float64 { return testutil.ToFloat64(p.metrics.scrapes.WithLabelValues(job)) }
	failures := func() float64 { return testutil.ToFloat64(p.metrics.failures.WithLabelValues(job)) }
	ctx, cancel := context.WithCancel(context.Background())
	ch := make(chan []discovery.Target)
	done := make(chan error)
	go func() { done <- p.Run(ctx, ch) }()
	ch <- []discovery.Target{tg("/a"), tg("/b"), tg("/c"), tg("/bad")}
	servertest.WaitFor(t, "the condition", 10*time.Second, func() bool { return scrapes() >= 20 && failures() >= 3 })
	ch <- []discovery.Target{tg("/a")}
	servertest.WaitFor(t, "the condition", 10*time.Second, func() bool { return len(p.Targets()) == 1 })
	before, failed := scrapes(), failures()
	ch <- nil
	servertest.WaitFor(t, "the condition", 10*time.Second, func() bool { return len(p.Targets()) == 0 })
	if scrapes() < before || failures() < failed {
		t.Fatalf("counters went down: scrapes %v -> %v, failures %v -> %v", before, scrapes(), failed, failures())
	}
	n, err := testutil.GatherAndCount(prometheus.Gatherers{gathererOf(p.metrics)}, "scrapeflux_scrapes_total")
	if err != nil || n == 0 {
		t.Fatalf("the job's series went with its last target: %d series, %v", n, err)
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
}

func gathererOf(cs ...prometheus.Collector) prometheus.Gatherer {
	reg := prometheus.NewRegistry()
	reg.MustRegister(cs...)
	return reg
}

// A source that churns sends snapshots faster than they are worth
// applying: those within SyncGap of the last reconciliation are
// coalesced, and the newest of them is applied once the gap has passed.
func TestSnapshotsThrottled(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "x 1\n") }))
	defer srv.Close()
	cfg := Config{Interval: time.Hour, Timeout: time.Second, BodyLimit: 1 << 20}
	p, err := NewPool(cfg, &recorder{}, discard)
	if err != nil {
		t.Fatal(err)
	}
	syncs := func() int64 { p.mu.Lock(); defer p.mu.Unlock(); return p.syncs }
	ctx, cancel := context.WithCancel(context.Background())
	ch := make(chan []discovery.Target)
	done := make(chan error)
	go func() { done <- p.Run(ctx, ch) }()
	snapshot := func(n int) []discovery.Target {
		var ts []discovery.Target
		for i := range n {
			x, _ := discovery.NewTarget(fmt.Sprintf("%s/m%d", srv.URL, i), "churn")
			ts = append(ts, x)
		}
		return ts
	}
	// The first snapshot is applied at once.
	start := time.Now()
	ch <- snapshot(1)
	servertest.WaitFor(t, "the first snapshot applied", 5*time.Second, func() bool { return len(p.Targets()) == 1 })
	if d := time.Since(start); d > SyncGap/2 {
		t.Errorf("the first snapshot waited %s", d)
	}
	// 200 more within a few tens of milliseconds: at most two more
	// reconciliations, the last one with the newest snapshot.
	for n := 2; n <= 201; n++ {
		ch <- snapshot(n)
	}
	sent := time.Now()
	servertest.WaitFor(t, "the newest snapshot applied", 5*time.Second, func() bool { return len(p.Targets()) == 201 })
	if d := time.Since(sent); d > 2*SyncGap {
		t.Errorf("the newest snapshot applied %s after it came: want within %s", d, 2*SyncGap)
	}
	if n := syncs(); n > 3 {
		t.Errorf("%d reconciliations for 201 snapshots in a burst: want at most 3", n)
	}
	t.Logf("201 snapshots, %d reconciliations", syncs())
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
}
