// This file is long on purpose: Telegraf's options and what each becomes
// are one table, read top to bottom.

package main

import (
	"fmt"
	"io"
	"os"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/BurntSushi/toml"
	"github.com/spf13/cobra"
	"gopkg.in/yaml.v3"
)

func newCmdConvert(g *globalOptions) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "convert",
		Short: "Convert another collector's configuration to scrapeflux's",
	}
	cmd.AddCommand(&cobra.Command{
		Use:   "telegraf FILE.conf",
		Short: "Convert Telegraf's inputs.prometheus and InfluxDB outputs",
		Long: `convert telegraf reads a Telegraf configuration and prints an equivalent
scrapeflux config file on standard output, with, in comments at its top,
the run command for the output side (InfluxDB URL, bucket, token file...)
and every option it could not carry over, with why and what to do instead.

It covers [[inputs.prometheus]] (urls, metric_version, consul and its
query templates and tags, interval, response_timeout, TLS, bearer and
basic auth, namepass/namedrop/fieldpass/fielddrop/taginclude/tagexclude,
tags, url_tag, ignore_timestamp), [[outputs.influxdb]] and
[[outputs.influxdb_v2]], [agent] interval/flush/batch/buffer and
[global_tags]. The points keep Telegraf's tag set: url and host instead of
job and instance, so dashboards built on Telegraf's data keep working.

Secrets written inline (token, password, bearer_token_string) are never
copied: the comments say which file to put each in.`,
		Example: "  scrapeflux convert telegraf /etc/telegraf/telegraf.conf > /etc/scrapeflux/scrapeflux.yml",
		Args:    cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			data, err := os.ReadFile(args[0])
			if err != nil {
				return fmt.Errorf("cannot read %s: %w", args[0], err)
			}
			out, err := convertTelegraf(data, args[0])
			if err != nil {
				return err
			}
			_, err = io.WriteString(g.stdout, out)
			return err
		},
	})
	return cmd
}

// telegrafConf is the part of a Telegraf configuration that is read.
type telegrafConf struct {
	Agent struct {
		Interval          any    `toml:"interval"`
		FlushInterval     any    `toml:"flush_interval"`
		MetricBatchSize   int    `toml:"metric_batch_size"`
		MetricBufferLimit int    `toml:"metric_buffer_limit"`
		OmitHostname      bool   `toml:"omit_hostname"`
		Hostname          string `toml:"hostname"`
	} `toml:"agent"`
	GlobalTags map[string]string `toml:"global_tags"`
	Inputs     struct {
		Prometheus []telegrafProm `toml:"prometheus"`
	} `toml:"inputs"`
	Outputs struct {
		InfluxDB   []telegrafOut `toml:"influxdb"`
		InfluxDBV2 []telegrafOut `toml:"influxdb_v2"`
	} `toml:"outputs"`
}

type telegrafProm struct {
	URLs               []string          `toml:"urls"`
	MetricVersion      int               `toml:"metric_version"`
	Interval           any               `toml:"interval"`
	ResponseTimeout    any               `toml:"response_timeout"`
	URLTag             *string           `toml:"url_tag"`
	IgnoreTimestamp    bool              `toml:"ignore_timestamp"`
	BearerToken        string            `toml:"bearer_token"`
	BearerTokenString  string            `toml:"bearer_token_string"`
	Username           string            `toml:"username"`
	Password           string            `toml:"password"`
	TLSCA              string            `toml:"tls_ca"`
	TLSCert            string            `toml:"tls_cert"`
	TLSKey             string            `toml:"tls_key"`
	TLSServerName      string            `toml:"tls_server_name"`
	InsecureSkipVerify bool              `toml:"insecure_skip_verify"`
	NamePass           []string          `toml:"namepass"`
	NameDrop           []string          `toml:"namedrop"`
	FieldPass          []string          `toml:"fieldpass"`
	FieldDrop          []string          `toml:"fielddrop"`
	FieldInclude       []string          `toml:"fieldinclude"`
	FieldExclude       []string          `toml:"fieldexclude"`
	TagInclude         []string          `toml:"taginclude"`
	TagExclude         []string          `toml:"tagexclude"`
	Tags               map[string]string `toml:"tags"`
	Consul             struct {
		Enabled       bool   `toml:"enabled"`
		Agent         string `toml:"agent"`
		QueryInterval any    `toml:"query_interval"`
		Query         []struct {
			Name string            `toml:"name"`
			Tag  string            `toml:"tag"`
			URL  string            `toml:"url"`
			Tags map[string]string `toml:"tags"`
		} `toml:"query"`
	} `toml:"consul"`
}

