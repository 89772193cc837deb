package main

import (
	"bufio"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/scrapeflux/scrapeflux/internal/servertest"
	"github.com/scrapeflux/scrapeflux/scrape/simulator"
	"github.com/scrapeflux/scrapeflux/sink/queue"
)

// slowDisk is the operating system's file layer with every append to a
// queue file taking delay (reads, syncs and the rest as fast as the disk
// is): a disk that cannot keep up, put under the daemon in the tests'
// binary (SCRAPEFLUX_TEST_SLOW_DISK=1s).
type slowDisk struct {
	queue.OS
	delay time.Duration
}

func (d slowDisk) OpenFile(name string, flag int) (queue.File, error) {
	f, err := d.OS.OpenFile(name, flag)
	if err != nil {
		return nil, err
	}
	return slowFile{f, d.delay}, nil
}

type slowFile struct {
	queue.File
	delay time.Duration
}

// Write delays a record's payload (a record is appended as a header of a
// few bytes, then its payload): one delay per append.
func (f slowFile) Write(p []byte) (int, error) {
	if len(p) > 64 {
		time.Sleep(f.delay) // the slow disk itself
	}
	return f.File.Write(p)
}

var (
	slowDiskTargets  = flag.Int("slow-disk-targets", 200, "targets of TestSlowDiskMemoryBounded (the README's figure: 2000)")
	slowDiskInterval = flag.Duration("slow-disk-interval", 5*time.Second, "scrape interval of TestSlowDiskMemoryBounded (the README's figure: 15s)")
)

// memoryRun is what one run of the daemon held: the largest Go heap in
// use seen on its /metrics, its peak RSS, and its scrapes.
type memoryRun struct {
	maxHeap, peakRSS     int64
	scrapes, skipped     float64
	queued, memoryQueued float64
}

// runForMemory runs the daemon on the fleet for d, slow naming the disk's
// delay per append (0: a plain disk), and reads its memory every 250 ms.
func runForMemory(t *testing.T, fleet *simulator.Fleet, influxURL string, interval, d, slow time.Duration, memBound string) memoryRun {
	t.Helper()
	listen := fmt.Sprintf("127.0.0.1:%d", servertest.FreePort(t))
	args := []string{"run", "--interval", interval.String(), "--listen", listen, "--queue-dir", t.TempDir(),
		"--memory-max-bytes", memBound, "--batch-size", "500", "--influx-url", influxURL, "--influx-bucket", "slow"}
	for _, u := range fleet.URLs {
		args = append(args, "--target", u)
	}
	cmd := exec.Command(os.Args[0], args...)
	cmd.Env = append(os.Environ(), "SCRAPEFLUX_TEST_MAIN=1", "SCRAPEFLUX_TEST_SLOW_DISK="+slow.String())
	var stderr lockedBuffer
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() {
		cmd.Process.Signal(syscall.SIGKILL)
		cmd.Wait()
	}()
	var run memoryRun
	end := time.Now().Add(d)
	for time.Now().Before(end) {
		time.Sleep(250 * time.Millisecond) // the sampling period
		code, m := httpGet(t, "http://"+listen+"/metrics")
		if code != 200 {
			continue
		}
		run.maxHeap = max(run.maxHeap, int64(metricValue(m, "go_memstats_heap_inuse_bytes")))
		run.scrapes = metricValue(m, `scrapeflux_scrapes_total{job="static"}`)
		run.skipped = metricValue(m, `scrapeflux_scrapes_skipped_total{job="static"}`)
		run.queued = metricValue(m, "scrapeflux_queued_bytes")
		run.memoryQueued = max(run.memoryQueued, metricValue(m, `scrapeflux_queue_memory_bytes{kind="memory_only"}`))
	}
	run.peakRSS = peakRSS(t, cmd.Process.Pid)
	if run.scrapes <= 0 {
		t.Fatalf("the daemon scraped nothing:\n%s", stderr.String())
	}
	return run
}

// peakRSS reads a process's VmHWM (bytes).
func peakRSS(t *testing.T, pid int) int64 {
	t.Helper()
	f, err := os.Open(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if rest, ok := strings.CutPrefix(sc.Text(), "VmHWM:"); ok {
			kb, _ := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(rest), " kB"), 10, 64)
			return kb << 10
		}
	}
	t.Fatal("no VmHWM")
	return 0
}

// TestSlowDiskMemoryBounded: behind a disk queue whose every append takes
// a second, the daemon's memory stays within its memory bound
// (--memory-max-bytes) of what it holds on a plain disk: scrape loops
// wait for room rather than holding their bodies, and sealed batches
// wait in a bounded list. Batches of 500 lines: the disk takes a fiftieth
// of what the targets send. 200 targets of 1,000 series here;
// -slow-disk-targets 2000 -slow-disk-interval 15s for the README's
// figure (run it without -race: RSS is then the process's own).
func TestSlowDiskMemoryBounded(t *testing.T) {
	srv := servertest.StartInfluxDB(t)
	srv.CreateDB(t, "slow")
	fleet, err := simulator.StartFleet(*slowDiskTargets, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer fleet.Close()
	const bound = 16 << 20
	d := 5 * *slowDiskInterval
	plain := runForMemory(t, fleet, srv.URL, *slowDiskInterval, d, 0, "16MiB")
	slow := runForMemory(t, fleet, srv.URL, *slowDiskInterval, d, time.Second, "16MiB")
	t.Logf("%d targets @%s over %s: plain disk heap %d MiB (RSS %d MiB), %0.f scrapes; disk 1 s an append: heap %d MiB (RSS %d MiB), %0.f scrapes, %0.f skipped, %0.f bytes queued at the end",
		len(fleet.URLs), *slowDiskInterval, d, plain.maxHeap>>20, plain.peakRSS>>20, plain.scrapes, slow.maxHeap>>20, slow.peakRSS>>20, slow.scrapes, slow.skipped, slow.queued)
	if slow.maxHeap > plain.maxHeap+bound {
		t.Errorf("behind the slow disk the heap reached %d MiB, more than the plain disk's %d MiB and the memory bound's 16 MiB", slow.maxHeap>>20, plain.maxHeap>>20)
	}
	// The disk was the bottleneck: scraping was held back.
	if slow.scrapes >= plain.scrapes {
		t.Errorf("%0.f scrapes behind the slow disk, %0.f on a plain one: the slow disk slowed nothing", slow.scrapes, plain.scrapes)
	}
}
