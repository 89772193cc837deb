package discovery

import (
	"context"
	"encoding/pem"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/common/model"
)

// A Docker Engine API as a Swarm manager answers GET /nodes (Engine API
// 1.41+, "Node" objects), for the cases a test swarm does not give (a
// demoted manager, a node at 0.0.0.0); the real engines are in
// cmd/scrapeflux's swarm tests and in testdata/swarm.
func swarmAPI(t *testing.T, nodes *atomic.Value) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/nodes" {
			w.WriteHeader(http.StatusNotFound)
			w.Write([]byte(`{"message":"page not found"}`))
			return
		}
		body := nodes.Load().(string)
		if body == "worker" {
			w.Header().Set("Content-Type", "application/json")
			w.WriteHeader(http.StatusServiceUnavailable)
			w.Write([]byte(`{"message":"This node is not a swarm manager. Worker nodes can't be used to view or modify cluster state. Please run this command on a manager node or promote the current node to a manager."}`))
			return
		}
		w.Header().Set("Content-Type", "application/json")
		w.Write([]byte(body))
	})
}

// serveSwarmAPI serves swarmAPI on a unix socket, as the engine does, and
// returns its unix:// address.
func serveSwarmAPI(t *testing.T, nodes *atomic.Value) string {
	t.Helper()
	sock := filepath.Join(t.TempDir(), "docker.sock")
	ln, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: swarmAPI(t, nodes)}
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Close() })
	return "unix://" + sock
}

const twoNodes = `[
 {"ID":"n1","Description":{"Hostname":"manager-1","Platform":{"OS":"linux","Architecture":"x86_64"},"Engine":{"EngineVersion":"27.3.1"}},
  "Spec":{"Role":"manager","Availability":"active","Labels":{"rack":"r1"}},"Status":{"State":"ready","Addr":"10.0.0.11"},"ManagerStatus":{"Leader":true,"Addr":"10.0.0.11:2377"}},
 {"ID":"n2","Description":{"Hostname":"worker-1","Platform":{"OS":"linux","Architecture":"aarch64"},"Engine":{"EngineVersion":"27.3.1"}},
  "Spec":{"Role":"worker","Availability":"drain","Labels":{}},"Status":{"State":"down","Addr":"10.0.0.12"}}
]`

// The Swarm's nodes, over the manager's unix socket: a target each at its
// address and the engines' metrics port, tagged with its host name, its
// role, state and labels for relabeling; a manager that stops answering
// (a demoted one) keeps the last list and says so.
func TestDockerSwarmNodes(t *testing.T) {
	var nodes atomic.Value
	nodes.Store(twoNodes)
	sock := serveSwarmAPI(t, &nodes)
	d, err := NewDockerSwarm("docker-engine", DockerSwarmSDConfig{Host: sock, RefreshInterval: model.Duration(100 * time.Millisecond)}, discard)
	if err != nil {
		t.Fatal(err)
	}
	w := startWatcher(t, d)
	got := w.waitFor(t, "two nodes", hasN(2))
	m := got[0]
	if m.URL != "http://10.0.0.11:9323/metrics" || m.Tag("node") != "manager-1" || m.Tag("job") != "docker-engine" ||
		m.Meta["__meta_dockerswarm_node_role"] != "manager" || m.Meta["__meta_dockerswarm_node_manager_leader"] != "true" ||
		m.Meta["__meta_dockerswarm_node_label_rack"] != "r1" || got[1].Meta["__meta_dockerswarm_node_status"] != "down" {
		t.Fatalf("targets %+v", got)
	}
	nodes.Store("worker")
	deadline := time.Now().Add(10 * time.Second)
	for d.Status().Err == "" {
		if time.Now().After(deadline) {
			t.Fatal("a failing manager is not reported")
		}
		time.Sleep(20 * time.Millisecond)
	}
	w.holds(t, time.Second, "a manager that stops answering keeps the last list (ten refreshes)", hasN(2))
	nodes.Store(`[{"ID":"n3","Description":{"Hostname":"w3"},"Spec":{"Role":"worker"},"Status":{"State":"ready","Addr":"10.0.0.13"}}]`)
	w.waitFor(t, "the new node list", func(ts []Target) bool { return len(ts) == 1 && ts[0].Tag("node") == "w3" })
	if _, err := NewDockerSwarm("j", DockerSwarmSDConfig{Host: "unix:///x", Role: "containers"}, discard); err == nil || !strings.Contains(err.Error(), "want nodes, tasks or services") {
		t.Fatalf("role containers: %v", err)
	}
	if _, err := NewDockerSwarm("j", DockerSwarmSDConfig{Host: "unix:///x", Network: "mon"}, discard); err == nil {
		t.Fatal("a network for role nodes accepted")
	}
}

