package servertest

import (
	"fmt"
	"net/http"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/consul/api"
)

// Consul is a running consul agent -dev.
type Consul struct {
	Addr   string // host:port of the HTTP API
	Token  string // management token when ACLs are on
	dir    string
	ports  [4]int
	acl    bool
	proc   process
	client *api.Client
}

// ConsulOptions are the agent's.
type ConsulOptions struct {
	// ACL turns ACLs on with default deny; Token is then the management
	// token.
	ACL bool
	// HTTPPort, when set, is the port of the HTTP API (a client may be
	// started first, pointing at it).
	HTTPPort int
}

// StartConsul runs an agent until the test ends.
func StartConsul(t testing.TB, opts ConsulOptions) *Consul {
	t.Helper()
	a := &Consul{dir: t.TempDir(), acl: opts.ACL, proc: process{name: "consul"}}
	for i := range a.ports {
		a.ports[i] = FreePort(t)
	}
	if opts.HTTPPort != 0 {
		a.ports[0] = opts.HTTPPort
	}
	a.Addr = "127.0.0.1:" + strconv.Itoa(a.ports[0])
	if opts.ACL {
		a.Token = "3b1f2a8e-6d7c-4e21-9a55-0c3d8f1e2b47"
	}
	a.start(t)
	t.Cleanup(a.Stop)
	return a
}

func (a *Consul) start(t testing.TB) {
	t.Helper()
	bin := Binary(t, "consul")
	args := []string{"agent", "-dev", "-bind", "127.0.0.1", "-client", "127.0.0.1",
		"-http-port", strconv.Itoa(a.ports[0]), "-dns-port", "-1", "-grpc-port", "-1", "-grpc-tls-port", "-1",
		"-serf-lan-port", strconv.Itoa(a.ports[1]), "-serf-wan-port", strconv.Itoa(a.ports[2]),
		"-server-port", strconv.Itoa(a.ports[3]), "-log-level", "warn"}
	if a.acl {
		args = append(args, "-hcl", fmt.Sprintf(`acl { enabled = true default_policy = "deny" tokens { initial_management = %q agent = %q } }`, a.Token, a.Token))
	}
	cfg := api.DefaultNonPooledConfig()
	cfg.Address, cfg.Token = a.Addr, a.Token
	var err error
	if a.client, err = api.NewClient(cfg); err != nil {
		t.Fatal(err)
	}
	a.proc.start(t, bin, args, filepath.Join(a.dir, "consul.log"), 60*time.Second, func() error {
		leader, err := a.client.Status().Leader()
		if err != nil || leader == "" {
			return fmt.Errorf("no leader yet (%v)", err)
		}
		// The catalog answers once the node has registered itself.
		if nodes, _, err := a.client.Catalog().Nodes(nil); err != nil || len(nodes) == 0 {
			return fmt.Errorf("catalog not ready (%v)", err)
		}
		return nil
	})
}

// Stop ends the agent (idempotent). Dev agents keep no state.
func (a *Consul) Stop() { a.proc.stop() }

// Restart starts a fresh agent on the same ports.
func (a *Consul) Restart(t testing.TB) {
	t.Helper()
	a.Stop()
	a.start(t)
}

// Client returns an API client with the management token.
func (a *Consul) Client() *api.Client { return a.client }

// Register registers a service instance for url with the given check
// (nil: none).
func (a *Consul) Register(t testing.TB, id, service, url string, tags []string, meta map[string]string, check *api.AgentServiceCheck) {
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
func (a *Consul) Deregister(t testing.TB, id string) {
	t.Helper()
	if err := a.client.Agent().ServiceDeregister(id); err != nil {
		t.Fatalf("deregister %s: %v", id, err)
	}
}

// HTTPCheck is a check against url every interval.
func HTTPCheck(url string, interval time.Duration) *api.AgentServiceCheck {
	return &api.AgentServiceCheck{HTTP: url, Method: http.MethodGet, Interval: interval.String(), Timeout: "1s"}
}
