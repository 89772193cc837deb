package scrape

import (
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"runtime"
	"sort"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/prometheus/model/labels"
)

const textType = "text/plain; version=0.0.4"

// ruleCases is an exposition with one case of each rule a single scrape
// shows (counters going down and churn need two: TestLintAcrossScrapes).
var ruleCases = `# HELP reqs Requests.
# TYPE reqs counter
reqs{code="200"} 10
# HELP good_total A counter as it should be.
# TYPE good_total counter
good_total 3
# HELP temp_celsius Temperature.
# TYPE temp_celsius gauge
temp_celsius 21
temp_celsius 22
untyped_thing 3
# HELP lat_seconds Latency.
# TYPE lat_seconds histogram
lat_seconds_bucket{le="0.1"} 5
lat_seconds_bucket{le="1"} 4
lat_seconds_sum 3
lat_seconds_count 5
# HELP conflicted A.
# HELP conflicted B.
# TYPE conflicted gauge
conflicted{time="x",job="y",_hidden="z"} 1
# HELP odd Odd.
# TYPE odd gauge
odd{count="1"} 1
odd{n="2",id="550e8400-e29b-41d4-a716-446655440000"} 1
odd{n="3",peer="10.0.0.1:51234"} 1
odd{n="4",ts="1764672000"} 1
odd{n="5",trace="4bf92f3577b34da6a3ce929d0e0e4736"} 1
odd{n="6",server="10.0.0.1:9090"} 1
odd{n="7",long="` + strings.Repeat("x", 70_000) + `"} 1
# HELP time A metric named time.
# TYPE time gauge
time 1
# HELP build_info Build.
# TYPE build_info gauge
build_info{commit="c27b913fddd1a6c480c229191a087698aa92f0b1"} 1
# HELP split Split.
# TYPE split gauge
split 1
temp_celsius{room="b"} 23
`

