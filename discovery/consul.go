// This file is long on purpose: the Consul client's bounded transport, the
// two blocking watches and the refresh that share it are one idea (the
// connection bound) and are read together.

package discovery

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"os"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/hashicorp/consul/api"
	"golang.org/x/sync/errgroup"

	"github.com/scrapeflux/scrapeflux/discovery/backoff"
)

// ConsulConfig says which Consul services become targets.
type ConsulConfig struct {
	// Addr is host:port or a URL of the Consul HTTP API.
	Addr string
	// Scheme is http or https; a URL in Addr wins.
	Scheme string
	// Token is the ACL token (read from a file or the environment by the
	// caller, never logged).
	Token      string
	Datacenter string
	// Services to watch; empty means every service carrying Tag.
	Services []string
	// Tag a service (or, with Services, an instance) must carry; empty
	// means any.
	Tag string
	// NodeMeta filters nodes by metadata.
	NodeMeta map[string]string
	// Health is "passing" (default: only instances whose checks all pass)
	// or "any".
	Health string
	// MetaTags are service meta keys copied to every point as tags.
	MetaTags []string
	// AllowStale lets any server answer, sparing the leader.
	AllowStale bool
	// TLS to Consul.
	CAFile, CertFile, KeyFile string
	InsecureSkipVerify        bool
	// WaitTime of blocking queries.
	WaitTime time.Duration
	// MinBackoff and MaxBackoff bound retries after errors.
	MinBackoff, MaxBackoff time.Duration
	// Fetchers bounds the concurrent per-service requests of a refresh.
	Fetchers int
	// Filter is a Consul filter expression on the instances read
	// (Prometheus 3's consul_sd filter), e.g. `Service.Meta.env == "prod"`.
	Filter string
	// Metrics count the connection's requests (nil: nothing counted).
	Metrics *Metrics `json:"-" yaml:"-"`
}

// DefaultConsulConfig returns the defaults.
func DefaultConsulConfig() ConsulConfig {
	return ConsulConfig{
		Addr:       "127.0.0.1:8500",
		Scheme:     "http",
		Tag:        "prometheus",
		Health:     "passing",
		AllowStale: true,
		WaitTime:   30 * time.Second,
		MinBackoff: time.Second,
		MaxBackoff: 30 * time.Second,
		Fetchers:   4,
	}
}

// Validate rejects a config that cannot work, naming the field.
func (c *ConsulConfig) Validate() error {
	var errs []error
	if c.Addr == "" {
		errs = append(errs, errors.New("consul address must be set"))
	}
	if c.Health != "passing" && c.Health != "any" {
		errs = append(errs, fmt.Errorf("consul health %q: want passing or any", c.Health))
	}
	if c.Scheme != "http" && c.Scheme != "https" {
		errs = append(errs, fmt.Errorf("consul scheme %q: want http or https", c.Scheme))
	}
	if (c.CertFile == "") != (c.KeyFile == "") {
		errs = append(errs, errors.New("consul cert file and key file go together"))
	}
	for _, f := range []string{c.CAFile, c.CertFile, c.KeyFile} {
		if f == "" {
			continue
		}
		if _, err := os.Stat(f); err != nil {
			errs = append(errs, fmt.Errorf("consul TLS file: %w", err))
		}
	}
	if c.WaitTime <= 0 || c.MinBackoff <= 0 || c.MaxBackoff < c.MinBackoff || c.Fetchers <= 0 {
		errs = append(errs, errors.New("consul wait time, backoff and fetchers must be positive"))
	}
	return errors.Join(errs...)
}

// minRefreshGap rate-limits refreshes of the instance lists.
const minRefreshGap = 200 * time.Millisecond

// Consul discovers targets from the Consul catalog.
//
// However many services match, it holds at most two blocking queries (the
// catalog's service list, and the health state of all checks) plus
// Fetchers short requests during a refresh: one watch per service would
// exhaust Consul's per-client connection limit. When either watch sees a
// change, every matching service's instances are read again (stale reads
// by default) and a snapshot is sent if the set of targets changed.
type Consul struct {
	cfg    ConsulConfig
	client *api.Client
	log    *slog.Logger

	skipMu  sync.Mutex        // guards skipped
	skipped map[string]string // instance and reason -> service, said once

	stMu   sync.Mutex // guards status
	status Status
}

