package queue

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

var discard = slog.New(slog.DiscardHandler)

func mkBatch(i, size int) Batch {
	buf := []byte(fmt.Sprintf("m,i=%d v=%d 1\n", i, i))
	for len(buf) < size {
		buf = append(buf, fmt.Sprintf("m,i=%d,pad=%d v=1 1\n", i, len(buf))...)
	}
	return Batch{Buf: buf, Lines: 1, Samples: 10 + i}
}

// openQQ opens the queue in dir, as the sink does.
func openQQ(t *testing.T, dir string, bound int64, log *slog.Logger) (*Queue, Amount) {
	t.Helper()
	if log == nil {
		log = discard
	}
	q, rec, err := Open(Config{Dir: dir, MaxBytes: bound, MaxMemoryBytes: 1 << 30, SyncInterval: time.Second, Log: log})
	if err != nil {
		t.Fatal(err)
	}
	return q, rec.Damaged
}

// drain takes, checks and acknowledges every record; it returns the batch
// indexes in order.
func drain(t *testing.T, q *Queue) []int {
	t.Helper()
	var got []int
	for {
		q.mu.Lock()
		n := len(q.recs)
		q.mu.Unlock()
		if n == 0 {
			return got
		}
		j := q.Take(context.Background(), 1, nil)
		if j.ReadErr != nil {
			t.Fatal(j.ReadErr)
		}
		var i int
		fmt.Sscanf(string(j.Body), "m,i=%d", &i)
		if j.Samples != 10+i {
			t.Fatalf("batch %d came back with %d samples", i, j.Samples)
		}
		got = append(got, i)
		q.Ack(j)
	}
}

func closeQ(t *testing.T, q *Queue) {
	t.Helper()
	if _, err := q.Spill(); err != nil {
		t.Fatal(err)
	}
}

func dirBytes(t *testing.T, dir string) int64 {
	t.Helper()
	segs, _ := filepath.Glob(filepath.Join(dir, "*.seg"))
	var n int64
	for _, s := range segs {
		if st, err := os.Stat(s); err == nil {
			n += st.Size()
		}
	}
	return n
}

func TestDiskQueueOrderAcrossReopen(t *testing.T) {
	dir := t.TempDir()
	q, _ := openQQ(t, dir, MinBytes, nil)
	q.cfg.MaxMemoryBytes = 0 // read everything back from disk
	for i := 0; i < 6; i++ {
		q.Push(mkBatch(i, 60))
	}
	for i := 0; i < 2; i++ { // acknowledge two, then restart
		q.Ack(q.Take(context.Background(), 1, nil))
	}
	closeQ(t, q)
	q, ls := openQQ(t, dir, MinBytes, nil)
	if ls.Bytes != 0 || ls.Samples != 0 {
		t.Errorf("clean reopen lost %+v", ls)
	}
	q.Push(mkBatch(6, 60))
	if got := fmt.Sprint(drain(t, q)); got != "[2 3 4 5 6]" {
		t.Errorf("order after reopen: %s", got)
	}
	closeQ(t, q)
}

// Every record goes to disk when it is pushed, whether or not the writer
// is keeping up: a crash loses nothing that was sealed.
func TestDiskQueueWriteThrough(t *testing.T) {
	dir := t.TempDir()
	q, _ := openQQ(t, dir, MinBytes, nil)
	for i := 0; i < 5; i++ {
		q.Push(mkBatch(i, 100))
	}
	j := q.Take(context.Background(), 1, nil) // in flight when the "crash" comes
	_ = j
	// A crash: nothing is closed or synced. Read the directory as the next
	// process would (the lock is the kernel's, released with the process).
	q.disk.lock.Close()
	q2, ls := openQQ(t, dir, MinBytes, nil)
	if ls.Samples != 0 {
		t.Errorf("lost %+v", ls)
	}
	if got := fmt.Sprint(drain(t, q2)); got != "[0 1 2 3 4]" {
		t.Errorf("after the crash the queue holds %s, want every pushed batch", got)
	}
	closeQ(t, q2)
}

