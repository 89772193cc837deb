package queue

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/scrapeflux/scrapeflux/internal/servertest"
)

// A disk that refuses writes never costs what is already on it: the
// records on disk stay, what the disk refused waits in memory up to its
// bound (past it the oldest of that is dropped, counted as disk_error),
// and once the disk takes writes again the waiting records are written
// in order. Before the fix, 4 refused pushes with a small memory bound
// dropped 23 of 24 records, the on-disk ones first.
func TestDiskFaultKeepsWhatIsOnDisk(t *testing.T) {
	fs := newCutFS(1)
	now := time.Unix(1_700_000_000, 0)
	var logs bytes.Buffer
	cfg := Config{Dir: "/q", MaxBytes: 4 << 20, MaxMemoryBytes: 3 << 10, Sync: SyncInterval, SyncInterval: time.Second, FS: fs,
		Log: slog.New(slog.NewTextHandler(&logs, nil)), Now: func() time.Time { return now }, RetryMin: time.Second, RetryMax: 4 * time.Second}
	q, _, err := Open(cfg)
	if err != nil {
		t.Fatal(err)
	}
	for i := 1; i <= 20; i++ {
		q.Push(Batch{Buf: payloadOf(i, 1000), Lines: 1, Samples: i})
	}
	fs.failWrite = fmt.Errorf("write: %w", syscall.ENOSPC)
	var dropped Drops
	for i := 21; i <= 24; i++ {
		now = now.Add(300 * time.Millisecond)
		d, _ := q.Push(Batch{Buf: payloadOf(i, 1000), Lines: 1, Samples: i})
		dropped.add(d)
	}
	got := live(q)
	if fmt.Sprint(got[:20]) != fmt.Sprint(seq(1, 20)) {
		t.Fatalf("records on disk were dropped while the disk refused writes: %v", got)
	}
	// 3 KiB of memory holds the newest refused records; the oldest refused
	// one went, and was counted as such.
	if fmt.Sprint(got[20:]) != "[22 23 24]" || dropped.DiskError.Samples != 21 || !dropped.Full.IsZero() {
		t.Fatalf("memory-only records %v, dropped %+v; want [22 23 24] and record 21 as disk_error", got[20:], dropped)
	}
	st := q.Status()
	if st.DiskError == "" || !strings.Contains(st.DiskError, "no space left") {
		t.Fatalf("status does not say the disk refuses writes: %+v", st)
	}
	if n := strings.Count(logs.String(), "cannot write to the disk queue"); n != 1 {
		t.Fatalf("the start of the fault was logged %d times, want once:\n%s", n, logs.String())
	}
	// A minute of refusals: one more line, not one per batch.
	for i := 25; i <= 34; i++ {
		now = now.Add(7 * time.Second)
		d, _ := q.Push(Batch{Buf: payloadOf(i, 1000), Lines: 1, Samples: i})
		dropped.add(d)
	}
	if n := strings.Count(logs.String(), "still refuses writes"); n != 1 {
		t.Fatalf("a minute of refusals logged %d reminders, want 1:\n%s", n, logs.String())
	}
	// The disk takes writes again: the waiting records go to disk, in
	// order, at the next retry.
	fs.failWrite = nil
	now = now.Add(10 * time.Second)
	q.Tick()
	if st := q.Status(); st.DiskError != "" || st.MemoryOnly != 0 {
		t.Fatalf("after the disk recovered: %+v", st)
	}
	if !strings.Contains(logs.String(), "takes writes again") {
		t.Fatalf("recovery not logged:\n%s", logs.String())
	}
	want := live(q)
	// Kept: the 20 records on disk before the fault and the newest refused
	// ones that fit in 3 KiB (a run ending at 34); every other refused
	// record was dropped and counted, by its samples.
	if len(want) < 22 || fmt.Sprint(want) != fmt.Sprint(append(seq(1, 20), seq(want[20], 34)...)) {
		t.Fatalf("after the disk recovered the queue holds %v; want 1-20 and the newest refused records up to 34", want)
	}
	lost := int64(0)
	for id := 21; id < want[20]; id++ {
		lost += int64(id)
	}
	if dropped.DiskError.Samples != lost || !dropped.Full.IsZero() {
		t.Fatalf("dropped %+v; want exactly records 21-%d (%d samples) as disk_error", dropped, want[20]-1, lost)
	}
	// A crash now (no close) loses nothing: everything is on disk, in
	// order.
	q2, rec, err := Open(cfg)
	if err != nil {
		t.Fatal(err)
	}
	if fmt.Sprint(live(q2)) != fmt.Sprint(want) || !rec.Damaged.IsZero() {
		t.Fatalf("after a crash the queue holds %v (damage %+v), want %v", live(q2), rec.Damaged, want)
	}
	var n int
	for _, id := range want {
		j := q2.Take(context.Background(), 1, nil)
		if j.ReadErr != nil || j.Samples != id || !bytes.Equal(j.Body, payloadOf(id, 1000)) {
			t.Fatalf("record %d read back as %d (%v)", id, j.Samples, j.ReadErr)
		}
		q2.Ack(j)
		n++
	}
	if st := q2.Status(); n != len(want) || st.Records != 0 {
		t.Fatalf("read back %d records of %d, %d more left", n, len(want), st.Records)
	}
}

