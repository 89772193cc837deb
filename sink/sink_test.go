package sink

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/influxdata/line-protocol/v2/lineprotocol"
	"github.com/prometheus/common/model"
	"github.com/prometheus/prometheus/model/labels"
	"github.com/prometheus/prometheus/model/relabel"
	"go.uber.org/goleak"
	"gopkg.in/yaml.v3"

	"github.com/scrapeflux/scrapeflux/scrape"
	"github.com/scrapeflux/scrapeflux/sink/lineproto"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

var discard = slog.New(slog.NewTextHandler(io.Discard, nil))

// fakeWriter records bodies and answers from a script of errors.
type fakeWriter struct {
	mu      sync.Mutex
	bodies  []string
	answers []error // consumed one per call; nil once exhausted
	calls   int
}

func (f *fakeWriter) Write(ctx context.Context, body []byte) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.calls++
	if len(f.answers) > 0 {
		err := f.answers[0]
		f.answers = f.answers[1:]
		if err != nil {
			return err
		}
	}
	f.bodies = append(f.bodies, string(body))
	return nil
}

func (f *fakeWriter) lines() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	var out []string
	for _, b := range f.bodies {
		out = append(out, strings.Split(strings.TrimSuffix(b, "\n"), "\n")...)
	}
	return out
}

// testTarget is the identity of the target the tests convert for.
func testTarget() []scrape.Tag {
	return []scrape.Tag{{Key: "instance", Value: "127.0.0.1:9323"}, {Key: "job", Value: "docker"}}
}

// convert runs body through a sink with the given layout and returns the
// lines written, and the sink's stats.
func convert(t *testing.T, layout Layout, body string) ([]string, StatsSnapshot) {
	t.Helper()
	cfg := DefaultConfig()
	cfg.QueueDir = ""
	cfg.Convert.Layout = layout
	fw := &fakeWriter{}
	s, err := New(cfg, fw, discard)
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error)
	go func() { done <- s.Run(context.Background()) }()
	tg := testTarget()
	app := s.Appender(tg, scrape.AppendOptions{})
	if _, _, err := scrape.NewParser().Parse([]byte(body), "text/plain; version=0.0.4", 1000, false, app); err != nil {
		app.Rollback()
		s.Close()
		<-done
		t.Fatalf("parse: %v", err)
	}
	if err := app.Commit(); err != nil {
		t.Fatal(err)
	}
	s.Close()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	return fw.lines(), s.Stats()
}

func TestEscape(t *testing.T) {
	cases := []struct {
		in          string
		tag, measur string
	}{
		{"plain", "plain", "plain"},
		{"a,b c=d", `a\,b\ c\=d`, `a\,b\ c=d`},
		{"line\nbreak\r\t\f", `line\nbreak\r\t\f`, `line\nbreak\r\t\f`},
		{`C:\dir\x`, `C:\dir\x`, `C:\dir\x`},
		{`esc\,comma`, `esc\\,comma`, `esc\\,comma`},
		{`two\\ x`, `two\\\ x`, `two\\\ x`},
		{`quote"`, `quote"`, `quote"`},
	}
	for _, tc := range cases {
		if got := string(lineproto.AppendEscaped(nil, tc.in, false)); got != tc.tag {
			t.Errorf("tag escape %q = %q, want %q", tc.in, got, tc.tag)
		}
		if got := string(lineproto.AppendEscaped(nil, tc.in, true)); got != tc.measur {
			t.Errorf("measurement escape %q = %q, want %q", tc.in, got, tc.measur)
		}
	}
	if got := lineproto.TrimBackslash(`ends\\`); got != "ends" {
		t.Errorf("trimBackslash = %q", got)
	}
}

