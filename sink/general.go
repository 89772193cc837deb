package sink

import (
	"fmt"
	"slices"
	"strings"

	"github.com/prometheus/common/model"
	"github.com/prometheus/prometheus/model/labels"
	"github.com/prometheus/prometheus/model/relabel"
	"github.com/scrapeflux/scrapeflux/scrape"
	"github.com/scrapeflux/scrapeflux/sink/lineproto"
)

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
	if err := c.checkLabelLimits(sc.lset, s.Series); err != nil {
		return false, err
	}
	suffix := strings.TrimPrefix(name, family)
	var measurement, field, skip string
	if c.opts.Layout == LayoutV2 {
		measurement, field = c.opts.Measurement, name
		if lineproto.ReservedField(field) {
			field = lineproto.Exported + field
		}
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
		// A value over lineproto.MaxTagValue goes: InfluxDB's refusal
		// names it, and it is counted from there.
		switch lineproto.RefusedValue(l.Value) {
		case lineproto.RefusedUTF8:
			bad = fmt.Errorf("%w: label %s of %s", ErrInvalidUTF8, l.Name, s.Series)
		case lineproto.RefusedNUL:
			bad = fmt.Errorf("%w: label %s of %q", ErrNULByte, l.Name, s.Series)
		}
		if strings.IndexByte(l.Name, 0) >= 0 {
			bad = fmt.Errorf("%w: label %s of %q", ErrNULByte, l.Name, s.Series)
		}
		// InfluxDB forbids empty tag values; Prometheus treats an empty
		// label as absent anyway.
		key, val := l.Name, lineproto.TrimBackslash(l.Value)
		if val == "" {
			return
		}
		if key == "le" || key == "quantile" {
			val = normalizeBound(val)
		}
		if lineproto.RenamedTag(key) || c.identity(key) {
			// Prefix until the name is free: a label may already be
			// called exported_job (as Prometheus does).
			key = lineproto.Exported + key
			for c.identity(key) || sc.lset.Has(key) {
				key = lineproto.Exported + key
			}
		}
		sc.tags = append(sc.tags, scrape.Tag{Key: key, Value: val})
	})
	if bad != nil {
		return false, bad
	}
	sc.tags = append(sc.tags, c.ident...)
	slices.SortFunc(sc.tags, func(a, b scrape.Tag) int { return strings.Compare(a.Key, b.Key) })

	measurement, field = lineproto.TrimBackslash(measurement), lineproto.TrimBackslash(field)
	if measurement == "" || field == "" {
		// Only names made of backslashes get here (UTF-8 metric names).
		c.invalid++
		return true, nil
	}
	b := lineproto.AppendEscaped(sc.keys, measurement, true)
	for _, t := range sc.tags {
		b = append(b, ',')
		b = lineproto.AppendEscaped(b, t.Key, false)
		b = append(b, '=')
		b = lineproto.AppendEscaped(b, t.Value, false)
	}
	sc.keys = b
	sc.names = lineproto.AppendEscaped(sc.names, field, false)
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

// checkLabelLimits fails a series past the job's label limits, naming the
// label (and never quoting a value that is too long).
func (c *converter) checkLabelLimits(lset labels.Labels, series []byte) error {
	a := c.app
	if a.LabelLimit > 0 && lset.Len()-1 > a.LabelLimit {
		return fmt.Errorf("%w: %d labels on %s, limit %d (label_limit)", ErrLabelLimit, lset.Len()-1, cut(string(series), 200), a.LabelLimit)
	}
	if a.LabelNameLengthLimit == 0 && a.LabelValueLengthLimit == 0 {
		return nil
	}
	var err error
	lset.Range(func(l labels.Label) {
		switch {
		case err != nil, l.Name == model.MetricNameLabel:
		case a.LabelNameLengthLimit > 0 && len(l.Name) > a.LabelNameLengthLimit:
			err = fmt.Errorf("%w: label name %q of %d bytes on %s, limit %d (label_name_length_limit)", ErrLabelLimit, cut(l.Name, 100), len(l.Name), cut(lset.Get(model.MetricNameLabel), 200), a.LabelNameLengthLimit)
		case a.LabelValueLengthLimit > 0 && len(l.Value) > a.LabelValueLengthLimit:
			err = fmt.Errorf("%w: label %q has a value of %d bytes on %s, limit %d (label_value_length_limit)", ErrLabelLimit, l.Name, len(l.Value), cut(lset.Get(model.MetricNameLabel), 200), a.LabelValueLengthLimit)
		}
	})
	return err
}
