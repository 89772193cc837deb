// Package sink converts scraped samples to InfluxDB line protocol and writes
// them in batches. It is the last stage of the pipeline: it implements the
// scrape package's Appender (one converter per target, holding that
// target's encode buffers and series cache) and owns the batcher and the
// writer that talk to InfluxDB.
package sink

import (
	"errors"
	"fmt"
	"math"
	"slices"
	"strconv"
	"strings"
	"unicode/utf8"

	"github.com/cespare/xxhash/v2"
	"github.com/prometheus/common/model"
	"github.com/prometheus/prometheus/model/labels"
	"github.com/prometheus/prometheus/model/relabel"

	"github.com/scrapeflux/scrapeflux/discovery"
	"github.com/scrapeflux/scrapeflux/scrape"
)

// Layout is how samples map to measurements and fields.
type Layout int

// Layouts, named after Telegraf's prometheus metric_version.
const (
	// LayoutV1: measurement per metric family; field counter, gauge or
	// value, and for histograms and summaries one line per label set with
	// count, sum and a field per bucket bound or quantile.
	LayoutV1 Layout = 1
	// LayoutV2: one measurement; field = sample name; labels are tags.
	LayoutV2 Layout = 2
)

// ParseLayout reads "v1" or "v2".
func ParseLayout(s string) (Layout, error) {
	switch s {
	case "v1", "1":
		return LayoutV1, nil
	case "v2", "2":
		return LayoutV2, nil
	}
	return 0, fmt.Errorf("unknown layout %q: want v1 or v2", s)
}

// ConvertOptions choose the layout.
type ConvertOptions struct {
	Layout Layout
	// Measurement is the measurement of LayoutV2.
	Measurement string
}

// Errors that fail a scrape because of what the target exposed.
var (
	ErrInvalidUTF8     = errors.New("label value is not valid UTF-8")
	ErrDuplicateLabel  = errors.New("duplicate label name")
	ErrMissingBucketLe = errors.New("histogram bucket without le label")
	ErrLabelLimit      = errors.New("label limit exceeded")
	ErrNULByte         = errors.New("label holds a NUL byte")
)

// evictAfter is how many scrapes a series may be absent before its cache
// entry is dropped.
const evictAfter = 4

// series is what a target's converter remembers of one exposed series.
type series struct {
	typ       model.MetricType
	drop      bool // dropped and counted: a name line protocol cannot carry,
	relabeled bool // or dropped by metric relabeling
	line      *lineKey
	field     string // escaped field key
	seen      uint32 // scrape generation that last saw it
}

// lineKey is an escaped "measurement,tags" prefix, shared by every series
// that lands on the same line (histogram buckets in v1; every sample of a
// tag set in v2).
type lineKey struct {
	key  string
	gen  uint32 // generation of the scrape that last put a line for it
	line int32  // index of its line in that scrape
	live uint32 // generation of the last sweep that found a series using it
}

type pendingLine struct {
	key        *lineKey
	ts         int64
	head, tail int32
}

type pendingField struct {
	key  string
	val  float64
	next int32
}

// converter is the Appender of one target. It is used by the target's
// loop goroutine only.
type converter struct {
	opts  ConvertOptions
	app   scrape.AppendOptions
	sink  *Sink
	emit  func(*chunk) error // hands a committed scrape on: the sink's put
	ident []discovery.Tag

	gen    uint32
	cache  map[uint64]*series
	keys   map[string]*lineKey
	lines  []pendingLine
	fields []pendingField

	// Scratch for cache misses.
	lset labels.Labels
	lb   *labels.Builder
	tags []discovery.Tag
	kbuf []byte

	nonFinite, invalid, relabeled, outOfRange int
}

// InfluxDB stores nanoseconds since the epoch in an int64: 1677-09-21 to
// 2262-04-11. Exposed timestamps outside that cannot be written.
const (
	minTimestampMs = math.MinInt64/1_000_000 + 1
	maxTimestampMs = math.MaxInt64/1_000_000 - 1
)

func newConverter(s *Sink, t *discovery.Target) *converter {
	return &converter{
		opts:  s.convert,
		sink:  s,
		emit:  s.put,
		ident: slices.Clone(t.Tags),
		gen:   1,
		cache: map[uint64]*series{},
		keys:  map[string]*lineKey{},
	}
}