type telegrafOut struct {
	URLs               []string `toml:"urls"`
	Database           string   `toml:"database"`
	RetentionPolicy    string   `toml:"retention_policy"`
	Username           string   `toml:"username"`
	Password           string   `toml:"password"`
	Token              string   `toml:"token"`
	Organization       string   `toml:"organization"`
	Bucket             string   `toml:"bucket"`
	ContentEncoding    string   `toml:"content_encoding"`
	Timeout            any      `toml:"timeout"`
	TLSCA              string   `toml:"tls_ca"`
	TLSCert            string   `toml:"tls_cert"`
	TLSKey             string   `toml:"tls_key"`
	InsecureSkipVerify bool     `toml:"insecure_skip_verify"`
	SkipDatabase       bool     `toml:"skip_database_creation"`
}

// convJob is one job of the config file written.
type convJob struct {
	Name            string         `yaml:"job_name"`
	Interval        string         `yaml:"scrape_interval,omitempty"`
	Timeout         string         `yaml:"scrape_timeout,omitempty"`
	HonorTimestamps bool           `yaml:"honor_timestamps,omitempty"`
	Layout          string         `yaml:"layout,omitempty"`
	Measurement     string         `yaml:"measurement,omitempty"`
	URLTag          string         `yaml:"url_tag,omitempty"`
	OmitTags        []string       `yaml:"omit_tags,omitempty"`
	StaticTargets   []string       `yaml:"static_targets,omitempty"`
	Consul          map[string]any `yaml:"consul,omitempty"`
	TLS             map[string]any `yaml:"tls_config,omitempty"`
	BearerTokenFile string         `yaml:"bearer_token_file,omitempty"`
	BasicAuth       map[string]any `yaml:"basic_auth,omitempty"`
	Relabel         []rule         `yaml:"relabel_configs,omitempty"`
	MetricRelabel   []rule         `yaml:"metric_relabel_configs,omitempty"`
}

// rule is a relabel rule as written in the file.
type rule struct {
	SourceLabels []string `yaml:"source_labels,flow,omitempty"`
	Regex        string   `yaml:"regex,omitempty"`
	TargetLabel  string   `yaml:"target_label,omitempty"`
	Replacement  *string  `yaml:"replacement,omitempty"`
	Action       string   `yaml:"action,omitempty"`
}

type converter struct {
	jobs    []convJob
	flags   []string
	notes   []string // not carried over: what, why, what to do
	secrets []string // files to create
}

func (c *converter) note(format string, a ...any) {
	c.notes = append(c.notes, fmt.Sprintf(format, a...))
}

