package scrape

import (
	"bytes"
	"cmp"
	"math"
	"net/netip"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"
	"unicode/utf8"

	"github.com/cespare/xxhash/v2"
	"github.com/prometheus/common/model"
	"github.com/prometheus/prometheus/model/labels"

	"github.com/scrapeflux/scrapeflux/sink/lineproto"
)

// The lint reads a target's exposition the way `promtool check metrics`
// reads a file, plus what matters when the store is InfluxDB: names it
// renames or refuses and label values that make series without end. It
// runs on a target's first scrape and then once every Config.LintInterval
// (BenchmarkLint: a lint adds about 0.75 us a sample to the parser's
// 0.5-0.6, reading labels from the series text; a linted scrape costs
// about 1.3 times a plain one, which at the default of ten minutes is
// well under 1 % more CPU). What it keeps between lints to see counters go down and
// label values churn is bounded: at most lintCounters counter values and
// lintNames × lintValues value hashes a target, under 3 KiB, and the
// last report.

// Lint rules, as the rule label of scrapeflux_lint_findings says them.
const (
	// A counter sample whose name does not end in _total.
	LintCounterNoTotal = "counter_without_total"
	// A family without a HELP line.
	LintNoHelp = "no_help"
	// Samples without a TYPE line (read as untyped).
	LintNoType = "no_type"
	// A TYPE or HELP line given twice for a family, or a family whose
	// samples are split by another's.
	LintMetadataConflict = "metadata_conflict"
	// The same series twice in one scrape (InfluxDB keeps the last).
	LintDuplicateSeries = "duplicate_series"
	// A classic histogram without its le="+Inf" bucket.
	LintHistogramNoInf = "histogram_without_inf"
	// A histogram's bucket counts going down as le goes up.
	LintHistogramNotMonotonic = "histogram_not_monotonic"
	// A counter lower than at the previous lint while the process did not
	// restart (process_start_time_seconds unchanged, most counters up).
	LintCounterDown = "counter_went_down"
	// A label scrapeflux renames for InfluxDB (time, a leading
	// underscore, a target tag such as job): written as exported_<name>;
	// so is, in layout v2, a metric named time, _field or _measurement.
	LintInfluxRenamed = "influxdb_renamed"
	// What InfluxDB refuses: a label value that is not UTF-8, holds a NUL
	// byte or is longer than 64 KiB, a label named like the field its
	// line gets (value, counter, gauge, sum, count: InfluxDB 3 refuses a
	// tag and a field of one name).
	LintInfluxRefused = "influxdb_refused"
	// Label values that look unbounded: UUIDs, long hex IDs, timestamps,
	// IP:port pairs with an ephemeral port, or none of a label's values
	// seen at the previous lint.
	LintUnboundedValue = "unbounded_label_value"
	// What would pass InfluxDB 3's schema limits in layout v1 (a table
	// per family): a family of more than 500 columns (its labels, the
	// target's tags, its fields, histogram bounds and the time column),
	// or more than 2,000 families (Core's tables across its databases).
	LintInflux3Schema = "influxdb3_schema_limit"
)

// InfluxDB 3's schema limits the lint checks against: Core's, and
// Enterprise's defaults for columns.
const (
	lintMaxColumns = 500
	lintMaxTables  = 2000
)

// LintRules lists every rule, in the order reports give them.
var LintRules = []string{
	LintCounterNoTotal, LintNoHelp, LintNoType, LintMetadataConflict, LintDuplicateSeries,
	LintHistogramNoInf, LintHistogramNotMonotonic, LintCounterDown, LintInfluxRenamed,
	LintInfluxRefused, LintUnboundedValue, LintInflux3Schema,
}

// DefaultLintInterval is how often a target is linted after its first
// scrape.
const DefaultLintInterval = 10 * time.Minute

// LintFinding is one rule's findings in a lint: how many families,
// series or labels broke it, and the first of them.
type LintFinding struct {
	Rule    string `json:"rule"`
	Count   int    `json:"count"`
	Example string `json:"example"`
}

