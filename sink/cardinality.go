package sink

import (
	"math"
	"math/bits"
	"slices"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/cespare/xxhash/v2"
	"github.com/prometheus/prometheus/model/labels"

	"github.com/scrapeflux/scrapeflux/scrape"
)

// Cardinality guards: series are what takes InfluxDB down (1.x refuses
// writes past max-series-per-database, 3.x new columns and tables past
// its limits), and one exporter with a request ID in a label does it in
// an hour.

// seriesTracker remembers a target's series seen over the last hour: at
// most limit of them are admitted (0: any number). A series is known by
// one 64-bit hash of its text (xxhash): two series of one target sharing
// it, about one chance in 10^10 for a million series, would count as
// one. Memory: a map entry of an 8-byte key and a 4-byte minute, about 24
// bytes a series with the map's overhead (BenchmarkSeriesTrackerMemory),
// bounded by the limit when there is one, plus a 128-byte sketch per
// label name (32 names at most).
type seriesTracker struct {
	limit   int
	seen    map[uint64]uint32 // last seen, minutes since the epoch
	sweepAt int64
	// added: new series per minute over the last hour, for churn.
	added    [60]int32
	addedMin int64
	// limited: samples held back by the limit, total.
	limited int64
	// values: per label name, a sketch of the distinct values of the new
	// series seen: which label explodes.
	values map[string]*valueSketch
}

// valueSketch counts distinct values by linear counting: a bit per hash
// in 1,024 bits. Within 2 % up to about 1,000 values; full (no zero bit
// left) past about 7,000, which reads as "at least 7,098".
type valueSketch [16]uint64

const sketchBits = 1024

func (v *valueSketch) add(h uint64) {
	p := h % sketchBits
	v[p/64] |= 1 << (p % 64)
}

// count estimates the distinct values added; full when it saturated.
func (v *valueSketch) count() (n int, full bool) {
	set := 0
	for _, w := range v {
		set += bits.OnesCount64(w)
	}
	if set == sketchBits {
		return int(math.Round(sketchBits * math.Log(sketchBits))), true
	}
	return int(math.Round(-sketchBits * math.Log(float64(sketchBits-set)/sketchBits))), false
}

// notice counts the label values of a new series (from its text: no
// labels built).
func (t *seriesTracker) notice(s *scrape.Sample, scratch *labels.Labels) {
	if t.values == nil {
		t.values = map[string]*valueSketch{}
	}
	s.RangeLabels(scratch, func(name, value []byte) {
		vs := t.values[string(name)]
		if vs == nil {
			if len(t.values) >= 32 {
				return
			}
			vs = new(valueSketch)
			t.values[string(name)] = vs
		}
		vs.add(xxhash.Sum64(value))
	})
}

// widest returns the n label names with the most distinct values.
func (t *seriesTracker) widest(n int) []scrape.LabelWidth {
	out := make([]scrape.LabelWidth, 0, len(t.values))
	for name, vs := range t.values {
		c, full := vs.count()
		out = append(out, scrape.LabelWidth{Name: name, Values: c, AtLeast: full})
	}
	sort.Slice(out, func(i, j int) bool {
		if out[i].Values != out[j].Values {
			return out[i].Values > out[j].Values
		}
		return out[i].Name < out[j].Name
	})
	return out[:min(n, len(out))]
}

const seriesWindow = 3600 // seconds: the sliding hour

func newSeriesTracker(limit int) *seriesTracker {
	return &seriesTracker{limit: limit, seen: map[uint64]uint32{}}
}

// admit reports whether the series k may be written at now (unix
// seconds), remembering it when it is new. A known series' time is
// written once a minute, not at every scrape.
func (t *seriesTracker) admit(k uint64, now int64) (ok, isNew bool) {
	m := uint32(now / 60)
	if last, seen := t.seen[k]; seen {
		if last != m {
			t.seen[k] = m
		}
		return true, false
	}
	if now >= t.sweepAt {
		t.sweep(now)
	}
	if t.limit > 0 && len(t.seen) >= t.limit {
		t.limited++
		return false, true
	}
	t.seen[k] = m
	t.count(now)
	return true, true
}

func (t *seriesTracker) sweep(now int64) {
	for k, last := range t.seen {
		if now/60-int64(last) > seriesWindow/60 {
			delete(t.seen, k)
		}
	}
	t.sweepAt = now + 60
}

// advance clears the minutes that passed since the last count.
func (t *seriesTracker) advance(now int64) {
	m := now / 60
	if m-t.addedMin >= 60 {
		t.added, t.addedMin = [60]int32{}, m
		return
	}
	for t.addedMin < m {
		t.addedMin++
		t.added[t.addedMin%60] = 0
	}
}

func (t *seriesTracker) count(now int64) {
	t.advance(now)
	t.added[(now/60)%60]++
}

// newLastHour is the number of series first seen in the last hour.
func (t *seriesTracker) newLastHour(now int64) int {
	t.advance(now)
	n := 0
	for _, a := range t.added {
		n += int(a)
	}
	return n
}

// forget takes back an admission (a budget held the series back).
func (t *seriesTracker) forget(k uint64, now int64) {
	delete(t.seen, k)
	t.advance(now)
	t.added[(now/60)%60]--
}

