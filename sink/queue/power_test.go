package queue

import (
	"bytes"
	"context"
	"flag"
	"fmt"
	"math/rand/v2"
	"testing"
	"time"
)

// payloadOf is the payload of record id: its lines name it, so what comes
// back can be checked byte for byte.
func payloadOf(id, size int) []byte {
	line := fmt.Appendf(nil, "m,id=%d v=%d 1\n", id, id)
	return bytes.Repeat(line, max(1, size/len(line)))
}

// model is what the test knows of a queue: what was pushed when, what was
// acknowledged, what the queue reported dropped.
type model struct {
	next     int
	pushedAt map[int]time.Time
	size     map[int]int
	acked    map[int]bool // since the last power cut
	durable  map[int]bool // promised durable by the sync policy
}

func newModel() *model {
	return &model{next: 1, pushedAt: map[int]time.Time{}, size: map[int]int{}, acked: map[int]bool{}, durable: map[int]bool{}}
}

// live lists the record ids the queue holds, in order. Each batch's
// sample count is its id.
func live(q *Queue) []int {
	q.mu.Lock()
	defer q.mu.Unlock()
	out := make([]int, len(q.recs))
	for i, r := range q.recs {
		out[i] = r.samples
	}
	return out
}

// A power cut at any step of scripted runs (appends, segment rolls,
// trims, acknowledgements, restarts) loses nothing the sync policy
// promised durable, never reads garbage as data, never counts as lost
// more than was lost, and the next run goes on.
func TestPowerCutAtEveryStep(t *testing.T) {
	for _, policy := range []SyncPolicy{SyncAlways, SyncInterval, SyncNever} {
		t.Run(policy.String(), func(t *testing.T) {
			for seed := uint64(1); seed <= *powerCutSeeds; seed++ {
				powerCutScript(t, policy, seed)
			}
		})
	}
}

// powerCutSeeds: scripts run per policy (20 keep make test quick; the
// README's longer run is -powercut-seeds 400).
var powerCutSeeds = flag.Uint64("powercut-seeds", 20, "power-cut scripts to run per sync policy")

func powerCutScript(t *testing.T, policy SyncPolicy, seed uint64) {
	t.Helper()
	fs := newCutFS(seed)
	rng := rand.New(rand.NewPCG(seed, 99))
	now := time.Unix(1_700_000_000, 0)
	const interval = time.Second
	cfg := Config{Dir: "/q", MaxBytes: MinBytes, MaxMemoryBytes: 256 << 10, Sync: policy, SyncInterval: interval, FS: fs, Log: discard,
		Now: func() time.Time { return now }}
	open := func() (*Queue, Recovered) {
		q, rec, err := Open(cfg)
		if err != nil {
			t.Fatalf("seed %d: open: %v", seed, err)
		}
		return q, rec
	}
	q, _ := open()
	m := newModel()
	cuts := 0
	// promise marks what the policy says is durable after a call at now.
	promise := func() {
		for _, id := range live(q) {
			at, ok := m.pushedAt[id]
			if !ok {
				continue
			}
			if policy == SyncAlways || (policy == SyncInterval && !now.Before(at.Add(interval))) {
				m.durable[id] = true
			}
		}
	}
	for step := 0; step < 300; step++ {
		before := live(q)
		switch op := rng.IntN(20); {
		case op < 9: // push
			id, size := m.next, 200+rng.IntN(12<<10)
			m.next++
			m.pushedAt[id], m.size[id] = now, size
			q.Push(Batch{Buf: payloadOf(id, size), Lines: 1, Samples: id})
		case op < 13: // the writer takes and acknowledges
			if len(before) == 0 {
				continue
			}
			j := q.Take(context.Background(), 1+rng.IntN(3), nil)
			if j.ReadErr != nil {
				t.Fatalf("seed %d step %d: %v", seed, step, j.ReadErr)
			}
			if rng.IntN(4) == 0 {
				q.Untake(j)
				continue
			}
			for _, r := range j.recs {
				m.acked[r.samples] = true
			}
			q.Ack(j)
		case op < 16: // time passes
			now = now.Add(time.Duration(rng.IntN(1500)) * time.Millisecond)
			q.Tick()
		case op < 17: // a clean restart
			if _, err := q.Spill(); err != nil {
				t.Fatal(err)
			}
			for _, id := range live(q) {
				m.durable[id] = true
			}
			q, _ = open()
		default: // the power goes
			promise()
			held := live(q)
			fs.cut()
			cuts++
			var rec Recovered
			q, rec = open()
			got := live(q)
			checkAfterCut(t, seed, step, policy, q, m, held, got, rec)
			// The next run starts from what came back.
			m.durable, m.acked = map[int]bool{}, map[int]bool{}
			for _, id := range got {
				m.pushedAt[id] = now.Add(-time.Hour) // on disk already
			}
		}
		promise()
	}
	if cuts == 0 {
		t.Fatalf("seed %d: the script never cut the power", seed)
	}
	if _, err := q.Spill(); err != nil {
		t.Fatal(err)
	}
}

