package scrape

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/scrapeflux/scrapeflux/discovery"

	"github.com/scrapeflux/scrapeflux/internal/servertest"
)

func keys(n int) []string {
	out := make([]string, n)
	for i := range out {
		out[i] = fmt.Sprintf("http://10.0.%d.%d:9323/metrics\x00job=docker-engine", i/250, i%250)
	}
	return out
}

func TestOwnersDistinctRanked(t *testing.T) {
	members := []string{"a", "b", "c", "d", "e"}
	for _, k := range keys(200) {
		for r := 1; r <= 6; r++ {
			o := Owners(k, members, r)
			if len(o) != min(r, len(members)) {
				t.Fatalf("Owners(%q, r=%d) = %v", k, r, o)
			}
			if len(slices.Compact(slices.Sorted(slices.Values(o)))) != len(o) {
				t.Fatalf("owners not distinct: %v", o)
			}
			// Ranking is a prefix: R+1 owners extend the R owners.
			if r > 1 && !slices.Equal(Owners(k, members, r-1), o[:r-1]) {
				t.Fatalf("owners for r=%d not a prefix of r=%d", r-1, r)
			}
		}
	}
}

// The ranking is part of the product: replicas of different builds must
// agree, so a change of the hash shows up here.
func TestOwnersDeterministic(t *testing.T) {
	got := Owners("http://10.0.0.1:9323/metrics\x00instance=10.0.0.1:9323\x00job=docker-engine", []string{"replica-1", "replica-2", "replica-3"}, 3)
	want := []string{"replica-3", "replica-2", "replica-1"}
	if !slices.Equal(got, want) {
		t.Errorf("owners = %q, want %q", got, want)
	}
	// Member order does not matter.
	if got2 := Owners("http://10.0.0.1:9323/metrics\x00instance=10.0.0.1:9323\x00job=docker-engine", []string{"replica-3", "replica-1", "replica-2"}, 3); !slices.Equal(got2, want) {
		t.Errorf("owners depend on member order: %q", got2)
	}
}

func TestOwnersStableAndEven(t *testing.T) {
	ks := keys(10000)
	four := []string{"r1", "r2", "r3", "r4"}
	five := append(slices.Clone(four), "r5")
	count := map[string]int{}
	moved := 0
	for _, k := range ks {
		before, after := Owners(k, four, 1)[0], Owners(k, five, 1)[0]
		count[after]++
		if before != after {
			moved++
			if after != "r5" {
				t.Fatalf("%s moved from %s to %s, not to the new member", k, before, after)
			}
		}
	}
	if f := float64(moved) / float64(len(ks)); f < 0.17 || f > 0.23 {
		t.Errorf("adding a 5th member moved %.3f of the targets, want about 1/5", f)
	}
	for m, n := range count {
		if n < 1900 || n > 2100 {
			t.Errorf("%s owns %d of 10000 targets over 5 members, want 2000±5%%", m, n)
		}
	}
	// Removing a member moves only its own targets, and with R=2 every
	// target keeps one of its owners.
	for _, k := range ks {
		before, after := Owners(k, five, 2), Owners(k, four, 2)
		if !slices.Contains(before, "r5") && !slices.Equal(before, after) {
			t.Fatalf("%s: owners %v -> %v though r5 did not own it", k, before, after)
		}
		if !slices.Contains(after, before[0]) && !slices.Contains(after, before[1]) {
			t.Fatalf("%s: no owner kept: %v -> %v", k, before, after)
		}
	}
}

// A replica missing from the member list (its check failed) counts itself
// in: it keeps scraping its share rather than leaving a gap.
func TestShardCountsItselfIn(t *testing.T) {
	s := NewShard("me", 1)
	s.SetMembers([]string{"a", "b"})
	m, _ := s.Members()
	if !slices.Equal(m, []string{"a", "b", "me"}) {
		t.Errorf("members %v", m)
	}
	_, ch := s.Members()
	s.SetMembers([]string{"b", "a"}) // same list: no change
	select {
	case <-ch:
		t.Error("an identical member list signalled a change")
	default:
	}
	s.SetMembers([]string{"a"})
	select {
	case <-ch:
	default:
		t.Error("a new member list did not signal")
	}
}