// LintReport is the outcome of one lint of a target.
type LintReport struct {
	At       time.Time     `json:"at"`
	Series   int           `json:"series"`
	Findings []LintFinding `json:"findings"`
}

// Finding returns the report's finding of rule, if any.
func (r *LintReport) Finding(rule string) (LintFinding, bool) {
	if r == nil {
		return LintFinding{}, false
	}
	for _, f := range r.Findings {
		if f.Rule == rule {
			return f, true
		}
	}
	return LintFinding{}, false
}

// What a Linter keeps from one lint to the next.
const (
	lintCounters = 64 // counter values, the first in the exposition
	lintNames    = 16 // label names whose values are remembered
	lintValues   = 16 // value hashes per name
	// A label churns when it had at least lintChurnMin values at both
	// lints and shares none.
	lintChurnMin = 8
	// exampleMax cuts examples: label values can be long.
	exampleMax = 120
)

type counterValue struct {
	h uint64
	v float64
}

type labelValues struct {
	name   string
	hashes []uint64
}

// Linter lints the scrapes of one target. Not safe for concurrent use.
type Linter struct {
	// Identity are the tag keys of the target (job, instance...): a label
	// of one of these names is renamed.
	Identity []string

	// Kept between lints.
	counters []counterValue // sorted by h
	start    float64        // process_start_time_seconds; NaN: not seen
	values   []labelValues
	linted   bool

	run *lintRun // the lint under way
}

// NewLinter makes a Linter for a target with these identity tag keys.
func NewLinter(identity []string) *Linter {
	return &Linter{Identity: identity, start: math.NaN()}
}

type famInfo struct {
	typ             model.MetricType
	types, helps    int
	help            uint64
	samples         bool
	closed          bool // another family's samples came after this one's
	reportedNoTotal bool
	// cols: hashes of the columns its table would have in layout v1
	// (label names, bounds, fields), counted up to one past the limit.
	cols map[uint64]struct{}
}

// column notes a column of the family's table.
func (f *famInfo) column(h uint64) {
	if f.cols == nil {
		f.cols = map[uint64]struct{}{}
	}
	if len(f.cols) <= lintMaxColumns {
		f.cols[h] = struct{}{}
	}
}

type bucket struct {
	le, count float64
}

type histGroup struct {
	family  string
	buckets []bucket
}

type lintRun struct {
	fams     map[string]*famInfo
	order    []string // families in the order seen
	last     string   // family of the last sample
	cur      *famInfo // and its information
	series   map[uint64]struct{}
	hists    map[uint64]*histGroup
	counters []counterValue
	names    map[uint64]string // the counters' series, for examples
	start    float64
	values   map[string]map[uint64]struct{}
	found    map[string]*LintFinding
	seen     map[seenKey]struct{} // findings already counted
	n        int
	lset     labels.Labels
	info     bool // the series being linted is an info metric's
}

// begin starts a lint of the next scrape.
func (l *Linter) begin() *lintRun {
	r, _ := lintRuns.Get().(*lintRun)
	if r == nil {
		r = &lintRun{
			fams:   map[string]*famInfo{},
			series: map[uint64]struct{}{},
			hists:  map[uint64]*histGroup{},
			values: map[string]map[uint64]struct{}{},
			found:  map[string]*LintFinding{},
			seen:   map[seenKey]struct{}{},
			names:  map[uint64]string{},
		}
	}
	r.start = math.NaN()
	l.run = r
	return r
}

// lintRuns keeps the scratch space of lints: a lint is rare for one
// target, and its maps would be garbage after every one.
var lintRuns sync.Pool

// release clears r for the next lint and pools it.
func (r *lintRun) release() {
	clear(r.fams)
	clear(r.series)
	clear(r.hists)
	clear(r.values)
	clear(r.found)
	clear(r.seen)
	clear(r.names)
	r.order, r.counters = r.order[:0], r.counters[:0]
	r.last, r.cur, r.n = "", nil, 0
	lintRuns.Put(r)
}