func lintOnce(t *testing.T, l *Linter, body string) *LintReport {
	t.Helper()
	r, err := l.Lint([]byte(body), textType, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	return r
}

// A family whose table would pass InfluxDB 3's 500 columns, and an
// exposition of more families than Core's 2,000 tables.
func TestLintInflux3Schema(t *testing.T) {
	var b strings.Builder
	b.WriteString("# HELP wide_thing w\n# TYPE wide_thing gauge\n")
	for j := 0; j < 496; j++ {
		fmt.Fprintf(&b, "wide_thing{k_%d=\"v\"} 1\n", j)
	}
	r := lintOnce(t, NewLinter([]string{"instance", "job"}), b.String())
	if f, ok := r.Finding(LintInflux3Schema); ok {
		t.Fatalf("496 labels + 2 tags + field + time = 500 columns fit; found %+v", f)
	}
	fmt.Fprintf(&b, "wide_thing{k_496=\"v\"} 1\n")
	r = lintOnce(t, NewLinter([]string{"instance", "job"}), b.String())
	if f, ok := r.Finding(LintInflux3Schema); !ok || f.Count != 1 || !strings.Contains(f.Example, "wide_thing would be a table of 501+ columns") {
		t.Fatalf("501 columns: %+v", f)
	}
	var many strings.Builder
	for j := 0; j < 2001; j++ {
		fmt.Fprintf(&many, "# HELP f_%d f\n# TYPE f_%d gauge\nf_%d 1\n", j, j, j)
	}
	r = lintOnce(t, NewLinter(nil), many.String())
	if f, ok := r.Finding(LintInflux3Schema); !ok || !strings.Contains(f.Example, "2001 families") {
		t.Fatalf("2,001 families: %+v", f)
	}
}

func TestLintRules(t *testing.T) {
	r := lintOnce(t, NewLinter([]string{"instance", "job"}), ruleCases)
	want := map[string]struct {
		count   int
		example string
	}{
		LintCounterNoTotal:        {1, "reqs"},
		LintNoHelp:                {1, "untyped_thing"},
		LintNoType:                {1, "untyped_thing"},
		LintMetadataConflict:      {2, "conflicted: two different HELP texts"},
		LintDuplicateSeries:       {1, "temp_celsius"},
		LintHistogramNoInf:        {1, "lat_seconds"},
		LintHistogramNotMonotonic: {1, "lat_seconds: le=1 counts 4"},
		LintInfluxRenamed:         {4, "label time of conflicted is written as exported_time"},
		LintInfluxRefused:         {2, "label count of odd is also a field's name"},
		LintUnboundedValue:        {4, `id="550e8400-e29b-41d4-a716-446655440000" on odd (UUID)`},
	}
	got := map[string]LintFinding{}
	for _, f := range r.Findings {
		got[f.Rule] = f
	}
	for rule, w := range want {
		f, ok := got[rule]
		if !ok {
			t.Errorf("%s: not found", rule)
			continue
		}
		if f.Count != w.count || !strings.Contains(f.Example, w.example) {
			t.Errorf("%s: %d, %q; want %d, %q", rule, f.Count, f.Example, w.count, w.example)
		}
		if len(f.Example) > exampleMax+len("…") {
			t.Errorf("%s: example of %d bytes", rule, len(f.Example))
		}
	}
	for rule, f := range got {
		if _, ok := want[rule]; !ok {
			t.Errorf("unexpected %s: %+v", rule, f)
		}
	}
	// The split family is one of the conflicts.
	if f := got[LintMetadataConflict]; f.Count != 2 {
		t.Errorf("conflicts %+v", f)
	}
	// What each unbounded kind is called.
	for _, c := range []struct{ v, kind string }{
		{"550e8400-e29b-41d4-a716-446655440000", "UUID"},
		{"10.0.0.1:51234", "IP:port with an ephemeral port"},
		{"[::1]:60000", "IP:port with an ephemeral port"},
		{"10.0.0.1:9090", ""},
		{"1764672000", "timestamp"},
		{"1764672000123", "timestamp"},
		{"1234567890123456", ""}, // digits only, not a time
		{"4bf92f3577b34da6a3ce929d0e0e4736", "hex ID"},
		{"deadbeefdeadbeef", ""}, // no digit: a word
		{"/api/v1/query", ""},
	} {
		if k := unboundedKind([]byte(c.v)); k != c.kind {
			t.Errorf("unboundedKind(%q) = %q, want %q", c.v, k, c.kind)
		}
	}
}

func TestLintCleanExposition(t *testing.T) {
	body := `# HELP http_requests_total Requests.
# TYPE http_requests_total counter
http_requests_total{code="200",path="/"} 10
http_requests_total{code="500",path="/"} 1
# HELP lat_seconds Latency.
# TYPE lat_seconds histogram
lat_seconds_bucket{le="0.1"} 1
lat_seconds_bucket{le="1"} 4
lat_seconds_bucket{le="+Inf"} 5
lat_seconds_sum 3
lat_seconds_count 5
`
	if r := lintOnce(t, NewLinter(nil), body); len(r.Findings) != 0 || r.Series != 7 {
		t.Fatalf("%+v", r)
	}
	// OpenMetrics: the family is named without _total.
	om := "# HELP c A counter.\n# TYPE c counter\nc_total 1\nc_created 1.7e9\n# EOF\n"
	r, err := NewLinter(nil).Lint([]byte(om), "application/openmetrics-text; version=1.0.0", time.Now())
	if err != nil || len(r.Findings) != 0 {
		t.Fatalf("%+v %v", r, err)
	}
}

func counters(start string, a, b, c float64, ids []string) string {
	var sb strings.Builder
	if start != "" {
		fmt.Fprintf(&sb, "# HELP process_start_time_seconds Start.\n# TYPE process_start_time_seconds gauge\nprocess_start_time_seconds %s\n", start)
	}
	fmt.Fprintf(&sb, "# HELP reqs_total R.\n# TYPE reqs_total counter\nreqs_total{code=\"200\"} %g\nreqs_total{code=\"500\"} %g\nreqs_total{code=\"404\"} %g\n", a, b, c)
	sb.WriteString("# HELP hits H.\n# TYPE hits gauge\n")
	for i, id := range ids {
		fmt.Fprintf(&sb, "hits{req=%q,path=\"/p%d\"} 1\n", id, i)
	}
	return sb.String()
}

func ids(prefix string) []string {
	out := make([]string, 10)
	for i := range out {
		out[i] = fmt.Sprintf("%s-%d", prefix, i)
	}
	return out
}

func TestLintAcrossScrapes(t *testing.T) {
	l := NewLinter(nil)
	if r := lintOnce(t, l, counters("1000", 10, 10, 10, ids("a"))); len(r.Findings) != 0 {
		t.Fatalf("first lint: %+v", r.Findings)
	}
	// One counter of three goes down, the process did not restart; the
	// req label's values are all new, path's the same.
	r := lintOnce(t, l, counters("1000", 11, 9, 12, ids("b")))
	f, ok := r.Finding(LintCounterDown)
	if !ok || f.Count != 1 || f.Example != `reqs_total{code="500"} went from 10 to 9` {
		t.Errorf("counter down: %+v", r.Findings)
	}
	f, ok = r.Finding(LintUnboundedValue)
	if !ok || f.Count != 1 || !strings.HasPrefix(f.Example, "req: none of its values") {
		t.Errorf("churn: %+v", r.Findings)
	}
	// A restart resets every counter: no finding.
	if r := lintOnce(t, l, counters("2000", 1, 0, 0, ids("b"))); len(r.Findings) != 0 {
		t.Errorf("after a restart: %+v", r.Findings)
	}
	// Without process_start_time_seconds, most counters lower is a restart.
	l = NewLinter(nil)
	lintOnce(t, l, counters("", 10, 10, 10, ids("a")))
	if r := lintOnce(t, l, counters("", 1, 0, 12, ids("a"))); len(r.Findings) != 0 {
		t.Errorf("restart without start time: %+v", r.Findings)
	}
	// A scrape that does not parse leaves the state as it was.
	if _, err := l.Lint([]byte("bad{ 1\n"), textType, time.Now()); err == nil {
		t.Fatal("bad exposition linted")
	}
	if r := lintOnce(t, l, counters("", 1, 0, 11, ids("a"))); r.Findings == nil {
		t.Errorf("after a failed lint: %+v", r.Findings)
	}
}

// TestLintCaptures lints the real captures: what it finds is really in
// them (checked by hand, listed here), and nothing else.
func TestLintCaptures(t *testing.T) {
	want := map[string]map[string]int{
		// 227 counters named without _total; 4 histograms (sql_mem_*_max)
		// written twice in a row, 12 series.
		"cockroachdb.prom": {LintCounterNoTotal: 227, LintDuplicateSeries: 12},
		// Consul's own counters lack _total.
		"consul-1.14.3-server-agent.prom":             {LintCounterNoTotal: 91},
		"docker-engine-17.05.0-ce.prom":               {},
		"docker-engine-18.09.3-ce-swarm-manager.prom": {},
		"docker-engine-18.09.3-ce.prom":               {},
		// get_token_count and five more counters without _total (the
		// gitCommit hash of kubernetes_build_info is an info metric's).
		"kubelet.prom":       {LintCounterNoTotal: 6},
		"traefik-2.2.1.prom": {},
	}
	files, err := filepath.Glob("simulator/testdata/*.prom")
	if err != nil || len(files) != len(want) {
		t.Fatalf("%d captures, want %d (%v)", len(files), len(want), err)
	}
	for _, f := range files {
		body, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		r, err := NewLinter([]string{"instance", "job"}).Lint(body, textType, time.Now())
		if err != nil {
			t.Fatal(err)
		}
		got := map[string]int{}
		var lines []string
		for _, x := range r.Findings {
			got[x.Rule] = x.Count
			lines = append(lines, fmt.Sprintf("%s %d (%s)", x.Rule, x.Count, x.Example))
		}
		sort.Strings(lines)
		name := filepath.Base(f)
		if fmt.Sprint(got) != fmt.Sprint(want[name]) {
			t.Errorf("%s: %v, want %v", name, lines, want[name])
		}
		t.Logf("%s: %d series; %v", name, r.Series, lines)
	}
}

// TestLoopLintsOnSchedule: the loop lints its first scrape, then none
// until the lint interval passed, and puts the report on the status.
func TestLoopLintsOnSchedule(t *testing.T) {
	var served atomic.Int32
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		served.Add(1)
		w.Header().Set("Content-Type", textType)
		fmt.Fprint(w, "# TYPE reqs counter\nreqs 1\n")
	}))
	defer srv.Close()
	cfg := testConfig()
	cfg.LintInterval = time.Hour
	l, _ := newTestLoop(t, cfg, srv.URL+"/metrics")
	t0 := time.Now()
	l.scrape(context.Background(), t0, t0, 0)
	first := l.snapshot().Lint
	if first == nil {
		t.Fatal("first scrape not linted")
	}
	if _, ok := first.Finding(LintCounterNoTotal); !ok {
		t.Fatalf("findings %+v", first.Findings)
	}
	if _, ok := first.Finding(LintNoHelp); !ok {
		t.Fatalf("findings %+v", first.Findings)
	}
	l.scrape(context.Background(), t0.Add(time.Minute), t0.Add(time.Minute), 0)
	if l.snapshot().Lint != first {
		t.Fatal("linted again before the interval")
	}
	l.scrape(context.Background(), t0.Add(61*time.Minute), t0.Add(61*time.Minute), 0)
	if next := l.snapshot().Lint; next == first || !next.At.Equal(t0.Add(61*time.Minute)) {
		t.Fatalf("not linted after the interval: %+v", next)
	}
	if served.Load() != 3 {
		t.Fatalf("served %d", served.Load())
	}
	// Off: no report.
	cfg.LintInterval = 0
	l, _ = newTestLoop(t, cfg, srv.URL+"/metrics")
	l.scrape(context.Background(), t0, t0, 0)
	if l.snapshot().Lint != nil {
		t.Fatal("linted with lints off")
	}
}

