package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"sort"
	"strconv"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/scrapeflux/scrapeflux/internal/servertest"
	"github.com/scrapeflux/scrapeflux/scrape/simulator"
)

// replicaSet runs scrapeflux replicas as processes (so kill -9 is real)
// against one Consul, one InfluxDB and one simulated fleet.
type replicaSet struct {
	t        *testing.T
	consul   *servertest.Consul
	influx   *servertest.InfluxDB
	fleet    *simulator.Fleet
	r        int
	mu       sync.Mutex
	replicas map[string]*replica
}

type replica struct {
	id     string
	cmd    *exec.Cmd
	listen string
	stderr *lockedBuffer
}

type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

const (
	clusterInterval = time.Second
	clusterTTL      = 2 * time.Second
)

func newReplicaSet(t *testing.T, targets, r int) *replicaSet {
	fleet, err := simulator.StartFleet(targets, 0)
	if err != nil {
		t.Fatal(err)
	}
	return newReplicaSetOf(t, fleet, r)
}

// newReplicaSetOf is newReplicaSet on a fleet of the caller's.
func newReplicaSetOf(t *testing.T, fleet *simulator.Fleet, r int) *replicaSet {
	rs := &replicaSet{t: t, consul: servertest.StartConsul(t, servertest.ConsulOptions{}), influx: servertest.StartInfluxDB(t), r: r, replicas: map[string]*replica{}}
	rs.influx.CreateDB(t, "e2e")
	rs.fleet = fleet
	t.Cleanup(func() {
		rs.mu.Lock()
		defer rs.mu.Unlock()
		for _, rp := range rs.replicas {
			rp.cmd.Process.Kill()
			rp.cmd.Wait()
		}
		fleet.Close()
	})
	return rs
}

func (rs *replicaSet) start(id string) {
	t := rs.t
	listen := fmt.Sprintf("127.0.0.1:%d", servertest.FreePort(t))
	args := []string{"run", "--cluster", "c1", "--cluster-id", id, "--cluster-ttl", clusterTTL.String(),
		"--replication-factor", strconv.Itoa(rs.r), "--consul-addr", rs.consul.Addr,
		"--interval", clusterInterval.String(), "--timeout", "800ms", "--flush-interval", "100ms",
		"--listen", listen, "--queue-dir", t.TempDir(),
		"--influx-url", rs.influx.URL, "--influx-bucket", "e2e"}
	for _, u := range rs.fleet.URLs {
		args = append(args, "--target", u)
	}
	cmd := exec.Command(os.Args[0], args...)
	cmd.Env = append(os.Environ(), "SCRAPEFLUX_TEST_MAIN=1")
	rp := &replica{id: id, cmd: cmd, listen: listen, stderr: &lockedBuffer{}}
	cmd.Stderr = rp.stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	rs.mu.Lock()
	rs.replicas[id] = rp
	rs.mu.Unlock()
}

// stop ends a replica: SIGKILL or SIGTERM.
func (rs *replicaSet) stop(id string, sig syscall.Signal) {
	rs.mu.Lock()
	rp := rs.replicas[id]
	delete(rs.replicas, id)
	rs.mu.Unlock()
	rp.cmd.Process.Signal(sig)
	err := rp.cmd.Wait()
	if sig == syscall.SIGTERM && err != nil {
		rs.t.Errorf("replica %s on SIGTERM: %v\n%s", id, err, rp.stderr)
	}
}

type targetJSON struct {
	URL, Instance, Role string
	Owners              []string
}

// rows returns each live replica's targets as its /targets page lists
// them.
func (rs *replicaSet) rows() map[string][]targetJSON {
	rs.mu.Lock()
	defer rs.mu.Unlock()
	out := map[string][]targetJSON{}
	for id, rp := range rs.replicas {
		resp, err := http.Get("http://" + rp.listen + "/targets?format=json")
		if err != nil {
			continue
		}
		var rows []targetJSON
		json.NewDecoder(resp.Body).Decode(&rows)
		resp.Body.Close()
		out[id] = rows
	}
	return out
}

