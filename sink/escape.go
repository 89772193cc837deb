package sink

// Line protocol escaping. InfluxDB's parsers skip the byte after every
// backslash while scanning, so a backslash is only safe where the next byte
// is ordinary. Escaping rules, per element:
//   - measurement: comma and space;
//   - tag keys, tag values, field keys: comma, equals sign and space.
// Newline, carriage return, tab and form feed cannot appear raw in a line:
// they are written as the two-byte sequences \n, \r, \t, \f (as Telegraf
// does), so no value can start a second line. A backslash that precedes a
// byte that must be escaped, or ends the element, is doubled so that it
// cannot escape the delimiter that follows (InfluxDB then stores both);
// any other backslash is kept as is, which InfluxDB reads back unchanged.

// appendEscaped appends s to dst, escaping for a tag key, tag value or field
// key (comma, equals, space) or, when measurement is true, for a measurement
// name (comma, space).
func appendEscaped(dst []byte, s string, measurement bool) []byte {
	if !needsEscape(s, measurement) {
		return append(dst, s...)
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch c {
		case ',', ' ':
			dst = append(dst, '\\', c)
		case '=':
			if measurement {
				dst = append(dst, c)
			} else {
				dst = append(dst, '\\', c)
			}
		case '\n':
			dst = append(dst, '\\', 'n')
		case '\r':
			dst = append(dst, '\\', 'r')
		case '\t':
			dst = append(dst, '\\', 't')
		case '\f':
			dst = append(dst, '\\', 'f')
		case '\\':
			// A run of backslashes before an ordinary byte is kept as is;
			// before a delimiter or the end it is doubled so that the
			// scanner pairs it up and the delimiter stays a delimiter.
			j := i
			for j < len(s) && s[j] == '\\' {
				j++
			}
			run := s[i:j]
			dst = append(dst, run...)
			if j == len(s) || special(s[j], measurement) {
				dst = append(dst, run...)
			}
			i = j - 1
		default:
			dst = append(dst, c)
		}
	}
	return dst
}

// special reports whether c is escaped (or rewritten) in this element, so a
// backslash before it needs doubling.
func special(c byte, measurement bool) bool {
	switch c {
	case ',', ' ', '\n', '\r', '\t', '\f':
		return true
	case '=':
		return !measurement
	}
	return false
}

func needsEscape(s string, measurement bool) bool {
	for i := 0; i < len(s); i++ {
		switch s[i] {
		case ',', ' ', '\n', '\r', '\t', '\f', '\\':
			return true
		case '=':
			if !measurement {
				return true
			}
		}
	}
	return false
}
