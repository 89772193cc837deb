// This file is long on purpose: the run command's flags, their validation
// and the wiring of the stages, in the order a reader follows them.

package main

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"net"
	"os"
	"os/signal"
	"sort"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/prometheus/common/model"
	"github.com/spf13/cobra"
	"github.com/spf13/pflag"
	"golang.org/x/sync/errgroup"

	"github.com/scrapeflux/scrapeflux/discovery"
	"github.com/scrapeflux/scrapeflux/scrape"
	"github.com/scrapeflux/scrapeflux/sink"
	"github.com/scrapeflux/scrapeflux/sink/queue"
	"github.com/scrapeflux/scrapeflux/sink/schema"
)

type runOptions struct {
	*globalOptions
	targets []string
	job     string
	listen  string
	pprof   bool

	scrape    scrape.Config
	bodyLimit byteSize
	layout    string
	sink      sink.Config
	// schemaLimits: the InfluxDB 3 schema guard's limits set by flags.
	schemaLimits schema.Limits
	queueBytes   byteSize
	memBytes     byteSize
	queueSync    string
	fileSD       []string
	httpSD       []string
	swarmSD      string
	swarmPort    int
	swarmRole    string
	swarmNet     string
	swarmEvery   time.Duration
	influxAPI    string
	influx       sink.InfluxConfig
	tokenFile    string

	configFile string

	consulFlags
	consul         discovery.ConsulConfig
	consulServices []string
	consulMeta     []string
	consulOn       bool
	overrides      func(*scrape.Config)

	cluster     discovery.ClusterConfig
	replication int
	readyWrite  time.Duration
	// consulOnly: flags given that only mean something with --consul.
	consulOnly []string

	webConfig    string
	enableReload bool
	tags         []string
	targetAuth   targetAuthFlags
}