// TestEscapedLinesParseBack checks that hostile label values never break
// a line: each line decodes with the line-protocol/v2 decoder, one point per
// line, with exactly the tag values given. Backslashes before a delimiter or
// at the end of a value are read differently by that decoder and by
// InfluxDB's own parser (which pairs backslashes); they are covered by the
// round trip through a real InfluxDB.
func TestEscapedLinesParseBack(t *testing.T) {
	values := []string{"a,b c=d", "line\nbreak", `mid\dle`, `q"uote`, "=", " ", ",", "ünïcödé", `a\\b`}
	var b strings.Builder
	b.WriteString("# TYPE m gauge\n")
	for i, v := range values {
		esc := strings.NewReplacer(`\`, `\\`, "\n", `\n`, `"`, `\"`).Replace(v)
		fmt.Fprintf(&b, "m{i=\"%02d\",v=\"%s\"} %d\n", i, esc, i)
	}
	lines, _ := convert(t, LayoutV1, b.String())
	points := 0
	for _, ln := range lines {
		dec := lineprotocol.NewDecoderWithBytes([]byte(ln + "\n"))
		for dec.Next() {
			m, err := dec.Measurement()
			if err != nil {
				t.Fatalf("line %q: %v", ln, err)
			}
			if string(m) == "up" || strings.HasPrefix(string(m), "scrape_") {
				continue
			}
			points++
			tags := map[string]string{}
			for {
				k, v, err := dec.NextTag()
				if err != nil {
					t.Fatalf("line %q: %v", ln, err)
				}
				if k == nil {
					break
				}
				tags[string(k)] = string(v)
			}
			var idx int
			fmt.Sscanf(tags["i"], "%d", &idx)
			want := strings.NewReplacer("\n", `\n`).Replace(values[idx])
			if tags["v"] != want {
				t.Errorf("value %q came back as %q from %q", values[idx], tags["v"], ln)
			}
			for {
				k, _, err := dec.NextField()
				if err != nil {
					t.Fatalf("line %q: %v", ln, err)
				}
				if k == nil {
					break
				}
			}
		}
		if err := dec.Err(); err != nil {
			t.Fatalf("line %q: %v", ln, err)
		}
	}
	if points != len(values) {
		t.Fatalf("decoded %d points from %d lines, want %d", points, len(lines), len(values))
	}
}

func TestConvertV1(t *testing.T) {
	body := `# TYPE c_total counter
c_total{a="x"} 3
# TYPE g gauge
g{job="theirs"} NaN
g{time="t",_x="y"} 2.5
# TYPE h histogram
h_bucket{a="x",le="0.5"} 1
h_bucket{a="x",le="1.0"} 2
h_bucket{a="x",le="+Inf"} 3
h_sum{a="x"} 4.25
h_count{a="x"} 3
# TYPE s summary
s{quantile="0.99"} NaN
s_sum 10
s_count 2
u{empty=""} 7
`
	lines, st := convert(t, LayoutV1, body)
	want := []string{
		"c_total,a=x,instance=127.0.0.1:9323,job=docker counter=3 1000",
		"g,exported__x=y,exported_time=t,instance=127.0.0.1:9323,job=docker gauge=2.5 1000",
		"h,a=x,instance=127.0.0.1:9323,job=docker 0.5=1,1=2,+Inf=3,sum=4.25,count=3 1000",
		"s,instance=127.0.0.1:9323,job=docker sum=10,count=2 1000",
		"u,instance=127.0.0.1:9323,job=docker value=7 1000",
	}
	got := strings.Join(lines, "\n")
	for _, w := range want {
		if !strings.Contains(got, w) {
			t.Errorf("missing line\n  %s\nin\n%s", w, got)
		}
	}
	if strings.Contains(got, "NaN") || strings.Contains(got, "exported_job=theirs") {
		t.Errorf("NaN sample written:\n%s", got)
	}
	if n := st.Dropped["non_finite"]; n != 2 {
		t.Errorf("non_finite drops = %d, want 2", n)
	}
	if st.Scraped != st.Written+st.DroppedTotal()+st.QueuedSamples {
		t.Errorf("accounting broken: %+v", st)
	}
}

func TestConvertV2GroupsByTagSet(t *testing.T) {
	body := `# TYPE a gauge
a 1
# TYPE b counter
b 2
# TYPE h histogram
h_bucket{le="1"} 1
h_bucket{le="+Inf"} 2
h_sum 3
h_count 2
`
	lines, _ := convert(t, LayoutV2, body)
	got := strings.Join(lines, "\n")
	for _, w := range []string{
		"prometheus,instance=127.0.0.1:9323,job=docker a=1,b=2,h_sum=3,h_count=2 1000",
		"prometheus,instance=127.0.0.1:9323,job=docker,le=1 h_bucket=1 1000",
		"prometheus,instance=127.0.0.1:9323,job=docker,le=+Inf h_bucket=2 1000",
	} {
		if !strings.Contains(got, w) {
			t.Errorf("missing\n  %s\nin\n%s", w, got)
		}
	}
}

func TestConvertRejectsBadLabels(t *testing.T) {
	s, _ := New(fastConfig(), &fakeWriter{}, discard)
	tg := testTarget()
	app := s.Appender(tg, scrape.AppendOptions{})
	bad := scrape.SyntheticSample(labels.FromStrings("__name__", "m", "a", "\xff"), model.MetricTypeGauge, 1, 0)
	if err := app.Append(&bad); !errors.Is(err, ErrInvalidUTF8) {
		t.Errorf("invalid UTF-8: err = %v", err)
	}
	app.Rollback()
	nul := scrape.SyntheticSample(labels.FromStrings("__name__", "m", "a", "x\x00y"), model.MetricTypeGauge, 1, 0)
	if err := app.Append(&nul); !errors.Is(err, ErrNULByte) {
		t.Errorf("NUL byte: err = %v", err)
	}
	app.Rollback()
	dup := scrape.SyntheticSample(labels.New(labels.Label{Name: "__name__", Value: "m"}, labels.Label{Name: "a", Value: "1"}, labels.Label{Name: "a", Value: "2"}), model.MetricTypeGauge, 1, 0)
	if err := app.Append(&dup); !errors.Is(err, ErrDuplicateLabel) {
		t.Errorf("duplicate label: err = %v", err)
	}
}

func TestTypeChangeFollowed(t *testing.T) {
	s, _ := New(fastConfig(), &fakeWriter{}, discard)
	tg := testTarget()
	c := s.Appender(tg, scrape.AppendOptions{}).(*converter)
	for _, tc := range []struct {
		typ   model.MetricType
		field string
	}{{model.MetricTypeGauge, "gauge"}, {model.MetricTypeCounter, "counter"}, {model.MetricTypeUnknown, "value"}} {
		smp := scrape.SyntheticSample(labels.FromStrings("__name__", "m"), tc.typ, 1, 0)
		if err := c.Append(&smp); err != nil {
			t.Fatal(err)
		}
		if f := string(c.sc.names); f != tc.field {
			t.Errorf("type %s: field = %q, want %q", tc.typ, f, tc.field)
		}
		c.Rollback()
	}
}

func TestMetricRelabeling(t *testing.T) {
	var cfgs []*relabel.Config
	if err := yaml.Unmarshal([]byte(`
- source_labels: [__name__]
  regex: drop_me
  action: drop
- source_labels: [node]
  target_label: host
- regex: node
  action: labeldrop
`), &cfgs); err != nil {
		t.Fatal(err)
	}
	for _, c := range cfgs {
		if err := c.Validate(model.UTF8Validation); err != nil {
			t.Fatal(err)
		}
	}
	w := &fakeWriter{}
	s, _ := New(fastConfig(), w, discard)
	tg := testTarget()
	c := s.Appender(tg, scrape.AppendOptions{MetricRelabelConfigs: cfgs}).(*converter)
	var got string
	c.emit = func(ch *chunk) error { got = string(ch.buf); return nil }
	body := []byte("# TYPE drop_me gauge\ndrop_me 1\n# TYPE kept gauge\nkept{a=\"1\"} 2\n# TYPE moved gauge\nmoved{node=\"n1\"} 3\n")
	want := "kept,a=1,instance=127.0.0.1:9323,job=docker gauge=2 1000\nmoved,host=n1,instance=127.0.0.1:9323,job=docker gauge=3 1000\n"
	p := scrape.NewParser()
	for i := 0; i < 3; i++ {
		if _, _, err := p.Parse(body, "text/plain", 1000, false, c); err != nil {
			t.Fatal(err)
		}
		if err := c.Commit(); err != nil {
			t.Fatal(err)
		}
		if got != want {
			t.Errorf("scrape %d:\n%s\nwant\n%s", i, got, want)
		}
	}
	if st := s.Stats(); st.Dropped[DropRelabeled.String()] != 3 {
		t.Errorf("dropped by relabeling = %d, want 3", st.Dropped[DropRelabeled.String()])
	}
	if len(c.decisions) != 3 {
		t.Errorf("%d relabeling decisions, want 3", len(c.decisions))
	}
	// Series that stop coming are forgotten.
	for i := 0; i < 3*evictAfter; i++ {
		smp := scrape.SyntheticSample(labels.FromStrings("__name__", "other"), model.MetricTypeGauge, 1, 1000)
		if err := c.Append(&smp); err != nil {
			t.Fatal(err)
		}
		if err := c.Commit(); err != nil {
			t.Fatal(err)
		}
	}
	if len(c.decisions) != 1 {
		t.Errorf("%d relabeling decisions after the others went away, want 1", len(c.decisions))
	}
}

// push commits n one-line scrapes of one sample each.
func push(t *testing.T, s *Sink, n int) {
	t.Helper()
	tg := testTarget()
	app := s.Appender(tg, scrape.AppendOptions{})
	for i := 0; i < n; i++ {
		smp := scrape.SyntheticSample(labels.FromStrings("__name__", "m", "i", fmt.Sprint(i)), model.MetricTypeGauge, float64(i), 1000)
		if err := app.Append(&smp); err != nil {
			t.Fatal(err)
		}
		if err := app.Commit(); err != nil {
			t.Fatal(err)
		}
	}
}

func fastConfig() Config {
	cfg := DefaultConfig()
	cfg.QueueDir = ""
	cfg.MinBackoff, cfg.MaxBackoff = time.Millisecond, 5*time.Millisecond
	cfg.FlushInterval = 10 * time.Millisecond
	return cfg
}

func runSink(t *testing.T, cfg Config, w Writer, work func(s *Sink)) StatsSnapshot {
	t.Helper()
	s, err := New(cfg, w, discard)
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error)
	go func() { done <- s.Run(context.Background()) }()
	work(s)
	s.Close()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	st := s.Stats()
	if st.QueuedSamples == 0 && st.QueuedBytes != 0 {
		t.Errorf("no samples queued but %d bytes", st.QueuedBytes)
	}
	if st.Scraped+st.Recovered != st.Written+st.DroppedTotal()+st.QueuedSamples {
		t.Errorf("scraped %d + recovered %d != written %d + dropped %d + queued %d", st.Scraped, st.Recovered, st.Written, st.DroppedTotal(), st.QueuedSamples)
	}
	return st
}