// Append converts one sample. Cache hits cost a hash and a map lookup;
// only series not seen recently pay for labels and escaping.
func (c *converter) Append(s *scrape.Sample) error {
	h := xxhash.Sum64(s.Series)
	se := c.cache[h]
	if se == nil || se.typ != s.Type {
		var err error
		if se, err = c.newSeries(s); err != nil {
			return err
		}
		c.cache[h] = se
	}
	se.seen = c.gen
	if se.drop {
		if se.relabeled {
			c.relabeled++
		} else {
			c.invalid++
		}
		return nil
	}
	if math.IsNaN(s.Value) || math.IsInf(s.Value, 0) {
		c.nonFinite++
		return nil
	}
	if s.Timestamp < minTimestampMs || s.Timestamp > maxTimestampMs {
		c.outOfRange++
		return nil
	}
	lk := se.line
	if lk.gen != c.gen || c.lines[lk.line].ts != s.Timestamp {
		lk.gen = c.gen
		lk.line = int32(len(c.lines))
		c.lines = append(c.lines, pendingLine{key: lk, ts: s.Timestamp, head: -1, tail: -1})
	}
	pl := &c.lines[lk.line]
	fi := int32(len(c.fields))
	c.fields = append(c.fields, pendingField{key: se.field, val: s.Value, next: -1})
	if pl.tail < 0 {
		pl.head = fi
	} else {
		c.fields[pl.tail].next = fi
	}
	pl.tail = fi
	return nil
}

// newSeries works out the line key and field key of a series seen for the
// first time (or whose type changed).
func (c *converter) newSeries(s *scrape.Sample) (*series, error) {
	s.Labels(&c.lset)
	if name, dup := c.lset.HasDuplicateLabelNames(); dup {
		return nil, fmt.Errorf("%w %q in %s", ErrDuplicateLabel, name, s.Series)
	}
	name := string(s.Name)
	family := string(s.Family)
	if len(c.app.MetricRelabelConfigs) > 0 {
		if c.lb == nil {
			c.lb = labels.NewBuilder(labels.EmptyLabels())
		}
		c.lb.Reset(c.lset)
		if !relabel.ProcessBuilder(c.lb, c.app.MetricRelabelConfigs...) {
			return &series{typ: s.Type, drop: true, relabeled: true}, nil
		}
		c.lset = c.lb.Labels()
		if n := c.lset.Get(labels.MetricName); n != name {
			// Renamed: the new name stands for the family too, keeping
			// the histogram or summary suffix it had.
			suffix := strings.TrimPrefix(name, family)
			name = n
			family = strings.TrimSuffix(n, suffix)
		}
	}
	if c.app.LabelLimit > 0 && c.lset.Len()-1 > c.app.LabelLimit {
		return nil, fmt.Errorf("%w: %d labels on %s, limit %d", ErrLabelLimit, c.lset.Len()-1, s.Series, c.app.LabelLimit)
	}
	suffix := strings.TrimPrefix(name, family)
	var measurement, field, skip string
	if c.opts.Layout == LayoutV2 {
		measurement, field = c.opts.Measurement, name
	} else {
		measurement = name
		switch s.Type {
		case model.MetricTypeCounter:
			field = "counter"
		case model.MetricTypeGauge:
			field = "gauge"
		case model.MetricTypeHistogram, model.MetricTypeGaugeHistogram:
			measurement = family
			switch suffix {
			case "_bucket":
				skip = "le"
				if field = c.lset.Get("le"); field == "" {
					return nil, fmt.Errorf("%w: %s", ErrMissingBucketLe, s.Series)
				}
				field = normalizeBound(field)
			case "_sum", "_gsum":
				field = "sum"
			default:
				field = "count"
			}
		case model.MetricTypeSummary:
			measurement = family
			switch suffix {
			case "_sum":
				field = "sum"
			case "_count":
				field = "count"
			default:
				skip = "quantile"
				if field = c.lset.Get("quantile"); field == "" {
					field = "value"
				}
				field = normalizeBound(field)
			}
		default:
			field = "value"
		}
	}
	c.tags = c.tags[:0]
	var bad error
	c.lset.Range(func(l labels.Label) {
		if l.Name == labels.MetricName || l.Name == skip {
			return
		}
		if !utf8.ValidString(l.Value) {
			bad = fmt.Errorf("%w: label %s of %s", ErrInvalidUTF8, l.Name, s.Series)
		} else if strings.IndexByte(l.Value, 0) >= 0 || strings.IndexByte(l.Name, 0) >= 0 {
			bad = fmt.Errorf("%w: label %s of %q", ErrNULByte, l.Name, s.Series)
		}
		// InfluxDB forbids empty tag values; Prometheus treats an empty
		// label as absent anyway.
		key, val := l.Name, trimBackslash(l.Value)
		if val == "" {
			return
		}
		if key == "le" || key == "quantile" {
			val = normalizeBound(val)
		}
		if key == "time" || strings.HasPrefix(key, "_") || c.identity(key) {
			// Prefix until the name is free: a label may already be
			// called exported_job (as Prometheus does).
			key = "exported_" + key
			for c.identity(key) || c.lset.Has(key) {
				key = "exported_" + key
			}
		}
		c.tags = append(c.tags, discovery.Tag{Key: key, Value: val})
	})
	if bad != nil {
		return nil, bad
	}
	c.tags = append(c.tags, c.ident...)
	slices.SortFunc(c.tags, func(a, b discovery.Tag) int { return strings.Compare(a.Key, b.Key) })

	measurement, field = trimBackslash(measurement), trimBackslash(field)
	if measurement == "" || field == "" {
		// Only names made of backslashes get here (UTF-8 metric names).
		return &series{typ: s.Type, drop: true}, nil
	}
	b := appendEscaped(c.kbuf[:0], measurement, true)
	for _, t := range c.tags {
		b = append(b, ',')
		b = appendEscaped(b, t.Key, false)
		b = append(b, '=')
		b = appendEscaped(b, t.Value, false)
	}
	c.kbuf = b
	lk := c.keys[string(b)]
	if lk == nil {
		lk = &lineKey{key: string(b), line: -1}
		c.keys[lk.key] = lk
	}
	return &series{typ: s.Type, line: lk, field: string(appendEscaped(nil, field, false))}, nil
}

