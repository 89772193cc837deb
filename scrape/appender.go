package scrape

import (
	"context"
	"errors"
	"slices"
	"strings"

	"github.com/prometheus/common/model"
	"github.com/prometheus/prometheus/model/labels"
	"github.com/prometheus/prometheus/model/relabel"

	"github.com/scrapeflux/scrapeflux/discovery"
)

// Appender takes the samples of one target's scrapes. The scrape pool makes
// one per target loop and calls it from that loop's goroutine only, so an
// implementation may keep per-target state (buffers, per-series decisions)
// without locking.
//
// A scrape is a run of Append calls closed by Commit (everything appended
// since the last Commit or Rollback is accepted) or Rollback (all of it is
// discarded). A loop rolls back a failed scrape and then commits only its
// synthetic series (up=0), so nothing partial is ever written. Commit may
// block briefly on a busy hand-off but never waits on the metrics store.
type Appender interface {
	// Append adds one sample. The sample and its byte slices are only valid
	// during the call. An error fails the whole scrape.
	Append(s *Sample) error
	Commit() error
	Rollback()
}

// RoomWaiter is an Appender that can say the store is behind. A loop
// calls WaitRoom before it fetches, so it waits holding no body and no
// CPU slot; without it a loop would fetch and then wait in Commit, and
// every target's body would be held at once.
type RoomWaiter interface {
	WaitRoom(ctx context.Context) error
}

// Cardinality is what an Appender knows of a target's series when it
// tracks them (a series limit or budget is set).
type Cardinality struct {
	// Series seen in the last hour, and of them first seen in it.
	Series, NewLastHour int
	// Limit is the target's series limit (0: none); Limited the samples
	// of new series held back by it or by a budget, in all.
	Limit   int
	Limited int64
	// Widest are the label names with the most distinct values among
	// the target's new series: which label makes the series.
	Widest []LabelWidth
	// SchemaHeld: samples the InfluxDB 3 schema guard held back, in
	// all; SchemaHeldWhy: why the latest were.
	SchemaHeld    int64
	SchemaHeldWhy string
}

// LabelWidth is a label name and its distinct values; AtLeast when the
// count stopped at its cap.
type LabelWidth struct {
	Name    string `json:"name"`
	Values  int    `json:"values"`
	AtLeast bool   `json:"at_least,omitempty"`
}

// CardinalityReporter is an Appender that tracks series; the loop asks it
// after each scrape, from its own goroutine.
type CardinalityReporter interface {
	Cardinality() Cardinality
}

// ErrLabelLimit fails a scrape with a series past AppendOptions' label
// limits.
var ErrLabelLimit = errors.New("label limit exceeded")

// Appendable makes the Appender for a target's loop when it starts. ident
// are the target's identity tags, sorted by key, which every point it
// writes carries.
type Appendable interface {
	Appender(ident []Tag, o AppendOptions) Appender
}

// Tag is one identity tag of a target (job, instance, node...), as the
// scrape stage hands it to the next one.
type Tag struct {
	Key, Value string
}

// IdentityTags are the tags of t every point of it carries, sorted by key.
func IdentityTags(t discovery.Target) []Tag {
	out := make([]Tag, len(t.Tags))
	for i, tg := range t.Tags {
		out[i] = Tag{Key: tg.Key, Value: tg.Value}
	}
	slices.SortFunc(out, func(a, b Tag) int { return strings.Compare(a.Key, b.Key) })
	return out
}

// AppendOptions are the per-job rules an Appender applies to each series
// (once per series, when it first sees it).
type AppendOptions struct {
	// MetricRelabelConfigs rewrite or drop series, labels including
	// __name__, with Prometheus semantics.
	MetricRelabelConfigs []*relabel.Config
	// LabelLimit fails the scrape when a series has more labels (0: none);
	// LabelNameLengthLimit and LabelValueLengthLimit when a label's name
	// or value is longer, in bytes (0: none). The Appender returns an
	// error wrapping ErrLabelLimit that names the label.
	LabelLimit, LabelNameLengthLimit, LabelValueLengthLimit int
	// SeriesLimit holds back samples of new series once the target has
	// this many series over the last hour (0: none).
	SeriesLimit int
	// Job names the job of a configuration file (empty for flag jobs);
	// MaxHourlySeries and MaxDailySeries are its budgets of new series,
	// over all its targets together, in an hour and in a day (0: none).
	Job                             string
	MaxHourlySeries, MaxDailySeries int
	// Bucket routes the job's points to another bucket (1.x: database or
	// database/retention-policy); empty: the default one.
	Bucket string
	// Layout and Measurement, when set, override the store's defaults for
	// this job; the Appendable validates and interprets them.
	Layout, Measurement string
}

// Sample is one sample as exposed by a target, handed to an Appender.
type Sample struct {
	// Series is the exposition text of the series (name and labels), as
	// the parser read it. Equal texts within one target are the same
	// series from one scrape to the next, so appenders can key per-series
	// decisions on it, and work from the text without calling Labels.
	Series []byte
	// Name is the metric name of the sample (foo_bucket); Family is the
	// name of its metric family (foo) and Type the family's type, unknown
	// for families without a TYPE line.
	Name   []byte
	Family []byte
	Type   model.MetricType
	Value  float64
	// Timestamp in milliseconds since the epoch: the scrape's slot, or the
	// exposed timestamp when the loop honours timestamps.
	Timestamp int64
	// Synthetic marks the series a loop writes of its own (up,
	// scrape_duration_seconds, scrape_samples_scraped): metric relabeling
	// does not apply to them, as in Prometheus, so a keep rule cannot hide
	// a dead target.
	Synthetic bool

	src  labelSource
	lset labels.Labels
}

// labelSource is what Sample.Labels reads from: the parser of the current
// scrape, or nil for synthetic samples.
type labelSource interface {
	Labels(l *labels.Labels)
}

// Labels writes the sample's labels, __name__ included, into l.
func (s *Sample) Labels(l *labels.Labels) {
	if s.src != nil {
		s.src.Labels(l)
		return
	}
	*l = s.lset
}

// SyntheticSample builds a sample that did not come from a parser, such as
// the per-scrape series up and scrape_duration_seconds, or test input.
func SyntheticSample(lset labels.Labels, typ model.MetricType, v float64, ts int64) Sample {
	name := lset.Get(model.MetricNameLabel)
	return Sample{
		Series:    []byte(lset.String()),
		Name:      []byte(name),
		Family:    []byte(name),
		Type:      typ,
		Value:     v,
		Timestamp: ts,
		lset:      lset,
	}
}
