package discovery

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/prometheus/common/model"
)

// DockerSwarmSDConfig is a job's dockerswarm_sd_configs entry: the nodes
// of a Swarm, read from a manager's Docker Engine API, as Prometheus's
// dockerswarm_sd with role nodes. Each node is scraped at its address and
// Port (9323: the engine's metrics-addr), tagged with its host name.
type DockerSwarmSDConfig struct {
	// Host is the Docker API of a manager: unix:///var/run/docker.sock,
	// or http://host:2375 (tcp:// is read as http://).
	Host string `yaml:"host"`
	// Role: only "nodes" (the engines themselves).
	Role            string         `yaml:"role"`
	Port            int            `yaml:"port"`
	RefreshInterval model.Duration `yaml:"refresh_interval"`
}

// DefaultSwarmRefresh is how often the nodes are read, as Prometheus's.
const DefaultSwarmRefresh = time.Minute

// DockerSwarm discovers a Swarm's nodes.
type DockerSwarm struct {
	job    string
	cfg    DockerSwarmSDConfig
	base   string // URL the API paths are appended to
	client *http.Client
	log    *slog.Logger
	statusKeeper
}

// NewDockerSwarm makes a Swarm node discoverer for job.
func NewDockerSwarm(job string, cfg DockerSwarmSDConfig, log *slog.Logger) (*DockerSwarm, error) {
	if cfg.Role == "" {
		cfg.Role = "nodes"
	}
	if cfg.Role != "nodes" {
		return nil, fmt.Errorf("dockerswarm_sd_configs: role %q: only nodes is supported (the engines and their metrics-addr)", cfg.Role)
	}
	if cfg.Port == 0 {
		cfg.Port = 9323
	}
	if cfg.Port < 0 || cfg.Port > 65535 {
		return nil, fmt.Errorf("dockerswarm_sd_configs: port %d: want 1..65535", cfg.Port)
	}
	if cfg.RefreshInterval <= 0 {
		cfg.RefreshInterval = model.Duration(DefaultSwarmRefresh)
	}
	u, err := url.Parse(cfg.Host)
	if err != nil || cfg.Host == "" {
		return nil, fmt.Errorf("dockerswarm_sd_configs: host %q: want unix:///var/run/docker.sock or http://host:2375", cfg.Host)
	}
	d := &DockerSwarm{job: job, cfg: cfg, log: log}
	tr := &http.Transport{MaxIdleConnsPerHost: 1, IdleConnTimeout: 90 * time.Second}
	switch u.Scheme {
	case "unix":
		path := u.Path
		tr.DialContext = func(ctx context.Context, _, _ string) (net.Conn, error) {
			return (&net.Dialer{}).DialContext(ctx, "unix", path)
		}
		d.base = "http://docker"
	case "tcp", "http":
		d.base = "http://" + u.Host
	case "https":
		d.base = "https://" + u.Host
	default:
		return nil, fmt.Errorf("dockerswarm_sd_configs: host %q: scheme must be unix, tcp, http or https", cfg.Host)
	}
	d.client = &http.Client{Transport: tr, Timeout: 30 * time.Second}
	return d, nil
}

// swarmNode is what the Docker Engine API's GET /nodes says of a node.
type swarmNode struct {
	ID          string `json:"ID"`
	Description struct {
		Hostname string `json:"Hostname"`
		Platform struct {
			OS           string `json:"OS"`
			Architecture string `json:"Architecture"`
		} `json:"Platform"`
		Engine struct {
			EngineVersion string `json:"EngineVersion"`
		} `json:"Engine"`
	} `json:"Description"`
	Spec struct {
		Role         string            `json:"Role"`
		Availability string            `json:"Availability"`
		Labels       map[string]string `json:"Labels"`
	} `json:"Spec"`
	Status struct {
		State string `json:"State"`
		Addr  string `json:"Addr"`
	} `json:"Status"`
	ManagerStatus *struct {
		Leader bool   `json:"Leader"`
		Addr   string `json:"Addr"`
	} `json:"ManagerStatus"`
}

// Run reads the nodes every refresh interval until ctx ends; on errors it
// keeps the last list.
func (d *DockerSwarm) Run(ctx context.Context, ch chan<- []Target) error {
	return poll(ctx, ch, time.Duration(d.cfg.RefreshInterval), d.read, &d.statusKeeper,
		d.log.With("host", redactedURL(d.cfg.Host)), "the Swarm's nodes")
}

func (d *DockerSwarm) read(ctx context.Context) ([]Target, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, d.base+"/nodes", nil)
	if err != nil {
		return nil, err
	}
	resp, err := d.client.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, 64<<20))
	if err != nil {
		return nil, err
	}
	if resp.StatusCode != http.StatusOK {
		// Docker answers {"message": "..."}; a worker says "This node is
		// not a swarm manager".
		var m struct {
			Message string `json:"message"`
		}
		_ = json.Unmarshal(body, &m)
		return nil, fmt.Errorf("GET /nodes answered %s: %s", resp.Status, m.Message)
	}
	var nodes []swarmNode
	if err := json.Unmarshal(body, &nodes); err != nil {
		return nil, fmt.Errorf("GET /nodes: not a node list: %w", err)
	}
	var out []Target
	for _, n := range nodes {
		if n.Status.Addr == "" || n.Status.Addr == "0.0.0.0" {
			continue // a node that has not reported its address
		}
		t, err := NewTarget("http://"+net.JoinHostPort(n.Status.Addr, strconv.Itoa(d.cfg.Port))+"/metrics", d.job, Tag{"node", n.Description.Hostname})
		if err != nil {
			continue
		}
		t.Meta = map[string]string{
			"__meta_dockerswarm_node_id":                    n.ID,
			"__meta_dockerswarm_node_hostname":              n.Description.Hostname,
			"__meta_dockerswarm_node_address":               n.Status.Addr,
			"__meta_dockerswarm_node_status":                n.Status.State,
			"__meta_dockerswarm_node_role":                  n.Spec.Role,
			"__meta_dockerswarm_node_availability":          n.Spec.Availability,
			"__meta_dockerswarm_node_platform_os":           n.Description.Platform.OS,
			"__meta_dockerswarm_node_platform_architecture": n.Description.Platform.Architecture,
			"__meta_dockerswarm_node_engine_version":        n.Description.Engine.EngineVersion,
			"__meta_dockerswarm_node_manager_leader":        strconv.FormatBool(n.ManagerStatus != nil && n.ManagerStatus.Leader),
		}
		for k, v := range n.Spec.Labels {
			t.Meta["__meta_dockerswarm_node_label_"+sanitizeLabel(k)] = v
		}
		out = append(out, t)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].URL < out[j].URL })
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
