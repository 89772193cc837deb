package discovery

import (
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/common/model"
)

// file_sd: targets and labels from the file, followed when it changes
// (without waiting for the refresh interval), a broken file keeps what it
// gave last and says so, a removed file takes its targets with it.
func TestFileSD(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "engines.json")
	write := func(s string) {
		t.Helper()
		tmp := path + ".tmp"
		if err := os.WriteFile(tmp, []byte(s), 0o600); err != nil {
			t.Fatal(err)
		}
		if err := os.Rename(tmp, path); err != nil { // as tools write them
			t.Fatal(err)
		}
	}
	write(`[{"targets": ["10.0.0.1:9323", "10.0.0.2:9323"], "labels": {"env": "prod", "__metrics_path__": "/engine"}}]`)
	f, err := NewFile("docker", FileSDConfig{Files: []string{filepath.Join(dir, "*.json")}, RefreshInterval: model.Duration(time.Hour)}, discard)
	if err != nil {
		t.Fatal(err)
	}
	w := startWatcher(t, f)
	got := w.waitFor(t, "two targets", hasN(2))
	if got[0].URL != "http://10.0.0.1:9323/engine" || got[0].Tag("env") != "prod" || got[0].Tag("job") != "docker" || got[0].Meta["__meta_filepath"] != path {
		t.Fatalf("target %+v", got[0])
	}
	write(`[{"targets": ["10.0.0.1:9323", "10.0.0.2:9323", "10.0.0.3:9323"]}]`)
	w.waitFor(t, "the third target, from the change event", hasN(3))
	write(`[{"targets": [`) // broken
	deadline := time.Now().Add(10 * time.Second)
	for f.Status().Err == "" {
		if time.Now().After(deadline) {
			t.Fatal("the broken file is not reported")
		}
		time.Sleep(20 * time.Millisecond)
	}
	w.holds(t, 500*time.Millisecond, "a broken file keeps the three targets", hasN(3))
	os.Remove(path)
	w.waitFor(t, "no targets once the file is gone", hasN(0))
}

// http_sd: read every refresh interval; an error keeps the last list.
func TestHTTPSD(t *testing.T) {
	var mode atomic.Int32
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch mode.Load() {
		case 0:
			w.Header().Set("Content-Type", "application/json")
			w.Write([]byte(`[{"targets": ["127.0.0.1:9100"], "labels": {"rack": "r1"}}]`))
		case 1:
			http.Error(w, "down", http.StatusInternalServerError)
		default:
			w.Write([]byte(`[{"targets": ["127.0.0.1:9100", "127.0.0.1:9101"]}]`))
		}
	}))
	defer srv.Close()
	h, err := NewHTTP("nodes", HTTPSDConfig{URL: srv.URL, RefreshInterval: model.Duration(100 * time.Millisecond)}, discard)
	if err != nil {
		t.Fatal(err)
	}
	w := startWatcher(t, h)
	got := w.waitFor(t, "one target", hasN(1))
	if got[0].Tag("rack") != "r1" || !strings.HasPrefix(got[0].Meta["__meta_url"], "http://127.0.0.1") {
		t.Fatalf("target %+v", got[0])
	}
	mode.Store(1)
	deadline := time.Now().Add(10 * time.Second)
	for h.Status().Err == "" {
		if time.Now().After(deadline) {
			t.Fatal("the failing endpoint is not reported")
		}
		time.Sleep(20 * time.Millisecond)
	}
	w.holds(t, time.Second, "a failing endpoint keeps its target (ten refreshes)", hasN(1))
	mode.Store(2)
	w.waitFor(t, "two targets after recovery", hasN(2))
	if h.Status().Err != "" {
		t.Fatalf("still failing: %s", h.Status().Err)
	}
}
