package scrape

import (
	"errors"
	"fmt"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/prometheus/common/model"

	"github.com/scrapeflux/scrapeflux/discovery"
)

// FileJob is one job of the config file, as written: the scrape package
// owns its schema and turns it into a JobSpec. Durations and sizes are
// text here, so a bad one is reported with its key and does not stop the
// other checks.
type FileJob struct {
	Name                 string         `yaml:"job_name"`
	ScrapeInterval       string         `yaml:"scrape_interval"`
	ScrapeTimeout        string         `yaml:"scrape_timeout"`
	HonorTimestamps      bool           `yaml:"honor_timestamps"`
	SampleLimit          int            `yaml:"sample_limit"`
	LabelLimit           int            `yaml:"label_limit"`
	LabelNameLengthLimit *int           `yaml:"label_name_length_limit"`
	LabelValueLength     *int           `yaml:"label_value_length_limit"`
	ScrapeProtocols      []string       `yaml:"scrape_protocols"`
	SeriesLimit          int            `yaml:"series_limit"`
	MaxHourlySeries      int            `yaml:"max_hourly_series"`
	MaxDailySeries       int            `yaml:"max_daily_series"`
	URLTag               string         `yaml:"url_tag"`
	Bucket               string         `yaml:"bucket"`
	OmitTags             []string       `yaml:"omit_tags"`
	BodySizeLimit        string         `yaml:"body_size_limit"`
	Layout               string         `yaml:"layout"`
	Measurement          string         `yaml:"measurement"`
	TLS                  TLSConfig      `yaml:"tls_config"`
	BearerTokenFile      string         `yaml:"bearer_token_file"`
	BasicAuth            *BasicAuthFile `yaml:"basic_auth"`
	RelabelConfigs       RelabelRules   `yaml:"relabel_configs"`
	MetricRelabelConfigs RelabelRules   `yaml:"metric_relabel_configs"`
	// Sources are the job's discovery sources, each under the key it
	// registered (static_targets, consul, file_sd_configs, ...), in the
	// order written.
	Sources []discovery.Config `yaml:"-"`

	decodeErrs []string // see DecodeErrors
}

// BasicAuthFile is basic auth towards a job's targets; the password comes
// from a file.
type BasicAuthFile struct {
	Username     string `yaml:"username"`
	PasswordFile string `yaml:"password_file"`
}

// FileDefaults are what a job of the file takes when it does not say.
type FileDefaults struct {
	Interval, Timeout time.Duration
}

// ParseDuration reads a duration as the file writes it (15s, 1m, 1h30m).
func ParseDuration(v string) (time.Duration, error) {
	d, err := model.ParseDuration(v)
	if err != nil {
		return 0, fmt.Errorf("%q is not a duration: write it like 15s, 1m or 1h30m", v)
	}
	return time.Duration(d), nil
}

// ParseSize reads a size: bytes, or with KiB, MiB, GiB, KB, MB, GB.
func ParseSize(s string) (int64, error) {
	units := []struct {
		suffix string
		mult   int64
	}{{"KiB", 1 << 10}, {"MiB", 1 << 20}, {"GiB", 1 << 30}, {"KB", 1000}, {"MB", 1000_000}, {"GB", 1000_000_000}, {"B", 1}}
	mult := int64(1)
	num := strings.TrimSpace(s)
	for _, u := range units {
		if strings.HasSuffix(num, u.suffix) {
			num, mult = strings.TrimSpace(strings.TrimSuffix(num, u.suffix)), u.mult
			break
		}
	}
	n, err := strconv.ParseInt(num, 10, 64)
	if err != nil || n < 0 {
		return 0, errors.New("want a size such as 1048576, 512KiB, 50MiB or 1GiB")
	}
	return n * mult, nil
}

// yamlKeyOf names Config's fields as a job of the file does.
var yamlKeyOf = map[string]string{
	"Interval": "scrape_interval", "Timeout": "scrape_timeout", "BodyLimit": "body_size_limit",
	"SampleLimit": "sample_limit", "LabelLimit": "label_limit", "RelabelConfigs": "relabel_configs",
	"LabelNameLengthLimit": "label_name_length_limit", "LabelValueLengthLimit": "label_value_length_limit",
	"ScrapeProtocols": "scrape_protocols", "SeriesLimit": "series_limit",
	"MaxHourlySeries": "max_hourly_series", "MaxDailySeries": "max_daily_series",
	"MetricRelabelConfigs": "metric_relabel_configs", "TLS": "tls_config", "BearerToken": "bearer_token_file",
}