// Status is how a discoverer is doing, for pages and metrics.
type Status struct {
	// Err is the last error while discovery fails, since ErrSince; empty
	// while it works.
	Err      string
	ErrSince time.Time
	// LastSuccess is when a snapshot was last read in full.
	LastSuccess time.Time
	// Skipped are instances read but not scraped, with why.
	Skipped []string
}

// Status returns how discovery is doing.
func (c *Consul) Status() Status {
	c.stMu.Lock()
	st := c.status
	c.stMu.Unlock()
	c.skipMu.Lock()
	for k, svc := range c.skipped {
		id, why, _ := strings.Cut(k, "\x00")
		st.Skipped = append(st.Skipped, svc+" "+id+": "+why)
	}
	c.skipMu.Unlock()
	sort.Strings(st.Skipped)
	return st
}

// failed records a failing query or read; ok a full read.
func (c *Consul) failed(err error) {
	c.stMu.Lock()
	defer c.stMu.Unlock()
	if c.status.Err == "" {
		c.status.ErrSince = time.Now()
	}
	c.status.Err = err.Error()
}

func (c *Consul) recovered() {
	c.stMu.Lock()
	defer c.stMu.Unlock()
	c.status.Err, c.status.ErrSince = "", time.Time{}
}

func (c *Consul) ok() {
	c.stMu.Lock()
	defer c.stMu.Unlock()
	c.status.Err, c.status.ErrSince, c.status.LastSuccess = "", time.Time{}, time.Now()
}

// NewConsul makes a Consul discoverer.
func NewConsul(cfg ConsulConfig, log *slog.Logger) (*Consul, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	c, err := NewAPIClient(cfg)
	if err != nil {
		return nil, err
	}
	return &Consul{cfg: cfg, client: c, log: log}, nil
}

// NewAPIClient makes the Consul API client every part of scrapeflux uses:
// address, TLS and token from cfg, and a transport that holds at most
// cfg.Fetchers+2 connections (Consul allows 200 per client address,
// shared with everything else on the host).
func NewAPIClient(cfg ConsulConfig) (*api.Client, error) {
	acfg := api.DefaultNonPooledConfig()
	acfg.Address = cfg.Addr
	acfg.Scheme = cfg.Scheme
	if u, err := url.Parse(cfg.Addr); err == nil && (u.Scheme == "http" || u.Scheme == "https") {
		acfg.Address, acfg.Scheme = u.Host, u.Scheme
	}
	acfg.Token = cfg.Token
	acfg.TokenFile = ""
	acfg.Datacenter = cfg.Datacenter
	acfg.WaitTime = cfg.WaitTime
	acfg.TLSConfig = api.TLSConfig{CAFile: cfg.CAFile, CertFile: cfg.CertFile, KeyFile: cfg.KeyFile, InsecureSkipVerify: cfg.InsecureSkipVerify}
	conns := max(cfg.Fetchers, 1) + 2
	tr := &http.Transport{
		Proxy:               http.ProxyFromEnvironment,
		DialContext:         (&net.Dialer{Timeout: 10 * time.Second, KeepAlive: 30 * time.Second}).DialContext,
		MaxIdleConnsPerHost: conns,
		MaxConnsPerHost:     conns,
		IdleConnTimeout:     90 * time.Second,
	}
	hc, err := api.NewHttpClient(tr, acfg.TLSConfig)
	if err != nil {
		return nil, fmt.Errorf("cannot set up Consul TLS: %w", err)
	}
	// Consul adds up to wait/16 of jitter to a blocking query.
	hc.Timeout = cfg.WaitTime + cfg.WaitTime/16 + 10*time.Second
	acfg.HttpClient = hc
	c, err := api.NewClient(acfg)
	if err != nil {
		return nil, fmt.Errorf("cannot create Consul client: %w", err)
	}
	return c, nil
}