// abort forgets the lint under way (the scrape failed).
func (l *Linter) abort() {
	if l.run != nil {
		l.run.release()
		l.run = nil
	}
}

func cutExample(s string) string {
	if len(s) <= exampleMax {
		return s
	}
	i := exampleMax
	for i > 0 && !utf8.RuneStart(s[i]) {
		i--
	}
	return s[:i] + "…"
}

type seenKey struct{ rule, kind, subject string }

// add counts a finding of rule about subject (of a kind) once per lint;
// the example is made for the rule's first finding only.
func (r *lintRun) add(rule, kind, subject string, example func() string) {
	key := seenKey{rule, kind, subject}
	if _, ok := r.seen[key]; ok {
		return
	}
	r.seen[key] = struct{}{}
	f := r.found[rule]
	if f == nil {
		f = &LintFinding{Rule: rule, Example: cutExample(example())}
		r.found[rule] = f
	}
	f.Count++
}

func (r *lintRun) fam(name []byte) *famInfo {
	f := r.fams[string(name)]
	if f == nil {
		f = &famInfo{}
		r.fams[string(name)] = f
		r.order = append(r.order, string(name))
	}
	return f
}

func (r *lintRun) typeLine(name []byte, typ model.MetricType) {
	f := r.fam(name)
	if f.types++; f.types > 1 {
		what := "TYPE given twice"
		if typ != f.typ {
			what = "TYPE " + string(f.typ) + " then " + string(typ)
		}
		r.add(LintMetadataConflict, "", string(name), func() string { return string(name) + ": " + what })
	}
	f.typ = typ
}

func (r *lintRun) helpLine(name, help []byte) {
	f := r.fam(name)
	h := xxhash.Sum64(help)
	if f.helps++; f.helps > 1 {
		what := "HELP given twice"
		if h != f.help {
			what = "two different HELP texts"
		}
		r.add(LintMetadataConflict, "", string(name), func() string { return string(name) + ": " + what })
	}
	f.help = h
}

// sample lints one series of the scrape.
func (r *lintRun) sample(s *Sample, identity []string) {
	r.n++
	if string(s.Family) != r.last {
		f := r.fam(s.Family)
		f.samples = true
		fam := string(s.Family)
		if f.closed {
			r.add(LintMetadataConflict, "", fam, func() string { return fam + ": samples split by another family's" })
		}
		if prev := r.fams[r.last]; prev != nil {
			prev.closed = true
		}
		r.last, r.cur = fam, f
	}
	fam := r.last
	// InfluxDB reserves the field keys time, _field and _measurement
	// (1.8 drops such a field without a word): layout v2, which names
	// fields after metrics, writes such a metric as exported_<name>.
	if lineproto.ReservedField(s.Name) {
		n := string(s.Name)
		r.add(LintInfluxRenamed, "metric", n, func() string {
			return "metric " + n + " is written as exported_" + n + " in layout v2 (InfluxDB reserves the field key " + n + ")"
		})
	}
	if s.Type == model.MetricTypeCounter && !bytes.HasSuffix(s.Name, []byte("_total")) && !r.cur.reportedNoTotal {
		r.cur.reportedNoTotal = true
		name := string(s.Name)
		r.add(LintCounterNoTotal, "", fam, func() string { return name })
	}
	// The series' identity, whatever the order of its labels: a sum of
	// one hash per label, mixed. Buckets are grouped by the same without
	// le.
	h, g := xxhash.Sum64(s.Name), xxhash.Sum64(s.Family)
	var le []byte
	r.info = s.Type == model.MetricTypeInfo || strings.HasSuffix(fam, "_info")
	s.RangeLabels(&r.lset, func(name, value []byte) {
		lh := mix(xxhash.Sum64(name) ^ mix(xxhash.Sum64(value)+1))
		h += lh
		if string(name) == model.BucketLabel {
			le = value
		} else {
			g += lh
		}
		if string(name) == model.BucketLabel || string(name) == model.QuantileLabel {
			r.cur.column(xxhash.Sum64(value) ^ 1) // a field per bound
		} else {
			r.cur.column(xxhash.Sum64(name))
		}
		r.label(fam, name, value, identity)
	})
	r.cur.column(xxhash.Sum64(s.Name[len(s.Family):]) ^ 2) // the sample's field
	h = mix(h)
	if _, dup := r.series[h]; dup {
		r.add(LintDuplicateSeries, "", string(s.Series), func() string { return string(s.Series) })
	}
	r.series[h] = struct{}{}
	switch {
	case s.Type == model.MetricTypeCounter:
		if len(r.counters) < lintCounters {
			r.counters = append(r.counters, counterValue{h, s.Value})
			r.names[h] = string(s.Series)
		}
	case string(s.Name) == "process_start_time_seconds":
		r.start = s.Value
	case (s.Type == model.MetricTypeHistogram || s.Type == model.MetricTypeGaugeHistogram) && bytes.HasSuffix(s.Name, []byte("_bucket")):
		r.bucket(fam, mix(g), le, s.Value)
	}
}

