package scrape

import (
	"bufio"
	"bytes"
	"compress/gzip"
	"context"
	"encoding/pem"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/scrapeflux/scrapeflux/discovery"

	"github.com/scrapeflux/scrapeflux/internal/servertest"
)

// connCounter serves body and counts the connections it accepted.
func connCounter(t *testing.T, h http.HandlerFunc) (*httptest.Server, *atomic.Int64) {
	var conns atomic.Int64
	srv := httptest.NewUnstartedServer(h)
	srv.Config.ConnState = func(_ net.Conn, s http.ConnState) {
		if s == http.StateNew {
			conns.Add(1)
		}
	}
	srv.Start()
	t.Cleanup(srv.Close)
	return srv, &conns
}

func newTestLoop(t *testing.T, cfg Config, url string) (*loop, *recorder) {
	t.Helper()
	tg, err := discovery.NewTarget(url, "test")
	if err != nil {
		t.Fatal(err)
	}
	client, err := NewHTTPClient(cfg)
	if err != nil {
		t.Fatal(err)
	}
	f, err := newFetcher(client, tg.URL, cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(f.close)
	r := &recorder{}
	return newLoop(tg, cfg, r, f, NewMetrics(), discard), r
}

// A target is scraped over one kept-alive connection.
func TestScrapesShareOneConnection(t *testing.T) {
	// Small bodies go with a Content-Length, large ones chunked.
	large := body + strings.Repeat("filler_metric{n=\"x\"} 1\n", 5000)
	for _, c := range []struct {
		gz   bool
		body string
	}{{false, body}, {true, body}, {false, large}, {true, large}} {
		gz := c.gz
		zbody := gzipped(t, c.body)
		srv, conns := connCounter(t, func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Content-Type", "text/plain; version=0.0.4")
			if gz {
				w.Header().Set("Content-Encoding", "gzip")
				w.Write(zbody)
				return
			}
			w.Write([]byte(c.body))
		})
		cfg := testConfig()
		l, r := newTestLoop(t, cfg, srv.URL+"/metrics")
		for i := 0; i < 5; i++ {
			if i == 3 {
				// The connection outlives the scrape's deadline.
				time.Sleep(cfg.Timeout + 100*time.Millisecond)
			}
			l.scrape(context.Background(), time.Now(), time.Now(), 0)
		}
		checkScrapes(t, fmt.Sprintf("gzip %v", gz), l, r, 5, conns.Load(), 1)
	}
}

func gzipped(t testing.TB, s string) []byte {
	t.Helper()
	var b bytes.Buffer
	zw := gzip.NewWriter(&b)
	if _, err := io.WriteString(zw, s); err != nil {
		t.Fatal(err)
	}
	if err := zw.Close(); err != nil {
		t.Fatal(err)
	}
	return b.Bytes()
}

// A target that closes idle connections (a short idle timeout) is scraped
// on a new one, without a failed scrape.
func TestIdleConnectionClosedByTarget(t *testing.T) {
	var closed atomic.Int64
	var conns atomic.Int64
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Write([]byte(body))
	}))
	srv.Config.IdleTimeout = 50 * time.Millisecond
	srv.Config.ConnState = func(_ net.Conn, s http.ConnState) {
		switch s {
		case http.StateNew:
			conns.Add(1)
		case http.StateClosed:
			closed.Add(1)
		}
	}
	srv.Start()
	defer srv.Close()
	l, r := newTestLoop(t, testConfig(), srv.URL)
	for i := int64(1); i <= 3; i++ {
		l.scrape(context.Background(), time.Now(), time.Now(), 0)
		servertest.WaitFor(t, "the condition", 10*time.Second, func() bool { return closed.Load() == i })
	}
	checkScrapes(t, "", l, r, 3, conns.Load(), 3)
}

