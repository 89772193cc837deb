package scrape

import (
	"bytes"

	"github.com/prometheus/common/model"
	"github.com/prometheus/prometheus/model/labels"
)

// RangeLabels calls fn with each label of s but the metric name. A series
// in the classic text form (name{a="1",b="2"}) is read straight from its
// text, without building its labels: values are given as written,
// escapes and all, which is the same value for counting or hashing (the
// text format writes a value one way). Any other series (quoted UTF-8
// names, protobuf, synthetic) goes through its parsed labels, kept in
// scratch. name and value are only valid during the call.
func (s *Sample) RangeLabels(scratch *labels.Labels, fn func(name, value []byte)) {
	if s.rangeText(fn, true) {
		s.rangeText(fn, false)
		return
	}
	s.Labels(scratch)
	scratch.Range(func(l labels.Label) {
		if l.Name != model.MetricNameLabel {
			fn([]byte(l.Name), []byte(l.Value))
		}
	})
}

// rangeText walks the labels of the series text; with check it only
// reports whether the text has the classic form, without calling fn.
func (s *Sample) rangeText(fn func(name, value []byte), check bool) bool {
	text, name := s.Series, s.Name
	if s.src == nil || len(name) == 0 || !bytes.HasPrefix(text, name) {
		return false
	}
	if len(text) == len(name) {
		return true
	}
	if text[len(name)] != '{' || text[len(text)-1] != '}' {
		return false
	}
	for i, end := len(name)+1, len(text)-1; i < end; {
		eq := i + bytes.IndexByte(text[i:end], '=')
		if eq <= i || eq+1 >= end || text[eq+1] != '"' || !labelName(text[i:eq]) {
			return false
		}
		// The value runs to the first quote not escaped.
		j := eq + 2
		for ; j < end && text[j] != '"'; j++ {
			if text[j] == '\\' {
				j++
			}
		}
		if j >= end {
			return false
		}
		if !check {
			fn(text[i:eq], text[eq+2:j])
		}
		if i = j + 1; i < end {
			if text[i] != ',' {
				return false
			}
			i++
		}
	}
	return true
}

// labelName tells whether b is a classic label name.
func labelName(b []byte) bool {
	for i, c := range b {
		if !(c == '_' || c|0x20 >= 'a' && c|0x20 <= 'z' || i > 0 && c >= '0' && c <= '9') {
			return false
		}
	}
	return true
}
