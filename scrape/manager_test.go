package scrape

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"gopkg.in/yaml.v3"

	"github.com/scrapeflux/scrapeflux/discovery"

	"github.com/scrapeflux/scrapeflux/internal/servertest"
)

// listSD is a discovery source written as a new one would be: this type
// and its three methods, and the one line in init registering it. Nothing
// in the manager, the job schema or the file's decoding names it.
type listSD struct {
	URLs []string `yaml:"urls"`
}

func init() { discovery.RegisterConfig("list_sd_configs", true, &listSD{}) }

func (*listSD) Name() string { return "list_sd" }

func (c *listSD) Validate(discovery.DiscovererOptions) error {
	if len(c.URLs) == 0 {
		return errors.New("urls must list at least one URL")
	}
	return nil
}

func (c *listSD) NewDiscoverer(o discovery.DiscovererOptions) (discovery.Discoverer, error) {
	return discovery.NewStatic(o.Job, c.URLs)
}

// A source registered outside the scrape and discovery code is read from
// a job of the file (strictly: its unknown keys are errors, with their
// line), validated with its key, shown by kind and scraped.
func TestNewSourceIsOneRegistration(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		fmt.Fprintln(w, "up_metric 1")
	}))
	defer srv.Close()
	decode := func(doc string) FileJob {
		t.Helper()
		var j FileJob
		dec := yaml.NewDecoder(strings.NewReader(doc))
		dec.KnownFields(true)
		if err := dec.Decode(&j); err != nil {
			t.Fatal(err)
		}
		return j
	}

	bad := decode("job_name: a\nlist_sd_configs:\n  - urls: []\n    url: x\n")
	if err := bad.DecodeErrors(); err == nil || !strings.Contains(err.Error(), "line 4: field url not found in type scrape.listSD") {
		t.Errorf("unknown key of the new source: %v", err)
	}
	bad = decode("job_name: a\nlist_sd_configs:\n  - urls: []\n")
	if _, probs := bad.Spec(FileDefaults{}, discovery.DefaultConsulConfig(), nil); len(probs) != 1 ||
		probs[0].Field != "list_sd_configs" || !strings.Contains(probs[0].Err.Error(), "urls must list") {
		t.Errorf("validation of the new source: %v", probs)
	}

	job := decode(fmt.Sprintf("job_name: a\nscrape_interval: 1s\nlist_sd_configs:\n  - urls: [%s/metrics]\n", srv.URL))
	if err := job.DecodeErrors(); err != nil {
		t.Fatal(err)
	}
	spec, probs := job.Spec(FileDefaults{}, discovery.DefaultConsulConfig(), nil)
	if len(probs) != 0 {
		t.Fatal(probs)
	}
	r := &recorder{}
	m := NewManager(context.Background(), r, nil, discovery.DefaultConsulConfig(), discard)
	defer m.Stop()
	if started, _, _, err := m.Apply([]JobSpec{spec}); started != 1 || err != nil {
		t.Fatalf("started %d, %v", started, err)
	}
	servertest.WaitFor(t, "the condition", 10*time.Second, func() bool { _, ok := value(r.last(), "up_metric"); return ok })
	if s := m.Summaries(); len(s) != 1 || s[0].Sources != "list_sd" || s[0].Discovered != 1 {
		t.Errorf("summary: %+v", s)
	}
	// The same job applied again keeps running; another URL restarts it.
	if _, _, kept, _ := m.Apply([]JobSpec{spec}); kept != 1 {
		t.Errorf("an unchanged job was not kept: %d", kept)
	}
	spec.Sources = []discovery.Config{&listSD{URLs: []string{srv.URL + "/other"}}}
	if started, stopped, _, _ := m.Apply([]JobSpec{spec}); started != 1 || stopped != 1 {
		t.Errorf("a changed source did not restart the job: started %d stopped %d", started, stopped)
	}
}