// BenchmarkLint: a scrape of every capture parsed plain and linted, per
// sample; the lint's cost is the difference.
func BenchmarkLint(b *testing.B) {
	files, _ := filepath.Glob("simulator/testdata/*.prom")
	var bodies [][]byte
	samples := 0
	for _, f := range files {
		body, err := os.ReadFile(f)
		if err != nil {
			b.Fatal(err)
		}
		bodies = append(bodies, body)
		r, _ := NewLinter(nil).Lint(body, textType, time.Now())
		samples += r.Series
	}
	for _, lint := range []bool{false, true} {
		b.Run(map[bool]string{false: "parse", true: "parse+lint"}[lint], func(b *testing.B) {
			p := NewParser()
			linters := make([]*Linter, len(bodies))
			for i := range linters {
				linters[i] = NewLinter([]string{"instance", "job"})
			}
			b.ReportAllocs()
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				for j, body := range bodies {
					if lint {
						p.lint, p.identity = linters[j].begin(), linters[j].Identity
					}
					if _, _, err := p.Parse(body, textType, 0, false, discardAppender{}); err != nil {
						b.Fatal(err)
					}
					if lint {
						p.lint = nil
						linters[j].finish(time.Now())
					}
				}
			}
			b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*samples), "ns/sample")
		})
	}
}

