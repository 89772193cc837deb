package main

import (
	"bufio"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/scrapeflux/scrapeflux/discovery/consultest"
	"github.com/scrapeflux/scrapeflux/sink/influxtest"
)

// unitExecStart reads ExecStart= of the shipped systemd unit, joined over
// its continuation lines, as arguments.
func unitExecStart(t *testing.T) []string {
	t.Helper()
	f, err := os.Open("../../configs/scrapeflux.service")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var line string
	in := false
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		l := strings.TrimSpace(sc.Text())
		if strings.HasPrefix(l, "ExecStart=") {
			in, l = true, strings.TrimPrefix(l, "ExecStart=")
		}
		if !in {
			continue
		}
		line += " " + strings.TrimSuffix(l, `\`)
		if !strings.HasSuffix(l, `\`) {
			break
		}
	}
	args := strings.Fields(line)
	if len(args) < 2 || args[0] != "/usr/local/bin/scrapeflux" {
		t.Fatalf("ExecStart = %q", line)
	}
	return args[1:]
}

// TestRunsLikeTheSystemdUnit runs the unit's command line as systemd would
// on a fresh host: an unprivileged user (DynamicUser=), a working
// directory it cannot write, no token files, STATE_DIRECTORY set
// (StateDirectory=). Only the addresses of Consul and InfluxDB are the
// test's. It must start, put its queue under the state directory and stop
// cleanly on SIGTERM.
func TestRunsLikeTheSystemdUnit(t *testing.T) {
	agent := consultest.Start(t, consultest.Options{})
	srv := influxtest.Start(t)
	srv.CreateDB(t, "docker")

	root := t.TempDir()
	os.Chmod(root, 0o755)
	for p := root; p != "/" && p != "."; p = filepath.Dir(p) {
		// The user must be able to reach the binary and its state dir.
		if st, err := os.Stat(p); err == nil && st.Mode().Perm()&0o005 != 0o005 {
			os.Chmod(p, st.Mode().Perm()|0o005)
		}
	}
	bin := filepath.Join(root, "scrapeflux")
	copyFile(t, os.Args[0], bin, 0o755)
	state := filepath.Join(root, "state")
	wd := filepath.Join(root, "wd")
	for _, d := range []string{state, wd} {
		if err := os.Mkdir(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	cred := (*syscall.Credential)(nil)
	if os.Geteuid() == 0 {
		// DynamicUser=: an unprivileged user that owns only the state dir.
		cred = &syscall.Credential{Uid: 65534, Gid: 65534}
		os.Chown(state, 65534, 65534)
	}
	os.Chmod(wd, 0o555) // read-only working directory

	args := unitExecStart(t)
	for i, a := range args {
		if a == "--influx-url" {
			args[i+1] = srv.URL
		}
	}
	cmd := exec.Command(bin, args...)
	cmd.Dir = wd
	cmd.Env = []string{"SCRAPEFLUX_TEST_MAIN=1", "STATE_DIRECTORY=" + state, "CONSUL_HTTP_ADDR=" + agent.Addr, "SCRAPEFLUX_LISTEN=127.0.0.1:0"}
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: cred}
	stderr := &lockedBuffer{}
	cmd.Stderr = stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	deadline := time.After(20 * time.Second)
	for !strings.Contains(stderr.String(), "scrapeflux started") {
		select {
		case err := <-exited:
			t.Fatalf("exited before starting: %v\n%s", err, stderr.String())
		case <-deadline:
			cmd.Process.Kill()
			t.Fatalf("not started within 20s:\n%s", stderr.String())
		case <-time.After(50 * time.Millisecond):
		}
	}
	if _, err := os.Stat(filepath.Join(state, "queue", "lock")); err != nil {
		t.Errorf("queue not under the state directory: %v", err)
	}
	cmd.Process.Signal(syscall.SIGTERM)
	select {
	case err := <-exited:
		if err != nil {
			t.Fatalf("exit on SIGTERM: %v\n%s", err, stderr.String())
		}
	case <-time.After(20 * time.Second):
		cmd.Process.Kill()
		t.Fatalf("no exit within 20s of SIGTERM:\n%s", stderr.String())
	}
}

func copyFile(t *testing.T, from, to string, mode os.FileMode) {
	t.Helper()
	in, err := os.Open(from)
	if err != nil {
		t.Fatal(err)
	}
	defer in.Close()
	out, err := os.OpenFile(to, os.O_CREATE|os.O_WRONLY|os.O_TRUNC, mode)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := io.Copy(out, in); err != nil {
		t.Fatal(err)
	}
	if err := out.Close(); err != nil {
		t.Fatal(err)
	}
}
