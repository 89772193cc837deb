// Package lineproto holds the rules of InfluxDB's line protocol that the
// conversion follows and the lint checks for: escaping, and which names
// and values InfluxDB renames, reserves or refuses. One place, so the
// lint cannot drift from what is written. It imports nothing of the
// project.
package lineproto

import "strings"

// Line protocol escaping, as InfluxDB's own parser reads it:
//   - measurement: comma and space are escaped;
//   - tag keys, tag values, field keys: comma, equals sign and space.
//
// InfluxDB treats a delimiter as escaped whenever the byte before it is a
// backslash, and unescapes only the three sequences above; every other
// backslash is stored as is. So backslashes inside a value need no
// escaping, but a value cannot end in one: it would escape the delimiter
// that follows. Such trailing backslashes are trimmed (TrimBackslash);
// Telegraf drops the whole tag instead. Newline, carriage return, tab and
// form feed cannot appear raw in a line: they are written as the two-byte
// sequences \n, \r, \t, \f (as Telegraf does), so no value can start a
// second line.

// TrimBackslash removes trailing backslashes, which line protocol cannot
// express at the end of a name or tag value.
func TrimBackslash(s string) string { return strings.TrimRight(s, `\`) }

// AppendEscaped appends s (already trimmed) to dst, escaped for a tag key,
// tag value or field key (comma, equals, space) or, when measurement is
// true, for a measurement name (comma, space).
func AppendEscaped[T string | []byte](dst []byte, s T, measurement bool) []byte {
	if !NeedsEscape(s, measurement) {
		return append(dst, s...)
	}
	for i := 0; i < len(s); i++ {
		switch c := s[i]; c {
		case ',', ' ':
			dst = append(dst, '\\', c)
		case '=':
			if !measurement {
				dst = append(dst, '\\')
			}
			dst = append(dst, c)
		case '\n':
			dst = append(dst, '\\', 'n')
		case '\r':
			dst = append(dst, '\\', 'r')
		case '\t':
			dst = append(dst, '\\', 't')
		case '\f':
			dst = append(dst, '\\', 'f')
		default:
			dst = append(dst, c)
		}
	}
	return dst
}

// NeedsEscape tells whether s holds a byte AppendEscaped would escape.
func NeedsEscape[T string | []byte](s T, measurement bool) bool {
	for i := 0; i < len(s); i++ {
		switch s[i] {
		case ',', ' ', '\n', '\r', '\t', '\f':
			return true
		case '=':
			if !measurement {
				return true
			}
		}
	}
	return false
}
