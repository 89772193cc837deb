package discovery

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/hashicorp/consul/api"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"go.uber.org/goleak"

	"github.com/scrapeflux/scrapeflux/internal/servertest"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

var discard = slog.New(slog.NewTextHandler(io.Discard, nil))

func testConsulConfig(addr string) ConsulConfig {
	cfg := DefaultConsulConfig()
	cfg.Addr = addr
	cfg.WaitTime = 5 * time.Second
	cfg.MinBackoff, cfg.MaxBackoff = 100*time.Millisecond, 500*time.Millisecond
	cfg.Metrics = NewMetrics() // each test counts its own
	return cfg
}

// watcher runs a discoverer and keeps its latest snapshot.
type watcher struct {
	ch     chan []Target
	cancel func()
	done   chan error
	latest []Target
	count  int
}

func startWatcher(t *testing.T, d Discoverer) *watcher {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	w := &watcher{ch: make(chan []Target), cancel: cancel, done: make(chan error, 1)}
	go func() { w.done <- d.Run(ctx, w.ch) }()
	t.Cleanup(func() {
		cancel()
		if err := <-w.done; err != nil {
			t.Errorf("Run returned %v", err)
		}
	})
	return w
}

// holds reads snapshots for d, failing the test if one breaks cond: a
// discoverer whose source fails must keep its last targets, and a
// snapshot sent meanwhile (one is read here, not left blocked) must
// still hold them.
func (w *watcher) holds(t *testing.T, d time.Duration, what string, cond func([]Target) bool) {
	t.Helper()
	end := time.After(d)
	for {
		select {
		case s := <-w.ch:
			w.latest = s
			w.count++
			if !cond(s) {
				t.Fatalf("%s: a snapshot broke it: %v", what, urls(s))
			}
		case <-end:
			return
		}
	}
}

// waitFor reads snapshots until cond holds on one.
func (w *watcher) waitFor(t *testing.T, what string, cond func([]Target) bool) []Target {
	t.Helper()
	timeout := time.After(20 * time.Second)
	if w.count > 0 && cond(w.latest) {
		return w.latest
	}
	for {
		select {
		case s := <-w.ch:
			w.latest = s
			w.count++
			if cond(s) {
				return s
			}
		case <-timeout:
			t.Fatalf("%s: not seen within 20s; last snapshot: %v", what, urls(w.latest))
		}
	}
}

func urls(ts []Target) []string {
	var out []string
	for _, t := range ts {
		out = append(out, t.URL)
	}
	return out
}

func hasN(n int) func([]Target) bool { return func(ts []Target) bool { return len(ts) == n } }

func passing() *api.AgentServiceCheck {
	return &api.AgentServiceCheck{TTL: "1h", Status: api.HealthPassing}
}

func TestConsulFollowsRegistrations(t *testing.T) {
	agent := servertest.StartConsul(t, servertest.ConsulOptions{})
	cfg := testConsulConfig(agent.Addr)
	cfg.MetaTags = []string{"rack"}
	d, err := NewConsul(cfg, discard)
	if err != nil {
		t.Fatal(err)
	}
	w := startWatcher(t, d)
	for i, u := range []string{"http://127.0.0.1:9001/metrics", "http://127.0.0.1:9002/metrics", "http://127.0.0.1:9003/metrics"} {
		agent.Register(t, "engine-"+string(rune('a'+i)), "docker-engine", u, []string{"prometheus"}, map[string]string{"rack": "r1"}, passing())
	}
	// Not tagged: not discovered.
	agent.Register(t, "other", "other", "http://127.0.0.1:9100/metrics", nil, nil, passing())
	// Same endpoint under another ID: scraped once.
	agent.Register(t, "engine-dup", "docker-engine", "http://127.0.0.1:9001/metrics", []string{"prometheus"}, map[string]string{"rack": "r1"}, passing())

	snap := w.waitFor(t, "three engines", hasN(3))
	tg := snap[0]
	if tg.URL != "http://127.0.0.1:9001/metrics" || tg.Tag("job") != "docker-engine" || tg.Tag("instance") != "127.0.0.1:9001" ||
		tg.Tag("node") == "" || tg.Tag("datacenter") != "dc1" || tg.Tag("rack") != "r1" {
		t.Errorf("target = %+v", tg)
	}
	agent.Deregister(t, "engine-b")
	snap = w.waitFor(t, "engine-b gone", hasN(2))
	for _, x := range snap {
		if strings.Contains(x.URL, ":9002") {
			t.Errorf("deregistered target still present: %v", urls(snap))
		}
	}
	// A failing check removes an instance (passing only by default).
	if err := agent.Client().Agent().FailTTL("service:engine-c", "down"); err != nil {
		t.Fatal(err)
	}
	w.waitFor(t, "engine-c gone after failing its check", hasN(1))
}

