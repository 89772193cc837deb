// Package servertest starts the real servers the integration tests talk
// to, built by the Makefile: a Consul agent in dev mode and InfluxDB 1.8,
// each on free loopback ports with a temporary data directory, stopped
// when the test ends. It also holds what every integration test shares:
// the one CI guard (Unavailable: with CI set to anything, a missing
// server, tool or privilege fails the test; elsewhere it skips with a
// hint) and the one wait on a condition (WaitFor, Eventually).
//
// It is test-only and imports no stage of the pipeline, so every stage's
// tests can import it.
package servertest

import (
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"testing"
	"time"
)

// BinDir is where the Makefile puts the servers it builds.
func BinDir() string {
	if d := os.Getenv("SCRAPEFLUX_BIN"); d != "" {
		return d
	}
	home, _ := os.UserHomeDir()
	return filepath.Join(home, ".cache", "scrapeflux", "bin")
}

// Binary returns the path of a server binary built by the Makefile, or
// fails (CI) or skips (elsewhere) the test when it is missing.
func Binary(t testing.TB, name string) string {
	t.Helper()
	p := filepath.Join(BinDir(), name)
	if _, err := os.Stat(p); err != nil {
		Unavailable(t, "%s not found at %s: build it with make servers", name, p)
	}
	return p
}

// Unavailable ends a test that cannot run here: it fails when CI is set
// (to anything: an integration test never passes by skipping in CI) and
// skips elsewhere. why says what is missing and how to get it.
func Unavailable(t testing.TB, format string, args ...any) {
	t.Helper()
	why := fmt.Sprintf(format, args...)
	if os.Getenv("CI") != "" {
		t.Fatalf("%s (CI is set: this test must run)", why)
	}
	t.Skip(why)
}

// Eventually polls cond until it holds (true) or limit passes (false):
// after 10 ms first, then twice as long each time up to 200 ms, so a
// cheap condition is seen at once and an expensive one (a query through
// docker exec) is not asked more than five times a second.
func Eventually(limit time.Duration, cond func() bool) bool {
	deadline := time.Now().Add(limit)
	wait := 10 * time.Millisecond
	for {
		if cond() {
			return true
		}
		if time.Now().After(deadline) {
			return false
		}
		time.Sleep(wait)
		wait = min(2*wait, 200*time.Millisecond)
	}
}

// WaitFor waits until cond holds and returns how long that took; it
// fails the test, naming what, when limit passes first.
func WaitFor(t testing.TB, what string, limit time.Duration, cond func() bool) time.Duration {
	t.Helper()
	start := time.Now()
	if !Eventually(limit, cond) {
		t.Fatalf("%s: not within %s", what, limit)
	}
	return time.Since(start)
}

// handedOut are the ports FreePort gave in this process: never twice, so
// two servers of one test cannot be told the same port.
var (
	handedMu  sync.Mutex
	handedOut = map[int]bool{}
)

// FreePort returns a free TCP port on 127.0.0.1 for a server the test
// starts, never one it returned before. The port is free when returned;
// another process could still take it before the server binds it, and
// that server then fails to start with its log shown.
func FreePort(t testing.TB) int {
	t.Helper()
	handedMu.Lock()
	defer handedMu.Unlock()
	for range 100 {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		port := ln.Addr().(*net.TCPAddr).Port
		ln.Close()
		if !handedOut[port] {
			handedOut[port] = true
			return port
		}
	}
	t.Fatal("no free port on 127.0.0.1 that was not handed out before")
	return 0
}

// process is a server process with its output in a log file.
type process struct {
	name string
	cmd  *exec.Cmd
	log  *os.File
}

// start runs bin with args, logging to logPath, and waits until ready
// reports nil (or fails the test after limit, showing the log).
func (p *process) start(t testing.TB, bin string, args []string, logPath string, limit time.Duration, ready func() error) {
	t.Helper()
	var err error
	p.log, err = os.Create(logPath)
	if err != nil {
		t.Fatal(err)
	}
	p.cmd = exec.Command(bin, args...)
	p.cmd.Stdout, p.cmd.Stderr = p.log, p.log
	if err := p.cmd.Start(); err != nil {
		t.Fatalf("cannot start %s: %v", p.name, err)
	}
	deadline := time.Now().Add(limit)
	for {
		err := ready()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			log, _ := os.ReadFile(logPath)
			t.Fatalf("%s did not become ready: %v\n%s", p.name, err, log)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// stop kills the process (idempotent).
func (p *process) stop() {
	if p.cmd == nil || p.cmd.Process == nil {
		return
	}
	_ = p.cmd.Process.Kill()
	_ = p.cmd.Wait()
	p.log.Close()
	p.cmd = nil
}
