package servertest

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"

	"github.com/influxdata/line-protocol/v2/lineprotocol"
	"github.com/klauspost/compress/gzip"
)

// InfluxDB 3 cannot be built here (it needs Rust), so its catalog is
// kept as its source keeps it: Catalog3 grows by the lines of each
// write as influxdb3_write's validator (write_buffer/validator.rs) grows
// the catalog, line by line, and refuses with influxdb3_catalog's words
// (src/error.rs):
//
//   - a line whose new table would pass the tables limit (across
//     databases): "Update to schema would exceed number of tables limit:
//     attempted to create table but already have N table(s) (limit: L)";
//   - a line whose new columns would pass the columns limit (the time
//     column counted): "Update to schema would exceed number of columns
//     per table limit of L columns";
//   - a write to a new database past the databases limit, refused whole:
//     422 {"error": "Adding a new database would exceed limit of L
//     databases", "data": null}.
//
// Refused lines are listed in the partial write's data; the others are
// stored. /api/v3/query_sql answers information_schema.columns as JSON
// rows.
type Catalog3 struct {
	dbs, tables, columns int // the limits

	mu      sync.Mutex
	catalog map[string]map[string]map[string]bool // database -> table -> columns
	refused map[string]int                        // line key (names only) -> refusals for a limit
	// QueryToken: the token /api/v3/query_sql takes ("": any; "-": none,
	// 403 as for a write-only token). Listings counts its requests.
	QueryToken string
	Listings   int
}

// RefusedLine3 is one refused line of a 3.x partial write.
type RefusedLine3 struct {
	OriginalLine string `json:"original_line"`
	LineNumber   int    `json:"line_number"`
	ErrorMessage string `json:"error_message"`
}

// NewCatalog3 keeps a catalog with these limits (Core's: 5, 2000, 500).
func NewCatalog3(dbs, tables, columns int) *Catalog3 {
	return &Catalog3{dbs: dbs, tables: tables, columns: columns, catalog: map[string]map[string]map[string]bool{}, refused: map[string]int{}}
}

// AddTable makes a table with these columns (besides time), as an
// earlier writer did.
func (c *Catalog3) AddTable(db, table string, cols []string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.catalog[db] == nil {
		c.catalog[db] = map[string]map[string]bool{}
	}
	if table == "" {
		return
	}
	t := map[string]bool{"time": true}
	for _, col := range cols {
		t[col] = true
	}
	c.catalog[db][table] = t
}

// Check grows the catalog by the lines of a write to db: it returns the
// lines refused for a limit, or the refusal of the whole request.
func (c *Catalog3) Check(t testing.TB, db string, lines []string) (refused []RefusedLine3, whole string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	tables, ok := c.catalog[db]
	if !ok {
		if len(c.catalog) >= c.dbs {
			return nil, fmt.Sprintf("Adding a new database would exceed limit of %d databases", c.dbs)
		}
		tables = map[string]map[string]bool{}
		c.catalog[db] = tables
	}
	for i, ln := range lines {
		table, cols, key := parseLine3(t, ln)
		refuse := func(msg string) {
			refused = append(refused, RefusedLine3{ln, i + 1, msg})
			c.refused[key]++
		}
		tb, ok := tables[table]
		if !ok {
			n := 0
			for _, ts := range c.catalog {
				n += len(ts)
			}
			if n >= c.tables {
				refuse(fmt.Sprintf("Update to schema would exceed number of tables limit: attempted to create table but already have %d table(s) (limit: %d)", n, c.tables))
				continue
			}
			tb = map[string]bool{"time": true}
		}
		added := 0
		for _, col := range cols {
			if !tb[col] {
				added++
			}
		}
		if len(tb)+added > c.columns {
			refuse(fmt.Sprintf("Update to schema would exceed number of columns per table limit of %d columns", c.columns))
			continue
		}
		for _, col := range cols {
			tb[col] = true
		}
		tables[table] = tb
	}
	return refused, ""
}

// parseLine3 reads a line with the line protocol's own parser: its
// table, its columns (tags and fields) and its key (names only).
func parseLine3(t testing.TB, ln string) (table string, cols []string, key string) {
	dec := lineprotocol.NewDecoderWithBytes([]byte(ln + "\n"))
	if !dec.Next() {
		t.Errorf("no line in %q", ln)
		return
	}
	m, err := dec.Measurement()
	if err != nil {
		t.Errorf("%q: %v", ln, err)
	}
	table, key = string(m), string(m)
	for {
		k, _, err := dec.NextTag()
		if err != nil || k == nil {
			break
		}
		cols = append(cols, string(k))
		key += "," + string(k)
	}
	key += " "
	for {
		k, _, err := dec.NextField()
		if err != nil || k == nil {
			break
		}
		cols = append(cols, string(k))
		key += string(k) + ","
	}
	return table, cols, key
}

// Columns counts the columns of a table, time included.
func (c *Catalog3) Columns(db, table string) int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.catalog[db][table])
}

