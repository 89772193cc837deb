// Package sink converts scraped samples to InfluxDB line protocol and writes
// them in batches. It is the last stage of the pipeline: it implements the
// scrape package's Appender (one converter per target, holding that
// target's identity tags and, with metric relabeling, its decisions per
// series) and owns the batcher and the writer that talk to InfluxDB.
//
// Lines travel in runs, named by the stage they are at, from scrape to
// InfluxDB: a chunk is one scrape's committed lines (a converter hands
// it to the batch being filled); a batch is the lines of one or more
// scrapes, sealed by size or time and pushed into the queue
// (queue.Batch); a record is a batch as the queue keeps it, in memory and
// in a segment file; a job is the records the writer takes to send in one
// request (queue.Job); a part is a piece of a job's body after a 413 or a
// refused line split it. queue.Amount counts the bytes and samples of any
// of them.
package sink

import (
	"bytes"
	"context"
	"errors"
	"hash/maphash"
	"math"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/cespare/xxhash/v2"
	"github.com/prometheus/common/model"
	"github.com/prometheus/prometheus/model/labels"
	"github.com/scrapeflux/scrapeflux/scrape"
	"github.com/scrapeflux/scrapeflux/sink/lineproto"
	"github.com/scrapeflux/scrapeflux/sink/schema"
)

// Errors that fail a scrape because of what the target exposed.
var (
	ErrInvalidUTF8     = errors.New("label value is not valid UTF-8")
	ErrDuplicateLabel  = errors.New("duplicate label name")
	ErrMissingBucketLe = errors.New("histogram bucket without le label")
	ErrLabelLimit      = scrape.ErrLabelLimit
	ErrNULByte         = errors.New("label holds a NUL byte")
)

// converter is the Appender of one target. It is used by the target's
// loop goroutine only.
type converter struct {
	opts  ConvertOptions
	app   scrape.AppendOptions
	sink  *Sink
	emit  func(*chunk) error // hands a committed scrape on: the sink's put
	ident []scrape.Tag
	// identTags are the identity tags as they are written: ",key=value".
	identTags [][]byte
	// measurement is LayoutV2's, escaped.
	measurement []byte
	// direct tells whether series may take the direct way (tests turn it
	// off to compare both ways).
	direct bool

	gen       uint32
	decisions map[seriesKey]decision // with metric relabeling only
	arena     []byte                 // rewritten series' keys (see decision)
	arenaLive int                    // bytes of arena that live decisions use
	general   int                    // samples that went the general way
	sc        *scratch

	nonFinite, invalid, relabeled, outOfRange int
	// Series tracking, when a series limit or budget is set.
	series                  *seriesTracker
	thash                   uint64
	now                     int64 // unix seconds of the scrape being appended
	seriesLimited, budgeted int
	job                     *jobBudget    // the job's budgets; nil: none
	permit                  bool          // holds a sink permit (see Sink.WaitRoom)
	lset                    labels.Labels // scratch for a new series' labels

	// The schema guard's (guard.go): the shape of the last scrape that
	// passed whole and the guard's epoch then; the samples held back in
	// all and why the latest were.
	shape, shapeEpoch uint64
	guard             schema.Line
	schemaHeld        int64
	schemaWhy         string
}

// InfluxDB stores nanoseconds since the epoch in an int64: 1677-09-21 to
// 2262-04-11. Exposed timestamps outside that cannot be written.
const (
	minTimestampMs = math.MinInt64/1_000_000 + 1
	maxTimestampMs = math.MaxInt64/1_000_000 - 1
)

func newConverter(s *Sink, ident []scrape.Tag, o scrape.AppendOptions) *converter {
	c := &converter{
		opts:  s.convert,
		app:   o,
		sink:  s,
		emit:  s.put,
		ident: slices.Clone(ident),
		gen:   1,
	}
	slices.SortFunc(c.ident, func(a, b scrape.Tag) int { return strings.Compare(a.Key, b.Key) })
	for _, t := range c.ident {
		b := append([]byte{','}, lineproto.AppendEscaped(nil, t.Key, false)...)
		b = append(b, '=')
		c.identTags = append(c.identTags, lineproto.AppendEscaped(b, t.Value, false))
	}
	// A job's own layout; validated with ParseLayout when the job was
	// configured, so an error here cannot happen.
	if l, err := ParseLayout(o.Layout); o.Layout != "" && err == nil {
		c.opts.Layout = l
	}
	if o.Measurement != "" {
		c.opts.Measurement = o.Measurement
	}
	m := lineproto.TrimBackslash(c.opts.Measurement)
	c.measurement = lineproto.AppendEscaped(nil, m, true)
	c.direct = c.opts.Layout == LayoutV1 || m != ""
	if len(o.MetricRelabelConfigs) > 0 {
		c.decisions = map[seriesKey]decision{}
	}
	c.job = s.jobs.forJob(o.Job, o.MaxHourlySeries, o.MaxDailySeries, s.hourly != nil || s.daily != nil)
	if o.SeriesLimit > 0 || s.hourly != nil || s.daily != nil || c.job != nil {
		c.series = newSeriesTracker(o.SeriesLimit)
		c.thash = targetHash(c.identTags)
	}
	return c
}