// A target that answers an idle connection on its own (here a 408, as
// some servers do before closing it) is not read as the next scrape's
// answer.
func TestUnaskedResponseOnIdleConnection(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	l, r := newTestLoop(t, testConfig(), "http://"+ln.Addr().String()+"/metrics")
	var wg sync.WaitGroup
	defer func() {
		l.fetcher.close() // ends the server's side of the connection
		ln.Close()
		wg.Wait()
	}()
	var accepted atomic.Int64
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			accepted.Add(1)
			wg.Add(1)
			go func() {
				defer wg.Done()
				defer c.Close()
				br := bufio.NewReader(c)
				if _, err := http.ReadRequest(br); err != nil {
					return
				}
				fmt.Fprintf(c, "HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s", len(body), body)
				// Later, once the client has read the answer.
				time.Sleep(20 * time.Millisecond)
				io.WriteString(c, "HTTP/1.1 408 Request Timeout\r\nContent-Length: 0\r\n\r\n")
				// Held open until the client closes it.
				io.Copy(io.Discard, br)
			}()
		}
	}()
	for i := 0; i < 3; i++ {
		// The 408 must have arrived before the next scrape looks.
		time.Sleep(100 * time.Millisecond)
		l.scrape(context.Background(), time.Now(), time.Now(), 0)
	}
	checkScrapes(t, "", l, r, 3, accepted.Load(), 3)
}

// A target that asks to close the connection after each answer is dialled
// again each time.
func TestConnectionCloseHonoured(t *testing.T) {
	srv, conns := connCounter(t, func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Connection", "close")
		w.Write([]byte(body))
	})
	l, r := newTestLoop(t, testConfig(), srv.URL)
	for i := 0; i < 3; i++ {
		l.scrape(context.Background(), time.Now(), time.Now(), 0)
	}
	checkScrapes(t, "", l, r, 3, conns.Load(), 3)
}

// Stopping a loop ends a scrape in flight at once, not at its timeout.
func TestStopEndsScrapeInFlight(t *testing.T) {
	got := make(chan struct{})
	release := make(chan struct{})
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		close(got)
		select {
		case <-r.Context().Done():
		case <-release:
		}
	}))
	defer srv.Close()
	defer close(release)
	cfg := testConfig()
	cfg.Interval, cfg.Timeout = time.Minute, time.Minute
	l, r := newTestLoop(t, cfg, srv.URL)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		l.scrape(ctx, time.Now(), time.Now(), 0)
	}()
	<-got
	cancel()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		t.Fatal("scrape still running 10s after its loop stopped (timeout 1m)")
	}
	if len(r.commits) != 0 || r.rollbacks != 1 {
		t.Fatalf("%d commits, %d rollbacks: a stopped scrape writes nothing", len(r.commits), r.rollbacks)
	}
}

// A target behind a proxy is scraped through the shared client, which
// speaks to the proxy.
func TestProxiedTargetUsesClient(t *testing.T) {
	var proxied atomic.Int64
	proxy := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.IsAbs() {
			proxied.Add(1)
		}
		w.Write([]byte(body))
	}))
	defer proxy.Close()
	pu, _ := url.Parse(proxy.URL)
	cfg := testConfig()
	client, err := NewHTTPClient(cfg)
	if err != nil {
		t.Fatal(err)
	}
	client.Transport.(*http.Transport).Proxy = http.ProxyURL(pu)
	// The target's address is never dialled: the proxy answers for it.
	f, err := newFetcher(client, "http://192.0.2.1:9100/metrics", cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer f.close()
	if f.direct != nil {
		t.Fatal("a proxied target got its own connection")
	}
	b, _, err := f.fetch(context.Background(), "1")
	if err != nil || string(b) != body || proxied.Load() != 1 {
		t.Fatalf("fetch through the proxy: err %v, %d proxied requests, body %q", err, proxied.Load(), b)
	}
	f.release()
	client.CloseIdleConnections()
}

// An https target gets its own connection too, verified against the
// configured CA and kept alive across scrapes.
func TestTLSTargetSharesOneConnection(t *testing.T) {
	var conns atomic.Int64
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Write([]byte(body))
	}))
	srv.Config.ConnState = func(_ net.Conn, s http.ConnState) {
		if s == http.StateNew {
			conns.Add(1)
		}
	}
	srv.StartTLS()
	defer srv.Close()
	ca := filepath.Join(t.TempDir(), "ca.pem")
	if err := os.WriteFile(ca, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: srv.Certificate().Raw}), 0o600); err != nil {
		t.Fatal(err)
	}
	cfg := testConfig()
	cfg.TLS = TLSConfig{CAFile: ca, ServerName: "example.com"}
	l, r := newTestLoop(t, cfg, srv.URL)
	if l.fetcher.direct == nil || l.fetcher.direct.tls == nil {
		t.Fatal("an https target did not get its own TLS connection")
	}
	for i := 0; i < 3; i++ {
		l.scrape(context.Background(), time.Now(), time.Now(), 0)
	}
	checkScrapes(t, "", l, r, 3, conns.Load(), 1)

	// Without the CA the certificate is refused, with the reason.
	cfg.TLS = TLSConfig{}
	l, _ = newTestLoop(t, cfg, srv.URL)
	l.scrape(context.Background(), time.Now(), time.Now(), 0)
	if st := l.snapshot(); st.FailuresTotal != 1 || !strings.Contains(st.LastError, "certificate") {
		t.Fatalf("unknown CA: %d failures, last error %q", st.FailuresTotal, st.LastError)
	}
}

