package main

import (
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/scrapeflux/scrapeflux/discovery/servertest"
	"github.com/scrapeflux/scrapeflux/internal/swarmtest"
)

// staticBinary builds scrapeflux as the image has it (CGO_ENABLED=0),
// once per test binary.
var staticBinary = sync.OnceValues(func() (string, error) {
	dir, err := os.MkdirTemp("", "scrapeflux-static")
	if err != nil {
		return "", err
	}
	bin := filepath.Join(dir, "scrapeflux")
	cmd := exec.Command("go", "build", "-trimpath", "-o", bin, ".")
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0", "GOFLAGS=-buildvcs=false")
	if out, err := cmd.CombinedOutput(); err != nil {
		return "", fmt.Errorf("go build: %v\n%s", err, out)
	}
	return bin, nil
})

// buildStackImages builds on every node the images configs/swarm/stack.yml
// names, with no registry: scrapeflux:latest from configs/docker (the
// shipped Dockerfile and build script), and in place of the registry's
// hashicorp/consul:1.20 and influxdb:1.8.10 the pinned servers the other
// integration tests run, FROM scratch with the libraries they link.
// Grafana's image cannot be had: its tasks stay rejected.
func buildStackImages(t *testing.T, s *swarmtest.Swarm) {
	t.Helper()
	bin, err := staticBinary()
	if err != nil {
		t.Fatal(err)
	}
	consul := swarmtest.Context(t, `FROM scratch
COPY rootfs/ /
ENV PATH=/bin
ENTRYPOINT ["/bin/consul"]
`, map[string]string{"/bin/consul": servertest.Binary(t, "consul"), "/tmp": "", "/consul/data": ""})
	influx := swarmtest.Context(t, `FROM scratch
COPY rootfs/ /
ENV PATH=/usr/bin HOME=/tmp INFLUXDB_META_DIR=/var/lib/influxdb/meta INFLUXDB_DATA_DIR=/var/lib/influxdb/data \
    INFLUXDB_DATA_WAL_DIR=/var/lib/influxdb/wal INFLUXDB_REPORTING_DISABLED=true
ENTRYPOINT ["/usr/bin/influxd"]
`, map[string]string{"/usr/bin/influxd": servertest.Binary(t, "influxd"), "/usr/bin/influx": servertest.Binary(t, "influx"),
		"/tmp": "", "/var/lib/influxdb": ""})
	var wg sync.WaitGroup
	errs := make([]string, len(s.Nodes))
	for i, n := range s.Nodes {
		wg.Add(1)
		go func() {
			defer wg.Done()
			cmd := exec.Command("bash", "../../configs/docker/build.sh", "scrapeflux:latest")
			cmd.Env = append(os.Environ(), "DOCKER_HOST=unix://"+n.Sock, "SCRAPEFLUX_BINARY="+bin)
			if out, err := cmd.CombinedOutput(); err != nil {
				errs[i] = fmt.Sprintf("%s: configs/docker/build.sh: %v\n%s", n.Name, err, out)
			}
		}()
	}
	wg.Wait()
	for _, e := range errs {
		if e != "" {
			t.Fatal(e)
		}
	}
	s.BuildImage(t, "hashicorp/consul:1.20", consul)
	s.BuildImage(t, "influxdb:1.8.10", influx)
}

// stackInflux queries the stack's own InfluxDB through its container's
// influx CLI (the stack publishes no InfluxDB port).
type stackInflux struct {
	node    *swarmtest.Node
	service string
}

func (q stackInflux) container() (string, error) {
	out, err := q.node.Docker("ps", "-q", "--filter", "label=com.docker.swarm.service.name="+q.service)
	if err != nil {
		return "", fmt.Errorf("docker ps: %v: %s", err, out)
	}
	if f := strings.Fields(out); len(f) > 0 {
		return f[0], nil
	}
	return "", fmt.Errorf("no running container of %s on %s", q.service, q.node.Name)
}

func (q stackInflux) query(db, stmt string) ([]servertest.Result, error) {
	cid, err := q.container()
	if err != nil {
		return nil, err
	}
	out, err := q.node.Docker("exec", cid, "influx", "-database", db, "-format", "json", "-precision", "ms", "-execute", stmt)
	if err != nil {
		return nil, fmt.Errorf("influx -execute %q: %v: %s", stmt, err, out)
	}
	// The CLI reads chunked answers and prints one JSON document per
	// chunk: every series may be a document of its own.
	var series []servertest.Result
	dec := json.NewDecoder(strings.NewReader(out))
	dec.UseNumber()
	for dec.More() {
		var body struct {
			Results []struct {
				Series []servertest.Result `json:"series"`
				Error  string              `json:"error"`
			} `json:"results"`
			Error string `json:"error"`
		}
		if err := dec.Decode(&body); err != nil {
			return nil, fmt.Errorf("influx -execute %q: %v: %s", stmt, err, out)
		}
		if body.Error != "" {
			return nil, fmt.Errorf("%q: %s", stmt, body.Error)
		}
		for _, r := range body.Results {
			if r.Error != "" {
				return nil, fmt.Errorf("%q: %s", stmt, r.Error)
			}
			series = append(series, r.Series...)
		}
	}
	return series, nil
}

