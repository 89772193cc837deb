// Package consultest starts a real Consul agent in dev mode (built by the
// Makefile) on free loopback ports, for integration tests. Under CI=true a
// missing consul binary fails the test; elsewhere it skips with a hint.
package consultest

import (
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/consul/api"

	"github.com/scrapeflux/scrapeflux/sink/influxtest"
)

// Agent is a running consul agent -dev.
type Agent struct {
	Addr   string // host:port of the HTTP API
	Token  string // management token when ACLs are on
	dir    string
	ports  [4]int
	acl    bool
	cmd    *exec.Cmd
	logf   *os.File
	client *api.Client
}

// Options of the agent.
type Options struct {
	// ACL turns ACLs on with default deny; Token is then the management
	// token.
	ACL bool
}

// Start runs an agent until the test ends.
func Start(t testing.TB, opts Options) *Agent {
	t.Helper()
	a := &Agent{dir: t.TempDir(), acl: opts.ACL}
	for i := range a.ports {
		a.ports[i] = influxtest.FreePort(t)
	}
	a.Addr = "127.0.0.1:" + strconv.Itoa(a.ports[0])
	if opts.ACL {
		a.Token = "3b1f2a8e-6d7c-4e21-9a55-0c3d8f1e2b47"
	}
	a.start(t)
	t.Cleanup(a.Stop)
	return a
}

func (a *Agent) start(t testing.TB) {
	t.Helper()
	bin := influxtest.Binary(t, "consul")
	args := []string{"agent", "-dev", "-bind", "127.0.0.1", "-client", "127.0.0.1",
		"-http-port", strconv.Itoa(a.ports[0]), "-dns-port", "-1", "-grpc-port", "-1", "-grpc-tls-port", "-1",
		"-serf-lan-port", strconv.Itoa(a.ports[1]), "-serf-wan-port", strconv.Itoa(a.ports[2]),
		"-server-port", strconv.Itoa(a.ports[3]), "-log-level", "warn"}
	if a.acl {
		args = append(args, "-hcl", fmt.Sprintf(`acl { enabled = true default_policy = "deny" tokens { initial_management = %q agent = %q } }`, a.Token, a.Token))
	}
	var err error
	a.logf, err = os.Create(filepath.Join(a.dir, "consul.log"))
	if err != nil {
		t.Fatal(err)
	}
	a.cmd = exec.Command(bin, args...)
	a.cmd.Stdout, a.cmd.Stderr = a.logf, a.logf
	if err := a.cmd.Start(); err != nil {
		t.Fatalf("cannot start consul: %v", err)
	}
	cfg := api.DefaultNonPooledConfig()
	cfg.Address, cfg.Token = a.Addr, a.Token
	a.client, err = api.NewClient(cfg)
	if err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(60 * time.Second)
	for {
		leader, err := a.client.Status().Leader()
		if err == nil && leader != "" {
			// The catalog answers once the node has registered itself.
			if nodes, _, err := a.client.Catalog().Nodes(nil); err == nil && len(nodes) > 0 {
				return
			}
		}
		if time.Now().After(deadline) {
			log, _ := os.ReadFile(a.logf.Name())
			t.Fatalf("consul did not become ready: %v\n%s", err, log)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// Stop ends the agent (idempotent). Dev agents keep no state.
func (a *Agent) Stop() {
	if a.cmd == nil || a.cmd.Process == nil {
		return
	}
	_ = a.cmd.Process.Kill()
	_ = a.cmd.Wait()
	a.logf.Close()
	a.cmd = nil
}

// Restart starts a fresh agent on the same ports.
func (a *Agent) Restart(t testing.TB) {
	t.Helper()
	a.Stop()
	a.start(t)
}

// Client returns an API client with the management token.
func (a *Agent) Client() *api.Client { return a.client }

// Register registers a service instance for url with the given check
// (nil: none).
func (a *Agent) Register(t testing.TB, id, service, url string, tags []string, meta map[string]string, check *api.AgentServiceCheck) {
	t.Helper()
	rest := strings.TrimPrefix(url, "http://")
	hostport, path, _ := strings.Cut(rest, "/")
	host, portS, _ := strings.Cut(hostport, ":")
	port, _ := strconv.Atoi(portS)
	if meta == nil {
		meta = map[string]string{}
	}
	meta["metrics_path"] = "/" + path
	err := a.client.Agent().ServiceRegister(&api.AgentServiceRegistration{
		ID: id, Name: service, Address: host, Port: port, Tags: tags, Meta: meta, Check: check,
	})
	if err != nil {
		t.Fatalf("register %s: %v", id, err)
	}
}

// Deregister removes a service instance.
func (a *Agent) Deregister(t testing.TB, id string) {
	t.Helper()
	if err := a.client.Agent().ServiceDeregister(id); err != nil {
		t.Fatalf("deregister %s: %v", id, err)
	}
}

// HTTPCheck is a check against url every interval.
func HTTPCheck(url string, interval time.Duration) *api.AgentServiceCheck {
	return &api.AgentServiceCheck{HTTP: url, Method: http.MethodGet, Interval: interval.String(), Timeout: "1s"}
}