// A manager can report 0.0.0.0 as its node address (moby/moby#35437): it
// is scraped at its manager address, as its engine advertises it; a node
// with no usable address at all is left out (and logged), not guessed.
func TestDockerSwarmNodeAddressUnspecified(t *testing.T) {
	var nodes atomic.Value
	nodes.Store(`[
 {"ID":"m1","Description":{"Hostname":"manager-1"},"Spec":{"Role":"manager","Availability":"active"},
  "Status":{"State":"ready","Addr":"0.0.0.0"},"ManagerStatus":{"Leader":true,"Reachability":"reachable","Addr":"10.0.0.11:2377"}},
 {"ID":"w1","Description":{"Hostname":"worker-1"},"Spec":{"Role":"worker","Availability":"active"},"Status":{"State":"ready","Addr":"0.0.0.0"}},
 {"ID":"w2","Description":{"Hostname":"worker-2"},"Spec":{"Role":"worker","Availability":"active"},"Status":{"State":"ready","Addr":"10.0.0.13"}}
]`)
	sock := serveSwarmAPI(t, &nodes)
	d, err := NewDockerSwarm("docker-engine", DockerSwarmSDConfig{Host: sock, RefreshInterval: model.Duration(time.Hour)}, discard)
	if err != nil {
		t.Fatal(err)
	}
	w := startWatcher(t, d)
	got := w.waitFor(t, "two nodes", hasN(2))
	if got[0].URL != "http://10.0.0.11:9323/metrics" || got[0].Tag("node") != "manager-1" ||
		got[0].Meta["__meta_dockerswarm_node_address"] != "10.0.0.11" || got[0].Meta["__meta_dockerswarm_node_manager_address"] != "10.0.0.11:2377" {
		t.Errorf("the manager: %+v", got[0])
	}
	if got[1].URL != "http://10.0.0.13:9323/metrics" {
		t.Errorf("the worker with an address: %+v", got[1])
	}
}

// A remote manager over TLS (https://manager:2376 with tls_config, as
// dockerd --tlsverify serves it): the CA is checked, so a server it did
// not sign is refused, and tls_config on a plain-HTTP host is a config
// error.
func TestDockerSwarmTLS(t *testing.T) {
	var nodes atomic.Value
	nodes.Store(twoNodes)
	srv := httptest.NewTLSServer(swarmAPI(t, &nodes))
	defer srv.Close()
	ca := filepath.Join(t.TempDir(), "ca.pem")
	if err := os.WriteFile(ca, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: srv.Certificate().Raw}), 0o600); err != nil {
		t.Fatal(err)
	}
	cfg := DockerSwarmSDConfig{Host: srv.URL, RefreshInterval: model.Duration(time.Hour)}
	cfg.TLSConfig.CAFile = ca
	d, err := NewDockerSwarm("docker-engine", cfg, discard)
	if err != nil {
		t.Fatal(err)
	}
	w := startWatcher(t, d)
	w.waitFor(t, "two nodes over TLS", hasN(2))

	untrusted, err := NewDockerSwarm("docker-engine", DockerSwarmSDConfig{Host: srv.URL}, discard)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := untrusted.read(context.Background()); err == nil || !strings.Contains(err.Error(), "certificate") {
		t.Errorf("a manager whose certificate no CA vouches for: %v", err)
	}
	plain := DockerSwarmSDConfig{Host: "http://manager:2375"}
	plain.TLSConfig.CAFile = ca
	if _, err := NewDockerSwarm("j", plain, discard); err == nil || !strings.Contains(err.Error(), "https") {
		t.Errorf("tls_config on http://: %v", err)
	}
}

