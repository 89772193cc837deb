package discovery

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/fsnotify/fsnotify"
	"github.com/prometheus/common/model"
	"gopkg.in/yaml.v3"
)

// The target lists Prometheus, vmagent and Alloy users already keep: files
// (file_sd) and HTTP endpoints (http_sd), in Prometheus's format, a list
// of groups:
//
//	[{"targets": ["10.0.0.1:9323", ...], "labels": {"env": "prod", ...}}]
//
// A group's labels become the tags of its targets; __scheme__ and
// __metrics_path__ set the URL (http and /metrics by default), other
// labels starting with "__" are kept for target relabeling only.

// FileSDConfig is a job's file_sd_configs entry.
type FileSDConfig struct {
	// Files are paths or globs (the last path element may hold * ? []).
	Files []string `yaml:"files"`
	// RefreshInterval re-reads the files even without a change event.
	RefreshInterval model.Duration `yaml:"refresh_interval"`
}

// HTTPSDConfig is a job's http_sd_configs entry.
type HTTPSDConfig struct {
	URL             string         `yaml:"url"`
	RefreshInterval model.Duration `yaml:"refresh_interval"`
}

// Defaults of the refresh intervals, as Prometheus's.
const (
	DefaultFileRefresh = 5 * time.Minute
	DefaultHTTPRefresh = time.Minute
)

// targetGroup is one group of Prometheus's file_sd and http_sd format.
type targetGroup struct {
	Targets []string          `json:"targets" yaml:"targets"`
	Labels  map[string]string `json:"labels" yaml:"labels"`
}

// groupTargets turns groups into targets of job; meta are discovery
// labels every target gets (__meta_filepath, __meta_url). A target that
// makes no URL is a problem, the others still count.
func groupTargets(job string, groups []targetGroup, meta map[string]string) ([]Target, []string) {
	var out []Target
	var probs []string
	for _, g := range groups {
		scheme, path := "http", "/metrics"
		var tags []Tag
		m := map[string]string{}
		maps := []map[string]string{meta, g.Labels}
		for _, ls := range maps {
			for k, v := range ls {
				switch {
				case k == "__scheme__":
					scheme = v
				case k == "__metrics_path__":
					path = v
				case strings.HasPrefix(k, "__"):
					m[k] = v
				default:
					tags = append(tags, Tag{k, v})
				}
			}
		}
		for _, hp := range g.Targets {
			if hp == "" {
				continue
			}
			if !strings.HasPrefix(path, "/") {
				path = "/" + path
			}
			t, err := NewTarget(scheme+"://"+hp+path, job, tags...)
			if err != nil {
				probs = append(probs, err.Error())
				continue
			}
			if len(m) > 0 {
				t.Meta = make(map[string]string, len(m))
				for k, v := range m {
					t.Meta[k] = v
				}
			}
			out = append(out, t)
		}
	}
	return out, probs
}

// File discovers targets from files, re-read when they change (fsnotify
// on their directories) and every refresh interval. A file that cannot be
// read or parsed keeps the targets it gave last, and is reported.
type File struct {
	job string
	cfg FileSDConfig
	log *slog.Logger
	statusKeeper
}

func init() {
	RegisterConfig("file_sd_configs", true, &FileSDConfig{})
	RegisterConfig("http_sd_configs", true, &HTTPSDConfig{})
}

// Name implements Config.
func (*FileSDConfig) Name() string { return "file_sd" }

// Validate implements Config.
func (c *FileSDConfig) Validate(DiscovererOptions) error {
	if len(c.Files) == 0 {
		return errors.New("files must list at least one path")
	}
	for _, f := range c.Files {
		if _, err := filepath.Match(filepath.Base(f), ""); err != nil {
			return fmt.Errorf("bad pattern %q: %w", f, err)
		}
		if ext := filepath.Ext(f); ext != ".json" && ext != ".yml" && ext != ".yaml" {
			return fmt.Errorf("%q must end in .json, .yml or .yaml", f)
		}
	}
	return nil
}

// NewDiscoverer implements Config.
func (c *FileSDConfig) NewDiscoverer(o DiscovererOptions) (Discoverer, error) {
	return NewFile(o.Job, *c, o.Logger)
}

// NewFile makes a file discoverer for job.
func NewFile(job string, cfg FileSDConfig, log *slog.Logger) (*File, error) {
	if err := cfg.Validate(DiscovererOptions{Job: job}); err != nil {
		return nil, err
	}
	if cfg.RefreshInterval <= 0 {
		cfg.RefreshInterval = model.Duration(DefaultFileRefresh)
	}
	return &File{job: job, cfg: cfg, log: log}, nil
}