// RangeLabels reads classic series from their text (values as written)
// and anything else from the parsed labels; both give every label but
// the name.
func TestRangeLabels(t *testing.T) {
	body := "a 1\n" +
		"b{x=\"1\",y=\"two\"} 1\n" +
		"c{x=\"q\\\"uote\",} 1\n" +
		"{\"d.e\",x=\"1\"} 1\n"
	p := NewParser()
	var got []string
	rec := appenderFunc{Appender: discardAppender{}, fn: func(s *Sample) {
		var lset labels.Labels
		var parts []string
		s.RangeLabels(&lset, func(name, value []byte) { parts = append(parts, string(name)+"="+string(value)) })
		got = append(got, string(s.Name)+":"+strings.Join(parts, ","))
	}}
	if _, _, err := p.Parse([]byte(body), "text/plain; version=1.0.0", 0, false, rec); err != nil {
		t.Fatal(err)
	}
	want := []string{"a:", "b:x=1,y=two", `c:x=q\"uote`, "d.e:x=1"}
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Fatalf("got %q, want %q", got, want)
	}
	// A duplicate with its labels in another order is one series.
	r := lintOnce(t, NewLinter(nil), "# HELP m M.\n# TYPE m gauge\nm{a=\"1\",b=\"2\"} 1\nm{b=\"2\",a=\"1\"} 2\nm{a=\"2\",b=\"1\"} 3\n")
	if f, ok := r.Finding(LintDuplicateSeries); !ok || f.Count != 1 {
		t.Fatalf("reordered duplicate: %+v", r.Findings)
	}
}