func TestDiskQueueTornTail(t *testing.T) {
	dir := t.TempDir()
	q, _ := openQQ(t, dir, MinBytes, nil)
	for i := 0; i < 3; i++ {
		q.Push(mkBatch(i, 100))
	}
	closeQ(t, q)
	seg := lastSegment(t, dir)
	st, _ := os.Stat(seg)
	if err := os.Truncate(seg, st.Size()-30); err != nil { // crash mid-write of record 2
		t.Fatal(err)
	}
	q, ls := openQQ(t, dir, MinBytes, nil)
	if ls.Samples != 12 || ls.Bytes == 0 {
		t.Errorf("lost %+v, want the torn record's 12 samples", ls)
	}
	if got := fmt.Sprint(drain(t, q)); got != "[0 1]" {
		t.Errorf("replayed %s, want [0 1]", got)
	}
	q.Push(mkBatch(7, 50)) // the queue keeps working after the repair
	if got := fmt.Sprint(drain(t, q)); got != "[7]" {
		t.Errorf("after repair: %s", got)
	}
	closeQ(t, q)
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

// One damaged byte costs its record only: reading resynchronises on the
// next intact record, and the loss is counted exactly, whether the byte
// is in a payload, a header or the record marker.
func TestDiskQueueDamagedByteCostsOneRecord(t *testing.T) {
	for _, where := range []struct {
		name string
		off  func(recStart, recSize int) int
	}{
		{"payload", func(s, n int) int { return s + n/2 }},
		{"sample count", func(s, n int) int { return s + 12 }},
		{"marker", func(s, n int) int { return s + 1 }},
		{"length", func(s, n int) int { return s + 5 }},
	} {
		t.Run(where.name, func(t *testing.T) {
			dir := t.TempDir()
			q, _ := openQQ(t, dir, MinBytes, nil)
			for i := 0; i < 31; i++ {
				q.Push(mkBatch(i, 120))
			}
			closeQ(t, q)
			seg := lastSegment(t, dir)
			data, _ := os.ReadFile(seg)
			start := 0
			for i := 0; i < 10; i++ {
				h, ok := recordAt(data, int64(start))
				if !ok {
					t.Fatalf("record %d not intact", i)
				}
				start += int(h.size)
			}
			h, _ := recordAt(data, int64(start))
			size := int(h.size)
			data[where.off(start, size)] ^= 0x5a // record 10
			os.WriteFile(seg, data, 0o640)
			var logs bytes.Buffer
			q, ls := openQQ(t, dir, MinBytes, slog.New(slog.NewTextHandler(&logs, nil)))
			if ls.Samples != 20 || ls.Bytes != int64(size) {
				t.Errorf("lost %+v, want exactly record 10: 20 samples, %d bytes", ls, size)
			}
			got := drain(t, q)
			if len(got) != 30 || got[9] != 9 || got[10] != 11 || got[29] != 30 {
				t.Errorf("replayed %v, want every record but 10", got)
			}
			if !strings.Contains(logs.String(), "queue segment is damaged") || !strings.Contains(logs.String(), "lost_samples=20") {
				t.Errorf("log does not say what was found and done:\n%s", logs.String())
			}
			closeQ(t, q)
		})
	}
}

// A cursor that cannot be right sends the whole queue again rather than
// losing it, and says so.
func TestDiskQueueBadCursorReplaysAll(t *testing.T) {
	for name, cursor := range map[string]string{
		"garbage":      "not a cursor",
		"past the end": "999 0\n",
		"mid-record":   "1 7\n",
		"negative":     "1 -5\n",
		"one number":   "1\n",
		"empty":        "",
		"long garbage": strings.Repeat("7 ", 60) + "\n",
	} {
		t.Run(name, func(t *testing.T) {
			dir := t.TempDir()
			q, _ := openQQ(t, dir, MinBytes, nil)
			for i := 0; i < 3; i++ {
				q.Push(mkBatch(i, 100))
			}
			closeQ(t, q)
			os.WriteFile(filepath.Join(dir, cursorFile), []byte(cursor), 0o640)
			var logs bytes.Buffer
			q, _ = openQQ(t, dir, MinBytes, slog.New(slog.NewTextHandler(&logs, nil)))
			if got := fmt.Sprint(drain(t, q)); got != "[0 1 2]" {
				t.Errorf("replayed %s, want everything", got)
			}
			if !strings.Contains(logs.String(), "sending the whole") {
				t.Errorf("bad cursor not reported:\n%s", logs.String())
			}
			closeQ(t, q)
			// The cursor is rewritten in place: nothing of the bad one may
			// trail the new one, so the next run starts after the records
			// written.
			logs.Reset()
			q, _ = openQQ(t, dir, MinBytes, slog.New(slog.NewTextHandler(&logs, nil)))
			if got := drain(t, q); len(got) != 0 || logs.Len() != 0 {
				t.Errorf("after the records were written, the next run replayed %v and logged:\n%s", got, logs.String())
			}
			closeQ(t, q)
		})
	}
}

// The bound holds at every push, also far below the old 64 MiB segment
// size, the newest data is kept, and drops are counted exactly.
func TestDiskQueueBoundHeld(t *testing.T) {
	dir := t.TempDir()
	const bound = 2 << 20
	q, _ := openQQ(t, dir, bound, nil)
	var dropped Drops
	var pushed int64
	const n = 400
	for i := 0; i < n; i++ {
		b := mkBatch(i, 20<<10)
		pushed += int64(b.Samples)
		d, _ := q.Push(b)
		dropped.add(d)
		if got := dirBytes(t, dir); got > bound {
			t.Fatalf("after %d pushes the queue dir holds %d bytes, bound %d", i+1, got, bound)
		}
	}
	got := drain(t, q)
	if got[len(got)-1] != n-1 {
		t.Fatalf("newest batch not kept: %v", got[len(got)-5:])
	}
	var kept int64
	for _, i := range got {
		kept += int64(10 + i)
	}
	if kept+dropped.Full.Samples != pushed || !dropped.DiskError.IsZero() {
		t.Errorf("kept %d + dropped %+v != pushed %d", kept, dropped, pushed)
	}
	if int64(len(got))*(20<<10) < bound*3/4 {
		t.Errorf("kept only %d records (%d bytes) of a %d bound", len(got), len(got)*(20<<10), bound)
	}
	if left := dirBytes(t, dir); left > 1<<20 {
		t.Errorf("drained queue leaves %d bytes on disk", left)
	}
	closeQ(t, q)
}

// The record the writer holds is never dropped by the bound, and its ack
// removes exactly it: pushed = written + dropped + queued.
func TestQueueBoundSparesRecordInFlight(t *testing.T) {
	for _, disk := range []bool{false, true} {
		t.Run(fmt.Sprint("disk=", disk), func(t *testing.T) {
			var q *Queue
			if disk {
				q, _ = openQQ(t, t.TempDir(), MinBytes, nil)
			} else {
				q, _, _ = Open(Config{MaxMemoryBytes: MinBytes})
			}
			var pushed, written, dropped int64
			for i := 0; i < 3; i++ {
				b := mkBatch(i, 100<<10)
				pushed += int64(b.Samples)
				q.Push(b)
			}
			j := q.Take(context.Background(), 1, nil)
			if !strings.HasPrefix(string(j.Body), "m,i=0 ") {
				t.Fatalf("took %.10q, want batch 0", j.Body)
			}
			for i := 3; i < 40; i++ { // far past the bound while batch 0 is written
				b := mkBatch(i, 100<<10)
				pushed += int64(b.Samples)
				d, _ := q.Push(b)
				dropped += d.Full.Samples + d.DiskError.Samples
			}
			q.Ack(j)
			written += int64(j.Samples)
			var queued int64
			for _, r := range q.recs {
				queued += int64(r.samples)
			}
			if written != 10 {
				t.Errorf("acked %d samples, want batch 0's 10", written)
			}
			if pushed != written+dropped+queued {
				t.Errorf("pushed %d != written %d + dropped %d + queued %d", pushed, written, dropped, queued)
			}
			if disk {
				closeQ(t, q)
			}
		})
	}
}

func TestDiskQueueLocked(t *testing.T) {
	dir := t.TempDir()
	q, _ := openQQ(t, dir, MinBytes, nil)
	_, _, err := Open(Config{Dir: dir, MaxBytes: MinBytes, MaxMemoryBytes: MinBytes, SyncInterval: time.Second})
	if !errors.Is(err, ErrLocked) {
		t.Fatalf("second open: %v, want ErrLocked", err)
	}
	if want := fmt.Sprintf("pid %d", os.Getpid()); !strings.Contains(err.Error(), want) || !strings.Contains(err.Error(), "--queue-dir") {
		t.Errorf("error %q does not name the holder (%s) and what to do", err, want)
	}
	closeQ(t, q)
	q, _ = openQQ(t, dir, MinBytes, nil) // free again once closed
	closeQ(t, q)
}

// Records written by the earlier format (20-byte headers) are still read.
func TestDiskQueueReadsEarlierFormat(t *testing.T) {
	dir := t.TempDir()
	var data []byte
	for i := 0; i < 3; i++ {
		b := mkBatch(i, 50)
		h := make([]byte, recordHeaderV1)
		putV1Header(h, b)
		data = append(append(data, h...), b.Buf...)
	}
	os.WriteFile(filepath.Join(dir, "0000000000000004.seg"), data, 0o640)
	os.WriteFile(filepath.Join(dir, cursorFile), []byte("4 0\n"), 0o640)
	q, ls := openQQ(t, dir, MinBytes, nil)
	if ls.Samples != 0 {
		t.Errorf("lost %+v", ls)
	}
	if got := fmt.Sprint(drain(t, q)); got != "[0 1 2]" {
		t.Errorf("replayed %s", got)
	}
	closeQ(t, q)
}

// FuzzDiskQueueOpen: whatever bytes a segment file holds (a crash, a bad
// disk), opening the queue never fails or panics, what it replays is
// exactly the records that check out, and every byte is either replayed
// or counted lost.
func FuzzDiskQueueOpen(f *testing.F) {
	dir := f.TempDir()
	d, _, _, err := openLog(OS{}, dir, 1<<20, SyncNever, discard)
	if err != nil {
		f.Fatal(err)
	}
	for i := 0; i < 3; i++ {
		d.append(mkBatch(i, 40).Buf, 1, 10+i, false)
	}
	d.close()
	seg, _ := os.ReadFile(filepath.Join(dir, "0000000000000001.seg"))
	f.Add(seg)
	f.Add(seg[:len(seg)-7])
	f.Add(append(seg[:10:10], seg[40:]...))
	f.Add([]byte("2QFS not really"))
	f.Fuzz(func(t *testing.T, data []byte) {
		dir := t.TempDir()
		if err := os.WriteFile(filepath.Join(dir, "0000000000000001.seg"), data, 0o640); err != nil {
			t.Fatal(err)
		}
		d, recs, ls, err := openLog(OS{}, dir, 1<<20, SyncNever, discard)
		if err != nil {
			t.Fatalf("open: %v", err)
		}
		defer d.close()
		var good int64
		for _, r := range recs {
			body, err := d.read(r, nil)
			if err != nil {
				t.Fatal(err)
			}
			good += r.size
			if int64(len(body)) != r.payload() {
				t.Fatalf("record of %d bytes read back as %d", r.size, len(body))
			}
		}
		if good+ls.Bytes != int64(len(data)) {
			t.Fatalf("replayed %d bytes + lost %d != %d in the file", good, ls.Bytes, len(data))
		}
		if ls.Samples < 0 {
			t.Fatalf("negative loss %d", ls.Samples)
		}
	})
}

func putV1Header(h []byte, b Batch) {
	binary.LittleEndian.PutUint32(h[0:], recordMagicV1)
	binary.LittleEndian.PutUint32(h[4:], uint32(len(b.Buf)))
	binary.LittleEndian.PutUint32(h[8:], uint32(b.Lines))
	binary.LittleEndian.PutUint32(h[12:], uint32(b.Samples))
	binary.LittleEndian.PutUint32(h[16:], crc32.Checksum(b.Buf, crcTable))
}

func TestMemoryQueueDropsOldestWhenFull(t *testing.T) {
	q, _, err := Open(Config{MaxMemoryBytes: 100})
	if err != nil {
		t.Fatal(err)
	}
	mk := func(n int) Batch { return Batch{Buf: make([]byte, n), Lines: 1, Samples: n} }
	q.Push(mk(40))
	q.Push(mk(41))
	if d, _ := q.Push(mk(42)); d.Full.Samples != 40 {
		t.Fatalf("dropped %+v, want the oldest batch (40)", d)
	}
	// The batch being written is never dropped.
	if j := q.Take(context.Background(), 1, nil); j.Samples != 41 {
		t.Fatalf("took %d, want the head (41)", j.Samples)
	}
	if d, _ := q.Push(mk(43)); d.Full.Samples != 42 {
		t.Fatalf("dropped %+v, want the one after the busy head (42)", d)
	}
}

// A byte damaged in a record InfluxDB already took costs nothing and is
// not counted; damage in a record still to send is counted once, not again
// at every restart.
func TestDamageBeforeCursorNotCounted(t *testing.T) {
	dir := t.TempDir()
	q, _ := openQQ(t, dir, MinBytes, nil)
	for i := 0; i < 6; i++ {
		q.Push(mkBatch(i, 100))
	}
	for i := 0; i < 3; i++ {
		q.Ack(q.Take(context.Background(), 1, nil))
	}
	closeQ(t, q)
	seg := lastSegment(t, dir)
	data, _ := os.ReadFile(seg)
	offs := []int{0}
	for i := 0; i < 5; i++ {
		h, _ := recordAt(data, int64(offs[i]))
		offs = append(offs, offs[i]+int(h.size))
	}
	data[offs[1]+40] ^= 0x5a // record 1: written to InfluxDB
	os.WriteFile(seg, data, 0o640)
	q, ls := openQQ(t, dir, MinBytes, nil)
	if !ls.IsZero() {
		t.Fatalf("damage in a written record counted as lost: %+v", ls)
	}
	q.disk.lock.Close()      // a crash: nothing acknowledged
	data[offs[4]+40] ^= 0x5a // record 4: still to send
	os.WriteFile(seg, data, 0o640)
	q, ls = openQQ(t, dir, MinBytes, nil)
	if ls.Samples != 14 {
		t.Fatalf("damage in record 4 counted as %+v, want its 14 samples", ls)
	}
	q.disk.lock.Close()
	q, ls = openQQ(t, dir, MinBytes, nil)
	if !ls.IsZero() {
		t.Fatalf("the same damage counted again at the next start: %+v", ls)
	}
	if got := fmt.Sprint(drain(t, q)); got != "[3 5]" {
		t.Fatalf("replayed %s, want [3 5]", got)
	}
	closeQ(t, q)
}
