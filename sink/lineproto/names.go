package lineproto

import "unicode/utf8"

// Exported is the prefix a name gets when InfluxDB cannot take it as it
// is (Prometheus's prefix for a label that clashes with a target label).
const Exported = "exported_"

// MaxTagValue is the longest tag value InfluxDB takes: 64 KiB - 1 bytes.
const MaxTagValue = 65535

// RenamedTag tells whether a label named name is written as a tag called
// Exported + name: InfluxDB reserves the tag key time, and keys starting
// with an underscore are its own (_measurement, _field). A label named
// like one of the target's identity tags (job, instance) is renamed too;
// callers check that, as only they know the target.
func RenamedTag[T string | []byte](name T) bool {
	return len(name) > 0 && name[0] == '_' || string(name) == "time"
}

// ReservedField tells whether InfluxDB reserves key as a field key: 1.8
// drops such a field without a word (the write is answered 204), its
// documentation says the whole point is discarded. Layout v2, which names
// fields after metrics, writes such a metric as Exported + key.
func ReservedField[T string | []byte](key T) bool {
	k := string(key)
	return k == "time" || k == "_field" || k == "_measurement"
}

// V1Field tells whether name is a field of layout v1's lines (value,
// counter, gauge, sum, count): a label of that name makes a tag and a
// field of one name, which InfluxDB 3 refuses.
func V1Field[T string | []byte](name T) bool {
	switch string(name) {
	case "value", "counter", "gauge", "sum", "count":
		return true
	}
	return false
}

// Why InfluxDB refuses a tag value (RefusedValue).
const (
	RefusedUTF8 = "utf8" // not valid UTF-8
	RefusedNUL  = "nul"  // holds a NUL byte
	RefusedLong = "long" // longer than MaxTagValue
)

// RefusedValue says why InfluxDB refuses v as a tag value, or "" when it
// takes it.
func RefusedValue[T string | []byte](v T) string {
	var valid bool
	switch v := any(v).(type) {
	case string:
		valid = utf8.ValidString(v)
	case []byte:
		valid = utf8.Valid(v)
	}
	if !valid {
		return RefusedUTF8
	}
	for i := 0; i < len(v); i++ {
		if v[i] == 0 {
			return RefusedNUL
		}
	}
	if len(v) > MaxTagValue {
		return RefusedLong
	}
	return ""
}
