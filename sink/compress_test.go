package sink

import (
	"bytes"
	"compress/gzip"
	"context"
	"errors"
	"fmt"
	"io"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/scrapeflux/scrapeflux/scrape"
)

// gzipFake takes gzip'd bodies as InfluxDB does (Go's own gzip reader,
// which reads concatenated members as one stream) and records their lines.
// Until open is closed (when it is not nil) every write fails.
type gzipFake struct {
	fakeWriter
	open       chan struct{}
	compressed atomic.Int64 // requests that came gzip'd
	members    atomic.Int64 // gzip members in them
	// firstMember reads only a body's first gzip member and ignores the
	// rest without an error, as InfluxDB 3 releases whose
	// influxdb3_server/src/http.rs decodes with flate2's GzDecoder (not
	// MultiGzDecoder) do.
	firstMember bool
}

func (g *gzipFake) Compresses() bool { return true }

func (g *gzipFake) closed() bool {
	if g.open == nil {
		return false
	}
	select {
	case <-g.open:
		return false
	default:
		return true
	}
}

func (g *gzipFake) Write(ctx context.Context, body []byte) error {
	if g.closed() {
		return errors.New("connection refused")
	}
	return g.fakeWriter.Write(ctx, body)
}

func (g *gzipFake) WriteCompressed(ctx context.Context, body []byte) error {
	if g.closed() {
		return errors.New("connection refused")
	}
	zr, err := gzip.NewReader(bytes.NewReader(body))
	var plain []byte
	if err == nil {
		zr.Multistream(!g.firstMember)
		plain, err = io.ReadAll(zr)
	}
	if err != nil {
		return &WriteError{StatusCode: 400, Message: "unable to read gzip'd body: " + err.Error()}
	}
	g.compressed.Add(1)
	g.members.Add(int64(countMembers(body)))
	return g.fakeWriter.Write(ctx, plain)
}

// countMembers counts the gzip members of body.
func countMembers(body []byte) int {
	br := bytes.NewReader(body)
	zr, err := gzip.NewReader(br)
	n := 0
	for err == nil {
		zr.Multistream(false)
		if _, err = io.Copy(io.Discard, zr); err == nil {
			n++
			err = zr.Reset(br)
		}
	}
	return n
}

// pushLines commits scrapes of perScrape lines each, numbered from from.
func pushLines(t *testing.T, s *Sink, from, scrapes, perScrape int) {
	t.Helper()
	for i := 0; i < scrapes; i++ {
		var b strings.Builder
		b.WriteString("# TYPE m gauge\n")
		for j := 0; j < perScrape; j++ {
			n := from + i*perScrape + j
			fmt.Fprintf(&b, "m{i=\"%d\"} %d\n", n, n)
		}
		app := s.Appender(testTarget(), scrape.AppendOptions{})
		if _, _, err := scrape.NewParser().Parse([]byte(b.String()), "text/plain", 1000, false, app); err != nil {
			t.Fatal(err)
		}
		if err := app.Commit(); err != nil {
			t.Fatal(err)
		}
	}
}

// Batches are compressed once, when sealed: the queue holds them gzip'd,
// a sixth of the bytes or less, and after an outage they are sent merged,
// every request one gzip member of the lines in order: a server that
// reads only the first member of a body (InfluxDB 3 releases decoding
// with GzDecoder) stores every line too.
func TestBatchesQueuedCompressed(t *testing.T) {
	for _, first := range []bool{false, true} {
		t.Run(fmt.Sprintf("first_member_only=%t", first), func(t *testing.T) { testBatchesQueuedCompressed(t, first) })
	}
}

