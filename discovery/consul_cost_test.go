package discovery

import (
	"fmt"
	"io"
	"log"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hashicorp/consul/api"

	"github.com/scrapeflux/scrapeflux/internal/servertest"
)

// countingProxy sits in front of a real Consul and counts requests by
// kind: the per-service reads and the blocking queries, with how many of
// the latter came back without a change.
type countingProxy struct {
	srv *httptest.Server
	mu  sync.Mutex
	// reads: /v1/health/service/<name> requests by service.
	reads    map[string]int
	blocking int
}

func newCountingProxy(t *testing.T, consulAddr string) *countingProxy {
	u, _ := url.Parse("http://" + consulAddr)
	rp := httputil.NewSingleHostReverseProxy(u)
	rp.ErrorLog = log.New(io.Discard, "", 0) // blocking queries cut off at the end
	p := &countingProxy{reads: map[string]int{}}
	p.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		p.mu.Lock()
		if name, ok := strings.CutPrefix(r.URL.Path, "/v1/health/service/"); ok {
			p.reads[name]++
		} else if r.URL.Query().Get("index") != "" {
			p.blocking++
		}
		p.mu.Unlock()
		rp.ServeHTTP(w, r)
	}))
	t.Cleanup(p.srv.Close)
	return p
}

func (p *countingProxy) counts() (reads, blocking int) {
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, n := range p.reads {
		reads += n
	}
	return reads, p.blocking
}

func (p *countingProxy) readsOf(name string) int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.reads[name]
}

// Consul is asked in proportion to what changes, never to the catalog's
// size: with 300 unchanged services, blocking queries that time out cost
// no re-read of any service (before: every timeout re-read all 300, 3,475
// requests a minute at a 10 s wait); a change re-reads the services it
// touched, not the others.
func TestConsulCostFollowsChange(t *testing.T) {
	const services = 300
	agent := servertest.StartConsul(t, servertest.ConsulOptions{})
	for i := 0; i < services; i++ {
		agent.Register(t, fmt.Sprintf("svc-%d-a", i), fmt.Sprintf("svc-%d", i), fmt.Sprintf("http://127.0.0.1:%d/metrics", 20000+i), []string{"prometheus"}, nil, passing())
	}
	proxy := newCountingProxy(t, agent.Addr)
	cfg := testConsulConfig(proxy.srv.URL)
	cfg.WaitTime = time.Second // blocking queries time out often: the idle case, fast
	d, err := NewConsul(cfg, discard)
	if err != nil {
		t.Fatal(err)
	}
	w := startWatcher(t, d)
	w.waitFor(t, "every service", hasN(services))
	reads0, blocking0 := proxy.counts()
	// Idle: wait until both watches have come back empty several times.
	deadline := time.Now().Add(30 * time.Second)
	for {
		_, b := proxy.counts()
		if b >= blocking0+8 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("only %d blocking queries in 30s", b-blocking0)
		}
		time.Sleep(50 * time.Millisecond)
	}
	reads1, blocking1 := proxy.counts()
	t.Logf("start: %d service reads; idle: %d service reads during %d blocking queries", reads0, reads1-reads0, blocking1-blocking0)
	if reads1 != reads0 {
		t.Errorf("an idle Consul cost %d service reads over %d blocking queries, want none", reads1-reads0, blocking1-blocking0)
	}
	// A change: one new instance of svc-7 and one deregistration of
	// svc-9. Only those are read again.
	start := time.Now()
	agent.Register(t, "svc-7-b", "svc-7", "http://127.0.0.1:30007/metrics", []string{"prometheus"}, nil, passing())
	agent.Deregister(t, "svc-9-a")
	w.waitFor(t, "the change", func(ts []Target) bool {
		has7b, has9 := false, false
		for _, x := range ts {
			has7b = has7b || strings.Contains(x.URL, ":30007/")
			has9 = has9 || strings.Contains(x.URL, ":20009/")
		}
		return has7b && !has9
	})
	took := time.Since(start)
	reads2, _ := proxy.counts()
	t.Logf("a change of 2 services: %d service reads, seen after %s", reads2-reads1, took.Round(time.Millisecond))
	if reads2-reads1 > 10 {
		t.Errorf("a change of 2 services cost %d service reads, want at most 10", reads2-reads1)
	}
	if proxy.readsOf("svc-123") != proxy.readsOf("svc-124") || proxy.readsOf("svc-123") > 2 {
		t.Errorf("an untouched service was read %d times", proxy.readsOf("svc-123"))
	}
	// A failing check is a change too.
	if err := agent.Client().Agent().UpdateTTL("service:svc-11-a", "down", api.HealthCritical); err != nil {
		t.Fatal(err)
	}
	w.waitFor(t, "svc-11 gone after its check failed", hasN(services-1))
}

// A filter expression keeps only the instances it matches, read by
// Consul itself.
func TestConsulFilter(t *testing.T) {
	agent := servertest.StartConsul(t, servertest.ConsulOptions{})
	agent.Register(t, "e-prod", "docker-engine", "http://127.0.0.1:9001/metrics", []string{"prometheus"}, map[string]string{"env": "prod"}, passing())
	agent.Register(t, "e-dev", "docker-engine", "http://127.0.0.1:9002/metrics", []string{"prometheus"}, map[string]string{"env": "dev"}, passing())
	cfg := testConsulConfig(agent.Addr)
	cfg.Filter = `Service.Meta.env == "prod"`
	d, err := NewConsul(cfg, discard)
	if err != nil {
		t.Fatal(err)
	}
	w := startWatcher(t, d)
	got := w.waitFor(t, "the prod instance", hasN(1))
	if !strings.Contains(got[0].URL, ":9001/") {
		t.Fatalf("filter kept %v", urls(got))
	}
}