// serveCaptures answers the Engine API from testdata/swarm: what a real
// 20.10 manager answered for GET /nodes, /services, /tasks and /networks
// on a three-node swarm with a global service "exporter" (dnsrr, no port,
// service label team=infra, container label metrics=yes, on overlay
// network mon) and a replicated service "web" (2 tasks, target port 9100
// published on the routing mesh as 8080).
func serveCaptures(t *testing.T) string {
	t.Helper()
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, err := os.ReadFile(filepath.Join("testdata", "swarm", strings.TrimPrefix(r.URL.Path, "/")+".json"))
		if err != nil {
			w.WriteHeader(http.StatusNotFound)
			w.Write([]byte(`{"message":"page not found"}`))
			return
		}
		w.Header().Set("Content-Type", "application/json")
		w.Write(b)
	}))
	t.Cleanup(srv.Close)
	return srv.URL
}

// Roles tasks and services on a real engine's answers: every running
// task at its overlay address and the service's target port (else the
// configured one), the routing mesh's ingress addresses left out, each
// tagged with its node and its service as job, with Prometheus's labels;
// services at their virtual IP on mon.
func TestDockerSwarmTasksAndServicesCaptured(t *testing.T) {
	host := serveCaptures(t)
	read := func(cfg DockerSwarmSDConfig) []Target {
		t.Helper()
		cfg.Host = host
		d, err := NewDockerSwarm("swarm", cfg, discard)
		if err != nil {
			t.Fatal(err)
		}
		ts, err := d.read(context.Background())
		if err != nil {
			t.Fatal(err)
		}
		return ts
	}
	got := map[string]Target{}
	for _, tg := range read(DockerSwarmSDConfig{Role: "tasks", Port: 9100}) {
		got[tg.Tag("job")+" "+tg.URL] = tg
	}
	want := []string{
		"exporter http://10.0.1.2:9100/metrics", "exporter http://10.0.1.3:9100/metrics", "exporter http://10.0.1.4:9100/metrics",
		"web http://10.0.1.9:9100/metrics", "web http://10.0.1.10:9100/metrics",
	}
	if len(got) != len(want) {
		t.Errorf("%d task targets, want %d: %v", len(got), len(want), got)
	}
	nodes := map[string]bool{}
	for _, k := range want {
		tg, ok := got[k]
		if !ok {
			t.Errorf("no target %s", k)
			continue
		}
		nodes[tg.Tag("node")] = true
		m := tg.Meta
		if m["__meta_dockerswarm_network_name"] != "mon" || m["__meta_dockerswarm_task_desired_state"] != "running" ||
			m["__meta_dockerswarm_node_hostname"] != tg.Tag("node") || m["__meta_dockerswarm_service_name"] != tg.Tag("job") {
			t.Errorf("%s: labels %v", k, m)
		}
		if tg.Tag("job") == "exporter" && (m["__meta_dockerswarm_service_label_team"] != "infra" ||
			m["__meta_dockerswarm_container_label_metrics"] != "yes" || m["__meta_dockerswarm_service_mode"] != "global") {
			t.Errorf("%s: service and container labels %v", k, m)
		}
		if tg.Tag("job") == "web" && m["__meta_dockerswarm_task_port_publish_mode"] != "ingress" {
			t.Errorf("%s: port labels %v", k, m)
		}
	}
	if !nodes["swarm0"] || !nodes["swarm1"] || !nodes["swarm2"] {
		t.Errorf("node tags %v, want swarm0..2", nodes)
	}
	if n := len(read(DockerSwarmSDConfig{Role: "tasks", Port: 9100, Network: "other"})); n != 0 {
		t.Errorf("network other: %d targets, want none", n)
	}
	if n := len(read(DockerSwarmSDConfig{Role: "tasks", Port: 9100, Network: "mon"})); n != len(want) {
		t.Errorf("network mon: %d targets, want %d", n, len(want))
	}
	svcs := read(DockerSwarmSDConfig{Role: "services"})
	if len(svcs) != 1 || svcs[0].URL != "http://10.0.1.8:9100/metrics" || svcs[0].Tag("job") != "web" ||
		svcs[0].Meta["__meta_dockerswarm_service_endpoint_port_publish_mode"] != "ingress" || svcs[0].Meta["__meta_dockerswarm_service_mode"] != "replicated" {
		t.Errorf("services: %+v", svcs)
	}
}