func newCmdRun(g *globalOptions) *cobra.Command {
	o := &runOptions{globalOptions: g, sink: sink.DefaultConfig(), consul: discovery.DefaultConsulConfig()}
	o.consul.Metrics = discovery.NewMetrics() // every Consul connection counts there
	o.sink.QueueDir = defaultQueueDir()
	o.cluster = discovery.ClusterConfig{Service: discovery.DefaultClusterService, TTL: discovery.DefaultClusterTTL, DeregisterAfter: time.Minute}
	o.bodyLimit = scrape.DefaultBodyLimit
	o.queueBytes = byteSize(o.sink.MaxQueueBytes)
	o.memBytes = byteSize(o.sink.MaxMemoryBytes)
	cmd := &cobra.Command{
		Use:   "run",
		Short: "Scrape targets on a schedule and write to InfluxDB (the daemon)",
		Long: `run scrapes every target on its interval and writes the samples to InfluxDB.

Targets come from repeatable --target flags, from Consul (with --consul,
or any --consul-service, every passing instance of the services carrying
--consul-tag, or of the --consul-service services, is scraped, and the set
follows registrations live), from a Swarm manager's Docker API
(--docker-swarm), from Prometheus's file_sd and http_sd lists (--file-sd,
--http-sd), and from the jobs of a --config file. Each target is scraped once per
--interval at a fixed offset within the interval (spread by a hash of the
target, on a 100 ms grid), and every scrape also writes up, scrape_duration_seconds and
scrape_samples_scraped for its target. A failed scrape writes up=0 and none
of its samples. SIGINT or SIGTERM stops scraping and flushes what is batched
within --shutdown-timeout.

The InfluxDB answering at --influx-url is read from its /ping (1.x, 2.x
or 3.x) and written to with its own API (--influx-api overrides). For
InfluxDB 1.x give the database (or database/retention-policy) as
--influx-bucket, any --influx-org, and a token "user:password" only if
authentication is on.`,
		Example: `  scrapeflux run --target http://10.0.0.5:9323/metrics --target http://10.0.0.6:9323/metrics \
    --interval 15s --influx-url http://127.0.0.1:8086 --influx-bucket docker`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			o.overrides = func(c *scrape.Config) { o.override(c, cmd.Flags().Changed) }
			// Without --timeout, a short --interval shortens the timeout too.
			if !cmd.Flags().Changed("timeout") {
				o.scrape.Timeout = scrape.DefaultTimeoutFor(o.scrape.Interval)
			}
			for _, name := range []string{"consul-health", "consul-tag", "consul-node-meta", "consul-meta-tags", "consul-allow-stale", "consul-wait", "consul-filter"} {
				if cmd.Flags().Changed(name) {
					o.consulOnly = append(o.consulOnly, name)
				}
			}
			if o.configFile != "" {
				c, err := readClusterSection(o.configFile)
				if err != nil {
					return err
				}
				if c != nil {
					fl := cmd.Flags()
					if !fl.Changed("cluster") {
						o.cluster.Name = c.Name
					}
					if !fl.Changed("replication-factor") && c.ReplicationFactor != 0 {
						o.replication = c.ReplicationFactor
					}
					if !fl.Changed("cluster-service") && c.Service != "" {
						o.cluster.Service = c.Service
					}
					if !fl.Changed("cluster-ttl") && c.TTL != 0 {
						o.cluster.TTL = time.Duration(c.TTL)
					}
				}
			}
			// Named services need not carry the tag unless it is asked for.
			if len(o.consulServices) > 0 && !cmd.Flags().Changed("consul-tag") {
				o.consul.Tag = ""
			}
			return runRun(cmd.Context(), o)
		},
	}
	f := cmd.Flags()
	f.StringVar(&o.configFile, "config", "", "YAML file of jobs (targets, intervals, limits, relabeling); reloaded on SIGHUP or POST /-/reload")
	f.StringArrayVar(&o.targets, "target", nil, "URL of a /metrics endpoint to scrape (repeatable)")
	f.StringVar(&o.job, "job", "static", "job tag of the --target targets")
	f.DurationVar(&o.scrape.Interval, "interval", scrape.DefaultInterval, "time between two scrapes of a target")
	f.DurationVar(&o.scrape.Timeout, "timeout", 0, "timeout of one scrape, at most --interval (default 10s, or --interval if shorter)")
	f.Var(&o.bodyLimit, "body-limit", "largest body accepted from a target, after decompression")
	f.StringArrayVar(&o.tags, "tag", nil, "key=value tag added to every point of every target (repeatable), like Telegraf's global_tags")
	f.StringVar(&o.scrape.URLTag, "url-tag", "", "name of a tag holding each target's URL, like Telegraf's url tag (empty: none)")
	f.StringSliceVar(&o.scrape.OmitTags, "omit-tag", nil, "identity tag not written (job, instance; repeatable): with --url-tag url and --tag host=$(hostname), points carry Telegraf's tag set")
	o.targetAuth.register(f, &o.scrape, "the --target/--consul targets")
	f.BoolVar(&o.scrape.HonorTimestamps, "honor-timestamps", false, "keep timestamps targets expose instead of the scrape time")
	f.StringSliceVar(&o.scrape.ScrapeProtocols, "scrape-protocols", scrape.DefaultScrapeProtocols, "exposition formats asked for, best first: PrometheusProto (native histograms, written with a field per bucket bound), OpenMetricsText1.0.0, OpenMetricsText0.0.1, PrometheusText1.0.0, PrometheusText0.0.4")
	f.IntVar(&o.scrape.SeriesLimit, "series-limit", 0, "most distinct series of one target over a sliding hour; past it samples of new series are dropped and counted (series_limit), the target stays up (0: no limit)")
	f.DurationVar(&o.scrape.LintInterval, "lint-interval", scrape.DefaultLintInterval, "lint each target's exposition at its first scrape and then this often: names without _total, missing HELP/TYPE, duplicate series, broken histograms, counters going down, names InfluxDB renames or refuses, unbounded label values; shown on /targets and counted in scrapeflux_lint_findings (0: off)")
	f.IntVar(&o.sink.MaxHourlySeries, "max-hourly-series", 0, "most new series of all targets together in an hour; past it new series are held back, known ones keep flowing (approximate: about 0.06 % of the new series offered past it get through; 0: no limit)")
	f.IntVar(&o.sink.MaxDailySeries, "max-daily-series", 0, "as --max-hourly-series, over a day")
	f.IntVar(&o.scrape.LabelLimit, "label-limit", 0, "fail a scrape with a series of more labels (0: no limit)")
	f.IntVar(&o.scrape.LabelNameLengthLimit, "label-name-length-limit", 0, "fail a scrape with a label name longer than this many bytes (0: no limit)")
	f.IntVar(&o.scrape.LabelValueLengthLimit, "label-value-length-limit", scrape.DefaultLabelValueLengthLimit, "fail a scrape with a label value longer than this many bytes (InfluxDB refuses series keys past 64 KiB; 0: no limit)")
	f.StringVar(&o.layout, "layout", "v1", "InfluxDB layout: v1 (measurement per metric) or v2 (one measurement, field per metric)")
	f.StringVar(&o.sink.Convert.Measurement, "measurement", sink.DefaultMeasurement, "measurement of layout v2")
	f.StringVar(&o.influx.URL, "influx-url", "http://127.0.0.1:8086", "InfluxDB URL, without credentials (those go in --influx-token-file)")
	f.StringVar(&o.influxAPI, "influx-api", "auto", "InfluxDB write API: auto (read /ping's version: 1.x, 2.x or 3.x), v1, v2 (/api/v2/write), v3 (/api/v3/write_lp, InfluxDB 3 Core/Enterprise)")
	f.StringVar(&o.influx.Org, "influx-org", "", "InfluxDB 2.x organization (ignored by 1.x)")
	f.StringVar(&o.influx.Bucket, "influx-bucket", "", "InfluxDB 2.x bucket, or 1.x database[/retention-policy]")
	f.StringVar(&o.tokenFile, "influx-token-file", "", "file holding the InfluxDB token (default: env INFLUX_TOKEN)")
	f.StringVar(&o.influx.CAFile, "influx-ca-file", "", "CA file to verify InfluxDB's certificate (https)")
	f.StringVar(&o.influx.CertFile, "influx-cert-file", "", "client certificate file for InfluxDB (mutual TLS); read again on every new connection")
	f.StringVar(&o.influx.KeyFile, "influx-key-file", "", "client key file for InfluxDB (mutual TLS)")
	f.BoolVar(&o.influx.InsecureSkipVerify, "influx-insecure-skip-verify", false, "do not verify InfluxDB's certificate (unsafe)")
	f.BoolVar(&o.influx.Gzip, "influx-gzip", true, "gzip write requests at the fastest level: about a tenth of the bytes for 10-15% more CPU (--influx-gzip=false sends them plain)")
	f.DurationVar(&o.influx.Timeout, "influx-timeout", 10*time.Second, "timeout of one write request")
	f.IntVar(&o.schemaLimits.Databases, "influx3-max-databases", 0, "InfluxDB 3 schema guard: the server's databases limit (0: the product's, 5 for Core, 100 for Enterprise); lines that would pass the limits are held back and counted (schema_limit) rather than sent to be refused")
	f.IntVar(&o.schemaLimits.Tables, "influx3-max-tables", 0, "InfluxDB 3 schema guard: the server's tables limit across databases (0: the product's, 2000 for Core, 4000 for Enterprise: set it to Enterprise's --num-table-limit)")
	f.IntVar(&o.schemaLimits.Columns, "influx3-max-columns", 0, "InfluxDB 3 schema guard: the server's columns per table, time included (0: the product's, 500: set it to Enterprise's --num-total-columns-per-table-limit)")
	f.BoolVar(&o.sink.CreateDatabase, "influx-create-database", true, "InfluxDB 1.x: create the database when it does not exist (as Telegraf does)")
	f.IntVar(&o.sink.BatchSize, "batch-size", o.sink.BatchSize, "lines per write request (a scrape's lines are never split)")
	f.DurationVar(&o.sink.FlushInterval, "flush-interval", o.sink.FlushInterval, "longest time a line waits before it is sent")
	f.StringVar(&o.sink.QueueDir, "queue-dir", o.sink.QueueDir, "directory of the disk queue that holds data while InfluxDB is away, and across restarts (empty: memory only; default: env "+envQueueDir+", else $STATE_DIRECTORY/queue, else the user cache dir)")
	f.Var(&o.queueBytes, "queue-max-bytes", "size bound of the disk queue's files, at least 1MiB; past it the oldest data is dropped and counted (queue_full)")
	f.Var(&o.memBytes, "memory-max-bytes", "bound of queued data in memory: the whole queue without --queue-dir (oldest dropped past it, queue_full); with one, what the disk refused while it is full or failing (oldest dropped past it, disk_error); below it a copy of what is on disk is kept so replays need not read it")
	f.StringVar(&o.queueSync, "queue-sync", "interval", "when the disk queue is made durable (fdatasync): interval (at most once per --flush-interval: a power cut costs at most about two flush intervals), always (every batch and acknowledgement: a power cut costs nothing sealed, one sync per batch), never (left to the OS: a power cut can cost its write-back window, ~30s on Linux)")
	f.DurationVar(&o.sink.ShutdownTimeout, "shutdown-timeout", o.sink.ShutdownTimeout, "time allowed to flush on shutdown")
	f.StringVar(&o.listen, "listen", defaultListen(), "address of the /metrics, /healthz, /readyz and /targets server (empty: off; env "+envListen+"; in a container use 0.0.0.0:9274)")

	f.DurationVar(&o.readyWrite, "ready-write-timeout", time.Minute, "/readyz reports not ready once writes to InfluxDB have failed this long (0: never)")
	f.BoolVar(&o.pprof, "pprof", false, "serve Go profiles under /debug/pprof/ on --listen (refused off loopback without authentication)")
	f.StringVar(&o.webConfig, "web-config", "", "file of TLS and authentication settings for --listen, in the Prometheus exporter-toolkit format (tls_server_config, basic_auth_users with bcrypt hashes); read again on every request")
	f.BoolVar(&o.enableReload, "web-enable-reload", false, "serve POST /-/reload on --listen (refused off loopback without authentication; SIGHUP always reloads)")
	f.BoolVar(&o.consulOn, "consul", false, "discover targets in Consul (implied by --consul-service)")
	f.StringArrayVar(&o.fileSD, "file-sd", nil, "file (or glob) of targets in Prometheus's file_sd format, JSON or YAML, re-read when it changes (repeatable)")
	f.StringArrayVar(&o.httpSD, "http-sd", nil, "URL serving targets in Prometheus's http_sd format, read every minute (repeatable)")
	f.StringVar(&o.swarmSD, "docker-swarm", "", "Docker API of a Swarm manager (unix:///var/run/docker.sock, http://host:2375): scrape what --docker-swarm-role names, read every --docker-swarm-refresh")
	f.StringVar(&o.swarmRole, "docker-swarm-role", "nodes", "with --docker-swarm: nodes (every engine at its node address and --docker-swarm-port, job docker-engine), tasks (every running task at its overlay address, job = its service) or services (every service's virtual IP, needs IPVS)")
	f.IntVar(&o.swarmPort, "docker-swarm-port", 0, "with --docker-swarm: the port scraped where the Swarm names none (default 9323, the engines' metrics-addr, for nodes; 80 for tasks and services)")
	f.DurationVar(&o.swarmEvery, "docker-swarm-refresh", discovery.DefaultSwarmRefresh, "with --docker-swarm: how often the Swarm is read")
	f.StringVar(&o.swarmNet, "docker-swarm-network", "", "with --docker-swarm-role tasks or services: only the addresses on this network (name or ID; default every network but ingress)")
	o.consulFlags.register(f)
	f.StringArrayVar(&o.consulServices, "consul-service", nil, "Consul service to scrape (repeatable; default: every service carrying --consul-tag)")
	f.StringVar(&o.consul.Tag, "consul-tag", o.consul.Tag, "tag a service must carry to be scraped (empty: any; with --consul-service only when given)")
	f.StringArrayVar(&o.consulMeta, "consul-node-meta", nil, "only nodes with this metadata, key=value (repeatable)")
	f.StringVar(&o.consul.Health, "consul-health", o.consul.Health, "which instances to scrape: passing (all checks pass) or any")
	f.StringSliceVar(&o.consul.MetaTags, "consul-meta-tags", nil, "service meta keys to add to every point as tags")
	f.StringVar(&o.consul.Filter, "consul-filter", "", `Consul filter expression on the instances read, e.g. 'Service.Meta.env == "prod"' (as Prometheus 3's consul_sd filter)`)
	f.BoolVar(&o.consul.AllowStale, "consul-allow-stale", o.consul.AllowStale, "let any Consul server answer (spares the leader)")
	f.DurationVar(&o.consul.WaitTime, "consul-wait", o.consul.WaitTime, "wait time of Consul blocking queries")

	f.StringVar(&o.cluster.Name, "cluster", "", "run as a replica of this cluster: replicas register in Consul (--consul-addr) and share the targets")
	f.IntVar(&o.replication, "replication-factor", 1, "with --cluster: replicas scraping each target (1 shards the work, 2 survives the loss of a replica without a gap)")
	f.StringVar(&o.cluster.Service, "cluster-service", o.cluster.Service, "with --cluster: Consul service name replicas register under")
	f.StringVar(&o.cluster.ID, "cluster-id", "", "with --cluster: this replica's ID, unique in the cluster (default: hostname-pid)")
	f.DurationVar(&o.cluster.TTL, "cluster-ttl", o.cluster.TTL, "with --cluster: TTL of the replica's Consul check; a dead replica's targets move after about this long")
	return cmd
}