// convertTelegraf converts a Telegraf configuration.
func convertTelegraf(data []byte, name string) (string, error) {
	var tc telegrafConf
	md, err := toml.Decode(string(data), &tc)
	if err != nil {
		return "", fmt.Errorf("%s is not a Telegraf configuration (TOML): %w", name, err)
	}
	c := &converter{}
	for _, k := range md.Undecoded() {
		c.undecoded(k)
	}
	interval := duration(tc.Agent.Interval, "10s")
	hostTag := !tc.Agent.OmitHostname
	for i, in := range tc.Inputs.Prometheus {
		c.input(i, in, hostTag)
	}
	if len(c.jobs) == 0 {
		return "", fmt.Errorf("%s has no [[inputs.prometheus]]: nothing for scrapeflux to do", name)
	}
	c.outputs(tc)
	if fi := duration(tc.Agent.FlushInterval, ""); fi != "" {
		c.flags = append(c.flags, "--flush-interval "+fi)
	}
	if tc.Agent.MetricBatchSize > 0 {
		c.flags = append(c.flags, "--batch-size "+strconv.Itoa(tc.Agent.MetricBatchSize))
	}
	if tc.Agent.MetricBufferLimit > 0 {
		c.note("agent.metric_buffer_limit = %d (metrics held in memory while the output is down): scrapeflux queues on disk (--queue-dir, bounded by --queue-max-bytes, 1GiB by default) and in memory up to --memory-max-bytes; a metric is about 100 bytes of line protocol, so the same bound is --memory-max-bytes %dMiB", tc.Agent.MetricBufferLimit, max(1, tc.Agent.MetricBufferLimit*100>>20))
	}
	keys := make([]string, 0, len(tc.GlobalTags))
	for k := range tc.GlobalTags {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		c.flags = append(c.flags, "--tag "+shellQuote(k+"="+tc.GlobalTags[k]))
	}
	for _, j := range c.jobs {
		for _, r := range j.Relabel {
			if r.TargetLabel == "host" && hostTag {
				c.note("job %s sets a host tag of its own (Telegraf keeps it over the agent's host): scrapeflux's global --tag would win over it, so the agent's host tag is left out", j.Name)
				hostTag = false
			}
		}
	}
	if hostTag {
		h := "$(hostname)"
		if tc.Agent.Hostname != "" {
			h = shellQuote(tc.Agent.Hostname)
		}
		c.flags = append(c.flags, "--tag host="+h)
	}
	return c.render(name, interval)
}

// undecoded says what happens to an option the conversion does not read.
func (c *converter) undecoded(k toml.Key) {
	if len(k) == 0 {
		return
	}
	switch {
	case k[0] == "inputs" && len(k) > 1 && k[1] != "prometheus":
		if len(k) == 2 {
			c.note("[[inputs.%s]]: not a Prometheus input; scrapeflux scrapes /metrics endpoints only: keep Telegraf for it, or scrape an exporter that serves it", k[1])
		}
	case k[0] == "outputs" && len(k) > 1 && k[1] != "influxdb" && k[1] != "influxdb_v2":
		if len(k) == 2 {
			c.note("[[outputs.%s]]: scrapeflux writes to InfluxDB only", k[1])
		}
	case k[0] == "processors" || k[0] == "aggregators":
		if len(k) == 2 {
			c.note("[[%s.%s]]: scrapeflux has no %s; metric_relabel_configs rename, drop and filter series", k[0], k[1], k[0])
		}
	case len(k) == 2 && (k[0] == "inputs" || k[0] == "outputs"):
	case len(k) >= 3 && (k[0] == "inputs" || k[0] == "outputs"):
		c.note("%s: no scrapeflux equivalent; check its meaning in Telegraf's documentation", k.String())
	case k[0] == "agent" && len(k) == 2:
		c.note("agent.%s: no scrapeflux equivalent (scrapeflux schedules each target on its own, on a fixed wall-clock grid)", k[1])
	}
}

