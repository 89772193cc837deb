package main

import (
	"context"
	"encoding/json"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/scrapeflux/scrapeflux/internal/servertest"
	"github.com/scrapeflux/scrapeflux/scrape/simulator"
)

func hostPort(url string) (string, int) {
	hp := strings.TrimSuffix(strings.TrimPrefix(url, "http://"), "/metrics")
	h, p, _ := strings.Cut(hp, ":")
	n, _ := strconv.Atoi(p)
	return h, n
}

// daemon runs `scrapeflux run` in-process until stopped.
type daemon struct {
	cancel func()
	done   chan error
	stderr string
	mu     sync.Mutex
}

func startDaemon(t *testing.T, args ...string) *daemon {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	d := &daemon{cancel: cancel, done: make(chan error, 1)}
	go func() {
		_, stderr, err := execute(ctx, args...)
		d.mu.Lock()
		d.stderr = stderr
		d.mu.Unlock()
		d.done <- err
	}()
	return d
}

func (d *daemon) stop(t *testing.T) {
	t.Helper()
	d.cancel()
	if err := <-d.done; err != nil {
		t.Fatalf("run: %v\n%s", err, d.stderr)
	}
}

// TestConsulEndToEnd registers simulated engines with `scrapeflux register`
// in a real Consul, runs the daemon with Consul discovery and a real
// InfluxDB, and follows registrations and deregistrations.
func TestConsulEndToEnd(t *testing.T) {
	agent := servertest.StartConsul(t, servertest.ConsulOptions{ACL: true})
	tokenFile := filepath.Join(t.TempDir(), "consul-token")
	if err := os.WriteFile(tokenFile, []byte(agent.Token+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	srv := servertest.StartInfluxDB(t)
	srv.CreateDB(t, "e2e")
	fleet, err := simulator.StartFleet(4, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer fleet.Close()
	register := func(i int, extra ...string) {
		t.Helper()
		h, p := hostPort(fleet.URLs[i])
		args := append([]string{"register", "--consul-addr", agent.Addr, "--consul-token-file", tokenFile,
			"--address", h, "--port", strconv.Itoa(p), "--check-interval", "500ms", "--meta", "rack=r" + strconv.Itoa(i)}, extra...)
		if out, _, err := execute(context.Background(), args...); err != nil {
			t.Fatalf("register: %v", err)
		} else if !strings.Contains(out, "registered") {
			t.Fatalf("register said %q", out)
		}
	}
	for i := 0; i < 3; i++ {
		register(i)
	}
	register(0) // registering again changes nothing
	if svcs, err := agent.Client().Agent().ServicesWithFilter(`Service == "docker-engine"`); err != nil || len(svcs) != 3 {
		t.Fatalf("after registering 3 engines (one twice): %d services, err %v", len(svcs), err)
	}
	const interval = 2 * time.Second
	d := startDaemon(t, "run", "--consul", "--consul-addr", agent.Addr, "--consul-token-file", tokenFile,
		"--consul-meta-tags", "rack", "--consul-wait", "5s",
		"--interval", interval.String(), "--timeout", "1s", "--flush-interval", "100ms",
		"--influx-url", srv.URL, "--influx-bucket", "e2e", "--listen", "", "--queue-dir", t.TempDir())
	defer d.cancel()

	points := func(i int) int64 {
		h, p := hostPort(fleet.URLs[i])
		res := srv.Query(t, "e2e", fmt.Sprintf(`SELECT count(gauge) FROM up WHERE instance = '%s:%d' AND job = 'docker-engine' AND rack = 'r%d'`, h, p, i))
		if len(res) == 0 {
			return 0
		}
		n, _ := strconv.ParseInt(fmt.Sprint(res[0].Values[0][1]), 10, 64)
		return n
	}
	// The three registered engines are written, tagged with Consul fields.
	// Each engine's check passes within 500ms, then a scrape within one
	// interval, then a flush.
	servertest.WaitFor(t, "three engines in InfluxDB", 3*interval+5*time.Second, func() bool {
		return points(0) > 0 && points(1) > 0 && points(2) > 0
	})
	if n := points(3); n != 0 {
		t.Fatalf("unregistered engine written: %d points", n)
	}
	nodes := srv.Query(t, "e2e", `SHOW TAG VALUES FROM up WITH KEY = "node"`)
	if len(nodes) == 0 || len(nodes[0].Values) == 0 {
		t.Errorf("no node tag on points")
	}

	// A new registration is scraped within one interval (plus the health
	// check's first pass and a flush).
	register(3)
	took := servertest.WaitFor(t, "new engine in InfluxDB", interval+3*time.Second, func() bool { return points(3) > 0 })
	t.Logf("registration to first point in InfluxDB: %s (interval %s)", took.Round(10*time.Millisecond), interval)

	// A deregistered engine stops being scraped within one interval.
	h, p := hostPort(fleet.URLs[1])
	if _, _, err := execute(context.Background(), "register", "--consul-addr", agent.Addr, "--consul-token-file", tokenFile,
		"--address", h, "--port", strconv.Itoa(p), "--deregister"); err != nil {
		t.Fatal(err)
	}
	deregistered := time.Now()
	var lastScrape time.Time
	prev := fleet.Targets[1].Scrapes()
	for time.Since(deregistered) < 3*interval {
		if n := fleet.Targets[1].Scrapes(); n != prev {
			prev, lastScrape = n, time.Now()
		}
		time.Sleep(20 * time.Millisecond)
	}
	if !lastScrape.IsZero() && lastScrape.Sub(deregistered) > interval {
		t.Errorf("deregistered engine scraped %s after deregistration (interval %s)", lastScrape.Sub(deregistered), interval)
	}
	if lastScrape.IsZero() {
		t.Logf("deregistration to last scrape: no scrape after deregistration")
	} else {
		t.Logf("deregistration to last scrape: %s", lastScrape.Sub(deregistered).Round(10*time.Millisecond))
	}
	if fleet.Targets[0].Scrapes() < 3 {
		t.Errorf("engine 0 scraped only %d times", fleet.Targets[0].Scrapes())
	}

	// Consul goes away: the known targets are still scraped.
	agent.Stop()
	before := fleet.Targets[0].Scrapes()
	servertest.WaitFor(t, "engine 0 scraped twice while Consul is down", 3*interval+time.Second,
		func() bool { return fleet.Targets[0].Scrapes() >= before+2 })
	// Consul returns (a dev agent comes back empty): the nodes register
	// again, and the deregistered engine 1 with them, which discovery picks
	// up.
	agent.Restart(t)
	for i := 0; i < 4; i++ {
		register(i)
	}
	p1 := points(1)
	servertest.WaitFor(t, "engine 1 back after Consul returned", 20*time.Second, func() bool { return points(1) > p1 })
	d.stop(t)
}

// TestRegisterKeep: register --keep stays running, registers again after
// Consul removed the service and after the agent restarted empty, checks
// the endpoint with a TCP connect (not a full GET of /metrics), and
// deregisters when stopped.
func TestRegisterKeep(t *testing.T) {
	agent := servertest.StartConsul(t, servertest.ConsulOptions{})
	fleet, err := simulator.StartFleet(1, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer fleet.Close()
	host, port := hostPort(fleet.URLs[0])
	d := startDaemon(t, "register", "--consul-addr", agent.Addr, "--address", host, "--port", strconv.Itoa(port),
		"--keep", "--keep-interval", "200ms", "--check-interval", "1s", "--id", "engine-1")
	registered := func() bool {
		svc, _, err := agent.Client().Agent().Service("engine-1", nil)
		return err == nil && svc != nil
	}
	servertest.WaitFor(t, "first registration", 10*time.Second, registered)
	checks, err := agent.Client().Agent().Checks()
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range checks {
		if c.ServiceID == "engine-1" && c.Type != "tcp" {
			t.Errorf("check type %q, want tcp", c.Type)
		}
	}
	// The check must not GET /metrics: the engine sees only scrapeflux.
	before := fleet.Targets[0].Scrapes()
	time.Sleep(2500 * time.Millisecond) // a window for an absence (two checks at 1s): no event marks it
	if n := fleet.Targets[0].Scrapes() - before; n != 0 {
		t.Errorf("the health check fetched /metrics %d times in 2.5s", n)
	}

	if err := agent.Client().Agent().ServiceDeregister("engine-1"); err != nil {
		t.Fatal(err)
	}
	took := servertest.WaitFor(t, "registered again after removal", 10*time.Second, registered)
	t.Logf("registered again %s after Consul removed it", took)

	agent.Restart(t)
	took = servertest.WaitFor(t, "registered again after the agent restarted", 20*time.Second, registered)
	t.Logf("registered again %s after the agent restarted", took)

	d.stop(t)
	if registered() {
		t.Error("still registered after register --keep stopped")
	}
	if !strings.Contains(d.stderr, "registered again") {
		t.Errorf("re-registration not logged:\n%s", d.stderr)
	}
}

// register --keep started before its agent waits for it (a node's boot
// order), and --deregister refuses while a --keep holds the registration,
// saying which process does (before: --keep exited when the agent was not
// up, and --deregister was undone 0.2 s later without a word).
func TestRegisterKeepBeforeAgentAndDeregister(t *testing.T) {
	port := servertest.FreePort(t)
	addr := "127.0.0.1:" + strconv.Itoa(port)
	d := startDaemon(t, "register", "--consul-addr", addr, "--address", "127.0.0.1", "--port", "9323",
		"--keep", "--keep-interval", "500ms", "--check", "none", "--id", "engine-early")
	// The agent is not there for a while: its port refuses the requests
	// (each connection closed unanswered) until register tried twice.
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	var tries atomic.Int32
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			tries.Add(1)
			c.Close()
		}
	}()
	servertest.WaitFor(t, "register --keep tries again while the agent is away", 10*time.Second, func() bool { return tries.Load() >= 2 })
	ln.Close()
	agent := servertest.StartConsul(t, servertest.ConsulOptions{HTTPPort: port})
	registered := func() bool {
		svc, _, err := agent.Client().Agent().Service("engine-early", nil)
		return err == nil && svc != nil
	}
	took := servertest.WaitFor(t, "registered once the agent is up", 20*time.Second, registered)
	t.Logf("registered %s after the agent came up", took)

	_, _, err = execute(context.Background(), "register", "--consul-addr", addr, "--id", "engine-early", "--deregister")
	if err == nil || !strings.Contains(err.Error(), "--keep") || !strings.Contains(err.Error(), fmt.Sprintf("pid %d", os.Getpid())) {
		t.Fatalf("--deregister under a running --keep: %v", err)
	}
	if !registered() {
		t.Fatal("the refused --deregister removed the registration")
	}
	d.stop(t)
	if registered() {
		t.Error("still registered after register --keep stopped")
	}
	if !strings.Contains(d.stderr, "does not take the registration yet") {
		t.Errorf("the wait was not logged:\n%s", d.stderr)
	}
	// Nobody holds it now: --deregister of a missing one is fine.
	if _, _, err := execute(context.Background(), "register", "--consul-addr", addr, "--id", "engine-early", "--deregister"); err != nil {
		t.Fatal(err)
	}
}

// jobsTable returns the rows of the /targets page's jobs table.
func jobsTable(t *testing.T, base string) []string {
	t.Helper()
	_, body := httpGet(t, base+"/targets")
	i := strings.Index(body, `<table id="jobs">`)
	if i < 0 {
		t.Fatalf("no jobs table:\n%s", body)
	}
	table := body[i:]
	table = table[:strings.Index(table, "</table>")]
	rows := strings.Split(table, "<tr")[2:] // the table's and the header's
	return rows
}

// One row per job of the configuration whatever its discovery: a Consul
// job's targets carry their service names as job tags, shown in its row
// (before: two rows, the service's and an empty "static"); Consul down at
// start is said in the row, not left blank.
func TestTargetsPageJobRows(t *testing.T) {
	listen := fmt.Sprintf("127.0.0.1:%d", servertest.FreePort(t))
	dead := fmt.Sprintf("127.0.0.1:%d", servertest.FreePort(t))
	d := startDaemon(t, "run", "--consul", "--consul-addr", dead, "--influx-bucket", "b", "--influx-url", "http://127.0.0.1:1",
		"--listen", listen, "--queue-dir", t.TempDir(), "--shutdown-timeout", "100ms")
	var rows []string
	servertest.WaitFor(t, "Consul's failure on the page", 15*time.Second, func() bool {
		code, _ := httpGet(t, "http://"+listen+"/healthz")
		if code != 200 {
			return false
		}
		rows = jobsTable(t, "http://"+listen)
		return len(rows) == 1 && strings.Contains(rows[0], "no targets found yet")
	})
	d.stop(t)

	agent := servertest.StartConsul(t, servertest.ConsulOptions{})
	fleet, err := simulator.StartFleet(2, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer fleet.Close()
	for i, u := range fleet.URLs {
		agent.Register(t, fmt.Sprintf("engine-%d", i), "docker-engine", u, []string{"prometheus"}, nil, nil)
	}
	listen = fmt.Sprintf("127.0.0.1:%d", servertest.FreePort(t))
	d = startDaemon(t, "run", "--consul", "--consul-addr", agent.Addr, "--consul-wait", "2s", "--interval", "500ms",
		"--influx-bucket", "b", "--influx-url", "http://127.0.0.1:1",
		"--listen", listen, "--queue-dir", t.TempDir(), "--shutdown-timeout", "100ms")
	defer d.stop(t)
	servertest.WaitFor(t, "two engines up", 15*time.Second, func() bool {
		if code, _ := httpGet(t, "http://"+listen+"/healthz"); code != 200 {
			return false
		}
		rows = jobsTable(t, "http://"+listen)
		return len(rows) == 1 && strings.Contains(rows[0], "<td>2</td>")
	})
	if !strings.Contains(rows[0], ">static</a>") || !strings.Contains(rows[0], "job tags: docker-engine") || !strings.Contains(rows[0], "consul: 2 discovered") {
		t.Fatalf("job row: %s", rows[0])
	}
}

// The discovery page shows each discovered instance with its labels
// before relabeling and what became of it.
func TestServiceDiscoveryPage(t *testing.T) {
	dir := t.TempDir()
	cfg := filepath.Join(dir, "c.yml")
	os.WriteFile(cfg, []byte(`jobs:
  - job_name: engines
    static_targets: [http://127.0.0.1:1/metrics, http://127.0.0.2:1/metrics]
    relabel_configs:
      - source_labels: [__address__]
        regex: 127\.0\.0\.2:.*
        action: drop
`), 0o600)
	listen := fmt.Sprintf("127.0.0.1:%d", servertest.FreePort(t))
	d := startDaemon(t, "run", "--config", cfg, "--influx-bucket", "b", "--influx-url", "http://127.0.0.1:1",
		"--listen", listen, "--queue-dir", t.TempDir(), "--shutdown-timeout", "100ms")
	defer d.stop(t)
	var jobs []struct {
		Job     string `json:"job"`
		Targets []struct {
			URL, Outcome string
			Scraped      string `json:"scraped_as"`
			Tags         map[string]string
		} `json:"targets"`
	}
	servertest.WaitFor(t, "the discovery page", 15*time.Second, func() bool {
		if code, _ := httpGet(t, "http://"+listen+"/healthz"); code != 200 {
			return false
		}
		_, body := httpGet(t, "http://"+listen+"/service-discovery?format=json")
		return json.Unmarshal([]byte(body), &jobs) == nil && len(jobs) == 1 && len(jobs[0].Targets) == 2
	})
	got := map[string]string{}
	for _, tg := range jobs[0].Targets {
		got[tg.URL] = tg.Outcome + " " + tg.Scraped
		if tg.Tags["instance"] == "" {
			t.Errorf("labels before relabeling missing: %+v", tg)
		}
	}
	if got["http://127.0.0.1:1/metrics"] != "scraped http://127.0.0.1:1/metrics" || got["http://127.0.0.2:1/metrics"] != "dropped by relabeling " {
		t.Fatalf("outcomes %v", got)
	}
	if _, html := httpGet(t, "http://"+listen+"/service-discovery"); !strings.Contains(html, "dropped by relabeling") {
		t.Fatalf("HTML page lacks the outcome:\n%s", html)
	}
}
