// Package sink converts scraped samples to InfluxDB line protocol and writes
// them in batches. It is the last stage of the pipeline: it implements the
// scrape package's Appender (one converter per target, holding that
// target's encode buffers and series cache) and owns the batcher and the
// writer that talk to InfluxDB.
package sink

import (
	"bytes"
	"errors"
	"fmt"
	"math"
	"slices"
	"strconv"
	"strings"
	"sync"
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

// A converter writes a sample's line key (escaped measurement and tags)
// straight from the exposition text of its series when that text has the
// common form: a classic name, labels with printable ASCII values and no
// escape sequences, none of them reserved or clashing with the target's
// identity tags. That costs one scan of bytes that were just parsed and
// keeps nothing per series, so memory does not grow with the number of
// series a target exposes. Every other series goes the general way,
// through its labels; both ways write the same bytes (FuzzConvert checks
// it on every input).

// maxDirectLabels is how many labels a series may have for the direct way.
const maxDirectLabels = 32

// evictAfter is how many scrapes a series may be absent before its metric
// relabeling decision is forgotten.
const evictAfter = 4

// action is what metric relabeling does to a series.
type action uint8

const (
	actKeep    action = iota + 1 // leaves it as it is
	actDrop                      // drops it
	actRewrite                   // changes its labels
)

type decision struct {
	seen uint32 // scrape generation that last saw the series
	act  action
}

// pendingLine is a line of the scrape being appended: its key is
// keys[key:keyEnd] of the scratch, its fields a list through fields.
type pendingLine struct {
	ts          int64
	key, keyEnd int32
	head, tail  int32
}

type pendingField struct {
	val         float64
	key, keyEnd int32 // in the scratch's names
	next        int32
}

// label is one label of the series text being converted.
type label struct {
	name, value []byte
	escape      bool // the value holds bytes to escape
}

// scratch is what a converter uses while a scrape is appended. It comes
// from a pool at the scrape's first sample and goes back at Commit or
// Rollback: a handful of scrapes run at once whatever the number of
// targets, so idle targets hold no buffers.
type scratch struct {
	keys   []byte // line keys of this scrape
	names  []byte // field keys of this scrape
	lines  []pendingLine
	fields []pendingField
	index  lineIndex
	bounds map[string]string
	labels [maxDirectLabels]label

	// General way.
	lset labels.Labels
	lb   *labels.Builder
	tags []discovery.Tag
}

var scratchPool = sync.Pool{New: func() any {
	return &scratch{bounds: map[string]string{}}
}}

// maxPooledScratch: scratch that grew beyond this for one huge scrape is
// left to the garbage collector.
const maxPooledScratch = 8 << 20

func (sc *scratch) release() {
	if cap(sc.keys)+cap(sc.names)+16*cap(sc.fields) > maxPooledScratch {
		return
	}
	sc.keys, sc.names = sc.keys[:0], sc.names[:0]
	sc.lines, sc.fields = sc.lines[:0], sc.fields[:0]
	sc.index.reset()
	scratchPool.Put(sc)
}

// bound returns the normalized form of a bucket bound or quantile.
func (sc *scratch) bound(raw []byte) string {
	if v, ok := sc.bounds[string(raw)]; ok {
		return v
	}
	if len(sc.bounds) >= 4096 {
		clear(sc.bounds)
	}
	v := normalizeBound(string(raw))
	sc.bounds[string(raw)] = v
	return v
}

// converter is the Appender of one target. It is used by the target's
// loop goroutine only.
type converter struct {
	opts  ConvertOptions
	app   scrape.AppendOptions
	sink  *Sink
	emit  func(*chunk) error // hands a committed scrape on: the sink's put
	ident []discovery.Tag
	// identTags are the identity tags as they are written: ",key=value".
	identTags [][]byte
	// measurement is LayoutV2's, escaped.
	measurement []byte
	// direct tells whether series may take the direct way (tests turn it
	// off to compare both ways).
	direct bool

	gen       uint32
	decisions map[uint64]decision // with metric relabeling only
	general   int                 // samples that went the general way
	sc        *scratch

	nonFinite, invalid, relabeled, outOfRange int
}

// InfluxDB stores nanoseconds since the epoch in an int64: 1677-09-21 to
// 2262-04-11. Exposed timestamps outside that cannot be written.
const (
	minTimestampMs = math.MinInt64/1_000_000 + 1
	maxTimestampMs = math.MaxInt64/1_000_000 - 1
)

func newConverter(s *Sink, t *discovery.Target, o scrape.AppendOptions) *converter {
	c := &converter{
		opts:  s.convert,
		app:   o,
		sink:  s,
		emit:  s.put,
		ident: slices.Clone(t.Tags),
		gen:   1,
	}
	slices.SortFunc(c.ident, func(a, b discovery.Tag) int { return strings.Compare(a.Key, b.Key) })
	for _, t := range c.ident {
		b := append([]byte{','}, appendEscaped(nil, t.Key, false)...)
		b = append(b, '=')
		c.identTags = append(c.identTags, appendEscaped(b, t.Value, false))
	}
	m := trimBackslash(c.opts.Measurement)
	c.measurement = appendEscaped(nil, m, true)
	c.direct = c.opts.Layout == LayoutV1 || m != ""
	if len(o.MetricRelabelConfigs) > 0 {
		c.decisions = map[uint64]decision{}
	}
	return c
}

// Append converts one sample.
func (c *converter) Append(s *scrape.Sample) error {
	sc := c.sc
	if sc == nil {
		sc = scratchPool.Get().(*scratch)
		c.sc = sc
	}
	act := actKeep
	if c.decisions != nil {
		var err error
		if act, err = c.decide(sc, s); err != nil {
			return err
		}
		if act == actDrop {
			c.relabeled++
			return nil
		}
	}
	k0, n0 := len(sc.keys), len(sc.names)
	if !c.direct || act != actKeep || !c.directKey(sc, s) {
		sc.keys, sc.names = sc.keys[:k0], sc.names[:n0]
		drop, err := c.generalKey(sc, s)
		if err != nil || drop {
			sc.keys, sc.names = sc.keys[:k0], sc.names[:n0]
			return err
		}
	}
	switch {
	case math.IsNaN(s.Value) || math.IsInf(s.Value, 0):
		c.nonFinite++
	case s.Timestamp < minTimestampMs || s.Timestamp > maxTimestampMs:
		c.outOfRange++
	default:
		c.addField(sc, k0, n0, s.Timestamp, s.Value)
		return nil
	}
	sc.keys, sc.names = sc.keys[:k0], sc.names[:n0]
	return nil
}

// addField puts the field written at names[n0:] on the line whose key was
// just written at keys[k0:]: the line of that key and timestamp if the
// scrape has one, else a new line.
func (c *converter) addField(sc *scratch, k0, n0 int, ts int64, v float64) {
	key := sc.keys[k0:]
	li := int32(len(sc.lines) - 1)
	if li < 0 || sc.lines[li].ts != ts || !bytes.Equal(sc.keys[sc.lines[li].key:sc.lines[li].keyEnd], key) {
		sl := sc.index.slot(xxhash.Sum64(key))
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

// lineIndex maps line key hashes to the latest line with that key in the
// scrape being appended: open addressing over a power-of-two table that
// is emptied at once by moving to a new generation.
type lineIndex struct {
	slots []lineSlot
	gen   uint32
	n     int
}

type lineSlot struct {
	hash uint64
	gen  uint32
	line int32
}

// found is what slot returns: the slot for a hash, used when it already
// holds that hash.
type found struct {
	at   *lineSlot
	hash uint64
	line int32
	used bool
}

func (x *lineIndex) slot(h uint64) found {
	if 2*(x.n+1) > len(x.slots) {
		x.grow()
	}
	mask := uint64(len(x.slots) - 1)
	for i := h & mask; ; i = (i + 1) & mask {
		sl := &x.slots[i]
		if sl.gen != x.gen {
			return found{at: sl, hash: h}
		}
		if sl.hash == h {
			return found{at: sl, hash: h, line: sl.line, used: true}
		}
	}
}

// set points the slot at line (a new line; or another key with the same
// hash, which then loses its grouping but stays correct).
func (x *lineIndex) set(f found, line int32) {
	if !f.used {
		x.n++
	}
	*f.at = lineSlot{hash: f.hash, gen: x.gen, line: line}
}

func (x *lineIndex) grow() {
	old := x.slots
	x.slots = make([]lineSlot, max(1024, 2*len(old)))
	if x.gen == 0 {
		x.gen = 1
	}
	mask := uint64(len(x.slots) - 1)
	for _, sl := range old {
		if sl.gen != x.gen {
			continue
		}
		i := sl.hash & mask
		for x.slots[i].gen == x.gen {
			i = (i + 1) & mask
		}
		x.slots[i] = sl
	}
}

func (x *lineIndex) reset() {
	x.n = 0
	if x.gen++; x.gen == 0 {
		clear(x.slots)
		x.gen = 1
	}
}

// decide applies metric relabeling to a series once and remembers the
// outcome while the series keeps coming.
func (c *converter) decide(sc *scratch, s *scrape.Sample) (action, error) {
	h := xxhash.Sum64(s.Series)
	if d, ok := c.decisions[h]; ok {
		if d.seen != c.gen {
			d.seen = c.gen
			c.decisions[h] = d
		}
		return d.act, nil
	}
	s.Labels(&sc.lset)
	if name, dup := sc.lset.HasDuplicateLabelNames(); dup {
		return 0, fmt.Errorf("%w %q in %s", ErrDuplicateLabel, name, s.Series)
	}
	if sc.lb == nil {
		sc.lb = labels.NewBuilder(labels.EmptyLabels())
	}
	sc.lb.Reset(sc.lset)
	act := actKeep
	if !relabel.ProcessBuilder(sc.lb, c.app.MetricRelabelConfigs...) {
		act = actDrop
	} else if !labels.Equal(sc.lb.Labels(), sc.lset) {
		act = actRewrite
	}
	c.decisions[h] = decision{seen: c.gen, act: act}
	return act, nil
}

// Byte classes of the series text, for the direct way.
const (
	clName       = 1 << iota // in a metric name
	clLabelStart             // starts a label name the direct way takes
	clLabel                  // in a label name
	clPlain                  // in a value, written as it is
	clEscape                 // in a value, written escaped
)

var byteClass = func() (t [256]uint8) {
	for b := 0; b < 256; b++ {
		letter := b >= 'a' && b <= 'z' || b >= 'A' && b <= 'Z'
		digit := b >= '0' && b <= '9'
		if letter || digit || b == '_' || b == ':' {
			t[b] |= clName
		}
		if letter {
			t[b] |= clLabelStart
		}
		if letter || digit || b == '_' {
			t[b] |= clLabel
		}
		switch {
		case b == ',' || b == ' ' || b == '=':
			t[b] |= clEscape
		case b > ' ' && b < 0x7f && b != '"' && b != '\\':
			t[b] |= clPlain
		}
	}
	return t
}()

// directKey writes the line key of s to sc.keys and its field key to
// sc.names from the series text, or reports false when the series needs
// the general way.
func (c *converter) directKey(sc *scratch, s *scrape.Sample) bool {
	name, text := s.Name, s.Series
	if len(name) == 0 || len(text) < len(name) || string(text[:len(name)]) != string(name) || name[0] >= '0' && name[0] <= '9' {
		return false
	}
	for _, b := range name {
		if byteClass[b]&clName == 0 {
			return false
		}
	}
	// Labels: {name="value",...} with an optional trailing comma. Names
	// starting with an underscore are reserved (__name__) or renamed.
	lbs := sc.labels[:0]
	if rest := text[len(name):]; len(rest) > 0 {
		if len(rest) < 2 || rest[0] != '{' || rest[len(rest)-1] != '}' {
			return false
		}
		rest = rest[1 : len(rest)-1]
		for len(rest) > 0 {
			if byteClass[rest[0]]&clLabelStart == 0 {
				return false
			}
			i := 1
			for i < len(rest) && byteClass[rest[i]]&clLabel != 0 {
				i++
			}
			if i+1 >= len(rest) || rest[i] != '=' || rest[i+1] != '"' {
				return false
			}
			v := rest[i+2:]
			j, esc := 0, false
			for ; j < len(v); j++ {
				if cl := byteClass[v[j]]; cl&clPlain == 0 {
					if cl&clEscape == 0 {
						break
					}
					esc = true
				}
			}
			if j == len(v) || v[j] != '"' || len(lbs) == maxDirectLabels {
				return false
			}
			lbs = append(lbs, label{name: rest[:i], value: v[:j], escape: esc})
			rest = v[j+1:]
			if len(rest) > 0 {
				if rest[0] != ',' {
					return false
				}
				rest = rest[1:]
			}
		}
	}
	if c.app.LabelLimit > 0 && len(lbs) > c.app.LabelLimit {
		return false
	}
	// Sort by name (expositions are usually sorted already); a duplicate
	// name is an error the general way reports.
	for i := 1; i < len(lbs); i++ {
		for j := i; j > 0; j-- {
			d := bytes.Compare(lbs[j-1].name, lbs[j].name)
			if d == 0 {
				return false
			}
			if d < 0 {
				break
			}
			lbs[j-1], lbs[j] = lbs[j], lbs[j-1]
		}
	}

	measurement, skip := name, ""
	var field string
	if c.opts.Layout == LayoutV2 {
		measurement = c.measurement
	} else {
		switch s.Type {
		case model.MetricTypeCounter:
			field = "counter"
		case model.MetricTypeGauge:
			field = "gauge"
		case model.MetricTypeHistogram, model.MetricTypeGaugeHistogram:
			measurement = s.Family
			switch string(name[len(s.Family):]) {
			case "_bucket":
				skip = "le"
			case "_sum", "_gsum":
				field = "sum"
			default:
				field = "count"
			}
		case model.MetricTypeSummary:
			measurement = s.Family
			switch string(name[len(s.Family):]) {
			case "_sum":
				field = "sum"
			case "_count":
				field = "count"
			default:
				skip = "quantile"
			}
		default:
			field = "value"
		}
	}

	b := append(sc.keys, measurement...)
	id := 0
	for _, l := range lbs {
		if len(l.value) == 0 {
			continue
		}
		if string(l.name) == skip {
			field = sc.bound(l.value)
			continue
		}
		for id < len(c.ident) && c.ident[id].Key < string(l.name) {
			b = append(b, c.identTags[id]...)
			id++
		}
		if id < len(c.ident) && c.ident[id].Key == string(l.name) || string(l.name) == "time" {
			return false
		}
		b = append(b, ',')
		b = append(b, l.name...)
		b = append(b, '=')
		switch {
		case string(l.name) == "le" || string(l.name) == "quantile":
			b = appendEscaped(b, sc.bound(l.value), false)
		case l.escape:
			b = appendEscaped(b, l.value, false)
		default:
			b = append(b, l.value...)
		}
	}
	if field == "" && c.opts.Layout == LayoutV1 {
		// A bucket without le, a quantile without quantile.
		return false
	}
	for ; id < len(c.ident); id++ {
		b = append(b, c.identTags[id]...)
	}
	sc.keys = b
	if c.opts.Layout == LayoutV2 {
		sc.names = append(sc.names, name...)
	} else {
		sc.names = appendEscaped(sc.names, field, false)
	}
	return true
}

// generalKey is directKey for any series, through its labels: it applies
// metric relabeling, renames labels that clash, and reports what cannot
// be written. drop tells that the sample was dropped and counted.
func (c *converter) generalKey(sc *scratch, s *scrape.Sample) (drop bool, err error) {
	c.general++
	s.Labels(&sc.lset)
	if name, dup := sc.lset.HasDuplicateLabelNames(); dup {
		return false, fmt.Errorf("%w %q in %s", ErrDuplicateLabel, name, s.Series)
	}
	name := string(s.Name)
	family := string(s.Family)
	if len(c.app.MetricRelabelConfigs) > 0 {
		if sc.lb == nil {
			sc.lb = labels.NewBuilder(labels.EmptyLabels())
		}
		sc.lb.Reset(sc.lset)
		if !relabel.ProcessBuilder(sc.lb, c.app.MetricRelabelConfigs...) {
			c.relabeled++
			return true, nil
		}
		sc.lset = sc.lb.Labels()
		if n := sc.lset.Get(labels.MetricName); n != name {
			// Renamed: the new name stands for the family too, keeping
			// the histogram or summary suffix it had.
			suffix := strings.TrimPrefix(name, family)
			name = n
			family = strings.TrimSuffix(n, suffix)
		}
	}
	if c.app.LabelLimit > 0 && sc.lset.Len()-1 > c.app.LabelLimit {
		return false, fmt.Errorf("%w: %d labels on %s, limit %d", ErrLabelLimit, sc.lset.Len()-1, s.Series, c.app.LabelLimit)
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
				if field = sc.lset.Get("le"); field == "" {
					return false, fmt.Errorf("%w: %s", ErrMissingBucketLe, s.Series)
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
				if field = sc.lset.Get("quantile"); field == "" {
					field = "value"
				}
				field = normalizeBound(field)
			}
		default:
			field = "value"
		}
	}
	sc.tags = sc.tags[:0]
	var bad error
	sc.lset.Range(func(l labels.Label) {
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
			for c.identity(key) || sc.lset.Has(key) {
				key = "exported_" + key
			}
		}
		sc.tags = append(sc.tags, discovery.Tag{Key: key, Value: val})
	})
	if bad != nil {
		return false, bad
	}
	sc.tags = append(sc.tags, c.ident...)
	slices.SortFunc(sc.tags, func(a, b discovery.Tag) int { return strings.Compare(a.Key, b.Key) })

	measurement, field = trimBackslash(measurement), trimBackslash(field)
	if measurement == "" || field == "" {
		// Only names made of backslashes get here (UTF-8 metric names).
		c.invalid++
		return true, nil
	}
	b := appendEscaped(sc.keys, measurement, true)
	for _, t := range sc.tags {
		b = append(b, ',')
		b = appendEscaped(b, t.Key, false)
		b = append(b, '=')
		b = appendEscaped(b, t.Value, false)
	}
	sc.keys = b
	sc.names = appendEscaped(sc.names, field, false)
	return false, nil
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
	if c.sc != nil {
		c.sc.release()
		c.sc = nil
	}
	c.nonFinite, c.invalid, c.relabeled, c.outOfRange = 0, 0, 0, 0
	c.gen++
}

// Commit encodes the scrape's lines and hands them to the sink's batcher.
func (c *converter) Commit() error {
	ch := c.sink.getChunk()
	samples, lines := 0, 0
	if sc := c.sc; sc != nil {
		b := ch.buf
		for i := range sc.lines {
			pl := &sc.lines[i]
			b = append(b, sc.keys[pl.key:pl.keyEnd]...)
			sep := byte(' ')
			for fi := pl.head; fi >= 0; fi = sc.fields[fi].next {
				f := &sc.fields[fi]
				b = append(b, sep)
				b = append(b, sc.names[f.key:f.keyEnd]...)
				b = append(b, '=')
				b = appendFloat(b, f.val)
				sep = ','
				samples++
			}
			b = append(b, ' ')
			b = strconv.AppendInt(b, pl.ts, 10)
			b = append(b, '\n')
		}
		ch.buf, lines = b, len(sc.lines)
	}
	ch.lines, ch.samples = lines, samples
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

// evict forgets relabeling decisions of series not seen for a while; every
// few scrapes, so the sweep costs little per scrape.
func (c *converter) evict() {
	if c.decisions == nil || c.gen%evictAfter != 0 {
		return
	}
	for h, d := range c.decisions {
		if c.gen-d.seen > evictAfter {
			delete(c.decisions, h)
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
