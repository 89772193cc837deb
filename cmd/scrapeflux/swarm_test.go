package main

import (
	"context"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/scrapeflux/scrapeflux/internal/servertest"
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

// buildImage builds scrapeflux:latest on the nodes with the shipped
// configs/docker build script and Dockerfile.
func buildImage(t *testing.T, nodes ...*swarmtest.Node) {
	t.Helper()
	bin, err := staticBinary()
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	errs := make([]string, len(nodes))
	for i, n := range nodes {
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
}

// buildStackImages builds on every node the images configs/swarm/stack.yml
// names, with no registry: scrapeflux:latest from configs/docker (the
// shipped Dockerfile and build script), and in place of the registry's
// hashicorp/consul:1.20 and influxdb:1.8.10 the pinned servers the other
// integration tests run, FROM scratch with the libraries they link.
// Grafana's image cannot be had: its tasks stay rejected.
func buildStackImages(t *testing.T, s *swarmtest.Swarm) {
	t.Helper()
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
	buildImage(t, s.Nodes...)
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

// checkSlots waits for three slots of every node's engine since from, then
// checks each slot holds exactly one point, 15 s apart: none missed.
func checkSlots(t *testing.T, db stackInflux, nodes []string, from time.Time, interval time.Duration, after string) {
	t.Helper()
	var stamps map[string][]int64
	servertest.Eventually(6*interval, func() bool {
		stamps = db.stamps(t, "engine_daemon_engine_info", from)
		for _, node := range nodes {
			if len(stamps[node]) < 3 {
				return false
			}
		}
		return true
	})
	for _, node := range nodes {
		ts := stamps[node]
		// InfluxDB keeps one point per series and time, so a duplicate
		// shows as a missing slot, not an extra point: check the slots.
		if len(ts) < 3 {
			t.Errorf("%s: %d points in the %s after %s, want one per %s slot (3 or more): %v", node, len(ts), time.Since(from).Round(time.Second), after, interval, ts)
		}
		sort.Slice(ts, func(i, j int) bool { return ts[i] < ts[j] })
		for i := 1; i < len(ts); i++ {
			if d := time.Duration(ts[i]-ts[i-1]) * time.Millisecond; d != interval {
				t.Errorf("%s after %s: points %s apart at %d, want every %s", node, after, d, ts[i], interval)
			}
		}
	}
}

// nodeNames are the swarm's host names, sorted.
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
// the two central replicas). Then one replica's container is killed and
// the central service gets a rolling update: with R=2 no engine misses a
// slot, and no slot has two points. A node drained stops being scraped, a
// node joining is scraped, and every query of the docker-engine dashboard
// shows data from the real engines.
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
	// start; this one runs influxd alone, and scrapeflux creates the
	// database itself (--influx-create-database, on by default): the test
	// only waits for InfluxDB to answer.
	if !servertest.Eventually(2*time.Minute, func() bool {
		_, err := db.query("", "SHOW DATABASES")
		return err == nil
	}) {
		t.Fatal("the stack's InfluxDB did not answer within 2m")
	}
	want := nodeNames(s)
	var got []string
	if !servertest.Eventually(3*time.Minute, func() bool {
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
		if !servertest.Eventually(2*time.Minute, func() bool {
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
	checkSlots(t, db, want, from, interval, "the kill")

	// A rolling update of the central service (docker service update
	// --image: one replica stopped, then started on the new image, then
	// the other) costs no slot either.
	for _, n := range s.Nodes {
		n.MustDocker(t, "tag", "scrapeflux:latest", "scrapeflux:rolled")
	}
	from = time.Now().Truncate(time.Second)
	m.MustDocker(t, "service", "update", "--detach", "--image", "scrapeflux:rolled", "sf_scrapeflux")
	if !servertest.Eventually(3*time.Minute, func() bool {
		out, _ := m.Docker("service", "ps", "--filter", "desired-state=running", "--format", "{{.Image}} {{.CurrentState}}", "sf_scrapeflux")
		return strings.Count(out, "scrapeflux:rolled Running") == 2
	}) {
		t.Fatal("the rolling update did not finish within 3m")
	}
	t.Logf("rolling update done in %s", time.Since(from).Round(time.Second))
	checkSlots(t, db, want, from, interval, "the rolling update")

	// A node drained stops being scraped (its register task stops and
	// deregisters the engine); a node joining is scraped once its
	// register task runs.
	drained := s.Nodes[2].Name
	drainStart := time.Now()
	m.MustDocker(t, "node", "update", "--availability", "drain", drained)
	joined := s.AddNode(t)
	buildImage(t, joined)
	builtAt := time.Now()
	var got3 []string
	if !servertest.Eventually(3*time.Minute, func() bool {
		got3 = db.nodeTags("engine_daemon_engine_info")
		return strings.Contains(strings.Join(got3, ","), joined.Name)
	}) {
		t.Fatalf("the joining node %s is not scraped within 3m: %v", joined.Name, got3)
	}
	t.Logf("a joining node's engine in InfluxDB %s after its image was there", time.Since(builtAt).Round(100*time.Millisecond))
	drainedAt := time.Now()
	if !servertest.Eventually(3*interval, func() bool {
		ts := db.stamps(t, "engine_daemon_engine_info", time.Now().Add(-2*interval))[drained]
		return len(ts) == 0
	}) {
		t.Errorf("the drained node %s is still scraped", drained)
	}
	var last int64
	for _, ms := range db.stamps(t, "engine_daemon_engine_info", drainStart)[drained] {
		last = max(last, ms)
	}
	// A scrape already under way in the drain's slot may still land.
	if stop := time.UnixMilli(last).Sub(drainStart); last != 0 && stop > interval+5*time.Second {
		t.Errorf("the drained node %s was scraped until %s after the drain, want within one interval", drained, stop)
	} else if last == 0 {
		t.Logf("the drained node has no point after the drain (checked %s after the join)", time.Since(drainedAt).Round(time.Second))
	} else {
		t.Logf("the drained node's last slot %s after the drain (checked %s after the join)", stop.Round(100*time.Millisecond), time.Since(drainedAt).Round(time.Second))
	}

	stackDashboard(t, db, len(want))
	stackReport(t, db, nodeNames(s))
}

// swarmTargets reads the /targets JSON of a scrapeflux published (host
// mode) on node n, from inside n's namespace.
func swarmTargets(n *swarmtest.Node, port int) ([]targetRow, error) {
	out, err := n.Command("curl", "-sS", "--max-time", "5", fmt.Sprintf("http://%s:%d/targets?format=json", n.Addr, port)).Output()
	if err != nil {
		return nil, err
	}
	var rows []targetRow
	if err := json.Unmarshal(out, &rows); err != nil {
		return nil, fmt.Errorf("%v: %.200s", err, out)
	}
	return rows, nil
}

// TestSwarmTasksDiscovered runs, on a real three-node swarm, a global
// exporter service (simulated engines, no published port) and a
// scrapeflux service on the manager that discovers the exporter's tasks
// through the Docker socket (role tasks, network mon) and scrapes them
// on their overlay addresses. It follows a rolling restart of the
// exporter (new tasks, new addresses), a node drained and made active
// again, and a node joining the swarm, each within one refresh and a
// scrape.
func TestSwarmTasksDiscovered(t *testing.T) {
	s := swarmtest.Start(t, 3)
	buildImage(t, s.Nodes...)
	m := s.Manager()
	m.MustDocker(t, "network", "create", "-d", "overlay", "mon")
	m.MustDocker(t, "service", "create", "--detach", "--name", "exporter", "--mode", "global", "--network", "mon",
		"--endpoint-mode", "dnsrr", "--no-healthcheck", "scrapeflux:latest", "simulate", "--targets", "1", "--host", "0.0.0.0", "--base-port", "9100")
	m.MustDocker(t, "service", "create", "--detach", "--name", "collector", "--network", "mon", "--endpoint-mode", "dnsrr",
		"--constraint", "node.role==manager", "--user", "0:0",
		"--mount", "type=bind,src=/var/run/docker.sock,dst=/var/run/docker.sock,readonly",
		"--publish", "published=9274,target=9274,mode=host",
		"scrapeflux:latest", "run", "--docker-swarm", "unix:///var/run/docker.sock", "--docker-swarm-role", "tasks",
		"--docker-swarm-network", "mon", "--docker-swarm-port", "9100", "--docker-swarm-refresh", "3s",
		"--interval", "2s", "--influx-url", "http://127.0.0.1:9", "--influx-bucket", "none", "--listen", "0.0.0.0:9274")
	t.Cleanup(func() {
		if t.Failed() {
			for _, svc := range []string{"exporter", "collector"} {
				out, _ := m.Docker("service", "ps", "--no-trunc", svc)
				logs, _ := m.Docker("service", "logs", "--tail", "20", svc)
				t.Logf("%s:\n%s\n%s", svc, out, logs)
			}
		}
	})
	// exporters lists the up exporter targets by node once every running
	// exporter task is one, scraped since its address was found.
	exporters := func() (map[string]string, error) {
		rows, err := swarmTargets(m, 9274)
		if err != nil {
			return nil, err
		}
		byNode := map[string]string{}
		for _, r := range rows {
			if r.Job != "exporter" {
				continue
			}
			if r.Health != "up" || r.Scrapes == 0 {
				return nil, fmt.Errorf("%s (%s) is %s: %s", r.URL, r.Tags["node"], r.Health, r.LastError)
			}
			byNode[r.Tags["node"]] = r.Instance
		}
		return byNode, nil
	}
	wait := func(what string, limit time.Duration, ok func(map[string]string) bool) map[string]string {
		t.Helper()
		var got map[string]string
		var err error
		start := time.Now()
		if !servertest.Eventually(limit, func() bool {
			got, err = exporters()
			return err == nil && ok(got)
		}) {
			t.Fatalf("%s: not within %s: %v (last: %v)", what, limit, got, err)
		}
		t.Logf("%s in %s: %v", what, time.Since(start).Round(100*time.Millisecond), got)
		return got
	}
	onNodes := func(names ...string) func(map[string]string) bool {
		return func(got map[string]string) bool {
			if len(got) != len(names) {
				return false
			}
			for _, n := range names {
				if got[n] == "" {
					return false
				}
			}
			return true
		}
	}
	before := wait("every node's exporter task scraped on its overlay address", 2*time.Minute, onNodes("swarm0", "swarm1", "swarm2"))
	for node, inst := range before {
		if !strings.HasPrefix(inst, "10.0.") || !strings.HasSuffix(inst, ":9100") {
			t.Errorf("%s: instance %s is not an overlay address on port 9100", node, inst)
		}
	}
	// Prometheus's labels, as /service-discovery shows them. A task's
	// state is the manager's word: it may still say "starting" at the
	// first read, and says "running" from the next refresh (3s) on.
	wants := []string{`"__meta_dockerswarm_task_desired_state":"running"`, `"__meta_dockerswarm_task_state":"running"`,
		`"__meta_dockerswarm_task_slot":"0"`, `"__meta_dockerswarm_service_mode":"global"`, `"__meta_dockerswarm_service_name":"exporter"`,
		`"__meta_dockerswarm_network_name":"mon"`, `"__meta_dockerswarm_network_scope":"swarm"`, `"__meta_dockerswarm_node_hostname":"swarm1"`,
		`"__meta_dockerswarm_node_role":"worker"`, `"__meta_dockerswarm_service_task_container_image":"scrapeflux:latest"`}
	var missing []string
	if !servertest.Eventually(15*time.Second, func() bool {
		sd, err := m.Command("curl", "-sS", "--max-time", "5", "http://"+m.Addr+":9274/service-discovery?format=json").Output()
		if err != nil {
			missing = []string{err.Error()}
			return false
		}
		missing = missing[:0]
		for _, want := range wants {
			if !strings.Contains(string(sd), want) {
				missing = append(missing, want)
			}
		}
		return len(missing) == 0
	}) {
		t.Errorf("/service-discovery lacks %s within five refreshes", strings.Join(missing, ", "))
	}
	// Within one refresh (3s) and a scrape (2s), with the tasks' start.
	const follow = 45 * time.Second

	m.MustDocker(t, "service", "update", "--detach", "--force", "exporter")
	wait("the restarted tasks at their new addresses", 2*time.Minute, func(got map[string]string) bool {
		if !onNodes("swarm0", "swarm1", "swarm2")(got) {
			return false
		}
		for n, inst := range got {
			if inst == before[n] {
				return false
			}
		}
		return true
	})

	m.MustDocker(t, "node", "update", "--availability", "drain", "swarm2")
	wait("swarm2 drained: its task no longer a target", follow, onNodes("swarm0", "swarm1"))
	m.MustDocker(t, "node", "update", "--availability", "active", "swarm2")
	wait("swarm2 active again", follow, onNodes("swarm0", "swarm1", "swarm2"))

	s.AddNode(t)
	buildImage(t, s.Nodes[3])
	wait("a joining node's task", 2*time.Minute, onNodes("swarm0", "swarm1", "swarm2", "swarm3"))
}

// stackDashboard runs every query of the docker-engine dashboard against
// the stack's InfluxDB, filled from the real engines: each panel shows at
// least one series with values, and the per-engine basics one per node.
// Values may be 0 here: idle engines fail no health checks.
func stackDashboard(t *testing.T, db stackInflux, nodes int) {
	t.Helper()
	data, err := os.ReadFile("../../configs/grafana/docker-engine.json")
	if err != nil {
		t.Fatal(err)
	}
	var dash dashboard
	if err := json.Unmarshal(data, &dash); err != nil {
		t.Fatal(err)
	}
	macros := strings.NewReplacer("$timeFilter", "time > now() - 10m", "$__interval", "15s",
		"/^$job$/", "/^.*$/", "/^$instance$/", "/^.*$/")
	perNode := map[string]bool{"Targets up": true, "Engine CPUs": true, "Engine host memory": true, "Engine goroutines": true, "Engine resident memory": true}
	for _, p := range dash.Panels {
		var series []servertest.Result
		for _, tg := range p.Targets {
			res, err := db.query("docker", macros.Replace(tg.Query))
			if err != nil {
				t.Errorf("panel %q: %v", p.Title, err)
				continue
			}
			series = append(series, res...)
		}
		min := 1
		if perNode[p.Title] {
			min = nodes
		}
		checkPanel(t, p.Title+" (real engines)", expect{min: min}, series)
	}
}

// stackReport logs what arrived per node: the demo's output.
func stackReport(t *testing.T, db stackInflux, nodes []string) {
	res, err := db.query("docker", `SELECT count("gauge") FROM "up" GROUP BY "node", "instance"`)
	if err != nil {
		t.Fatal(err)
	}
	counts := map[string]string{}
	for _, r := range res {
		if len(r.Values) > 0 {
			counts[r.Tags["node"]] = fmt.Sprintf("%s, %v scrapes", r.Tags["instance"], r.Values[0][1])
		}
	}
	for _, n := range nodes {
		ms, _ := db.query("docker", fmt.Sprintf(`SHOW SERIES WHERE "node" = '%s'`, n))
		series := 0
		for _, r := range ms {
			series += len(r.Values)
		}
		t.Logf("node %s: engine %s, %d series in the stack's InfluxDB", n, counts[n], series)
	}
}

// register --docker with an engine in no swarm, or with no engine behind
// the socket, says what to do and registers nothing.
func TestRegisterDockerErrors(t *testing.T) {
	sock := filepath.Join(t.TempDir(), "docker.sock")
	ln, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	// GET /info of an engine in no swarm (Engine API 1.41's shape).
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		w.Write([]byte(`{"ID":"X","Name":"lonely","Swarm":{"NodeID":"","NodeAddr":"","LocalNodeState":"inactive"}}`))
	})}
	go srv.Serve(ln)
	defer srv.Close()
	_, _, err = execute(context.Background(), "register", "--docker", "unix://"+sock, "--consul-addr", "127.0.0.1:1")
	if err == nil || !strings.Contains(err.Error(), "lonely is in no swarm") || !strings.Contains(err.Error(), "--address") {
		t.Errorf("an engine in no swarm: %v", err)
	}
	_, _, err = execute(context.Background(), "register", "--docker", "unix:///nonexistent/docker.sock", "--consul-addr", "127.0.0.1:1")
	if err == nil || !strings.Contains(err.Error(), "socket mounted") {
		t.Errorf("no engine behind the socket: %v", err)
	}
}