// mix is splitmix64's finalizer: sums of hashes mixed again.
func mix(x uint64) uint64 {
	x ^= x >> 30
	x *= 0xbf58476d1ce4e5b9
	x ^= x >> 27
	x *= 0x94d049bb133111eb
	return x ^ x>>31
}

// bucket files a classic histogram's bucket under its label set but le
// (g).
func (r *lintRun) bucket(fam string, g uint64, le []byte, v float64) {
	bound, err := strconv.ParseFloat(string(le), 64)
	if err != nil {
		return // no or bad le: the conversion says so
	}
	hg := r.hists[g]
	if hg == nil {
		hg = &histGroup{family: fam}
		r.hists[g] = hg
	}
	hg.buckets = append(hg.buckets, bucket{bound, v})
}

// refusedText says each of lineproto.RefusedValue's reasons.
var refusedText = map[string]string{
	lineproto.RefusedUTF8: "value not valid UTF-8",
	lineproto.RefusedNUL:  "value holds a NUL byte",
	lineproto.RefusedLong: "value longer than 64 KiB",
}

// label lints one label of a series of family fam. Strings are made only
// for findings.
func (r *lintRun) label(fam string, name, value []byte, identity []string) {
	switch {
	case lineproto.RenamedTag(name) || slices.Contains(identity, string(name)):
		n := string(name)
		r.add(LintInfluxRenamed, "", n, func() string { return "label " + n + " of " + fam + " is written as " + lineproto.Exported + n })
	case lineproto.V1Field(name):
		n := string(name)
		r.add(LintInfluxRefused, "field", n, func() string {
			return "label " + n + " of " + fam + " is also a field's name: InfluxDB 3 refuses the line"
		})
	}
	if why := lineproto.RefusedValue(value); why != "" {
		n := string(name)
		r.add(LintInfluxRefused, why, n, func() string { return "label " + n + " of " + fam + ": " + refusedText[why] })
	}
	if string(name) == model.BucketLabel || string(name) == model.QuantileLabel {
		return
	}
	// Info metrics carry build labels (a git commit's hash): one value,
	// however it looks.
	if kind := unboundedKind(value); kind != "" && !r.info {
		n, v := string(name), string(value)
		r.add(LintUnboundedValue, "", n, func() string { return n + "=\"" + cutExample(v) + "\" on " + fam + " (" + kind + ")" })
	}
	vs := r.values[string(name)]
	if vs == nil {
		if len(r.values) >= lintNames {
			return
		}
		vs = map[uint64]struct{}{}
		r.values[string(name)] = vs
	}
	if len(vs) < lintValues {
		vs[xxhash.Sum64(value)] = struct{}{}
	}
}

