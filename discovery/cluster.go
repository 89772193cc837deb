package discovery

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"slices"
	"strings"
	"time"

	"github.com/hashicorp/consul/api"
)

// ClusterConfig says how a replica joins its cluster in Consul.
type ClusterConfig struct {
	// Name of the cluster: the Consul tag every replica's registration
	// carries.
	Name string
	// Service is the Consul service name replicas register under.
	Service string
	// ID is this replica's service ID, unique in the cluster.
	ID string
	// Address and Port are registered with the service (this replica's
	// web listener), for operators; empty and 0 are fine.
	Address string
	Port    int
	// TTL of the replica's check: the replica refreshes it every TTL/3;
	// a replica that dies is out of the member list TTL after its last
	// refresh.
	TTL time.Duration
	// DeregisterAfter removes a replica Consul has seen critical this long.
	DeregisterAfter time.Duration
}

// Defaults of ClusterConfig.
const (
	DefaultClusterService = "scrapeflux"
	DefaultClusterTTL     = 5 * time.Second
)

// Validate rejects a config that cannot work, naming the field.
func (c *ClusterConfig) Validate() error {
	var errs []error
	if c.Name == "" {
		errs = append(errs, errors.New("cluster name must be set"))
	}
	if c.Service == "" {
		errs = append(errs, errors.New("cluster service must be set"))
	}
	if c.ID == "" {
		errs = append(errs, errors.New("cluster ID must be set"))
	}
	if c.TTL < time.Second {
		errs = append(errs, fmt.Errorf("cluster TTL %s: want at least 1s", c.TTL))
	}
	if c.DeregisterAfter < time.Minute {
		errs = append(errs, fmt.Errorf("cluster deregister-after %s: want at least 1m (Consul's minimum)", c.DeregisterAfter))
	}
	return errors.Join(errs...)
}

// Cluster makes this process a member of a cluster of replicas in Consul:
// it registers a service instance with a TTL check it keeps passing,
// watches the passing instances with the same bounded blocking queries as
// the target discovery (one long-poll, stale reads), and deregisters on a
// clean shutdown. Consul does the membership; there is no protocol of ours.
type Cluster struct {
	cfg    ClusterConfig
	consul *Consul
	log    *slog.Logger
}

// NewCluster makes a cluster member talking to Consul as cc says (address,
// TLS, token, datacenter).
func NewCluster(cfg ClusterConfig, cc ConsulConfig, log *slog.Logger) (*Cluster, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	cc.NodeMeta = nil // members are found wherever they run
	c, err := NewConsul(cc, log)
	if err != nil {
		return nil, err
	}
	return &Cluster{cfg: cfg, consul: c, log: log}, nil
}

func (c *Cluster) checkID() string { return "service:" + c.cfg.ID }

func (c *Cluster) register(ctx context.Context) error {
	addr := c.cfg.Address
	if ip := net.ParseIP(addr); ip != nil && ip.IsUnspecified() {
		// A listener on every interface (0.0.0.0, as in a container):
		// Consul refuses that address ("Invalid service address"), and
		// the replica would never join. Empty lets Consul show the node's.
		addr = ""
	}
	reg := &api.AgentServiceRegistration{
		ID:      c.cfg.ID,
		Name:    c.cfg.Service,
		Tags:    []string{c.cfg.Name},
		Address: addr,
		Port:    c.cfg.Port,
		Meta:    map[string]string{"scrapeflux_cluster": c.cfg.Name},
		Check: &api.AgentServiceCheck{
			CheckID:                        c.checkID(),
			Name:                           "scrapeflux replica alive",
			TTL:                            c.cfg.TTL.String(),
			Status:                         api.HealthPassing,
			DeregisterCriticalServiceAfter: c.cfg.DeregisterAfter.String(),
		},
	}
	opts := api.ServiceRegisterOpts{ReplaceExistingChecks: true}.WithContext(ctx)
	if err := c.consul.client.Agent().ServiceRegisterOpts(reg, opts); err != nil {
		return fmt.Errorf("cannot register replica %s in Consul: %w", c.cfg.ID, err)
	}
	return nil
}

// Run joins the cluster and calls set with the sorted IDs of the passing
// members whenever they change, until ctx is cancelled; then it leaves the
// cluster. While Consul is unreachable the last member list stands. It
// returns nil on cancellation.
func (c *Cluster) Run(ctx context.Context, set func([]string)) error {
	done := make(chan struct{})
	go func() {
		defer close(done)
		c.keepAlive(ctx)
	}()
	defer func() {
		<-done
		dctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		q := (&api.QueryOptions{}).WithContext(dctx)
		if err := c.consul.client.Agent().ServiceDeregisterOpts(c.cfg.ID, q); err != nil {
			c.log.Warn("cannot leave the cluster; Consul will drop this replica when its check expires", "id", c.cfg.ID, "err", err)
		} else {
			c.log.Info("left the cluster", "cluster", c.cfg.Name, "id", c.cfg.ID)
		}
	}()
	var last []string
	return c.consul.watch(ctx, queryMembers, nil, func(q *api.QueryOptions) (uint64, error) {
		entries, meta, err := c.consul.client.Health().Service(c.cfg.Service, c.cfg.Name, true, q)
		if err != nil {
			return 0, err
		}
		members := make([]string, 0, len(entries))
		for _, e := range entries {
			members = append(members, e.Service.ID)
		}
		slices.Sort(members)
		members = slices.Compact(members)
		if !slices.Equal(members, last) {
			c.log.Info("cluster members changed", "cluster", c.cfg.Name, "members", strings.Join(members, ","),
				"self_listed", slices.Contains(members, c.cfg.ID))
			last = members
			set(members)
		}
		return meta.LastIndex, nil
	})
}

// keepAlive registers the replica and keeps its TTL check passing. When
// the local agent has lost the registration (it restarted, or reaped the
// replica after a long pause), it registers again.
func (c *Cluster) keepAlive(ctx context.Context) {
	registered := false
	failing := ""
	tick := time.NewTicker(c.cfg.TTL / 3)
	defer tick.Stop()
	for {
		var err error
		if !registered {
			if err = c.register(ctx); err == nil {
				registered = true
				c.log.Info("joined the cluster", "cluster", c.cfg.Name, "id", c.cfg.ID, "service", c.cfg.Service)
			}
		} else {
			q := (&api.QueryOptions{}).WithContext(ctx)
			err = c.consul.client.Agent().UpdateTTLOpts(c.checkID(), "scraping", api.HealthPassing, q)
			if err != nil {
				// Registered again on the next tick: an agent that lost
				// the check answers "does not have associated TTL" or 404.
				registered = false
			}
		}
		switch {
		case ctx.Err() != nil:
			return
		case err != nil && err.Error() != failing:
			c.log.Warn("cannot keep this replica's check passing in Consul; it keeps scraping its share", "err", err)
			failing = err.Error()
		case err == nil && failing != "":
			c.log.Info("replica check passing again", "id", c.cfg.ID)
			failing = ""
		}
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
	}
}
