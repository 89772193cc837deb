package sink

import (
	"fmt"
	"slices"
	"strings"
	"unicode/utf8"

	"github.com/prometheus/common/model"
	"github.com/prometheus/prometheus/model/labels"
	"github.com/prometheus/prometheus/model/relabel"
	"github.com/scrapeflux/scrapeflux/scrape"
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
		if reservedKey(field) {
			field = "exported_" + field
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

// reservedKey tells whether InfluxDB reserves key as a field key: 1.8
// drops such a field without a word (the write answered 204,
// TestReservedFieldKeysRenamed), its documentation says the whole point
// is discarded (in layout v2 every metric of a tag set).
func reservedKey(key string) bool {
	return key == "time" || key == "_field" || key == "_measurement"
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