// owned returns, per replica, the instances it owns.
func (rs *replicaSet) owned() map[string][]string {
	out := map[string][]string{}
	for id, rows := range rs.rows() {
		for _, r := range rows {
			if r.Role == "owned" {
				out[id] = append(out[id], r.Instance)
			}
		}
	}
	return out
}

// settled reports whether every target is owned by exactly r live
// replicas (min(r, live) when fewer).
func (rs *replicaSet) settled() bool {
	owned := rs.owned()
	rs.mu.Lock()
	live := len(rs.replicas)
	rs.mu.Unlock()
	if len(owned) != live {
		return false
	}
	per := map[string]int{}
	for _, insts := range owned {
		for _, i := range insts {
			per[i]++
		}
	}
	if len(per) != len(rs.fleet.URLs) {
		return false
	}
	for _, n := range per {
		if n != min(rs.r, live) {
			return false
		}
	}
	return true
}

func (rs *replicaSet) waitSettled(what string) time.Duration {
	start := time.Now()
	if !servertest.Eventually(30*time.Second, rs.settled) {
		rs.mu.Lock()
		var logs string
		for id, rp := range rs.replicas {
			logs += "--- " + id + "\n" + rp.stderr.String()
		}
		rs.mu.Unlock()
		rs.t.Fatalf("%s: ownership not settled within 30s: %v\n%s", what, rs.owned(), logs)
	}
	return time.Since(start)
}

// upTimes returns the timestamps (ms) of every instance's up points in
// [from, to].
func (rs *replicaSet) upTimes(from, to time.Time) map[string][]int64 {
	q := fmt.Sprintf(`SELECT gauge FROM up WHERE time >= %dms AND time <= %dms GROUP BY instance`, from.UnixMilli(), to.UnixMilli())
	out := map[string][]int64{}
	for _, r := range rs.influx.Query(rs.t, "e2e", q) {
		for _, v := range r.Values {
			ts, _ := v[0].(json.Number).Int64()
			out[r.Tags["instance"]] = append(out[r.Tags["instance"]], ts)
		}
	}
	return out
}

// gaps checks the up points of every target between from and to: every
// point on the target's slot grid (one phase per target: no second
// timestamp for a slot), and returns the largest gap between points and
// the number of slots without a point.
func (rs *replicaSet) gaps(from, to time.Time) (maxGap time.Duration, missing int) {
	t := rs.t
	times := rs.upTimes(from, to)
	iv := clusterInterval.Milliseconds()
	if len(times) != len(rs.fleet.URLs) {
		t.Fatalf("up points for %d instances, want %d", len(times), len(rs.fleet.URLs))
	}
	for inst, ts := range times {
		sort.Slice(ts, func(i, j int) bool { return ts[i] < ts[j] })
		for i, x := range ts {
			if x%iv != ts[0]%iv {
				t.Errorf("%s: point at %d off its slot grid (phase %d): two timestamps for one slot", inst, x, ts[0]%iv)
			}
			if i > 0 {
				d := time.Duration(x-ts[i-1]) * time.Millisecond
				maxGap = max(maxGap, d)
				missing += int(d/clusterInterval) - 1
			}
		}
		// Slots before the first and after the last point in the window.
		first := time.UnixMilli(ts[0]).Sub(from)
		last := to.Sub(time.UnixMilli(ts[len(ts)-1]))
		maxGap = max(maxGap, first, last)
		missing += int(first/clusterInterval) + int(last/clusterInterval)
	}
	return maxGap, missing
}

// roles counts the targets of every live replica by role.
func (rs *replicaSet) roles() map[string]int {
	out := map[string]int{}
	for _, rows := range rs.rows() {
		for _, r := range rows {
			out[r.Role]++
		}
	}
	return out
}

