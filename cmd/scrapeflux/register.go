package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/signal"
	"strconv"
	"syscall"
	"time"

	"github.com/hashicorp/consul/api"
	"github.com/spf13/cobra"

	"github.com/scrapeflux/scrapeflux/discovery"
	"github.com/scrapeflux/scrapeflux/discovery/backoff"
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
	check           string
	keep            bool
	keepInterval    time.Duration
	force           bool
	docker          string
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

With --keep it stays running and keeps the registration alive: when the
local agent restarts or Consul removed the service (its check failed for
longer than --deregister-after), it registers it again within
--keep-interval; on SIGTERM or SIGINT it deregisters and exits. Run it as
a small global service on every node of a swarm, or as a systemd unit.

The health check is a TCP connect to the endpoint by default: Consul then
knows the engine is listening without fetching its whole /metrics every
--check-interval (an HTTP check doubles the engine's /metrics load when
scrapeflux scrapes at the same interval). A target that answers but fails
is still seen: scrapeflux writes up=0 for it. --check http restores the
full GET.

With --docker it asks the local engine (its API socket) who it is: the
address it advertises to its swarm becomes --address (where the other
nodes reach it), and its host name the service's "node" meta, which
scrapeflux writes as the node tag. That is what a global service of a
swarm stack needs, whose containers know neither (see
configs/swarm/stack.yml).

The same can be done with Consul's own service definition: see
configs/consul/docker-engine.json.`,
		Example: `  scrapeflux register --address 10.0.0.11            # Docker engine with metrics-addr 10.0.0.11:9323
  scrapeflux register --address 10.0.0.11 --keep     # stay registered until stopped
  scrapeflux register --address 10.0.0.11 --deregister
  scrapeflux register --docker unix:///var/run/docker.sock --keep   # address and node from the engine`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			ctx := cmd.Context()
			if ctx == nil {
				ctx = context.Background()
			}
			ctx, stop := signal.NotifyContext(ctx, syscall.SIGINT, syscall.SIGTERM)
			defer stop()
			return runRegister(ctx, o)
		},
	}
	f := cmd.Flags()
	o.consulFlags.register(f)
	f.StringVar(&o.service, "service", "docker-engine", "Consul service name (becomes the job tag)")
	f.StringVar(&o.id, "id", "", "service ID (default: <service>-<address>-<port>)")
	f.StringVar(&o.address, "address", os.Getenv("SCRAPEFLUX_NODE_ADDRESS"), "address scrapeflux reaches the endpoint at (env SCRAPEFLUX_NODE_ADDRESS; default: the node's address in Consul)")
	f.StringVar(&o.docker, "docker", os.Getenv("SCRAPEFLUX_DOCKER_HOST"), "Docker API of the local engine (unix:///var/run/docker.sock; env SCRAPEFLUX_DOCKER_HOST): take --address from the node address it advertises to its swarm, and the node meta from its host name")
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
	f.StringVar(&o.check, "check", "tcp", "health check: tcp (connect to the endpoint), http (GET the whole endpoint) or none")
	f.BoolVar(&o.keep, "keep", false, "keep running: register again whenever the registration is lost, deregister on SIGTERM")
	f.DurationVar(&o.keepInterval, "keep-interval", 10*time.Second, "with --keep: how often the registration is checked")
	f.BoolVar(&o.force, "force", false, "with --deregister: remove the registration even while a running --keep holds it (which then registers it again)")
	return cmd
}