func checkAfterCut(t *testing.T, seed uint64, step int, policy SyncPolicy, q *Queue, m *model, held, got []int, rec Recovered) {
	t.Helper()
	gotSet := map[int]bool{}
	for i, id := range got {
		if _, ok := m.pushedAt[id]; !ok {
			t.Fatalf("seed %d step %d: read back record %d that was never pushed", seed, step, id)
		}
		if i > 0 && id <= got[i-1] {
			t.Fatalf("seed %d step %d: records back out of order or twice: %v", seed, step, got)
		}
		gotSet[id] = true
	}
	var lost int64
	for _, id := range held {
		if m.durable[id] && !gotSet[id] {
			t.Fatalf("seed %d step %d: record %d was promised durable and is gone (held %v, back %v)", seed, step, id, held, got)
		}
		if !gotSet[id] {
			lost += int64(id)
		}
	}
	if policy == SyncAlways && (lost > 0 || !rec.Damaged.IsZero()) {
		t.Fatalf("seed %d step %d: with every record synced, %d samples are gone and %+v counted lost", seed, step, lost, rec.Damaged)
	}
	// Without a synced cursor, the queue cannot tell a torn record InfluxDB
	// had taken from one it had not: those may be counted too, nothing
	// else.
	for id := range m.acked {
		if !gotSet[id] {
			lost += int64(id)
		}
	}
	if rec.Damaged.Samples > lost {
		t.Fatalf("seed %d step %d: counted %d samples lost, only %d can be (held %v, back %v, acked %v)", seed, step, rec.Damaged.Samples, lost, held, got, m.acked)
	}
	// The taker's path reads the first record back byte for byte (taking
	// them all would drain the queue the script goes on with); the loop
	// below reads every one of them from disk.
	if len(live(q)) > 0 {
		j := q.Take(context.Background(), 1, nil)
		if j.ReadErr != nil {
			t.Fatalf("seed %d step %d: %v", seed, step, j.ReadErr)
		}
		id := j.Samples
		if want := payloadOf(id, m.size[id]); !bytes.Equal(j.Body, want) {
			t.Fatalf("seed %d step %d: record %d reads back as %.40q", seed, step, id, j.Body)
		}
		q.Untake(j)
	}
	q.mu.Lock()
	for _, r := range q.recs {
		if !r.onDisk() {
			continue
		}
		body, err := q.disk.read(r.disk, nil)
		if err != nil || !bytes.Equal(body, payloadOf(r.samples, m.size[r.samples])) {
			q.mu.Unlock()
			t.Fatalf("seed %d step %d: record %d damaged after reopen: %v", seed, step, r.samples, err)
		}
	}
	q.mu.Unlock()
}
