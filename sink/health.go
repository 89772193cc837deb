package sink

import (
	"context"
	"log/slog"
	"time"

	"github.com/scrapeflux/scrapeflux/sink/queue"
)

// reportEvery is the cadence of log lines about a lasting condition: a
// failing InfluxDB, refused lines.
const reportEvery = time.Minute

// writeHealth tells the operator about failing writes: one line when the
// failure starts, one a minute while it lasts, one when it ends; never a
// line per attempt. A flapping InfluxDB (fail, succeed, fail...) gets at
// most one failure line and one recovery line a minute.
type writeHealth struct {
	log          *slog.Logger
	now          func() time.Time // for tests; time.Now when nil
	failingSince time.Time        // zero while writes succeed
	lastReport   time.Time        // last failure line
	attempts     int              // failed attempts since the last failure line
	reported     bool             // a failure line since the last recovery line
}

func (h *writeHealth) clock() time.Time {
	if h.now != nil {
		return h.now()
	}
	return time.Now()
}

func (h *writeHealth) fail(ctx context.Context, err error, needsPerson bool, queuedBytes int64) {
	now := h.clock()
	if h.failingSince.IsZero() {
		h.failingSince = now
	}
	h.attempts++
	if !h.lastReport.IsZero() && now.Sub(h.lastReport) < reportEvery {
		h.log.Debug("cannot write to InfluxDB, will retry", "err", err, "attempts", h.attempts)
		return
	}
	lvl := slog.LevelWarn
	if needsPerson {
		lvl = slog.LevelError
	}
	h.log.Log(ctx, lvl, "cannot write to InfluxDB, will retry", "err", err,
		"failing_for", now.Sub(h.failingSince).Round(time.Second).String(), "failed_attempts", h.attempts,
		"queued_bytes", queuedBytes, "what_to_do", hint(err))
	h.lastReport, h.attempts, h.reported = now, 0, true
}

func (h *writeHealth) ok() {
	if h.failingSince.IsZero() {
		return
	}
	if h.reported {
		h.log.Info("writes to InfluxDB recovered", "failed_for", h.clock().Sub(h.failingSince).Round(time.Second).String())
		h.reported = false
	}
	h.failingSince, h.attempts = time.Time{}, 0
}

// rejectLog sums lines InfluxDB refused and logs a summary at most once a
// minute: counts, the reason and the first refused line, both cut short.
type rejectLog struct {
	log            *slog.Logger
	lines, samples int
	class, reason  string
	example        string
	lastReport     time.Time
}

func (r *rejectLog) add(lines, samples int, class, reason, example string) {
	if r.lines == 0 {
		r.class, r.reason, r.example = class, reason, example
	}
	r.lines += lines
	r.samples += samples
	r.report(false)
}

// report logs the summary when a minute has passed since the last one,
// or at once when final.
func (r *rejectLog) report(final bool) {
	if r.lines == 0 || (!final && !r.lastReport.IsZero() && time.Since(r.lastReport) < reportEvery) {
		return
	}
	msg := "InfluxDB refused lines; they are dropped and counted (scrapeflux_samples_rejected_total)"
	if r.class == "limit" {
		msg += "; a schema limit: InfluxDB 3 allows 500 columns per table and 2,000 tables per database by default, and --layout v2 puts every metric of a database in one table: use --layout v1 (a table per metric family) or raise the server's limits"
	}
	r.log.Warn(msg,
		"lines", r.lines, "samples", r.samples, "reason", r.class, "answer", cut(r.reason, 300), "first_line", cut(r.example, 200))
	r.lines, r.samples, r.lastReport = 0, 0, time.Now()
}

// dropLog sums what the queue's bounds dropped, by reason, and logs it
// when it starts and then as one summary a minute, each line saying what
// to do: a long outage or a full disk drops at every batch, and a line
// per batch would flood the log.
type dropLog struct {
	log        *slog.Logger
	pending    [numDropReasons]queue.Amount
	any        bool
	lastReport time.Time
}

func (d *dropLog) add(r DropReason, l queue.Amount) {
	d.pending[r].Bytes += l.Bytes
	d.pending[r].Samples += l.Samples
	d.any = true
}

// dropAdvice says what to do about each reason the queue drops for.
var dropAdvice = map[DropReason]string{
	DropQueueFull: "the queue is full: its oldest data is dropped (raise --queue-max-bytes to hold longer outages)",
	DropDiskError: "the disk queue refuses writes and memory is full: the oldest data that waits in memory is dropped (free space on the queue's disk or fix it; --memory-max-bytes holds more meanwhile)",
}

// report logs what was dropped since the last summary, at once for the
// first drops after a quiet minute, then at most once a minute, and when
// final.
func (d *dropLog) report(now time.Time, final bool) {
	if !d.any || (!final && !d.lastReport.IsZero() && now.Sub(d.lastReport) < reportEvery) {
		return
	}
	for r, l := range d.pending {
		if l.Samples == 0 && l.Bytes == 0 {
			continue
		}
		d.log.Warn(dropAdvice[DropReason(r)], "reason", DropReason(r).String(), "samples", l.Samples, "bytes", l.Bytes,
			"counted_in", `scrapeflux_samples_dropped_total{reason="`+DropReason(r).String()+`"}`)
	}
	d.pending, d.any, d.lastReport = [numDropReasons]queue.Amount{}, false, now
}
