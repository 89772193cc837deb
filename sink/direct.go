package sink

import (
	"bytes"
	"encoding/binary"
	"math"

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
	if c.app.LabelNameLengthLimit > 0 || c.app.LabelValueLengthLimit > 0 {
		for _, l := range lbs {
			if (c.app.LabelNameLengthLimit > 0 && len(l.nameOf(text)) > c.app.LabelNameLengthLimit) ||
				(c.app.LabelValueLengthLimit > 0 && int(l.end)-int(l.eq)-2 > c.app.LabelValueLengthLimit) {
				return false // the general way names it
			}
		}
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
	bound := false // field is a bound or quantile, else one of v1Field's names
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
			field, bound = sc.bound(value), true
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
			b = lineproto.AppendEscaped(b, sc.bound(value), false)
		case l.escape:
			b = lineproto.AppendEscaped(b, value, false)
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
		if lineproto.ReservedField(name) {
			sc.names = append(sc.names, lineproto.Exported...)
		}
		sc.names = append(sc.names, name...)
	} else if bound {
		sc.names = lineproto.AppendEscaped(sc.names, field, false)
	} else {
		sc.names = append(sc.names, field...) // counter, gauge, value, sum...: nothing to escape
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