// Run watches Consul and sends snapshots until ctx is cancelled. On errors
// it keeps the last good snapshot and retries with backoff.
//
// What it asks costs in proportion to what changes, never to the
// catalog's size: the two blocking queries wake the refresher only when
// their index moved, and a refresh reads only the services a change
// touched: those whose checks changed (the health state lists every
// check with its service and node), those on a node whose node checks
// changed, new ones, and (when the catalog changed without a check
// telling which service) the services that have no checks.
func (c *Consul) Run(ctx context.Context, ch chan<- []Target) error {
	st := newConsulState()
	g, gctx := errgroup.WithContext(ctx)
	g.Go(func() error {
		return c.watch(gctx, queryCatalog, st.catalogFailed, func(q *api.QueryOptions) (uint64, error) {
			m, meta, err := c.client.Catalog().Services(q)
			if err != nil {
				return 0, err
			}
			st.catalog(c.match(m), meta.LastIndex)
			return meta.LastIndex, nil
		})
	})
	g.Go(func() error {
		return c.watch(gctx, queryHealth, st.healthFailed, func(q *api.QueryOptions) (uint64, error) {
			checks, meta, err := c.client.Health().State(api.HealthAny, q)
			if err != nil {
				return 0, err
			}
			st.health(checks, meta.LastIndex)
			return meta.LastIndex, nil
		})
	})
	g.Go(func() error {
		var last []Target
		sent := false
		failing := ""
		attempt := 0
		for {
			select {
			case <-gctx.Done():
				return nil
			case <-st.changed:
			}
			names, dirty, ok := st.take()
			if !ok {
				continue
			}
			fresh, err := c.refresh(gctx, dirty)
			if err != nil {
				if gctx.Err() != nil {
					return nil
				}
				st.retry(dirty)
				c.failed(err)
				attempt++
				if msg := err.Error(); msg != failing {
					c.log.Warn("cannot read Consul services, keeping last targets", "err", err, "targets", len(last))
					failing = msg
				}
				if !backoff.Sleep(gctx, backoff.Delay(attempt, c.cfg.MinBackoff, c.cfg.MaxBackoff)) {
					return nil
				}
				continue
			}
			targets := st.merge(names, fresh)
			c.ok()
			if failing != "" {
				c.log.Info("Consul services readable again", "targets", len(targets))
				failing, attempt = "", 0
			}
			if !sent || !sameTargets(last, targets) {
				select {
				case ch <- targets:
					last, sent = targets, true
				case <-gctx.Done():
					return nil
				}
			}
			// Changes that come in a burst (a whole swarm restarting) are
			// read together, at most five times a second.
			if !backoff.Sleep(gctx, minRefreshGap) {
				return nil
			}
		}
	})
	return g.Wait()
}

// consulState is what the two watches learnt and the refresher has not
// read yet, and the instances read so far.
type consulState struct {
	changed chan struct{} // capacity 1: something is dirty

	mu       sync.Mutex // guards the fields below
	names    []string   // the services to watch, sorted; nil until the catalog answered
	known    bool
	catIndex uint64
	hIndex   uint64
	hKnown   bool // the health state answered (or failed) once
	// catReset: the catalog query failed since its last answer; a
	// restarted Consul may answer with the very index it had before.
	catReset bool
	svcSig   map[string]string   // service -> its checks' state
	nodeSig  map[string]string   // node -> its node checks' state
	dirty    map[string]bool     // services to read again
	cache    map[string][]Target // service -> its instances, as last read
}

func newConsulState() *consulState {
	return &consulState{changed: make(chan struct{}, 1), svcSig: map[string]string{}, nodeSig: map[string]string{},
		dirty: map[string]bool{}, cache: map[string][]Target{}}
}

func (s *consulState) signal() {
	select {
	case s.changed <- struct{}{}:
	default:
	}
}

