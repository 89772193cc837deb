// Package discovery finds the endpoints to scrape. It is the first stage of
// the pipeline: discoverers emit full snapshots of targets, which the scrape
// pool reconciles against the loops it runs.
package discovery

import (
	"context"
	"fmt"
	"hash/fnv"
	"net/url"
	"slices"
	"sort"
	"strings"
	"sync"
)

// Tag is one identity tag carried by every point of a target.
type Tag struct {
	Key, Value string
}

// Target is one endpoint to scrape.
type Target struct {
	// URL is the full scrape URL (scheme, host:port, path, query).
	URL string
	// Tags identify the target on every point it produces (job, instance,
	// and for Consul targets node, datacenter and chosen service meta). They
	// are sorted by key and win over exposed labels of the same name.
	Tags []Tag
	// Meta are discovery labels (__meta_consul_*) that target relabeling
	// may read; they are not written.
	Meta map[string]string
}

// Key identifies a target across snapshots: two targets with the same key
// are the same scrape loop.
func (t *Target) Key() string {
	var b strings.Builder
	b.WriteString(t.URL)
	for _, tg := range t.Tags {
		b.WriteByte(0)
		b.WriteString(tg.Key)
		b.WriteByte('=')
		b.WriteString(tg.Value)
	}
	keys := make([]string, 0, len(t.Meta))
	for k := range t.Meta {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		b.WriteByte(1)
		b.WriteString(k)
		b.WriteByte('=')
		b.WriteString(t.Meta[k])
	}
	return b.String()
}

// Redacted is the URL with any password in it replaced by "xxxxx", for
// logs and pages.
func (t *Target) Redacted() string {
	u, err := url.Parse(t.URL)
	if err != nil {
		return "<unparsable URL>"
	}
	return u.Redacted()
}

// Hash is a stable hash of the target's key, used to spread scrape offsets.
func (t *Target) Hash() uint64 {
	h := fnv.New64a()
	h.Write([]byte(t.Key()))
	return h.Sum64()
}

// Tag returns the value of the identity tag named key, or "".
func (t *Target) Tag(key string) string {
	for _, tg := range t.Tags {
		if tg.Key == key {
			return tg.Value
		}
	}
	return ""
}

// NewTarget builds a target for rawURL with job and instance tags plus the
// extra tags given. instance defaults to the URL's host:port.
func NewTarget(rawURL, job string, extra ...Tag) (Target, error) {
	if !strings.Contains(rawURL, "://") {
		return Target{}, fmt.Errorf("target URL %q has no scheme: write http://%s (or https://)", rawURL, rawURL)
	}
	u, err := url.Parse(rawURL)
	if err != nil {
		return Target{}, fmt.Errorf("cannot parse target URL %q: %w", rawURL, err)
	}
	if u.Scheme != "http" && u.Scheme != "https" {
		return Target{}, fmt.Errorf("target URL %q: scheme must be http or https", rawURL)
	}
	if u.Host == "" {
		return Target{}, fmt.Errorf("target URL %q: missing host", rawURL)
	}
	if u.Path == "" {
		u.Path = "/metrics"
	}
	tags := []Tag{{"job", job}, {"instance", u.Host}}
	for _, e := range extra {
		if e.Value == "" {
			continue
		}
		tags = slices.DeleteFunc(tags, func(t Tag) bool { return t.Key == e.Key })
		tags = append(tags, e)
	}
	sort.Slice(tags, func(i, j int) bool { return tags[i].Key < tags[j].Key })
	return Target{URL: u.String(), Tags: tags}, nil
}

// Discoverer finds targets. Run sends a full snapshot of its targets every
// time the set changes, starting with one as soon as it knows its targets,
// and returns nil when ctx is cancelled. It never closes ch. On errors it
// keeps its last good snapshot (it does not send an empty one) and retries.
type Discoverer interface {
	Run(ctx context.Context, ch chan<- []Target) error
}

// StaticConfig is a job's static_targets: URLs scraped as they are.
type StaticConfig []string

func init() { RegisterConfig("static_targets", false, &StaticConfig{}) }

// Name implements Config.
func (*StaticConfig) Name() string { return "static" }

// Validate implements Config.
func (c *StaticConfig) Validate(o DiscovererOptions) error {
	for _, u := range *c {
		if _, err := NewTarget(u, o.Job); err != nil {
			return err
		}
	}
	return nil
}

// NewDiscoverer implements Config.
func (c *StaticConfig) NewDiscoverer(o DiscovererOptions) (Discoverer, error) {
	return NewStatic(o.Job, *c)
}

// Static is a discoverer of a fixed list of targets.
type Static struct {
	Targets []Target
}

// NewStatic builds a static discoverer from URLs, all under one job.
func NewStatic(job string, urls []string) (*Static, error) {
	s := &Static{}
	seen := map[string]bool{}
	for _, raw := range urls {
		t, err := NewTarget(raw, job)
		if err != nil {
			return nil, err
		}
		if seen[t.Key()] {
			continue
		}
		seen[t.Key()] = true
		s.Targets = append(s.Targets, t)
	}
	return s, nil
}

// Run sends the static snapshot once and waits for cancellation.
func (s *Static) Run(ctx context.Context, ch chan<- []Target) error {
	snap := slices.Clone(s.Targets)
	select {
	case ch <- snap:
	case <-ctx.Done():
		return nil
	}
	<-ctx.Done()
	return nil
}

// Merge runs several discoverers and sends the union of their latest
// snapshots, deduplicated by target key, whenever any of them changes. It
// returns when ctx ends (or every discoverer returned), after every
// discoverer it started has returned. A
// discoverer that has not reported yet contributes nothing, so a source
// that is down at start does not hold back the others.
func Merge(ctx context.Context, ch chan<- []Target, ds ...Discoverer) error {
	type update struct {
		i    int
		snap []Target
	}
	ups := make(chan update)
	errc := make(chan error, len(ds))
	var wg sync.WaitGroup
	defer wg.Wait() // every discoverer has returned when Merge does
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	for i, d := range ds {
		sub := make(chan []Target)
		wg.Add(2)
		go func() {
			defer wg.Done()
			errc <- d.Run(ctx, sub)
		}()
		go func() {
			defer wg.Done()
			for {
				select {
				case s := <-sub:
					select {
					case ups <- update{i, s}:
					case <-ctx.Done():
						return
					}
				case <-ctx.Done():
					return
				}
			}
		}()
	}
	latest := make([][]Target, len(ds))
	running := len(ds)
	for {
		select {
		case u := <-ups:
			latest[u.i] = u.snap
			var all []Target
			seen := map[string]bool{}
			for _, s := range latest {
				for _, t := range s {
					if k := t.Key(); !seen[k] {
						seen[k] = true
						all = append(all, t)
					}
				}
			}
			select {
			case ch <- all:
			case <-ctx.Done():
				return nil
			}
		case err := <-errc:
			running--
			if err != nil {
				return err
			}
			if running == 0 {
				return nil
			}
		case <-ctx.Done():
			return nil
		}
	}
}