// Spec turns the job into a JobSpec: defaults filled in, secrets read,
// overrides (the flags given) applied, everything validated. Every
// problem comes back, each a *FieldError naming the job's YAML key. consul
// is the connection the job's Consul discovery uses (the manager's).
func (j *FileJob) Spec(def FileDefaults, consul discovery.ConsulConfig, overrides func(*Config)) (JobSpec, []*FieldError) {
	var probs []*FieldError
	bad := func(key string, err error) { probs = append(probs, &FieldError{Field: key, Err: err}) }
	for _, rr := range []struct {
		key   string
		rules RelabelRules
	}{{"relabel_configs", j.RelabelConfigs}, {"metric_relabel_configs", j.MetricRelabelConfigs}} {
		for _, p := range rr.rules.Problems {
			probs = append(probs, &FieldError{Field: fmt.Sprintf("%s[%d]", rr.key, p.Index), Line: p.Line, Err: p.Err})
		}
	}
	if j.Name == "" {
		bad("job_name", errors.New("must be set"))
		return JobSpec{}, probs
	}
	sc := Config{
		JobName: j.Name, Interval: def.Interval, Timeout: def.Timeout, BodyLimit: DefaultBodyLimit,
		HonorTimestamps: j.HonorTimestamps, SampleLimit: j.SampleLimit, LabelLimit: j.LabelLimit,
		RelabelConfigs: j.RelabelConfigs.Rules, MetricRelabelConfigs: j.MetricRelabelConfigs.Rules,
		RelabelLines: j.RelabelConfigs.Lines, MetricRelabelLines: j.MetricRelabelConfigs.Lines,
		TLS: j.TLS, Layout: j.Layout, Measurement: j.Measurement,
		LabelValueLengthLimit: DefaultLabelValueLengthLimit, ScrapeProtocols: j.ScrapeProtocols, SeriesLimit: j.SeriesLimit,
		MaxHourlySeries: j.MaxHourlySeries, MaxDailySeries: j.MaxDailySeries,
		URLTag: j.URLTag, OmitTags: j.OmitTags, Bucket: j.Bucket, LintInterval: DefaultLintInterval,
	}
	if j.LabelNameLengthLimit != nil {
		sc.LabelNameLengthLimit = *j.LabelNameLengthLimit
	}
	if j.LabelValueLength != nil {
		sc.LabelValueLengthLimit = *j.LabelValueLength
	}
	if sc.Interval == 0 {
		sc.Interval = DefaultInterval
	}
	if j.ScrapeInterval != "" {
		if d, err := ParseDuration(j.ScrapeInterval); err != nil {
			bad("scrape_interval", err)
		} else {
			sc.Interval = d
		}
	}
	if j.ScrapeTimeout != "" {
		if d, err := ParseDuration(j.ScrapeTimeout); err != nil {
			bad("scrape_timeout", err)
		} else {
			sc.Timeout = d
		}
	}
	if sc.Timeout == 0 {
		sc.Timeout = DefaultTimeoutFor(sc.Interval)
	}
	if j.BodySizeLimit != "" {
		if n, err := ParseSize(j.BodySizeLimit); err != nil {
			bad("body_size_limit", err)
		} else {
			sc.BodyLimit = n
		}
	}
	if j.BearerTokenFile != "" {
		if tok, err := readSecretFile(j.BearerTokenFile); err != nil {
			bad("bearer_token_file", err)
		} else {
			sc.BearerToken = tok
		}
	}
	if j.BasicAuth != nil {
		sc.BasicAuthUser = j.BasicAuth.Username
		if j.BasicAuth.Username == "" {
			bad("basic_auth", errors.New("username must be set"))
		}
		if j.BasicAuth.PasswordFile != "" {
			if pass, err := readSecretFile(j.BasicAuth.PasswordFile); err != nil {
				bad("basic_auth", err)
			} else {
				sc.BasicAuthPassword = pass
			}
		}
	}
	if overrides != nil {
		overrides(&sc)
	}
	if err := sc.Validate(); err != nil {
		for _, e := range joined(err) {
			key := "scrape_interval"
			var fe *FieldError
			if errors.As(e, &fe) && yamlKeyOf[fe.Field] != "" {
				key = yamlKeyOf[fe.Field]
			}
			bad(key, e)
		}
	}
	spec := JobSpec{Name: j.Name, Scrape: sc, Sources: j.Sources}
	opts := discovery.DiscovererOptions{Job: j.Name, Consul: consul}
	for _, c := range j.Sources {
		if err := c.Validate(opts); err != nil {
			bad(discovery.KeyOf(c), err)
		}
	}
	if len(spec.Sources) == 0 {
		bad("static_targets", fmt.Errorf("a job needs one of %s", strings.Join(discovery.SourceKeys(), ", ")))
	}
	return spec, probs
}

// readSecretFile reads a secret, trimmed.
func readSecretFile(path string) (string, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return "", fmt.Errorf("cannot read secret file: %w", err)
	}
	return strings.TrimSpace(string(b)), nil
}

func joined(err error) []error {
	if j, ok := err.(interface{ Unwrap() []error }); ok {
		return j.Unwrap()
	}
	return []error{err}
}
