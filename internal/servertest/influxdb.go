package servertest

import (
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"testing"
	"time"
)

// InfluxDB is a running influxd.
type InfluxDB struct {
	URL string
	Dir string
	// User and Password are the admin's, with authentication on.
	User, Password string
	proc           process
}

const config = `reporting-disabled = true
bind-address = "127.0.0.1:%d"
[meta]
  dir = "%[2]s/meta"
[data]
  dir = "%[2]s/data"
  wal-dir = "%[2]s/wal"
  query-log-enabled = false
  trace-logging-enabled = false
[http]
  bind-address = "127.0.0.1:%[3]d"
  auth-enabled = %[4]t
  log-enabled = false
  flux-enabled = false
[monitor]
  store-enabled = false
[continuous_queries]
  enabled = false
[subscriber]
  enabled = false
[logging]
  level = "warn"
`

// StartInfluxDB runs influxd until the test ends.
func StartInfluxDB(t testing.TB) *InfluxDB { return startInfluxDB(t, "", "") }

// StartInfluxDBWithAuth runs influxd with authentication on and one admin
// user; Query and CreateDB use its credentials.
func StartInfluxDBWithAuth(t testing.TB, user, password string) *InfluxDB {
	return startInfluxDB(t, user, password)
}

func startInfluxDB(t testing.TB, user, password string) *InfluxDB {
	t.Helper()
	bin := Binary(t, "influxd")
	dir := t.TempDir()
	s := &InfluxDB{Dir: dir, proc: process{name: "influxd"}}
	port := FreePort(t)
	cfg := filepath.Join(dir, "influxdb.conf")
	if err := os.WriteFile(cfg, []byte(fmt.Sprintf(config, FreePort(t), dir, port, user != "")), 0o644); err != nil {
		t.Fatal(err)
	}
	s.URL = "http://127.0.0.1:" + strconv.Itoa(port)
	s.start(t, bin, cfg)
	t.Cleanup(s.Stop)
	if user != "" {
		// With no user yet, InfluxDB lets anyone create the first admin.
		s.Query(t, "", fmt.Sprintf("CREATE USER %q WITH PASSWORD '%s' WITH ALL PRIVILEGES", user, password))
		s.User, s.Password = user, password
	}
	return s
}

func (s *InfluxDB) start(t testing.TB, bin, cfg string) {
	t.Helper()
	s.proc.start(t, bin, []string{"run", "-config", cfg}, filepath.Join(s.Dir, "influxd.log"), 30*time.Second, func() error {
		resp, err := http.Get(s.URL + "/ping")
		if err != nil {
			return err
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusNoContent {
			return fmt.Errorf("/ping answered %d", resp.StatusCode)
		}
		return nil
	})
}

// Stop ends influxd (idempotent).
func (s *InfluxDB) Stop() { s.proc.stop() }

// Restart starts influxd again on the same port and data.
func (s *InfluxDB) Restart(t testing.TB) {
	t.Helper()
	s.Stop()
	s.start(t, Binary(t, "influxd"), filepath.Join(s.Dir, "influxdb.conf"))
}

// Result is one series of an InfluxQL answer.
type Result struct {
	Name    string            `json:"name"`
	Tags    map[string]string `json:"tags"`
	Columns []string          `json:"columns"`
	Values  [][]any           `json:"values"`
}

// Query runs InfluxQL against db and returns the series of the first
// statement, with times in milliseconds.
func (s *InfluxDB) Query(t testing.TB, db, q string) []Result {
	t.Helper()
	res, err := s.TryQuery(db, q)
	if err != nil {
		t.Fatal(err)
	}
	return res
}

// TryQuery is Query returning its error.
func (s *InfluxDB) TryQuery(db, q string) ([]Result, error) {
	v := url.Values{"db": {db}, "q": {q}, "epoch": {"ms"}}
	u := s.URL + "/query"
	if s.User != "" {
		// InfluxDB reads credentials from the URL, not the form.
		u += "?" + url.Values{"u": {s.User}, "p": {s.Password}}.Encode()
	}
	resp, err := http.PostForm(u, v)
	if err != nil {
		return nil, fmt.Errorf("cannot query: %w", err)
	}
	defer resp.Body.Close()
	var body struct {
		Results []struct {
			Series []Result `json:"series"`
			Error  string   `json:"error"`
		} `json:"results"`
		Error string `json:"error"`
	}
	dec := json.NewDecoder(resp.Body)
	dec.UseNumber()
	if err := dec.Decode(&body); err != nil {
		return nil, fmt.Errorf("cannot decode query answer: %w", err)
	}
	if body.Error != "" {
		return nil, fmt.Errorf("query %q: %s", q, body.Error)
	}
	if len(body.Results) == 0 {
		return nil, nil
	}
	if e := body.Results[0].Error; e != "" {
		return nil, fmt.Errorf("query %q: %s", q, e)
	}
	return body.Results[0].Series, nil
}

// CreateDB creates a database.
func (s *InfluxDB) CreateDB(t testing.TB, db string) {
	t.Helper()
	s.Query(t, "", "CREATE DATABASE "+strconv.Quote(db))
}

// Count returns the number of points of measurement in db, over field f.
func (s *InfluxDB) Count(t testing.TB, db, measurement, field string) int64 {
	t.Helper()
	res := s.Query(t, db, fmt.Sprintf(`SELECT count(%q) FROM %q`, field, measurement))
	if len(res) == 0 || len(res[0].Values) == 0 {
		return 0
	}
	n, _ := res[0].Values[0][1].(json.Number).Int64()
	return n
}