func testBatchesQueuedCompressed(t *testing.T, firstMember bool) {
	w := &gzipFake{open: make(chan struct{}), firstMember: firstMember}
	cfg := fastConfig()
	cfg.QueueDir = t.TempDir()
	cfg.BatchSize = 2000
	var plainBytes int64
	st := runSink(t, cfg, w, func(s *Sink) {
		// 8 waves of 5 scrapes of 100 lines, each wave sealed (by time)
		// before the next: every record holds at most 500 lines.
		for wave := 0; wave < 8; wave++ {
			pushLines(t, s, wave*500, 5, 100)
			waitSealed(t, s, (wave+1)*500)
		}
		waitQueued(t, s, 4000)
		for _, ln := range linesOf(0, 4000) {
			plainBytes += int64(len(ln)) + 1
		}
		// Wait until the batcher sealed the last scrapes (by time).
		deadline := time.Now().Add(10 * time.Second)
		for {
			plain, gzipped := recordsOnDisk(t, cfg.QueueDir)
			q := s.Stats().QueuedBytes
			if plain == 0 && gzipped >= 2 && q*6 <= plainBytes {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("disk queue holds %d plain and %d gzip'd records, %d bytes queued for %d bytes of lines: want gzip'd records only, a sixth of the bytes or less", plain, gzipped, q, plainBytes)
			}
			time.Sleep(10 * time.Millisecond)
		}
		close(w.open)
		waitWritten(t, s, 4000)
	})
	if st.Written != 4000 {
		t.Fatalf("written %d, want 4000", st.Written)
	}
	if got, want := w.lines(), linesOf(0, 4000); strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Fatalf("lines written differ from the lines pushed (%d vs %d)", len(got), len(want))
	}
	// The job in flight when InfluxDB came back holds at most 500 lines
	// and is sent again as it is; the other 3,500 lines, in records of at
	// most 500, go merged up to 2,000 lines a request: each run but the
	// last holds more than 1,500 lines, so at most 3 runs.
	if w.calls != int(w.compressed.Load()) || w.calls > 4 {
		t.Errorf("%d requests, %d of them gzip'd: want every one gzip'd and at most 4 (merged up to 2000 lines)", w.calls, w.compressed.Load())
	}
	if w.members.Load() != int64(w.calls) {
		t.Errorf("%d gzip members in %d requests: want one a request", w.members.Load(), w.calls)
	}
}

// A queue left by a run with compression on is sent by a run with it off,
// and the other way round: records say how they are stored.
func TestCompressionChangedWithDataQueued(t *testing.T) {
	for _, order := range []string{"gzip then plain", "plain then gzip"} {
		t.Run(order, func(t *testing.T) {
			cfg := fastConfig()
			cfg.QueueDir = t.TempDir()
			var first, second Writer = &gzipFake{open: make(chan struct{})}, &fakeWriter{}
			if order == "plain then gzip" {
				first, second = &gatedWriter{open: make(chan struct{})}, &gzipFake{}
			}
			cfg.ShutdownTimeout = 100 * time.Millisecond
			runSink(t, cfg, first, func(s *Sink) {
				pushLines(t, s, 0, 10, 50)
				waitQueued(t, s, 500)
			})
			st := runSink(t, cfg, second, func(s *Sink) {
				pushLines(t, s, 500, 10, 50)
				waitWritten(t, s, 1000)
			})
			if st.Written != 1000 || st.Recovered != 500 || st.DroppedTotal() != 0 {
				t.Fatalf("written %d recovered %d dropped %d, want 1000, 500, 0", st.Written, st.Recovered, st.DroppedTotal())
			}
			var got []string
			switch w := second.(type) {
			case *gzipFake:
				got = w.lines()
			case *fakeWriter:
				got = w.lines()
			}
			if strings.Join(got, "\n") != strings.Join(linesOf(0, 1000), "\n") {
				t.Fatalf("lines written differ from the lines pushed, in order (%d vs 1000)", len(got))
			}
		})
	}
}

// linesOf is what pushLines' lines become.
func linesOf(from, n int) []string {
	var out []string
	for i := from; i < from+n; i++ {
		out = append(out, fmt.Sprintf("m,i=%d,instance=127.0.0.1:9323,job=docker gauge=%d 1000", i, i))
	}
	return out
}

