package sink

import (
	"fmt"
	"math"
	"strconv"

	"github.com/prometheus/common/model"
)

// The two layouts InfluxDB users know (Telegraf's metric_version 1 and 2,
// documented by InfluxDB as its Prometheus metric parsing formats): how a
// sample becomes a measurement, a field and tags.

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
