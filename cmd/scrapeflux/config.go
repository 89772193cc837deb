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

	"github.com/prometheus/common/model"
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
	Jobs    []scrape.FileJob   `yaml:"jobs"`
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
	for i := range fc.Jobs {
		if err := fc.Jobs[i].DecodeErrors(); err != nil {
			errs = append(errs, splitErrors(decodeError(path, err))...)
		}
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
	var def scrape.FileDefaults
	for key, v := range map[string]string{"scrape_interval": fc.Global.ScrapeInterval, "scrape_timeout": fc.Global.ScrapeTimeout} {
		if v == "" {
			continue
		}
		d, err := scrape.ParseDuration(v)
		if err != nil {
			errs = append(errs, configError{file: path, line: globalLine(key), msg: "global: " + key + ": " + err.Error()})
		}
		if key == "scrape_interval" {
			def.Interval = d
		} else {
			def.Timeout = d
		}
	}
	seen := map[string]bool{}
	var specs []scrape.JobSpec
	for i := range fc.Jobs {
		j := &fc.Jobs[i]
		spec, probs := j.Spec(def, consul, overrides)
		for _, p := range probs {
			if p.Line > 0 {
				errs = append(errs, configError{file: path, line: p.Line, msg: fmt.Sprintf("jobs[%d] (%s): %s: %v", i, j.Name, p.Field, p.Err)})
				continue
			}
			fail(i, p.Field, "%v", p.Err)
		}
		if j.Name == "" {
			continue
		}
		if seen[j.Name] {
			fail(i, "job_name", "%q is used twice", j.Name)
		}
		seen[j.Name] = true
		// The layout is the sink's to judge.
		if j.Layout != "" {
			if _, err := sink.ParseLayout(j.Layout); err != nil {
				fail(i, "layout", "%v", err)
			}
		}
		specs = append(specs, spec)
	}
	if len(errs) > 0 {
		return nil, errors.Join(errs...)
	}
	return specs, nil
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
			if f.Type.PkgPath() == "" || strings.HasSuffix(f.Type.PkgPath(), "scrapeflux") || strings.HasSuffix(f.Type.PkgPath(), "/scrape") || strings.HasSuffix(f.Type.PkgPath(), "/discovery") {
				walk(f.Type)
			}
		}
	}
	walk(reflect.TypeOf(fileConfig{}))
	for _, k := range discovery.SourceKeys() {
		keys = append(keys, k)
		t, _, _ := discovery.SourceType(k)
		walk(t)
	}
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
			if data, rerr := os.ReadFile(path); rerr == nil {
				if ls := strings.Split(string(data), "\n"); line >= 1 && line <= len(ls) && strings.Contains(ls[line-1], "\t") {
					return configError{file: path, line: line, msg: m[2] + ": the line holds a tab, and YAML indents with spaces only"}
				}
			}
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