func waitQueued(t *testing.T, s *Sink, n int64) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for s.Stats().QueuedSamples < n || s.Stats().Scraped < n {
		if time.Now().After(deadline) {
			t.Fatalf("queued %d of %d within 30s", s.Stats().QueuedSamples, n)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// waitSealed waits until the queue's records hold n lines: every scrape
// handed over so far is sealed into a batch.
func waitSealed(t *testing.T, s *Sink, n int) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		lines := s.q.Status().Lines
		if lines == n {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("queue records hold %d lines, want %d within 10s", lines, n)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// Scrape loops add their lines to the batch themselves: many committing at
// once, gzip'd or plain, with Close coming in the middle, every scrape is
// written whole exactly once or counted as dropped at shutdown, never
// half and never twice.
func TestConcurrentCommitsAndClose(t *testing.T) {
	for _, gz := range []bool{false, true} {
		t.Run(fmt.Sprintf("gzip=%v", gz), func(t *testing.T) {
			var w interface {
				Writer
				lines() []string
			} = &fakeWriter{}
			if gz {
				w = &gzipFake{}
			}
			cfg := fastConfig()
			cfg.QueueDir = t.TempDir()
			cfg.BatchSize = 70 // sealed by size mid-scrape often
			const loops, scrapes, perScrape = 8, 60, 10
			st := runSink(t, cfg, w, func(s *Sink) {
				var wg sync.WaitGroup
				for l := 0; l < loops; l++ {
					wg.Add(1)
					go func() {
						defer wg.Done()
						app := s.Appender([]scrape.Tag{{Key: "job", Value: fmt.Sprint(l)}}, scrape.AppendOptions{})
						for i := 0; i < scrapes; i++ {
							var b strings.Builder
							for j := 0; j < perScrape; j++ {
								fmt.Fprintf(&b, "m{i=\"%d\",j=\"%d\"} %d\n", i, j, j)
							}
							if _, _, err := scrape.NewParser().Parse([]byte(b.String()), "text/plain", int64(1000+i), false, app); err != nil {
								t.Error(err)
								return
							}
							if err := app.Commit(); err != nil {
								t.Error(err)
								return
							}
							if l == 0 && i == scrapes/2 {
								s.Close()
							}
						}
					}()
				}
				wg.Wait()
			})
			// Every sample is a line of its own (its own tag set).
			seen := map[string]bool{}
			for _, ln := range w.lines() {
				if seen[ln] {
					t.Fatalf("line written twice: %s", ln)
				}
				seen[ln] = true
			}
			if int64(len(seen)) != st.Written || len(seen)%perScrape != 0 {
				t.Errorf("%d lines written for %d samples: want one per sample, whole scrapes only", len(seen), st.Written)
			}
			if st.Written+st.Dropped[DropShutdown.String()] != loops*scrapes*perScrape || st.Written == 0 || st.Dropped[DropShutdown.String()] == 0 {
				t.Errorf("written %d + dropped at shutdown %d, want %d with some of each", st.Written, st.Dropped[DropShutdown.String()], loops*scrapes*perScrape)
			}
		})
	}
}

// A batch sealed past the batch size (one scrape larger than the batch:
// a batch is sealed after the commit that fills it) is sent whole and
// gzip'd as it was queued while InfluxDB never refused a size: only a
// 413 lowers the request size that splits a sealed batch (before, every
// such batch was decompressed, split in two and sent uncompressed: 9 %
// of the CPU at 10,000 targets).
func TestBatchOverSizeSentWholeWithout413(t *testing.T) {
	w := &gzipFake{open: make(chan struct{})}
	close(w.open)
	cfg := fastConfig()
	cfg.BatchSize = 100
	st := runSink(t, cfg, w, func(s *Sink) {
		pushLines(t, s, 0, 4, 300)
		waitWritten(t, s, 1200)
	})
	if st.Written != 1200 {
		t.Fatalf("written %d, want 1200", st.Written)
	}
	if w.calls != int(w.compressed.Load()) || w.calls > 4 {
		t.Errorf("%d requests, %d of them gzip'd: want every scrape's batch sent whole and gzip'd (at most 4 requests)", w.calls, w.compressed.Load())
	}
}