// finish ends the lint of a scrape that parsed, keeps what the next lint
// compares with, and reports.
func (l *Linter) finish(now time.Time) *LintReport {
	r := l.run
	l.run = nil
	if r == nil {
		return nil
	}
	families := 0
	for _, name := range r.order {
		f := r.fams[name]
		if f.samples {
			families++
		}
		if n := len(f.cols) + len(l.Identity) + 1; n > lintMaxColumns {
			r.add(LintInflux3Schema, "", name, func() string {
				return name + " would be a table of " + strconv.Itoa(n) + "+ columns in layout v1 (labels, bounds, fields, the target's tags, time): InfluxDB 3 takes " + strconv.Itoa(lintMaxColumns) + "; drop labels with metric_relabel_configs"
			})
		}
		if f.samples && f.helps == 0 {
			r.add(LintNoHelp, "", name, func() string { return name })
		}
		if f.samples && f.types == 0 {
			r.add(LintNoType, "", name, func() string { return name })
		}
	}
	for _, g := range r.hists {
		slices.SortStableFunc(g.buckets, func(a, b bucket) int { return cmp.Compare(a.le, b.le) })
		if last := g.buckets[len(g.buckets)-1]; !math.IsInf(last.le, 1) {
			r.add(LintHistogramNoInf, "", g.family, func() string { return g.family })
		}
		for i := 1; i < len(g.buckets); i++ {
			if g.buckets[i].count < g.buckets[i-1].count {
				b := g.buckets[i]
				r.add(LintHistogramNotMonotonic, "", g.family, func() string {
					return g.family + ": le=" + strconv.FormatFloat(b.le, 'g', -1, 64) + " counts " +
						strconv.FormatFloat(b.count, 'g', -1, 64) + ", below the bucket before it"
				})
				break
			}
		}
	}
	if families > lintMaxTables {
		r.add(LintInflux3Schema, "tables", "", func() string {
			return strconv.Itoa(families) + " families, a table each in layout v1: InfluxDB 3 Core takes " + strconv.Itoa(lintMaxTables) + " tables across its databases"
		})
	}
	l.counterDown(r)
	l.churn(r)
	l.linted = true
	rep := &LintReport{At: now, Series: r.n}
	for _, rule := range LintRules {
		if f := r.found[rule]; f != nil {
			rep.Findings = append(rep.Findings, *f)
		}
	}
	r.release()
	return rep
}

// counterDown compares the counters with the previous lint's. A restart
// (process_start_time_seconds changed, or most counters lower) resets
// every counter: that is no finding.
func (l *Linter) counterDown(r *lintRun) {
	slices.SortFunc(r.counters, func(a, b counterValue) int { return cmp.Compare(a.h, b.h) })
	restarted := !math.IsNaN(l.start) && !math.IsNaN(r.start) && l.start != r.start
	if l.linted && !restarted {
		var down, compared int
		var example string
		for _, c := range r.counters {
			i, ok := slices.BinarySearchFunc(l.counters, c.h, func(p counterValue, h uint64) int { return cmp.Compare(p.h, h) })
			if !ok {
				continue
			}
			compared++
			if prev := l.counters[i].v; c.v < prev {
				if down == 0 || r.names[c.h] < example {
					example = r.names[c.h] + " went from " + strconv.FormatFloat(prev, 'g', -1, 64) + " to " + strconv.FormatFloat(c.v, 'g', -1, 64)
				}
				down++
			}
		}
		if down > 0 && down*2 <= compared {
			r.add(LintCounterDown, "", "", func() string { return example })
			r.found[LintCounterDown].Count = down
		}
	}
	l.counters = slices.Clone(r.counters)
	l.start = r.start
}

