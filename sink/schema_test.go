package sink

import (
	"bufio"
	"bytes"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"testing"
)

// InfluxDB 3 Core's default limits: 500 columns per table (tags, fields
// and time) and 2,000 tables per database (influxdb3 serve
// --num-table-limit, --num-total-columns-per-table-limit).
const (
	v3ColumnsPerTable = 500
	v3TablesPerDB     = 2000
)

type schemaFit struct {
	tables, widest int // widest: most columns in one table, time included
	clash          int // tables where a tag and a field share a name (3.x refuses those lines)
}

// schemaOf reads line protocol and counts what InfluxDB 3 would make of
// it.
func schemaOf(t *testing.T, lp []byte) schemaFit {
	t.Helper()
	cols := map[string]map[string]string{} // table -> column -> kind
	sc := bufio.NewScanner(bytes.NewReader(lp))
	sc.Buffer(nil, 1<<20)
	for sc.Scan() {
		line := sc.Text() + "\n"
		tags, fields, err := parseLine(line)
		if err != nil {
			t.Fatalf("%v: %q", err, line)
		}
		m := line[:strings.IndexAny(line, ", ")]
		if cols[m] == nil {
			cols[m] = map[string]string{"time": "time"}
		}
		for k := range tags {
			cols[m][k] = "tag"
		}
		for _, f := range fields {
			if cols[m][f.key] == "tag" {
				cols[m][f.key] = "clash"
			} else if cols[m][f.key] == "" {
				cols[m][f.key] = "field"
			}
		}
	}
	var fit schemaFit
	fit.tables = len(cols)
	for _, c := range cols {
		fit.widest = max(fit.widest, len(c))
		for _, kind := range c {
			if kind == "clash" {
				fit.clash++
				break
			}
		}
	}
	return fit
}

// How the two layouts fit InfluxDB 3's schema limits, per capture (the
// golden outputs of every capture): the v1 layout (a table per metric
// family) stays far inside them; the v2 layout (one table, a column per
// metric) comes close to the 500 columns of one table with a single
// exporter, and a second kind of exporter in the same database passes
// it. The README's table is this test's log (go test -run
// InfluxDB3SchemaFit -v ./sink/).
func TestInfluxDB3SchemaFit(t *testing.T) {
	files, _ := filepath.Glob("testdata/golden/*.lp")
	if len(files) == 0 {
		t.Fatal("no golden files")
	}
	all := map[string][]byte{}
	sort.Strings(files)
	for _, f := range files {
		lp, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		name := strings.TrimSuffix(filepath.Base(f), ".lp")
		layout := name[strings.LastIndex(name, ".")+1:]
		all[layout] = append(all[layout], lp...)
		fit := schemaOf(t, lp)
		t.Logf("%-45s tables %4d, widest table %4d columns, tag/field clashes %d", name, fit.tables, fit.widest, fit.clash)
		if layout == "v1" && (fit.widest > v3ColumnsPerTable || fit.tables > v3TablesPerDB) {
			t.Errorf("%s: layout v1 does not fit InfluxDB 3's defaults: %+v", name, fit)
		}
	}
	v1, v2 := schemaOf(t, all["v1"]), schemaOf(t, all["v2"])
	t.Logf("all captures in one database: v1 %d tables, widest %d columns; v2 %d table, %d columns", v1.tables, v1.widest, v2.tables, v2.widest)
	if v1.widest > v3ColumnsPerTable || v1.tables > v3TablesPerDB {
		t.Errorf("layout v1 with every capture passes InfluxDB 3's limits: %+v", v1)
	}
	if v2.widest <= v3ColumnsPerTable {
		t.Errorf("layout v2 with every capture fits in %d columns: the README's advice against it for 3.x is wrong", v2.widest)
	}
}