// input converts one [[inputs.prometheus]].
func (c *converter) input(i int, in telegrafProm, hostTag bool) {
	name := "prometheus"
	if i > 0 {
		name = fmt.Sprintf("prometheus-%d", i+1)
	}
	base := convJob{Name: name, HonorTimestamps: !in.IgnoreTimestamp, Layout: "v1"}
	if in.MetricVersion == 2 {
		base.Layout, base.Measurement = "v2", "prometheus"
	}
	base.Interval = duration(in.Interval, "")
	// Telegraf's default response_timeout is 3s.
	base.Timeout = duration(in.ResponseTimeout, "3s")
	base.URLTag = "url"
	if in.URLTag != nil {
		base.URLTag = *in.URLTag
	}
	// Telegraf writes url (and host) where scrapeflux writes job and
	// instance: the converted jobs write Telegraf's tag set.
	base.OmitTags = []string{"job", "instance"}
	if in.TLSCA != "" || in.TLSCert != "" || in.TLSKey != "" || in.InsecureSkipVerify || in.TLSServerName != "" {
		base.TLS = map[string]any{}
		setIf(base.TLS, "ca_file", in.TLSCA)
		setIf(base.TLS, "cert_file", in.TLSCert)
		setIf(base.TLS, "key_file", in.TLSKey)
		setIf(base.TLS, "server_name", in.TLSServerName)
		if in.InsecureSkipVerify {
			base.TLS["insecure_skip_verify"] = true
		}
	}
	base.BearerTokenFile = in.BearerToken
	if in.BearerTokenString != "" {
		f := "/etc/scrapeflux/" + name + "-bearer-token"
		c.note("inputs.prometheus.bearer_token_string: a secret written inline is not copied: put it in %s (mode 0600); the job reads it from there", f)
		c.secrets = append(c.secrets, f)
		base.BearerTokenFile = f
	}
	if in.Username != "" {
		f := "/etc/scrapeflux/" + name + "-password"
		base.BasicAuth = map[string]any{"username": in.Username, "password_file": f}
		if in.Password != "" {
			c.note("inputs.prometheus.password: not copied: put it in %s (mode 0600)", f)
			c.secrets = append(c.secrets, f)
		}
	}
	tagKeys := make([]string, 0, len(in.Tags))
	for k := range in.Tags {
		tagKeys = append(tagKeys, k)
	}
	sort.Strings(tagKeys)
	for _, k := range tagKeys {
		v := in.Tags[k]
		base.Relabel = append(base.Relabel, rule{TargetLabel: k, Replacement: &v, Action: "replace"})
	}
	c.filters(&base, in, hostTag)
	if len(in.URLs) > 0 {
		j := base
		j.StaticTargets = in.URLs
		c.jobs = append(c.jobs, j)
	}
	if in.Consul.Enabled {
		if qi := duration(in.Consul.QueryInterval, ""); qi != "" {
			c.note("inputs.prometheus.consul.query_interval = %s: not needed: scrapeflux follows Consul with blocking queries, changes are seen as they happen", qi)
		}
		if in.Consul.Agent != "" {
			c.flags = append(c.flags, "--consul-addr "+shellQuote(in.Consul.Agent))
		}
		for qi, q := range in.Consul.Query {
			j := base
			j.Name = fmt.Sprintf("%s-consul-%s", name, q.Name)
			if len(in.Consul.Query) == 1 && len(in.URLs) == 0 {
				j.Name = name
			}
			j.Relabel = append([]rule(nil), base.Relabel...)
			cons := map[string]any{"services": []string{q.Name}}
			if q.Tag != "" {
				cons["tag"] = q.Tag
			} else {
				cons["tag"] = ""
			}
			j.Consul = cons
			c.consulURL(&j, q.URL, qi)
			keys := make([]string, 0, len(q.Tags))
			for k := range q.Tags {
				keys = append(keys, k)
			}
			sort.Strings(keys)
			for _, k := range keys {
				c.consulTag(&j, k, q.Tags[k])
			}
			c.jobs = append(c.jobs, j)
		}
	}
}

// templateField maps Telegraf's consul query template fields to
// scrapeflux's discovery labels.
var templateField = map[string]string{
	".Node": "__meta_consul_node", ".Address": "__meta_consul_address", ".NodeAddress": "__meta_consul_address",
	".ServiceAddress": "__meta_consul_service_address", ".ServicePort": "__meta_consul_service_port",
	".ServiceName": "__meta_consul_service", ".ServiceID": "__meta_consul_service_id", ".Datacenter": "__meta_consul_dc",
}

var templateRef = regexp.MustCompile(`\{\{\s*(\.[A-Za-z]+(?:\.[A-Za-z0-9_]+)?)\s*\}\}`)

func metaOf(field string) (string, bool) {
	if l, ok := templateField[field]; ok {
		return l, true
	}
	if k, ok := strings.CutPrefix(field, ".ServiceMeta."); ok {
		return "__meta_consul_service_metadata_" + k, true
	}
	if k, ok := strings.CutPrefix(field, ".NodeMeta."); ok {
		return "__meta_consul_metadata_" + k, true
	}
	return "", false
}