// churn reports labels none of whose values were seen at the previous
// lint: a value that is never seen twice is a new series every scrape.
func (l *Linter) churn(r *lintRun) {
	next := make([]labelValues, 0, len(r.values))
	for name, vs := range r.values {
		if len(vs) < lintChurnMin {
			continue // too few values to tell churn at the next lint
		}
		hs := make([]uint64, 0, len(vs))
		for h := range vs {
			hs = append(hs, h)
		}
		slices.Sort(hs)
		next = append(next, labelValues{name: name, hashes: hs})
	}
	slices.SortFunc(next, func(a, b labelValues) int { return strings.Compare(a.name, b.name) })
	for _, cur := range next {
		i, ok := slices.BinarySearchFunc(l.values, cur.name, func(p labelValues, n string) int { return strings.Compare(p.name, n) })
		if !ok || len(l.values[i].hashes) < lintChurnMin {
			continue
		}
		shared := false
		for _, h := range cur.hashes {
			if _, ok := slices.BinarySearch(l.values[i].hashes, h); ok {
				shared = true
				break
			}
		}
		if !shared {
			r.add(LintUnboundedValue, "", cur.name, func() string {
				return cur.name + ": none of its values seen at the previous lint (a new value every scrape)"
			})
		}
	}
	l.values = next
}

// unboundedKind tells what an unbounded-looking value looks like, or "".
func unboundedKind(v []byte) string {
	switch {
	case len(v) < 10:
		return ""
	case isUUID(v):
		return "UUID"
	case isTimestamp(v):
		return "timestamp"
	case isHexID(v):
		return "hex ID"
	case isEphemeralAddr(v):
		return "IP:port with an ephemeral port"
	}
	return ""
}

func isHex(c byte) bool { return c >= '0' && c <= '9' || c|0x20 >= 'a' && c|0x20 <= 'f' }

func isUUID(v []byte) bool {
	if len(v) != 36 {
		return false
	}
	for i := 0; i < 36; i++ {
		switch i {
		case 8, 13, 18, 23:
			if v[i] != '-' {
				return false
			}
		default:
			if !isHex(v[i]) {
				return false
			}
		}
	}
	return true
}

// isHexID: 16 or more hex digits with both digits and letters (a trace,
// request or container ID).
func isHexID(v []byte) bool {
	if len(v) < 16 {
		return false
	}
	var digit, letter bool
	for _, c := range v {
		switch {
		case c >= '0' && c <= '9':
			digit = true
		case isHex(c):
			letter = true
		default:
			return false
		}
	}
	return digit && letter
}

// isTimestamp: seconds, milliseconds or nanoseconds since the epoch,
// between 2001 and 2100.
func isTimestamp(v []byte) bool {
	var scale float64
	switch len(v) {
	case 10:
		scale = 1
	case 13:
		scale = 1e3
	case 19:
		scale = 1e9
	default:
		return false
	}
	var n uint64
	for _, c := range v {
		if c < '0' || c > '9' {
			return false
		}
		n = n*10 + uint64(c-'0')
	}
	s := float64(n) / scale
	return s >= 978307200 && s < 4102444800
}

// isEphemeralAddr: an IP address and a port from the range systems hand
// out to outgoing connections (32768 and up): a client's connection.
func isEphemeralAddr(v []byte) bool {
	c := bytes.LastIndexByte(v, ':')
	if c < 0 || c == len(v)-1 || len(v)-c > 6 {
		return false
	}
	for _, d := range v[c+1:] {
		if d < '0' || d > '9' {
			return false
		}
	}
	if v[0] != '[' {
		for _, d := range v[:c] {
			if d != '.' && (d < '0' || d > '9') {
				return false
			}
		}
	}
	ap, err := netip.ParseAddrPort(string(v))
	return err == nil && ap.Port() >= 32768
}

// Lint parses body, an exposition of contentType, and lints it as one
// scrape of the target: a later call compares with the earlier one
// (counters going down, labels churning). It fails when body does not
// parse.
func (l *Linter) Lint(body []byte, contentType string, now time.Time) (*LintReport, error) {
	p := NewParser()
	p.lint, p.identity = l.begin(), l.Identity
	if _, _, err := p.Parse(body, contentType, now.UnixMilli(), false, discardAppender{}); err != nil {
		l.abort()
		return nil, err
	}
	return l.finish(now), nil
}

// discardAppender is an Appender that keeps nothing.
type discardAppender struct{}

func (discardAppender) Append(*Sample) error { return nil }
func (discardAppender) Commit() error        { return nil }
func (discardAppender) Rollback()            {}