func (c *converter) identity(key string) bool {
	for _, t := range c.ident {
		if t.Key == key {
			return true
		}
	}
	return false
}

// Rollback forgets everything appended since the last Commit.
func (c *converter) Rollback() {
	c.lines = c.lines[:0]
	c.fields = c.fields[:0]
	c.nonFinite, c.invalid, c.relabeled, c.outOfRange = 0, 0, 0, 0
	c.gen++
}

// Commit encodes the scrape's lines and hands them to the sink's batcher.
func (c *converter) Commit() error {
	ch := c.sink.getChunk()
	b := ch.buf
	samples := 0
	for i := range c.lines {
		pl := &c.lines[i]
		b = append(b, pl.key.key...)
		sep := byte(' ')
		for fi := pl.head; fi >= 0; fi = c.fields[fi].next {
			f := &c.fields[fi]
			b = append(b, sep)
			b = append(b, f.key...)
			b = append(b, '=')
			b = appendFloat(b, f.val)
			sep = ','
			samples++
		}
		b = append(b, ' ')
		b = strconv.AppendInt(b, pl.ts, 10)
		b = append(b, '\n')
	}
	ch.buf, ch.lines, ch.samples = b, len(c.lines), samples
	nonFinite, invalid, relabeled, outOfRange := c.nonFinite, c.invalid, c.relabeled, c.outOfRange
	c.evict()
	c.Rollback()
	c.sink.stats.scraped.Add(int64(nonFinite + invalid + relabeled + outOfRange))
	c.sink.stats.addDropped(DropOutOfRange, outOfRange)
	c.sink.stats.addDropped(DropNonFinite, nonFinite)
	c.sink.stats.addDropped(DropInvalidName, invalid)
	c.sink.stats.addDropped(DropRelabeled, relabeled)
	return c.emit(ch)
}

// evict drops cache entries of series not seen for a while; every few
// scrapes, so the sweep costs little per scrape.
func (c *converter) evict() {
	if c.gen%evictAfter != 0 {
		return
	}
	for h, se := range c.cache {
		if c.gen-se.seen > evictAfter {
			delete(c.cache, h)
		} else if se.line != nil {
			se.line.live = c.gen
		}
	}
	for k, lk := range c.keys {
		if lk.live != c.gen {
			delete(c.keys, k)
		}
	}
}

// normalizeBound writes a bucket bound or quantile as Telegraf does
// (Go's shortest float form: 1, 0.005, +Inf) whatever the exposition
// wrote (1.0, 1e0); anything that is not a number is kept as it is.
func normalizeBound(s string) string {
	v, err := strconv.ParseFloat(s, 64)
	if err != nil {
		return s
	}
	switch {
	case math.IsInf(v, 1):
		return "+Inf"
	case math.IsInf(v, -1):
		return "-Inf"
	}
	return strconv.FormatFloat(v, 'g', -1, 64)
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