func TestBatchesBySize(t *testing.T) {
	cfg := fastConfig()
	cfg.BatchSize = 10
	cfg.FlushInterval = time.Hour
	fw := &fakeWriter{}
	st := runSink(t, cfg, fw, func(s *Sink) { push(t, s, 25) })
	if len(fw.bodies) != 3 {
		t.Fatalf("%d requests, want 3 (10+10+5 lines)", len(fw.bodies))
	}
	if st.Written != 25 {
		t.Errorf("written %d, want 25", st.Written)
	}
}

func TestFlushesByTime(t *testing.T) {
	fw := &fakeWriter{}
	runSink(t, fastConfig(), fw, func(s *Sink) {
		push(t, s, 3)
		deadline := time.Now().Add(5 * time.Second)
		for len(fw.lines()) < 3 && time.Now().Before(deadline) {
			time.Sleep(5 * time.Millisecond)
		}
		if n := len(fw.lines()); n != 3 {
			t.Errorf("%d lines written before Close, want 3 flushed by time", n)
		}
	})
}

func TestRetriesThenWritesInOrder(t *testing.T) {
	fw := &fakeWriter{answers: []error{
		errors.New("connection refused"),
		&WriteError{StatusCode: http.StatusServiceUnavailable, Message: "busy"},
		&WriteError{StatusCode: http.StatusTooManyRequests, RetryAfter: time.Millisecond},
	}}
	cfg := fastConfig()
	cfg.BatchSize = 1
	st := runSink(t, cfg, fw, func(s *Sink) { push(t, s, 5) })
	if st.Written != 5 || st.DroppedTotal() != 0 {
		t.Fatalf("written %d dropped %d, want 5 and 0", st.Written, st.DroppedTotal())
	}
	lines := fw.lines()
	for i, ln := range lines {
		if !strings.HasPrefix(ln, fmt.Sprintf("m,i=%d,", i)) {
			t.Fatalf("line %d out of order: %s", i, ln)
		}
	}
}

