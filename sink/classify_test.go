package sink

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"testing"
	"time"
)

func TestClassify(t *testing.T) {
	we := func(code int, msg string) error { return &WriteError{StatusCode: code, Message: msg} }
	cases := []struct {
		err  error
		want writeAction
		wait time.Duration
	}{
		{nil, actDone, 0},
		{errors.New("connection refused"), actRetry, 0},
		{context.DeadlineExceeded, actRetry, 0},
		{we(400, `unable to parse 'm v=': missing field value`), actBadData, 0},
		{we(400, `partial write: points beyond retention policy dropped=3`), actPartial, 0},
		{we(422, `failure writing points to database: partial write: field type conflict dropped=1`), actPartial, 0},
		{we(422, `unprocessable`), actBadData, 0},
		{we(413, `Request Entity Too Large`), actTooLarge, 0},
		{&WriteError{StatusCode: 429, RetryAfter: 7 * time.Second}, actRetry, 7 * time.Second},
		{&WriteError{StatusCode: 503, RetryAfter: time.Second}, actRetry, time.Second},
		{we(500, "engine: cache maximum memory size exceeded"), actRetry, 0},
		{we(502, "bad gateway"), actRetry, 0},
		{we(408, "timeout"), actRetry, 0},
		{we(401, "unauthorized"), actNeedsPerson, 0},
		{we(403, "forbidden"), actNeedsPerson, 0},
		{we(404, `database not found: "x"`), actNeedsPerson, 0},
		{we(405, "method not allowed"), actNeedsPerson, 0},
		{we(409, "conflict"), actNeedsPerson, 0},
		{we(410, "gone"), actNeedsPerson, 0},
		{we(301, "moved"), actNeedsPerson, 0},
	}
	for _, c := range cases {
		act, wait := classify(c.err)
		if act != c.want || wait != c.wait {
			t.Errorf("classify(%v) = %s, %s; want %s, %s", c.err, act, wait, c.want, c.wait)
		}
	}
}

func TestParseRefusal(t *testing.T) {
	msg := "partial write: unable to parse 'm,a=x': y v=1 1': invalid field format\nunable to parse 'bad line': missing fields dropped=2"
	r := parseRefusal(msg)
	if r.dropped != 2 || r.reason != "parse" {
		t.Errorf("dropped %d reason %s", r.dropped, r.reason)
	}
	if r.lines["m,a=x': y v=1 1"] != "invalid field format" || r.lines["bad line"] != "missing fields" || len(r.lines) != 2 {
		t.Errorf("lines %q", r.lines)
	}
	if r := parseRefusal("partial write: points beyond retention policy dropped=5"); r.dropped != 5 || r.reason != "retention" || len(r.lines) != 0 {
		t.Errorf("retention: %+v", r)
	}
}

// Intermittent failures log at most one failure line and one recovery
// line a minute, however often they alternate; a lasting failure is
// logged once a minute.
func TestWriteHealthDampsFlapping(t *testing.T) {
	var buf bytes.Buffer
	now := time.Unix(1000, 0)
	h := writeHealth{log: slog.New(slog.NewTextHandler(&buf, nil)), now: func() time.Time { return now }}
	err := errors.New("i/o timeout")
	for i := 0; i < 20; i++ { // 20 fail/ok pairs in 40 s
		h.fail(context.Background(), err, false, 0)
		now = now.Add(time.Second)
		h.ok()
		now = now.Add(time.Second)
	}
	if n := strings.Count(buf.String(), "cannot write"); n != 1 {
		t.Errorf("%d failure lines for 20 flaps in 40s, want 1:\n%s", n, buf.String())
	}
	if n := strings.Count(buf.String(), "recovered"); n != 1 {
		t.Errorf("%d recovery lines, want 1:\n%s", n, buf.String())
	}
	buf.Reset()
	for i := 0; i < 300; i++ { // a 5-minute outage, one attempt a second
		h.fail(context.Background(), err, false, 0)
		now = now.Add(time.Second)
	}
	if n := strings.Count(buf.String(), "cannot write"); n < 5 || n > 6 {
		t.Errorf("%d failure lines in a 5-minute outage, want one a minute:\n%s", n, buf.String())
	}
	if !strings.Contains(buf.String(), "what_to_do") {
		t.Errorf("failure line does not say what to do:\n%s", buf.String())
	}
}

// Batches queued while InfluxDB was away are sent merged up to the batch
// size, not one request per original batch.
func TestReplayMergesBatches(t *testing.T) {
	fw := &gatedWriter{open: make(chan struct{})}
	cfg := fastConfig()
	cfg.BatchSize = 100
	cfg.FlushInterval = time.Millisecond
	cfg.QueueDir = t.TempDir()
	st := runSink(t, cfg, fw, func(s *Sink) {
		for i := 0; i < 50; i++ { // 50 one-line batches while InfluxDB is away
			push(t, s, 1)
			time.Sleep(2 * time.Millisecond)
		}
		close(fw.open)
	})
	if st.Written != 50 {
		t.Fatalf("written %d, want 50", st.Written)
	}
	if n := len(fw.bodies); n > 3 {
		t.Errorf("%d write requests for 50 queued lines at batch size 100, want them merged", n)
	}
}

// gatedWriter fails until open is closed.
type gatedWriter struct {
	fakeWriter
	open chan struct{}
}

func (g *gatedWriter) Write(ctx context.Context, body []byte) error {
	select {
	case <-g.open:
		return g.fakeWriter.Write(ctx, body)
	default:
		return errors.New("connection refused")
	}
}

// partialWriter answers like InfluxDB 1.8: it stores the lines it can
// parse and names the others.
type partialWriter struct {
	fakeWriter
	bad string
}

func (p *partialWriter) Write(ctx context.Context, body []byte) error {
	var good []string
	var failed []string
	for _, ln := range strings.Split(strings.TrimSuffix(string(body), "\n"), "\n") {
		if strings.Contains(ln, p.bad) {
			failed = append(failed, fmt.Sprintf("unable to parse '%s': bad timestamp", ln))
		} else {
			good = append(good, ln)
		}
	}
	p.mu.Lock()
	p.calls++
	if len(good) > 0 {
		p.bodies = append(p.bodies, strings.Join(good, "\n")+"\n")
	}
	p.mu.Unlock()
	if len(failed) == 0 {
		return nil
	}
	if len(good) == 0 {
		return &WriteError{StatusCode: 400, Message: strings.Join(failed, "\n")}
	}
	return &WriteError{StatusCode: 400, Message: "partial write: " + strings.Join(failed, "\n") + " dropped=0"}
}

// A partial write is one request: the good lines are stored and never
// sent again, the refused ones are counted by reason.
func TestPartialWriteNotResent(t *testing.T) {
	w := &partialWriter{bad: "i=3,"}
	cfg := fastConfig()
	cfg.BatchSize = 8
	cfg.FlushInterval = time.Hour
	st := runSink(t, cfg, w, func(s *Sink) { push(t, s, 8) })
	if w.calls != 1 {
		t.Errorf("%d requests for one batch with one refused line, want 1", w.calls)
	}
	if st.Written != 7 || st.Dropped["rejected"] != 1 || st.Rejected["parse"] != 1 {
		t.Errorf("written %d rejected %d (parse %d), want 7, 1, 1", st.Written, st.Dropped["rejected"], st.Rejected["parse"])
	}
	if n := len(w.lines()); n != 7 {
		t.Errorf("%d lines stored, want 7 (no line twice)", n)
	}
}
