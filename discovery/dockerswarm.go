package discovery

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"sort"
	"strconv"
	"strings"
	"time"

	promconfig "github.com/prometheus/common/config"
	"github.com/prometheus/common/model"
)

// DockerSwarmSDConfig is a job's dockerswarm_sd_configs entry, as
// Prometheus's: a Swarm read from a manager's Docker Engine API, with the
// same roles and __meta_dockerswarm_* labels.
//   - nodes: every node at its address and Port (9323, the engines'
//     metrics-addr), tagged node=<host name>; job is the job's name.
//   - tasks: every running task of every service at each of its network
//     addresses (the service's TCP ports there, else Port) and at its
//     node's address for ports published in host mode; job is the
//     service's name, node the task's node.
//   - services: every service at each of its virtual IPs and ports (needs
//     IPVS on the nodes); job is the service's name.
type DockerSwarmSDConfig struct {
	// Host is the Docker API of a manager: unix:///var/run/docker.sock,
	// or http://host:2375 (tcp:// is read as http://), https://host:2376
	// with TLSConfig.
	Host string `yaml:"host"`
	// Role: nodes (default), tasks or services.
	Role string `yaml:"role"`
	// Port is scraped where the API names no port: 9323 for nodes, 80
	// for tasks and services (as Prometheus).
	Port int `yaml:"port"`
	// Network keeps, for tasks and services, only the addresses on this
	// network (its name or ID), and leaves out ports published in host
	// mode at the node's address. Unset: every network but the ingress
	// network (the routing mesh's, whose addresses are not the task's).
	Network string `yaml:"network"`
	// Filters are passed to the API's list call (name, label, mode, ...),
	// as Prometheus's.
	Filters         []DockerFilter       `yaml:"filters"`
	RefreshInterval model.Duration       `yaml:"refresh_interval"`
	TLSConfig       promconfig.TLSConfig `yaml:"tls_config"`
}

// DockerFilter is one filter of the Docker API's list calls.
type DockerFilter struct {
	Name   string   `yaml:"name"`
	Values []string `yaml:"values"`
}

// DefaultSwarmRefresh is how often the Swarm is read, as Prometheus's.
const DefaultSwarmRefresh = time.Minute

const swarmLabel = model.MetaLabelPrefix + "dockerswarm_"

// DockerSwarm discovers a Swarm's nodes, tasks or services.
type DockerSwarm struct {
	job     string
	cfg     DockerSwarmSDConfig
	api     *dockerAPI
	filters string // the filters query parameter, JSON
	log     *slog.Logger
	// unaddressed are the nodes already logged as having no usable
	// address (said once, not at every refresh). Only Run's goroutine
	// touches it.
	unaddressed map[string]bool
	statusKeeper
}

func init() { RegisterConfig("dockerswarm_sd_configs", true, &DockerSwarmSDConfig{}) }

// Name implements Config.
func (*DockerSwarmSDConfig) Name() string { return "dockerswarm_sd" }

// Validate implements Config.
func (c *DockerSwarmSDConfig) Validate(DiscovererOptions) error {
	_, err := c.resolve()
	return err
}

// NewDiscoverer implements Config.
func (c *DockerSwarmSDConfig) NewDiscoverer(o DiscovererOptions) (Discoverer, error) {
	return NewDockerSwarm(o.Job, *c, o.Logger)
}

// resolve returns the discoverer of the config (defaults filled in, the
// filters query parameter, the API client), or what is wrong with it.
func (c DockerSwarmSDConfig) resolve() (*DockerSwarm, error) {
	cfg := c
	switch cfg.Role {
	case "":
		cfg.Role = "nodes"
	case "nodes", "tasks", "services":
	default:
		return nil, fmt.Errorf("role %q: want nodes, tasks or services", cfg.Role)
	}
	if cfg.Port == 0 {
		cfg.Port = 80
		if cfg.Role == "nodes" {
			cfg.Port = 9323
		}
	}
	if cfg.Port < 0 || cfg.Port > 65535 {
		return nil, fmt.Errorf("port %d: want 1..65535", cfg.Port)
	}
	if cfg.Network != "" && cfg.Role == "nodes" {
		return nil, fmt.Errorf("network %q: only for roles tasks and services (nodes are scraped at their own address)", cfg.Network)
	}
	if cfg.RefreshInterval <= 0 {
		cfg.RefreshInterval = model.Duration(DefaultSwarmRefresh)
	}
	api, err := newDockerAPI(cfg.Host, cfg.TLSConfig)
	if err != nil {
		return nil, err
	}
	filters := ""
	if len(cfg.Filters) > 0 {
		m := map[string][]string{}
		for _, f := range cfg.Filters {
			if f.Name == "" {
				return nil, errors.New("a filter has no name")
			}
			m[f.Name] = append(m[f.Name], f.Values...)
		}
		b, _ := json.Marshal(m)
		filters = string(b)
	}
	return &DockerSwarm{cfg: cfg, api: api, filters: filters}, nil
}