// A failing sync is a disk fault too: the records since the last good
// sync may not be durable, so new ones wait in memory until the disk
// syncs again.
func TestSyncFailureIsADiskFault(t *testing.T) {
	fs := newCutFS(2)
	now := time.Unix(1_700_000_000, 0)
	q, _, err := Open(Config{Dir: "/q", MaxBytes: MinBytes, MaxMemoryBytes: 1 << 20, Sync: SyncAlways, FS: fs, Log: discard,
		Now: func() time.Time { return now }})
	if err != nil {
		t.Fatal(err)
	}
	fs.failSync = syscall.EIO
	q.Push(Batch{Buf: payloadOf(1, 500), Lines: 1, Samples: 1})
	if st := q.Status(); st.DiskError == "" || st.MemoryOnly == 0 {
		t.Fatalf("a failed sync went unnoticed: %+v", st)
	}
	fs.failSync = nil
	now = now.Add(time.Minute)
	q.Tick()
	if st := q.Status(); st.DiskError != "" || st.MemoryOnly != 0 {
		t.Fatalf("after the disk syncs again: %+v", st)
	}
	fs.cut()
	q2, _, err := Open(Config{Dir: "/q", MaxBytes: MinBytes, MaxMemoryBytes: 1 << 20, Sync: SyncAlways, FS: fs, Log: discard})
	if err != nil {
		t.Fatal(err)
	}
	if got := live(q2); fmt.Sprint(got) != "[1]" {
		t.Fatalf("after a power cut: %v, want the record synced on retry", got)
	}
}

func seq(a, b int) []int {
	var out []int
	for i := a; i <= b; i++ {
		out = append(out, i)
	}
	return out
}

// mountTmpfs mounts a tmpfs of size at a new directory for the test. It
// needs root: CI runs as root, so there a failure to mount fails the test.
func mountTmpfs(t *testing.T, size string) string {
	t.Helper()
	dir := t.TempDir()
	if out, err := exec.Command("mount", "-t", "tmpfs", "-o", "size="+size, "tmpfs", dir).CombinedOutput(); err != nil {
		servertest.Unavailable(t, "cannot mount a tmpfs (needs root): %v: %s", err, out)
	}
	t.Cleanup(func() { exec.Command("umount", "-l", dir).Run() })
	return dir
}

func remount(t *testing.T, dir, opts string) {
	t.Helper()
	if out, err := exec.Command("mount", "-o", "remount,"+opts, dir).CombinedOutput(); err != nil {
		t.Fatalf("remount %s: %v: %s", opts, err, out)
	}
}