// rejecting refuses any body containing a poison marker, as InfluxDB does
// with a field type conflict.
type rejecting struct{ fakeWriter }

func (r *rejecting) Write(ctx context.Context, body []byte) error {
	if strings.Contains(string(body), "i=3,") {
		r.mu.Lock()
		r.calls++
		r.mu.Unlock()
		return &WriteError{StatusCode: http.StatusBadRequest, Message: "field type conflict"}
	}
	return r.fakeWriter.Write(ctx, body)
}

func TestRejectedLineIsolatedAndDropped(t *testing.T) {
	w := &rejecting{}
	cfg := fastConfig()
	cfg.BatchSize = 8
	cfg.FlushInterval = time.Hour
	st := runSink(t, cfg, w, func(s *Sink) { push(t, s, 8) })
	if st.Written != 7 || st.Dropped["rejected"] != 1 {
		t.Fatalf("written %d rejected %d, want 7 and 1", st.Written, st.Dropped["rejected"])
	}
	if got := strings.Join(w.lines(), "\n"); strings.Contains(got, "i=3,") {
		t.Errorf("poison line written: %s", got)
	}
}

func TestShutdownDeadlineCountsWhatIsLeft(t *testing.T) {
	down := &fakeWriter{}
	for i := 0; i < 10000; i++ {
		down.answers = append(down.answers, errors.New("down"))
	}
	cfg := fastConfig()
	cfg.ShutdownTimeout = 50 * time.Millisecond
	st := runSink(t, cfg, down, func(s *Sink) { push(t, s, 4) })
	if st.Dropped["shutdown"] != 4 || st.Written != 0 {
		t.Fatalf("dropped at shutdown %d, written %d; want 4 and 0", st.Dropped["shutdown"], st.Written)
	}
}