// NewDockerSwarm makes a Swarm discoverer for job.
func NewDockerSwarm(job string, c DockerSwarmSDConfig, log *slog.Logger) (*DockerSwarm, error) {
	d, err := c.resolve()
	if err != nil {
		return nil, err
	}
	d.job, d.log = job, log
	return d, nil
}

// Run reads the Swarm every refresh interval until ctx ends; on errors it
// keeps the last list.
func (d *DockerSwarm) Run(ctx context.Context, ch chan<- []Target) error {
	return poll(ctx, ch, time.Duration(d.cfg.RefreshInterval), d.read, &d.statusKeeper,
		d.log.With("host", redactedURL(d.cfg.Host), "role", d.cfg.Role), "the Swarm's "+d.cfg.Role)
}

func (d *DockerSwarm) read(ctx context.Context) ([]Target, error) {
	var out []Target
	var err error
	switch d.cfg.Role {
	case "nodes":
		out, err = d.nodes(ctx)
	case "tasks":
		out, err = d.tasks(ctx)
	default:
		out, err = d.services(ctx)
	}
	if err != nil {
		return nil, err
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Key() < out[j].Key() })
	return out, nil
}

// The shapes of the Docker Engine API's answers (1.41, as 20.10 serves
// them), only the fields the labels need.
type (
	swarmNode struct {
		ID          string
		Description struct {
			Hostname string
			Platform struct{ OS, Architecture string }
			Engine   struct{ EngineVersion string }
		}
		Spec struct {
			Role, Availability string
			Labels             map[string]string
		}
		Status        struct{ State, Addr string }
		ManagerStatus *struct {
			Leader             bool
			Reachability, Addr string
		}
	}
	swarmPort struct {
		Name, Protocol, PublishMode string
		TargetPort, PublishedPort   int
	}
	swarmService struct {
		ID   string
		Spec struct {
			Name   string
			Labels map[string]string
			Mode   struct {
				Global     *struct{}
				Replicated *struct{}
			}
			TaskTemplate struct {
				ContainerSpec *struct{ Image, Hostname string }
			}
		}
		Endpoint struct {
			Ports      []swarmPort
			VirtualIPs []struct{ NetworkID, Addr string }
		}
		UpdateStatus *struct{ State string }
	}
	swarmTask struct {
		ID, ServiceID, NodeID string
		Slot                  int
		DesiredState          string
		Status                struct {
			State           string
			ContainerStatus *struct{ ContainerID string }
			PortStatus      struct{ Ports []swarmPort }
		}
		Spec struct {
			ContainerSpec *struct{ Labels map[string]string }
		}
		NetworksAttachments []struct {
			Network   struct{ ID string }
			Addresses []string
		}
	}
	swarmNetwork struct {
		ID, Name, Scope   string
		Internal, Ingress bool
		Labels            map[string]string
	}
)

// address is where a node is reached. A manager can report 0.0.0.0 as
// its node address (moby/moby#35437); its manager address is then the
// one to use, as the engine advertises it to the swarm.
func (n *swarmNode) address() string {
	if a := n.Status.Addr; a != "" && a != "0.0.0.0" {
		return a
	}
	if n.ManagerStatus != nil {
		if h, _, err := net.SplitHostPort(n.ManagerStatus.Addr); err == nil && h != "" && h != "0.0.0.0" {
			return h
		}
	}
	return ""
}

// labels are the node's __meta_dockerswarm_node_* labels.
func (n *swarmNode) labels() map[string]string {
	p := swarmLabel + "node_"
	m := map[string]string{
		p + "id":                    n.ID,
		p + "hostname":              n.Description.Hostname,
		p + "address":               n.address(),
		p + "status":                n.Status.State,
		p + "role":                  n.Spec.Role,
		p + "availability":          n.Spec.Availability,
		p + "platform_os":           n.Description.Platform.OS,
		p + "platform_architecture": n.Description.Platform.Architecture,
		p + "engine_version":        n.Description.Engine.EngineVersion,
	}
	if n.ManagerStatus != nil {
		m[p+"manager_leader"] = strconv.FormatBool(n.ManagerStatus.Leader)
		m[p+"manager_reachability"] = n.ManagerStatus.Reachability
		m[p+"manager_address"] = n.ManagerStatus.Addr
	} else {
		m[p+"manager_leader"] = "false"
	}
	for k, v := range n.Spec.Labels {
		m[p+"label_"+sanitizeLabel(k)] = v
	}
	return m
}