// validate reads secrets and checks every option, naming the bad ones.
func (o *runOptions) validate() error {
	var errs []error
	layout, layoutErr := sink.ParseLayout(o.layout)
	if layoutErr != nil {
		errs = append(errs, fmt.Errorf("--layout: %w", layoutErr))
	}
	var err error
	o.sink.Convert.Layout = layout
	o.scrape.BodyLimit = int64(o.bodyLimit)
	o.scrape.Tags = nil
	if kv, err := parseKV("--tag", o.tags); err != nil {
		errs = append(errs, err)
	} else {
		for k, v := range kv {
			o.scrape.Tags = append(o.scrape.Tags, discovery.Tag{Key: k, Value: v})
		}
		sort.Slice(o.scrape.Tags, func(i, j int) bool { return o.scrape.Tags[i].Key < o.scrape.Tags[j].Key })
	}
	errs = append(errs, o.targetAuth.read(&o.scrape)...)
	o.sink.MaxQueueBytes = int64(o.queueBytes)
	o.sink.MaxMemoryBytes = int64(o.memBytes)
	if o.influx.API, err = sink.ParseAPI(o.influxAPI); err != nil {
		errs = append(errs, fmt.Errorf("--influx-api: %w", err))
	}
	for _, l := range []struct {
		flag string
		v    int
	}{{"--influx3-max-databases", o.schemaLimits.Databases}, {"--influx3-max-tables", o.schemaLimits.Tables}, {"--influx3-max-columns", o.schemaLimits.Columns}} {
		if l.v < 0 {
			errs = append(errs, fmt.Errorf("%s %d: must be 0 (the product's limit) or more", l.flag, l.v))
		}
	}
	if c := o.schemaLimits.Columns; c > 0 && c < 3 {
		errs = append(errs, fmt.Errorf("--influx3-max-columns %d: a table holds its time column, a tag and a field at least: give 3 or more", c))
	}
	if o.sink.QueueSync, err = queue.ParseSyncPolicy(o.queueSync); err != nil {
		errs = append(errs, fmt.Errorf("--queue-sync: %w", err))
	}
	if err := o.scrape.Validate(); err != nil {
		errs = append(errs, fmt.Errorf("scrape: %w", err))
	}
	if layoutErr == nil { // else the sink would report the same layout again
		if err := o.sink.Validate(); err != nil {
			errs = append(errs, fmt.Errorf("sink: %w", err))
		}
	}
	if o.influx.Token, err = readSecret(o.tokenFile, "INFLUX_TOKEN"); err != nil {
		errs = append(errs, fmt.Errorf("--influx-token-file: %w", err))
	}
	if o.influx.Bucket == "" {
		errs = append(errs, errors.New("--influx-bucket must be set: the InfluxDB 2.x bucket, or the 1.x database (database/retention-policy)"))
	} else if err := o.influx.Validate(); err != nil {
		errs = append(errs, err)
	}
	if !o.consulOn && o.configFile == "" {
		for _, f := range o.consulOnly {
			errs = append(errs, fmt.Errorf("--%s needs --consul (or --consul-service): without it nothing is discovered in Consul", f))
		}
	}
	o.consulOn = o.consulOn || len(o.consulServices) > 0
	if o.consulOn {
		o.consul.Services = o.consulServices
		if err := o.consulFlags.apply(&o.consul); err != nil {
			errs = append(errs, err)
		}
		if o.consul.NodeMeta, err = parseKV("--consul-node-meta", o.consulMeta); err != nil {
			errs = append(errs, err)
		}
		if err := o.consul.Validate(); err != nil {
			errs = append(errs, err)
		}
	}
	for _, u := range o.targets {
		if _, err := discovery.NewTarget(u, o.job); err != nil {
			errs = append(errs, fmt.Errorf("--target: %w", err))
		}
	}
	if o.cluster.Name != "" {
		if o.cluster.ID == "" {
			host, _ := os.Hostname()
			o.cluster.ID = fmt.Sprintf("%s-%d", host, os.Getpid())
		}
		if host, port, err := net.SplitHostPort(o.listen); err == nil {
			o.cluster.Address = host
			o.cluster.Port, _ = strconv.Atoi(port)
		}
		if err := o.cluster.Validate(); err != nil {
			errs = append(errs, fmt.Errorf("--cluster: %w", err))
		}
		if o.replication < 1 {
			errs = append(errs, fmt.Errorf("--replication-factor %d: want 1 or more", o.replication))
		}
	}
	if len(o.targets) == 0 && !o.consulOn && o.configFile == "" && len(o.fileSD) == 0 && len(o.httpSD) == 0 && o.swarmSD == "" {
		errs = append(errs, errors.New("no targets: give --target URL (repeatable), --consul to discover them in Consul, --docker-swarm, --file-sd FILE, --http-sd URL, or --config FILE"))
	}
	return errors.Join(errs...)
}