func TestCountSamples(t *testing.T) {
	buf := []byte("m,a=x\\ y\\=z f=1,g=2 1000\nn\\ x v=3 1000\nh,le=+Inf 0.5=1,+Inf=2,sum=3,count=4 5\n")
	if n := countSamples(buf); n != 7 {
		t.Errorf("countSamples = %d, want 7", n)
	}
}

func TestParseRetryAfter(t *testing.T) {
	now := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	if d := parseRetryAfter("7", now); d != 7*time.Second {
		t.Errorf("seconds: %s", d)
	}
	if d := parseRetryAfter(now.Add(90*time.Second).Format(http.TimeFormat), now); d != 90*time.Second {
		t.Errorf("HTTP date: %s", d)
	}
	if d := parseRetryAfter("soon", now); d != 0 {
		t.Errorf("garbage: %s", d)
	}
}

func TestAppendFloat(t *testing.T) {
	for v, want := range map[float64]string{3: "3", -2: "-2", 0.25: "0.25", 1e20: "1e+20", 2.5e-7: "2.5e-07", math.MaxInt32: "2147483647"} {
		if got := string(appendFloat(nil, v)); got != want {
			t.Errorf("appendFloat(%v) = %s, want %s", v, got, want)
		}
	}
}

func TestShutdownSpillsToDiskQueue(t *testing.T) {
	down := &fakeWriter{}
	for i := 0; i < 10000; i++ {
		down.answers = append(down.answers, errors.New("down"))
	}
	cfg := fastConfig()
	cfg.ShutdownTimeout = 50 * time.Millisecond
	cfg.QueueDir = t.TempDir()
	st := runSink(t, cfg, down, func(s *Sink) { push(t, s, 4) })
	if st.DroppedTotal() != 0 || st.QueuedSamples != 4 {
		t.Fatalf("dropped %d queued %d, want 0 and 4", st.DroppedTotal(), st.QueuedSamples)
	}
	up := &fakeWriter{}
	st = runSink(t, cfg, up, func(s *Sink) {})
	if st.Recovered != 4 || st.Written != 4 {
		t.Fatalf("next run recovered %d wrote %d, want 4 and 4", st.Recovered, st.Written)
	}
}