// waitHandedOver waits until no replica scrapes a target it handed over
// (role leaving): the handovers of the last change are done.
func (rs *replicaSet) waitHandedOver(what string) {
	servertest.WaitFor(rs.t, what+": handovers done", 30*time.Second, func() bool { return rs.roles()["leaving"] == 0 })
}

// waitWritten waits until InfluxDB holds, for every target, a point at or
// after at: the window up to at is complete.
func (rs *replicaSet) waitWritten(what string, at time.Time) {
	servertest.WaitFor(rs.t, what+": every target's point of "+at.Format("15:04:05.000")+" in InfluxDB", 30*time.Second, func() bool {
		times := rs.upTimes(at, at.Add(time.Hour))
		return len(times) == len(rs.fleet.URLs)
	})
}

// waitScrapes waits until every target was scraped n more times than in
// from (by any replica) and returns the counts then.
func (rs *replicaSet) waitScrapes(what string, from []int, n int) []int {
	var now []int
	servertest.WaitFor(rs.t, fmt.Sprintf("%s: every target scraped %d more times", what, n), 30*time.Second, func() bool {
		now = rs.scrapes()
		for i := range from {
			if now[i]-from[i] < n {
				return false
			}
		}
		return true
	})
	return now
}

func (rs *replicaSet) scrapes() []int {
	out := make([]int, len(rs.fleet.Targets))
	for i, tg := range rs.fleet.Targets {
		out[i] = tg.Scrapes()
	}
	return out
}

// TestReplicasShardAndTakeOver: three replicas with R=1 split 30 targets,
// each scraped by exactly one replica; a replica killed with SIGKILL has
// its targets taken over within the check's TTL plus an interval.
func TestReplicasShardAndTakeOver(t *testing.T) {
	rs := newReplicaSet(t, 30, 1)
	for _, id := range []string{"r1", "r2", "r3"} {
		rs.start(id)
	}
	rs.waitSettled("three replicas")
	owned := rs.owned()
	for id, insts := range owned {
		t.Logf("%s owns %d targets", id, len(insts))
		if len(insts) == 0 {
			t.Errorf("%s owns nothing", id)
		}
	}
	// Exactly one replica scrapes each target: once every target was
	// scraped 5 more times, none was scraped more than 6 (two owners would
	// make it 10).
	rs.waitHandedOver("three replicas")
	before := rs.scrapes()
	t0 := time.Now()
	after := rs.waitScrapes("three replicas", before, 5)
	for i := range before {
		if n := after[i] - before[i]; n > 6 {
			t.Errorf("target %d scraped %d times while every target was scraped at least 5: more than one replica scrapes it", i, n)
		}
	}

	rs.stop("r1", syscall.SIGKILL)
	took := rs.waitSettled("after kill -9 of r1")
	t.Logf("r1's %d targets taken over %s after the kill", len(owned["r1"]), took)
	t1 := time.Now()
	rs.waitWritten("after the takeover", t1)
	maxGap, missing := rs.gaps(t0, t1)
	t.Logf("R=1, kill -9 of one of three: largest gap %s, %d slots missed", maxGap, missing)
	if limit := clusterTTL + 3*clusterInterval; maxGap > limit {
		t.Errorf("largest gap %s, want at most the check TTL plus an interval (%s with slack)", maxGap, limit)
	}

	// A clean stop hands over without a gap even with one owner per
	// target: the replica leaves the member list first and scrapes one
	// more interval.
	t2 := time.Now()
	rs.stop("r2", syscall.SIGTERM)
	rs.waitSettled("after SIGTERM of r2")
	rs.waitHandedOver("after SIGTERM of r2")
	t3 := time.Now()
	rs.waitWritten("after SIGTERM of r2", t3)
	maxGap, missing = rs.gaps(t2, t3)
	t.Logf("R=1, SIGTERM of one of two: largest gap %s, %d slots missed", maxGap, missing)
	if missing > 0 {
		t.Errorf("%d slots without a point after a clean stop", missing)
	}
	rs.stop("r3", syscall.SIGTERM)
}