// scrapeOverrides are the scrape flags that, given explicitly, win over
// every job of --config: the flag and the field it sets.
// queueFS is the disk queue's file layer: nil (the operating system's)
// but in the tests' binary, which puts a slow disk under the daemon.
var queueFS queue.FS

var scrapeOverrides = []struct {
	flag string
	set  func(c *scrape.Config, o *runOptions)
}{
	{"interval", func(c *scrape.Config, o *runOptions) { c.Interval = o.scrape.Interval }},
	{"timeout", func(c *scrape.Config, o *runOptions) { c.Timeout = o.scrape.Timeout }},
	{"honor-timestamps", func(c *scrape.Config, o *runOptions) { c.HonorTimestamps = o.scrape.HonorTimestamps }},
	{"body-limit", func(c *scrape.Config, o *runOptions) { c.BodyLimit = int64(o.bodyLimit) }},
	{"scrape-protocols", func(c *scrape.Config, o *runOptions) { c.ScrapeProtocols = o.scrape.ScrapeProtocols }},
	{"series-limit", func(c *scrape.Config, o *runOptions) { c.SeriesLimit = o.scrape.SeriesLimit }},
	{"lint-interval", func(c *scrape.Config, o *runOptions) { c.LintInterval = o.scrape.LintInterval }},
	{"label-limit", func(c *scrape.Config, o *runOptions) { c.LabelLimit = o.scrape.LabelLimit }},
	{"label-name-length-limit", func(c *scrape.Config, o *runOptions) { c.LabelNameLengthLimit = o.scrape.LabelNameLengthLimit }},
	{"label-value-length-limit", func(c *scrape.Config, o *runOptions) { c.LabelValueLengthLimit = o.scrape.LabelValueLengthLimit }},
}

