// Package sink converts scraped samples to InfluxDB line protocol and writes
// them in batches. It is the last stage of the pipeline: it implements the
// scrape package's Appender (one converter per target, holding that
// target's identity tags and, with metric relabeling, its decisions per
// series) and owns the batcher and the writer that talk to InfluxDB.
package sink

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/maphash"
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
	// For a rewritten series: its line key and field key as written, so
	// relabeling runs once per series, not once per sample.
	key    []byte
	keyLen int
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
// Offsets in the series text: the name starts at name, '=' is at eq, the
// quoted value runs from eq+2 to end.
type label struct {
	name, eq, end uint16
	escape        bool // the value holds bytes to escape
}

func (l label) nameOf(text []byte) []byte { return text[l.name:l.eq] }

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
	ts     []byte // " <timestamp>\n" being written
	bounds map[string]string
	labels [maxDirectLabels]label

	// General way.
	lset labels.Labels
	lb   *labels.Builder
	tags []scrape.Tag
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
	ident []scrape.Tag
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
		b := append([]byte{','}, appendEscaped(nil, t.Key, false)...)
		b = append(b, '=')
		c.identTags = append(c.identTags, appendEscaped(b, t.Value, false))
	}
	// A job's own layout; validated with ParseLayout when the job was
	// configured, so an error here cannot happen.
	if l, err := ParseLayout(o.Layout); o.Layout != "" && err == nil {
		c.opts.Layout = l
	}
	if o.Measurement != "" {
		c.opts.Measurement = o.Measurement
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
	var h uint64
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
			d := c.decisions[h]
			d.keyLen = len(sc.keys) - k0
			d.key = append(append(make([]byte, 0, d.keyLen+len(sc.names)-n0), sc.keys[k0:]...), sc.names[n0:]...)
			c.decisions[h] = d
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

// lineIndex maps line key hashes to the latest line with that key in the
// scrape being appended: open addressing over a power-of-two table of
// eight-byte slots (high half of the hash, line number + 1; zero when
// empty). Small and dense, because a scrape starts with it out of the CPU
// caches; reset empties only the slots the scrape used.
type lineIndex struct {
	slots []uint64
	used  []int32
}

// found is a slot for a hash: used when it holds a line with that hash.
type found struct {
	at   int
	tag  uint64
	line int32
	used bool
}

var hashSeed = maphash.MakeSeed()

const lowHalf = 1<<32 - 1

func (x *lineIndex) slot(h uint64) found {
	if 4*(len(x.used)+1) > 3*len(x.slots) {
		x.grow()
	}
	tag := h &^ lowHalf
	mask := uint64(len(x.slots) - 1)
	for i := (h >> 32) & mask; ; i = (i + 1) & mask {
		sl := x.slots[i]
		if sl == 0 {
			return found{at: int(i), tag: tag}
		}
		if sl&^lowHalf == tag {
			return found{at: int(i), tag: tag, line: int32(uint32(sl)) - 1, used: true}
		}
	}
}

// set points the slot at line (a new line; or another key with the same
// hash, which then loses its grouping but stays correct).
func (x *lineIndex) set(f found, line int32) {
	if !f.used {
		x.used = append(x.used, int32(f.at))
	}
	x.slots[f.at] = f.tag | uint64(uint32(line+1))
}

func (x *lineIndex) grow() {
	old := x.slots
	x.slots = make([]uint64, max(512, 2*len(old)))
	mask := uint64(len(x.slots) - 1)
	x.used = x.used[:0]
	for _, sl := range old {
		if sl == 0 {
			continue
		}
		i := (sl >> 32) & mask
		for x.slots[i] != 0 {
			i = (i + 1) & mask
		}
		x.slots[i] = sl
		x.used = append(x.used, int32(i))
	}
}

func (x *lineIndex) reset() {
	for _, i := range x.used {
		x.slots[i] = 0
	}
	x.used = x.used[:0]
}

// decide applies metric relabeling to a series once and remembers the
// outcome while the series keeps coming. It returns the series hash and,
// for a series seen before, its decision (with the cached keys of a
// rewrite).
func (c *converter) decide(sc *scratch, s *scrape.Sample) (action, uint64, []byte, int, error) {
	h := xxhash.Sum64(s.Series)
	if d, ok := c.decisions[h]; ok {
		if d.seen != c.gen {
			d.seen = c.gen
			c.decisions[h] = d
		}
		return d.act, h, d.key, d.keyLen, nil
	}
	s.Labels(&sc.lset)
	if name, dup := sc.lset.HasDuplicateLabelNames(); dup {
		return 0, h, nil, 0, fmt.Errorf("%w %q in %s", ErrDuplicateLabel, name, s.Series)
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
	return act, h, nil, 0, nil
}

// Byte classes of label values, for the direct way.
const (
	clPlain  = 1 << iota // written as it is
	clEscape             // written escaped
)

var byteClass = func() (t [256]uint8) {
	for b := 0; b < 256; b++ {
		switch {
		case b == ',' || b == ' ' || b == '=':
			t[b] = clEscape
		case b > ' ' && b < 0x80 && b != '"' && b != '\\':
			t[b] = clPlain
		}
	}
	return t
}()

// scanValue tells whether a label value can take the direct way (no
// escape sequence, control byte or non-ASCII byte) and whether it holds
// bytes to escape. v holds no quote (it ends where the first one is).
// Eight bytes at a time: most values hold none of these.
func scanValue(v []byte) (ok, escape bool) {
	const ones, highs = 0x0101010101010101, 0x8080808080808080
	for len(v) >= 8 {
		w := binary.LittleEndian.Uint64(v)
		less := (w - ones*0x21) &^ w & highs // a byte below '!'
		comma, equals, bslash := w^(ones*','), w^(ones*'='), w^(ones*'\\')
		match := (comma-ones)&^comma | (equals-ones)&^equals | (bslash-ones)&^bslash
		if (w|less|match)&highs != 0 {
			break
		}
		v = v[8:]
	}
	for _, b := range v {
		cl := byteClass[b]
		if cl == 0 {
			return false, false
		}
		escape = escape || cl == clEscape
	}
	return true, escape
}

// v1Field maps a sample of LayoutV1 to its line: whether the measurement
// is the family's name (histograms and summaries) rather than the
// sample's, and the field key, or the label whose value is the field key
// (and which is then not a tag).
func v1Field(typ model.MetricType, suffix string) (ofFamily bool, field, fieldLabel string) {
	switch typ {
	case model.MetricTypeCounter:
		return false, "counter", ""
	case model.MetricTypeGauge:
		return false, "gauge", ""
	case model.MetricTypeHistogram, model.MetricTypeGaugeHistogram:
		switch suffix {
		case "_bucket":
			return true, "", "le"
		case "_sum", "_gsum":
			return true, "sum", ""
		}
		return true, "count", ""
	case model.MetricTypeSummary:
		switch suffix {
		case "_sum":
			return true, "sum", ""
		case "_count":
			return true, "count", ""
		}
		return true, "", "quantile"
	}
	return false, "value", ""
}

// directKey writes the line key of s to sc.keys and its field key to
// sc.names from the series text, or reports false when the series needs
// the general way. The text was read by the exposition parser, which
// checked its grammar: a classic metric name, then label names and quoted
// values with blanks allowed between them. So the checks here only look
// for what the direct way does not take.
func (c *converter) directKey(sc *scratch, s *scrape.Sample) bool {
	name, text := s.Name, s.Series
	if len(name) == 0 || len(text) < len(name) || len(text) > math.MaxUint16 || string(text[:len(name)]) != string(name) ||
		name[0] != '_' && name[0] != ':' && (name[0]|0x20 < 'a' || name[0]|0x20 > 'z') {
		return false
	}
	// Labels: {name="value",...} with an optional trailing comma. Label
	// names starting with an underscore are reserved (__name__) or
	// renamed, quoted ones are UTF-8 names.
	lbs := sc.labels[:0]
	if len(text) > len(name) {
		if text[len(name)] != '{' || text[len(text)-1] != '}' {
			return false
		}
		for i, end := len(name)+1, len(text)-1; i < end; {
			if b := text[i]; b < 'A' || b > 'z' || b > 'Z' && b < 'a' {
				return false
			}
			eq := i + bytes.IndexByte(text[i:end], '=')
			if eq < i || eq+1 >= end || text[eq-1] == ' ' || text[eq-1] == '\t' || text[eq+1] != '"' {
				return false
			}
			vs := eq + 2
			q := bytes.IndexByte(text[vs:end], '"')
			if q < 0 || len(lbs) == maxDirectLabels {
				return false
			}
			ok, esc := scanValue(text[vs : vs+q])
			if !ok {
				return false
			}
			lbs = append(lbs, label{name: uint16(i), eq: uint16(eq), end: uint16(vs + q), escape: esc})
			if i = vs + q + 1; i < end {
				if text[i] != ',' {
					return false
				}
				i++
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
			a, z := text[lbs[j-1].name], text[lbs[j].name]
			if a < z {
				break
			}
			d := int(a) - int(z)
			if d == 0 {
				d = bytes.Compare(lbs[j-1].nameOf(text), lbs[j].nameOf(text))
			}
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
		var ofFamily bool
		ofFamily, field, skip = v1Field(s.Type, string(name[len(s.Family):]))
		if ofFamily {
			measurement = s.Family
		}
	}

	b := append(sc.keys, measurement...)
	id := 0
	for _, l := range lbs {
		lname, value := l.nameOf(text), text[l.eq+2:l.end]
		if len(value) == 0 {
			continue
		}
		if string(lname) == skip {
			field = sc.bound(value)
			continue
		}
		for id < len(c.ident) && before(c.ident[id].Key, lname) {
			b = append(b, c.identTags[id]...)
			id++
		}
		if id < len(c.ident) && c.ident[id].Key == string(lname) || string(lname) == "time" {
			return false
		}
		b = append(b, ',')
		b = append(b, text[l.name:l.eq+1]...) // name=
		switch {
		case string(lname) == "le" || string(lname) == "quantile":
			b = appendEscaped(b, sc.bound(value), false)
		case l.escape:
			b = appendEscaped(b, value, false)
		default:
			b = append(b, value...)
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

// before tells whether key sorts before name (not empty); the first byte
// decides most of the time.
func before(key string, name []byte) bool {
	switch {
	case key == "":
		return true
	case key[0] != name[0]:
		return key[0] < name[0]
	}
	return key < string(name)
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
	if len(c.app.MetricRelabelConfigs) > 0 && !s.Synthetic {
		if sc.lb == nil {
			sc.lb = labels.NewBuilder(labels.EmptyLabels())
		}
		sc.lb.Reset(sc.lset)
		if !relabel.ProcessBuilder(sc.lb, c.app.MetricRelabelConfigs...) {
			c.relabeled++
			return true, nil
		}
		sc.lset = sc.lb.Labels()
		if n := sc.lset.Get(model.MetricNameLabel); n != name {
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
		var ofFamily bool
		measurement = name
		if ofFamily, field, skip = v1Field(s.Type, suffix); ofFamily {
			measurement = family
		}
		switch skip {
		case "le":
			if field = sc.lset.Get("le"); field == "" {
				return false, fmt.Errorf("%w: %s", ErrMissingBucketLe, s.Series)
			}
			field = normalizeBound(field)
		case "quantile":
			if field = sc.lset.Get("quantile"); field == "" {
				field = "value"
			}
			field = normalizeBound(field)
		}
	}

	sc.tags = sc.tags[:0]
	var bad error
	sc.lset.Range(func(l labels.Label) {
		if l.Name == model.MetricNameLabel || l.Name == skip {
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
		sc.tags = append(sc.tags, scrape.Tag{Key: key, Value: val})
	})
	if bad != nil {
		return false, bad
	}
	sc.tags = append(sc.tags, c.ident...)
	slices.SortFunc(sc.tags, func(a, b scrape.Tag) int { return strings.Compare(a.Key, b.Key) })

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
		var tsOf int64
		ts := sc.ts
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
			if pl.ts != tsOf || i == 0 {
				// Lines of a scrape mostly share their timestamp.
				tsOf, ts = pl.ts, strconv.AppendInt(append(ts[:0], ' '), pl.ts, 10)
				ts = append(ts, '\n')
			}
			b = append(b, ts...)
		}
		ch.buf, lines, sc.ts = b, len(sc.lines), ts
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
