package scrape

// This is the only file that imports textparse: the parser is an
// implementation detail behind Sample.

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"math"
	"strconv"
	"strings"

	"github.com/prometheus/common/model"
	"github.com/prometheus/prometheus/model/histogram"
	"github.com/prometheus/prometheus/model/labels"
	"github.com/prometheus/prometheus/model/textparse"
)

// The exposition formats a target may be asked for, by the names of
// Prometheus's scrape_protocols, with the media type each is asked with.
// UTF-8 names are allowed (escaping=allow-utf-8), as Prometheus 3 asks.
var scrapeProtocols = map[string]string{
	"PrometheusProto":      "application/vnd.google.protobuf;proto=io.prometheus.client.MetricFamily;encoding=delimited",
	"OpenMetricsText1.0.0": "application/openmetrics-text;version=1.0.0;escaping=allow-utf-8",
	"OpenMetricsText0.0.1": "application/openmetrics-text;version=0.0.1",
	"PrometheusText1.0.0":  "text/plain;version=1.0.0;escaping=allow-utf-8",
	"PrometheusText0.0.4":  "text/plain;version=0.0.4",
}

// DefaultScrapeProtocols are asked for in this order: the text formats,
// as Prometheus 3 does by default. Put PrometheusProto first to scrape
// native histograms (written as histogram lines with a field per bucket
// bound).
var DefaultScrapeProtocols = []string{"OpenMetricsText1.0.0", "OpenMetricsText0.0.1", "PrometheusText1.0.0", "PrometheusText0.0.4"}

// acceptHeader builds the Accept header for protocols, best first.
func acceptHeader(protocols []string) string {
	if len(protocols) == 0 {
		protocols = DefaultScrapeProtocols
	}
	var b strings.Builder
	q := 1.0
	for _, p := range protocols {
		q -= 0.1
		fmt.Fprintf(&b, "%s;q=%.1f,", scrapeProtocols[p], q)
	}
	b.WriteString("*/*;q=0.1")
	return b.String()
}

const fallbackContentType = "text/plain"

// Parser turns exposition bodies into Samples. One per loop: it keeps its
// symbol table and scratch space across scrapes. Not safe for concurrent
// use.
type Parser struct {
	// DropHelp lets Parse rewrite the body it is given, in place: the
	// HELP lines next to their TYPE line are dropped before parsing (see
	// dropHelp). Set it when the body is not read again.
	DropHelp bool

	st      *labels.SymbolTable
	scrapes int
	family  []byte
	typ     model.MetricType
	name    []byte
	help    []byte
	lset    labels.Labels
	sample  Sample
	// lint, when set, lints this scrape (see Linter); identity are the
	// target's tag keys.
	lint     *lintRun
	identity []string
}

// NewParser makes a Parser.
func NewParser() *Parser {
	return &Parser{st: labels.NewSymbolTable()}
}

// Parse feeds every sample in body to app, stamped with scrapeTS (in
// milliseconds) unless honorTS and the sample has its own. It returns the
// number of samples appended, a warning (a content type it had to guess),
// and an error that fails the scrape. It neither commits nor rolls back.
func (p *Parser) Parse(body []byte, contentType string, scrapeTS int64, honorTS bool, app Appender) (int, error, error) {
	return p.ParseLimit(body, contentType, scrapeTS, honorTS, 0, app)
}

// ErrNotMetrics fails a scrape whose answer is plainly not metrics.
var ErrNotMetrics = errors.New("not metrics")

// ErrSampleLimit fails a scrape with more samples than allowed.
var ErrSampleLimit = errors.New("sample limit exceeded")

