package lineproto

import (
	"slices"
	"testing"
)

func TestSplitLine(t *testing.T) {
	for _, c := range []struct {
		line         string
		table        string
		tags, fields []string
	}{
		{`cpu,host=a,dc=x value=1 1700`, "cpu", []string{"host", "dc"}, []string{"value"}},
		{`my\ table,ta\,g=v\ 1,b\=c=2 f\ 1=1,g=2.5 1700`, `my\ table`, []string{`ta\,g`, `b\=c`}, []string{`f\ 1`, "g"}},
		{`m\,x f=1`, `m\,x`, nil, []string{"f"}},
	} {
		key, fields := SplitLine([]byte(c.line))
		var table string
		var tags, fs []string
		SplitKey(key, func(p []byte, tag bool) {
			if tag {
				tags = append(tags, string(p))
			} else {
				table = string(p)
			}
		})
		FieldKeys(fields, func(k []byte) { fs = append(fs, string(k)) })
		if table != c.table || !slices.Equal(tags, c.tags) || !slices.Equal(fs, c.fields) {
			t.Errorf("%s: table %q tags %q fields %q; want %q %q %q", c.line, table, tags, fs, c.table, c.tags, c.fields)
		}
	}
}
