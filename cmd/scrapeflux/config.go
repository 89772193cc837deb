// This file is long on purpose: the --config schema, its validation with
// field-tagged errors and the line lookup those errors need.

package main

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"reflect"
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
		ScrapeInterval string `yaml:"scrape_interval"`
		ScrapeTimeout  string `yaml:"scrape_timeout"`
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
	Name string `yaml:"job_name"`
	// Durations are read as text and parsed here, so a bad one is
	// reported with its line and does not stop the other checks.
	ScrapeInterval       string            `yaml:"scrape_interval"`
	ScrapeTimeout        string            `yaml:"scrape_timeout"`
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
	var errs []error
	if err := dec.Decode(&fc); err != nil {
		var te *yaml.TypeError
		if !errors.As(err, &te) {
			return nil, decodeError(path, err) // not YAML: nothing more to check
		}
		// Unknown fields and values of the wrong type: reported, and the
		// rest of the file is still checked.
		errs = append(errs, splitErrors(decodeError(path, err))...)
	}
	var root yaml.Node
	_ = yaml.Unmarshal(data, &root)
	lines := nodeLines(&root)

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
	duration := func(v string, where func(string)) time.Duration {
		if v == "" {
			return 0
		}
		d, err := model.ParseDuration(v)
		if err != nil {
			where(fmt.Sprintf("%q is not a duration: write it like 15s, 1m or 1h30m", v))
			return 0
		}
		return time.Duration(d)
	}
	globalLine := func(key string) int {
		if len(root.Content) == 0 {
			return 0
		}
		top := root.Content[0]
		for k := 0; k+1 < len(top.Content); k += 2 {
			if top.Content[k].Value == "global" {
				g := top.Content[k+1]
				for f := 0; f+1 < len(g.Content); f += 2 {
					if g.Content[f].Value == key {
						return g.Content[f].Line
					}
				}
			}
		}
		return 0
	}
	interval := duration(fc.Global.ScrapeInterval, func(m string) {
		errs = append(errs, configError{file: path, line: globalLine("scrape_interval"), msg: "global: scrape_interval: " + m})
	})
	timeout := duration(fc.Global.ScrapeTimeout, func(m string) {
		errs = append(errs, configError{file: path, line: globalLine("scrape_timeout"), msg: "global: scrape_timeout: " + m})
	})
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
		if d := duration(j.ScrapeInterval, func(m string) { fail(i, "scrape_interval", "%s", m) }); d != 0 {
			sc.Interval = d
		}
		if d := duration(j.ScrapeTimeout, func(m string) { fail(i, "scrape_timeout", "%s", m) }); d != 0 {
			sc.Timeout = d
		}
		if sc.Timeout == 0 {
			sc.Timeout = scrape.DefaultTimeoutFor(sc.Interval)
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
				var fe *scrape.FieldError
				if errors.As(e, &fe) && yamlKeyOf[fe.Field] != "" {
					field = yamlKeyOf[fe.Field]
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

// yamlKeyOf names scrape.Config's fields as a job of the file does.
var yamlKeyOf = map[string]string{
	"Interval": "scrape_interval", "Timeout": "scrape_timeout", "BodyLimit": "body_size_limit",
	"SampleLimit": "sample_limit", "LabelLimit": "label_limit", "RelabelConfigs": "relabel_configs",
	"MetricRelabelConfigs": "metric_relabel_configs", "TLS": "tls_config", "BearerToken": "bearer_token_file",
}

var yamlLineError = regexp.MustCompile(`line (\d+): (.*)`)
var unknownField = regexp.MustCompile(`field (\S+) not found in type .*`)

// knownKeys are every key the file may use, for suggestions.
var knownKeys = func() []string {
	var keys []string
	var walk func(t reflect.Type)
	walk = func(t reflect.Type) {
		for t.Kind() == reflect.Pointer || t.Kind() == reflect.Slice {
			t = t.Elem()
		}
		if t.Kind() != reflect.Struct {
			return
		}
		for i := 0; i < t.NumField(); i++ {
			f := t.Field(i)
			if k, _, _ := strings.Cut(f.Tag.Get("yaml"), ","); k != "" && k != "-" {
				keys = append(keys, k)
			}
			if f.Type.PkgPath() == "" || strings.HasSuffix(f.Type.PkgPath(), "scrapeflux") || strings.HasSuffix(f.Type.PkgPath(), "/scrape") {
				walk(f.Type)
			}
		}
	}
	walk(reflect.TypeOf(fileConfig{}))
	return keys
}()

// unknownFieldMessage says what to write instead of an unknown key.
func unknownFieldMessage(key string) string {
	if key == "scrape_configs" {
		return "unknown field scrape_configs: this is not a Prometheus config; scrapeflux's file lists jobs: (each with job_name, static_targets or consul, relabel_configs...), see configs/scrapeflux.yml"
	}
	best, dist := "", 4
	for _, k := range knownKeys {
		if d := editDistance(key, k); d < dist {
			best, dist = k, d
		}
	}
	if best != "" {
		return fmt.Sprintf("unknown field %s (did you mean %s?)", key, best)
	}
	return "unknown field " + key
}

func editDistance(a, b string) int {
	prev := make([]int, len(b)+1)
	cur := make([]int, len(b)+1)
	for j := range prev {
		prev[j] = j
	}
	for i := 1; i <= len(a); i++ {
		cur[0] = i
		for j := 1; j <= len(b); j++ {
			cost := 1
			if a[i-1] == b[j-1] {
				cost = 0
			}
			cur[j] = min(prev[j]+1, cur[j-1]+1, prev[j-1]+cost)
		}
		prev, cur = cur, prev
	}
	return prev[len(b)]
}

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
		msg := m[2]
		if u := unknownField.FindStringSubmatch(msg); u != nil {
			msg = unknownFieldMessage(u[1])
		}
		errs = append(errs, configError{file: path, line: line, msg: msg})
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