// catalog takes an answer of the service list.
func (s *consulState) catalog(names []string, index uint64) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.known && !s.catReset && index == s.catIndex && slices.Equal(names, s.names) {
		return // a blocking query that timed out: nothing changed
	}
	s.catReset = false
	was := map[string]bool{}
	for _, n := range s.names {
		was[n] = true
	}
	for _, n := range names {
		_, checked := s.svcSig[n]
		// New services, and (the catalog changed, no check says which
		// service) those without checks.
		if !was[n] || !checked || !s.known {
			s.dirty[n] = true
		}
	}
	keep := map[string]bool{}
	for _, n := range names {
		keep[n] = true
	}
	for n := range s.cache {
		if !keep[n] {
			delete(s.cache, n)
			delete(s.dirty, n)
		}
	}
	s.names, s.known, s.catIndex = names, true, index
	s.signal()
}

// health takes an answer of the health state: every check of the
// datacenter, with its node and service.
func (s *consulState) health(checks api.HealthChecks, index uint64) {
	svc := map[string][]string{}
	node := map[string][]string{}
	for _, ch := range checks {
		entry := ch.Node + "/" + ch.ServiceID + "/" + ch.CheckID + "=" + ch.Status
		if ch.ServiceName == "" {
			node[ch.Node] = append(node[ch.Node], entry)
		} else {
			svc[ch.ServiceName] = append(svc[ch.ServiceName], entry)
		}
	}
	sig := func(m map[string][]string) map[string]string {
		out := make(map[string]string, len(m))
		for k, v := range m {
			sort.Strings(v)
			out[k] = strings.Join(v, ",")
		}
		return out
	}
	svcSig, nodeSig := sig(svc), sig(node)
	s.mu.Lock()
	defer s.mu.Unlock()
	// No shortcut on an unchanged index: a restarted Consul may answer
	// with the index it had before; unchanged signatures cost nothing.
	first := !s.hKnown
	s.hIndex, s.hKnown = index, true
	if first {
		// The first refresh waits for this answer and reads every
		// service: nothing to compare with yet.
		s.svcSig, s.nodeSig = svcSig, nodeSig
		s.signal()
		return
	}
	any := false
	for name := range union(svcSig, s.svcSig) {
		if svcSig[name] != s.svcSig[name] {
			s.dirty[name] = true
			any = true
		}
	}
	for n := range union(nodeSig, s.nodeSig) {
		if nodeSig[n] == s.nodeSig[n] {
			continue
		}
		// A node check changed: every service with an instance there.
		for name, ts := range s.cache {
			for _, t := range ts {
				if t.Tag("node") == n {
					s.dirty[name] = true
					any = true
					break
				}
			}
		}
	}
	s.svcSig, s.nodeSig = svcSig, nodeSig
	if any {
		s.signal()
	}
}

func union(a, b map[string]string) map[string]bool {
	out := make(map[string]bool, len(a)+len(b))
	for k := range a {
		out[k] = true
	}
	for k := range b {
		out[k] = true
	}
	return out
}

// healthFailed lets refreshes go on without the health state (an ACL
// token without node:read, a failing server): services are then read
// again at every change of the catalog.
func (s *consulState) healthFailed() {
	s.mu.Lock()
	defer s.mu.Unlock()
	if !s.hKnown {
		s.hKnown = true
		s.signal()
	}
	s.svcSig = map[string]string{}
}

// catalogFailed makes the next catalog answer count as a change.
func (s *consulState) catalogFailed() {
	s.mu.Lock()
	s.catReset = true
	s.mu.Unlock()
}

// take returns the services to watch and those to read again (only
// watched ones), clearing the latter.
func (s *consulState) take() (names, dirty []string, ok bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if !s.known || !s.hKnown {
		return nil, nil, false
	}
	watched := map[string]bool{}
	for _, n := range s.names {
		watched[n] = true
	}
	for n := range s.dirty {
		if watched[n] {
			dirty = append(dirty, n)
		}
	}
	sort.Strings(dirty)
	clear(s.dirty)
	return s.names, dirty, true
}

