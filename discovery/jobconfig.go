package discovery

// ConsulJob is the consul: section of a job in the config file: which
// services of the Consul that ConsulConfig reaches become the job's
// targets.
type ConsulJob struct {
	Services []string          `yaml:"services"`
	Tag      *string           `yaml:"tag"`
	Health   string            `yaml:"health"`
	NodeMeta map[string]string `yaml:"node_meta"`
	MetaTags []string          `yaml:"meta_tags"`
	// Filter is a Consul filter expression on instances, as Prometheus
	// 3's consul_sd_configs filter.
	Filter string `yaml:"filter"`
}

func init() { RegisterConfig("consul", false, &ConsulJob{}) }

// Name implements Config.
func (*ConsulJob) Name() string { return "consul" }

// Validate implements Config: the selection through the connection the
// flags give.
func (j *ConsulJob) Validate(o DiscovererOptions) error {
	c := j.Apply(o.Consul)
	return c.Validate()
}

// NewDiscoverer implements Config.
func (j *ConsulJob) NewDiscoverer(o DiscovererOptions) (Discoverer, error) {
	return NewConsul(j.Apply(o.Consul), o.Logger)
}

// Selection is the ConsulJob that selects, through a connection, what c
// selects: Apply(c) of it is c.
func (c ConsulConfig) Selection() *ConsulJob {
	tag := c.Tag
	return &ConsulJob{Services: c.Services, Tag: &tag, Health: c.Health, NodeMeta: c.NodeMeta, MetaTags: c.MetaTags, Filter: c.Filter}
}

// Apply returns base (the connection: address, TLS, token) with the job's
// selection. Named services need not carry a tag unless one is given.
func (j *ConsulJob) Apply(base ConsulConfig) ConsulConfig {
	c := base
	c.Services = j.Services
	if j.Tag != nil {
		c.Tag = *j.Tag
	} else if len(c.Services) > 0 {
		c.Tag = ""
	}
	if j.Health != "" {
		c.Health = j.Health
	}
	c.NodeMeta = j.NodeMeta
	c.MetaTags = j.MetaTags
	if j.Filter != "" {
		c.Filter = j.Filter
	}
	return c
}