// A target sending headers without end fails its scrape once they pass
// the cap, long before the timeout, holding no more than the cap.
func TestEndlessHeadersFailTheScrape(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	defer func() {
		ln.Close()
		wg.Wait()
	}()
	wg.Add(1)
	go func() {
		defer wg.Done()
		c, err := ln.Accept()
		if err != nil {
			return
		}
		defer c.Close()
		if _, err := http.ReadRequest(bufio.NewReader(c)); err != nil {
			return
		}
		io.WriteString(c, "HTTP/1.1 200 OK\r\n")
		line := "X-Filler: " + strings.Repeat("a", 1000) + "\r\n"
		// Bounded: 10 MiB of headers at most, ended by the client's close.
		for i := 0; i < 10<<10; i++ {
			if _, err := io.WriteString(c, line); err != nil {
				return
			}
		}
	}()
	cfg := testConfig()
	cfg.Timeout = time.Minute
	l, r := newTestLoop(t, cfg, "http://"+ln.Addr().String()+"/metrics")
	l.scrape(context.Background(), time.Now(), time.Now(), 0)
	st := l.snapshot()
	if st.FailuresTotal != 1 || !strings.Contains(st.LastError, "response headers exceed") || len(r.commits) != 1 {
		t.Fatalf("%d failures, %d commits, last error %q", st.FailuresTotal, len(r.commits), st.LastError)
	}
	l.fetcher.close()
}

// checkScrapes fails the test unless every scrape of l succeeded, r got
// commits of them and the target saw conns connections.
func checkScrapes(t *testing.T, what string, l *loop, r *recorder, commits int, conns, wantConns int64) {
	t.Helper()
	if st := l.snapshot(); st.FailuresTotal != 0 {
		t.Fatalf("%s: %d failures, last: %s", what, st.FailuresTotal, st.LastError)
	}
	if len(r.commits) != commits || conns != wantConns {
		t.Fatalf("%s: %d commits over %d connections, want %d over %d", what, len(r.commits), conns, commits, wantConns)
	}
}

// A target that sends 103 Early Hints before its 200 is scraped, over its
// kept-alive connection, as net/http's client would (before: "server
// returned HTTP status 103" and up=0 forever). Endless 1xx answers fail.
func TestEarlyHintsSkipped(t *testing.T) {
	for _, c := range []struct {
		hints int
		ok    bool
	}{{1, true}, {3, true}, {20, false}} {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		var wg sync.WaitGroup
		wg.Add(1)
		go func() {
			defer wg.Done()
			conn, err := ln.Accept()
			if err != nil {
				return
			}
			defer conn.Close()
			br := bufio.NewReader(conn)
			for i := 0; i < 2; i++ { // two scrapes on one connection
				if _, err := http.ReadRequest(br); err != nil {
					return
				}
				for h := 0; h < c.hints; h++ {
					io.WriteString(conn, "HTTP/1.1 103 Early Hints\r\nLink: </style.css>; rel=preload\r\n\r\n")
				}
				body := "# TYPE hinted gauge\nhinted 1\n"
				fmt.Fprintf(conn, "HTTP/1.1 200 OK\r\nContent-Type: text/plain; version=0.0.4\r\nContent-Length: %d\r\n\r\n%s", len(body), body)
			}
		}()
		l, r := newTestLoop(t, testConfig(), "http://"+ln.Addr().String()+"/metrics")
		for i := 0; i < 2 && (c.ok || i == 0); i++ {
			l.scrape(context.Background(), time.Now(), time.Now(), 0)
		}
		st := l.snapshot()
		if c.ok && (st.FailuresTotal != 0 || len(r.commits) != 2) {
			t.Errorf("%d hints: %d failures (%s), %d commits", c.hints, st.FailuresTotal, st.LastError, len(r.commits))
		}
		if !c.ok && (st.FailuresTotal != 1 || !strings.Contains(st.LastError, "informational")) {
			t.Errorf("%d hints: %d failures, last error %q", c.hints, st.FailuresTotal, st.LastError)
		}
		l.fetcher.close()
		ln.Close()
		wg.Wait()
	}
}

