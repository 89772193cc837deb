package discovery

import (
	"context"
	"fmt"
	"io"
	"log"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/hashicorp/consul/api"

	"github.com/scrapeflux/scrapeflux/internal/servertest"
)

// scaleServices is the catalog of TestConsulAtScale: the size issue #36
// asks for, which a dev agent registers in a few seconds.
const scaleServices = 3000

// refusingProxy counts every request to a real Consul and, while refusing
// is set, answers them itself with the status Consul's rate limiter sends
// (429) instead.
type refusingProxy struct {
	srv      *httptest.Server
	requests atomic.Int64
	refusing atomic.Bool
}

func newRefusingProxy(t *testing.T, consulAddr string) *refusingProxy {
	u, _ := url.Parse("http://" + consulAddr)
	rp := httputil.NewSingleHostReverseProxy(u)
	rp.ErrorLog = log.New(io.Discard, "", 0)
	p := &refusingProxy{}
	p.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		p.requests.Add(1)
		if p.refusing.Load() {
			http.Error(w, "rate limit exceeded", http.StatusTooManyRequests)
			return
		}
		rp.ServeHTTP(w, r)
	}))
	t.Cleanup(p.srv.Close)
	return p
}

// snapshots keeps reading a discoverer's snapshots (so it never blocks on
// a send) and remembers when each URL was first seen.
type snapshots struct {
	mu        sync.Mutex
	latest    []Target
	firstSeen map[string]time.Time
}

func follow(t *testing.T, d Discoverer) *snapshots {
	ctx, cancel := context.WithCancel(context.Background())
	ch := make(chan []Target)
	s := &snapshots{firstSeen: map[string]time.Time{}}
	done := make(chan struct{})
	go func() {
		defer close(done)
		_ = d.Run(ctx, ch)
	}()
	go func() {
		for {
			select {
			case ts := <-ch:
				now := time.Now()
				s.mu.Lock()
				s.latest = ts
				for _, tg := range ts {
					if _, ok := s.firstSeen[tg.URL]; !ok {
						s.firstSeen[tg.URL] = now
					}
				}
				s.mu.Unlock()
			case <-done:
				return
			}
		}
	}()
	t.Cleanup(func() { cancel(); <-done })
	return s
}

func (s *snapshots) count() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.latest)
}

func (s *snapshots) seen(u string) (time.Time, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	at, ok := s.firstSeen[u]
	return at, ok
}

