package sink

import (
	"bytes"
	"fmt"
	"math"
	"strconv"
	"strings"
	"testing"

	"github.com/scrapeflux/scrapeflux/scrape/simulator"
)

// FuzzConvert feeds arbitrary expositions through parse + convert (layout
// v2, whose mapping from samples is one field per sample). Any input must
// either fail the scrape with nothing written, or yield lines that InfluxDB's
// rules parse back to exactly the finite samples given, one line per point.
// Both layouts, in both exposition formats, must write the same bytes
// whether series take the direct way or the general one.
func FuzzConvert(f *testing.F) {
	// The heads of the real captures: small seeds keep mutation fast.
	for _, b := range simulator.Captures() {
		if len(b) > 2<<10 {
			b = b[:bytes.LastIndexByte(b[:2<<10], '\n')+1]
		}
		f.Add(b)
	}
	f.Add([]byte("m{v=\"trail\\\\\"} 1\nm{v=\"a,b c=d\"} 2\n"))
	f.Add([]byte("# TYPE h histogram\nh_bucket{le=\"1\"} 1\nh_bucket{le=\"+Inf\"} NaN\nh_count 1\n"))
	// Series that must leave the direct way: clashes with identity tags,
	// reserved names, unsorted and duplicate labels, escapes, UTF-8.
	f.Add([]byte("m{job=\"j\",instance=\"i\",time=\"t\",_a=\"b\",exported_job=\"e\"} 1\nm{z=\"1\",a=\"2\",k=\"\",} 2\nm{a=\"1\",a=\"2\"} 3\n"))
	f.Add([]byte("# TYPE s summary\ns{quantile=\"0.50\",b=\"x y\"} 1\ns{b=\"x=y,z\"} 2\ns_sum 3\nu{v=\"\\n\\\"é\"} 4\n"))
	f.Fuzz(func(t *testing.T, body []byte) {
		sameBothWays(t, body)
		rec := &tee{}
		out, dropped, err := encode(t, LayoutV2, body, rec)
		if err != nil {
			if len(out) != 0 {
				t.Fatalf("failed scrape wrote %q", out)
			}
			return
		}
		want := expectedV2(rec.samples)
		got := map[string]float64{}
		fields := 0
		for _, line := range bytes.SplitAfter(out, []byte("\n")) {
			if len(line) == 0 {
				continue
			}
			tags, fs, err := parseLine(string(line))
			if err != nil {
				t.Fatalf("line %q: %v", line, err)
			}
			// Duplicate series in one exposition repeat a field; InfluxDB
			// keeps the last, as the map does.
			for _, f := range fs {
				got[tagKey(tags)+"|"+f.key] = f.val
				fields++
			}
		}
		if fields+dropped != len(rec.samples) {
			t.Fatalf("%d fields + %d dropped for %d samples\n%s", fields, dropped, len(rec.samples), out)
		}
		for k, v := range want {
			g, ok := got[k]
			if !ok || (g != v && !(math.IsNaN(g) && math.IsNaN(v))) {
				t.Fatalf("%s: got %v (present %v), want %v\n%s", k, g, ok, v, out)
			}
		}
		if len(got) != len(want) {
			t.Fatalf("got %d distinct fields, want %d", len(got), len(want))
		}
	})
}

// parseLine reads one line as InfluxDB's parser does: a delimiter preceded
// by a backslash is escaped; only \, \= and "\ " are unescaped. It returns
// the tags and the float fields in order.
func parseLine(line string) (map[string]string, []field, error) {
	if !strings.HasSuffix(line, "\n") || strings.Count(line, "\n") != 1 {
		return nil, nil, fmt.Errorf("not exactly one line")
	}
	line = strings.TrimSuffix(line, "\n")
	// Split on unescaped spaces: key, fields, timestamp.
	var parts []string
	start := 0
	for i := 0; i < len(line); i++ {
		if line[i] == ' ' && (i == 0 || line[i-1] != '\\') {
			parts = append(parts, line[start:i])
			start = i + 1
		}
	}
	parts = append(parts, line[start:])
	if len(parts) != 3 {
		return nil, nil, fmt.Errorf("want key, fields, timestamp; got %d parts", len(parts))
	}
	if _, err := strconv.ParseInt(parts[2], 10, 64); err != nil {
		return nil, nil, fmt.Errorf("bad timestamp")
	}
	unesc := strings.NewReplacer(`\,`, ",", `\=`, "=", `\ `, " ").Replace
	splitUnescaped := func(s string, sep byte) []string {
		var out []string
		st := 0
		for i := 0; i < len(s); i++ {
			if s[i] == sep && (i == 0 || s[i-1] != '\\') {
				out = append(out, s[st:i])
				st = i + 1
			}
		}
		return append(out, s[st:])
	}
	key := splitUnescaped(parts[0], ',')
	tags := map[string]string{}
	for _, kv := range key[1:] {
		p := splitUnescaped(kv, '=')
		if len(p) != 2 || p[0] == "" || p[1] == "" {
			return nil, nil, fmt.Errorf("bad tag %q", kv)
		}
		tags[unesc(p[0])] = unesc(p[1])
	}
	if tags["instance"] == "" || tags["job"] == "" {
		return nil, nil, fmt.Errorf("identity tags missing")
	}
	var fields []field
	for _, kv := range splitUnescaped(parts[1], ',') {
		p := splitUnescaped(kv, '=')
		if len(p) != 2 || p[0] == "" {
			return nil, nil, fmt.Errorf("bad field %q", kv)
		}
		v, err := strconv.ParseFloat(p[1], 64)
		if err != nil || math.IsNaN(v) || math.IsInf(v, 0) {
			return nil, nil, fmt.Errorf("bad field value %q", p[1])
		}
		fields = append(fields, field{unesc(p[0]), v})
	}
	return tags, fields, nil
}

type field struct {
	key string
	val float64
}

// sameBothWays checks that the direct way from series text to line key
// writes what the general way writes, or fails the same scrapes.
func sameBothWays(t *testing.T, body []byte) {
	for _, layout := range []Layout{LayoutV1, LayoutV2} {
		for _, ct := range []string{"text/plain; version=0.0.4", "application/openmetrics-text; version=1.0.0"} {
			direct, dn, derr := encodeWith(t, layout, body, nil, ct, true)
			general, gn, gerr := encodeWith(t, layout, body, nil, ct, false)
			if (derr == nil) != (gerr == nil) || derr != nil && derr.Error() != gerr.Error() {
				t.Fatalf("v%d %s: error %v the direct way, %v the general way", layout, ct, derr, gerr)
			}
			if !bytes.Equal(direct, general) || dn != gn {
				t.Fatalf("v%d %s: the direct way wrote (%d dropped)\n%s\nthe general way (%d dropped)\n%s", layout, ct, dn, direct, gn, general)
			}
			// Dropping HELP lines changes nothing that parses (a HELP line
			// the parser would refuse may go unread).
			if derr == nil {
				dropped, hn, herr := encodeParser(t, layout, body, nil, ct, true, true)
				if herr != nil || !bytes.Equal(direct, dropped) || dn != hn {
					t.Fatalf("v%d %s: without HELP lines (err %v, %d dropped)\n%s\nwith them (%d dropped)\n%s", layout, ct, herr, hn, dropped, dn, direct)
				}
			}
		}
	}
}

// Every capture, whole, is written the same with and without its HELP
// lines, and the same both ways.
func TestDropHelpChangesNothing(t *testing.T) {
	for _, body := range simulator.Captures() {
		sameBothWays(t, body)
	}
}