// seriesBudget bounds the new series of every target together in a
// window (an hour, a day), as vmagent's -remoteWrite.maxHourlySeries: the
// series known in the window keep flowing, past the budget new ones are
// held back. Counted approximately with a Bloom filter of 16 bits per
// series of the budget and 8 hashes (2 MB for a million series): once
// the budget is used, about 0.06 % of the new series offered are taken
// for known ones and let through (TestSeriesBudgetError). The window is fixed
// (it starts again every hour or day), as vmagent's.
type seriesBudget struct {
	limit  int
	window time.Duration

	mu    sync.Mutex // guards the fields below
	bits  []uint64
	used  int
	start time.Time
	held  int64 // series held back, total
}

func newSeriesBudget(limit int, window time.Duration) *seriesBudget {
	if limit <= 0 {
		return nil
	}
	m := max(limit*16, 1024)
	return &seriesBudget{limit: limit, window: window, bits: make([]uint64, (m+63)/64)}
}

// admit reports whether the series of target (by the hash of its
// identity) keyed k may start flowing now.
func (b *seriesBudget) admit(target uint64, k uint64, now time.Time) bool {
	// Two hashes for the filter's probes (Kirsch and Mitzenmacher): the
	// two halves of the series' hash with the target's, both xxhash
	// (32 bits address 4 G bits, past any budget's filter).
	x := k ^ target
	h1, h2 := x&0xffffffff, x>>32|1
	m := uint64(len(b.bits) * 64)
	b.mu.Lock()
	defer b.mu.Unlock()
	if now.Sub(b.start) >= b.window {
		clear(b.bits)
		b.used, b.start = 0, now.Truncate(b.window)
	}
	known := true
	for i := uint64(0); i < bloomHashes; i++ {
		p := (h1 + i*h2) % m
		if b.bits[p/64]&(1<<(p%64)) == 0 {
			known = false
			break
		}
	}
	if known {
		return true
	}
	if b.used >= b.limit {
		b.held++
		return false
	}
	for i := uint64(0); i < bloomHashes; i++ {
		p := (h1 + i*h2) % m
		b.bits[p/64] |= 1 << (p % 64)
	}
	b.used++
	return true
}

const bloomHashes = 8

// state returns the series counted in the window and those held back.
func (b *seriesBudget) state() (used, limit int, held int64) {
	if b == nil {
		return 0, 0, 0
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.used, b.limit, b.held
}

// targetHash identifies a target for the budgets: its identity tags.
func targetHash(identTags [][]byte) uint64 {
	d := xxhash.New()
	for _, t := range identTags {
		_, _ = d.Write(t)
	}
	return d.Sum64()
}

// jobBudgets are the budgets of new series of each job that sets one
// (max_hourly_series, max_daily_series): all the job's targets together,
// so one noisy job cannot spend the budget of every other. Shared by the
// sinks of every bucket, as the global budgets are. A reload that changes
// a job's budget starts it afresh.
type jobBudgets struct {
	mu   sync.Mutex
	jobs map[string]*jobBudget
}

// jobBudget is one job's budgets and what they and the global ones held
// back of its samples.
type jobBudget struct {
	hourlyLimit, dailyLimit int
	hourly, daily           *seriesBudget
	dropped                 atomic.Int64 // samples of new series held back by any budget
}

// forJob returns the job's budgets, made or remade for these limits; nil
// without a job name (a flag job) or when the job sets none and no global
// budget is set.
func (jb *jobBudgets) forJob(job string, hourly, daily int, global bool) *jobBudget {
	if job == "" || (hourly <= 0 && daily <= 0 && !global) {
		return nil
	}
	jb.mu.Lock()
	defer jb.mu.Unlock()
	if b, ok := jb.jobs[job]; ok && b.hourlyLimit == hourly && b.dailyLimit == daily {
		return b
	}
	if jb.jobs == nil {
		jb.jobs = map[string]*jobBudget{}
	}
	b := &jobBudget{hourlyLimit: hourly, dailyLimit: daily,
		hourly: newSeriesBudget(hourly, time.Hour), daily: newSeriesBudget(daily, 24*time.Hour)}
	jb.jobs[job] = b
	return b
}

// JobBudget is what a job's budgets counted: series counted in the
// current hour and day (0 limit: none) and its samples that any budget,
// the job's or the global one, held back.
type JobBudget struct {
	Job                 string
	HourUsed, HourLimit int
	DayUsed, DayLimit   int
	DroppedSamples      int64
}

func (jb *jobBudgets) state() []JobBudget {
	jb.mu.Lock()
	defer jb.mu.Unlock()
	out := make([]JobBudget, 0, len(jb.jobs))
	for job, b := range jb.jobs {
		j := JobBudget{Job: job, DroppedSamples: b.dropped.Load()}
		j.HourUsed, j.HourLimit, _ = b.hourly.state()
		j.DayUsed, j.DayLimit, _ = b.daily.state()
		out = append(out, j)
	}
	slices.SortFunc(out, func(a, b JobBudget) int { return strings.Compare(a.Job, b.Job) })
	return out
}
