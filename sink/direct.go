package sink

import (
	"bytes"
	"encoding/binary"
	"math"
	"math/bits"

	"github.com/scrapeflux/scrapeflux/scrape"
	"github.com/scrapeflux/scrapeflux/sink/lineproto"
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

// label is one label of the series text being converted.
// Offsets in the series text: the name starts at name, '=' is at eq, the
// quoted value runs from eq+2 to end.
type label struct {
	name, eq, end uint16
	escape        bool // the value holds bytes to escape
}

func (l label) nameOf(text []byte) []byte { return text[l.name:l.eq] }

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

// scanValue finds the quote that ends the label value v starts with, and
// tells whether the value can take the direct way (no escape sequence,
// control byte or non-ASCII byte before it) and whether it holds bytes to
// escape. Eight bytes at a time: most values hold none of these, and the
// first of them in a word is found exactly (the bit tricks flag false
// bytes only above a true one).
func scanValue(v []byte) (q int, ok, escape bool) {
	const ones, highs = 0x0101010101010101, 0x8080808080808080
	for i := 0; i < len(v); {
		if i+8 <= len(v) {
			w := binary.LittleEndian.Uint64(v[i:])
			less := (w - ones*0x21) &^ w & highs // a byte below '!'
			comma, equals, bslash, quote := w^(ones*','), w^(ones*'='), w^(ones*'\\'), w^(ones*'"')
			match := (comma-ones)&^comma | (equals-ones)&^equals | (bslash-ones)&^bslash | (quote-ones)&^quote
			m := (w | less | match) & highs
			if m == 0 {
				i += 8
				continue
			}
			i += bits.TrailingZeros64(m) >> 3
		}
		switch b := v[i]; byteClass[b] {
		case clPlain:
		case clEscape:
			escape = true
		default:
			return i, b == '"', escape
		}
		i++
	}
	return 0, false, false
}

// keyState is a line key being written label by label, in name order,
// with the target's identity tags merged in.
type keyState struct {
	b     []byte
	id    int    // identity tags written
	field string // the bound or quantile that names the field
	bound bool
}

// putLabel writes the label lname="value" to st, or takes it as the field's
// name when it is skip (le, quantile); it reports false when the label
// clashes with an identity tag or is named time.
func (c *converter) putLabel(sc *scratch, st *keyState, lname, value []byte, escape bool, skip string) bool {
	if len(value) == 0 {
		return true
	}
	if string(lname) == skip {
		st.field, st.bound = sc.bound(value), true
		return true
	}
	b := st.b
	for st.id < len(c.ident) && before(c.ident[st.id].Key, lname) {
		b = append(b, c.identTags[st.id]...)
		st.id++
	}
	if st.id < len(c.ident) && c.ident[st.id].Key == string(lname) || string(lname) == "time" {
		return false
	}
	b = append(b, ',')
	b = append(b, lname...)
	b = append(b, '=')
	switch {
	case string(lname) == "le" || string(lname) == "quantile":
		b = lineproto.AppendEscaped(b, sc.bound(value), false)
	case escape:
		b = lineproto.AppendEscaped(b, value, false)
	default:
		b = append(b, value...)
	}
	st.b = b
	return true
}

// directKey writes the line key of s to sc.keys and its field key to
// sc.names from the series text, or reports false when the series needs
// the general way. The text was read by the exposition parser, which
// checked its grammar: a classic metric name, then label names and quoted
// values with blanks allowed between them. So the checks here only look
// for what the direct way does not take. Labels in name order (as most
// exporters write them) are written as they are scanned; others are
// sorted first.
func (c *converter) directKey(sc *scratch, s *scrape.Sample) bool {
	name, text := s.Name, s.Series
	if len(name) == 0 || len(text) < len(name) || len(text) > math.MaxUint16 || string(text[:len(name)]) != string(name) ||
		name[0] != '_' && name[0] != ':' && (name[0]|0x20 < 'a' || name[0]|0x20 > 'z') {
		return false
	}
	measurement, skip := name, ""
	st := keyState{}
	if c.opts.Layout == LayoutV2 {
		measurement = c.measurement
	} else {
		var ofFamily bool
		ofFamily, st.field, skip = v1Field(s.Type, string(name[len(s.Family):]))
		if ofFamily {
			measurement = s.Family
		}
	}
	field0, k0 := st.field, len(sc.keys)
	st.b = append(sc.keys, measurement...)
	// Labels: {name="value",...} with an optional trailing comma. Label
	// names starting with an underscore are reserved (__name__) or
	// renamed, quoted ones are UTF-8 names.
	lbs := sc.labels[:0]
	sorted := true
	if len(text) > len(name) {
		if text[len(name)] != '{' || text[len(text)-1] != '}' {
			return false
		}
		nameLimit, valueLimit := c.app.LabelNameLengthLimit, c.app.LabelValueLengthLimit
		prev := -1 // the previous label's name, in lbs
		for i, end := len(name)+1, len(text)-1; i < end; {
			if b := text[i]; b < 'A' || b > 'z' || b > 'Z' && b < 'a' {
				return false
			}
			eq := i + 1
			for eq < end && text[eq] != '=' {
				eq++
			}
			if eq+1 >= end || text[eq-1] == ' ' || text[eq-1] == '\t' || text[eq+1] != '"' {
				return false
			}
			vs := eq + 2
			q, ok, esc := scanValue(text[vs:end])
			if !ok || len(lbs) == maxDirectLabels ||
				nameLimit > 0 && eq-i > nameLimit || valueLimit > 0 && q > valueLimit { // the general way names it
				return false
			}
			l := label{name: uint16(i), eq: uint16(eq), end: uint16(vs + q), escape: esc}
			if sorted && prev >= 0 {
				if d := compareNames(text, lbs[prev], l); d == 0 {
					return false // a duplicate, which the general way reports
				} else if d > 0 {
					sorted = false
				}
			}
			if sorted && !c.putLabel(sc, &st, text[i:eq], text[vs:vs+q], esc, skip) {
				return false
			}
			prev = len(lbs)
			lbs = append(lbs, l)
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
	if !sorted {
		// Insertion sort by name; a duplicate name is an error the
		// general way reports.
		for i := 1; i < len(lbs); i++ {
			for j := i; j > 0; j-- {
				d := compareNames(text, lbs[j-1], lbs[j])
				if d == 0 {
					return false
				}
				if d < 0 {
					break
				}
				lbs[j-1], lbs[j] = lbs[j], lbs[j-1]
			}
		}
		st = keyState{b: append(sc.keys[:k0], measurement...), field: field0}
		for _, l := range lbs {
			if !c.putLabel(sc, &st, l.nameOf(text), text[l.eq+2:l.end], l.escape, skip) {
				return false
			}
		}
	}
	if st.field == "" && c.opts.Layout == LayoutV1 {
		// A bucket without le, a quantile without quantile.
		return false
	}
	b := st.b
	for id := st.id; id < len(c.ident); id++ {
		b = append(b, c.identTags[id]...)
	}
	sc.keys = b
	if c.opts.Layout == LayoutV2 {
		if lineproto.ReservedField(name) {
			sc.names = append(sc.names, lineproto.Exported...)
		}
		sc.names = append(sc.names, name...)
	} else if st.bound {
		sc.names = lineproto.AppendEscaped(sc.names, st.field, false)
	} else {
		sc.names = append(sc.names, st.field...) // counter, gauge, value, sum...: nothing to escape
	}
	return true
}

// compareNames compares the names of two labels of text; the first byte
// decides most of the time.
func compareNames(text []byte, a, z label) int {
	if d := int(text[a.name]) - int(text[z.name]); d != 0 {
		return d
	}
	return bytes.Compare(a.nameOf(text), z.nameOf(text))
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
