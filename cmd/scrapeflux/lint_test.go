package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/scrapeflux/scrapeflux/scrape"
)

func TestLintCommand(t *testing.T) {
	// A file: the kubelet capture's six counters without _total.
	capture := filepath.Join("..", "..", "scrape", "simulator", "testdata", "kubelet.prom")
	out, _, err := execute(context.Background(), "lint", capture)
	if !errors.Is(err, errLintFindings) || !strings.Contains(out, "counter_without_total        6  get_token_count") {
		t.Fatalf("file: %v\n%s", err, out)
	}
	// Standard input, JSON; a clean exposition exits 0.
	var o bytes.Buffer
	root := newCmdRoot(&o, new(bytes.Buffer))
	root.SetIn(strings.NewReader("# HELP a_total A.\n# TYPE a_total counter\na_total 1\n"))
	root.SetArgs([]string{"lint", "--format", "json", "-"})
	if err := root.Execute(); err != nil {
		t.Fatalf("stdin: %v", err)
	}
	var rep scrape.LintReport
	if err := json.Unmarshal(o.Bytes(), &rep); err != nil || rep.Series != 1 || len(rep.Findings) != 0 {
		t.Fatalf("json: %v %s", err, o.String())
	}
	// A URL fetched twice: a counter going down between the fetches.
	var n atomic.Int32
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		v := 10
		if n.Add(1) > 1 {
			v = 5
		}
		fmt.Fprintf(w, "# HELP a_total A.\n# TYPE a_total counter\na_total{x=\"1\"} %d\na_total{x=\"2\"} 1\na_total{x=\"3\"} 1\n", v)
	}))
	defer srv.Close()
	out, _, err = execute(context.Background(), "lint", "--again", "50ms", srv.URL+"/metrics")
	if !errors.Is(err, errLintFindings) || !strings.Contains(out, `counter_went_down            1  a_total{x="1"} went from 10 to 5`) || n.Load() != 2 {
		t.Fatalf("--again: %v, %d fetches\n%s", err, n.Load(), out)
	}
	// Bad input says what is wrong.
	for _, c := range []struct {
		args []string
		want string
	}{
		{[]string{"lint", "--again", "1s", capture}, "--again needs a URL"},
		{[]string{"lint", "--format", "xml", capture}, `--format "xml"`},
		{[]string{"lint", filepath.Join(t.TempDir(), "none.prom")}, "no such file"},
		{[]string{"lint", "http://127.0.0.1:1/metrics"}, "cannot fetch http://127.0.0.1:1/metrics"},
	} {
		if _, _, err := execute(context.Background(), c.args...); err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%v: %v, want %q", c.args, err, c.want)
		}
	}
	bad := filepath.Join(t.TempDir(), "bad.prom")
	os.WriteFile(bad, []byte("a{ 1\n"), 0o600)
	if _, _, err := execute(context.Background(), "lint", bad); err == nil || !strings.Contains(err.Error(), "cannot parse") {
		t.Errorf("bad exposition: %v", err)
	}
}
