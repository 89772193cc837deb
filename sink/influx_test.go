package sink

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/klauspost/compress/gzip"

	"github.com/scrapeflux/scrapeflux/internal/servertest"
	"github.com/scrapeflux/scrapeflux/scrape"
)

// writeLines pushes n scrapes of one line each through s.
func writeLines(t *testing.T, s *Sink, from, n int) {
	t.Helper()
	tg := testTarget()
	app := s.Appender(tg, scrape.AppendOptions{})
	for i := from; i < from+n; i++ {
		body := fmt.Sprintf("# TYPE seq gauge\nseq{i=\"%d\"} %d\n", i, i)
		if _, _, err := scrape.NewParser().Parse([]byte(body), "text/plain", 1700000000000+int64(i), false, app); err != nil {
			t.Fatal(err)
		}
		if err := app.Commit(); err != nil {
			t.Fatal(err)
		}
	}
}

// TestWriterAnswersFromFakeServer drives the real InfluxWriter against a
// server doing what a real InfluxDB will not do on demand: 429 with
// Retry-After, 413 for big bodies, and hanging.
func TestWriterAnswersFromFakeServer(t *testing.T) {
	var calls atomic.Int64
	var mu sync.Mutex
	var got []string
	hang := make(chan struct{})
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/ping" { // as InfluxDB 1.8 answers
			w.Header().Set("X-Influxdb-Version", "1.8.10")
			w.Header().Set("X-Influxdb-Build", "OSS")
			w.WriteHeader(http.StatusNoContent)
			return
		}
		body, _ := io.ReadAll(r.Body)
		switch n := calls.Add(1); {
		case n == 1:
			w.Header().Set("Retry-After", "1")
			http.Error(w, `{"code":"too many requests","message":"slow down"}`, http.StatusTooManyRequests)
			return
		case n == 2:
			select { // hang until the client gives up
			case <-r.Context().Done():
			case <-hang:
			}
			return
		case len(body) > 200:
			http.Error(w, "too large", http.StatusRequestEntityTooLarge)
			return
		}
		mu.Lock()
		got = append(got, strings.Split(strings.TrimSpace(string(body)), "\n")...)
		mu.Unlock()
		w.WriteHeader(http.StatusNoContent)
	}))
	defer srv.Close()
	defer close(hang)
	w, err := NewInfluxWriter(InfluxConfig{URL: srv.URL, Bucket: "b", Timeout: 300 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	cfg := fastConfig()
	cfg.FlushInterval = time.Hour
	cfg.BatchSize = 8
	start := time.Now()
	st := runSink(t, cfg, w, func(s *Sink) { writeLines(t, s, 0, 8) })
	if time.Since(start) < time.Second {
		t.Errorf("Retry-After: 1 not honoured (took %s)", time.Since(start))
	}
	if st.Written != 8 || len(got) != 8 {
		t.Fatalf("written %d, server got %d lines, want 8: %v", st.Written, len(got), got)
	}
	for i, ln := range got {
		if !strings.HasPrefix(ln, fmt.Sprintf("seq,i=%d,", i)) {
			t.Fatalf("line %d out of order after splits: %s", i, ln)
		}
	}
}

// TestOutageLosesNothing writes through a real InfluxDB that goes away for
// several flush intervals: everything arrives afterwards, once. Gzip'd,
// the batches queued during the outage are sent merged, as concatenated
// gzip members, which InfluxDB reads as one body.
func TestOutageLosesNothing(t *testing.T) {
	plainAndGzip(t, "q", outage)
}

// plainAndGzip runs test against one real InfluxDB with plain and with
// gzip'd writes, each in a database of its own.
func plainAndGzip(t *testing.T, prefix string, test func(t *testing.T, srv *servertest.InfluxDB, db string, gz bool)) {
	srv := servertest.StartInfluxDB(t)
	for _, gz := range []bool{false, true} {
		t.Run(fmt.Sprintf("gzip=%v", gz), func(t *testing.T) {
			db := fmt.Sprintf("%s%v", prefix, gz)
			srv.CreateDB(t, db)
			test(t, srv, db, gz)
		})
	}
}

func outage(t *testing.T, srv *servertest.InfluxDB, db string, gz bool) {
	w, err := NewInfluxWriter(InfluxConfig{URL: srv.URL, Bucket: db, Timeout: time.Second, Gzip: gz})
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	cfg := fastConfig()
	cfg.QueueDir = t.TempDir()
	cfg.MaxBackoff = 200 * time.Millisecond
	cfg.FlushInterval = 50 * time.Millisecond
	cw := &countingWriter{w: w}
	var before int64
	st := runSink(t, cfg, cw, func(s *Sink) {
		writeLines(t, s, 0, 100)
		waitWritten(t, s, 100)
		srv.Stop()
		for i := 0; i < 10; i++ { // 10 x 100ms: many flush intervals
			writeLines(t, s, 100+i*100, 100)
			time.Sleep(100 * time.Millisecond)
		}
		if q := s.Stats().QueuedSamples; q < 1000 {
			t.Errorf("only %d samples queued during the outage", q)
		}
		if plain, gzipped := recordsOnDisk(t, cfg.QueueDir); gz && (gzipped == 0 || plain != 0) || !gz && (plain == 0 || gzipped != 0) {
			t.Errorf("queue holds %d plain and %d gzip'd records, want only %s ones", plain, gzipped, map[bool]string{false: "plain", true: "gzip'd"}[gz])
		}
		// Requests that failed while InfluxDB was away or restarting do
		// not count: only those it took.
		before = cw.succeeded.Load()
		restarted := time.Now()
		srv.Restart(t)
		waitWritten(t, s, 1100)
		t.Logf("replayed the outage's 1000 samples %s after InfluxDB came back", time.Since(restarted).Round(time.Millisecond))
	})
	if st.Written != 1100 || st.DroppedTotal() != 0 {
		t.Fatalf("written %d dropped %d, want 1100 and 0", st.Written, st.DroppedTotal())
	}
	if n := srv.Count(t, db, "seq", "gauge"); n != 1100 {
		t.Fatalf("InfluxDB holds %d points, want 1100", n)
	}
	// The outage queued at least 10 batches: after it they go merged.
	if n := cw.succeeded.Load() - before; n > 3 {
		t.Errorf("%d requests after the outage for its 1000 one-line scrapes, want them merged into few", n)
	}
}

// recordsOnDisk counts the plain and gzip'd records in a queue dir's
// segment files, by their magic.
func recordsOnDisk(t *testing.T, dir string) (plain, gzipped int) {
	t.Helper()
	names, _ := filepath.Glob(filepath.Join(dir, "*.seg"))
	for _, n := range names {
		data, err := os.ReadFile(n)
		if err != nil {
			t.Fatal(err)
		}
		plain += bytes.Count(data, []byte("2QFS"))
		gzipped += bytes.Count(data, []byte("3QFS"))
	}
	return plain, gzipped
}

func waitWritten(t *testing.T, s *Sink, n int64) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for s.Stats().Written < n {
		if time.Now().After(deadline) {
			t.Fatalf("written %d of %d within 30s", s.Stats().Written, n)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// TestRejectedLineRealInfluxDB: a field type conflict makes InfluxDB refuse
// one line; every other line lands and the drop is counted. Plain and
// compressed writes alike.
func TestRejectedLineRealInfluxDB(t *testing.T) {
	plainAndGzip(t, "r", rejectedLine)
}

func rejectedLine(t *testing.T, srv *servertest.InfluxDB, db string, gz bool) {
	w, err := NewInfluxWriter(InfluxConfig{URL: srv.URL, Bucket: db, Timeout: 5 * time.Second, Gzip: gz})
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	// "gauge" of seq is a string from now on in this shard.
	if err := w.Write(context.Background(), []byte("seq,i=x gauge=\"text\" 1700000000000\n")); err != nil {
		t.Fatal(err)
	}
	cfg := fastConfig()
	cfg.BatchSize = 60
	cfg.FlushInterval = time.Hour
	tg := testTarget()
	cw := &countingWriter{w: w}
	st := runSink(t, cfg, cw, func(s *Sink) {
		app := s.Appender(tg, scrape.AppendOptions{})
		body := "# TYPE other gauge\n"
		for i := 0; i < 49; i++ {
			body += fmt.Sprintf("other{i=\"%d\"} %d\n", i, i)
		}
		body += "# TYPE seq gauge\nseq{i=\"y\"} 1\n"
		if _, _, err := scrape.NewParser().Parse([]byte(body), "text/plain", 1700000000000, false, app); err != nil {
			t.Fatal(err)
		}
		app.Commit()
	})
	if st.Dropped["rejected"] != 1 || st.Written != 49 || st.Rejected["type_conflict"] != 1 {
		t.Fatalf("rejected %d (type conflict %d) written %d, want 1, 1 and 49", st.Dropped["rejected"], st.Rejected["type_conflict"], st.Written)
	}
	if n := srv.Count(t, db, "other", "gauge"); n != 49 {
		t.Fatalf("InfluxDB holds %d points of other, want 49", n)
	}
	// InfluxDB stored the good points of the partial write: nothing is
	// sent again.
	if cw.calls.Load() != 1 {
		t.Errorf("%d requests for one batch with one conflicting line, want 1", cw.calls.Load())
	}

	// A key over InfluxDB's 64 KiB limit: refused by name, the rest stored.
	// InfluxDB 1.x cuts its X-Influxdb-Error header at 1 KiB, but its JSON
	// body holds the whole answer, "dropped=N" included, and the body is
	// what is read: one request (two before, when the header was read, and
	// the batch's other lines were sent twice).
	cw.calls.Store(0)
	st = runSink(t, cfg, cw, func(s *Sink) {
		app := s.Appender(tg, scrape.AppendOptions{})
		body := "# TYPE long gauge\n"
		for i := 0; i < 20; i++ {
			body += fmt.Sprintf("long{i=\"%d\"} %d\n", i, i)
		}
		body += "long{i=\"big\",pad=\"" + strings.Repeat("x", 70<<10) + "\"} 1\n"
		if _, _, err := scrape.NewParser().Parse([]byte(body), "text/plain", 1700000000000, false, app); err != nil {
			t.Fatal(err)
		}
		app.Commit()
	})
	if st.Dropped["rejected"] != 1 || st.Written != 20 || st.Rejected["parse"] != 1 {
		t.Fatalf("long key: rejected %d (parse %d) written %d, want 1, 1, 20", st.Dropped["rejected"], st.Rejected["parse"], st.Written)
	}
	if n := srv.Count(t, db, "long", "gauge"); n != 20 {
		t.Fatalf("InfluxDB holds %d points of long, want 20", n)
	}
	if cw.calls.Load() != 1 {
		t.Errorf("%d requests for a batch with one over-long key, want 1", cw.calls.Load())
	}
}

type countingWriter struct {
	w         Writer
	calls     atomic.Int64
	succeeded atomic.Int64 // calls InfluxDB took
}

func (c *countingWriter) count(err error) error {
	c.calls.Add(1)
	if err == nil {
		c.succeeded.Add(1)
	}
	return err
}

func (c *countingWriter) Write(ctx context.Context, body []byte) error {
	return c.count(c.w.Write(ctx, body))
}

// countingWriter passes compression on, so the sink queues batches gzip'd
// when w does.
func (c *countingWriter) Compresses() bool {
	cw, ok := c.w.(CompressingWriter)
	return ok && cw.Compresses()
}

func (c *countingWriter) WriteCompressed(ctx context.Context, body []byte) error {
	return c.count(c.w.(CompressingWriter).WriteCompressed(ctx, body))
}

// TestGzipWrite checks what a compressed write sends: the body gzipped, the
// credentials, and the write endpoint with org, bucket and precision.
func TestGzipWrite(t *testing.T) {
	var mu sync.Mutex
	var got []string
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		defer mu.Unlock()
		zr, err := gzip.NewReader(r.Body)
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		body, _ := io.ReadAll(zr)
		got = append(got, r.Header.Get("Content-Encoding"), r.Header.Get("Authorization"), r.URL.String(), string(body))
		w.WriteHeader(http.StatusNoContent)
	}))
	defer srv.Close()
	w, err := NewInfluxWriter(InfluxConfig{URL: srv.URL, Org: "o", Bucket: "db/rp", Token: "secret", Timeout: time.Second, Gzip: true})
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	body := strings.Repeat("m,t=a value=1 1700000000000\n", 500)
	for i := 0; i < 2; i++ { // the second write reuses the compressor
		if err := w.Write(context.Background(), []byte(body)); err != nil {
			t.Fatal(err)
		}
	}
	want := []string{"gzip", "Token secret", "/api/v2/write?bucket=db%2Frp&org=o&precision=ms", body}
	mu.Lock()
	defer mu.Unlock()
	if len(got) != 8 {
		t.Fatalf("server saw %d fields, want 8", len(got))
	}
	for i, g := range got {
		if g != want[i%4] {
			t.Errorf("write %d: got %.80q, want %.80q", i/4, g, want[i%4])
		}
	}
}

