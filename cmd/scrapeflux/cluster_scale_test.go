package main

import (
	"flag"
	"fmt"
	"io"
	"math"
	"net/http"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/scrapeflux/scrapeflux/scrape/simulator"
)

// The replica tests at scale run in make test at 300 targets and a 5 s
// pause; the README's figures are of -replica-targets 3000
// -replica-pause 30s.
var (
	replicaTargets = flag.Int("replica-targets", 300, "targets the replicas share in TestReplicasAtScale")
	replicaPause   = flag.Duration("replica-pause", 5*time.Second, "how long TestReplicasAtScale holds a replica with SIGSTOP")
)

// smallTarget is a target of 12 series (a counter, a gauge, a histogram),
// so that thousands fit on two cores beside three replicas.
const smallTarget = `# TYPE engine_daemon_events_total counter
engine_daemon_events_total 120
# TYPE engine_daemon_engine_cpus_cpus gauge
engine_daemon_engine_cpus_cpus 2
# TYPE engine_daemon_network_actions_seconds histogram
engine_daemon_network_actions_seconds_bucket{action="create",le="0.005"} 1
engine_daemon_network_actions_seconds_bucket{action="create",le="0.01"} 2
engine_daemon_network_actions_seconds_bucket{action="create",le="0.1"} 3
engine_daemon_network_actions_seconds_bucket{action="create",le="+Inf"} 4
engine_daemon_network_actions_seconds_sum{action="create"} 0.3
engine_daemon_network_actions_seconds_count{action="create"} 4
# TYPE engine_daemon_container_states_containers gauge
engine_daemon_container_states_containers{state="running"} 10
engine_daemon_container_states_containers{state="paused"} 0
engine_daemon_container_states_containers{state="stopped"} 3
`

// consulRequests sums a replica's Consul requests of every query.
func consulRequests(t *testing.T, listen string) float64 {
	t.Helper()
	resp, err := http.Get("http://" + listen + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	var n float64
	for _, ln := range strings.Split(string(b), "\n") {
		if strings.HasPrefix(ln, "scrapeflux_consul_requests_total{") {
			var v float64
			fmt.Sscan(ln[strings.LastIndexByte(ln, ' ')+1:], &v)
			n += v
		}
	}
	return n
}

// TestReplicasAtScale: three replicas share many targets through Consul.
// Each owns its share; with R=2, a replica held by SIGSTOP, one killed
// with SIGKILL, one joining and a rolling restart of all leave no slot
// of any target without its point and never two timestamps for one slot;
// with R=1, a kill -9 leaves no target unscraped for longer than the
// check's TTL and two intervals. An idle replica's Consul requests do not
// grow with the targets (static targets: only the member list is
// watched).
func TestReplicasAtScale(t *testing.T) {
	n := *replicaTargets
	for _, r := range []int{2, 1} {
		t.Run(fmt.Sprintf("R=%d", r), func(t *testing.T) {
			fleet, err := simulator.StartFleetOf([]byte(smallTarget), n)
			if err != nil {
				t.Fatal(err)
			}
			rs := newReplicaSetOf(t, fleet, r)
			for _, id := range []string{"r1", "r2", "r3"} {
				rs.start(id)
			}
			took := rs.waitSettled("three replicas")
			rs.waitHandedOver("three replicas")
			t.Logf("%d targets, R=%d: three replicas settled in %s", n, r, took.Round(time.Millisecond))
			t0 := time.Now()
			rs.waitWritten("three replicas", t0)

			// Shares come from hashing, so they are binomial: within 10 %
			// of the fair share, or 3.5 standard deviations where that is
			// wider (at the small size: 14 % for R=2, 29 % for R=1).
			fair := float64(n*r) / 3
			p := float64(r) / 3
			tolerance := max(0.10, 3.5*math.Sqrt(float64(n)*p*(1-p))/fair)
			for id, insts := range rs.owned() {
				t.Logf("%s owns %d targets (fair share %.0f)", id, len(insts), fair)
				if d := float64(len(insts)) - fair; d > tolerance*fair || -d > tolerance*fair {
					t.Errorf("%s owns %d targets, want %.0f within %.0f %%", id, len(insts), fair, 100*tolerance)
				}
			}

			// Idle: Consul requests per replica over five intervals.
			rs.mu.Lock()
			listens := map[string]string{}
			for id, rp := range rs.replicas {
				listens[id] = rp.listen
			}
			rs.mu.Unlock()
			c0, idle0 := map[string]float64{}, time.Now()
			for id, l := range listens {
				if c0[id] = consulRequests(t, l); c0[id] == 0 {
					t.Fatalf("%s counts no Consul request", id)
				}
			}
			rs.waitScrapes("idle", rs.scrapes(), 5)
			idle := time.Since(idle0)
			for id, l := range listens {
				per := (consulRequests(t, l) - c0[id]) / idle.Seconds()
				t.Logf("%s: %.2f Consul requests/s idle, %d targets", id, per, n)
				if per > 2 {
					t.Errorf("%s made %.2f Consul requests/s while nothing changed", id, per)
				}
			}

			if r == 1 {
				rs.stop("r1", syscall.SIGKILL)
				took := rs.waitSettled("after kill -9 of r1")
				t1 := time.Now()
				rs.waitWritten("after the takeover", t1)
				maxGap, missing := rs.gaps(t0, t1)
				t.Logf("R=1, %d targets, kill -9 of one of three: taken over in %s; largest gap %s, %d slots missed", n, took.Round(time.Millisecond), maxGap, missing)
				if limit := clusterTTL + 2*clusterInterval + clusterInterval/2; maxGap > limit {
					t.Errorf("largest gap %s, want at most the check TTL and two intervals (%s with slack)", maxGap, limit)
				}
				rs.stop("r2", syscall.SIGTERM)
				rs.stop("r3", syscall.SIGTERM)
				return
			}

			steps := []struct {
				what string
				do   func()
			}{
				{fmt.Sprintf("SIGSTOP of r1 for %s", *replicaPause), func() {
					rs.mu.Lock()
					p := rs.replicas["r1"].cmd.Process
					rs.mu.Unlock()
					p.Signal(syscall.SIGSTOP)
					time.Sleep(*replicaPause) // the pause is the fault itself
					p.Signal(syscall.SIGCONT)
				}},
				{"kill -9 of r2", func() { rs.stop("r2", syscall.SIGKILL) }},
				{"r4 joining", func() { rs.start("r4") }},
			}
			for _, id := range []string{"r1", "r3", "r4"} {
				steps = append(steps, struct {
					what string
					do   func()
				}{"rolling restart of " + id, func() { rs.stop(id, syscall.SIGTERM); rs.start(id) }})
			}
			for _, st := range steps {
				start := time.Now()
				st.do()
				took := rs.waitSettled("after " + st.what)
				rs.waitHandedOver("after " + st.what)
				rs.waitWritten("after "+st.what, time.Now())
				t.Logf("%s: settled %s after it, done in %s", st.what, took.Round(time.Millisecond), time.Since(start).Round(time.Millisecond))
			}
			t1 := time.Now()
			rs.waitWritten("the end", t1)
			maxGap, missing := rs.gaps(t0, t1)
			t.Logf("R=2, %d targets over %s (pause, kill -9, join, rolling restart): largest gap %s, %d slots missed", n, t1.Sub(t0).Round(time.Second), maxGap, missing)
			if missing > 0 {
				t.Errorf("%d slots without a point (largest gap %s)", missing, maxGap)
			}
			for _, id := range []string{"r1", "r3", "r4"} {
				rs.stop(id, syscall.SIGTERM)
			}
		})
	}
}