// statusKeeper keeps a discoverer's Status.
type statusKeeper struct {
	stMu   sync.Mutex
	status Status
}

// Status returns how the discovery is doing.
func (k *statusKeeper) Status() Status {
	k.stMu.Lock()
	defer k.stMu.Unlock()
	return k.status
}

// record notes a read: failed with problem, or in full when it is "".
func (k *statusKeeper) record(problem string) {
	k.stMu.Lock()
	defer k.stMu.Unlock()
	if problem == "" {
		k.status.Err, k.status.ErrSince, k.status.LastSuccess = "", time.Time{}, time.Now()
		return
	}
	if k.status.Err == "" {
		k.status.ErrSince = time.Now()
	}
	k.status.Err = problem
}

// sender sends a discoverer's snapshots: the first, then each change.
type sender struct {
	sent    []Target
	started bool
}

// send reports false when ctx ended first.
func (s *sender) send(ctx context.Context, ch chan<- []Target, targets []Target) bool {
	if s.started && sameTargets(s.sent, targets) {
		return true
	}
	select {
	case ch <- targets:
		s.sent, s.started = targets, true
		return true
	case <-ctx.Done():
		return false
	}
}

// Run watches the files until ctx ends.
func (f *File) Run(ctx context.Context, ch chan<- []Target) error {
	w, err := fsnotify.NewWatcher()
	if err != nil {
		f.log.Warn("cannot watch the file_sd files for changes; reading them every refresh interval", "err", err)
	} else {
		defer w.Close()
		dirs := map[string]bool{}
		for _, p := range f.cfg.Files {
			dirs[filepath.Dir(p)] = true
		}
		for d := range dirs {
			if err := w.Add(d); err != nil {
				f.log.Warn("cannot watch a file_sd directory; reading it every refresh interval", "dir", d, "err", err)
			}
		}
	}
	var events <-chan fsnotify.Event
	if w != nil {
		events = w.Events
	}
	tick := time.NewTicker(time.Duration(f.cfg.RefreshInterval))
	defer tick.Stop()
	last := map[string][]Target{} // by file: what it gave last
	var out sender
	said := ""
	for {
		targets, probs := f.read(last)
		f.record(strings.Join(probs, "; "))
		if msg := strings.Join(probs, "; "); msg != said {
			if msg != "" {
				f.log.Warn("cannot read every file_sd file; keeping what each gave last", "problems", msg)
			} else if said != "" {
				f.log.Info("file_sd files readable again", "targets", len(targets))
			}
			said = msg
		}
		if !out.send(ctx, ch, targets) {
			return nil
		}
		// Wait for a change (several events in a row are one change) or
		// the refresh.
		select {
		case <-ctx.Done():
			return nil
		case <-tick.C:
		case <-events:
			debounce := time.NewTimer(100 * time.Millisecond)
		drain:
			for {
				select {
				case <-events:
				case <-debounce.C:
					break drain
				case <-ctx.Done():
					debounce.Stop()
					return nil
				}
			}
		}
	}
}

// read reads every file the patterns match; a file that fails keeps its
// last targets.
func (f *File) read(last map[string][]Target) ([]Target, []string) {
	var probs []string
	seenFile := map[string]bool{}
	for _, p := range f.cfg.Files {
		matches, _ := filepath.Glob(p)
		for _, path := range matches {
			seenFile[path] = true
			data, err := os.ReadFile(path)
			if err != nil {
				probs = append(probs, fmt.Sprintf("%s: %v", path, err))
				continue
			}
			groups, err := parseGroups(data, filepath.Ext(path) == ".json")
			if err != nil {
				probs = append(probs, fmt.Sprintf("%s: %v", path, err))
				continue
			}
			ts, gprobs := groupTargets(f.job, groups, map[string]string{"__meta_filepath": path})
			for _, gp := range gprobs {
				probs = append(probs, path+": "+gp)
			}
			last[path] = ts
		}
	}
	for path := range last {
		if !seenFile[path] {
			delete(last, path) // removed: its targets go
		}
	}
	return mergeTargets(last), probs
}

// parseGroups reads Prometheus's target group list.
func parseGroups(data []byte, isJSON bool) ([]targetGroup, error) {
	var groups []targetGroup
	if len(bytes.TrimSpace(data)) == 0 {
		return nil, nil
	}
	var err error
	if isJSON {
		err = json.Unmarshal(data, &groups)
	} else {
		err = yaml.Unmarshal(data, &groups)
	}
	if err != nil {
		return nil, fmt.Errorf("not a list of target groups ([{targets: [host:port], labels: {...}}]): %w", err)
	}
	return groups, nil
}

