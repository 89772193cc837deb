// Package swarmtest starts a real Docker Swarm for integration tests: N
// Debian docker.io engines (dockerd), each in a network namespace of its
// own with its own host name, /run and /etc/docker (a mount namespace of
// its own), joined by veth pairs to a bridge in one more namespace. Node addresses are private and exist only inside those
// namespaces: no namespace has a route out, so nothing a test does leaves
// the machine. The first node is the manager.
//
// It needs root and dockerd. Elsewhere the test is skipped, but under CI
// (CI set to anything) a missing engine fails it: the Makefile installs
// docker.io, and an integration test must never pass by skipping.
//
// Everything started is stopped by its pid when the test ends: each
// engine with SIGTERM (its containers stopped within two seconds), then
// whatever still runs in a node's network namespace or in its containers'
// cgroups is killed by pid, and the namespaces, cgroups and files are
// removed (the engine's mounts went with its mount namespace).
package swarmtest

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/scrapeflux/scrapeflux/internal/servertest"
)

// Swarm is a running swarm of real engines.
type Swarm struct {
	Nodes  []*Node
	t      testing.TB
	prefix string // namespace names start with it
	dir    string
	net    int // the third octet of the nodes' /24
	token  string
}

// Node is one engine of the swarm.
type Node struct {
	Name string // host name, swarm0, swarm1, ...
	Addr string // the node's address, inside the namespaces only
	NS   string // network namespace (ip netns) name
	Sock string // the engine's API socket
	dir  string
	cmd  *exec.Cmd
	done chan struct{}
	sw   *Swarm
}

var seq atomic.Int32

// Available reports why a swarm cannot be started here ("" when it can).
func Available() string {
	if os.Geteuid() != 0 {
		return "not root (network namespaces and dockerd need it)"
	}
	for _, b := range []string{"dockerd", "docker", "ip", "nsenter", "unshare"} {
		if _, err := exec.LookPath(b); err != nil {
			return b + " not found (Debian: apt-get install docker.io iproute2; make test does it)"
		}
	}
	return ""
}

// Require skips the test when no swarm can be had, and fails it under CI.
func Require(t testing.TB) {
	t.Helper()
	if why := Available(); why != "" {
		servertest.Unavailable(t, "cannot start a Docker Swarm: %s", why)
	}
}

// Start starts n engines and forms a swarm of them (node 0 the manager).
func Start(t testing.TB, n int) *Swarm {
	t.Helper()
	Require(t)
	id := int(seq.Add(1))
	s := &Swarm{
		t:      t,
		prefix: fmt.Sprintf("sft%d-%d-", os.Getpid()%100000, id),
		net:    (os.Getpid()+id)%200 + 20,
	}
	// Unix socket paths must stay short: not under t.TempDir().
	dir, err := os.MkdirTemp("/tmp", "swarm")
	if err != nil {
		t.Fatal(err)
	}
	s.dir = dir
	t.Cleanup(s.stop)
	s.run("ip", "netns", "add", s.prefix+"br")
	s.run("ip", "-n", s.prefix+"br", "link", "add", "br0", "type", "bridge")
	s.run("ip", "-n", s.prefix+"br", "link", "set", "br0", "up")
	var wg sync.WaitGroup
	errs := make([]error, n)
	for i := 0; i < n; i++ {
		node := s.addNode(i)
		wg.Add(1)
		go func() { defer wg.Done(); errs[i] = node.waitReady(90 * time.Second) }()
	}
	wg.Wait()
	for i, err := range errs {
		if err != nil {
			t.Fatalf("engine %s did not start: %v\n%s", s.Nodes[i].Name, err, s.Nodes[i].LogTail())
		}
	}
	m := s.Nodes[0]
	if out, err := m.Docker("swarm", "init", "--advertise-addr", m.Addr); err != nil {
		t.Fatalf("docker swarm init: %v: %s", err, out)
	}
	tok, err := m.Docker("swarm", "join-token", "-q", "worker")
	if err != nil {
		t.Fatalf("docker swarm join-token: %v: %s", err, tok)
	}
	s.token = strings.TrimSpace(tok)
	for _, node := range s.Nodes[1:] {
		wg.Add(1)
		go func() { defer wg.Done(); node.join(t) }()
	}
	wg.Wait()
	s.WaitNodes(t, n, time.Minute)
	return s
}

// Manager is the swarm's manager node.
func (s *Swarm) Manager() *Node { return s.Nodes[0] }

// AddNode starts one more engine and joins it to the swarm as a worker.
func (s *Swarm) AddNode(t testing.TB) *Node {
	t.Helper()
	node := s.addNode(len(s.Nodes))
	if err := node.waitReady(90 * time.Second); err != nil {
		t.Fatalf("engine %s did not start: %v\n%s", node.Name, err, node.LogTail())
	}
	node.join(t)
	return node
}

