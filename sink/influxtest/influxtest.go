// Package influxtest starts a real InfluxDB 1.8 (influxd, built by the
// Makefile) on a free loopback port with a temporary data directory, for
// integration tests. Under CI=true a missing influxd fails the test; on a
// developer machine it skips with a hint.
package influxtest

import (
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"testing"
	"time"
)

// Server is a running influxd.
type Server struct {
	URL string
	Dir string
	// User and Password are the admin's, with authentication on.
	User, Password string
	cmd            *exec.Cmd
	log            *os.File
}

// BinDir is where the Makefile puts the servers it builds.
func BinDir() string {
	if d := os.Getenv("SCRAPEFLUX_BIN"); d != "" {
		return d
	}
	home, _ := os.UserHomeDir()
	return filepath.Join(home, ".cache", "scrapeflux", "bin")
}

// Binary returns the path of a server binary built by the Makefile, or
// fails (CI) or skips (elsewhere) the test when it is missing.
func Binary(t testing.TB, name string) string {
	t.Helper()
	p := filepath.Join(BinDir(), name)
	if _, err := os.Stat(p); err != nil {
		if os.Getenv("CI") != "" {
			t.Fatalf("%s not found at %s (CI=true: integration tests must run; build it with make servers)", name, p)
		}
		t.Skipf("%s not found at %s: run make servers", name, p)
	}
	return p
}

// FreePort returns a free TCP port on 127.0.0.1.
func FreePort(t testing.TB) int {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port
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

// Start runs influxd until the test ends.
func Start(t testing.TB) *Server { return start(t, "", "") }

// StartWithAuth runs influxd with authentication on and one admin user;
// Query and CreateDB use its credentials.
func StartWithAuth(t testing.TB, user, password string) *Server {
	return start(t, user, password)
}

func start(t testing.TB, user, password string) *Server {
	t.Helper()
	bin := Binary(t, "influxd")
	dir := t.TempDir()
	s := &Server{Dir: dir}
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

func (s *Server) start(t testing.TB, bin, cfg string) {
	t.Helper()
	var err error
	s.log, err = os.Create(filepath.Join(s.Dir, "influxd.log"))
	if err != nil {
		t.Fatal(err)
	}
	s.cmd = exec.Command(bin, "run", "-config", cfg)
	s.cmd.Stdout, s.cmd.Stderr = s.log, s.log
	if err := s.cmd.Start(); err != nil {
		t.Fatalf("cannot start influxd: %v", err)
	}
	deadline := time.Now().Add(30 * time.Second)
	for {
		resp, err := http.Get(s.URL + "/ping")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusNoContent {
				return
			}
		}
		if time.Now().After(deadline) {
			log, _ := os.ReadFile(s.log.Name())
			t.Fatalf("influxd did not become ready: %v\n%s", err, log)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// Stop ends influxd (idempotent).
func (s *Server) Stop() {
	if s.cmd == nil || s.cmd.Process == nil {
		return
	}
	_ = s.cmd.Process.Kill()
	_ = s.cmd.Wait()
	s.log.Close()
	s.cmd = nil
}

// Restart starts influxd again on the same port and data.
func (s *Server) Restart(t testing.TB) {
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
func (s *Server) Query(t testing.TB, db, q string) []Result {
	t.Helper()
	res, err := s.TryQuery(db, q)
	if err != nil {
		t.Fatal(err)
	}
	return res
}

// TryQuery is Query returning its error.
func (s *Server) TryQuery(db, q string) ([]Result, error) {
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
func (s *Server) CreateDB(t testing.TB, db string) {
	t.Helper()
	s.Query(t, "", "CREATE DATABASE "+strconv.Quote(db))
}

// Count returns the number of points of measurement in db, over field f.
func (s *Server) Count(t testing.TB, db, measurement, field string) int64 {
	t.Helper()
	res := s.Query(t, db, fmt.Sprintf(`SELECT count(%q) FROM %q`, field, measurement))
	if len(res) == 0 || len(res[0].Values) == 0 {
		return 0
	}
	n, _ := res[0].Values[0][1].(json.Number).Int64()
	return n
}