// nodeTags is the set of node tag values of measurement.
func (q stackInflux) nodeTags(measurement string) []string {
	res, err := q.query("docker", fmt.Sprintf(`SHOW TAG VALUES FROM %q WITH KEY = "node"`, measurement))
	if err != nil {
		return nil
	}
	var nodes []string
	for _, r := range res {
		for _, v := range r.Values {
			if len(v) == 2 {
				nodes = append(nodes, fmt.Sprint(v[1]))
			}
		}
	}
	sort.Strings(nodes)
	return nodes
}

// stamps are the times (ms) of the points of measurement per node tag,
// from since on.
func (q stackInflux) stamps(t *testing.T, measurement string, since time.Time) map[string][]int64 {
	t.Helper()
	res, err := q.query("docker", fmt.Sprintf(`SELECT "gauge" FROM %q WHERE time >= %dms GROUP BY "node"`, measurement, since.UnixMilli()))
	if err != nil {
		t.Fatal(err)
	}
	out := map[string][]int64{}
	for _, r := range res {
		for _, v := range r.Values {
			ms, _ := v[0].(json.Number).Int64()
			out[r.Tags["node"]] = append(out[r.Tags["node"]], ms)
		}
	}
	return out
}

func nodeNames(s *swarmtest.Swarm) []string {
	var names []string
	for _, n := range s.Nodes {
		names = append(names, n.Name)
	}
	sort.Strings(names)
	return names
}