// override applies to a config job's scrape settings the flags changed
// says were given, and the global tags, url tag and omitted tags.
func (o *runOptions) override(c *scrape.Config, changed func(flag string) bool) {
	for _, ov := range scrapeOverrides {
		if changed(ov.flag) {
			ov.set(c, o)
		}
	}
	if !changed("timeout") && changed("interval") {
		c.Timeout = min(c.Timeout, c.Interval) // a job's timeout fits the interval given
	}
	if len(o.scrape.Tags) > 0 {
		c.Tags = o.scrape.Tags
	}
	if o.scrape.URLTag != "" {
		c.URLTag = o.scrape.URLTag
	}
	if len(o.scrape.OmitTags) > 0 {
		c.OmitTags = o.scrape.OmitTags
	}
}

// specs builds the jobs to run: those of --config, with the scrape flags
// given explicitly overriding them, plus the job of --target/--consul.
func (o *runOptions) specs() ([]scrape.JobSpec, error) {
	var specs []scrape.JobSpec
	if o.configFile != "" {
		consul, err := o.consulConnection()
		if err != nil {
			return nil, err
		}
		specs, err = loadConfig(o.configFile, consul, o.overrides)
		if err != nil {
			return nil, err
		}
	}
	flagJob := scrape.JobSpec{Name: o.job, Scrape: o.scrape}
	if len(o.targets) > 0 {
		st := discovery.StaticConfig(o.targets)
		flagJob.Sources = append(flagJob.Sources, &st)
	}
	if o.consulOn {
		flagJob.Sources = append(flagJob.Sources, o.consul.Selection())
	}
	if len(o.fileSD) > 0 {
		flagJob.Sources = append(flagJob.Sources, &discovery.FileSDConfig{Files: o.fileSD})
	}
	for _, u := range o.httpSD {
		flagJob.Sources = append(flagJob.Sources, &discovery.HTTPSDConfig{URL: u})
	}
	if len(flagJob.Sources) > 0 {
		for _, s := range specs {
			if s.Name == flagJob.Name {
				return nil, fmt.Errorf("--job %q is also a job of --config", o.job)
			}
		}
		specs = append(specs, flagJob)
	}
	if o.swarmSD != "" {
		// The Swarm's targets are a job of their own: the engines are job
		// docker-engine (as register names them in Consul, so dashboards
		// see one job however they were found); tasks and services take
		// their service's name.
		name := "docker-engine"
		if o.swarmRole != "nodes" {
			name = "dockerswarm-" + o.swarmRole
		}
		sd := &discovery.DockerSwarmSDConfig{Host: o.swarmSD, Role: o.swarmRole, Port: o.swarmPort, Network: o.swarmNet,
			RefreshInterval: model.Duration(o.swarmEvery)}
		for _, s := range specs {
			if s.Name == name {
				return nil, fmt.Errorf("--docker-swarm: job %q is also a job of --config or --job: rename that one", name)
			}
		}
		if err := sd.Validate(discovery.DiscovererOptions{Job: name}); err != nil {
			return nil, fmt.Errorf("--docker-swarm: %w", err)
		}
		specs = append(specs, scrape.JobSpec{Name: name, Scrape: o.scrape, Sources: []discovery.Config{sd}})
	}
	return specs, nil
}