func TestConsulHealthAnyKeepsFailingInstances(t *testing.T) {
	agent := servertest.StartConsul(t, servertest.ConsulOptions{})
	agent.Register(t, "e1", "docker-engine", "http://127.0.0.1:9001/metrics", []string{"prometheus"}, nil,
		&api.AgentServiceCheck{TTL: "1h", Status: api.HealthCritical})
	agent.Register(t, "e2", "docker-engine", "http://127.0.0.1:9002/metrics", []string{"prometheus"}, nil, passing())
	for _, tc := range []struct {
		health string
		want   int
	}{{"passing", 1}, {"any", 2}} {
		cfg := testConsulConfig(agent.Addr)
		cfg.Health = tc.health
		d, err := NewConsul(cfg, discard)
		if err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithCancel(context.Background())
		ch := make(chan []Target)
		done := make(chan error)
		go func() { done <- d.Run(ctx, ch) }()
		select {
		case s := <-ch:
			if len(s) != tc.want {
				t.Errorf("health %s: %d targets, want %d", tc.health, len(s), tc.want)
			}
		case <-time.After(20 * time.Second):
			t.Errorf("health %s: no snapshot", tc.health)
		}
		cancel()
		<-done
	}
}

func TestConsulOutageKeepsTargets(t *testing.T) {
	agent := servertest.StartConsul(t, servertest.ConsulOptions{})
	d, err := NewConsul(testConsulConfig(agent.Addr), discard)
	if err != nil {
		t.Fatal(err)
	}
	w := startWatcher(t, d)
	agent.Register(t, "e1", "docker-engine", "http://127.0.0.1:9001/metrics", []string{"prometheus"}, nil, passing())
	w.waitFor(t, "one engine", hasN(1))
	before := queryErrors(d)
	agent.Stop()
	// No snapshot (certainly not an empty one) while Consul is away: the
	// watches fail twice, and nothing has been sent.
	waitQueryErrors(t, d, before+2)
	select {
	case s := <-w.ch:
		t.Fatalf("snapshot during outage: %v", urls(s))
	default:
	}
	agent.Restart(t)
	agent.Register(t, "e1", "docker-engine", "http://127.0.0.1:9001/metrics", []string{"prometheus"}, nil, passing())
	agent.Register(t, "e2", "docker-engine", "http://127.0.0.1:9002/metrics", []string{"prometheus"}, nil, passing())
	w.waitFor(t, "two engines after Consul came back", hasN(2))
}

func TestConsulACLToken(t *testing.T) {
	agent := servertest.StartConsul(t, servertest.ConsulOptions{ACL: true})
	agent.Register(t, "e1", "docker-engine", "http://127.0.0.1:9001/metrics", []string{"prometheus"}, nil, passing())
	cfg := testConsulConfig(agent.Addr)
	cfg.Token = agent.Token
	d, err := NewConsul(cfg, discard)
	if err != nil {
		t.Fatal(err)
	}
	startWatcher(t, d).waitFor(t, "engine seen with the token", hasN(1))

	// A token Consul does not know: 403 on every query. No snapshot (and
	// certainly no empty one) is sent.
	bogus := testConsulConfig(agent.Addr)
	bogus.Token = "00000000-0000-0000-0000-000000000000"
	bd, err := NewConsul(bogus, discard)
	if err != nil {
		t.Fatal(err)
	}
	before := queryErrors(bd)
	bw := startWatcher(t, bd)
	waitQueryErrors(t, bd, before+2) // two queries refused
	select {
	case s := <-bw.ch:
		t.Errorf("snapshot sent with a rejected token: %v", urls(s))
	default:
	}

	anon, err := NewConsul(testConsulConfig(agent.Addr), discard)
	if err != nil {
		t.Fatal(err)
	}
	w := startWatcher(t, anon)
	select {
	case s := <-w.ch:
		if len(s) != 0 {
			t.Errorf("anonymous sees %v despite default deny", urls(s))
		}
	case <-time.After(3 * time.Second):
	}
}