// TestReplicasNoGapNoDuplicate: with R=2, killing one of three replicas,
// adding a fourth and stopping one cleanly leave no slot of any target
// without its point and never two timestamps for one slot.
func TestReplicasNoGapNoDuplicate(t *testing.T) {
	rs := newReplicaSet(t, 30, 2)
	for _, id := range []string{"r1", "r2", "r3"} {
		rs.start(id)
	}
	rs.waitSettled("three replicas")
	rs.waitHandedOver("three replicas")
	t0 := time.Now()
	rs.waitWritten("three replicas", t0)

	// Each step is followed until every target has a point after it.
	rs.stop("r1", syscall.SIGKILL)
	rs.waitSettled("after kill -9 of r1")
	rs.waitWritten("after kill -9 of r1", time.Now())
	rs.start("r4")
	rs.waitSettled("after r4 joined")
	rs.waitHandedOver("after r4 joined")
	rs.waitWritten("after r4 joined", time.Now())
	rs.stop("r2", syscall.SIGTERM)
	rs.waitSettled("after SIGTERM of r2")
	rs.waitHandedOver("after SIGTERM of r2")
	t1 := time.Now()
	rs.waitWritten("after SIGTERM of r2", t1)

	maxGap, missing := rs.gaps(t0, t1)
	t.Logf("R=2 over %s (kill -9, join, SIGTERM): largest gap %s, %d slots missed", t1.Sub(t0).Round(time.Second), maxGap, missing)
	if missing > 0 {
		t.Errorf("%d slots without a point", missing)
	}
	times := rs.upTimes(t0, t1)
	var points int
	for _, ts := range times {
		points += len(ts)
	}
	slots := int(t1.Sub(t0) / clusterInterval)
	if points < len(rs.fleet.URLs)*(slots-1) {
		t.Errorf("%d up points for %d targets over %d slots", points, len(rs.fleet.URLs), slots)
	}
	rs.stop("r3", syscall.SIGTERM)
	rs.stop("r4", syscall.SIGTERM)
}

// TestReplicasSurviveConsulRestart: Consul goes away and comes back empty
// (a dev agent keeps no state) under two replicas. They keep their last
// membership while it is away, register again when it is back, never drop
// to zero targets, and no target goes unscraped for more than two
// intervals.
func TestReplicasSurviveConsulRestart(t *testing.T) {
	rs := newReplicaSet(t, 10, 1)
	rs.start("r1")
	rs.start("r2")
	rs.waitSettled("two replicas")
	rs.waitHandedOver("two replicas")
	t0 := time.Now()
	rs.waitWritten("two replicas", t0)
	stopWatch := make(chan struct{})
	watched := make(chan []string)
	go func() {
		// Poll every replica's share while Consul restarts.
		var empty []string
		for {
			select {
			case <-stopWatch:
				watched <- empty
				return
			case <-time.After(200 * time.Millisecond):
			}
			owned := rs.owned()
			for _, id := range []string{"r1", "r2"} {
				if _, ok := owned[id]; !ok {
					empty = append(empty, id)
				}
			}
		}
	}()
	rs.consul.Stop()
	// Consul stays away while every target is scraped three times.
	rs.waitScrapes("Consul away", rs.scrapes(), 3)
	rs.consul.Restart(t)
	rs.waitSettled("after Consul came back")
	rs.waitHandedOver("after Consul came back")
	t1 := time.Now()
	rs.waitWritten("after Consul came back", t1)
	close(stopWatch)
	if empty := <-watched; len(empty) > 0 {
		t.Errorf("replicas with no target at some point of the restart: %v", empty)
	}
	maxGap, missing := rs.gaps(t0, t1)
	t.Logf("Consul restart under R=1: largest gap %s, %d slots missed", maxGap, missing)
	if missing > 0 {
		t.Errorf("%d slots without a point (largest gap %s): the README promises none", missing, maxGap)
	}
	rs.stop("r1", syscall.SIGTERM)
	rs.stop("r2", syscall.SIGTERM)
}