// consulTag turns a tags template (host = "{{.Node}}") into a target
// relabel rule.
func (c *converter) consulTag(j *convJob, key, tmpl string) {
	m := templateRef.FindStringSubmatch(tmpl)
	if m == nil || m[0] != strings.TrimSpace(tmpl) {
		if !strings.Contains(tmpl, "{{") {
			v := tmpl
			j.Relabel = append(j.Relabel, rule{TargetLabel: key, Replacement: &v, Action: "replace"})
			return
		}
		c.note("consul query %q tag %s = %q: only a single {{.Field}} is converted: write a relabel rule by hand", j.Name, key, tmpl)
		return
	}
	label, ok := metaOf(m[1])
	if !ok {
		c.note("consul query %q tag %s = %q: the field %s has no scrapeflux label: write a relabel rule by hand", j.Name, key, tmpl, m[1])
		return
	}
	j.Relabel = append(j.Relabel, rule{SourceLabels: []string{label}, TargetLabel: key, Action: "replace"})
}

// consulURL turns the query's url template into relabel rules for the
// scheme, address and path; Telegraf's default is
// http://{{if ne .ServiceAddress ""}}{{.ServiceAddress}}{{else}}{{.Address}}{{end}}:{{.ServicePort}}/metrics,
// which is scrapeflux's own choice of address.
func (c *converter) consulURL(j *convJob, tmpl string, qi int) {
	if tmpl == "" {
		return
	}
	scheme, rest, ok := strings.Cut(tmpl, "://")
	if !ok {
		c.note("consul query %q url %q: not a URL template: write relabel rules by hand", j.Name, tmpl)
		return
	}
	hostPart, path := rest, "/metrics"
	if i := strings.Index(rest, "}}/"); i >= 0 {
		hostPart, path = rest[:i+2], rest[i+2:]
	} else if i := strings.LastIndex(rest, "/"); i >= 0 && !strings.Contains(rest[i:], "}}") {
		hostPart, path = rest[:i], rest[i:]
	}
	if strings.Contains(path, "{{") {
		c.note("consul query %q url %q: a templated path is not converted: set the path with service meta metrics_path or a relabel rule", j.Name, tmpl)
	} else if path != "/metrics" {
		p := path
		j.Relabel = append(j.Relabel, rule{TargetLabel: "__metrics_path__", Replacement: &p, Action: "replace"})
	}
	if scheme != "http" {
		s := scheme
		j.Relabel = append(j.Relabel, rule{TargetLabel: "__scheme__", Replacement: &s, Action: "replace"})
	}
	refs := templateRef.FindAllStringSubmatch(hostPart, -1)
	var fields []string
	for _, r := range refs {
		fields = append(fields, r[1])
	}
	switch {
	case len(fields) == 2 && (fields[0] == ".Address" || fields[0] == ".ServiceAddress") && fields[1] == ".ServicePort",
		strings.Contains(hostPart, ".ServiceAddress") && strings.Contains(hostPart, ".Address") && strings.HasSuffix(hostPart, ":{{.ServicePort}}"):
		// scrapeflux's own address: the service's, else the node's.
	default:
		c.note("consul query %q url %q: the address part %q is not converted: scrapeflux scrapes the service address (else the node's) and port; rewrite __address__ with a relabel rule if you need another", j.Name, tmpl, hostPart)
	}
	_ = qi
}

