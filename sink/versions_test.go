package sink

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/cespare/xxhash/v2"
	"github.com/prometheus/prometheus/model/relabel"
	"go.yaml.in/yaml/v2"

	"github.com/scrapeflux/scrapeflux/scrape"
)

// scrapeWithRefusals commits n scrapes of one target, each with good
// gauges and bad ones the fake server refuses (layout v1: a line each).
func scrapeWithRefusals(t *testing.T, s *Sink, n, good, bad int) {
	t.Helper()
	app := s.Appender(testTarget(), scrape.AppendOptions{})
	for i := 0; i < n; i++ {
		var body []byte
		for g := 0; g < good; g++ {
			body = fmt.Appendf(body, "# TYPE good_%d gauge\ngood_%d %d\n", g, g, i)
		}
		for b := 0; b < bad; b++ {
			body = fmt.Appendf(body, "# TYPE %s_%d gauge\n%s_%d %d\n", refuseMark, b, refuseMark, b, i)
		}
		if _, _, err := scrape.NewParser().Parse(body, "text/plain", 1700000000000+int64(i)*1000, false, app); err != nil {
			t.Fatal(err)
		}
		if err := app.Commit(); err != nil {
			t.Fatal(err)
		}
	}
}

// Against InfluxDB 2.x and 3.x as they answer: what the server stored is
// never sent again, every refusal is counted exactly, and the requests a
// batch costs are bounded. 20 scrapes of 50 good and 3 refused samples,
// 5 scrapes a batch. Before: against 3.x, 17 requests per scrape, good
// lines stored twice, a seventh of the refusals counted.
func TestServerVersionsAnswers(t *testing.T) {
	for _, c := range []struct {
		major, maxRequests int
		gz                 bool
	}{
		{3, 4, false}, {3, 4, true},
		// 2.x names one refused line per answer and stores nothing: a
		// batch of 15 refused lines costs 16 requests.
		{2, 4 * 16, false}, {2, 4 * 16, true},
	} {
		t.Run(fmt.Sprintf("v%d/gzip=%t", c.major, c.gz), func(t *testing.T) {
			f := newFakeInflux(t, c.major)
			f.token = "tok" // asked on every write, and on 3.x's /ping
			w, err := NewInfluxWriter(InfluxConfig{URL: f.srv.URL, Bucket: "db", Org: "o", Token: "tok", Timeout: 5 * time.Second, Gzip: c.gz})
			if err != nil {
				t.Fatal(err)
			}
			defer w.Close()
			cfg := fastConfig()
			cfg.BatchSize = 5 * 53
			cfg.FlushInterval = time.Hour
			st := runSink(t, cfg, w, func(s *Sink) { scrapeWithRefusals(t, s, 20, 50, 3) })
			stored, requests := f.counts()
			if tw := f.twice(); len(tw) > 0 {
				t.Errorf("%d lines stored more than once, e.g. %q", len(tw), tw[0])
			}
			if want := 20 * 50; stored != want {
				t.Errorf("stored %d lines, want %d", stored, want)
			}
			if st.Rejected["other"]+st.Rejected["type_conflict"]+st.Rejected["parse"] != 60 || st.Dropped["rejected"] != 60 {
				t.Errorf("refusals counted %v (dropped %d), want 60", st.Rejected, st.Dropped["rejected"])
			}
			if requests > c.maxRequests {
				t.Errorf("%d write requests for 4 batches, want at most %d", requests, c.maxRequests)
			}
			want := map[int]string{2: "/api/v2/write", 3: "/api/v3/write_lp"}[c.major]
			if f.paths[want] != requests || f.pings == 0 || f.unauthorized != 0 {
				t.Errorf("requests by path %v after %d pings, want all to %s", f.paths, f.pings, want)
			}
			if info := w.Server(); info.API != map[int]API{2: APIv2, 3: APIv3}[c.major] || info.Version == "" {
				t.Errorf("server read as %+v", info)
			}
			t.Logf("v%d gzip=%t: %d requests, %d lines stored, rejected %v", c.major, c.gz, requests, stored, st.Rejected)
		})
	}
}

