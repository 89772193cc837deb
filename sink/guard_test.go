package sink

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/scrapeflux/scrapeflux/internal/servertest"
	"github.com/scrapeflux/scrapeflux/scrape"
	"github.com/scrapeflux/scrapeflux/sink/schema"
)

// guardSink runs a sink with the schema guard against f (3.x, build as
// /ping says), database db, as scrapeflux run does: /ping read first.
func guardSink(t *testing.T, f *fakeInflux, db string, limits schema.Limits, work func(s *Sink)) (StatsSnapshot, *schema.Catalog) {
	t.Helper()
	w, err := NewInfluxWriter(InfluxConfig{URL: f.srv.URL, Bucket: db, Token: f.token, Timeout: 5 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	if _, err := w.Detect(context.Background()); err != nil {
		t.Fatal(err)
	}
	cfg := fastConfig()
	cfg.Schema = schema.NewCatalog(limits)
	return runSink(t, cfg, w, work), cfg.Schema
}

// scrapeEach commits one scrape per body, each once InfluxDB answered for
// the one before (scrapes seconds apart, as a loop makes them).
func scrapeEach(t *testing.T, s *Sink, f *fakeInflux, app scrape.Appender, bodies []string) {
	t.Helper()
	for i, body := range bodies {
		_, before := f.counts()
		if _, _, err := scrape.NewParser().Parse([]byte(body), "text/plain", 1700000000000+int64(i)*1000, false, app); err != nil {
			t.Fatal(err)
		}
		if err := app.Commit(); err != nil {
			t.Fatal(err)
		}
		deadline := time.Now().Add(10 * time.Second)
		for s.Stats().QueuedSamples > 0 && time.Now().Before(deadline) {
			time.Sleep(5 * time.Millisecond)
		}
		if _, after := f.counts(); after == before && s.Stats().QueuedSamples > 0 {
			t.Fatalf("scrape %d: no write within 10s", i)
		}
	}
}

// wideBodies: scrape i exposes gauge "wide" with 100*(i+1) series, each
// with a label name of its own: a table that grows by 100 tag columns a
// scrape.
func wideBodies(n int) []string {
	var out []string
	for i := 0; i < n; i++ {
		var b strings.Builder
		b.WriteString("# TYPE wide gauge\n")
		for j := 0; j < 100*(i+1); j++ {
			fmt.Fprintf(&b, "wide{k_%d=\"v\"} %d\n", j, i)
		}
		out = append(out, b.String())
	}
	return out
}

// A table that grows past InfluxDB 3 Core's 500 columns: the lines that
// would make column 501 and on are held back, counted, never sent; the
// server ends with exactly 500 columns and refuses nothing.
func TestSchemaGuardColumnsLimit(t *testing.T) {
	f := newFakeInflux(t, 3)
	f.cat = servertest.NewCatalog3(5, 2000, 500)
	var card scrape.Cardinality
	st, _ := guardSink(t, f, "db", schema.Limits{}, func(s *Sink) {
		app := s.Appender(testTarget(), scrape.AppendOptions{})
		scrapeEach(t, s, f, app, wideBodies(8))
		card = app.(*converter).Cardinality()
	})
	// time, instance, job and the field: 496 label columns fit.
	const fit = 496
	held, stored := 0, 0
	for i := 0; i < 8; i++ {
		n := 100 * (i + 1)
		held += max(0, n-fit)
		stored += min(n, fit)
	}
	if got := f.cat.Columns("db", "wide"); got != 500 {
		t.Errorf("table wide has %d columns, want 500", got)
	}
	if twice, refusals := f.cat.RefusedTwice(); refusals != 0 {
		t.Errorf("the server refused %d lines for a limit (%q...)", refusals, twice)
	}
	if st.Dropped["schema_limit"] != int64(held) || st.Written != int64(stored) {
		t.Errorf("held %d, written %d; want %d held, %d written", st.Dropped["schema_limit"], st.Written, held, stored)
	}
	if card.SchemaHeld != int64(held) || !strings.Contains(card.SchemaHeldWhy, "500 columns") || !strings.Contains(card.SchemaHeldWhy, "wide") {
		t.Errorf("target reports %d held: %q", card.SchemaHeld, card.SchemaHeldWhy)
	}
}

// 2,400 metric families, a table each in layout v1, against Core's 2,000
// tables: 2,000 are made, the rest held, nothing refused.
func TestSchemaGuardTablesLimit(t *testing.T) {
	f := newFakeInflux(t, 3)
	f.cat = servertest.NewCatalog3(5, 2000, 500)
	var bodies []string
	for i := 0; i < 8; i++ {
		var b strings.Builder
		for j := 0; j < 300*(i+1); j++ {
			fmt.Fprintf(&b, "# TYPE t_%d gauge\nt_%d %d\n", j, j, i)
		}
		bodies = append(bodies, b.String())
	}
	var db *schema.Catalog
	st, db := guardSink(t, f, "db", schema.Limits{}, func(s *Sink) {
		scrapeEach(t, s, f, s.Appender(testTarget(), scrape.AppendOptions{}), bodies)
	})
	held := 0
	for i := 0; i < 8; i++ {
		held += max(0, 300*(i+1)-2000)
	}
	if got := f.cat.Tables(); got != 2000 {
		t.Errorf("%d tables, want 2000", got)
	}
	if _, refusals := f.cat.RefusedTwice(); refusals != 0 {
		t.Errorf("the server refused %d lines for a limit", refusals)
	}
	if st.Dropped["schema_limit"] != int64(held) {
		t.Errorf("held %d samples, want %d", st.Dropped["schema_limit"], held)
	}
	u := db.Database("db").Usage()
	if u.Tables != 2000 || u.HeldSamples != int64(held) || len(u.Held) != 400 || !strings.Contains(u.Held[0].Reason, "2000 tables") || u.Held[0].Target == "" {
		t.Errorf("usage %d tables, %d held in %d tables, e.g. %+v", u.Tables, u.HeldSamples, len(u.Held), u.Held[0])
	}
}

// A server whose limits are lower than the product's defaults (an
// Enterprise started with --num-total-columns-per-table-limit 50 and
// --num-table-limit 30): the first refusal of each kind teaches the
// guard, and no line is refused twice.
func TestSchemaGuardLearnsFromRefusals(t *testing.T) {
	f := newFakeInflux(t, 3)
	f.cat = servertest.NewCatalog3(100, 30, 50)
	var bodies []string
	for i := 0; i < 6; i++ {
		var b strings.Builder
		b.WriteString("# TYPE wide gauge\n")
		for j := 0; j < 20*(i+1); j++ {
			fmt.Fprintf(&b, "wide{k_%d=\"v\"} %d\n", j, i)
		}
		for j := 0; j < 10*(i+1); j++ {
			fmt.Fprintf(&b, "# TYPE t_%d gauge\nt_%d %d\n", j, j, i)
		}
		bodies = append(bodies, b.String())
	}
	st, cat := guardSink(t, f, "db", schema.Limits{}, func(s *Sink) {
		scrapeEach(t, s, f, s.Appender(testTarget(), scrape.AppendOptions{}), bodies)
	})
	twice, refusals := f.cat.RefusedTwice()
	if len(twice) > 0 || refusals == 0 {
		t.Errorf("%d refusals, refused twice: %q", refusals, twice)
	}
	if l := cat.Limits(); l.Columns != 50 || l.Tables != 30 {
		t.Errorf("limits learnt %+v, want 50 columns and 30 tables", l)
	}
	if f.cat.Columns("db", "wide") != 50 || f.cat.Tables() != 30 {
		t.Errorf("server holds %d columns of wide and %d tables", f.cat.Columns("db", "wide"), f.cat.Tables())
	}
	// Every sample is written, refused once or held.
	if st.Rejected["limit"] != int64(refusals) || st.Dropped["schema_limit"] == 0 {
		t.Errorf("rejected %v, held %d, for %d refusals", st.Rejected, st.Dropped["schema_limit"], refusals)
	}
	t.Logf("%d refusals, %d held, %d written", refusals, st.Dropped["schema_limit"], st.Written)
}

// A database past the server's databases limit: InfluxDB 3 refuses the
// whole request (422); that one request is the only one.
func TestSchemaGuardDatabaseLimit(t *testing.T) {
	f := newFakeInflux(t, 3)
	f.cat = servertest.NewCatalog3(5, 2000, 500)
	for _, db := range []string{"a", "b", "c", "d", "e"} {
		f.cat.AddTable(db, "", nil)
	}
	bodies := make([]string, 5)
	for i := range bodies {
		bodies[i] = "# TYPE up_a gauge\nup_a 1\n# TYPE up_b gauge\nup_b 1\n"
	}
	_, requestsBefore := f.counts()
	st, _ := guardSink(t, f, "f", schema.Limits{}, func(s *Sink) {
		scrapeEach(t, s, f, s.Appender(testTarget(), scrape.AppendOptions{}), bodies[:1])
		scrapeEach(t, s, f, s.Appender(testTarget(), scrape.AppendOptions{}), bodies[1:])
	})
	if _, requests := f.counts(); requests-requestsBefore != 1 {
		t.Errorf("%d write requests, want the one refused", requests-requestsBefore)
	}
	if st.Rejected["limit"] != 2 || st.Dropped["schema_limit"] != 8 {
		t.Errorf("rejected %v, held %d; want 2 rejected, 8 held", st.Rejected, st.Dropped["schema_limit"])
	}
}

// Columns an earlier run made: the guard reads them from the server at
// start (information_schema.columns), so it holds at the 500th column
// without a refusal; with a token that may not query, it learns from the
// first refusal and never sends a line to it again.
func TestSchemaGuardReadsTheServer(t *testing.T) {
	for _, c := range []struct {
		name       string
		queryToken string
	}{{"listed", ""}, {"write-only token", "-"}} {
		t.Run(c.name, func(t *testing.T) {
			f := newFakeInflux(t, 3)
			f.token = "tok"
			f.cat = servertest.NewCatalog3(5, 2000, 500)
			f.cat.QueryToken = c.queryToken
			old := []string{"instance", "job", "gauge"}
			for j := 0; len(old) < 479; j++ {
				old = append(old, fmt.Sprintf("gone_%d", j))
			}
			f.cat.AddTable("db", "wide", old) // 480 columns with time
			st, cat := guardSink(t, f, "db", schema.Limits{}, func(s *Sink) {
				scrapeEach(t, s, f, s.Appender(testTarget(), scrape.AppendOptions{}), wideBodies(3))
			})
			twice, refusals := f.cat.RefusedTwice()
			if f.cat.Columns("db", "wide") != 500 || len(twice) > 0 {
				t.Errorf("server holds %d columns; refused twice %q", f.cat.Columns("db", "wide"), twice)
			}
			if c.queryToken == "" && (refusals != 0 || st.Dropped["schema_limit"] != 80+180+280) {
				t.Errorf("listed: %d refusals, %d held; want none refused, 540 held", refusals, st.Dropped["schema_limit"])
			}
			if c.queryToken == "-" && (refusals == 0 || st.Rejected["limit"] != int64(refusals)) {
				t.Errorf("not listed: %d refusals, rejected %v", refusals, st.Rejected)
			}
			if f.cat.Listings != 1 || (c.queryToken == "" && cat.Database("db").Usage().WidestColumns != 500) {
				t.Errorf("%d listings; guard knows %+v", f.cat.Listings, cat.Database("db").Usage())
			}
		})
	}
}