// filters converts Telegraf's metric filters. With metric_version 1 the
// measurement is the metric family name; with 2 it is "prometheus" and
// fields are metric names.
func (c *converter) filters(j *convJob, in telegrafProm, hostTag bool) {
	v2 := in.MetricVersion == 2
	family := func(globs []string) string {
		return "(?:" + globsRegex(globs) + ")(?:_bucket|_sum|_count)?"
	}
	if len(in.NamePass) > 0 {
		if v2 {
			if !globsMatch(in.NamePass, "prometheus") {
				c.note("namepass %v with metric_version = 2 matches the measurement \"prometheus\", which it does not match: Telegraf writes nothing of this input; the converted job would write everything, so it is left out: remove namepass or fix it", in.NamePass)
			}
		} else {
			j.MetricRelabel = append(j.MetricRelabel, rule{SourceLabels: []string{"__name__"}, Regex: family(in.NamePass), Action: "keep"})
		}
	}
	if len(in.NameDrop) > 0 {
		if v2 {
			if globsMatch(in.NameDrop, "prometheus") {
				c.note("namedrop %v with metric_version = 2 matches the measurement \"prometheus\": Telegraf drops everything of this input", in.NameDrop)
			}
		} else {
			j.MetricRelabel = append(j.MetricRelabel, rule{SourceLabels: []string{"__name__"}, Regex: family(in.NameDrop), Action: "drop"})
		}
	}
	pass, drop := append(in.FieldPass, in.FieldInclude...), append(in.FieldDrop, in.FieldExclude...)
	if len(pass) > 0 || len(drop) > 0 {
		if v2 {
			if len(pass) > 0 {
				j.MetricRelabel = append(j.MetricRelabel, rule{SourceLabels: []string{"__name__"}, Regex: globsRegex(pass), Action: "keep"})
			}
			if len(drop) > 0 {
				j.MetricRelabel = append(j.MetricRelabel, rule{SourceLabels: []string{"__name__"}, Regex: globsRegex(drop), Action: "drop"})
			}
		} else {
			c.note("fieldpass/fielddrop with metric_version = 1 select the fields counter, gauge, value, sum, count and bucket bounds: scrapeflux writes a series' fields together; drop whole series with metric_relabel_configs instead")
		}
	}
	identity := map[string]bool{j.URLTag: true, "host": hostTag}
	if len(in.TagExclude) > 0 {
		var labels []string
		for _, t := range in.TagExclude {
			if identity[t] {
				j.OmitTags = append(j.OmitTags, t)
				continue
			}
			labels = append(labels, t)
		}
		if len(labels) > 0 {
			j.MetricRelabel = append(j.MetricRelabel, rule{Regex: globsRegex(labels), Action: "labeldrop"})
		}
	}
	if len(in.TagInclude) > 0 {
		keep := append([]string{"__name__", "le", "quantile"}, in.TagInclude...)
		j.MetricRelabel = append(j.MetricRelabel, rule{Regex: globsRegex(keep), Action: "labelkeep"})
		for t, on := range identity {
			if on && !globsMatch(in.TagInclude, t) {
				j.OmitTags = append(j.OmitTags, t)
			}
		}
		sort.Strings(j.OmitTags)
	}
}

// globsRegex turns Telegraf's globs into one regex.
func globsRegex(globs []string) string {
	parts := make([]string, len(globs))
	for i, g := range globs {
		var b strings.Builder
		for _, r := range g {
			switch r {
			case '*':
				b.WriteString(".*")
			case '?':
				b.WriteString(".")
			default:
				b.WriteString(regexp.QuoteMeta(string(r)))
			}
		}
		parts[i] = b.String()
	}
	return strings.Join(parts, "|")
}

func globsMatch(globs []string, s string) bool {
	return regexp.MustCompile("^(?:" + globsRegex(globs) + ")$").MatchString(s)
}