// ParseLimit is Parse failing once more than limit samples came (0: no
// limit).
func (p *Parser) ParseLimit(body []byte, contentType string, scrapeTS int64, honorTS bool, limit int, app Appender) (int, error, error) {
	// The symbol table only grows; start afresh now and then so that labels
	// of series that went away are not kept forever.
	if p.scrapes++; p.scrapes%32 == 0 {
		p.st = labels.NewSymbolTable()
	}
	if mt, _, _ := strings.Cut(contentType, ";"); strings.EqualFold(strings.TrimSpace(mt), "text/html") {
		return 0, nil, fmt.Errorf("%w: the target answered with a web page (text/html), not metrics: check the URL's path", ErrNotMetrics)
	}
	if p.DropHelp && p.lint == nil && !strings.Contains(contentType, "protobuf") {
		body = dropHelp(body)
	}
	tp, warn := textparse.New(body, contentType, p.st, textparse.ParserOptions{
		OpenMetricsSkipSTSeries: true,
		FallbackContentType:     fallbackContentType,
	})
	if tp == nil {
		return 0, nil, fmt.Errorf("cannot parse body: %w", warn)
	}
	p.family = p.family[:0]
	p.typ = model.MetricTypeUnknown
	s := &p.sample
	*s = Sample{src: tp}
	n := 0
	for {
		e, err := tp.Next()
		if err != nil {
			if errors.Is(err, io.EOF) {
				return n, warn, nil
			}
			return n, warn, fmt.Errorf("cannot parse body after %d samples: %w", n, err)
		}
		switch e {
		case textparse.EntryType:
			name, typ := tp.Type()
			p.family = appendFamily(p.family[:0], name)
			p.typ = typ
			if p.lint != nil {
				p.lint.typeLine(p.family, typ)
			}
		case textparse.EntryHelp:
			name, help := tp.Help()
			if p.help = appendFamily(p.help[:0], name); !bytes.Equal(p.help, p.family) {
				p.family = append(p.family[:0], p.help...)
				p.typ = model.MetricTypeUnknown
			}
			if p.lint != nil {
				p.lint.helpLine(p.help, help)
			}
		case textparse.EntrySeries:
			series, ets, v := tp.Series()
			s.Series = series
			s.Name = p.metricName(tp, series)
			s.Family, s.Type = p.classify(s.Name)
			s.Value = v
			s.Timestamp = scrapeTS
			if honorTS && ets != nil {
				s.Timestamp = *ets
			}
			if n++; limit > 0 && n > limit {
				return n, warn, fmt.Errorf("%w: more than %d", ErrSampleLimit, limit)
			}
			if p.lint != nil {
				p.lint.sample(s, p.identity)
			}
			if err := app.Append(s); err != nil {
				return n, warn, err
			}
		case textparse.EntryHistogram:
			// A native histogram (protobuf): written as a classic one, a
			// bucket per bound, counted as one sample as Prometheus does.
			if n++; limit > 0 && n > limit {
				return n, warn, fmt.Errorf("%w: more than %d", ErrSampleLimit, limit)
			}
			if err := p.appendNative(tp, scrapeTS, honorTS, app); err != nil {
				return n, warn, err
			}
		}
	}
}

// appendNative appends the native histogram at tp as the samples of a
// classic one: a cumulative bucket per upper bound of its (exponential or
// custom) buckets, +Inf, _sum and _count. A float histogram's counts are
// used as they are.
func (p *Parser) appendNative(tp textparse.Parser, scrapeTS int64, honorTS bool, app Appender) error {
	_, ets, h, fh := tp.Histogram()
	if fh == nil && h != nil {
		fh = h.ToFloat(nil)
	}
	if fh == nil {
		return nil
	}
	tp.Labels(&p.lset)
	family := p.lset.Get(model.MetricNameLabel)
	ts := scrapeTS
	if honorTS && ets != nil {
		ts = *ets
	}
	typ := model.MetricTypeHistogram
	if fh.CounterResetHint == histogram.GaugeType {
		typ = model.MetricTypeGaugeHistogram
	}
	emit := func(suffix, le string, v float64) error {
		b := labels.NewBuilder(p.lset)
		b.Set(model.MetricNameLabel, family+suffix)
		if le != "" {
			b.Set(model.BucketLabel, le)
		}
		s := SyntheticSample(b.Labels(), typ, v, ts)
		s.Family = []byte(family)
		return app.Append(&s)
	}
	var cum float64
	for it := fh.AllBucketIterator(); it.Next(); {
		b := it.At()
		cum += b.Count
		if math.IsInf(b.Upper, 1) {
			continue
		}
		if err := emit("_bucket", strconv.FormatFloat(b.Upper, 'g', -1, 64), cum); err != nil {
			return err
		}
	}
	if err := emit("_bucket", "+Inf", fh.Count); err != nil {
		return err
	}
	if err := emit("_sum", "", fh.Sum); err != nil {
		return err
	}
	return emit("_count", "", fh.Count)
}