func TestHonoredTimestampsOutOfRangeDropped(t *testing.T) {
	cfg := fastConfig()
	fw := &fakeWriter{}
	st := runSink(t, cfg, fw, func(s *Sink) {
		tg := testTarget()
		app := s.Appender(tg, scrape.AppendOptions{})
		body := "# TYPE m gauge\nm{a=\"ok\"} 1 1700000000000\nm{a=\"future\"} 2 9999999999999999\n"
		if _, _, err := scrape.NewParser().Parse([]byte(body), "text/plain", 1, true, app); err != nil {
			t.Fatal(err)
		}
		app.Commit()
	})
	if st.Dropped["out_of_range"] != 1 || st.Written != 1 {
		t.Fatalf("out_of_range %d written %d, want 1 and 1", st.Dropped["out_of_range"], st.Written)
	}
	if got := fw.lines(); len(got) != 1 || !strings.HasSuffix(got[0], " 1700000000000") {
		t.Errorf("lines %v", got)
	}
}

func TestOpenMetricsCreatedSkipped(t *testing.T) {
	tg := testTarget()
	s, _ := New(fastConfig(), &fakeWriter{}, discard)
	c := s.Appender(tg, scrape.AppendOptions{}).(*converter)
	var out []byte
	c.emit = func(ch *chunk) error { out = append(out, ch.buf...); return nil }
	body := "# TYPE req counter\nreq_total{a=\"x\"} 5\nreq_created{a=\"x\"} 1700000000\n# TYPE h histogram\nh_bucket{le=\"1.0\"} 1\nh_bucket{le=\"+Inf\"} 2\nh_count 2\nh_sum 3\nh_created 1700000000\n# EOF\n"
	if _, _, err := scrape.NewParser().Parse([]byte(body), "application/openmetrics-text; version=1.0.0", 1000, false, c); err != nil {
		t.Fatal(err)
	}
	c.Commit()
	got := string(out)
	if strings.Contains(got, "created") {
		t.Errorf("_created series written:\n%s", got)
	}
	for _, want := range []string{"req_total,a=x,instance=127.0.0.1:9323,job=docker counter=5 1000", "h,instance=127.0.0.1:9323,job=docker 1=1,+Inf=2,count=2,sum=3 1000"} {
		if !strings.Contains(got, want) {
			t.Errorf("missing %s in\n%s", want, got)
		}
	}
	// Without # EOF an OpenMetrics body fails.
	if _, _, err := scrape.NewParser().Parse([]byte("# TYPE a gauge\na 1\n"), "application/openmetrics-text; version=1.0.0", 1000, false, c); err == nil {
		t.Error("OpenMetrics body without # EOF accepted")
	}
	c.Rollback()
}

func TestExportedLabelsStayUnique(t *testing.T) {
	lines, _ := convert(t, LayoutV1, "# TYPE m gauge\nm{job=\"a\",exported_job=\"b\",instance=\"c\"} 1\n")
	want := "m,exported_exported_job=a,exported_instance=c,exported_job=b,instance=127.0.0.1:9323,job=docker gauge=1 1000"
	if len(lines) != 1 || lines[0] != want {
		t.Errorf("got %v\nwant %s", lines, want)
	}
}