func TestConsulErrorsBackOffAndKeepNothingFalse(t *testing.T) {
	// A Consul that answers 500 "No cluster leader" forever: no snapshot is
	// ever sent, and the loop backs off instead of hammering it.
	var hits atomic.Int64
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		hits.Add(1)
		http.Error(w, "No cluster leader", http.StatusInternalServerError)
	}))
	defer srv.Close()
	cfg := testConsulConfig(srv.URL)
	d, err := NewConsul(cfg, discard)
	if err != nil {
		t.Fatal(err)
	}
	w := startWatcher(t, d)
	select {
	case s := <-w.ch:
		t.Fatalf("snapshot sent on errors: %v", urls(s))
	case <-time.After(2 * time.Second):
	}
	w.cancel()
	<-w.done
	w.done <- nil
	// Two watches backing off from 100ms to 500ms make about 15 requests in
	// 2s; two loops held only by their 200ms rate limit would make 20 each.
	if n := hits.Load(); n > 30 {
		t.Errorf("%d requests in 2s: not backing off", n)
	}
}

// A Consul whose index goes backwards on every answer, or that answers
// 500 "No cluster leader": with the shipped backoff the whole discoverer
// stays under 5 requests a second.
func TestConsulMisbehavingServerRateBounded(t *testing.T) {
	for _, mode := range []string{"index backwards", "no leader"} {
		t.Run(mode, func(t *testing.T) {
			var hits, index atomic.Int64
			index.Store(1 << 40)
			srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				hits.Add(1)
				if mode == "no leader" {
					http.Error(w, "No cluster leader", http.StatusInternalServerError)
					return
				}
				w.Header().Set("X-Consul-Index", fmt.Sprint(index.Add(-1)))
				w.Header().Set("Content-Type", "application/json")
				switch {
				case strings.HasPrefix(r.URL.Path, "/v1/catalog/services"):
					fmt.Fprint(w, `{"docker-engine":["prometheus"]}`)
				case strings.HasPrefix(r.URL.Path, "/v1/health/service/"):
					fmt.Fprint(w, `[{"Node":{"Node":"n1","Address":"127.0.0.1"},"Service":{"Service":"docker-engine","Address":"127.0.0.1","Port":9323,"Tags":["prometheus"]},"Checks":[]}]`)
				default:
					fmt.Fprint(w, `[]`)
				}
			}))
			defer srv.Close()
			cfg := DefaultConsulConfig() // the shipped backoff
			cfg.Addr = srv.URL
			d, err := NewConsul(cfg, discard)
			if err != nil {
				t.Fatal(err)
			}
			w := startWatcher(t, d)
			const window = 4 * time.Second
			timeout := time.After(window)
		loop:
			for {
				select {
				case s := <-w.ch:
					w.latest = s
				case <-timeout:
					break loop
				}
			}
			t.Logf("%s: %d requests in %s", mode, hits.Load(), window)
			if n := hits.Load(); float64(n)/window.Seconds() > 5 {
				t.Errorf("%d requests in %s: more than 5 a second", n, window)
			}
			if mode == "index backwards" && len(w.latest) != 1 {
				t.Errorf("targets %v, want the one instance despite the index", urls(w.latest))
			}
		})
	}
}

func TestConsulConfigValidate(t *testing.T) {
	cfg := DefaultConsulConfig()
	cfg.Health = "sometimes"
	cfg.CertFile = "/x"
	err := cfg.Validate()
	for _, want := range []string{`consul health "sometimes"`, "cert file and key file go together"} {
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("err = %v, want %q", err, want)
		}
	}
}

func TestRedactedURL(t *testing.T) {
	tg, err := NewTarget("http://scraper:s3cret@127.0.0.1:9100/metrics", "j")
	if err != nil {
		t.Fatal(err)
	}
	if r := tg.Redacted(); strings.Contains(r, "s3cret") || !strings.Contains(r, "scraper:xxxxx@127.0.0.1:9100") {
		t.Errorf("Redacted() = %s", r)
	}
}

