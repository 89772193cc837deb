package scrape

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/common/model"
	"github.com/prometheus/prometheus/model/labels"

	"github.com/scrapeflux/scrapeflux/discovery"
)

// Health of a target after its last scrape.
type Health string

// Target health values.
const (
	HealthUnknown Health = "unknown"
	HealthUp      Health = "up"
	HealthDown    Health = "down"
	// HealthSkipped: another replica owns the target.
	HealthSkipped Health = "skipped"
)

// Roles of a target when replicas share the work.
const (
	RoleOwned   = "owned"   // this replica scrapes it
	RoleLeaving = "leaving" // handed to another replica; scraped one more interval
	RoleSkipped = "skipped" // another replica scrapes it
)

// Status is what is known about a target's last scrape.
type Status struct {
	Target       discovery.Target
	Health       Health
	LastScrape   time.Time
	LastDuration time.Duration
	LastSamples  int
	LastError    string
	// LastErrorKind groups failures (FailTimeout, FailHTTPStatus...);
	// empty while up.
	LastErrorKind  string
	ScrapesTotal   int64
	FailuresTotal  int64
	SkippedTotal   int64
	LastStartDelay time.Duration
	Interval       time.Duration
	// With replicas: this replica's role for the target, and the replicas
	// that own it, best first. Empty without.
	Role   string
	Owners []string
	// ConfigJob is the job of the configuration that found the target
	// (a --config job, or the flags' job); its job tag may differ (a
	// Consul service name).
	ConfigJob string
	// Cardinality of the target's series, when tracked.
	Cardinality Cardinality
	// Lint is the last lint of the target's exposition (nil: not linted
	// yet, or lints are off).
	Lint *LintReport
}

// loop scrapes one target on its schedule.
type loop struct {
	target  discovery.Target
	cfg     Config
	app     Appender
	fetcher *fetcher
	parser  *Parser
	log     *slog.Logger
	timeout string

	stop func()
	done chan struct{}

	leaving atomic.Int64 // unix nanoseconds when a handed-over loop stops; 0: owned

	mu     sync.Mutex // guards status
	status Status

	// Owned by the loop's goroutine: when the target went down, and the
	// last log line about it.
	downSince, lastReport time.Time

	metrics loopMetrics
	// linter lints a scrape at lintAt and then every cfg.LintInterval;
	// nil when lints are off. Owned by the loop's goroutine.
	linter *Linter
	lintAt time.Time
	// now reads the wall clock, without its monotonic reading: slots are
	// wall-clock times. Tests replace it.
	now func() time.Time

	// Synthetic series (up, scrape_duration_seconds,
	// scrape_samples_scraped), built once per loop.
	synth [3]Sample
}

func newLoop(t discovery.Target, cfg Config, app Appender, f *fetcher, m *Metrics, log *slog.Logger) *loop {
	l := &loop{
		target:  t,
		cfg:     cfg,
		app:     app,
		fetcher: f,
		parser:  NewParser(),
		log:     log.With("target", t.Redacted(), "job", t.Tag("job")),
		timeout: strconv.FormatFloat(cfg.Timeout.Seconds(), 'f', -1, 64),
		done:    make(chan struct{}),
		metrics: m.loop(t.Tag("job")),
		now:     func() time.Time { return time.Now().Round(0) },
		status:  Status{Target: t, Health: HealthUnknown, Interval: cfg.Interval},
		synth: [3]Sample{
			SyntheticSample(labels.FromStrings(model.MetricNameLabel, "up"), model.MetricTypeGauge, 0, 0),
			SyntheticSample(labels.FromStrings(model.MetricNameLabel, "scrape_duration_seconds"), model.MetricTypeGauge, 0, 0),
			SyntheticSample(labels.FromStrings(model.MetricNameLabel, "scrape_samples_scraped"), model.MetricTypeGauge, 0, 0),
		},
	}
	for i := range l.synth {
		l.synth[i].Synthetic = true
	}
	l.parser.DropHelp = true // the fetcher's buffer, read once
	if cfg.LintInterval > 0 {
		keys := make([]string, 0, len(t.Tags))
		for _, tg := range t.Tags {
			keys = append(keys, tg.Key)
		}
		l.linter = NewLinter(keys)
	}
	return l
}

// startGrid is the step of the grid that scrape starts sit on: the
// scrapes falling on one step start together and share one wake-up of the
// process, which idles between steps. Started each on its own, at 200
// targets every 5 s, the wake-ups cost about 15 % of the CPU (system time
// mostly: the Go runtime's threads going to sleep and waking). A tenth of
// a second keeps the starts close to an even spread.
const startGrid = 100 * time.Millisecond

