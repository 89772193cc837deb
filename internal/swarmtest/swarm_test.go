package swarmtest

import (
	"io"
	"strings"
	"testing"
	"time"
)

// TestSwarm starts three engines, checks they form one swarm under their
// own host names, and that each engine's metrics answer at its node's
// address from another node's namespace (the path a scraper takes).
func TestSwarm(t *testing.T) {
	start := time.Now()
	s := Start(t, 3)
	t.Logf("3 engines and a swarm up in %s", time.Since(start).Round(100*time.Millisecond))
	out := s.Manager().MustDocker(t, "node", "ls", "--format", "{{.Hostname}} {{.Status}}")
	for _, n := range s.Nodes {
		if !strings.Contains(out, n.Name+" Ready") {
			t.Errorf("node ls lacks %s ready:\n%s", n.Name, out)
		}
	}
	ids := map[string]bool{}
	for _, n := range s.Nodes {
		ids[strings.TrimSpace(n.MustDocker(t, "info", "--format", "{{.ID}}"))] = true
	}
	if len(ids) != len(s.Nodes) {
		t.Errorf("engines share a daemon ID (%d IDs for %d engines): their /etc/docker is not their own", len(ids), len(s.Nodes))
	}
	for i, n := range s.Nodes {
		from := s.Nodes[(i+1)%len(s.Nodes)]
		body := fetchFrom(t, from, "http://"+n.Addr+":9323/metrics")
		if !strings.Contains(body, "engine_daemon_engine_info") {
			t.Errorf("%s:9323 from %s: no engine_daemon_engine_info in %d bytes", n.Addr, from.Name, len(body))
		}
	}
}

// fetchFrom GETs url with curl run inside node n's network namespace.
func fetchFrom(t *testing.T, n *Node, url string) string {
	t.Helper()
	cmd := n.Command("curl", "-sS", "--max-time", "10", url)
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(out)
	if err := cmd.Wait(); err != nil {
		t.Fatalf("curl %s in %s: %v", url, n.NS, err)
	}
	return string(b)
}
