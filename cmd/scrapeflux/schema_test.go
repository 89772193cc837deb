package main

import (
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/scrapeflux/scrapeflux/internal/servertest"
)

// TestSchemaGuardEndToEnd runs the daemon against an InfluxDB 3 Core
// stand-in keeping its catalog (servertest.InfluxDB3) and a target whose
// one family grows by 100 label names a scrape: the table stops at the
// server's 500 columns, nothing is refused, and the held samples show on
// /targets (which table, which limit), in /metrics and in the lint.
func TestSchemaGuardEndToEnd(t *testing.T) {
	srv := servertest.StartInfluxDB3(t)
	var scrapes atomic.Int64
	target := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		n := min(scrapes.Add(1), 8)
		var b strings.Builder
		b.WriteString("# HELP wide A family that grows.\n# TYPE wide gauge\n")
		for j := int64(0); j < 100*n; j++ {
			fmt.Fprintf(&b, "wide{k_%d=\"v\"} 1\n", j)
		}
		w.Write([]byte(b.String()))
	}))
	defer target.Close()
	listen := fmt.Sprintf("127.0.0.1:%d", servertest.FreePort(t))
	d := startDaemon(t, "run", "--target", target.URL+"/metrics", "--interval", "500ms", "--flush-interval", "100ms",
		"--lint-interval", "400ms", "--influx-url", srv.URL, "--influx-bucket", "db", "--listen", listen, "--queue-dir", t.TempDir())
	defer d.cancel()
	var row targetRow
	servertest.WaitFor(t, "held samples on /targets and in /metrics", 30*time.Second, func() bool {
		_, js := httpGet(t, "http://"+listen+"/targets?format=json")
		var rows []targetRow
		if json.Unmarshal([]byte(js), &rows) != nil || len(rows) != 1 {
			return false
		}
		row = rows[0]
		_, m := httpGet(t, "http://"+listen+"/metrics")
		return scrapes.Load() >= 9 && row.SchemaHeld > 0 &&
			metricValue(m, `scrapeflux_influx3_schema_held_samples_total{database="db",table="wide"}`) > 0 &&
			metricValue(m, `scrapeflux_samples_dropped_total{reason="schema_limit"}`) > 0 &&
			metricValue(m, `scrapeflux_influx3_schema_limit{kind="columns"}`) == 500 &&
			metricValue(m, `scrapeflux_influx3_schema_tables{database="db",kind="widest_table_columns"}`) == 500
	})
	d.stop(t)
	if !strings.Contains(row.SchemaHeldWhy, "wide") || !strings.Contains(row.SchemaHeldWhy, "500 columns") {
		t.Errorf("/targets says %q", row.SchemaHeldWhy)
	}
	if f, ok := row.Lint.Finding("influxdb3_schema_limit"); !ok || !strings.Contains(f.Example, "wide") {
		t.Errorf("lint: %+v", row.Lint)
	}
	if n := srv.Catalog.Columns("db", "wide"); n != 500 {
		t.Errorf("table wide has %d columns, want 500", n)
	}
	if twice, refusals := srv.Catalog.RefusedTwice(); refusals != 0 {
		t.Errorf("%d lines refused for a limit, e.g. %q", refusals, twice)
	}
	// Tables of up, scrape_duration_seconds... and wide; 496 of its
	// series a scrape.
	if srv.Stored() < 496 {
		t.Errorf("%d lines stored", srv.Stored())
	}
}
