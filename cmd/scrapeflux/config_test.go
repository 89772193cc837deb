package main

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/scrapeflux/scrapeflux/scrape"
)

// TestCheckConfig runs check config on one bad file per rule and asserts
// the file, line and field in the message.
func TestCheckConfig(t *testing.T) {
	cases := map[string]string{
		"bad-unknown-field.yml":           "bad-unknown-field.yml:4: unknown field scrape_intervall (did you mean scrape_interval?)",
		"bad-timeout-over-interval.yml":   "bad-timeout-over-interval.yml:5: jobs[0] (a): scrape_timeout: timeout 10s must not exceed interval 5s",
		"bad-no-job-name.yml":             "bad-no-job-name.yml:2: jobs[0]: job_name: must be set",
		"bad-duplicate-job.yml":           `bad-duplicate-job.yml:4: jobs[1] (a): job_name: "a" is used twice`,
		"bad-no-targets.yml":              "bad-no-targets.yml:2: jobs[0] (a): static_targets: a job needs one of consul, dockerswarm_sd_configs, file_sd_configs, http_sd_configs, static_targets",
		"bad-target-scheme.yml":           "bad-target-scheme.yml:3: jobs[0] (a): static_targets: target URL \"ftp://127.0.0.1:1/metrics\": scheme must be http or https",
		"bad-relabel-no-target-label.yml": "bad-relabel-no-target-label.yml:5: jobs[0] (a): relabel_configs[0]: relabel configuration for replace action requires 'target_label' value",
		"bad-tab.yml":                     "bad-tab.yml:2: found character that cannot start any token: the line holds a tab, and YAML indents with spaces only",
		"bad-relabel-action.yml":          `unknown relabel action "explode"`,
		"bad-body-size.yml":               "bad-body-size.yml:4: jobs[0] (a): body_size_limit: want a size",
		"bad-secret-file.yml":             "bad-secret-file.yml:4: jobs[0] (a): bearer_token_file: cannot read secret file",
		"bad-consul-health.yml":           `bad-consul-health.yml:3: jobs[0] (a): consul: consul health "sometimes": want passing or any`,
		"bad-tls-ca.yml":                  "bad-tls-ca.yml:4: jobs[0] (a): tls_config: unable to read CA cert",
		"bad-duration.yml":                `bad-duration.yml:3: jobs[0] (a): scrape_interval: "often" is not a duration: write it like 15s, 1m or 1h30m`,
		"bad-body-size-zero.yml":          "bad-body-size-zero.yml:4: jobs[0] (a): body_size_limit: body limit must be positive, got 0",
		"bad-label-limit.yml":             "bad-label-limit.yml:4: jobs[0] (a): label_limit: label limit must not be negative, got -1",
		"bad-auth-conflict.yml":           "bad-auth-conflict.yml:4: jobs[0] (a): bearer_token_file: a bearer token and basic auth cannot both be set",
		"bad-prometheus-style.yml":        "bad-prometheus-style.yml:1: unknown field scrape_configs: this is not a Prometheus config; scrapeflux's file lists jobs:",
		"bad-no-jobs.yml":                 "bad-no-jobs.yml: jobs: at least one job is needed",
		"bad-layout.yml":                  `bad-layout.yml:4: jobs[0] (a): layout: unknown layout "v3"`,
		"bad-source-typo.yml":             "bad-source-typo.yml:3: unknown field file_sd_config (did you mean file_sd_configs?)",
		"bad-job-budget.yml":              "bad-job-budget.yml:3: jobs[0] (a): max_hourly_series: a series budget must not be negative, got -5",
		"bad-source-not-list.yml":         "bad-source-not-list.yml:4: http_sd_configs: a list is expected",
	}
	for file, want := range cases {
		t.Run(file, func(t *testing.T) {
			_, _, err := execute(context.Background(), "check", "config", "testdata/config/"+file)
			if err == nil || !strings.Contains(err.Error(), want) {
				t.Errorf("err = %v\nwant it to contain %q", err, want)
			}
		})
	}
	// Every problem of a file is shown, each with its line, job and field.
	_, _, err := execute(context.Background(), "check", "config", "testdata/config/bad-many.yml")
	for _, want := range []string{
		"bad-many.yml:4: unknown field scrape_timout (did you mean scrape_timeout?)",
		`bad-many.yml:3: jobs[0] (a): scrape_interval: "often" is not a duration`,
		"bad-many.yml:6: jobs[0] (a): label_limit: label limit must not be negative",
		`bad-many.yml:5: jobs[0] (a): static_targets: target URL "ftp://x": scheme must be http or https`,
		`bad-many.yml:7: jobs[1] (a): job_name: "a" is used twice`,
		`bad-many.yml:8: jobs[1] (a): layout: unknown layout "v9"`,
	} {
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("bad-many.yml: %v\nlacks %q", err, want)
		}
	}
	// Unknown keys inside a source's config are found as the job's own are.
	_, _, err = execute(context.Background(), "check", "config", "testdata/config/bad-source-unknown-field.yml")
	for _, want := range []string{
		"bad-source-unknown-field.yml:5: unknown field refresh_intrval (did you mean refresh_interval?)",
		"bad-source-unknown-field.yml:9: unknown field ca_fil (did you mean ca_file?)",
	} {
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("bad-source-unknown-field.yml: %v\nlacks %q", err, want)
		}
	}
	// Every bad relabel rule, each at its line, its regex as written.
	_, _, err = execute(context.Background(), "check", "config", "testdata/config/bad-relabel-many.yml")
	for _, want := range []string{
		"bad-relabel-many.yml:5: jobs[0] (a): relabel_configs[0]: regex \"a(b\": error parsing regexp: missing closing ): `a(b`",
		`bad-relabel-many.yml:11: jobs[0] (a): relabel_configs[2]: unknown relabel action "frobnicate"`,
		"bad-relabel-many.yml:13: jobs[0] (a): metric_relabel_configs[0]: regex \"[z\"",
	} {
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("bad-relabel-many.yml: %v\nlacks %q", err, want)
		}
	}
	if err != nil && strings.Contains(err.Error(), "(?s:") {
		t.Errorf("a regex shown in its compiled form: %v", err)
	}
	if err != nil && strings.Contains(err.Error(), "model.Duration") {
		t.Errorf("Go type text in the message: %v", err)
	}
	out, _, err := execute(context.Background(), "check", "config", "testdata/config/good.yml")
	if err != nil {
		t.Fatalf("good.yml: %v", err)
	}
	for _, want := range []string{"OK, 2 jobs", "docker-engine: every 15s (timeout 10s), consul", "traefik: every 30s (timeout 5s), 1 static targets"} {
		if !strings.Contains(out, want) {
			t.Errorf("output lacks %q:\n%s", want, out)
		}
	}
	if _, _, err := execute(context.Background(), "check", "config", "../../configs/scrapeflux.yml"); err != nil {
		t.Errorf("shipped example configs/scrapeflux.yml: %v", err)
	}
}