// WaitNodes waits until the manager lists n nodes as ready.
func (s *Swarm) WaitNodes(t testing.TB, n int, limit time.Duration) {
	t.Helper()
	var out string
	ok := servertest.Eventually(limit, func() bool {
		var err error
		out, err = s.Manager().Docker("node", "ls", "--format", "{{.Status}}")
		return err == nil && strings.Count(out, "Ready") == n
	})
	if !ok {
		t.Fatalf("the swarm did not list %d ready nodes within %s: %s", n, limit, out)
	}
}

func (s *Swarm) addNode(i int) *Node {
	t := s.t
	t.Helper()
	n := &Node{
		Name: fmt.Sprintf("swarm%d", i),
		Addr: fmt.Sprintf("10.250.%d.%d", s.net, i+2),
		NS:   s.prefix + strconv.Itoa(i),
		dir:  filepath.Join(s.dir, strconv.Itoa(i)),
		done: make(chan struct{}),
		sw:   s,
	}
	n.Sock = filepath.Join(n.dir, "run", "docker.sock")
	s.Nodes = append(s.Nodes, n)
	for _, d := range []string{"data", "run", "etc"} {
		if err := os.MkdirAll(filepath.Join(n.dir, d), 0o700); err != nil {
			t.Fatal(err)
		}
	}
	veth, peer := fmt.Sprintf("v%d", i), fmt.Sprintf("p%d", i)
	s.run("ip", "netns", "add", n.NS)
	s.run("ip", "link", "add", veth, "netns", n.NS, "type", "veth", "peer", "name", peer, "netns", s.prefix+"br")
	s.run("ip", "-n", s.prefix+"br", "link", "set", peer, "master", "br0", "up")
	s.run("ip", "-n", n.NS, "addr", "add", n.Addr+"/24", "dev", veth)
	s.run("ip", "-n", n.NS, "link", "set", veth, "up")
	s.run("ip", "-n", n.NS, "link", "set", "lo", "up")
	log, err := os.Create(filepath.Join(n.dir, "dockerd.log"))
	if err != nil {
		t.Fatal(err)
	}
	// nsenter, not ip netns exec: that remounts /sys, and dockerd then
	// finds no cgroups. A mount namespace of its own with the node's /run
	// gives each engine the usual paths (/var/run/docker.sock, which a
	// stack's services bind-mount, containerd's socket, the exec root).
	// Its containers' cgroups go under /<namespace> so that they can all
	// be found and stopped. nsenter, unshare and sh exec in turn, so the
	// pid is dockerd's.
	// /etc/docker too: the engine's identity (key.json, its daemon ID) is
	// its own, as on separate hosts.
	if err := os.MkdirAll("/etc/docker", 0o755); err != nil {
		t.Fatal(err)
	}
	script := fmt.Sprintf("mount --bind %s /run && mount --bind %s /etc/docker && hostname %s && exec dockerd --data-root %s --cgroup-parent /%s "+
		"--storage-driver vfs --metrics-addr 0.0.0.0:9323 --shutdown-timeout 2 --log-level warn",
		filepath.Join(n.dir, "run"), filepath.Join(n.dir, "etc"), n.Name, filepath.Join(n.dir, "data"), n.NS)
	n.cmd = exec.Command("nsenter", "--net=/var/run/netns/"+n.NS, "unshare", "--uts", "--mount", "sh", "-c", script)
	n.cmd.Stdout, n.cmd.Stderr = log, log
	n.cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := n.cmd.Start(); err != nil {
		t.Fatalf("cannot start dockerd for %s: %v", n.Name, err)
	}
	go func() { n.cmd.Wait(); log.Close(); close(n.done) }()
	return n
}

func (n *Node) waitReady(limit time.Duration) error {
	var last error
	ok := servertest.Eventually(limit, func() bool {
		select {
		case <-n.done:
			last = fmt.Errorf("dockerd exited: %v", n.cmd.ProcessState)
			return true
		default:
		}
		_, last = n.Docker("info", "--format", "{{.ID}}")
		return last == nil
	})
	if !ok || last != nil {
		return fmt.Errorf("no answer from %s: %v", n.Sock, last)
	}
	return nil
}

func (n *Node) join(t testing.TB) {
	if out, err := n.Docker("swarm", "join", "--token", n.sw.token, n.sw.Manager().Addr+":2377"); err != nil {
		t.Errorf("%s: docker swarm join: %v: %s", n.Name, err, out)
	}
}