// dropHelp drops the HELP lines just before a TYPE line and keeps the
// others: a HELP line alone starts a family.
func TestDropHelp(t *testing.T) {
	in := "# HELP a A's help.\n# TYPE a gauge\na 1\n" +
		"# TYPE b counter\n# HELP b B's help.\nb 2\n" +
		"# HELP c Alone: starts family c.\nc_total 3\n" +
		"# HELP d\n# TYPE d gauge\nd 4\n" +
		"# TYPE e gauge\n# HELP f Another name.\nf 5\n"
	want := "# TYPE a gauge\na 1\n" +
		"# TYPE b counter\n# HELP b B's help.\nb 2\n" +
		"# HELP c Alone: starts family c.\nc_total 3\n" +
		"# TYPE d gauge\nd 4\n" +
		"# TYPE e gauge\n# HELP f Another name.\nf 5\n"
	if got := string(dropHelp([]byte(in))); got != want {
		t.Fatalf("got\n%s\nwant\n%s", got, want)
	}
	for in, want := range map[string]string{
		"":                           "",
		"# HELP a x\n":               "# HELP a x\n",
		"# HELP a x\n# TYPE a gauge": "# TYPE a gauge",
		"a 1\n# HELP a x\n# HELP a y\n# TYPE a gauge\na 1":         "a 1\n# HELP a x\n# TYPE a gauge\na 1",
		"# HELP a x\n# TYPE a gauge\n# HELP b y\n# TYPE b gauge\n": "# TYPE a gauge\n# TYPE b gauge\n",
		"# HELP a x":                            "# HELP a x",
		"a{x=\"# HELP y\"} 1\n# TYPE b gauge\n": "a{x=\"# HELP y\"} 1\n# TYPE b gauge\n",
	} {
		if got := string(dropHelp([]byte(in))); got != want {
			t.Errorf("dropHelp(%q) = %q, want %q", in, got, want)
		}
	}
	// A Docker engine's exposition loses a fifth of its bytes.
	for _, name := range []string{"docker-engine-18.09.3-ce.prom", "cockroachdb.prom"} {
		body, err := os.ReadFile(filepath.Join("simulator", "testdata", name))
		if err != nil {
			t.Fatal(err)
		}
		n := len(body)
		if got := len(dropHelp(body)); float64(got) > 0.85*float64(n) {
			t.Errorf("%s: %d of %d bytes left", name, got, n)
		}
	}
}

// What a Linter keeps between lints is bounded: under 3 KiB a target on
// every capture of a real exporter, linted twice (the report aside, which
// the target's status holds).
func TestLinterKeepsLittle(t *testing.T) {
	files, _ := filepath.Glob("simulator/testdata/*.prom")
	if len(files) < 5 {
		t.Fatalf("%d captures", len(files))
	}
	heap := func() uint64 {
		var m runtime.MemStats
		runtime.GC()
		runtime.GC() // pooled scratch goes at the second
		runtime.ReadMemStats(&m)
		return m.HeapAlloc
	}
	for _, f := range files {
		body, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		l := NewLinter([]string{"instance", "job"})
		for i := 0; i < 2; i++ {
			if _, err := l.Lint(body, textType, time.Now()); err != nil {
				t.Fatal(err)
			}
		}
		held := heap()
		l.Identity = nil
		runtime.KeepAlive(l)
		l = nil
		freed := heap()
		if held < freed {
			held = freed
		}
		t.Logf("%s: %d bytes kept between lints", filepath.Base(f), held-freed)
		if held-freed > 3<<10 {
			t.Errorf("%s: %d bytes kept between lints, want under 3 KiB", filepath.Base(f), held-freed)
		}
	}
}