// outputs converts the first InfluxDB output into flags.
func (c *converter) outputs(tc telegrafConf) {
	outs := len(tc.Outputs.InfluxDB) + len(tc.Outputs.InfluxDBV2)
	if outs == 0 {
		c.note("no [[outputs.influxdb]] or [[outputs.influxdb_v2]]: give --influx-url and --influx-bucket yourself")
		return
	}
	if outs > 1 {
		c.note("%d InfluxDB outputs: scrapeflux writes to one; the first is converted (run one scrapeflux per output for the others)", outs)
	}
	var o telegrafOut
	v2 := len(tc.Outputs.InfluxDBV2) > 0 && len(tc.Outputs.InfluxDB) == 0
	if v2 {
		o = tc.Outputs.InfluxDBV2[0]
	} else {
		o = tc.Outputs.InfluxDB[0]
	}
	if len(o.URLs) > 0 {
		c.flags = append(c.flags, "--influx-url "+shellQuote(o.URLs[0]))
		if len(o.URLs) > 1 {
			c.note("output urls %v: Telegraf writes to one of them at random; scrapeflux writes to one URL: put a load balancer in front of them or keep the first", o.URLs)
		}
	}
	if v2 {
		if o.Organization != "" {
			c.flags = append(c.flags, "--influx-org "+shellQuote(o.Organization))
		}
		if o.Bucket != "" {
			c.flags = append(c.flags, "--influx-bucket "+shellQuote(o.Bucket))
		}
		if o.Token != "" {
			c.flags = append(c.flags, "--influx-token-file /etc/scrapeflux/influx-token")
			c.note("outputs.influxdb_v2.token: not copied: put it in /etc/scrapeflux/influx-token (mode 0600)")
			c.secrets = append(c.secrets, "/etc/scrapeflux/influx-token")
		}
	} else {
		db := o.Database
		if db == "" {
			db = "telegraf"
		}
		if o.RetentionPolicy != "" {
			db += "/" + o.RetentionPolicy
		}
		c.flags = append(c.flags, "--influx-bucket "+shellQuote(db))
		if o.Username != "" {
			c.flags = append(c.flags, "--influx-token-file /etc/scrapeflux/influx-token")
			c.note("outputs.influxdb.username/password: InfluxDB 1.x credentials go in one file as user:password: write %s:<password> to /etc/scrapeflux/influx-token (mode 0600)", o.Username)
			c.secrets = append(c.secrets, "/etc/scrapeflux/influx-token")
		}
		if o.SkipDatabase {
			c.flags = append(c.flags, "--influx-create-database=false")
		}
	}
	// Both outputs gzip by default, as scrapeflux does.
	if strings.EqualFold(o.ContentEncoding, "identity") {
		c.flags = append(c.flags, "--influx-gzip=false")
	}
	if t := duration(o.Timeout, ""); t != "" {
		c.flags = append(c.flags, "--influx-timeout "+t)
	}
	if o.TLSCA != "" {
		c.flags = append(c.flags, "--influx-ca-file "+shellQuote(o.TLSCA))
	}
	if o.TLSCert != "" {
		c.flags = append(c.flags, "--influx-cert-file "+shellQuote(o.TLSCert), "--influx-key-file "+shellQuote(o.TLSKey))
	}
	if o.InsecureSkipVerify {
		c.flags = append(c.flags, "--influx-insecure-skip-verify")
	}
}

// render writes the config file with its comments.
func (c *converter) render(name, interval string) (string, error) {
	var b strings.Builder
	fmt.Fprintf(&b, "# scrapeflux configuration converted from %s by `scrapeflux convert telegraf`.\n", name)
	b.WriteString("# Run it with:\n#   scrapeflux run --config scrapeflux.yml")
	for _, f := range c.flags {
		b.WriteString(" \\\n#     " + f)
	}
	b.WriteString("\n")
	if len(c.secrets) > 0 {
		b.WriteString("# Secret files to create first (mode 0600): " + strings.Join(unique(c.secrets), ", ") + "\n")
	}
	if len(c.notes) > 0 {
		b.WriteString("#\n# Not carried over, and what to do instead:\n")
		for _, n := range c.notes {
			b.WriteString("#   - " + n + "\n")
		}
	}
	b.WriteString("\n")
	doc := struct {
		Global map[string]string `yaml:"global"`
		Jobs   []convJob         `yaml:"jobs"`
	}{Global: map[string]string{"scrape_interval": interval}, Jobs: c.jobs}
	y, err := yaml.Marshal(doc)
	if err != nil {
		return "", err
	}
	b.Write(y)
	return b.String(), nil
}

// duration reads a Telegraf duration: "10s", or an integer of seconds.
func duration(v any, def string) string {
	switch d := v.(type) {
	case string:
		if _, err := time.ParseDuration(d); err == nil {
			return d
		}
	case int64:
		return (time.Duration(d) * time.Second).String()
	}
	return def
}

func setIf(m map[string]any, k, v string) {
	if v != "" {
		m[k] = v
	}
}

func shellQuote(s string) string {
	if regexp.MustCompile(`^[A-Za-z0-9_./:=@,+-]+$`).MatchString(s) {
		return s
	}
	return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'"
}

func unique(s []string) []string {
	seen := map[string]bool{}
	var out []string
	for _, x := range s {
		if !seen[x] {
			seen[x] = true
			out = append(out, x)
		}
	}
	return out
}