func TestUnauthorizedKeepsData(t *testing.T) {
	fw := &fakeWriter{answers: []error{
		&WriteError{StatusCode: http.StatusUnauthorized, Message: "unauthorized access"},
		&WriteError{StatusCode: http.StatusNotFound, Message: "bucket not found"},
	}}
	cfg := fastConfig()
	cfg.BatchSize = 10
	st := runSink(t, cfg, fw, func(s *Sink) { push(t, s, 10) })
	if st.Written != 10 || st.DroppedTotal() != 0 || fw.calls != 3 {
		t.Fatalf("written %d dropped %d after %d calls, want 10, 0, 3", st.Written, st.DroppedTotal(), fw.calls)
	}
}

// A keep rule (Telegraf's namepass, translated) keeps the loop's own
// series: up and its two siblings are never relabeled, as in Prometheus.
func TestMetricRelabelingSparesSyntheticSeries(t *testing.T) {
	var cfgs []*relabel.Config
	if err := yaml.Unmarshal([]byte(`
- source_labels: [__name__]
  regex: engine_.*
  action: keep
`), &cfgs); err != nil {
		t.Fatal(err)
	}
	for _, c := range cfgs {
		if err := c.Validate(model.UTF8Validation); err != nil {
			t.Fatal(err)
		}
	}
	s, _ := New(fastConfig(), &fakeWriter{}, discard)
	tg := testTarget()
	c := s.Appender(tg, scrape.AppendOptions{MetricRelabelConfigs: cfgs}).(*converter)
	var got string
	c.emit = func(ch *chunk) error { got = string(ch.buf); return nil }
	body := []byte("# TYPE engine_x gauge\nengine_x 1\n# TYPE other gauge\nother 2\n")
	if _, _, err := scrape.NewParser().Parse(body, "text/plain", 1000, false, c); err != nil {
		t.Fatal(err)
	}
	up := scrape.SyntheticSample(labels.FromStrings("__name__", "up"), model.MetricTypeGauge, 1, 1000)
	up.Synthetic = true
	if err := c.Append(&up); err != nil {
		t.Fatal(err)
	}
	if err := c.Commit(); err != nil {
		t.Fatal(err)
	}
	want := "engine_x,instance=127.0.0.1:9323,job=docker gauge=1 1000\nup,instance=127.0.0.1:9323,job=docker gauge=1 1000\n"
	if got != want {
		t.Errorf("got\n%s\nwant\n%s", got, want)
	}
}

// A job's own layout wins over the sink's (Telegraf's metric_version per
// input).
func TestPerJobLayout(t *testing.T) {
	s, _ := New(fastConfig(), &fakeWriter{}, discard) // layout v1
	tg := testTarget()
	c := s.Appender(tg, scrape.AppendOptions{Layout: "v2", Measurement: "engines"}).(*converter)
	var got string
	c.emit = func(ch *chunk) error { got = string(ch.buf); return nil }
	if _, _, err := scrape.NewParser().Parse([]byte("# TYPE x gauge\nx 1\n"), "text/plain", 1000, false, c); err != nil {
		t.Fatal(err)
	}
	c.Commit()
	if want := "engines,instance=127.0.0.1:9323,job=docker x=1 1000\n"; got != want {
		t.Errorf("got %q, want %q", got, want)
	}
}

// A Commit after Close (a producer that did not stop first) neither
// panics nor goes uncounted.
func TestCommitAfterClose(t *testing.T) {
	st := runSink(t, fastConfig(), &fakeWriter{}, func(s *Sink) {
		push(t, s, 2)
		s.Close()
		push(t, s, 3)
	})
	if st.Written != 2 || st.Dropped["shutdown"] != 3 {
		t.Errorf("written %d, dropped at shutdown %d; want 2 and 3", st.Written, st.Dropped["shutdown"])
	}
}