// retry marks services dirty again after a failed read, and wakes the
// refresher (after its backoff).
func (s *consulState) retry(names []string) {
	s.mu.Lock()
	for _, n := range names {
		s.dirty[n] = true
	}
	s.mu.Unlock()
	s.signal()
}

// merge stores what was read and returns every watched service's
// instances. The same endpoint registered twice (two IDs, two services)
// is scraped once: the first by service name, then instance order, wins.
func (s *consulState) merge(names []string, fresh map[string][]Target) []Target {
	s.mu.Lock()
	defer s.mu.Unlock()
	watched := map[string]bool{}
	for _, n := range s.names {
		watched[n] = true
	}
	for n, ts := range fresh {
		if watched[n] {
			s.cache[n] = ts
		}
	}
	var out []Target
	seen := map[string]bool{}
	for _, n := range names {
		for _, t := range s.cache[n] {
			if !seen[t.URL] {
				seen[t.URL] = true
				out = append(out, t)
			}
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].URL < out[j].URL })
	return out
}

// watch runs one blocking query in a loop, following Consul's rules: the
// index resets when it goes backwards and is floored at 1, the loop is
// rate-limited, and errors back off. fn returns the new index.
func (c *Consul) watch(ctx context.Context, what string, failed func(), fn func(*api.QueryOptions) (uint64, error)) error {
	var index uint64
	attempt := 0
	backwards := 0 // answers in a row whose index went backwards
	failing := ""
	limit := time.NewTicker(200 * time.Millisecond)
	defer limit.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-limit.C:
		}
		q := (&api.QueryOptions{
			AllowStale: c.cfg.AllowStale,
			Datacenter: c.cfg.Datacenter,
			NodeMeta:   c.cfg.NodeMeta,
			WaitIndex:  index,
			WaitTime:   c.cfg.WaitTime,
		}).WithContext(ctx)
		start := time.Now()
		next, err := fn(q)
		c.cfg.Metrics.observe(what, time.Since(start), err)
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			attempt++
			index = 0
			if failed != nil {
				failed()
			}
			c.failed(fmt.Errorf("%s: %w", what, err))
			if msg := err.Error(); msg != failing {
				c.log.Warn("Consul query failed, keeping last targets", "query", what, "err", err)
				failing = msg
			} else {
				c.log.Debug("Consul query still failing", "query", what, "err", err, "attempt", attempt)
			}
			if !backoff.Sleep(ctx, backoff.Delay(attempt, c.cfg.MinBackoff, c.cfg.MaxBackoff)) {
				return nil
			}
			continue
		}
		if failing != "" {
			c.log.Info("Consul query recovered", "query", what, "after_attempts", attempt)
			failing, attempt = "", 0
			c.recovered()
		}
		switch {
		case next < index:
			// The index went backwards (a restarted or misbehaving
			// server): start over, and back off while it keeps doing so,
			// since every such answer comes back at once.
			index = 0
			backwards++
			if !backoff.Sleep(ctx, backoff.Delay(backwards, c.cfg.MinBackoff, c.cfg.MaxBackoff)) {
				return nil
			}
			continue
		case next < 1:
			index = 1
		default:
			if index != 0 {
				backwards = 0 // a real advance, not the first answer after a reset
			}
			index = next
		}
	}
}

// match picks the services to watch from the catalog's service list.
func (c *Consul) match(all map[string][]string) []string {
	var out []string
	if len(c.cfg.Services) > 0 {
		for _, s := range c.cfg.Services {
			if _, ok := all[s]; ok {
				out = append(out, s)
			}
		}
	} else {
		for name, tags := range all {
			if c.cfg.Tag == "" || slices.Contains(tags, c.cfg.Tag) {
				out = append(out, name)
			}
		}
	}
	sort.Strings(out)
	return out
}

