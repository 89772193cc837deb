package main

import (
	"context"
	"fmt"
	"net"
	"strconv"
	"time"

	"github.com/hashicorp/consul/api"
	"github.com/spf13/cobra"

	"github.com/scrapeflux/scrapeflux/discovery"
)

type registerOptions struct {
	*globalOptions
	consulFlags
	service         string
	id              string
	address         string
	checkAddress    string
	port            int
	path            string
	scheme          string
	tags            []string
	meta            []string
	checkInterval   time.Duration
	checkTimeout    time.Duration
	deregisterAfter time.Duration
	deregister      bool
}

func newCmdRegister(g *globalOptions) *cobra.Command {
	o := &registerOptions{globalOptions: g}
	cmd := &cobra.Command{
		Use:   "register",
		Short: "Register this node's metrics endpoint in the local Consul agent",
		Long: `register runs on a node: it registers the local Docker engine's metrics
endpoint (or any /metrics endpoint) as a service in the local Consul agent,
with an HTTP health check against that endpoint, so that a central
scrapeflux run --consul finds it. Registering again updates the entry (it is
idempotent); --deregister removes it.

The same can be done with Consul's own service definition: see
configs/consul/docker-engine.json.`,
		Example: `  scrapeflux register --address 10.0.0.11            # Docker engine with metrics-addr 10.0.0.11:9323
  scrapeflux register --address 10.0.0.11 --deregister`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			return runRegister(cmd.Context(), o)
		},
	}
	f := cmd.Flags()
	o.consulFlags.register(f)
	f.StringVar(&o.service, "service", "docker-engine", "Consul service name (becomes the job tag)")
	f.StringVar(&o.id, "id", "", "service ID (default: <service>-<address>-<port>)")
	f.StringVar(&o.address, "address", "", "address scrapeflux reaches the endpoint at (default: the node's address in Consul)")
	f.StringVar(&o.checkAddress, "check-address", "", "address the local agent checks (default: --address, else 127.0.0.1)")
	f.IntVar(&o.port, "port", 9323, "port of the metrics endpoint")
	f.StringVar(&o.path, "path", "/metrics", "path of the metrics endpoint")
	f.StringVar(&o.scheme, "scheme", "http", "scheme of the metrics endpoint: http or https")
	f.StringArrayVar(&o.tags, "tag", []string{"prometheus"}, "service tag (repeatable)")
	f.StringArrayVar(&o.meta, "meta", nil, "service meta key=value (repeatable)")
	f.DurationVar(&o.checkInterval, "check-interval", 10*time.Second, "interval of the HTTP health check")
	f.DurationVar(&o.checkTimeout, "check-timeout", 5*time.Second, "timeout of the HTTP health check")
	f.DurationVar(&o.deregisterAfter, "deregister-after", 10*time.Minute, "Consul removes the service after its check has failed this long (0: never)")
	f.BoolVar(&o.deregister, "deregister", false, "remove the registration instead")
	return cmd
}

func (o *registerOptions) serviceID() string {
	if o.id != "" {
		return o.id
	}
	addr := o.address
	if addr == "" {
		addr = "node"
	}
	return fmt.Sprintf("%s-%s-%d", o.service, addr, o.port)
}

func runRegister(ctx context.Context, o *registerOptions) error {
	if o.service == "" {
		return fmt.Errorf("--service must not be empty")
	}
	if o.port <= 0 || o.port > 65535 {
		return fmt.Errorf("--port %d: want 1..65535", o.port)
	}
	if o.scheme != "http" && o.scheme != "https" {
		return fmt.Errorf("--scheme %q: want http or https", o.scheme)
	}
	meta, err := parseKV("--meta", o.meta)
	if err != nil {
		return err
	}
	cc := discovery.DefaultConsulConfig()
	if err := o.consulFlags.apply(&cc); err != nil {
		return err
	}
	cfg := api.DefaultNonPooledConfig()
	cfg.Address, cfg.Scheme, cfg.Token, cfg.Datacenter = cc.Addr, cc.Scheme, cc.Token, cc.Datacenter
	cfg.TLSConfig = api.TLSConfig{CAFile: cc.CAFile, CertFile: cc.CertFile, KeyFile: cc.KeyFile}
	client, err := api.NewClient(cfg)
	if err != nil {
		return fmt.Errorf("cannot create Consul client: %w", err)
	}
	agent := client.Agent()
	id := o.serviceID()
	if o.deregister {
		if err := agent.ServiceDeregister(id); err != nil {
			return fmt.Errorf("cannot deregister %s: %w", id, err)
		}
		fmt.Fprintf(o.stdout, "deregistered %s\n", id)
		return nil
	}
	if meta == nil {
		meta = map[string]string{}
	}
	meta["metrics_path"] = o.path
	meta["metrics_scheme"] = o.scheme
	checkHost := o.checkAddress
	if checkHost == "" {
		checkHost = o.address
	}
	if checkHost == "" {
		checkHost = "127.0.0.1"
	}
	check := &api.AgentServiceCheck{
		Name:     o.service + " metrics endpoint",
		HTTP:     o.scheme + "://" + net.JoinHostPort(checkHost, strconv.Itoa(o.port)) + o.path,
		Method:   "GET",
		Interval: o.checkInterval.String(),
		Timeout:  o.checkTimeout.String(),
	}
	if o.deregisterAfter > 0 {
		check.DeregisterCriticalServiceAfter = o.deregisterAfter.String()
	}
	reg := &api.AgentServiceRegistration{
		ID: id, Name: o.service, Address: o.address, Port: o.port, Tags: o.tags, Meta: meta, Check: check,
	}
	if err := agent.ServiceRegister(reg); err != nil {
		return fmt.Errorf("cannot register %s: %w", id, err)
	}
	fmt.Fprintf(o.stdout, "registered %s (%s, checked at %s every %s)\n", id, o.service, check.HTTP, check.Interval)
	return nil
}