// offset is when, within each interval, this target is scraped: spread by
// the target's hash so that loops do not all fire together, on the start
// grid (a tenth of the interval when that is finer), and stable across
// restarts and the same on every replica.
func (l *loop) offset(now time.Time) time.Duration {
	iv := int64(l.cfg.Interval)
	phase := int64(l.target.Hash() % uint64(iv))
	if step := int64(min(startGrid, l.cfg.Interval/10)); step > 0 {
		phase -= phase % step
	}
	off := phase - now.UnixNano()%iv
	if off < 0 {
		off += iv
	}
	return time.Duration(off)
}

// run scrapes until ctx is cancelled.
//
// Slots are on the wall clock's grid (phase + k × interval), the same on
// every replica. The timer sleeps on the monotonic clock, so each wake-up
// is checked against the wall clock: after a step of the wall clock (NTP)
// or a pause of the process (SIGSTOP, a frozen VM), a slot that is more
// than half an interval from the wall clock's now is not scraped (its
// values would be stamped with a time they do not belong to, and with
// replicas overwrite the point another replica wrote for that slot): it
// counts as skipped and the schedule starts again from the wall clock.
func (l *loop) run(ctx context.Context) {
	defer close(l.done)
	defer l.fetcher.close()
	// One reading of the clock: the slot is exactly on the target's phase
	// (two readings put it a few microseconds early, a millisecond early
	// once truncated, and replicas could disagree on the point's time).
	now := l.now()
	next := now.Add(l.offset(now))
	timer := time.NewTimer(next.Sub(now))
	defer timer.Stop()
	maxLate := l.cfg.Interval / 2
	for {
		select {
		case <-ctx.Done():
			return
		case <-timer.C:
		}
		start := l.now()
		delay := start.Sub(next)
		scraped := delay >= -maxLate && delay <= maxLate
		if scraped {
			l.scrape(ctx, time.Now(), next, max(delay, 0))
			if ctx.Err() != nil {
				return
			}
		} else {
			l.log.Debug("slot skipped: the wall clock stepped or the process was paused", "slot", next, "wall_clock_off_by", delay.String())
		}
		// The next slot on the wall clock's grid, after this one; a scrape
		// that overran skips the intervals it missed rather than
		// bunching scrapes up.
		now := l.now()
		after := next
		next = now.Add(l.offset(now))
		if scraped && !next.After(after) {
			next = next.Add(l.cfg.Interval)
		}
		skipped := int64(0)
		if !scraped {
			skipped = 1
		}
		if gap := next.Sub(after); scraped && gap > l.cfg.Interval+maxLate {
			skipped += int64((gap - l.cfg.Interval/2) / l.cfg.Interval)
		}
		if skipped > 0 {
			l.metrics.skipped.Add(float64(skipped))
			l.mu.Lock()
			l.status.SkippedTotal += skipped
			l.mu.Unlock()
		}
		timer.Reset(next.Sub(l.now()))
	}
}

// scrape runs one scrape and commits its samples, or rolls them back and
// commits only up=0 when it fails. Points carry the planned slot as their
// time, not the moment the scrape began: every replica scraping the target
// in that slot writes the same series at the same time, so InfluxDB keeps
// one point (replicas, handovers and retries cannot duplicate data). The
// difference is the start lag, exported as a metric.
func (l *loop) scrape(ctx context.Context, start, slot time.Time, delay time.Duration) {
	ts := slot.UnixMilli()
	var roomWait time.Duration
	if rw, ok := l.app.(RoomWaiter); ok {
		t0 := time.Now()
		if rw.WaitRoom(ctx) != nil {
			return // shutting down
		}
		roomWait = time.Since(t0)
	}
	sctx, cancel := context.WithTimeout(ctx, l.cfg.Timeout)
	defer l.fetcher.release()
	body, contentType, err := l.fetcher.fetch(sctx, l.timeout)
	var nerr net.Error
	if err != nil && (errors.Is(err, context.DeadlineExceeded) || errors.As(err, &nerr) && nerr.Timeout()) {
		err = fmt.Errorf("scrape timed out after %s: %w", l.cfg.Timeout, err)
	}
	var n int
	var warn error
	parsing := false
	// Parse, convert and commit are CPU work: at most one per core at a
	// time, however many loops have a body in hand (as VictoriaMetrics
	// does), so that thousands of targets do not convert at once. The wait
	// for a slot is not part of the scrape's duration.
	waitStart := time.Now()
	select {
	case cpuSlots <- struct{}{}:
	case <-ctx.Done():
		cancel()
		l.app.Rollback()
		return
	}
	defer func() { <-cpuSlots }()
	waited := time.Since(waitStart) + roomWait
	linting := err == nil && l.linter != nil && !start.Before(l.lintAt)
	if linting {
		l.parser.lint, l.parser.identity = l.linter.begin(), l.linter.Identity
	}
	if err == nil {
		n, warn, err = l.parser.ParseLimit(body, contentType, ts, l.cfg.HonorTimestamps, l.cfg.SampleLimit, l.app)
		parsing = err != nil
	}
	var lint *LintReport
	if linting {
		l.parser.lint = nil
		if err != nil {
			l.linter.abort()
		} else {
			lint = l.linter.finish(start)
			l.lintAt = start.Add(l.cfg.LintInterval)
		}
	}
	cancel()
	if ctx.Err() != nil && err != nil {
		// Shutting down mid-scrape: write nothing for this scrape.
		l.app.Rollback()
		return
	}
	dur := time.Since(start) - waited
	up := 1.0
	if err != nil {
		l.app.Rollback()
		up, n = 0, 0
	}
	for i, v := range [3]float64{up, dur.Seconds(), float64(n)} {
		s := &l.synth[i]
		s.Value, s.Timestamp = v, ts
		// Synthetic series are few and well-formed; an appender error here
		// cannot be about them, and the commit below reports trouble.
		_ = l.app.Append(s)
	}
	if cerr := l.app.Commit(); cerr != nil {
		l.log.Warn("cannot commit scrape", "err", cerr)
	}
	l.metrics.duration.Observe(dur.Seconds())
	l.report(start, dur, delay, n, warn, err, parsing, lint)
}