// After a step of the wall clock (NTP) or a pause of the process
// (SIGSTOP), every scrape is still stamped with a slot on the wall
// clock's grid, close to the wall clock's now: a slot woken long after
// (or before) its time is skipped, not scraped late with its old stamp.
// Before, the schedule kept the monotonic grid, so a step put the points
// off the grid replicas share, and a resumed replica stamped values
// scraped 15 s late with the slot of its pause.
func TestSlotsFollowTheWallClock(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "x 1\n") }))
	defer srv.Close()
	cfg := testConfig()
	cfg.Interval, cfg.Timeout = 100*time.Millisecond, 50*time.Millisecond
	l, r := newTestLoop(t, cfg, srv.URL+"/metrics")
	var mu sync.Mutex
	var shift time.Duration
	// steps counts the steps of the clock; atStart, the steps when the
	// loop last read its clock (before each scrape): a scrape the clock
	// stepped under is not checked against it.
	var steps, atStart int
	type stamp struct {
		ts, wall int64
		stepped  bool
	}
	var stamps []stamp
	took := map[int64]float64{} // each slot's scrape_duration_seconds
	l.now = func() time.Time {
		mu.Lock()
		defer mu.Unlock()
		atStart = steps
		return time.Now().Round(0).Add(shift)
	}
	l.app = appenderFunc{r, func(s *Sample) {
		mu.Lock()
		defer mu.Unlock()
		switch {
		case s.Synthetic && string(s.Name) == "up":
			stamps = append(stamps, stamp{s.Timestamp, time.Now().Add(shift).UnixMilli(), atStart != steps})
		case s.Synthetic && string(s.Name) == "scrape_duration_seconds":
			took[s.Timestamp] = s.Value
		}
	}}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { l.run(ctx); close(done) }()
	count := func() int { mu.Lock(); defer mu.Unlock(); return len(stamps) }
	servertest.WaitFor(t, "3 scrapes", 10*time.Second, func() bool { return count() >= 3 })
	mu.Lock()
	shift += time.Hour + 37*time.Millisecond // the wall clock steps forward
	steps++
	mu.Unlock()
	n := count()
	servertest.WaitFor(t, "3 scrapes after the step forward", 10*time.Second, func() bool { return count() >= n+3 })
	mu.Lock()
	shift -= 10*time.Minute + 13*time.Millisecond // and back
	steps++
	mu.Unlock()
	n = count()
	servertest.WaitFor(t, "3 scrapes after the step back", 10*time.Second, func() bool { return count() >= n+3 })
	mu.Lock()
	shift += 90 * time.Millisecond // a step just under an interval: its slot is skipped too
	steps++
	mu.Unlock()
	n = count()
	servertest.WaitFor(t, "3 scrapes after the short step", 10*time.Second, func() bool { return count() >= n+3 })
	cancel()
	<-done
	phase := int64(l.offset(time.Unix(0, 0))) / int64(time.Millisecond)
	mu.Lock()
	defer mu.Unlock()
	for _, s := range stamps {
		if s.ts%100 != phase%100 {
			t.Errorf("slot %d is off the grid (phase %d ms)", s.ts, phase%100)
		}
		// The scrape started at most half an interval (50 ms) from its
		// slot; up is appended after the fetch, which took what the
		// scrape's duration says, and 20 ms are left for what runs
		// between the two (the steps are of an hour and ten minutes).
		d, fetch := s.wall-s.ts, int64(took[s.ts]*1000)
		if (d < -50 || d > 50+fetch+20) && !s.stepped {
			t.Errorf("slot %d stamped %d ms from the wall clock (the scrape took %d ms)", s.ts, d, fetch)
		}
	}
	if l.snapshot().SkippedTotal == 0 {
		t.Error("no slot counted as skipped across two steps of the clock")
	}
}

// appenderFunc passes samples to an Appender, showing each to fn.
type appenderFunc struct {
	Appender
	fn func(*Sample)
}

func (a appenderFunc) Append(s *Sample) error { a.fn(s); return a.Appender.Append(s) }
