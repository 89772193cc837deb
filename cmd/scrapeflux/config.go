package main

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"regexp"
	"strconv"
	"strings"
	"time"

	"github.com/prometheus/common/model"
	"github.com/prometheus/prometheus/model/relabel"
	"gopkg.in/yaml.v3"

	"github.com/scrapeflux/scrapeflux/discovery"
	"github.com/scrapeflux/scrapeflux/scrape"
	"github.com/scrapeflux/scrapeflux/sink"
)

// fileConfig is the --config file: several jobs, each with its targets and
// rules. Unknown fields are errors.
type fileConfig struct {
	Global struct {
		ScrapeInterval model.Duration `yaml:"scrape_interval"`
		ScrapeTimeout  model.Duration `yaml:"scrape_timeout"`
	} `yaml:"global"`
	Jobs    []jobConfig        `yaml:"jobs"`
	Cluster *clusterFileConfig `yaml:"cluster"`
}

// clusterFileConfig is the cluster: section, read at start (a reload does
// not change membership); flags win over it.
type clusterFileConfig struct {
	Name              string         `yaml:"name"`
	ReplicationFactor int            `yaml:"replication_factor"`
	Service           string         `yaml:"service"`
	TTL               model.Duration `yaml:"ttl"`
}

// readClusterSection returns the cluster: section of the config file, nil
// without one. Other sections are checked by loadConfig.
func readClusterSection(path string) (*clusterFileConfig, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("cannot read config: %w", err)
	}
	var fc struct {
		Cluster *clusterFileConfig `yaml:"cluster"`
	}
	if err := yaml.Unmarshal(data, &fc); err != nil {
		return nil, nil // loadConfig reports it, with its line
	}
	return fc.Cluster, nil
}

type jobConfig struct {
	Name                 string            `yaml:"job_name"`
	ScrapeInterval       model.Duration    `yaml:"scrape_interval"`
	ScrapeTimeout        model.Duration    `yaml:"scrape_timeout"`
	HonorTimestamps      bool              `yaml:"honor_timestamps"`
	SampleLimit          int               `yaml:"sample_limit"`
	LabelLimit           int               `yaml:"label_limit"`
	BodySizeLimit        string            `yaml:"body_size_limit"`
	Layout               string            `yaml:"layout"`
	Measurement          string            `yaml:"measurement"`
	StaticTargets        []string          `yaml:"static_targets"`
	Consul               *consulJobConfig  `yaml:"consul"`
	TLS                  scrape.TLSConfig  `yaml:"tls_config"`
	BearerTokenFile      string            `yaml:"bearer_token_file"`
	BasicAuth            *basicAuthConfig  `yaml:"basic_auth"`
	RelabelConfigs       []*relabel.Config `yaml:"relabel_configs"`
	MetricRelabelConfigs []*relabel.Config `yaml:"metric_relabel_configs"`
}

type consulJobConfig struct {
	Services []string          `yaml:"services"`
	Tag      *string           `yaml:"tag"`
	Health   string            `yaml:"health"`
	NodeMeta map[string]string `yaml:"node_meta"`
	MetaTags []string          `yaml:"meta_tags"`
}

type basicAuthConfig struct {
	Username     string `yaml:"username"`
	PasswordFile string `yaml:"password_file"`
}

// configError names the file, line and field of a problem.
type configError struct {
	file string
	line int
	msg  string
}

func (e configError) Error() string {
	if e.line > 0 {
		return fmt.Sprintf("%s:%d: %s", e.file, e.line, e.msg)
	}
	return fmt.Sprintf("%s: %s", e.file, e.msg)
}

