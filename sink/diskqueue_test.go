package sink

import (
	"fmt"
	"os"
	"path/filepath"
	"testing"
)

func mkBatch(i, size int) *batch {
	buf := []byte(fmt.Sprintf("m,i=%d v=%d 1\n", i, i))
	for len(buf) < size {
		buf = append(buf, fmt.Sprintf("m,i=%d,pad=%d v=1 1\n", i, len(buf))...)
	}
	return &batch{buf: buf, lines: 1, samples: 10 + i}
}

func openQ(t *testing.T, dir string, maxSize, segMax int64) (*diskQueue, lost) {
	t.Helper()
	q, ls, err := openDiskQueue(dir, maxSize, segMax, discard)
	if err != nil {
		t.Fatal(err)
	}
	return q, ls
}

// drainQ acks everything and returns the batch indexes in order.
func drainQ(t *testing.T, q *diskQueue) []int {
	t.Helper()
	var got []int
	for !q.empty() {
		b, err := q.peek(nil)
		if err != nil {
			t.Fatal(err)
		}
		var i int
		fmt.Sscanf(string(b.buf), "m,i=%d", &i)
		if b.samples != 10+i {
			t.Fatalf("batch %d came back with %d samples", i, b.samples)
		}
		got = append(got, i)
		q.ack()
	}
	return got
}

func TestDiskQueueOrderAcrossReopen(t *testing.T) {
	dir := t.TempDir()
	q, _ := openQ(t, dir, 1<<20, 200) // tiny segments: several files
	for i := 0; i < 6; i++ {
		if _, err := q.append(mkBatch(i, 60)); err != nil {
			t.Fatal(err)
		}
	}
	// Acknowledge two, then "restart".
	for i := 0; i < 2; i++ {
		if _, err := q.peek(nil); err != nil {
			t.Fatal(err)
		}
		q.ack()
	}
	q.close()
	q, ls := openQ(t, dir, 1<<20, 200)
	if ls.bytes != 0 {
		t.Errorf("clean reopen lost %d bytes", ls.bytes)
	}
	if q.samples != 12+13+14+15 {
		t.Errorf("reopened queue holds %d samples, want %d", q.samples, 12+13+14+15)
	}
	q.append(mkBatch(6, 60))
	if got := fmt.Sprint(drainQ(t, q)); got != "[2 3 4 5 6]" {
		t.Errorf("order after reopen: %s", got)
	}
	q.close()
	segs, _ := filepath.Glob(filepath.Join(dir, "*.seg"))
	if len(segs) > 2 {
		t.Errorf("%d segment files left after draining: %v", len(segs), segs)
	}
}

func lastSegment(t *testing.T, dir string) string {
	segs, _ := filepath.Glob(filepath.Join(dir, "*.seg"))
	for i := len(segs) - 1; i >= 0; i-- {
		if st, _ := os.Stat(segs[i]); st.Size() > 0 {
			return segs[i]
		}
	}
	t.Fatal("no segment with data")
	return ""
}

func TestDiskQueueTornTail(t *testing.T) {
	dir := t.TempDir()
	q, _ := openQ(t, dir, 1<<20, 1<<20)
	for i := 0; i < 3; i++ {
		q.append(mkBatch(i, 100))
	}
	q.close()
	seg := lastSegment(t, dir)
	st, _ := os.Stat(seg)
	if err := os.Truncate(seg, st.Size()-30); err != nil { // crash mid-write of record 2
		t.Fatal(err)
	}
	q, ls := openQ(t, dir, 1<<20, 1<<20)
	if ls.samples != 12 || ls.bytes == 0 {
		t.Errorf("lost %+v, want the torn record's 12 samples", ls)
	}
	if got := fmt.Sprint(drainQ(t, q)); got != "[0 1]" {
		t.Errorf("replayed %s, want [0 1]", got)
	}
	// The queue keeps working after the repair.
	q.append(mkBatch(7, 50))
	if got := fmt.Sprint(drainQ(t, q)); got != "[7]" {
		t.Errorf("after repair: %s", got)
	}
	q.close()
}

func TestDiskQueueCorruptRecord(t *testing.T) {
	dir := t.TempDir()
	q, _ := openQ(t, dir, 1<<20, 1<<20)
	for i := 0; i < 3; i++ {
		q.append(mkBatch(i, 100))
	}
	q.close()
	seg := lastSegment(t, dir)
	data, _ := os.ReadFile(seg)
	data[len(data)/2] ^= 0xff // inside record 1's payload
	os.WriteFile(seg, data, 0o640)
	q, ls := openQ(t, dir, 1<<20, 1<<20)
	if ls.bytes == 0 {
		t.Error("corruption not detected")
	}
	if got := fmt.Sprint(drainQ(t, q)); got != "[0]" {
		t.Errorf("replayed %s, want [0] (the good part)", got)
	}
	q.close()
}

func TestDiskQueueDropsOldestPastBound(t *testing.T) {
	dir := t.TempDir()
	q, _ := openQ(t, dir, 500, 200)
	var dropped lost
	for i := 0; i < 10; i++ {
		d, err := q.append(mkBatch(i, 80))
		if err != nil {
			t.Fatal(err)
		}
		dropped.add(d)
	}
	if q.bytes > 500 {
		t.Errorf("queue holds %d bytes, bound 500", q.bytes)
	}
	got := drainQ(t, q)
	if len(got) == 0 || got[len(got)-1] != 9 {
		t.Fatalf("kept %v, want the newest batches", got)
	}
	sum := int64(0)
	for i := 0; i < got[0]; i++ {
		sum += int64(10 + i)
	}
	if dropped.samples != sum {
		t.Errorf("dropped %d samples, want %d (batches before %d)", dropped.samples, sum, got[0])
	}
	q.close()
}

// FuzzDiskQueueOpen: whatever bytes a segment file holds (a crash, a bad
// disk), opening the queue never fails or panics, and what it replays is
// exactly the records that check out.
func FuzzDiskQueueOpen(f *testing.F) {
	dir := f.TempDir()
	q, _, err := openDiskQueue(dir, 1<<20, 1<<20, discard)
	if err != nil {
		f.Fatal(err)
	}
	for i := 0; i < 3; i++ {
		q.append(mkBatch(i, 40))
	}
	q.close()
	seg, _ := os.ReadFile(filepath.Join(dir, "0000000000000001.seg"))
	f.Add(seg)
	f.Add(seg[:len(seg)-7])
	f.Add([]byte("SFQ1 not really"))
	f.Fuzz(func(t *testing.T, data []byte) {
		dir := t.TempDir()
		if err := os.WriteFile(filepath.Join(dir, "0000000000000001.seg"), data, 0o640); err != nil {
			t.Fatal(err)
		}
		q, ls, err := openDiskQueue(dir, 1<<30, 1<<20, discard)
		if err != nil {
			t.Fatalf("open: %v", err)
		}
		defer q.close()
		var good int64
		for !q.empty() {
			b, err := q.peek(nil)
			if err != nil {
				t.Fatal(err)
			}
			good += int64(len(b.buf)) + recordHeader
			q.ack()
		}
		if good+ls.bytes != int64(len(data)) {
			t.Fatalf("replayed %d bytes + lost %d != %d in the file", good, ls.bytes, len(data))
		}
	})
}