// Append converts one sample.
func (c *converter) Append(s *scrape.Sample) error {
	sc := c.sc
	if sc == nil {
		sc = scratchPool.Get().(*scratch)
		c.sc = sc
		if c.series != nil {
			c.now = time.Now().Unix()
		}
	}
	act := actKeep
	var h seriesKey
	var cached []byte // line and field key of a rewritten series seen before
	var keyLen int
	if c.decisions != nil && !s.Synthetic {
		var err error
		if act, h, cached, keyLen, err = c.decide(sc, s); err != nil {
			return err
		}
		if act == actDrop {
			c.relabeled++
			return nil
		}
	}
	if c.series != nil && !s.Synthetic && !c.admit(s, h) {
		return nil
	}
	k0, n0 := len(sc.keys), len(sc.names)
	switch {
	case cached != nil:
		sc.keys = append(sc.keys, cached[:keyLen]...)
		sc.names = append(sc.names, cached[keyLen:]...)
	case !c.direct || act != actKeep || !c.directKey(sc, s):
		sc.keys, sc.names = sc.keys[:k0], sc.names[:n0]
		drop, err := c.generalKey(sc, s)
		if err != nil || drop {
			sc.keys, sc.names = sc.keys[:k0], sc.names[:n0]
			return err
		}
		if act == actRewrite {
			c.remember(h, sc.keys[k0:], sc.names[n0:])
		}
	}
	switch {
	case math.IsNaN(s.Value) || math.IsInf(s.Value, 0):
		c.nonFinite++
	case s.Timestamp < minTimestampMs || s.Timestamp > maxTimestampMs:
		c.outOfRange++
	case c.opts.Layout == LayoutV1 && act == actKeep && (s.Type == model.MetricTypeCounter || s.Type == model.MetricTypeGauge):
		// In layout v1 a counter or a gauge has a line of its own: no
		// other sample can share it, so the index is not asked.
		c.newLine(sc, k0, n0, s.Timestamp, s.Value)
		return nil
	default:
		c.addField(sc, k0, n0, s.Timestamp, s.Value)
		return nil
	}
	sc.keys, sc.names = sc.keys[:k0], sc.names[:n0]
	return nil
}

// newLine puts the field written at names[n0:] on a line of its own,
// whose key was just written at keys[k0:].
func (c *converter) newLine(sc *scratch, k0, n0 int, ts int64, v float64) {
	fi := int32(len(sc.fields))
	sc.fields = append(sc.fields, pendingField{val: v, key: int32(n0), keyEnd: int32(len(sc.names)), next: -1})
	sc.lines = append(sc.lines, pendingLine{ts: ts, key: int32(k0), keyEnd: int32(len(sc.keys)), head: fi, tail: fi})
}

// addField puts the field written at names[n0:] on the line whose key was
// just written at keys[k0:]: the line of that key and timestamp if the
// scrape has one, else a new line.
func (c *converter) addField(sc *scratch, k0, n0 int, ts int64, v float64) {
	key := sc.keys[k0:]
	li := int32(len(sc.lines) - 1)
	if li < 0 || sc.lines[li].ts != ts || !bytes.Equal(sc.keys[sc.lines[li].key:sc.lines[li].keyEnd], key) {
		sl := sc.index.slot(maphash.Bytes(hashSeed, key))
		li = sl.line
		if !sl.used || sc.lines[li].ts != ts || !bytes.Equal(sc.keys[sc.lines[li].key:sc.lines[li].keyEnd], key) {
			li = int32(len(sc.lines))
			sc.lines = append(sc.lines, pendingLine{ts: ts, key: int32(k0), keyEnd: int32(len(sc.keys)), head: -1, tail: -1})
			sc.index.set(sl, li)
			k0 = len(sc.keys) // keep the key
		}
	}
	sc.keys = sc.keys[:k0]
	pl := &sc.lines[li]
	fi := int32(len(sc.fields))
	sc.fields = append(sc.fields, pendingField{val: v, key: int32(n0), keyEnd: int32(len(sc.names)), next: -1})
	if pl.tail < 0 {
		pl.head = fi
	} else {
		sc.fields[pl.tail].next = fi
	}
	pl.tail = fi
}

// WaitRoom waits until the sink can take a scrape (see Sink.WaitRoom);
// a permit it takes is given back at the scrape's commit or rollback.
func (c *converter) WaitRoom(ctx context.Context) error {
	permit, err := c.sink.WaitRoom(ctx)
	c.permit = c.permit || permit
	return err
}

func (c *converter) releasePermit() {
	if c.permit {
		c.permit = false
		c.sink.releasePermit()
	}
}

// Rollback forgets everything appended since the last Commit.
func (c *converter) Rollback() {
	if c.sc != nil {
		c.sc.release()
		c.sc = nil
	}
	c.nonFinite, c.invalid, c.relabeled, c.outOfRange = 0, 0, 0, 0
	c.seriesLimited, c.budgeted = 0, 0
	c.releasePermit()
	c.gen++
}