// loadConfig reads and validates the file. consul is the connection the
// jobs' Consul discovery uses (from flags); overrides are the scrape flags
// given explicitly.
func loadConfig(path string, consul discovery.ConsulConfig, overrides func(*scrape.Config)) ([]scrape.JobSpec, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("cannot read config: %w", err)
	}
	if len(bytes.TrimSpace(data)) == 0 {
		return nil, fmt.Errorf("%s is empty: a config file needs at least a jobs: list (see configs/scrapeflux.yml)", path)
	}
	var fc fileConfig
	dec := yaml.NewDecoder(bytes.NewReader(data))
	dec.KnownFields(true)
	if err := dec.Decode(&fc); err != nil {
		return nil, decodeError(path, err)
	}
	var root yaml.Node
	_ = yaml.Unmarshal(data, &root)
	lines := nodeLines(&root)

	var errs []error
	fail := func(i int, field, format string, a ...any) {
		name := ""
		if i < len(fc.Jobs) && fc.Jobs[i].Name != "" {
			name = " (" + fc.Jobs[i].Name + ")"
		}
		errs = append(errs, configError{file: path, line: lines.of(i, field),
			msg: fmt.Sprintf("jobs[%d]%s: %s: %s", i, name, field, fmt.Sprintf(format, a...))})
	}
	if len(fc.Jobs) == 0 {
		errs = append(errs, configError{file: path, msg: "jobs: at least one job is needed"})
	}
	interval, timeout := time.Duration(fc.Global.ScrapeInterval), time.Duration(fc.Global.ScrapeTimeout)
	if interval == 0 {
		interval = scrape.DefaultInterval
	}
	seen := map[string]bool{}
	var specs []scrape.JobSpec
	for i, j := range fc.Jobs {
		if j.Name == "" {
			fail(i, "job_name", "must be set")
			continue
		}
		if seen[j.Name] {
			fail(i, "job_name", "%q is used twice", j.Name)
		}
		seen[j.Name] = true
		sc := scrape.Config{
			JobName:              j.Name,
			Interval:             interval,
			Timeout:              timeout,
			BodyLimit:            scrape.DefaultBodyLimit,
			HonorTimestamps:      j.HonorTimestamps,
			SampleLimit:          j.SampleLimit,
			LabelLimit:           j.LabelLimit,
			RelabelConfigs:       j.RelabelConfigs,
			MetricRelabelConfigs: j.MetricRelabelConfigs,
			TLS:                  j.TLS,
			Layout:               j.Layout,
			Measurement:          j.Measurement,
		}
		if j.Layout != "" {
			if _, err := sink.ParseLayout(j.Layout); err != nil {
				fail(i, "layout", "%v", err)
			}
		}
		if j.ScrapeInterval != 0 {
			sc.Interval = time.Duration(j.ScrapeInterval)
		}
		if j.ScrapeTimeout != 0 {
			sc.Timeout = time.Duration(j.ScrapeTimeout)
		}
		if sc.Timeout == 0 {
			sc.Timeout = min(scrape.DefaultTimeout, sc.Interval)
		}
		if j.BodySizeLimit != "" {
			var b byteSize
			if err := b.Set(j.BodySizeLimit); err != nil {
				fail(i, "body_size_limit", "%v", err)
			}
			sc.BodyLimit = int64(b)
		}
		if j.BearerTokenFile != "" {
			if sc.BearerToken, err = readSecret(j.BearerTokenFile, ""); err != nil {
				fail(i, "bearer_token_file", "%v", err)
			}
		}
		if j.BasicAuth != nil {
			sc.BasicAuthUser = j.BasicAuth.Username
			if j.BasicAuth.Username == "" {
				fail(i, "basic_auth", "username must be set")
			}
			if j.BasicAuth.PasswordFile != "" {
				if sc.BasicAuthPassword, err = readSecret(j.BasicAuth.PasswordFile, ""); err != nil {
					fail(i, "basic_auth", "%v", err)
				}
			}
		}
		if overrides != nil {
			overrides(&sc)
		}
		if err := sc.Validate(); err != nil {
			for _, e := range splitErrors(err) {
				field := "scrape_interval"
				switch {
				case strings.Contains(e.Error(), "timeout"):
					field = "scrape_timeout"
				case strings.HasPrefix(e.Error(), "relabel_configs"):
					field = "relabel_configs"
				case strings.HasPrefix(e.Error(), "metric_relabel_configs"):
					field = "metric_relabel_configs"
				case strings.HasPrefix(e.Error(), "tls_config"):
					field = "tls_config"
				case strings.Contains(e.Error(), "limit"):
					field = "sample_limit"
				}
				fail(i, field, "%v", e)
			}
		}
		spec := scrape.JobSpec{Name: j.Name, Scrape: sc}
		for _, u := range j.StaticTargets {
			if _, err := discovery.NewTarget(u, j.Name); err != nil {
				fail(i, "static_targets", "%v", err)
			}
		}
		spec.Static = j.StaticTargets
		if j.Consul != nil {
			cc := consul
			cc.Services = j.Consul.Services
			if j.Consul.Tag != nil {
				cc.Tag = *j.Consul.Tag
			} else if len(cc.Services) > 0 {
				cc.Tag = ""
			}
			if j.Consul.Health != "" {
				cc.Health = j.Consul.Health
			}
			cc.NodeMeta = j.Consul.NodeMeta
			cc.MetaTags = j.Consul.MetaTags
			if err := cc.Validate(); err != nil {
				fail(i, "consul", "%v", err)
			}
			spec.Consul = &cc
		}
		if len(spec.Static) == 0 && spec.Consul == nil {
			fail(i, "static_targets", "a job needs static_targets or consul")
		}
		specs = append(specs, spec)
	}
	if len(errs) > 0 {
		return nil, errors.Join(errs...)
	}
	return specs, nil
}

var yamlLineError = regexp.MustCompile(`line (\d+): (.*)`)
var unknownField = regexp.MustCompile(`field (\S+) not found in type \S+`)

// decodeError turns yaml's messages into file:line: message, one a line.
func decodeError(path string, err error) error {
	var te *yaml.TypeError
	if !errors.As(err, &te) {
		msg := strings.TrimPrefix(err.Error(), "yaml: ")
		if m := yamlLineError.FindStringSubmatch(msg); m != nil {
			line, _ := strconv.Atoi(m[1])
			return configError{file: path, line: line, msg: m[2]}
		}
		return configError{file: path, msg: msg}
	}
	var errs []error
	for _, e := range te.Errors {
		m := yamlLineError.FindStringSubmatch(e)
		if m == nil {
			errs = append(errs, configError{file: path, msg: e})
			continue
		}
		line, _ := strconv.Atoi(m[1])
		errs = append(errs, configError{file: path, line: line, msg: unknownField.ReplaceAllString(m[2], "unknown field $1")})
	}
	return errors.Join(errs...)
}

func splitErrors(err error) []error {
	if j, ok := err.(interface{ Unwrap() []error }); ok {
		return j.Unwrap()
	}
	return []error{err}
}

// lineIndex finds where jobs and their fields start in the file.
type lineIndex struct {
	jobs []*yaml.Node
}

func nodeLines(root *yaml.Node) lineIndex {
	var li lineIndex
	if root.Kind != yaml.DocumentNode || len(root.Content) == 0 {
		return li
	}
	top := root.Content[0]
	for k := 0; k+1 < len(top.Content); k += 2 {
		if top.Content[k].Value == "jobs" && top.Content[k+1].Kind == yaml.SequenceNode {
			li.jobs = top.Content[k+1].Content
		}
	}
	return li
}

func (li lineIndex) of(job int, field string) int {
	if job >= len(li.jobs) {
		return 0
	}
	n := li.jobs[job]
	for k := 0; k+1 < len(n.Content); k += 2 {
		if n.Content[k].Value == field {
			return n.Content[k].Line
		}
	}
	return n.Line
}
