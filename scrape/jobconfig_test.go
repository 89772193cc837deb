package scrape

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/scrapeflux/scrapeflux/discovery"
)

// FileJob.Spec names the YAML key of every problem and reports all of them.
func TestFileJobSpec(t *testing.T) {
	tok := filepath.Join(t.TempDir(), "tok")
	os.WriteFile(tok, []byte("t0ken\n"), 0o600)
	tag := "prometheus"
	cases := []struct {
		name string
		job  FileJob
		want []string // "key: text" of each problem
	}{
		{"no name", FileJob{}, []string{"job_name: must be set"}},
		{"bad duration and limit", FileJob{Name: "a", ScrapeInterval: "often", LabelLimit: -1, Sources: static("http://127.0.0.1:1/metrics")},
			[]string{`scrape_interval: "often" is not a duration`, "label_limit: label limit must not be negative"}},
		{"body size zero", FileJob{Name: "a", BodySizeLimit: "0", Sources: static("http://127.0.0.1:1/metrics")},
			[]string{"body_size_limit: body limit must be positive"}},
		{"auth conflict", FileJob{Name: "a", BearerTokenFile: tok, BasicAuth: &BasicAuthFile{Username: "u"}, Sources: static("http://127.0.0.1:1/metrics")},
			[]string{"bearer_token_file: a bearer token and basic auth cannot both be set"}},
		{"no targets", FileJob{Name: "a"}, []string{"static_targets: a job needs one of consul, dockerswarm_sd_configs, file_sd_configs"}},
		{"timeout over interval", FileJob{Name: "a", ScrapeInterval: "5s", ScrapeTimeout: "10s", Sources: []discovery.Config{&discovery.ConsulJob{Tag: &tag}}},
			[]string{"scrape_timeout: timeout 10s must not exceed interval 5s"}},
	}
	for _, c := range cases {
		_, probs := c.job.Spec(FileDefaults{}, discovery.DefaultConsulConfig(), nil)
		var got []string
		for _, p := range probs {
			got = append(got, p.Field+": "+p.Err.Error())
		}
		if len(got) != len(c.want) {
			t.Errorf("%s: problems %q, want %d", c.name, got, len(c.want))
			continue
		}
		for i, w := range c.want {
			if !strings.HasPrefix(got[i], w) {
				t.Errorf("%s: problem %d is %q, want %q", c.name, i, got[i], w)
			}
		}
	}
	spec, probs := (&FileJob{Name: "a", ScrapeInterval: "5s", BearerTokenFile: tok, Sources: static("http://127.0.0.1:1/metrics")}).
		Spec(FileDefaults{Interval: time.Minute}, discovery.DefaultConsulConfig(), nil)
	if len(probs) != 0 || spec.Scrape.Interval != 5*time.Second || spec.Scrape.Timeout != 5*time.Second || spec.Scrape.BearerToken != "t0ken" {
		t.Errorf("good job: %+v, %v", spec.Scrape, probs)
	}
}

func static(urls ...string) []discovery.Config {
	st := discovery.StaticConfig(urls)
	return []discovery.Config{&st}
}

func TestConsulJobApply(t *testing.T) {
	base := discovery.DefaultConsulConfig()
	c := (&discovery.ConsulJob{Services: []string{"docker-engine"}, Health: "any"}).Apply(base)
	if c.Tag != "" || c.Health != "any" || c.Addr != base.Addr {
		t.Errorf("named services keep a tag or lose the connection: %+v", c)
	}
	tag := "metrics"
	if c := (&discovery.ConsulJob{Tag: &tag}).Apply(base); c.Tag != "metrics" || c.Health != "passing" {
		t.Errorf("tag or default health: %+v", c)
	}
}