// mergeTargets flattens targets by source, sorted, each key once.
func mergeTargets(by map[string][]Target) []Target {
	keys := make([]string, 0, len(by))
	for k := range by {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	var out []Target
	seen := map[string]bool{}
	for _, k := range keys {
		for _, t := range by[k] {
			if tk := t.Key(); !seen[tk] {
				seen[tk] = true
				out = append(out, t)
			}
		}
	}
	slices.SortFunc(out, func(a, b Target) int { return strings.Compare(a.URL, b.URL) })
	return out
}

// HTTP discovers targets from an HTTP endpoint (http_sd): GET every
// refresh interval, 200 with a JSON list of target groups. On errors it
// keeps the last good list.
type HTTP struct {
	job    string
	cfg    HTTPSDConfig
	client *http.Client
	log    *slog.Logger
	statusKeeper
}

// Name implements Config.
func (*HTTPSDConfig) Name() string { return "http_sd" }

// Validate implements Config.
func (c *HTTPSDConfig) Validate(DiscovererOptions) error {
	if !strings.HasPrefix(c.URL, "http://") && !strings.HasPrefix(c.URL, "https://") {
		return fmt.Errorf("url %q must be http:// or https://", c.URL)
	}
	return nil
}

// NewDiscoverer implements Config.
func (c *HTTPSDConfig) NewDiscoverer(o DiscovererOptions) (Discoverer, error) {
	return NewHTTP(o.Job, *c, o.Logger)
}

// NewHTTP makes an http_sd discoverer for job.
func NewHTTP(job string, cfg HTTPSDConfig, log *slog.Logger) (*HTTP, error) {
	if err := cfg.Validate(DiscovererOptions{Job: job}); err != nil {
		return nil, err
	}
	if cfg.RefreshInterval <= 0 {
		cfg.RefreshInterval = model.Duration(DefaultHTTPRefresh)
	}
	return &HTTP{job: job, cfg: cfg, client: &http.Client{Timeout: 30 * time.Second}, log: log}, nil
}

// Run polls the endpoint until ctx ends.
func (h *HTTP) Run(ctx context.Context, ch chan<- []Target) error {
	return poll(ctx, ch, time.Duration(h.cfg.RefreshInterval), h.fetch, &h.statusKeeper,
		h.log.With("url", redactedURL(h.cfg.URL)), "the http_sd endpoint")
}

// poll reads targets with read every interval until ctx ends, sending
// each change: the discoverers that ask a server (http_sd, a Swarm
// manager). On errors it keeps the last list; a failure is logged when
// it starts or changes, and its end once.
func poll(ctx context.Context, ch chan<- []Target, interval time.Duration, read func(context.Context) ([]Target, error),
	st *statusKeeper, log *slog.Logger, what string) error {
	tick := time.NewTicker(interval)
	defer tick.Stop()
	var out sender
	failing := ""
	for {
		targets, err := read(ctx)
		if ctx.Err() != nil {
			return nil
		}
		problem := ""
		if err != nil {
			problem = err.Error()
		}
		st.record(problem)
		switch {
		case err != nil && problem != failing:
			log.Warn("cannot read "+what+", keeping last targets", "err", err, "targets", len(out.sent))
			failing = problem
		case err == nil && failing != "":
			log.Info(what+" readable again", "targets", len(targets))
			failing = ""
		}
		if err == nil && !out.send(ctx, ch, targets) {
			return nil
		}
		select {
		case <-ctx.Done():
			return nil
		case <-tick.C:
		}
	}
}

// fetch reads the endpoint once.
func (h *HTTP) fetch(ctx context.Context) ([]Target, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, h.cfg.URL, nil)
	if err != nil {
		return nil, err
	}
	req.Header.Set("Accept", "application/json")
	resp, err := h.client.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("answered %s", resp.Status)
	}
	data, err := io.ReadAll(io.LimitReader(resp.Body, 64<<20))
	if err != nil {
		return nil, err
	}
	groups, err := parseGroups(data, true)
	if err != nil {
		return nil, err
	}
	ts, probs := groupTargets(h.job, groups, map[string]string{"__meta_url": redactedURL(h.cfg.URL)})
	if len(probs) > 0 {
		h.log.Debug("http_sd targets skipped", "problems", strings.Join(probs, "; "))
	}
	return mergeTargets(map[string][]Target{"": ts}), nil
}

// redactedURL is u with any password replaced, for logs and labels.
func redactedURL(u string) string {
	if p, err := url.Parse(u); err == nil {
		return p.Redacted()
	}
	return "<unparsable URL>"
}
