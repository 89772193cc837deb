package sink

import (
	"bytes"
	"encoding/json"
	"flag"
	"fmt"
	"math"
	"math/rand"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"testing"

	"github.com/prometheus/common/model"
	"github.com/prometheus/prometheus/model/labels"

	"github.com/scrapeflux/scrapeflux/internal/servertest"
	"github.com/scrapeflux/scrapeflux/scrape"
	"github.com/scrapeflux/scrapeflux/scrape/simulator"
)

var update = flag.Bool("update", false, "rewrite golden files")

const testTS = 1700000000000

// inputs are the real captures plus the hostile exposition of testdata.
func inputs(t testing.TB) map[string][]byte {
	in := simulator.Captures()
	h, err := os.ReadFile("testdata/hostile.prom")
	if err != nil {
		t.Fatal(err)
	}
	in["hostile"] = h
	return in
}

// encode converts body in layout with a standalone converter and returns
// the line protocol and the number of samples dropped, or the error that
// failed the scrape.
func encode(t testing.TB, layout Layout, body []byte, rec *tee) ([]byte, int, error) {
	return encodeWith(t, layout, body, rec, "text/plain; version=0.0.4", true)
}

// encodeWith is encode with a content type, and with the direct way from
// series text to line key on or off.
func encodeWith(t testing.TB, layout Layout, body []byte, rec *tee, contentType string, direct bool) ([]byte, int, error) {
	return encodeParser(t, layout, body, rec, contentType, direct, false)
}

// encodeParser is encodeWith, the parser dropping HELP lines (on a copy
// of body) when dropHelp.
func encodeParser(t testing.TB, layout Layout, body []byte, rec *tee, contentType string, direct, dropHelp bool) ([]byte, int, error) {
	s, err := New(ConvertOptions{Layout: layout, Measurement: DefaultMeasurement}.config(), &fakeWriter{}, discard)
	if err != nil {
		t.Fatal(err)
	}
	tg := testTarget()
	c := s.Appender(tg, scrape.AppendOptions{}).(*converter)
	c.direct = c.direct && direct
	var out []byte
	c.emit = func(ch *chunk) error { out = append(out, ch.buf...); return nil }
	var app scrape.Appender = c
	if rec != nil {
		rec.next = c
		app = rec
	}
	p := scrape.NewParser()
	if dropHelp {
		p.DropHelp = true
		body = bytes.Clone(body)
	}
	_, _, err = p.Parse(body, contentType, testTS, false, app)
	if err != nil {
		app.Rollback()
		return nil, 0, err
	}
	dropped := c.nonFinite + c.invalid + c.relabeled + c.outOfRange
	if err := app.Commit(); err != nil {
		t.Fatal(err)
	}
	return out, dropped, nil
}

func (o ConvertOptions) config() Config {
	c := DefaultConfig()
	c.QueueDir = ""
	c.Convert = o
	return c
}

func TestGolden(t *testing.T) {
	for name, body := range inputs(t) {
		for _, layout := range []Layout{LayoutV1, LayoutV2} {
			t.Run(fmt.Sprintf("%s/v%d", name, layout), func(t *testing.T) {
				got, _, err := encode(t, layout, body, nil)
				if err != nil {
					t.Fatal(err)
				}
				path := filepath.Join("testdata", "golden", fmt.Sprintf("%s.v%d.lp", name, layout))
				if *update {
					if err := os.WriteFile(path, got, 0o644); err != nil {
						t.Fatal(err)
					}
				}
				want, err := os.ReadFile(path)
				if err != nil {
					t.Fatalf("%v (run go test ./sink -run TestGolden -update)", err)
				}
				if !bytes.Equal(got, want) {
					t.Errorf("output differs from %s; diff with -update and review", path)
				}
				general, _, err := encodeWith(t, layout, body, nil, "text/plain; version=0.0.4", false)
				if err != nil || !bytes.Equal(general, want) {
					t.Errorf("the general way writes something else than %s (err %v)", path, err)
				}
			})
		}
	}
}

// TestDirectWayCoversCaptures makes sure real expositions take the direct
// way: the comparison of both ways above means little if it never runs.
func TestDirectWayCoversCaptures(t *testing.T) {
	for name, body := range simulator.Captures() {
		for _, layout := range []Layout{LayoutV1, LayoutV2} {
			s, err := New(ConvertOptions{Layout: layout, Measurement: DefaultMeasurement}.config(), &fakeWriter{}, discard)
			if err != nil {
				t.Fatal(err)
			}
			tg := testTarget()
			c := s.Appender(tg, scrape.AppendOptions{}).(*converter)
			n, _, err := scrape.NewParser().Parse(body, "text/plain; version=0.0.4", testTS, false, c)
			if err != nil {
				t.Fatal(err)
			}
			if c.general != 0 {
				t.Errorf("%s v%d: %d of %d samples went the general way", name, layout, c.general, n)
			}
			c.Rollback()
		}
	}
}

// tee records what the parser hands over, then forwards it.
type tee struct {
	next    scrape.Appender
	samples []parsed
	lset    labels.Labels
}

