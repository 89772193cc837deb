package main

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/scrapeflux/scrapeflux/discovery"
	"github.com/scrapeflux/scrapeflux/internal/servertest"
	"github.com/scrapeflux/scrapeflux/scrape"
	"github.com/scrapeflux/scrapeflux/sink"
)

// linesWriter keeps what a sink writes.
type linesWriter struct {
	mu    sync.Mutex
	lines []string
}

func (w *linesWriter) Write(_ context.Context, body []byte) error {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.lines = append(w.lines, strings.Split(strings.TrimSpace(string(body)), "\n")...)
	return nil
}

// tracedConfig writes testdata/relabel/rules.yml with its target at url.
func tracedConfig(t *testing.T, url string) string {
	t.Helper()
	b, err := os.ReadFile("testdata/relabel/rules.yml")
	if err != nil {
		t.Fatal(err)
	}
	p := filepath.Join(t.TempDir(), "rules.yml")
	if err := os.WriteFile(p, []byte(strings.Replace(string(b), "TARGET", url, 1)), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

// TestRelabelTraced: on a job with every relabel action (11 target rules,
// 10 metric rules), the relabel command says what each rule did, with its
// line; its metric counts are what the sink itself keeps and drops of the
// same exposition; and /service-discovery shows each instance's steps.
func TestRelabelTraced(t *testing.T) {
	expo, err := os.ReadFile("testdata/relabel/exposition.prom")
	if err != nil {
		t.Fatal(err)
	}
	target := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { w.Write(expo) }))
	defer target.Close()
	cfg := tracedConfig(t, target.URL+"/metrics")
	ctx := context.Background()

	out, errOut, err := execute(ctx, "relabel", "--config", cfg, "--job", "traced", "--target", target.URL+"/metrics", "--label", "__meta_zone=EU")
	if err != nil {
		t.Fatalf("relabel: %v\n%s", err, errOut)
	}
	host := strings.TrimPrefix(target.URL, "http://")
	for _, want := range []string{
		"job traced: 11 target relabel rules",
		fmt.Sprintf(`rule 0 (line 7, replace): +host_port="%s"`, host),
		`rule 1 (line 9, lowercase): +job_lower="traced"`,
		`rule 2 (line 12, hashmod): +__tmp_shard=`,
		"rule 3 (line 16, keep): no change",
		"rule 4 (line 19, drop): no change",
		`rule 5 (line 22, labelmap): +scheme="http"`,
		"rule 6 (line 25, labeldrop): -host_port",
		`rule 7 (line 27, replace): +job_copy="traced"`,
		"rule 8 (line 29, keepequal): no change",
		"rule 9 (line 32, dropequal): no change",
		"rule 10 (line 35, labelkeep): no change",
		fmt.Sprintf("outcome: scraped at http://%s/metrics with tags job=traced, job_copy=traced, job_lower=traced, scheme=http, instance=%s", host, host),
	} {
		if !strings.Contains(out, want) {
			t.Errorf("relabel output lacks %q:\n%s", want, out)
		}
	}
	// A label that a keep rule refuses: the trace stops there.
	out, _, err = execute(ctx, "relabel", "--config", cfg, "--job", "traced", "--label", "__address__=10.0.0.1:9100", "--label", "__scheme__=https")
	if err != nil || !strings.Contains(out, "rule 3 (line 16, keep): dropped the target") || strings.Contains(out, "rule 4") || !strings.Contains(out, "outcome: dropped by relabeling") {
		t.Errorf("a target the keep rule drops: %v\n%s", err, out)
	}

	// Metric rules on the exposition, against what the sink does with it.
	out, _, err = execute(ctx, "relabel", "--config", cfg, "--job", "traced", "--metrics", "testdata/relabel/exposition.prom")
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{
		"10 metric relabel rules on 7 series",
		"rule 0 (line 38, drop): 0 series changed, 2 dropped",
		"rule 1 (line 41, keep): 0 series changed, 1 dropped",
		"rule 2 (line 44, lowercase): 3 series changed, 0 dropped",
		"rule 7 (line 57, dropequal): 0 series changed, 1 dropped",
		`- {__name__="go_goroutines"}`,
		`~ {__name__="http_requests_total", code="200", handler="/info", method="GET"} -> {__name__="http_requests_total", __tmp_h=`,
		"series kept 3 (of them rewritten 3), dropped 4",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("relabel --metrics output lacks %q:\n%s", want, out)
		}
	}
	specs, err := loadConfig(cfg, discovery.DefaultConsulConfig(), nil)
	if err != nil {
		t.Fatal(err)
	}
	lw := &linesWriter{}
	s, err := sink.New(sink.DefaultConfig(), lw, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	sctx, cancel := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- s.Run(sctx) }()
	app := s.Appender([]scrape.Tag{{Key: "instance", Value: host}, {Key: "job", Value: "traced"}}, specs[0].Scrape.AppendOptions())
	if _, _, err := scrape.NewParser().Parse(expo, "text/plain; version=0.0.4", time.Now().UnixMilli(), false, app); err != nil {
		t.Fatal(err)
	}
	app.Commit()
	servertest.WaitFor(t, "the sink's lines", 10*time.Second, func() bool { lw.mu.Lock(); defer lw.mu.Unlock(); return len(lw.lines) > 0 })
	cancel()
	<-done
	if got := s.Stats().Dropped["relabeled"]; got != 4 {
		t.Errorf("the sink dropped %d samples by relabeling, the command 4 series (of one sample each)", got)
	}
	if n := strings.Count(strings.Join(lw.lines, "\n"), "env=prod"); n != 3 {
		t.Errorf("the sink wrote %d lines with env=prod, the command kept 3 rewritten series:\n%s", n, strings.Join(lw.lines, "\n"))
	}

	// The daemon's /service-discovery: the same steps for its instance.
	listen := fmt.Sprintf("127.0.0.1:%d", servertest.FreePort(t))
	d := startDaemon(t, "run", "--config", cfg, "--listen", listen, "--influx-url", "http://127.0.0.1:1", "--influx-bucket", "b", "--queue-dir", "")
	var jobs []scrape.JobDiscovery
	servertest.WaitFor(t, "the job's discovery with its relabel steps", 10*time.Second, func() bool {
		_, js := httpGet(t, "http://"+listen+"/service-discovery?format=json")
		return json.Unmarshal([]byte(js), &jobs) == nil && len(jobs) == 1 && len(jobs[0].Targets) == 1 && len(jobs[0].Targets[0].RelabelSteps) > 0
	})
	steps := jobs[0].Targets[0].RelabelSteps
	if len(steps) != 11 || steps[5].Line != 22 || steps[5].Action != "labelmap" || fmt.Sprint(steps[5].Changes) != `[+scheme="http"]` || steps[6].Changes[0] != "-host_port" {
		t.Errorf("steps on /service-discovery: %+v", steps)
	}
	_, page := httpGet(t, "http://"+listen+"/service-discovery")
	for _, want := range []string{"relabel steps (11)", "labelmap (line 22)", "<code>-host_port</code>"} {
		if !strings.Contains(page, want) {
			t.Errorf("/service-discovery lacks %q", want)
		}
	}
	d.stop(t)
}