// Docker runs the docker CLI against this node's engine, with a minute's
// limit, and returns its combined output.
func (n *Node) Docker(args ...string) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	return n.DockerContext(ctx, args...)
}

// DockerContext is Docker with the caller's context.
func (n *Node) DockerContext(ctx context.Context, args ...string) (string, error) {
	cmd := exec.CommandContext(ctx, "docker", append([]string{"-H", "unix://" + n.Sock}, args...)...)
	cmd.Env = append(os.Environ(), "DOCKER_CLI_HINTS=false")
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	err := cmd.Run()
	return out.String(), err
}

// MustDocker is Docker that fails the test on an error.
func (n *Node) MustDocker(t testing.TB, args ...string) string {
	t.Helper()
	out, err := n.Docker(args...)
	if err != nil {
		t.Fatalf("%s: docker %s: %v\n%s", n.Name, strings.Join(args, " "), err, out)
	}
	return out
}

// Command makes a command that runs inside the node's network namespace
// (and so reaches the other nodes at their addresses).
func (n *Node) Command(name string, args ...string) *exec.Cmd {
	cmd := exec.Command("nsenter", append([]string{"--net=/var/run/netns/" + n.NS, name}, args...)...)
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	return cmd
}

// LogTail is the end of the engine's log, for failure messages.
func (n *Node) LogTail() string {
	b, _ := os.ReadFile(filepath.Join(n.dir, "dockerd.log"))
	if len(b) > 4000 {
		b = b[len(b)-4000:]
	}
	return string(b)
}

// Kill stops the node's engine at once (SIGKILL), as a node that dies.
func (n *Node) Kill() {
	if n.cmd.Process != nil {
		n.cmd.Process.Signal(syscall.SIGKILL)
	}
	<-n.done
	n.killRest()
}

// Stop stops the node's engine with SIGTERM (its containers stopped),
// waiting for it to exit; SIGKILL after 30 s.
func (n *Node) Stop() {
	if n.cmd == nil || n.cmd.Process == nil {
		return
	}
	n.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-n.done:
	case <-time.After(30 * time.Second):
		n.cmd.Process.Signal(syscall.SIGKILL)
		<-n.done
	}
	n.killRest()
}

// killRest kills, by pid, whatever still runs in the node's namespace
// (containerd and its shims) or in its containers' cgroups.
func (n *Node) killRest() {
	for range 5 {
		out, _ := exec.Command("ip", "netns", "pids", n.NS).Output()
		pids := strings.Fields(string(out))
		filepath.WalkDir(filepath.Join("/sys/fs/cgroup/pids", n.NS), func(path string, d os.DirEntry, err error) error {
			if err == nil && d.Name() == "cgroup.procs" {
				b, _ := os.ReadFile(path)
				pids = append(pids, strings.Fields(string(b))...)
			}
			return nil
		})
		if len(pids) == 0 {
			return
		}
		for _, p := range pids {
			if pid, err := strconv.Atoi(p); err == nil && pid > 1 {
				syscall.Kill(pid, syscall.SIGKILL)
			}
		}
		time.Sleep(100 * time.Millisecond) // give the kernel time to reap
	}
}

func (s *Swarm) stop() {
	var wg sync.WaitGroup
	for _, n := range s.Nodes {
		wg.Add(1)
		go func() { defer wg.Done(); n.Stop() }()
	}
	wg.Wait()
	if s.t.Failed() {
		for _, n := range s.Nodes {
			s.t.Logf("%s engine log (end):\n%s", n.Name, n.LogTail())
		}
	}
	for _, n := range s.Nodes {
		exec.Command("ip", "netns", "del", n.NS).Run()
		n.removeCgroups()
	}
	exec.Command("ip", "netns", "del", s.prefix+"br").Run()
	os.RemoveAll(s.dir)
}

// removeCgroups removes the (empty) cgroups the node's containers had,
// deepest first, in every controller.
func (n *Node) removeCgroups() {
	ctrls, _ := os.ReadDir("/sys/fs/cgroup")
	for _, c := range ctrls {
		var dirs []string
		filepath.WalkDir(filepath.Join("/sys/fs/cgroup", c.Name(), n.NS), func(path string, d os.DirEntry, err error) error {
			if err == nil && d.IsDir() {
				dirs = append(dirs, path)
			}
			return nil
		})
		for i := len(dirs) - 1; i >= 0; i-- {
			os.Remove(dirs[i])
		}
	}
}

func (s *Swarm) run(name string, args ...string) {
	s.t.Helper()
	if out, err := exec.Command(name, args...).CombinedOutput(); err != nil {
		s.t.Fatalf("%s %s: %v: %s", name, strings.Join(args, " "), err, out)
	}
}