func TestConfigClusterSection(t *testing.T) {
	c, err := readClusterSection("testdata/config/good.yml")
	if err != nil || c == nil {
		t.Fatalf("cluster section: %v, %v", c, err)
	}
	if c.Name != "central" || c.ReplicationFactor != 2 || c.TTL.String() != "3s" {
		t.Errorf("cluster section read as %+v", *c)
	}
	if c, _ := readClusterSection("../../configs/scrapeflux.yml"); c != nil {
		t.Errorf("the shipped example runs a single instance, has cluster %+v", *c)
	}
}

// Every scrape flag of the override table, given explicitly, wins over a
// config job's value; a flag not given leaves the job's value alone, and
// an --interval shorter than the job's timeout brings the timeout down.
func TestFlagsOverrideConfigJobs(t *testing.T) {
	job := scrape.Config{Interval: time.Minute, Timeout: 30 * time.Second, BodyLimit: 1, SeriesLimit: 1, LabelLimit: 1,
		LabelNameLengthLimit: 1, LabelValueLengthLimit: 1, LintInterval: time.Hour, ScrapeProtocols: []string{"a"}}
	o := &runOptions{bodyLimit: 7}
	o.scrape = scrape.Config{Interval: 10 * time.Second, Timeout: 4 * time.Second, HonorTimestamps: true, SeriesLimit: 7, LabelLimit: 7,
		LabelNameLengthLimit: 7, LabelValueLengthLimit: 7, LintInterval: 7 * time.Minute, ScrapeProtocols: []string{"b"}}
	all := func(string) bool { return true }
	c := job
	o.override(&c, all)
	want := o.scrape
	want.BodyLimit = 7
	if fmt.Sprint(c) != fmt.Sprint(want) {
		t.Errorf("every flag given:\n got %+v\nwant %+v", c, want)
	}
	for _, ov := range scrapeOverrides {
		c := job
		o.override(&c, func(f string) bool { return f == ov.flag })
		if fmt.Sprint(c) == fmt.Sprint(job) {
			t.Errorf("--%s given changed nothing", ov.flag)
		}
	}
	c = job
	o.override(&c, func(string) bool { return false })
	if fmt.Sprint(c) != fmt.Sprint(job) {
		t.Errorf("no flag given changed the job: %+v", c)
	}
	c = job
	o.override(&c, func(f string) bool { return f == "interval" })
	if c.Interval != 10*time.Second || c.Timeout != 10*time.Second {
		t.Errorf("--interval 10s alone: interval %s timeout %s, want 10s and 10s", c.Interval, c.Timeout)
	}
}