// However many services match, discovery holds at most Fetchers+2
// connections to Consul (two blocking queries and the refresh fetchers):
// one watch per service would exhaust Consul's 200 connections per client.
func TestConsulConnectionsBounded(t *testing.T) {
	const services = 300
	var open, peak atomic.Int64
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("X-Consul-Index", "7")
		w.Header().Set("Content-Type", "application/json")
		switch {
		case strings.HasPrefix(r.URL.Path, "/v1/catalog/services"):
			if r.URL.Query().Get("index") == "7" {
				<-r.Context().Done() // a blocking query with nothing new
				return
			}
			fmt.Fprint(w, "{")
			for i := 0; i < services; i++ {
				if i > 0 {
					fmt.Fprint(w, ",")
				}
				fmt.Fprintf(w, `"svc-%d":["prometheus"]`, i)
			}
			fmt.Fprint(w, "}")
		case strings.HasPrefix(r.URL.Path, "/v1/health/state"):
			if r.URL.Query().Get("index") == "7" {
				<-r.Context().Done()
				return
			}
			fmt.Fprint(w, "[]")
		case strings.HasPrefix(r.URL.Path, "/v1/health/service/"):
			time.Sleep(2 * time.Millisecond) // a little latency: requests overlap
			name := strings.TrimPrefix(r.URL.Path, "/v1/health/service/")
			var i int
			fmt.Sscanf(name, "svc-%d", &i)
			fmt.Fprintf(w, `[{"Node":{"Node":"n","Address":"127.0.0.1"},"Service":{"ID":"%s","Service":"%s","Address":"127.0.0.1","Port":%d,"Tags":["prometheus"]},"Checks":[]}]`, name, name, 20000+i)
		default:
			fmt.Fprint(w, "[]")
		}
	}))
	srv.Config.ConnState = func(_ net.Conn, s http.ConnState) {
		switch s {
		case http.StateNew:
			if n := open.Add(1); n > peak.Load() {
				peak.Store(n)
			}
		case http.StateClosed, http.StateHijacked:
			open.Add(-1)
		}
	}
	srv.Start()
	t.Cleanup(srv.Close) // after the watcher's cleanup, which ends its blocking queries
	cfg := testConsulConfig(srv.URL)
	d, err := NewConsul(cfg, discard)
	if err != nil {
		t.Fatal(err)
	}
	w := startWatcher(t, d)
	got := w.waitFor(t, "every service's instance", func(ts []Target) bool { return len(ts) == services })
	if len(got) != services {
		t.Fatalf("%d targets", len(got))
	}
	if p := peak.Load(); p > int64(cfg.Fetchers+2) {
		t.Errorf("peak of %d connections to Consul for %d services, want at most %d", p, services, cfg.Fetchers+2)
	}
	t.Logf("%d services discovered over at most %d connections", services, peak.Load())
}

// queryErrors is how many catalog queries of d have failed.
func queryErrors(d *Consul) float64 {
	return testutil.ToFloat64(d.cfg.Metrics.errors.WithLabelValues(queryCatalog))
}

// waitQueryErrors waits (on the error counter, not a fixed time) until
// that many catalog queries of d have failed.
func waitQueryErrors(t *testing.T, d *Consul, n float64) {
	t.Helper()
	servertest.WaitFor(t, fmt.Sprintf("%v failed catalog queries", n), 15*time.Second, func() bool { return queryErrors(d) >= n })
}

// A replica listening on every interface (0.0.0.0:9274, as in a
// container) joins its cluster: Consul refuses 0.0.0.0 as a service
// address, and a replica that sent it never became a member (seen on a
// real swarm: both stack replicas out of the cluster).
func TestClusterListenerOnEveryInterface(t *testing.T) {
	agent := servertest.StartConsul(t, servertest.ConsulOptions{})
	cc := testConsulConfig(agent.Addr)
	cfg := ClusterConfig{Name: "c", Service: DefaultClusterService, ID: "r1", Address: "0.0.0.0", Port: 9274,
		TTL: DefaultClusterTTL, DeregisterAfter: time.Minute}
	cl, err := NewCluster(cfg, cc, discard)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	members := make(chan []string, 16)
	done := make(chan error, 1)
	go func() { done <- cl.Run(ctx, func(m []string) { members <- m }) }()
	defer func() { cancel(); <-done }()
	deadline := time.After(20 * time.Second)
	for {
		select {
		case m := <-members:
			if len(m) == 1 && m[0] == "r1" {
				return
			}
		case <-deadline:
			t.Fatal("the replica listening on 0.0.0.0 never became a member")
		}
	}
}