// cpuSlots caps the loops parsing and converting at once at the number of
// cores.
var cpuSlots = make(chan struct{}, runtime.GOMAXPROCS(0))

// targetReportEvery is how often a target that stays down is logged again.
const targetReportEvery = 5 * time.Minute

// report records the outcome and logs it: a failure when it starts or its
// error changes, again every targetReportEvery while it lasts (debug in
// between), and the recovery.
func (l *loop) report(start time.Time, dur, delay time.Duration, n int, warn, err error, parsing bool, lint *LintReport) {
	var kind string
	l.metrics.scrapes.Inc()
	if err != nil {
		base, detail := failureKind(err, parsing)
		l.metrics.failures.Inc()
		l.metrics.failureKinds.WithLabelValues(base).Inc()
		kind = strings.TrimSpace(base + " " + detail)
	}
	var card Cardinality
	if cr, ok := l.app.(CardinalityReporter); ok {
		card = cr.Cardinality()
	}
	l.mu.Lock()
	prev := l.status
	l.status.Cardinality = card
	if lint != nil {
		l.status.Lint = lint
	}
	l.status.LastScrape = start
	l.status.LastDuration = dur
	l.status.LastSamples = n
	l.status.LastStartDelay = delay
	l.status.ScrapesTotal++
	if err != nil {
		l.status.Health = HealthDown
		l.status.LastError = err.Error()
		l.status.LastErrorKind = kind
		l.status.FailuresTotal++
	} else {
		l.status.Health = HealthUp
		l.status.LastError, l.status.LastErrorKind = "", ""
	}
	l.mu.Unlock()

	switch {
	case err != nil && prev.Health != HealthDown:
		l.downSince, l.lastReport = start, start
		l.log.Warn("scrape failed", "kind", kind, "err", err)
	case err != nil && (prev.LastErrorKind != kind || start.Sub(l.lastReport) >= targetReportEvery):
		// Said again when the kind of failure changes, and at a steady
		// cadence while the target stays down; not when only the text
		// changes (it carries a local port that changes every scrape).
		l.lastReport = start
		l.log.Warn("scrape still failing", "kind", kind, "err", err, "down_for", start.Sub(l.downSince).Round(time.Second).String())
	case err != nil:
		l.log.Debug("scrape still failing", "err", err)
	case prev.Health == HealthDown:
		l.log.Info("scrape recovered", "samples", n, "down_for", start.Sub(l.downSince).Round(time.Second).String())
	}
	if warn != nil && prev.ScrapesTotal == 0 {
		l.log.Warn("target sends an unexpected content type; read as the Prometheus text format", "err", warn)
	}
}

func (l *loop) setLeaving(t time.Time) {
	if t.IsZero() {
		l.leaving.Store(0)
		return
	}
	l.leaving.Store(t.UnixNano())
}

func (l *loop) leavingAt() time.Time {
	if n := l.leaving.Load(); n != 0 {
		return time.Unix(0, n)
	}
	return time.Time{}
}

func (l *loop) snapshot() Status {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.status
}

// errScrapeFailed tells scrape-once callers the target was down.
var errScrapeFailed = errors.New("scrape failed")