// TestSwarmStackDeployed deploys configs/swarm/stack.yml, unchanged, with docker
// stack deploy on a real three-node swarm (this kernel has no IPVS:
// service virtual IPs would not route) and waits for what it promises:
// every engine's metrics in the stack's InfluxDB, tagged with its node,
// scraped by the stack's own services (the global register service and
// the two central replicas). Then one replica's container is killed: with
// R=2 no engine misses a slot, and no slot has two points.
func TestSwarmStackDeployed(t *testing.T) {
	start := time.Now()
	s := swarmtest.Start(t, 3)
	t.Logf("swarm of 3 up in %s", time.Since(start).Round(100*time.Millisecond))
	buildStackImages(t, s)
	t.Logf("images built on every node at %s", time.Since(start).Round(100*time.Millisecond))
	m := s.Manager()
	dir := t.TempDir()
	for name, val := range map[string]string{"influx_token": "scrapeflux:change-me", "grafana_admin_password": "change-me"} {
		f := filepath.Join(dir, name)
		os.WriteFile(f, []byte(val), 0o600)
		m.MustDocker(t, "secret", "create", name, f)
	}
	// --resolve-image never: the test asks no registry for digests.
	m.MustDocker(t, "stack", "deploy", "--resolve-image", "never", "-c", "../../configs/swarm/stack.yml", "sf")
	deployed := time.Now()
	t.Cleanup(func() {
		if t.Failed() {
			for _, svc := range []string{"sf_consul", "sf_influxdb", "sf_scrapeflux", "sf_scrapeflux-node"} {
				out, _ := m.Docker("service", "ps", "--no-trunc", svc)
				logs, _ := m.Docker("service", "logs", "--tail", "30", svc)
				t.Logf("%s:\n%s\n%s", svc, out, logs)
			}
		}
	})
	db := stackInflux{node: m, service: "sf_influxdb"}
	// The registry's influxdb image creates INFLUXDB_DB at its first
	// start (its entrypoint script); this one runs influxd alone, so the
	// test does what that script does.
	if !swarmtest.Eventually(2*time.Minute, func() bool {
		_, err := db.query("", "CREATE DATABASE docker")
		return err == nil
	}) {
		t.Fatal("the stack's InfluxDB did not answer within 2m")
	}
	want := nodeNames(s)
	var got []string
	if !swarmtest.Eventually(3*time.Minute, func() bool {
		got = db.nodeTags("engine_daemon_engine_info")
		return strings.Join(got, ",") == strings.Join(want, ",")
	}) {
		t.Fatalf("the stack's InfluxDB has engine metrics of nodes %v, want %v", got, want)
	}
	firstAll := time.Since(deployed)
	t.Logf("every node's engine metrics in the stack's InfluxDB %s after docker stack deploy", firstAll.Round(100*time.Millisecond))
	// Its health checks pass with the images it names.
	for _, svc := range []string{"sf_consul", "sf_influxdb", "sf_scrapeflux"} {
		svc := svc
		var st string
		if !swarmtest.Eventually(2*time.Minute, func() bool {
			for _, n := range s.Nodes {
				out, _ := n.Docker("ps", "--filter", "label=com.docker.swarm.service.name="+svc, "--format", "{{.Status}}")
				st += out
				if strings.Contains(out, "(healthy)") {
					return true
				}
			}
			return false
		}) {
			t.Errorf("%s never healthy: %s", svc, st)
		}
	}

	// Kill one central replica's container (kill -9 of its process): the
	// other scrapes every engine too (R=2), and Swarm starts a new one.
	// Every slot of every engine keeps exactly one point.
	const interval = 15 * time.Second
	var victim *swarmtest.Node
	var cid string
	for _, n := range s.Nodes {
		out, _ := n.Docker("ps", "-q", "--filter", "label=com.docker.swarm.service.name=sf_scrapeflux")
		if f := strings.Fields(out); len(f) > 0 {
			victim, cid = n, f[0]
			break
		}
	}
	if victim == nil {
		t.Fatal("no central replica running")
	}
	from := time.Now().Truncate(time.Second)
	victim.MustDocker(t, "kill", cid)
	t.Logf("killed replica container %.12s on %s", cid, victim.Name)
	// Wait for four slots of every engine after the kill (a missed slot
	// shows as a gap below), then check the points since it.
	var stamps map[string][]int64
	swarmtest.Eventually(6*interval, func() bool {
		stamps = db.stamps(t, "engine_daemon_engine_info", from)
		for _, node := range want {
			if len(stamps[node]) < 4 {
				return false
			}
		}
		return true
	})
	if t.Failed() || len(stamps) < len(want) {
		for _, q := range []string{
			`SELECT count("gauge"), last("gauge") FROM "up" WHERE time > now() - 3m GROUP BY "instance", "node"`,
			`SELECT count("gauge"), max(time) FROM "engine_daemon_engine_info" GROUP BY *`,
			`SELECT last("gauge") FROM "engine_daemon_engine_info" GROUP BY *`,
		} {
			res, err := db.query("docker", q)
			t.Logf("%s: %v %+v", q, err, res)
		}
		for _, n := range s.Nodes {
			out, _ := n.Docker("ps", "-q", "--filter", "label=com.docker.swarm.service.name=sf_scrapeflux")
			for _, c := range strings.Fields(out) {
				self, _ := n.Docker("exec", c, "/usr/local/bin/scrapeflux", "scrape", "http://127.0.0.1:9274/metrics")
				var keep []string
				for _, l := range strings.Split(self, "\n") {
					if strings.Contains(l, "drop") || strings.Contains(l, "scrapes") || strings.Contains(l, "target") || strings.Contains(l, "written") {
						keep = append(keep, l)
					}
				}
				t.Logf("replica %s on %s:\n%s", c, n.Name, strings.Join(keep, "\n"))
				for _, e := range s.Nodes {
					body, err := n.Docker("exec", c, "/usr/local/bin/scrapeflux", "scrape", "http://"+e.Addr+":9323/metrics")
					t.Logf("from %s to %s: %v %d bytes %.300s", n.Name, e.Name, err, len(body), body)
				}
			}
		}
	}
	for _, node := range want {
		ts := stamps[node]
		seen := map[int64]int{}
		for _, ms := range ts {
			seen[ms]++
		}
		for ms, n := range seen {
			if n > 1 {
				t.Errorf("%s: %d points at %d", node, n, ms)
			}
		}
		// InfluxDB keeps one point per series and time, so duplicates
		// show as fewer points, not more: count the slots instead.
		if len(ts) < 4 {
			t.Errorf("%s: %d points in the %s after the kill, want one per %s slot (4 or more): %v", node, len(ts), time.Since(from).Round(time.Second), interval, ts)
		}
		sort.Slice(ts, func(i, j int) bool { return ts[i] < ts[j] })
		for i := 1; i < len(ts); i++ {
			if d := time.Duration(ts[i]-ts[i-1]) * time.Millisecond; d != interval {
				t.Errorf("%s: points %s apart at %d, want every %s", node, d, ts[i], interval)
			}
		}
	}
}