// On a real filesystem: a full tmpfs (ENOSPC) keeps every record already
// on it; the queue says it is degraded, holds new data in memory and
// writes it, in order, once the filesystem takes writes again. (A
// filesystem cannot be made read-only under open files; a write refused
// with EROFS takes the same path, see TestDiskFaultKinds.)
func TestRealFullDisk(t *testing.T) {
	mnt := mountTmpfs(t, "1m")
	dir := filepath.Join(mnt, "queue")
	cfg := Config{Dir: dir, MaxBytes: 64 << 20, MaxMemoryBytes: 256 << 10, Sync: SyncInterval, SyncInterval: 10 * time.Millisecond,
		Log: discard, RetryMin: 5 * time.Millisecond, RetryMax: 20 * time.Millisecond}
	q, _, err := Open(cfg)
	if err != nil {
		t.Fatal(err)
	}
	// Fill the filesystem.
	id := 0
	var dropped Drops
	for q.Status().DiskError == "" {
		id++
		if id > 2000 {
			t.Fatal("a 1 MiB tmpfs took 2000 records of 4 KiB")
		}
		d, _ := q.Push(Batch{Buf: payloadOf(id, 4<<10), Lines: 1, Samples: id})
		dropped.add(d)
	}
	if !strings.Contains(q.Status().DiskError, "no space left") {
		t.Fatalf("want ENOSPC, got %q", q.Status().DiskError)
	}
	onDisk := id - 1
	// Keep pushing past the memory bound: nothing on disk may go.
	for i := 0; i < 100; i++ {
		id++
		d, _ := q.Push(Batch{Buf: payloadOf(id, 4<<10), Lines: 1, Samples: id})
		dropped.add(d)
	}
	got := live(q)
	if len(got) < onDisk || fmt.Sprint(got[:onDisk]) != fmt.Sprint(seq(1, onDisk)) {
		t.Fatalf("records on the full disk were dropped: kept %d of the first %d", len(got), onDisk)
	}
	if !dropped.Full.IsZero() || dropped.DiskError.IsZero() {
		t.Fatalf("dropped %+v: want only refused records, as disk_error", dropped)
	}
	if mem := q.Status().MemoryOnly; mem > cfg.MaxMemoryBytes+(4<<10) {
		t.Fatalf("%d bytes wait in memory, bound %d", mem, cfg.MaxMemoryBytes)
	}
	// Room again: the waiting records go to disk at the next retry.
	remount(t, mnt, "size=8m")
	servertest.WaitFor(t, "the condition", 10*time.Second, func() bool { q.Tick(); return q.Status().DiskError == "" && q.Status().MemoryOnly == 0 })
	want := live(q)
	if _, err := q.Spill(); err != nil {
		t.Fatal(err)
	}
	q2, rec, err := Open(cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer q2.Spill()
	if fmt.Sprint(live(q2)) != fmt.Sprint(want) || !rec.Damaged.IsZero() {
		t.Fatalf("reopened: %d records (damage %+v), want %d in order", len(live(q2)), rec.Damaged, len(want))
	}
}

// Every kind of refusal takes the same path: kept in memory, written
// again in order.
func TestDiskFaultKinds(t *testing.T) {
	for _, e := range []error{syscall.ENOSPC, syscall.EIO, syscall.EROFS, syscall.EDQUOT} {
		t.Run(e.Error(), func(t *testing.T) {
			fs := newCutFS(3)
			now := time.Unix(1_700_000_000, 0)
			q, _, err := Open(Config{Dir: "/q", MaxBytes: MinBytes, MaxMemoryBytes: 1 << 20, SyncInterval: time.Second, FS: fs, Log: discard,
				Now: func() time.Time { return now }})
			if err != nil {
				t.Fatal(err)
			}
			q.Push(Batch{Buf: payloadOf(1, 500), Lines: 1, Samples: 1})
			fs.failWrite = &os.PathError{Op: "write", Path: "/q/x.seg", Err: e}
			q.Push(Batch{Buf: payloadOf(2, 500), Lines: 1, Samples: 2})
			if st := q.Status(); !strings.Contains(st.DiskError, e.Error()) || st.MemoryOnly == 0 {
				t.Fatalf("status %+v", st)
			}
			fs.failWrite = nil
			now = now.Add(time.Minute)
			q.Push(Batch{Buf: payloadOf(3, 500), Lines: 1, Samples: 3})
			if st := q.Status(); st.DiskError != "" || st.MemoryOnly != 0 {
				t.Fatalf("after recovery: %+v", st)
			}
			// Synced, then the power cut: the record the disk refused is on
			// it, between the two it took.
			if err := q.Sync(); err != nil {
				t.Fatal(err)
			}
			fs.cut()
			q2, rec, err := Open(Config{Dir: "/q", MaxBytes: MinBytes, MaxMemoryBytes: 1 << 20, SyncInterval: time.Second, FS: fs, Log: discard})
			if err != nil {
				t.Fatal(err)
			}
			if got := live(q2); fmt.Sprint(got) != "[1 2 3]" || !rec.Damaged.IsZero() {
				t.Fatalf("after a sync and a cut: %v (damage %+v), want [1 2 3]", got, rec.Damaged)
			}
		})
	}
}

// A queue dir on a read-only filesystem is refused at start, saying so.
func TestReadOnlyQueueDirRefusedAtStart(t *testing.T) {
	mnt := mountTmpfs(t, "1m")
	remount(t, mnt, "ro")
	_, _, err := Open(Config{Dir: filepath.Join(mnt, "queue"), MaxBytes: MinBytes, MaxMemoryBytes: MinBytes, SyncInterval: time.Second})
	if err == nil || !errors.Is(err, syscall.EROFS) {
		t.Fatalf("open on a read-only filesystem: %v", err)
	}
}