func (d *DockerSwarm) nodes(ctx context.Context) ([]Target, error) {
	var nodes []swarmNode
	if err := d.api.get(ctx, "/nodes", d.filters, &nodes); err != nil {
		return nil, err
	}
	var out []Target
	for _, n := range nodes {
		addr := n.address()
		if addr == "" {
			if d.unaddressed[n.ID] {
				continue
			}
			if d.unaddressed == nil {
				d.unaddressed = map[string]bool{}
			}
			d.unaddressed[n.ID] = true
			d.log.Warn("a Swarm node reports no usable address (neither its own nor a manager's): not scraped", "node_id", n.ID, "hostname", n.Description.Hostname, "addr", n.Status.Addr)
			continue
		}
		t, err := NewTarget("http://"+net.JoinHostPort(addr, strconv.Itoa(d.cfg.Port))+"/metrics", d.job, Tag{"node", n.Description.Hostname})
		if err != nil {
			continue
		}
		t.Meta = n.labels()
		out = append(out, t)
	}
	return out, nil
}

// serviceLabels are a service's __meta_dockerswarm_service_* labels.
func serviceLabels(s *swarmService) map[string]string {
	p := swarmLabel + "service_"
	m := map[string]string{p + "id": s.ID, p + "name": s.Spec.Name}
	switch {
	case s.Spec.Mode.Global != nil:
		m[p+"mode"] = "global"
	case s.Spec.Mode.Replicated != nil:
		m[p+"mode"] = "replicated"
	}
	if c := s.Spec.TaskTemplate.ContainerSpec; c != nil {
		m[p+"task_container_hostname"] = c.Hostname
		m[p+"task_container_image"] = c.Image
	}
	if s.UpdateStatus != nil {
		m[p+"updating_status"] = s.UpdateStatus.State
	}
	for k, v := range s.Spec.Labels {
		m[p+"label_"+sanitizeLabel(k)] = v
	}
	return m
}

func (d *DockerSwarm) networks(ctx context.Context) (map[string]swarmNetwork, map[string]map[string]string, error) {
	var nets []swarmNetwork
	if err := d.api.get(ctx, "/networks", "", &nets); err != nil {
		return nil, nil, err
	}
	byID := make(map[string]swarmNetwork, len(nets))
	labels := make(map[string]map[string]string, len(nets))
	p := swarmLabel + "network_"
	for _, n := range nets {
		byID[n.ID] = n
		m := map[string]string{
			p + "id": n.ID, p + "name": n.Name, p + "scope": n.Scope,
			p + "internal": strconv.FormatBool(n.Internal), p + "ingress": strconv.FormatBool(n.Ingress),
		}
		for k, v := range n.Labels {
			m[p+"label_"+sanitizeLabel(k)] = v
		}
		labels[n.ID] = m
	}
	return byID, labels, nil
}

// wanted reports whether addresses on network n are scraped.
func (d *DockerSwarm) wanted(n swarmNetwork, id string) bool {
	if d.cfg.Network != "" {
		return d.cfg.Network == id || d.cfg.Network == n.Name
	}
	return !n.Ingress
}

func (d *DockerSwarm) target(host string, port int, job string, meta []map[string]string, tags ...Tag) (Target, bool) {
	t, err := NewTarget("http://"+net.JoinHostPort(host, strconv.Itoa(port))+"/metrics", job, tags...)
	if err != nil {
		return t, false
	}
	t.Meta = map[string]string{}
	for _, m := range meta {
		for k, v := range m {
			t.Meta[k] = v
		}
	}
	return t, true
}

// portTargets are the targets at host: one per TCP port of ports, at its
// target port with portLabels' labels, or one at the configured port when
// there is none.
func (d *DockerSwarm) portTargets(host string, ports []swarmPort, job string, meta []map[string]string, portLabels func(swarmPort) map[string]string, tags ...Tag) []Target {
	var out []Target
	for _, p := range ports {
		if p.Protocol != "tcp" {
			continue
		}
		if t, ok := d.target(host, p.TargetPort, job, append(meta, portLabels(p)), tags...); ok {
			out = append(out, t)
		}
	}
	if len(out) == 0 {
		if t, ok := d.target(host, d.cfg.Port, job, meta, tags...); ok {
			out = append(out, t)
		}
	}
	return out
}

