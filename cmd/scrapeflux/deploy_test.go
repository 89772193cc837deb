package main

import (
	"bufio"
	"context"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/compose-spec/compose-go/v2/loader"
	"github.com/compose-spec/compose-go/v2/types"

	"github.com/scrapeflux/scrapeflux/internal/servertest"
	"github.com/scrapeflux/scrapeflux/scrape/simulator"
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
	agent := servertest.StartConsul(t, servertest.ConsulOptions{})
	srv := servertest.StartInfluxDB(t)
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

// buildah runs buildah with the storage the image build uses.
func buildah(t *testing.T, args ...string) string {
	t.Helper()
	out, err := exec.Command("buildah", append([]string{"--storage-driver", "vfs"}, args...)...).CombinedOutput()
	if err != nil {
		t.Fatalf("buildah %v: %v\n%s", args, err, out)
	}
	return strings.TrimSpace(string(out))
}

// TestContainerImage builds the image from configs/docker (buildah, no
// Docker engine needed) and runs the binary inside it: version, a real
// scrape of a loopback target, and the daemon as the image's non-root
// user writing to InfluxDB with its queue on the volume, probed by the
// image's HEALTHCHECK command.
func TestContainerImage(t *testing.T) {
	if _, err := exec.LookPath("buildah"); err != nil {
		servertest.Unavailable(t, "buildah not found: apt-get install buildah (make test does it)")
	}
	tag := "localhost/scrapeflux:test-" + strconv.Itoa(os.Getpid())
	build := exec.Command("bash", "../../configs/docker/build.sh", tag)
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("image build: %v\n%s", err, out)
	}
	defer exec.Command("buildah", "--storage-driver", "vfs", "rmi", "-f", tag).Run()
	ctr := buildah(t, "from", tag)
	defer exec.Command("buildah", "--storage-driver", "vfs", "rm", ctr).Run()
	inside := func(args ...string) (string, error) {
		cmd := exec.Command("buildah", append([]string{"--storage-driver", "vfs", "run", "--isolation", "chroot", ctr, "--", "/usr/local/bin/scrapeflux"}, args...)...)
		out, err := cmd.CombinedOutput()
		return string(out), err
	}
	if out, err := inside("version"); err != nil || !strings.HasPrefix(out, "scrapeflux ") {
		t.Fatalf("version in the image: %v\n%s", err, out)
	}
	cfg := buildah(t, "inspect", "--format", "{{.Docker.Config.User}} {{.Docker.Config.Healthcheck.Test}} {{.Docker.Config.Env}}", tag)
	for _, want := range []string{"65532:65532", "scrapeflux health", "SCRAPEFLUX_LISTEN=0.0.0.0:9274", "SCRAPEFLUX_QUEUE_DIR=/var/lib/scrapeflux"} {
		if !strings.Contains(cfg, want) {
			t.Errorf("image config lacks %q: %s", want, cfg)
		}
	}

	fleet, err := simulator.StartFleet(1, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer fleet.Close()
	out, err := inside("scrape", fleet.URLs[0])
	if err != nil || !strings.Contains(out, "engine_daemon_engine_cpus_cpus,instance=") || !strings.Contains(out, "up,instance=") {
		t.Fatalf("scrape in the image: %v\n%.2000s", err, out)
	}

	srv := servertest.StartInfluxDB(t)
	srv.CreateDB(t, "img")
	listen := "127.0.0.1:" + strconv.Itoa(servertest.FreePort(t))
	daemon := exec.Command("buildah", "--storage-driver", "vfs", "run", "--isolation", "chroot", ctr, "--",
		"/usr/local/bin/scrapeflux", "run", "--target", fleet.URLs[0], "--interval", "500ms",
		"--influx-url", srv.URL, "--influx-bucket", "img", "--flush-interval", "100ms", "--listen", listen)
	daemon.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	logs := &lockedBuffer{}
	daemon.Stdout, daemon.Stderr = logs, logs
	if err := daemon.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() {
		syscall.Kill(-daemon.Process.Pid, syscall.SIGKILL)
		daemon.Wait()
	}()
	servertest.WaitFor(t, "the image's health check passes", 20*time.Second, func() bool {
		_, err := inside("health", "--url", "http://"+listen+"/healthz", "--timeout", "1s")
		return err == nil
	})
	servertest.WaitFor(t, "points from the daemon in the image", 20*time.Second, func() bool {
		return srv.Count(t, "img", "up", "gauge") >= 2
	})
	if strings.Contains(logs.String(), "cannot open queue dir") {
		t.Errorf("the non-root user cannot use the queue volume:\n%s", logs)
	}
}

// TestSwarmStack loads configs/swarm/stack.yml with compose-go, the loader
// Docker Compose itself uses, and checks what the README promises of it.
func TestSwarmStack(t *testing.T) {
	dir, _ := filepath.Abs("../../configs/swarm")
	details := types.ConfigDetails{
		WorkingDir:  dir,
		ConfigFiles: []types.ConfigFile{{Filename: filepath.Join(dir, "stack.yml")}},
		Environment: types.Mapping{},
	}
	p, err := loader.LoadWithContext(context.Background(), details, func(o *loader.Options) {
		o.SetProjectName("scrapeflux", true)
		o.SkipConsistencyCheck = false
	})
	if err != nil {
		t.Fatalf("stack.yml does not load: %v", err)
	}
	for _, name := range []string{"consul", "influxdb", "grafana", "scrapeflux", "scrapeflux-node"} {
		if _, ok := p.Services[name]; !ok {
			t.Errorf("service %s missing", name)
		}
	}
	for name, s := range p.Services {
		if s.HealthCheck == nil {
			t.Errorf("service %s has no healthcheck section", name)
		}
		if s.Deploy == nil {
			t.Errorf("service %s has no deploy section", name)
		}
	}
	node := p.Services["scrapeflux-node"]
	if node.Deploy == nil || node.Deploy.Mode != "global" {
		t.Errorf("node side is not mode: global")
	}
	if !strings.Contains(strings.Join(node.Command, " "), "register --keep") {
		t.Errorf("node side runs %q, want register --keep", node.Command)
	}
	sf := p.Services["scrapeflux"]
	cmd := strings.Join(sf.Command, " ")
	for _, want := range []string{"--cluster=", "--replication-factor=2", "--influx-token-file=/run/secrets/influx_token"} {
		if !strings.Contains(cmd, want) {
			t.Errorf("scrapeflux command lacks %s: %s", want, cmd)
		}
	}
	if sf.Deploy == nil || sf.Deploy.Replicas == nil || *sf.Deploy.Replicas < 2 {
		t.Errorf("scrapeflux central is not replicated")
	}
	if sf.Deploy != nil && sf.Deploy.Placement.MaxReplicas != 1 {
		t.Errorf("two replicas could share a node's queue volume")
	}
	if len(sf.Volumes) != 1 || sf.Volumes[0].Target != "/var/lib/scrapeflux" {
		t.Errorf("queue volume: %+v", sf.Volumes)
	}
	if len(sf.Secrets) != 1 || sf.Secrets[0].Source != "influx_token" {
		t.Errorf("secrets: %+v", sf.Secrets)
	}
	if hc := sf.HealthCheck; hc == nil || strings.Join(hc.Test, " ") != "CMD /usr/local/bin/scrapeflux health" {
		t.Errorf("scrapeflux healthcheck: %+v", hc)
	}
	if sf.Environment["SCRAPEFLUX_LISTEN"] == nil || *sf.Environment["SCRAPEFLUX_LISTEN"] != "0.0.0.0:9274" {
		t.Errorf("scrapeflux does not listen on all interfaces in its container")
	}
	// Grafana gets the datasource and both dashboards from files that exist.
	graf := p.Services["grafana"]
	targets := map[string]bool{}
	for _, c := range graf.Configs {
		targets[c.Target] = true
	}
	for _, want := range []string{"/etc/grafana/provisioning/datasources/influxdb.yml", "/var/lib/grafana/dashboards/docker-engine.json", "/var/lib/grafana/dashboards/scrapeflux.json"} {
		if !targets[want] {
			t.Errorf("grafana lacks config %s", want)
		}
	}
	for name, c := range p.Configs {
		if _, err := os.Stat(c.File); err != nil {
			t.Errorf("config %s: %v", name, err)
		}
	}
}