type parsed struct {
	name   string
	labels map[string]string
	value  float64
}

func (r *tee) Append(s *scrape.Sample) error {
	s.Labels(&r.lset)
	m := map[string]string{}
	r.lset.Range(func(l labels.Label) {
		if l.Name != model.MetricNameLabel {
			m[l.Name] = l.Value
		}
	})
	r.samples = append(r.samples, parsed{string(s.Name), m, s.Value})
	return r.next.Append(s)
}
func (r *tee) Commit() error { return r.next.Commit() }
func (r *tee) Rollback()     { r.samples = nil; r.next.Rollback() }

// storedTagValue is what InfluxDB stores for a label value as scrapeflux
// writes it: control characters spelled out, trailing backslashes trimmed.
func storedTagValue(v string) string {
	return strings.TrimRight(strings.NewReplacer("\n", `\n`, "\r", `\r`, "\t", `\t`, "\f", `\f`).Replace(v), `\`)
}

// expectedV2 maps "tagset|field" to the value InfluxDB must hold for the
// samples of a scrape in layout v2, computed from the labels (not from the
// encoder).
func expectedV2(samples []parsed) map[string]float64 {
	want := map[string]float64{}
	for _, s := range samples {
		name := storedTagValue(s.name)
		if math.IsNaN(s.value) || math.IsInf(s.value, 0) || name == "" {
			continue
		}
		tags := map[string]string{"job": "docker", "instance": "127.0.0.1:9323"}
		for k, v := range s.labels {
			if v = storedTagValue(v); v == "" {
				continue
			}
			if k == "le" || k == "quantile" {
				v = normalizeBound(v)
			}
			if k == "job" || k == "instance" || k == "time" || strings.HasPrefix(k, "_") {
				k = "exported_" + k
				for _, taken := s.labels[k]; taken || k == "job" || k == "instance"; _, taken = s.labels[k] {
					k = "exported_" + k
				}
			}
			tags[k] = v
		}
		want[tagKey(tags)+"|"+name] = s.value
	}
	return want
}

func tagKey(tags map[string]string) string {
	keys := make([]string, 0, len(tags))
	for k := range tags {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	var b strings.Builder
	for _, k := range keys {
		fmt.Fprintf(&b, "%s=%q;", k, tags[k])
	}
	return b.String()
}

// TestRoundTripInfluxDB writes every capture in layout v2 to a real InfluxDB
// and compares what a query returns, value by value and tag by tag, with
// the parsed input. Layout v1 is written too and its point count checked.
func TestRoundTripInfluxDB(t *testing.T) {
	srv := servertest.StartInfluxDB(t)
	for name, body := range inputs(t) {
		t.Run(name, func(t *testing.T) {
			db := "rt_" + strings.NewReplacer("-", "_", ".", "_").Replace(name)
			srv.CreateDB(t, db)
			w, err := NewInfluxWriter(InfluxConfig{URL: srv.URL, Bucket: db, Timeout: 10e9})
			if err != nil {
				t.Fatal(err)
			}
			defer w.Close()
			rec := &tee{}
			lp, _, err := encode(t, LayoutV2, body, rec)
			if err != nil {
				t.Fatal(err)
			}
			if err := w.Write(t.Context(), lp); err != nil {
				t.Fatalf("write: %v", err)
			}
			want := expectedV2(rec.samples)
			tagKeys := map[string]bool{}
			for _, r := range srv.Query(t, db, "SHOW TAG KEYS FROM prometheus") {
				for _, v := range r.Values {
					tagKeys[v[0].(string)] = true
				}
			}
			got := map[string]float64{}
			for _, r := range srv.Query(t, db, "SELECT * FROM prometheus") {
				for _, row := range r.Values {
					tags := map[string]string{}
					for i, col := range r.Columns {
						if tagKeys[col] && row[i] != nil {
							tags[col] = row[i].(string)
						}
					}
					for i, col := range r.Columns {
						if col == "time" || tagKeys[col] || row[i] == nil {
							continue
						}
						v, _ := row[i].(json.Number).Float64()
						got[tagKey(tags)+"|"+col] = v
					}
				}
			}
			if len(got) != len(want) {
				t.Errorf("InfluxDB holds %d values, the capture has %d finite samples", len(got), len(want))
			}
			n := 0
			for k, v := range want {
				if g, ok := got[k]; !ok || g != v {
					if n++; n <= 5 {
						t.Errorf("%s: InfluxDB has %v (present %v), want %v", k, g, ok, v)
					}
				}
			}

			lp1, _, err := encode(t, LayoutV1, body, nil)
			if err != nil {
				t.Fatal(err)
			}
			db1 := db + "_v1"
			srv.CreateDB(t, db1)
			w1, _ := NewInfluxWriter(InfluxConfig{URL: srv.URL, Bucket: db1, Timeout: 10e9})
			defer w1.Close()
			if err := w1.Write(t.Context(), lp1); err != nil {
				t.Fatalf("write v1: %v", err)
			}
			// One series per distinct line key (a series exposed twice, as
			// cockroachdb does, is two lines of one key).
			keys := map[string]bool{}
			for _, l := range bytes.Split(bytes.TrimSuffix(lp1, []byte("\n")), []byte("\n")) {
				keys[string(l[:bytes.LastIndexByte(l[:bytes.LastIndexByte(l, ' ')], ' ')])] = true
			}
			lines := len(keys)
			series := srv.Query(t, db1, "SHOW SERIES")
			stored := 0
			for _, r := range series {
				stored += len(r.Values)
			}
			if stored != lines {
				t.Errorf("v1: %d lines written, InfluxDB holds %d series", lines, stored)
			}
		})
	}
}

func TestScanValue(t *testing.T) {
	r := rand.New(rand.NewSource(1))
	// A value and what follows it: the scan stops at the first quote.
	alphabet := []byte("abcXYZ019_:-./+ ,=\\\t\n\x00\x7f\x80\xc3\xa9\"")
	for i := 0; i < 50000; i++ {
		v := make([]byte, r.Intn(40))
		for j := range v {
			if r.Intn(8) == 0 {
				v[j] = alphabet[r.Intn(len(alphabet))]
			} else {
				v[j] = alphabet[r.Intn(9)]
			}
		}
		wantQ, wantOK, wantEsc := 0, false, false
	scan:
		for j, b := range v {
			switch {
			case b == '"':
				wantQ, wantOK = j, true
				break scan
			case b == ',' || b == ' ' || b == '=':
				wantEsc = true
			case b < ' ' || b >= 0x80 || b == '\\':
				break scan
			}
		}
		if q, ok, esc := scanValue(v); ok != wantOK || ok && (q != wantQ || esc != wantEsc) {
			t.Fatalf("scanValue(%q) = %d, %v, %v; want %d, %v, %v", v, q, ok, esc, wantQ, wantOK, wantEsc)
		}
	}
}

func TestLineIndex(t *testing.T) {
	var x lineIndex
	r := rand.New(rand.NewSource(2))
	hashes := map[uint64]int32{}
	for len(hashes) < 5000 {
		h := r.Uint64()
		if _, dup := hashes[h]; dup {
			continue
		}
		f := x.slot(h)
		if f.used {
			t.Fatalf("slot for new hash %x already used", h)
		}
		x.set(f, int32(len(hashes)))
		hashes[h] = int32(len(hashes))
	}
	for h, line := range hashes {
		if f := x.slot(h); !f.used || f.line != line {
			t.Fatalf("hash %x: found line %d (used %v), want %d", h, f.line, f.used, line)
		}
	}
	// Hashes that share their high half share the slot: the latest wins.
	h1, h2 := uint64(7)<<32|1, uint64(7)<<32|2
	x.set(x.slot(h1), 9)
	if f := x.slot(h2); !f.used || f.line != 9 {
		t.Fatalf("same high half: found %+v, want line 9", f)
	}
	x.reset()
	for h := range hashes {
		if x.slot(h).used {
			t.Fatal("slot used after reset")
		}
	}
	if before("job", []byte("instance")) || !before("instance", []byte("job")) || !before("a", []byte("ab")) || before("ab", []byte("a")) {
		t.Error("before compares wrong")
	}
}

// A metric named like a key InfluxDB reserves (time, _field,
// _measurement) is written as exported_<name> in layout v2: a real
// InfluxDB 1.8 answers 204 to a line with a field named time and stores
// the line's other fields, without that one (its documentation says the
// point is discarded). Stored, with the other metrics of its line.
func TestReservedFieldKeysRenamed(t *testing.T) {
	body := []byte("# TYPE time gauge\ntime 1\n# TYPE _field gauge\n_field 2\n# TYPE _measurement gauge\n_measurement 4\n# TYPE other gauge\nother 3\n")
	sameBothWays(t, body)
	lp, _, err := encode(t, LayoutV2, body, nil)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Contains(lp, []byte("exported_time=1")) || !bytes.Contains(lp, []byte("exported__field=2")) ||
		!bytes.Contains(lp, []byte("exported__measurement=4")) || bytes.Contains(lp, []byte(" time=")) || bytes.Contains(lp, []byte(",_measurement=")) {
		t.Fatalf("line protocol:\n%s", lp)
	}
	srv := servertest.StartInfluxDB(t)
	srv.CreateDB(t, "reserved")
	w, err := NewInfluxWriter(InfluxConfig{URL: srv.URL, Bucket: "reserved", Timeout: 10e9})
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	if err := w.Write(t.Context(), lp); err != nil {
		t.Fatalf("write: %v", err)
	}
	res := srv.Query(t, "reserved", `SELECT "other", "exported_time", "exported__field", "exported__measurement" FROM prometheus`)
	if len(res) != 1 || len(res[0].Values) != 1 || fmt.Sprint(res[0].Values[0][1:]) != "[3 1 2 4]" {
		t.Fatalf("InfluxDB holds %+v", res)
	}
}