func (d *DockerSwarm) services(ctx context.Context) ([]Target, error) {
	var svcs []swarmService
	if err := d.api.get(ctx, "/services", d.filters, &svcs); err != nil {
		return nil, err
	}
	nets, netLabels, err := d.networks(ctx)
	if err != nil {
		return nil, err
	}
	var out []Target
	for i := range svcs {
		s := &svcs[i]
		common := serviceLabels(s)
		for _, vip := range s.Endpoint.VirtualIPs {
			if !d.wanted(nets[vip.NetworkID], vip.NetworkID) {
				continue
			}
			ip, _, err := net.ParseCIDR(vip.Addr)
			if err != nil {
				continue
			}
			// The virtual IP serves the target port; the published one
			// is on the nodes.
			out = append(out, d.portTargets(ip.String(), s.Endpoint.Ports, s.Spec.Name, []map[string]string{common, netLabels[vip.NetworkID]},
				func(p swarmPort) map[string]string {
					return map[string]string{
						swarmLabel + "service_endpoint_port_name":         p.Name,
						swarmLabel + "service_endpoint_port_publish_mode": p.PublishMode,
					}
				})...)
		}
	}
	return out, nil
}

func (d *DockerSwarm) tasks(ctx context.Context) ([]Target, error) {
	var tasks []swarmTask
	if err := d.api.get(ctx, "/tasks", d.filters, &tasks); err != nil {
		return nil, err
	}
	var svcs []swarmService
	if err := d.api.get(ctx, "/services", "", &svcs); err != nil {
		return nil, err
	}
	services := make(map[string]*swarmService, len(svcs))
	for i := range svcs {
		services[svcs[i].ID] = &svcs[i]
	}
	var nodes []swarmNode
	if err := d.api.get(ctx, "/nodes", "", &nodes); err != nil {
		return nil, err
	}
	byNode := make(map[string]*swarmNode, len(nodes))
	for i := range nodes {
		byNode[nodes[i].ID] = &nodes[i]
	}
	nets, netLabels, err := d.networks(ctx)
	if err != nil {
		return nil, err
	}
	var out []Target
	for _, tk := range tasks {
		// A task asked to stop (replaced, scaled away, on a drained
		// node) is no target: its address may already be another's.
		if tk.DesiredState != "running" {
			continue
		}
		s := services[tk.ServiceID]
		if s == nil {
			continue
		}
		p := swarmLabel + "task_"
		common := map[string]string{
			p + "id": tk.ID, p + "desired_state": tk.DesiredState, p + "state": tk.Status.State,
			p + "slot": strconv.Itoa(tk.Slot),
		}
		if tk.Status.ContainerStatus != nil {
			common[p+"container_id"] = tk.Status.ContainerStatus.ContainerID
		}
		if c := tk.Spec.ContainerSpec; c != nil {
			for k, v := range c.Labels {
				common[swarmLabel+"container_label_"+sanitizeLabel(k)] = v
			}
		}
		svc := serviceLabels(s)
		var nodeLabels map[string]string
		hostname, nodeAddr := "", ""
		if n := byNode[tk.NodeID]; n != nil {
			nodeLabels, hostname, nodeAddr = n.labels(), n.Description.Hostname, n.address()
		}
		tags := []Tag{{"node", hostname}}
		for _, pt := range tk.Status.PortStatus.Ports {
			// Ports published in host mode, at the node's address; not
			// when one network is asked for (they are on none).
			if pt.Protocol != "tcp" || nodeAddr == "" || d.cfg.Network != "" {
				continue
			}
			mode := map[string]string{p + "port_publish_mode": pt.PublishMode}
			if t, ok := d.target(nodeAddr, pt.PublishedPort, s.Spec.Name, []map[string]string{common, svc, nodeLabels, mode}, tags...); ok {
				out = append(out, t)
			}
		}
		for _, att := range tk.NetworksAttachments {
			if !d.wanted(nets[att.Network.ID], att.Network.ID) {
				continue
			}
			for _, a := range att.Addresses {
				ip, _, err := net.ParseCIDR(a)
				if err != nil {
					continue
				}
				// The task listens on the target port at its own address;
				// the published port exists on the nodes.
				out = append(out, d.portTargets(ip.String(), s.Endpoint.Ports, s.Spec.Name, []map[string]string{common, svc, nodeLabels, netLabels[att.Network.ID]},
					func(pt swarmPort) map[string]string {
						return map[string]string{p + "port_publish_mode": pt.PublishMode}
					}, tags...)...)
			}
		}
	}
	return out, nil
}

// sanitizeLabel makes a Docker label key a label name, as Prometheus does.
func sanitizeLabel(k string) string {
	return strings.Map(func(r rune) rune {
		if r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '_' {
			return r
		}
		return '_'
	}, k)
}