// TestConsulAtScale: 3,000 services in a real Consul. Idle, the discovery
// reads no service; with one service flapping and 100 services changing
// every 2 s, its requests stay within three times the changes Consul
// reports, and every new registration is seen within 5 s of its check
// passing; a Consul that answers 429 to everything is retried with
// backoff, not a storm, and followed again once it answers.
func TestConsulAtScale(t *testing.T) {
	agent := servertest.StartConsul(t, servertest.ConsulOptions{})
	start := time.Now()
	// Registered 16 at a time: one at a time takes a dev agent 12 ms each.
	var wg sync.WaitGroup
	errs := make(chan error, scaleServices)
	for w := range 16 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := w; i < scaleServices; i += 16 {
				errs <- agent.Client().Agent().ServiceRegister(&api.AgentServiceRegistration{ID: fmt.Sprintf("s%d-a", i), Name: fmt.Sprintf("s%d", i),
					Address: "127.0.0.1", Port: 10000 + i, Tags: []string{"prometheus"}, Check: passing()})
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Fatal(err)
		}
	}
	t.Logf("%d services registered in %s", scaleServices, time.Since(start).Round(time.Millisecond))
	proxy := newCountingProxy(t, agent.Addr)
	front := newRefusingProxy(t, strings.TrimPrefix(proxy.srv.URL, "http://"))
	cfg := DefaultConsulConfig() // production backoff (1 s to 30 s)
	cfg.Addr = front.srv.URL
	cfg.WaitTime = 2 * time.Second // blocking queries come back often: the idle case, fast
	d, err := NewConsul(cfg, discard)
	if err != nil {
		t.Fatal(err)
	}
	snaps := follow(t, d)
	took := servertest.WaitFor(t, "every service", 60*time.Second, func() bool { return snaps.count() == scaleServices })
	t.Logf("first full snapshot of %d services after %s", scaleServices, took.Round(time.Millisecond))

	// Idle: several blocking queries come back without a change, and no
	// service is read.
	reads0, blocking0 := proxy.counts()
	servertest.WaitFor(t, "idle blocking queries", 30*time.Second, func() bool { _, b := proxy.counts(); return b >= blocking0+6 })
	reads1, blocking1 := proxy.counts()
	t.Logf("idle: %d service reads over %d blocking queries", reads1-reads0, blocking1-blocking0)
	if reads1 != reads0 {
		t.Errorf("idle, %d services cost %d service reads", scaleServices, reads1-reads0)
	}

	// Churn for 10 s: s0 flaps (its check critical, then passing, every
	// second); every 2 s 100 services get a new instance each, whose check
	// passes at once. Each change is one service whose instances changed.
	req0 := front.requests.Load()
	changes := 0
	var newURLs []string
	registered := map[string]time.Time{}
	flap := api.HealthCritical
	churnEnd := time.Now().Add(10 * time.Second)
	for round := 0; time.Now().Before(churnEnd); round++ {
		if err := agent.Client().Agent().UpdateTTL("service:s0-a", "flap", flap); err != nil {
			t.Fatal(err)
		}
		changes++
		flap = map[string]string{api.HealthCritical: api.HealthPassing, api.HealthPassing: api.HealthCritical}[flap]
		if round%2 == 0 {
			for k := range 100 {
				i := 1 + (round/2*100+k)%(scaleServices-1)
				u := fmt.Sprintf("http://127.0.0.2:%d/metrics", 20000+round*100+k)
				agent.Register(t, fmt.Sprintf("s%d-r%d", i, round), fmt.Sprintf("s%d", i), u, []string{"prometheus"}, nil, passing())
				registered[u] = time.Now()
				newURLs = append(newURLs, u)
				changes++
			}
		}
		time.Sleep(time.Second) // the workload's clock (one step a second), not a wait
	}
	servertest.WaitFor(t, "every new instance", 20*time.Second, func() bool {
		for _, u := range newURLs {
			if _, ok := snaps.seen(u); !ok {
				return false
			}
		}
		return true
	})
	requests := front.requests.Load() - req0
	var worst time.Duration
	for _, u := range newURLs {
		at, _ := snaps.seen(u)
		worst = max(worst, at.Sub(registered[u]))
	}
	t.Logf("churn: %d changes, %d requests to Consul (%.2f a change); slowest new instance seen %s after its registration",
		changes, requests, float64(requests)/float64(changes), worst.Round(time.Millisecond))
	if requests > int64(3*changes) {
		t.Errorf("%d requests for %d changes: more than 3 a change", requests, changes)
	}
	// Within a third of the default 15 s scrape interval, so a new
	// target's first scrape is at most one interval late (0.5 s here
	// alone, 1.1 s under the race detector on two cores).
	if worst > 5*time.Second {
		t.Errorf("a new instance was seen %s after its registration, want within 5 s", worst)
	}

	// Consul refuses everything with 429: each watch backs off (1 s
	// doubling to 30 s, jitter over the upper half), so the first six
	// refused requests (three for each of the two watches) take at least
	// 1.5 s; a retry storm would send them within milliseconds. The last
	// snapshot is kept meanwhile.
	front.refusing.Store(true)
	req1 := front.requests.Load()
	took = servertest.WaitFor(t, "six refused requests", 30*time.Second, func() bool { return front.requests.Load()-req1 >= 6 })
	front.refusing.Store(false)
	t.Logf("429 to everything: six requests in %s; %d targets kept", took.Round(time.Millisecond), snaps.count())
	if took < 1500*time.Millisecond {
		t.Errorf("six requests %s after Consul began answering 429: no backoff", took)
	}
	if snaps.count() < scaleServices {
		t.Errorf("%d targets while Consul refused, want the last %d kept", snaps.count(), scaleServices)
	}
	u := "http://127.0.0.3:30000/metrics"
	agent.Register(t, "after-429", "s5", u, []string{"prometheus"}, nil, passing())
	took = servertest.WaitFor(t, "a registration after the 429s", 40*time.Second, func() bool { _, ok := snaps.seen(u); return ok })
	t.Logf("a registration after the 429s seen after %s", took.Round(time.Millisecond))
}