// fromDocker fills --address and the node meta from the local engine,
// waiting for it while it starts (--keep) and naming what to fix when it
// is in no swarm.
func (o *registerOptions) fromDocker(ctx context.Context, meta map[string]string) (map[string]string, error) {
	var e discovery.DockerEngine
	wait := time.Second
	for {
		dctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		var err error
		e, err = discovery.ReadDockerEngine(dctx, o.docker)
		cancel()
		if err == nil {
			break
		}
		if !o.keep || ctx.Err() != nil {
			return nil, fmt.Errorf("--docker: %w (is the engine's socket mounted, and readable by this user?)", err)
		}
		t := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			t.Stop()
			return nil, ctx.Err()
		case <-t.C:
		}
	}
	if o.address == "" {
		if e.NodeAddr == "" {
			return nil, fmt.Errorf("--docker: the engine %s is in no swarm, so it advertises no node address: give --address", e.Name)
		}
		o.address = e.NodeAddr
	}
	if meta == nil {
		meta = map[string]string{}
	}
	if _, ok := meta[discovery.NodeMeta]; !ok && e.Name != "" {
		meta[discovery.NodeMeta] = e.Name
	}
	return meta, nil
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
	if o.docker != "" {
		if meta, err = o.fromDocker(ctx, meta); err != nil {
			return err
		}
	}
	if o.check != "tcp" && o.check != "http" && o.check != "none" {
		return fmt.Errorf("--check %q: want tcp, http or none", o.check)
	}
	if o.keep && o.keepInterval <= 0 {
		return fmt.Errorf("--keep-interval %s: want a positive duration", o.keepInterval)
	}
	cc := discovery.DefaultConsulConfig()
	if err := o.consulFlags.apply(&cc); err != nil {
		return err
	}
	cc.Fetchers = 1
	client, err := discovery.NewAPIClient(cc)
	if err != nil {
		return err
	}
	agent := client.Agent()
	id := o.serviceID()
	if o.deregister {
		if holder := keeperOf(agent, id); holder != "" && !o.force {
			return fmt.Errorf("%s is kept registered by a running `scrapeflux register --keep` (%s), which would register it again at once: stop that process (SIGTERM deregisters it), or pass --force", id, holder)
		}
		if err := agent.ServiceDeregister(id); err != nil {
			var se api.StatusError
			if errors.As(err, &se) && se.Code == http.StatusNotFound {
				fmt.Fprintf(o.stdout, "%s was not registered: nothing to remove\n", id)
				return nil
			}
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
	if o.keep {
		host, _ := os.Hostname()
		meta[keeperMeta] = fmt.Sprintf("%s pid %d", host, os.Getpid())
	}
	checkHost := o.checkAddress
	if checkHost == "" {
		checkHost = o.address
	}
	if checkHost == "" {
		checkHost = "127.0.0.1"
	}
	var check *api.AgentServiceCheck
	endpoint := net.JoinHostPort(checkHost, strconv.Itoa(o.port))
	switch o.check {
	case "tcp":
		check = &api.AgentServiceCheck{Name: o.service + " metrics port", TCP: endpoint}
	case "http":
		check = &api.AgentServiceCheck{Name: o.service + " metrics endpoint", HTTP: o.scheme + "://" + endpoint + o.path, Method: "GET"}
	}
	if check != nil {
		check.Interval = o.checkInterval.String()
		check.Timeout = o.checkTimeout.String()
		if o.deregisterAfter > 0 {
			check.DeregisterCriticalServiceAfter = o.deregisterAfter.String()
		}
	}
	reg := &api.AgentServiceRegistration{
		ID: id, Name: o.service, Address: o.address, Port: o.port, Tags: o.tags, Meta: meta, Check: check,
	}
	if err := agent.ServiceRegister(reg); err != nil {
		if !o.keep {
			return fmt.Errorf("cannot register %s: %w", id, err)
		}
		// A node's boot order may start this before its agent: wait.
		if !waitToRegister(ctx, o, agent, reg, err) {
			return nil // stopped before the agent came up: nothing to undo
		}
	}
	how := "without a check"
	if check != nil {
		how = fmt.Sprintf("checked (%s) at %s every %s", o.check, endpoint, check.Interval)
	}
	fmt.Fprintf(o.stdout, "registered %s (%s, %s)\n", id, o.service, how)
	if !o.keep {
		return nil
	}
	return keepRegistered(ctx, o, agent, reg)
}

// keeperMeta is the service meta key naming the `register --keep` process
// that holds a registration: "<host> pid <pid>".
const keeperMeta = "scrapeflux_keep"

// keeperOf names the running --keep process holding id on this host, or
// "" when none does (none recorded, another host, or the process is gone).
func keeperOf(agent *api.Agent, id string) string {
	svc, _, err := agent.Service(id, nil)
	if err != nil || svc == nil {
		return ""
	}
	var host string
	var pid int
	if _, err := fmt.Sscanf(svc.Meta[keeperMeta], "%s pid %d", &host, &pid); err != nil || pid <= 0 {
		return ""
	}
	if me, _ := os.Hostname(); me != host || syscall.Kill(pid, 0) != nil {
		return ""
	}
	return svc.Meta[keeperMeta]
}

// waitToRegister tries to register with capped backoff until it works or
// ctx ends, saying once that it waits. It reports whether it registered.
func waitToRegister(ctx context.Context, o *registerOptions, agent *api.Agent, reg *api.AgentServiceRegistration, first error) bool {
	log, err := o.logger()
	if err != nil {
		log = slog.New(slog.DiscardHandler)
	}
	log.Warn("the local Consul agent does not take the registration yet (it may still be starting); trying again", "service_id", reg.ID, "err", first)
	for attempt := 1; ; attempt++ {
		if !backoff.Sleep(ctx, backoff.Delay(attempt, time.Second, max(o.keepInterval, time.Second))) {
			return false
		}
		if err := agent.ServiceRegisterOpts(reg, api.ServiceRegisterOpts{}.WithContext(ctx)); err == nil {
			log.Info("registered once the local Consul agent was up", "service_id", reg.ID, "attempts", attempt+1)
			fmt.Fprintf(o.stdout, "registered %s (%s)\n", reg.ID, reg.Name)
			return true
		}
	}
}

// keepRegistered re-registers reg whenever the local agent no longer has
// it, until ctx ends; then it deregisters.
func keepRegistered(ctx context.Context, o *registerOptions, agent *api.Agent, reg *api.AgentServiceRegistration) error {
	log, err := o.logger()
	if err != nil {
		return err
	}
	log = log.With("service_id", reg.ID)
	tick := time.NewTicker(o.keepInterval)
	defer tick.Stop()
	failing := ""
	for {
		select {
		case <-ctx.Done():
			dctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			if err := agent.ServiceDeregisterOpts(reg.ID, (&api.QueryOptions{}).WithContext(dctx)); err != nil {
				return fmt.Errorf("cannot deregister %s on the way out: %w", reg.ID, err)
			}
			fmt.Fprintf(o.stdout, "deregistered %s\n", reg.ID)
			return nil
		case <-tick.C:
		}
		q := (&api.QueryOptions{}).WithContext(ctx)
		svc, _, err := agent.Service(reg.ID, q)
		if err == nil && svc != nil {
			if failing != "" {
				log.Info("local Consul agent reachable again, registration in place")
				failing = ""
			}
			continue
		}
		if ctx.Err() != nil {
			continue
		}
		var se api.StatusError
		if err != nil && !(errors.As(err, &se) && se.Code == 404) {
			if err.Error() != failing {
				log.Warn("cannot reach the local Consul agent; will register again when it is back", "err", err)
				failing = err.Error()
			}
			continue
		}
		if err := agent.ServiceRegisterOpts(reg, api.ServiceRegisterOpts{}.WithContext(ctx)); err != nil {
			if err.Error() != failing {
				log.Warn("registration lost and cannot register again yet", "err", err)
				failing = err.Error()
			}
			continue
		}
		failing = ""
		log.Info("registration was lost (agent restarted or Consul removed it); registered again")
	}
}