// dropHelp removes, in place, the HELP lines of a text exposition that
// come just before their TYPE line: their text is never written, and a
// HELP line only starts a family, which the TYPE line after it starts
// again. The parser then does not read them: a fifth of the bytes of a
// Docker engine's exposition. Other HELP lines stay. The lines are found
// by searching the body for them, not by walking it line by line.
func dropHelp(body []byte) []byte {
	const help, typ = "# HELP ", "# TYPE "
	w, r := 0, 0 // body[:w] is kept, body[r:] not read yet
	// Searched from '#', which is rare in an exposition but at comment
	// lines: a search from '\n' would stop at every line.
	for from := 0; ; {
		k := bytes.Index(body[from:], []byte(help))
		if k < 0 {
			break
		}
		i := from + k // the HELP line's start, if at a line's start
		nl := bytes.IndexByte(body[i:], '\n')
		if nl < 0 {
			break
		}
		end := i + nl + 1
		from = end
		if i > 0 && body[i-1] != '\n' || !bytes.HasPrefix(body[end:], []byte(typ)) {
			continue // inside a line, or not followed by a TYPE line: kept
		}
		if w != r {
			copy(body[w:], body[r:i])
		}
		w += i - r
		r = end
	}
	if w != r {
		copy(body[w:], body[r:])
	}
	return body[:w+len(body)-r]
}

// appendFamily appends a family name from a TYPE or HELP line, which the
// parser gives as written: quoted for UTF-8 names
// (# TYPE "http.server.request.duration" histogram). The samples' names
// come unquoted, from __name__, so the quotes go here.
func appendFamily(dst, name []byte) []byte {
	if len(name) < 2 || name[0] != '"' || name[len(name)-1] != '"' {
		return append(dst, name...)
	}
	if u, err := strconv.Unquote(string(name)); err == nil {
		return append(dst, u...)
	}
	return append(dst, name[1:len(name)-1]...)
}

// metricName returns the metric name of the current series: the text before
// '{' in the classic syntax, or __name__ for quoted UTF-8 names.
func (p *Parser) metricName(tp textparse.Parser, series []byte) []byte {
	// The text format allows blanks around the name.
	if i := bytes.IndexByte(series, '{'); i > 0 {
		return trimBlanks(series[:i])
	} else if i < 0 {
		return trimBlanks(series)
	}
	tp.Labels(&p.lset)
	p.name = append(p.name[:0], p.lset.Get(model.MetricNameLabel)...)
	return p.name
}

// trimBlanks is bytes.Trim(b, " \t") without building the cut set for
// every sample: names are rarely padded.
func trimBlanks(b []byte) []byte {
	for len(b) > 0 && (b[0] == ' ' || b[0] == '\t') {
		b = b[1:]
	}
	for len(b) > 0 && (b[len(b)-1] == ' ' || b[len(b)-1] == '\t') {
		b = b[:len(b)-1]
	}
	return b
}

// classify tells which family a sample belongs to: the current TYPE'd
// family when the sample's name is that family's name or one of the
// suffixes its type allows, else a family of its own with unknown type.
func (p *Parser) classify(name []byte) ([]byte, model.MetricType) {
	if len(p.family) == 0 || !bytes.HasPrefix(name, p.family) {
		return name, model.MetricTypeUnknown
	}
	suffix := string(name[len(p.family):])
	ok := suffix == ""
	switch p.typ {
	case model.MetricTypeHistogram:
		ok = suffix == "_bucket" || suffix == "_sum" || suffix == "_count"
	case model.MetricTypeGaugeHistogram:
		ok = suffix == "_bucket" || suffix == "_gsum" || suffix == "_gcount"
	case model.MetricTypeSummary:
		ok = ok || suffix == "_sum" || suffix == "_count"
	case model.MetricTypeCounter:
		ok = ok || suffix == "_total"
	case model.MetricTypeInfo:
		ok = ok || suffix == "_info"
	}
	if !ok {
		return name, model.MetricTypeUnknown
	}
	return p.family, p.typ
}