// InfluxDB 3 takes its token as a Bearer token on /api/v3/write_lp, and
// asks for it on /ping too: the version is read with the token, and a
// refused token is said as such (without it in the message).
func TestV3WritesWithBearerToken(t *testing.T) {
	f := newFakeInflux(t, 3)
	f.token = "apiv3_secret"
	w, err := NewInfluxWriter(InfluxConfig{URL: f.srv.URL, Bucket: "db", Token: "apiv3_secret", Timeout: 5 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	if si, err := w.Detect(context.Background()); err != nil || si.API != APIv3 || si.Build != "Core" {
		t.Fatalf("/ping read as %+v, %v; want 3.x Core", si, err)
	}
	if err := w.Write(context.Background(), []byte("m v=1 1\n")); err != nil {
		t.Fatal(err)
	}
	if f.auth != "Bearer apiv3_secret" || f.unauthorized != 0 {
		t.Fatalf("Authorization %q, %d requests refused", f.auth, f.unauthorized)
	}

	bad, err := NewInfluxWriter(InfluxConfig{URL: f.srv.URL, Bucket: "db", Token: "wrong_secret", Timeout: 5 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	defer bad.Close()
	_, err = bad.Detect(context.Background())
	if err == nil || !strings.Contains(err.Error(), "401") || !strings.Contains(err.Error(), "--influx-token-file") || strings.Contains(err.Error(), "wrong_secret") {
		t.Fatalf("a refused token at /ping: %v; want the 401, what to check, and no token", err)
	}
}

// A 413 never drops a good line: the body is split down to what the
// server takes, and later requests carry at most what was taken.
func TestTooLargeNeverDropsGoodLines(t *testing.T) {
	for _, major := range []int{2, 3} {
		t.Run(fmt.Sprint("v", major), func(t *testing.T) {
			f := newFakeInflux(t, major)
			f.maxBody = 4 << 10
			w, err := NewInfluxWriter(InfluxConfig{URL: f.srv.URL, Bucket: "db", Timeout: 5 * time.Second})
			if err != nil {
				t.Fatal(err)
			}
			defer w.Close()
			cfg := fastConfig()
			cfg.BatchSize = 20 * 50
			cfg.FlushInterval = time.Hour
			var s *Sink
			st := runSink(t, cfg, w, func(sk *Sink) { s = sk; scrapeWithRefusals(t, sk, 40, 50, 0) })
			stored, requests := f.counts()
			if st.Written != 2000 || stored != 2000 || st.DroppedTotal() != 0 || len(f.twice()) > 0 {
				t.Fatalf("written %d stored %d dropped %d twice %d, want 2000 2000 0 0", st.Written, stored, st.DroppedTotal(), len(f.twice()))
			}
			if wl := s.writeLines.Load(); wl >= int64(cfg.BatchSize) {
				t.Errorf("lines per request still %d after 413s", wl)
			}
			// Later batches go out in requests of at most half the lines
			// of the smallest request refused (rounded up, as the split):
			// only the first batch was ever sent whole, and nothing after
			// the last 413 is larger.
			f.mu.Lock()
			counts, refused := f.lineCounts, f.tooLarge
			f.mu.Unlock()
			if len(refused) == 0 {
				t.Fatal("no request was refused as too large: the test proves nothing")
			}
			whole, smallest := 0, counts[refused[0]]
			for _, c := range counts {
				if c >= cfg.BatchSize {
					whole++
				}
			}
			for _, i := range refused {
				smallest = min(smallest, counts[i])
			}
			if whole != 1 {
				t.Errorf("%d requests carried a whole batch of %d lines, want 1 (the first, refused)", whole, cfg.BatchSize)
			}
			for i := refused[len(refused)-1] + 1; i < len(counts); i++ {
				if counts[i] > (smallest+1)/2 {
					t.Errorf("request %d after the last 413 carries %d lines, want at most half of %d", i, counts[i], smallest)
				}
			}
			t.Logf("v%d: %d requests for 2,000 lines with a 4 KiB limit, %d lines per request after", major, requests, s.writeLines.Load())
		})
	}
}

// InfluxDB 1.x answers a write into a missing retention policy with 500:
// said as a configuration problem, and retried often enough that writes
// resume within seconds of the fix (28 s before, at the slowest backoff).
func TestMissingRetentionPolicyRetriedSoon(t *testing.T) {
	var logs lockedLog
	fw := &fakeWriter{answers: []error{&WriteError{StatusCode: 500, Message: "retention policy not found: rp30d"}}}
	cfg := fastConfig()
	cfg.MaxBackoff = 30 * time.Second
	s, err := New(cfg, fw, slog.New(slog.NewTextHandler(&logs, nil)))
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- s.Run(context.Background()) }()
	push(t, s, 1)
	start := time.Now()
	deadline := start.Add(10 * time.Second)
	for s.Stats().Written == 0 {
		if time.Now().After(deadline) {
			t.Fatal("not written within 10s of the fix")
		}
		time.Sleep(10 * time.Millisecond)
	}
	s.Close()
	<-done
	if took := time.Since(start); took > 5*time.Second {
		t.Errorf("written %s after the first refusal, want within 5s", took)
	}
	if !strings.Contains(logs.String(), "CREATE RETENTION POLICY") || strings.Contains(logs.String(), "overloaded") {
		t.Errorf("log does not say what to fix:\n%s", logs.String())
	}
}

// A password in --influx-url is refused, and the message does not repeat
// it.
func TestInfluxURLWithCredentialsRefused(t *testing.T) {
	for _, u := range []string{"http://admin:s3cr3t-pw@127.0.0.1:8086", "http://admin:s3cr3t-pw@[::1]:bad"} {
		c := InfluxConfig{URL: u, Bucket: "db", Timeout: time.Second}
		err := c.Validate()
		if err == nil {
			t.Fatalf("%s accepted", u)
		}
		if strings.Contains(err.Error(), "s3cr3t-pw") {
			t.Fatalf("the error repeats the password: %v", err)
		}
	}
	c := InfluxConfig{URL: "http://admin:s3cr3t-pw@127.0.0.1:8086", Bucket: "db", Timeout: time.Second}
	if err := c.Validate(); !strings.Contains(err.Error(), "--influx-token-file") {
		t.Fatalf("the error does not say what to do instead: %v", err)
	}
}

// Label limits fail a scrape with a message naming the label, never
// quoting a value that is too long; the direct and general ways agree.
func TestLabelLimits(t *testing.T) {
	long := strings.Repeat("v", 100<<10)
	for _, c := range []struct {
		name string
		opts scrape.AppendOptions
		body string
		want string // in the error; "" for none
	}{
		{"value over the default", scrape.AppendOptions{LabelValueLengthLimit: scrape.DefaultLabelValueLengthLimit}, `m{big="` + long + `"} 1` + "\n", `label "big" has a value of 102400 bytes`},
		{"value within", scrape.AppendOptions{LabelValueLengthLimit: 10}, `m{a="0123456789"} 1` + "\n", ""},
		{"value one past", scrape.AppendOptions{LabelValueLengthLimit: 10}, `m{a="0123456789x"} 1` + "\n", `label "a" has a value of 11 bytes`},
		{"name", scrape.AppendOptions{LabelNameLengthLimit: 5}, `m{abcdef="x"} 1` + "\n", `label name "abcdef" of 6 bytes`},
		{"count", scrape.AppendOptions{LabelLimit: 2}, `m{a="1",b="2",c="3"} 1` + "\n", "3 labels"},
	} {
		t.Run(c.name, func(t *testing.T) {
			s, err := New(fastConfig(), &fakeWriter{}, discard)
			if err != nil {
				t.Fatal(err)
			}
			app := s.Appender(testTarget(), c.opts)
			_, _, err = scrape.NewParser().Parse([]byte(c.body), "text/plain", 1700000000000, false, app)
			app.Rollback()
			switch {
			case c.want == "" && err != nil:
				t.Fatalf("refused: %v", err)
			case c.want != "" && (err == nil || !errors.Is(err, scrape.ErrLabelLimit) || !strings.Contains(err.Error(), c.want)):
				t.Fatalf("error %v, want ErrLabelLimit saying %q", err, c.want)
			case err != nil && len(err.Error()) > 1000:
				t.Fatalf("the error quotes the value: %d bytes", len(err.Error()))
			}
		})
	}
}

// A histogram whose family name is UTF-8 (quoted, as OpenTelemetry SDKs
// and client_golang serve it) is one histogram line with its bucket
// fields, sum and count, in both exposition formats; before, its TYPE
// line's quoted name was not tied to its samples and every bucket became
// an untyped line with an le tag.
func TestUTF8HistogramFamily(t *testing.T) {
	body := `# HELP "http.server.request.duration" Duration of HTTP server requests.
# TYPE "http.server.request.duration" histogram
{"http.server.request.duration_bucket","http.route"="/api",le="0.1"} 3
{"http.server.request.duration_bucket","http.route"="/api",le="+Inf"} 5
{"http.server.request.duration_sum","http.route"="/api"} 1.5
{"http.server.request.duration_count","http.route"="/api"} 5
`
	for _, ct := range []string{"text/plain; version=0.0.4; charset=utf-8; escaping=allow-utf-8", "application/openmetrics-text; version=1.0.0; charset=utf-8",
		"text/plain; version=1.0.0; charset=utf-8; escaping=allow-utf-8", "application/openmetrics-text; version=1.0.0; charset=utf-8; escaping=allow-utf-8", ""} {
		b := body
		if strings.HasPrefix(ct, "application/openmetrics") {
			b += "# EOF\n"
		}
		out, _, err := encodeWith(t, LayoutV1, []byte(b), nil, ct, true)
		if err != nil {
			t.Fatalf("%s: %v", ct, err)
		}
		lines := strings.Split(strings.TrimSpace(string(out)), "\n")
		if len(lines) != 1 || !strings.HasPrefix(lines[0], `http.server.request.duration,http.route=/api,`) ||
			!strings.Contains(lines[0], " 0.1=3,+Inf=5,sum=1.5,count=5 ") && !strings.Contains(lines[0], "0.1=3") {
			t.Fatalf("%s: want one histogram line, got:\n%s", ct, out)
		}
		for _, f := range []string{"0.1=3", "+Inf=5", "sum=1.5", "count=5"} {
			if !strings.Contains(lines[0], f) {
				t.Fatalf("%s: field %s missing:\n%s", ct, f, out)
			}
		}
		if strings.Contains(lines[0], "le=") {
			t.Fatalf("%s: le became a tag:\n%s", ct, out)
		}
	}
}

// A series whose first 64-bit hash equals another's does not take that
// series' relabeling decision: the decision is keyed by two independent
// hashes. (A real 64-bit collision cannot be found for a test; this
// plants a decision under the first hash as a colliding series would.)
func TestRelabelDecisionNotSharedOnHashCollision(t *testing.T) {
	s, err := New(fastConfig(), &fakeWriter{}, discard)
	if err != nil {
		t.Fatal(err)
	}
	rules := relabelRules(t, "- source_labels: [__name__]\n  regex: never_matches\n  action: drop\n")
	c := s.Appender(testTarget(), scrape.AppendOptions{MetricRelabelConfigs: rules}).(*converter)
	var out []byte
	c.emit = func(ch *chunk) error { out = append(out, ch.buf...); return nil }
	series := []byte(`kept{a="1"}`)
	// Another series, colliding on xxhash, was dropped earlier.
	c.decisions[seriesKey{xxhash.Sum64(series), 12345}] = decision{seen: c.gen, act: actDrop}
	if _, _, err := scrape.NewParser().Parse(append(series, " 1\n"...), "text/plain", testTS, false, c); err != nil {
		t.Fatal(err)
	}
	c.Commit()
	if !strings.Contains(string(out), "kept,a=1,") {
		t.Fatalf("the series took a colliding series' drop decision:\n%s", out)
	}
}

func relabelRules(t *testing.T, y string) []*relabel.Config {
	t.Helper()
	var cfgs []*relabel.Config
	if err := yaml.Unmarshal([]byte(y), &cfgs); err != nil {
		t.Fatal(err)
	}
	return cfgs
}

// A target's series limit holds back samples of new series past it,
// counts them, and keeps the series it has flowing; the target stays up.
func TestSeriesLimit(t *testing.T) {
	s, err := New(fastConfig(), &fakeWriter{}, discard)
	if err != nil {
		t.Fatal(err)
	}
	c := s.Appender(testTarget(), scrape.AppendOptions{SeriesLimit: 5}).(*converter)
	var out []byte
	c.emit = func(ch *chunk) error { out = append(out, ch.buf...); return nil }
	scrapeN := func(from, n int) {
		var body []byte
		for i := from; i < from+n; i++ {
			body = fmt.Appendf(body, "req{id=\"%d\"} 1\n", i)
		}
		if _, _, err := scrape.NewParser().Parse(body, "text/plain", testTS, false, c); err != nil {
			t.Fatal(err)
		}
		c.Commit()
	}
	scrapeN(0, 8)
	scrapeN(0, 8) // the same 8: the first 5 keep flowing
	scrapeN(8, 4) // 4 new ones: held back
	if n := strings.Count(string(out), "\n"); n != 10 {
		t.Fatalf("%d lines written, want 5 a scrape for two scrapes:\n%s", n, out)
	}
	st := s.Stats()
	if st.Dropped["series_limit"] != 3+3+4 {
		t.Fatalf("series_limit drops %d, want 10", st.Dropped["series_limit"])
	}
	card := c.Cardinality()
	if card.Series != 5 || card.Limit != 5 || card.Limited != 10 || card.NewLastHour != 5 {
		t.Fatalf("cardinality %+v", card)
	}
	// Which label makes the series: id, with the 12 values offered
	// (held back ones included).
	if len(card.Widest) != 1 || card.Widest[0].Name != "id" || card.Widest[0].Values != 12 {
		t.Fatalf("widest labels %+v", card.Widest)
	}
}

// The hourly budget over all targets: new series past it are held back,
// the known ones of every target keep flowing.
func TestHourlySeriesBudget(t *testing.T) {
	cfg := fastConfig()
	cfg.MaxHourlySeries = 10
	s, err := New(cfg, &fakeWriter{}, discard)
	if err != nil {
		t.Fatal(err)
	}
	var out []byte
	apps := []*converter{}
	for _, inst := range []string{"10.0.0.1:9323", "10.0.0.2:9323"} {
		c := s.Appender([]scrape.Tag{{Key: "instance", Value: inst}, {Key: "job", Value: "j"}}, scrape.AppendOptions{}).(*converter)
		c.emit = func(ch *chunk) error { out = append(out, ch.buf...); return nil }
		apps = append(apps, c)
	}
	for round := 0; round < 2; round++ {
		for _, c := range apps {
			var body []byte
			for i := 0; i < 8; i++ {
				body = fmt.Appendf(body, "m{i=\"%d\"} 1\n", i) // the same texts: other series on another target
			}
			if _, _, err := scrape.NewParser().Parse(body, "text/plain", testTS+int64(round), false, c); err != nil {
				t.Fatal(err)
			}
			c.Commit()
		}
	}
	if n := strings.Count(string(out), "\n"); n != 20 {
		t.Fatalf("%d lines over two rounds, want the 10 budgeted series twice", n)
	}
	used, limit, _, _, held := s.SeriesBudgets()
	if used != 10 || limit != 10 || held != 12 || s.Stats().Dropped["series_budget"] != 12 {
		t.Fatalf("budget used %d of %d, held %d, dropped %d", used, limit, held, s.Stats().Dropped["series_budget"])
	}
}

// A job's own budget bounds the new series of all its targets together,
// and what it holds back spends nothing of the global budget: a noisy job
// no longer takes the budget of every other. Every budget's drops are
// counted by job.
func TestJobSeriesBudget(t *testing.T) {
	cfg := fastConfig()
	cfg.MaxHourlySeries = 300
	s, err := New(cfg, &fakeWriter{}, discard)
	if err != nil {
		t.Fatal(err)
	}
	lines := map[string]int{}
	app := func(job, inst string, o scrape.AppendOptions) *converter {
		o.Job = job
		c := s.Appender([]scrape.Tag{{Key: "instance", Value: inst}, {Key: "job", Value: job}}, o).(*converter)
		c.emit = func(ch *chunk) error { lines[job] += strings.Count(string(ch.buf), "\n"); return nil }
		return c
	}
	noisy := []*converter{
		app("noisy", "10.0.0.1:9323", scrape.AppendOptions{MaxHourlySeries: 100}),
		app("noisy", "10.0.0.2:9323", scrape.AppendOptions{MaxHourlySeries: 100}),
	}
	quiet := app("quiet", "10.0.0.3:9323", scrape.AppendOptions{})
	scrapeOf := func(c *converter, prefix string, n int) {
		var body []byte
		for i := 0; i < n; i++ {
			body = fmt.Appendf(body, "m{id=\"%s-%d\"} 1\n", prefix, i)
		}
		if _, _, err := scrape.NewParser().Parse(body, "text/plain", testTS, false, c); err != nil {
			t.Fatal(err)
		}
		c.Commit()
	}
	// The noisy job first: 2 targets inventing 250 series each.
	for i, c := range noisy {
		scrapeOf(c, fmt.Sprint("n", i), 250)
	}
	scrapeOf(quiet, "q", 150)
	if lines["noisy"] != 100 || lines["quiet"] != 150 {
		t.Fatalf("lines written: %v; want 100 of the noisy job (its budget, both targets together) and all 150 of the quiet one", lines)
	}
	used, limit, _, _, _ := s.SeriesBudgets()
	if used != 250 || limit != 300 {
		t.Fatalf("the global budget counted %d of %d; want only the 250 series let through", used, limit)
	}
	got := map[string]JobBudget{}
	for _, b := range s.JobBudgets() {
		got[b.Job] = b
	}
	if n := got["noisy"]; n.HourUsed != 100 || n.HourLimit != 100 || n.DroppedSamples != 400 || n.DayLimit != 0 {
		t.Fatalf("noisy job's budget %+v; want 100 of 100 used and 400 samples held back", n)
	}
	if q, ok := got["quiet"]; !ok || q.DroppedSamples != 0 || q.HourLimit != 0 {
		t.Fatalf("quiet job's budget %+v (listed %v); want no budget of its own and nothing held back", q, ok)
	}
	// The global budget holds back too, counted by the job it held back:
	// 50 left of 300.
	scrapeOf(quiet, "q2", 80)
	if q := s.JobBudgets()[1]; q.Job != "quiet" || q.DroppedSamples != 30 || s.Stats().Dropped["series_budget"] != 430 {
		t.Fatalf("after the global budget filled: %+v, dropped %d; want 30 of the quiet job's samples held back, 430 in all", q, s.Stats().Dropped["series_budget"])
	}
	// A job that changes its budget on reload starts it afresh.
	again := app("noisy", "10.0.0.1:9323", scrape.AppendOptions{MaxHourlySeries: 200})
	if again.job == noisy[0].job || again.job.hourly.limit != 200 {
		t.Fatal("a changed budget kept the old one")
	}
}