// A target handed to another replica is scraped one more interval, then
// stopped; it comes back when the other replica goes.
func TestPoolHandsOverAfterOneInterval(t *testing.T) {
	var mu sync.Mutex
	hits := map[string]int{}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		hits[r.URL.Path]++
		mu.Unlock()
		io.WriteString(w, "x 1\n")
	}))
	defer srv.Close()
	cfg := Config{Interval: 300 * time.Millisecond, Timeout: 200 * time.Millisecond, BodyLimit: 1 << 20}
	// A target that "b" owns once it joins.
	var tg discovery.Target
	for i := 0; ; i++ {
		tg, _ = discovery.NewTarget(fmt.Sprintf("%s/t%d", srv.URL, i), "j")
		if Owners(tg.Key(), []string{"a", "b"}, 1)[0] == "b" {
			break
		}
	}
	shard := NewShard("a", 1)
	p, err := NewPool(cfg, &recorder{}, discard)
	if err != nil {
		t.Fatal(err)
	}
	p.SetShard(shard)
	ctx, cancel := context.WithCancel(context.Background())
	ch := make(chan []discovery.Target, 1)
	done := make(chan error)
	go func() { done <- p.Run(ctx, ch) }()
	ch <- []discovery.Target{tg}
	path := tg.URL[len(srv.URL):]
	count := func() int { mu.Lock(); defer mu.Unlock(); return hits[path] }
	servertest.WaitFor(t, "the condition", 10*time.Second, func() bool { return count() >= 2 })

	shard.SetMembers([]string{"a", "b"})
	servertest.WaitFor(t, "the condition", 10*time.Second, func() bool { st := p.Targets(); return len(st) == 1 && st[0].Role == RoleLeaving })
	atHandover := count()
	servertest.WaitFor(t, "the condition", 10*time.Second, func() bool { st := p.Targets(); return len(st) == 1 && st[0].Role == RoleSkipped })
	if n := count() - atHandover; n < 1 || n > 2 {
		t.Errorf("scraped %d times after the handover, want the one more interval", n)
	}
	if st := p.Targets()[0]; !slices.Equal(st.Owners, []string{"b"}) || st.Health != HealthSkipped {
		t.Errorf("skipped target shows owners %v health %s", st.Owners, st.Health)
	}
	if p.Handovers() != 1 {
		t.Errorf("handovers %d, want 1", p.Handovers())
	}
	stopped := count()
	time.Sleep(2 * cfg.Interval) // a window for the absence of scrapes: no event marks it
	if count() != stopped {
		t.Errorf("scraped after the handover ended")
	}
	shard.SetMembers([]string{"a"}) // b went away: the target comes back
	servertest.WaitFor(t, "the condition", 10*time.Second, func() bool { return count() > stopped })
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
}

// Points carry the target's planned slot as their time: whole intervals
// apart, at the target's offset within the interval.
func TestPointsCarryTheSlot(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		time.Sleep(3 * time.Millisecond) // a scrape that takes time changes nothing
		io.WriteString(w, "x 1\n")
	}))
	defer srv.Close()
	cfg := Config{Interval: 200 * time.Millisecond, Timeout: 100 * time.Millisecond, BodyLimit: 1 << 20}
	rec := &recorder{}
	p, err := NewPool(cfg, rec, discard)
	if err != nil {
		t.Fatal(err)
	}
	tg, _ := discovery.NewTarget(srv.URL+"/metrics", "j")
	ctx, cancel := context.WithCancel(context.Background())
	ch := make(chan []discovery.Target, 1)
	done := make(chan error)
	go func() { done <- p.Run(ctx, ch) }()
	ch <- []discovery.Target{tg}
	servertest.WaitFor(t, "the condition", 10*time.Second, func() bool { rec.mu.Lock(); defer rec.mu.Unlock(); return len(rec.commits) >= 4 })
	cancel()
	<-done
	rec.mu.Lock()
	defer rec.mu.Unlock()
	// The slot's phase within the interval: the target's hash on the start
	// grid.
	now := time.Now()
	phase := now.Add((&loop{target: tg, cfg: cfg}).offset(now)).UnixMilli() % cfg.Interval.Milliseconds()
	if step := (cfg.Interval / 10).Milliseconds(); phase%step != 0 {
		t.Fatalf("phase %d ms is off the %d ms grid", phase, step)
	}
	for i, c := range rec.commits {
		ts := c[0].ts
		if ts%cfg.Interval.Milliseconds() != phase {
			t.Errorf("scrape %d at %d: %d ms into the interval, want the slot's %d", i, ts, ts%cfg.Interval.Milliseconds(), phase)
		}
	}
}
