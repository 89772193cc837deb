// Package simulator serves simulated targets: real /metrics captures
// (Docker engines, a swarm manager, Consul, kubelet, Traefik, CockroachDB)
// whose values move from one scrape to the next. The demo, the tests and
// the benchmarks scrape them.
package simulator

import (
	"bytes"
	"compress/gzip"
	"embed"
	"fmt"
	"math"
	"net"
	"net/http"
	"path"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"
)

//go:embed testdata/*.prom
var captures embed.FS

// Captures returns every capture by file name (without .prom).
func Captures() map[string][]byte {
	out := map[string][]byte{}
	ents, _ := captures.ReadDir("testdata")
	for _, e := range ents {
		b, err := captures.ReadFile(path.Join("testdata", e.Name()))
		if err == nil {
			out[strings.TrimSuffix(e.Name(), ".prom")] = b
		}
	}
	return out
}

// CaptureNames returns the capture names in order.
func CaptureNames() []string {
	var names []string
	for n := range Captures() {
		names = append(names, n)
	}
	sort.Strings(names)
	return names
}

// EngineCaptures are the Docker engine captures, which simulated engines
// serve in turn.
var EngineCaptures = []string{
	"docker-engine-17.05.0-ce",
	"docker-engine-18.09.3-ce",
	"docker-engine-18.09.3-ce-swarm-manager",
}

// sampleLine is one line of a capture: fixed text, and for sample lines
// where the value sits and how it moves.
type sampleLine struct {
	head, tail string // text before and after the value
	value      float64
	kind       byte // 0: text line, 'c': grows each scrape, 'g': wobbles
}

// Target is a simulated target serving one capture.
type Target struct {
	lines []sampleLine
	seed  int

	mu      sync.Mutex // guards the fields below
	scrapes int
	buf     bytes.Buffer
	gzbuf   bytes.Buffer
	gz      *gzip.Writer
}

// NewTarget makes a target serving capture; seed varies its values from
// other targets serving the same capture.
func NewTarget(capture []byte, seed int) *Target {
	t := &Target{seed: seed}
	typ := ""
	for _, ln := range strings.SplitAfter(string(capture), "\n") {
		if ln == "" {
			continue
		}
		if strings.HasPrefix(ln, "#") {
			if f := strings.Fields(ln); len(f) >= 4 && f[1] == "TYPE" {
				typ = f[3]
			}
			t.lines = append(t.lines, sampleLine{head: ln})
			continue
		}
		end := strings.LastIndexByte(ln, '}') + 1
		if end == 0 {
			end = strings.IndexByte(ln, ' ')
		}
		rest := strings.TrimLeft(ln[end:], " ")
		valEnd := strings.IndexAny(rest, " \n")
		if end <= 0 || valEnd < 0 {
			t.lines = append(t.lines, sampleLine{head: ln})
			continue
		}
		v, err := strconv.ParseFloat(rest[:valEnd], 64)
		if err != nil || math.IsNaN(v) || math.IsInf(v, 0) {
			t.lines = append(t.lines, sampleLine{head: ln})
			continue
		}
		kind := byte('g')
		if typ == "counter" || typ == "histogram" || (typ == "summary" && !strings.Contains(ln[:end], "quantile=")) {
			kind = 'c'
		}
		t.lines = append(t.lines, sampleLine{
			head:  ln[:end] + " ",
			tail:  rest[valEnd:],
			value: v,
			kind:  kind,
		})
	}
	return t
}

// Render writes the body of the scrape numbered n.
func (t *Target) render(b *bytes.Buffer, n int) {
	var num []byte
	for i, l := range t.lines {
		b.WriteString(l.head)
		if l.kind == 0 {
			continue
		}
		v := l.value
		switch l.kind {
		case 'c':
			// Every counter of a series grows by the same step, so
			// histogram buckets stay cumulative.
			v += float64(n * (1 + t.seed%3))
		case 'g':
			v *= 1 + 0.1*math.Sin(float64(n+i+t.seed))
		}
		num = strconv.AppendFloat(num[:0], v, 'g', -1, 64)
		b.Write(num)
		b.WriteString(l.tail)
	}
}

// ServeHTTP serves the next version of the capture, gzipped when asked.
func (t *Target) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.scrapes++
	t.buf.Reset()
	t.render(&t.buf, t.scrapes)
	w.Header().Set("Content-Type", "text/plain; version=0.0.4; charset=utf-8")
	body := t.buf.Bytes()
	if strings.Contains(r.Header.Get("Accept-Encoding"), "gzip") {
		t.gzbuf.Reset()
		if t.gz == nil {
			t.gz, _ = gzip.NewWriterLevel(&t.gzbuf, gzip.BestSpeed)
		} else {
			t.gz.Reset(&t.gzbuf)
		}
		t.gz.Write(body)
		t.gz.Close()
		body = t.gzbuf.Bytes()
		w.Header().Set("Content-Encoding", "gzip")
	}
	w.Header().Set("Content-Length", strconv.Itoa(len(body)))
	w.Write(body)
}

// Scrapes returns how often the target was scraped.
func (t *Target) Scrapes() int {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.scrapes
}

// Fleet is a set of simulated targets, each on its own loopback port.
type Fleet struct {
	Targets []*Target
	URLs    []string
	servers []*http.Server
	wg      sync.WaitGroup
}

// StartFleet serves n targets on 127.0.0.1, ports basePort.. (0: any free
// ports), cycling through the named captures.
func StartFleet(n, basePort int, names ...string) (*Fleet, error) {
	return StartFleetOn("127.0.0.1", n, basePort, names...)
}

// StartFleetOn is StartFleet listening on host (0.0.0.0: every
// interface, as an exporter in a container).
func StartFleetOn(host string, n, basePort int, names ...string) (*Fleet, error) {
	if len(names) == 0 {
		names = EngineCaptures
	}
	all := Captures()
	var bodies [][]byte
	for _, name := range names {
		capture, ok := all[name]
		if !ok {
			return nil, fmt.Errorf("unknown capture %q", name)
		}
		bodies = append(bodies, capture)
	}
	return startFleet(host, n, basePort, bodies)
}

// StartFleetOf serves n targets on 127.0.0.1 (any free ports), each
// exposing capture (its values moving from scrape to scrape): a fleet of
// small targets, for tests of many targets.
func StartFleetOf(capture []byte, n int) (*Fleet, error) {
	return startFleet("127.0.0.1", n, 0, [][]byte{capture})
}

func startFleet(host string, n, basePort int, bodies [][]byte) (*Fleet, error) {
	f := &Fleet{}
	for i := 0; i < n; i++ {
		capture := bodies[i%len(bodies)]
		addr := net.JoinHostPort(host, "0")
		if basePort > 0 {
			addr = net.JoinHostPort(host, strconv.Itoa(basePort+i))
		}
		ln, err := net.Listen("tcp", addr)
		if err != nil {
			f.Close()
			return nil, fmt.Errorf("cannot listen for simulated target %d: %w", i, err)
		}
		t := NewTarget(capture, i)
		mux := http.NewServeMux()
		mux.Handle("/metrics", t)
		srv := &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}
		f.Targets = append(f.Targets, t)
		f.URLs = append(f.URLs, "http://"+ln.Addr().String()+"/metrics")
		f.servers = append(f.servers, srv)
		f.wg.Add(1)
		go func() {
			defer f.wg.Done()
			_ = srv.Serve(ln) // returns when the fleet is closed
		}()
	}
	return f, nil
}

// Close stops every target and waits for them.
func (f *Fleet) Close() {
	for _, s := range f.servers {
		s.Close()
	}
	f.wg.Wait()
}