// Tables counts the tables across databases.
func (c *Catalog3) Tables() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	n := 0
	for _, ts := range c.catalog {
		n += len(ts)
	}
	return n
}

// RefusedTwice lists (up to 3) line keys refused more than once for a
// limit, and counts every refusal.
func (c *Catalog3) RefusedTwice() (twice []string, refusals int) {
	c.mu.Lock()
	defer c.mu.Unlock()
	for k, n := range c.refused {
		refusals += n
		if n > 1 && len(twice) < 3 {
			twice = append(twice, k)
		}
	}
	return twice, refusals
}

// ServeQuery answers /api/v3/query_sql for information_schema.columns.
func (c *Catalog3) ServeQuery(w http.ResponseWriter, r *http.Request) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.Listings++
	w.Header().Set("Content-Type", "application/json")
	if c.QueryToken == "-" || (c.QueryToken != "" && r.Header.Get("Authorization") != "Bearer "+c.QueryToken) {
		w.WriteHeader(http.StatusForbidden)
		fmt.Fprint(w, `{"error":"Permission denied"}`)
		return
	}
	db := r.URL.Query().Get("db")
	tables, ok := c.catalog[db]
	if !ok {
		w.WriteHeader(http.StatusNotFound)
		fmt.Fprintf(w, `{"error":"database not found: %s"}`, db)
		return
	}
	if !strings.Contains(r.URL.Query().Get("q"), "information_schema.columns") {
		w.WriteHeader(http.StatusBadRequest)
		return
	}
	type row struct {
		Catalog string `json:"table_catalog"`
		Schema  string `json:"table_schema"`
		Table   string `json:"table_name"`
		Column  string `json:"column_name"`
	}
	rows := []row{}
	for tn, cols := range tables {
		for col := range cols {
			rows = append(rows, row{"public", "iox", tn, col})
		}
	}
	b, _ := json.Marshal(rows)
	w.Write(b)
}

// InfluxDB3 is an InfluxDB 3 Core stand-in with a Catalog3: /ping,
// /api/v3/write_lp (partial writes) and /api/v3/query_sql.
type InfluxDB3 struct {
	URL     string
	Catalog *Catalog3

	mu     sync.Mutex
	stored int // lines stored
}

// StartInfluxDB3 serves a stand-in with Core's limits until the test ends.
func StartInfluxDB3(t testing.TB) *InfluxDB3 {
	s := &InfluxDB3{Catalog: NewCatalog3(5, 2000, 500)}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/ping":
			w.Header().Set("X-Influxdb-Version", "3.11.0")
			w.Header().Set("X-Influxdb-Build", "Core")
			w.Header().Set("Content-Type", "application/json")
			fmt.Fprint(w, `{"version":"3.11.0","revision":"1f2e3d4","process_id":"0199f3a2-7a51-7c2e-9d53-3f1c8a1b2c3d"}`)
		case "/api/v3/query_sql":
			s.Catalog.ServeQuery(w, r)
		case "/api/v3/write_lp":
			data, ok := WriteBody(w, r)
			if !ok {
				return
			}
			lines := strings.Split(strings.TrimSuffix(string(data), "\n"), "\n")
			w.Header().Set("Content-Type", "application/json")
			refused, whole := s.Catalog.Check(t, r.URL.Query().Get("db"), lines)
			if whole != "" {
				w.WriteHeader(http.StatusUnprocessableEntity)
				b, _ := json.Marshal(map[string]any{"error": whole, "data": nil})
				w.Write(b)
				return
			}
			s.mu.Lock()
			s.stored += len(lines) - len(refused)
			s.mu.Unlock()
			if len(refused) == 0 {
				w.WriteHeader(http.StatusNoContent)
				return
			}
			w.WriteHeader(http.StatusBadRequest)
			b, _ := json.Marshal(map[string]any{"error": "partial write of line protocol occurred", "data": refused})
			w.Write(b)
		default:
			w.Header().Set("Content-Type", "application/json")
			w.WriteHeader(http.StatusNotFound)
			fmt.Fprint(w, `{"error":"not found"}`)
		}
	}))
	t.Cleanup(srv.Close)
	s.URL = srv.URL
	return s
}

// Stored counts the lines stored.
func (s *InfluxDB3) Stored() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.stored
}

// WriteBody reads a write request's body whole, inflated when it is
// gzip'd (every member, as InfluxDB 1.8, 2.x and 3.x's MultiGzDecoder
// read it). A gzip body that cannot be read is answered 400 and ok is
// false.
func WriteBody(w http.ResponseWriter, r *http.Request) (data []byte, ok bool) {
	var body io.Reader = r.Body
	if r.Header.Get("Content-Encoding") == "gzip" {
		zr, err := gzip.NewReader(r.Body)
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return nil, false
		}
		body = zr
	}
	data, err := io.ReadAll(body)
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return nil, false
	}
	return data, true
}