// consulConnection is the Consul every part reaches: the connection flags
// over o.consul (the --consul-* selection flags included: a job's consul:
// section selects over them).
func (o *runOptions) consulConnection() (discovery.ConsulConfig, error) {
	c := o.consul
	err := o.consulFlags.apply(&c)
	return c, err
}

func runRun(ctx context.Context, o *runOptions) error {
	log, err := o.logger()
	if err != nil {
		return err
	}
	if err := o.validate(); err != nil {
		return fmt.Errorf("invalid configuration:\n%w", err)
	}
	specs, err := o.specs()
	if err != nil {
		return fmt.Errorf("invalid configuration:\n%w", err)
	}
	w, err := sink.NewInfluxWriter(o.influx)
	if err != nil {
		return err
	}
	defer w.Close()
	{
		// Which InfluxDB answers decides the write endpoint and how its
		// answers read; one that is down is asked again at the first write.
		dctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
		si, derr := w.Detect(dctx)
		cancel()
		if derr != nil {
			log.Warn("cannot tell which InfluxDB answers yet; asking again at the first write", "influx_url", redactURL(o.influx.URL), "api", si.API.String(), "err", derr)
		} else {
			log.Info("InfluxDB found", "influx_url", redactURL(o.influx.URL), "version", si.Version, "build", si.Build, "api", si.API.String())
		}
		if si.API == sink.APIv3 && o.sink.Convert.Layout == sink.LayoutV2 {
			log.Warn("--layout v2 writes every metric as a column of one table, and InfluxDB 3 allows 500 columns per table by default (one CockroachDB exporter alone needs 489): use --layout v1, a table per metric family, which fits")
		}
	}
	o.sink.QueueFS = queueFS
	o.sink.Schema = schema.NewCatalog(o.schemaLimits)
	def, err := sink.New(o.sink, w, log.With("component", "sink"))
	if errors.Is(err, syscall.EROFS) || errors.Is(err, fs.ErrPermission) {
		return fmt.Errorf("%w: give --queue-dir a directory this process can write (empty: memory only, nothing kept across restarts)", err)
	}
	if err != nil {
		return err
	}
	// A config job's bucket: gets a sink of its own (writer, queue,
	// retries), made when a job first asks for it.
	// A reload re-reads the token (into o) while buckets may be made:
	// they read the configuration of the start and the token under bw.
	buckets := &bucketWriters{influx: o.influx, token: o.influx.Token}
	defer buckets.close()
	sinkCfg := o.sink
	snk := sink.NewRouter(def, func(bucket string) (*sink.Sink, error) {
		bw, err := buckets.add(bucket)
		if err != nil {
			return nil, err
		}
		return sink.New(sink.BucketConfig(sinkCfg, bucket), bw, log.With("component", "sink", "bucket", bucket))
	}, log.With("component", "sink"))
	if ctx == nil {
		ctx = context.Background()
	}
	ctx, stop := signal.NotifyContext(ctx, syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	g, gctx := errgroup.WithContext(ctx)
	var shard *scrape.Shard
	var cluster *discovery.Cluster
	if o.cluster.Name != "" {
		cc, err := o.consulConnection()
		if err != nil {
			return err
		}
		if cluster, err = discovery.NewCluster(o.cluster, cc, log.With("component", "cluster")); err != nil {
			return err
		}
		shard = scrape.NewShard(o.cluster.ID, o.replication)
	}
	// Loops stop when js.stop says so, not at the signal: a replica leaving
	// the cluster scrapes one more interval first.
	consul, err := o.consulConnection()
	if err != nil {
		return err
	}
	js := scrape.NewManager(context.WithoutCancel(gctx), snk, shard, consul, log)
	reloads := &reloader{log: log, jobs: js, load: func() ([]scrape.JobSpec, error) {
		if err := o.validate(); err != nil {
			return nil, err
		}
		specs, err := o.specs()
		if err == nil {
			w.SetToken(o.influx.Token) // the token file is re-read too
			buckets.setToken(o.influx.Token)
		}
		return specs, err
	}}
	web := &webServer{addr: o.listen, pprof: o.pprof, targets: js, sink: snk, influx: w, discovery: o.consul.Metrics, shard: shard, readyWrite: o.readyWrite, webConfig: o.webConfig, enableReload: o.enableReload, reload: reloads, log: log.With("component", "web")}
	if err := web.listen(); err != nil {
		return err
	}
	if _, _, _, err := js.Apply(specs); err != nil {
		js.Stop()
		return err
	}
	reloads.ok()
	g.Go(func() error { return web.run(gctx) })
	clusterDone := make(chan struct{})
	if cluster != nil {
		g.Go(func() error {
			defer close(clusterDone)
			return cluster.Run(gctx, shard.SetMembers)
		})
	} else {
		close(clusterDone)
	}
	g.Go(func() error {
		// Producers stop first; then the sink drains.
		<-gctx.Done()
		if cluster != nil {
			// Out of the member list now: the others start this replica's
			// targets at their next slot; scraping them one more interval
			// here means no slot is missed, even with one owner per target.
			<-clusterDone
			grace := js.MaxInterval()
			log.Info("left the cluster; scraping one more interval so targets move without a gap", "for", grace.String())
			t := time.NewTimer(grace)
			<-t.C
		}
		js.Stop()
		snk.Close()
		return nil
	})
	g.Go(func() error { return snk.Run(context.WithoutCancel(gctx)) })
	g.Go(func() error { return reloads.onSIGHUP(gctx) })
	log.Info("scrapeflux started", "version", version, "jobs", len(specs), "config", o.configFile,
		"influx_url", redactURL(o.influx.URL), "influx_api", w.Server().API.String(), "listen", web.boundAddr())
	err = g.Wait()
	st := snk.Stats()
	log.Info("scrapeflux stopped", "samples_scraped", st.Scraped, "samples_written", st.Written,
		"samples_dropped", st.DroppedTotal(), "dropped_by_reason", droppedByReason(st.Dropped), "samples_queued", st.QueuedSamples)
	return err
}

// droppedByReason lists the nonzero drop counts, "reason=n,...".
func droppedByReason(d map[string]int64) string {
	var parts []string
	for r, n := range d {
		if n > 0 {
			parts = append(parts, fmt.Sprintf("%s=%d", r, n))
		}
	}
	sort.Strings(parts)
	return strings.Join(parts, ",")
}

// redactURL is u with its password replaced, for logs.
func redactURL(u string) string { return sink.RedactURL(u) }

// targetAuthFlags are the flags of authentication and TLS towards
// targets, the same for run and scrape.
type targetAuthFlags struct {
	bearerTokenFile, basicAuthPassFile string
}

func (a *targetAuthFlags) register(f *pflag.FlagSet, c *scrape.Config, whom string) {
	f.StringVar(&a.bearerTokenFile, "bearer-token-file", "", "file holding a bearer token sent to "+whom)
	f.StringVar(&c.BasicAuthUser, "basic-auth-user", "", "basic auth user for "+whom+" (password: --basic-auth-password-file)")
	f.StringVar(&a.basicAuthPassFile, "basic-auth-password-file", "", "file holding the basic auth password for "+whom)
	f.StringVar(&c.TLS.CAFile, "tls-ca-file", "", "CA file to verify "+whom)
	f.StringVar(&c.TLS.CertFile, "tls-cert-file", "", "client certificate file for "+whom)
	f.StringVar(&c.TLS.KeyFile, "tls-key-file", "", "client key file for "+whom)
	f.StringVar(&c.TLS.ServerName, "tls-server-name", "", "server name to verify in the certificates of "+whom)
	f.BoolVar(&c.TLS.InsecureSkipVerify, "tls-insecure-skip-verify", false, "do not verify the certificates of "+whom+" (unsafe)")
}

// read reads the secrets the flags name into c.
func (a *targetAuthFlags) read(c *scrape.Config) []error {
	var errs []error
	var err error
	if c.BearerToken, err = readSecret(a.bearerTokenFile, ""); err != nil {
		errs = append(errs, fmt.Errorf("--bearer-token-file: %w", err))
	}
	if c.BasicAuthPassword, err = readSecret(a.basicAuthPassFile, ""); err != nil {
		errs = append(errs, fmt.Errorf("--basic-auth-password-file: %w", err))
	}
	return errs
}

// bucketWriters are the writers of the buckets jobs route to; safe for
// concurrent use (buckets are made as jobs start, tokens change on
// reload).
type bucketWriters struct {
	mu      sync.Mutex
	influx  sink.InfluxConfig
	token   string
	writers []*sink.InfluxWriter
}

func (b *bucketWriters) add(bucket string) (*sink.InfluxWriter, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	ic := b.influx
	ic.Bucket, ic.Token = bucket, b.token
	w, err := sink.NewInfluxWriter(ic)
	if err != nil {
		return nil, err
	}
	b.writers = append(b.writers, w)
	return w, nil
}

func (b *bucketWriters) setToken(token string) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.token = token
	for _, w := range b.writers {
		w.SetToken(token)
	}
}

func (b *bucketWriters) close() {
	b.mu.Lock()
	defer b.mu.Unlock()
	for _, w := range b.writers {
		w.Close()
	}
}