// Commit encodes the scrape's lines and hands them to the sink's batcher.
func (c *converter) Commit() error {
	ch := c.sink.getChunk()
	samples, lines, held := 0, 0, 0
	if sc := c.sc; sc != nil {
		// The schema guard looks at the lines of a scrape whose shape is
		// new since it last learnt something.
		db := c.sink.schemaDB()
		var shape, epoch uint64
		check := false
		if db != nil {
			epoch = c.sink.cfg.Schema.Epoch()
			shape = scrapeShape(sc)
			check = shape != c.shape || epoch != c.shapeEpoch
		}
		b := ch.buf
		var tsOf int64
		ts := sc.ts
		for i := range sc.lines {
			pl := &sc.lines[i]
			if check {
				whole, n := c.guardLine(db, sc, pl)
				held += n
				if whole {
					continue
				}
			}
			start := len(b)
			b = append(b, sc.keys[pl.key:pl.keyEnd]...)
			sep := byte(' ')
			for fi := pl.head; fi >= 0; fi = sc.fields[fi].next {
				f := &sc.fields[fi]
				if f.held {
					continue
				}
				b = append(b, sep)
				b = append(b, sc.names[f.key:f.keyEnd]...)
				b = append(b, '=')
				b = appendFloat(b, f.val)
				sep = ','
				samples++
			}
			if sep == ' ' {
				b = b[:start] // every field held
				continue
			}
			lines++
			if pl.ts != tsOf || lines == 1 {
				// Lines of a scrape mostly share their timestamp.
				tsOf, ts = pl.ts, strconv.AppendInt(append(ts[:0], ' '), pl.ts, 10)
				ts = append(ts, '\n')
			}
			b = append(b, ts...)
		}
		if check && held == 0 {
			c.shape, c.shapeEpoch = shape, epoch
		} else if held > 0 {
			c.shape = 0 // held lines are held again at every scrape
		}
		ch.buf, sc.ts = b, ts
	}
	ch.lines, ch.samples = lines, samples
	nonFinite, invalid, relabeled, outOfRange := c.nonFinite, c.invalid, c.relabeled, c.outOfRange
	limited, budgeted := c.seriesLimited, c.budgeted
	c.evict()
	c.Rollback()
	c.sink.stats.scraped.Add(int64(nonFinite + invalid + relabeled + outOfRange + limited + budgeted + held))
	c.sink.stats.addDropped(DropSeriesLimit, limited)
	c.sink.stats.addDropped(DropSeriesBudget, budgeted)
	if c.job != nil && budgeted > 0 {
		c.job.dropped.Add(int64(budgeted))
	}
	c.sink.stats.addDropped(DropOutOfRange, outOfRange)
	c.sink.stats.addDropped(DropNonFinite, nonFinite)
	c.sink.stats.addDropped(DropInvalidName, invalid)
	c.sink.stats.addDropped(DropRelabeled, relabeled)
	c.sink.stats.addDropped(DropSchemaLimit, held)
	return c.emit(ch)
}

// appendFloat writes v as a line protocol float: integral values without a
// fraction or exponent (the common case for counters, and cheaper), others
// in the shortest form that reads back exactly.
func appendFloat(b []byte, v float64) []byte {
	if v == math.Trunc(v) && v > -1e15 && v < 1e15 {
		return strconv.AppendInt(b, int64(v), 10)
	}
	return strconv.AppendFloat(b, v, 'g', -1, 64)
}

// admit applies the series limit and the budgets to s (h is its key when
// relabeling computed it). A sample of a series held back is counted,
// not written; series already known keep flowing.
func (c *converter) admit(s *scrape.Sample, key seriesKey) bool {
	h := key.a // xxhash of the series, as keyOf makes it
	if key == (seriesKey{}) {
		h = xxhash.Sum64(s.Series)
	}
	ok, isNew := c.series.admit(h, c.now)
	if isNew {
		c.series.notice(s, &c.lset)
	}
	if !ok {
		c.seriesLimited++
		return false
	}
	if !isNew {
		return true
	}
	now := time.Unix(c.now, 0)
	var jobHourly, jobDaily *seriesBudget
	if c.job != nil {
		jobHourly, jobDaily = c.job.hourly, c.job.daily
	}
	// The job's budgets first: a series its own budget holds back
	// spends nothing of the global one.
	for _, b := range [...]*seriesBudget{jobHourly, jobDaily, c.sink.hourly, c.sink.daily} {
		if b != nil && !b.admit(c.thash, h, now) {
			c.series.forget(h, c.now)
			c.budgeted++
			return false
		}
	}
	return true
}

// Cardinality says what is known of the target's series.
func (c *converter) Cardinality() scrape.Cardinality {
	if c.series == nil {
		return scrape.Cardinality{SchemaHeld: c.schemaHeld, SchemaHeldWhy: c.schemaWhy}
	}
	now := time.Now().Unix()
	return scrape.Cardinality{Series: len(c.series.seen), NewLastHour: c.series.newLastHour(now), Limit: c.series.limit, Limited: c.series.limited,
		Widest: c.series.widest(3), SchemaHeld: c.schemaHeld, SchemaHeldWhy: c.schemaWhy}
}