// TestCreatesMissingDatabase: InfluxDB 1.8 answers 404 "database not
// found"; with CreateDatabase the sink creates it and the data lands,
// without it the data stays queued and the log says what to do.
func TestCreatesMissingDatabase(t *testing.T) {
	srv := servertest.StartInfluxDB(t)
	w, err := NewInfluxWriter(InfluxConfig{URL: srv.URL, Bucket: "fresh/autogen", Timeout: 5 * time.Second, Gzip: true})
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	cfg := fastConfig()
	cfg.CreateDatabase = true
	st := runSink(t, cfg, w, func(s *Sink) { push(t, s, 5) })
	if st.Written != 5 {
		t.Fatalf("written %d, want 5 into the created database", st.Written)
	}
	if n := srv.Count(t, "fresh", "m", "gauge"); n != 5 {
		t.Fatalf("InfluxDB holds %d points, want 5", n)
	}

	w2, err := NewInfluxWriter(InfluxConfig{URL: srv.URL, Bucket: "missing", Timeout: 5 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	defer w2.Close()
	var logs lockedLog
	cfg.CreateDatabase = false
	cfg.ShutdownTimeout = 200 * time.Millisecond
	s, err := New(cfg, w2, slog.New(slog.NewTextHandler(&logs, nil)))
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error)
	go func() { done <- s.Run(context.Background()) }()
	push(t, s, 3)
	deadline := time.Now().Add(5 * time.Second)
	for !strings.Contains(logs.String(), "database does not exist") && time.Now().Before(deadline) {
		time.Sleep(20 * time.Millisecond)
	}
	s.Close()
	<-done
	if !strings.Contains(logs.String(), "database does not exist: create it") {
		t.Errorf("the log does not say to create the database:\n%s", logs.String())
	}
	if st := s.Stats(); st.Written != 0 || st.Dropped["rejected"] != 0 {
		t.Errorf("written %d rejected %d without the database", st.Written, st.Dropped["rejected"])
	}
}

type lockedLog struct {
	mu sync.Mutex
	b  strings.Builder
}

func (l *lockedLog) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedLog) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// /ping of the real InfluxDB 1.8.10 tells its build (OSS) and, built from
// the module as here, the version "unknown": the 1.x API.
func TestDetectRealInfluxDB(t *testing.T) {
	srv := servertest.StartInfluxDB(t)
	w, err := NewInfluxWriter(InfluxConfig{URL: srv.URL, Bucket: "db", Timeout: 5 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	si, err := w.Detect(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if si.API != APIv1 || si.Version == "" || si.Build != "OSS" {
		t.Fatalf("read as %+v, want an OSS build on the v1 API", si)
	}
}

// Points beyond the retention policy are counted exactly, against the real
// InfluxDB 1.8 and the 2.x stand-in (422): the answer says only how many points (dropped=N); they
// are the N oldest, whose samples are counted line by line. Before, the
// count was N times the batch's average samples per line (over-counted
// by 31-67 % when old and new scrapes differ in shape).
func TestBeyondRetentionCountedExactly(t *testing.T) {
	t.Run("influxdb-1.8", func(t *testing.T) {
		srv := servertest.StartInfluxDB(t)
		srv.Query(t, "", `CREATE DATABASE ret WITH DURATION 1h`)
		w, err := NewInfluxWriter(InfluxConfig{URL: srv.URL, Bucket: "ret", Timeout: 5 * time.Second})
		if err != nil {
			t.Fatal(err)
		}
		defer w.Close()
		checkBeyondRetention(t, w)
	})
	// 2.x answers 422 with the same words and stores the rest.
	t.Run("2.x", func(t *testing.T) {
		f := newFakeInflux(t, 2)
		f.retention = time.Hour
		w, err := NewInfluxWriter(InfluxConfig{URL: f.srv.URL, Bucket: "ret", Org: "o", Token: "tok", Timeout: 5 * time.Second})
		if err != nil {
			t.Fatal(err)
		}
		defer w.Close()
		checkBeyondRetention(t, w)
		if stored, _ := f.counts(); stored != 5*4 || f.expired != 5*12 || len(f.twice()) > 0 {
			t.Fatalf("the 2.x server stored %d lines (%d twice) and refused %d as expired; want 20 and 60", stored, len(f.twice()), f.expired)
		}
	})
}

// checkBeyondRetention writes 5 old scrapes (12 gauges each) and 5 new ones
// (4 histograms of 7 samples each) and checks the count of each.
func checkBeyondRetention(t *testing.T, w *InfluxWriter) {
	t.Helper()
	cfg := fastConfig()
	cfg.BatchSize = 1000
	cfg.FlushInterval = time.Hour
	now := time.Now().UnixMilli()
	old := now - 3*3600*1000
	st := runSink(t, cfg, w, func(s *Sink) {
		app := s.Appender(testTarget(), scrape.AppendOptions{})
		// Old scrapes: gauges, one sample a line. New ones: a histogram,
		// seven samples a line.
		for i := 0; i < 5; i++ {
			var body []byte
			for g := 0; g < 12; g++ {
				body = fmt.Appendf(body, "# TYPE g%d gauge\ng%d %d\n", g, g, i)
			}
			if _, _, err := scrape.NewParser().Parse(body, "text/plain", old+int64(i)*1000, false, app); err != nil {
				t.Fatal(err)
			}
			app.Commit()
		}
		for i := 0; i < 5; i++ {
			var body []byte
			for h := 0; h < 4; h++ {
				body = fmt.Appendf(body, "# TYPE h%d histogram\nh%d_bucket{le=\"1\"} 1\nh%d_bucket{le=\"2\"} 2\nh%d_bucket{le=\"5\"} 3\nh%d_bucket{le=\"10\"} 4\nh%d_bucket{le=\"+Inf\"} 5\nh%d_sum 9\nh%d_count 5\n", h, h, h, h, h, h, h, h)
			}
			if _, _, err := scrape.NewParser().Parse(body, "text/plain", now+int64(i)*1000, false, app); err != nil {
				t.Fatal(err)
			}
			app.Commit()
		}
	})
	if st.Rejected["retention"] != 60 || st.Written != 5*4*7 {
		t.Fatalf("rejected %v written %d; want exactly 60 samples beyond retention and 140 written", st.Rejected, st.Written)
	}
}