// TestRelabelTracedEveryActionTenTimes: ten rules of each action, 100 in
// all, in one job: the command and the page list every rule in order
// with its own line in the file, and the target comes out as the rules
// say (each rule of an action adds, keeps or removes one label of its
// own).
func TestRelabelTracedEveryActionTenTimes(t *testing.T) {
	var b strings.Builder
	b.WriteString("jobs:\n  - job_name: many\n    static_targets: [http://127.0.0.1:9/metrics]\n    relabel_configs:\n")
	lines := []int{}
	line := 5
	add := func(rule string) {
		lines = append(lines, line)
		b.WriteString(rule)
		line += strings.Count(rule, "\n")
	}
	type want struct{ action, change string }
	var wants []want
	for i := 0; i < 10; i++ {
		add(fmt.Sprintf("      - {target_label: r%d, replacement: v%d}\n", i, i))
		wants = append(wants, want{"replace", fmt.Sprintf(`+r%d="v%d"`, i, i)})
	}
	for i := 0; i < 10; i++ {
		add(fmt.Sprintf("      - {source_labels: [r%d], target_label: up%d, action: lowercase}\n", i, i))
		wants = append(wants, want{"lowercase", fmt.Sprintf(`+up%d="v%d"`, i, i)})
	}
	for i := 0; i < 10; i++ {
		add(fmt.Sprintf("      - {source_labels: [__address__], modulus: %d, target_label: __tmp_h%d, action: hashmod}\n", i+1, i))
		wants = append(wants, want{"hashmod", fmt.Sprintf("+__tmp_h%d=", i)})
	}
	for i := 0; i < 10; i++ {
		add(fmt.Sprintf("      - {source_labels: [r%d], regex: v%d, action: keep}\n", i, i))
		wants = append(wants, want{"keep", ""})
	}
	for i := 0; i < 10; i++ {
		add(fmt.Sprintf("      - {source_labels: [r%d], regex: never, action: drop}\n", i))
		wants = append(wants, want{"drop", ""})
	}
	for i := 0; i < 10; i++ {
		add(fmt.Sprintf("      - {regex: 'up(%d)', replacement: 'copy$1', action: labelmap}\n", i))
		wants = append(wants, want{"labelmap", fmt.Sprintf(`+copy%d="v%d"`, i, i)})
	}
	for i := 0; i < 10; i++ {
		add(fmt.Sprintf("      - {regex: 'up%d', action: labeldrop}\n", i))
		wants = append(wants, want{"labeldrop", fmt.Sprintf("-up%d", i)})
	}
	for i := 0; i < 10; i++ {
		add(fmt.Sprintf("      - {source_labels: [r%d], target_label: copy%d, action: keepequal}\n", i, i))
		wants = append(wants, want{"keepequal", ""})
	}
	for i := 0; i < 10; i++ {
		add(fmt.Sprintf("      - {source_labels: [r%d], target_label: job, action: dropequal}\n", i))
		wants = append(wants, want{"dropequal", ""})
	}
	for i := 0; i < 10; i++ {
		add(fmt.Sprintf("      - {regex: '__.*|job|instance|r.|copy.|r%d', action: labelkeep}\n", i))
		wants = append(wants, want{"labelkeep", ""})
	}
	cfg := filepath.Join(t.TempDir(), "many.yml")
	if err := os.WriteFile(cfg, []byte(b.String()), 0o600); err != nil {
		t.Fatal(err)
	}
	out, errOut, err := execute(context.Background(), "relabel", "--config", cfg, "--job", "many", "--target", "http://127.0.0.1:9/metrics")
	if err != nil {
		t.Fatalf("%v\n%s", err, errOut)
	}
	got := strings.Split(out, "\n")
	steps := 0
	for _, l := range got {
		if strings.HasPrefix(l, "  rule ") {
			steps++
		}
	}
	if steps != 100 {
		t.Fatalf("%d rules traced, want 100:\n%s", steps, out)
	}
	for i, w := range wants {
		prefix := fmt.Sprintf("  rule %d (line %d, %s): ", i, lines[i], w.action)
		l := got[2+i]
		switch {
		case !strings.HasPrefix(l, prefix):
			t.Errorf("step %d is %q, want it to start %q", i, l, prefix)
		case w.change == "" && l != prefix+"no change":
			t.Errorf("step %d: %q, want no change", i, l)
		case w.change != "" && !strings.Contains(l, w.change):
			t.Errorf("step %d: %q, want %s", i, l, w.change)
		}
	}
	if !strings.Contains(out, "outcome: scraped at http://127.0.0.1:9/metrics with tags copy0=v0") {
		t.Errorf("outcome:\n%s", out)
	}
}