// refresh reads the instances of the named services, Fetchers at a time.
func (c *Consul) refresh(ctx context.Context, names []string) (map[string][]Target, error) {
	results := make([][]Target, len(names))
	g, gctx := errgroup.WithContext(ctx)
	g.SetLimit(c.cfg.Fetchers)
	for i, name := range names {
		g.Go(func() error {
			q := (&api.QueryOptions{AllowStale: c.cfg.AllowStale, Datacenter: c.cfg.Datacenter, NodeMeta: c.cfg.NodeMeta, Filter: c.cfg.Filter}).WithContext(gctx)
			start := time.Now()
			entries, _, err := c.client.Health().Service(name, c.cfg.Tag, c.cfg.Health == "passing", q)
			c.cfg.Metrics.observe(queryInstance, time.Since(start), err)
			if err != nil {
				return fmt.Errorf("cannot read service %s: %w", name, err)
			}
			for _, e := range entries {
				t, err := c.target(e)
				if err != nil {
					c.skip(name, e, err)
					continue
				}
				results[i] = append(results[i], t)
			}
			return nil
		})
	}
	if err := g.Wait(); err != nil {
		return nil, err
	}
	out := make(map[string][]Target, len(names))
	for i, n := range names {
		out[n] = results[i]
	}
	return out, nil
}

// skip reports an instance that cannot be scraped, once per instance and
// reason: it is read again at every change of its service.
func (c *Consul) skip(service string, e *api.ServiceEntry, err error) {
	id := service
	if e.Service != nil {
		id = e.Service.ID
	}
	key := id + "\x00" + err.Error()
	c.skipMu.Lock()
	if c.skipped == nil {
		c.skipped = map[string]string{}
	}
	_, seen := c.skipped[key]
	c.skipped[key] = service
	c.skipMu.Unlock()
	c.cfg.Metrics.skip()
	if !seen {
		c.log.Warn("skipping Consul instance", "service", service, "instance", id, "err", err)
	}
}

// NodeMeta is the service meta key naming the node a service runs on
// when it was registered through another node's agent (as a swarm
// stack's global service registers every engine in one Consul): its
// value, when set, is the node tag instead of the Consul node's name.
const NodeMeta = "node"

// target turns one Consul instance into a target.
func (c *Consul) target(e *api.ServiceEntry) (Target, error) {
	if e.Service == nil || e.Node == nil {
		return Target{}, errors.New("incomplete entry")
	}
	host := e.Service.Address
	if host == "" {
		host = e.Node.Address
	}
	if e.Service.Port <= 0 {
		return Target{}, fmt.Errorf("instance %s has no port", e.Service.ID)
	}
	scheme := e.Service.Meta["metrics_scheme"]
	if scheme == "" {
		scheme = "http"
	}
	path := e.Service.Meta["metrics_path"]
	if path == "" {
		path = "/metrics"
	}
	if !strings.HasPrefix(path, "/") {
		path = "/" + path
	}
	hostport := net.JoinHostPort(host, strconv.Itoa(e.Service.Port))
	node := e.Node.Node
	if n := e.Service.Meta[NodeMeta]; n != "" {
		node = n
	}
	extra := []Tag{{"node", node}, {"datacenter", e.Node.Datacenter}}
	for _, k := range c.cfg.MetaTags {
		extra = append(extra, Tag{k, e.Service.Meta[k]})
	}
	t, err := NewTarget(scheme+"://"+hostport+path, e.Service.Service, extra...)
	if err != nil {
		return t, err
	}
	t.Meta = map[string]string{
		"__meta_consul_address":         e.Node.Address,
		"__meta_consul_dc":              e.Node.Datacenter,
		"__meta_consul_node":            e.Node.Node,
		"__meta_consul_service":         e.Service.Service,
		"__meta_consul_service_address": e.Service.Address,
		"__meta_consul_service_id":      e.Service.ID,
		"__meta_consul_service_port":    strconv.Itoa(e.Service.Port),
		"__meta_consul_tags":            "," + strings.Join(e.Service.Tags, ",") + ",",
	}
	for k, v := range e.Service.Meta {
		t.Meta["__meta_consul_service_metadata_"+k] = v
	}
	for k, v := range e.Node.Meta {
		t.Meta["__meta_consul_metadata_"+k] = v
	}
	return t, nil
}

func sameTargets(a, b []Target) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i].Key() != b[i].Key() {
			return false
		}
	}
	return true
}
