package scrape

import (
	"crypto/tls"
	"errors"
	"fmt"
	"time"

	promconfig "github.com/prometheus/common/config"
	"github.com/prometheus/common/model"
	"github.com/prometheus/prometheus/model/relabel"

	"github.com/scrapeflux/scrapeflux/discovery"
)

// Config is what every scrape loop of a pool shares.
type Config struct {
	// Interval between the starts of two scrapes of one target.
	Interval time.Duration
	// Timeout of one scrape, at most Interval.
	Timeout time.Duration
	// BodyLimit caps a body after decompression, in bytes.
	BodyLimit int64
	// HonorTimestamps keeps timestamps the target exposes instead of
	// stamping every sample with the scrape's start.
	HonorTimestamps bool
	// JobName, when set, is the job tag of every target (a --config job's
	// job_name, as in Prometheus); relabeling may still change it.
	JobName string
	// SampleLimit fails a scrape with more samples (0: no limit).
	SampleLimit int
	// LabelLimit fails a scrape with a series of more labels (0: none);
	// LabelNameLengthLimit and LabelValueLengthLimit with a label name or
	// value longer, in bytes (0: none).
	LabelLimit, LabelNameLengthLimit, LabelValueLengthLimit int
	// SeriesLimit: a target's distinct series over a sliding hour; past
	// it samples of new series are dropped and counted (0: none).
	SeriesLimit int
	// MaxHourlySeries and MaxDailySeries: the job's budgets of new series,
	// all its targets together, in an hour and in a day (0: none; a
	// configuration file's jobs only, as they need JobName).
	MaxHourlySeries, MaxDailySeries int
	// LintInterval: a target's exposition is linted at its first scrape
	// and then once every LintInterval (0: never; see Linter).
	LintInterval time.Duration
	// Bucket is the job's InfluxDB bucket (1.x: database[/retention
	// policy]); empty: the process's.
	Bucket string
	// ScrapeProtocols are the exposition formats asked for, best first,
	// by Prometheus's names (PrometheusProto, OpenMetricsText1.0.0,
	// OpenMetricsText0.0.1, PrometheusText1.0.0, PrometheusText0.0.4);
	// empty: DefaultScrapeProtocols.
	ScrapeProtocols []string
	// RelabelConfigs rewrite or drop targets before they are scraped, with
	// Prometheus semantics (__address__, __scheme__, __metrics_path__ and
	// the discovery's __meta_* labels).
	RelabelConfigs []*relabel.Config
	// MetricRelabelConfigs rewrite or drop series before they are written.
	MetricRelabelConfigs []*relabel.Config
	// RelabelLines and MetricRelabelLines: each rule's line in the
	// configuration file (empty for rules from flags), for traces.
	RelabelLines, MetricRelabelLines []int
	// Tags are added to every target's identity tags (global tags, as
	// Telegraf's [global_tags]); they win over the target's own.
	Tags []discovery.Tag
	// Layout and Measurement override the sink's for this job (see
	// AppendOptions); empty: the process-wide setting.
	Layout, Measurement string
	// URLTag, when set, names a tag holding the target's URL (password
	// redacted), as Telegraf's prometheus input writes its url tag.
	URLTag string
	// OmitTags are identity tags not written (job, instance...), for a
	// tag set like Telegraf's: its points carry url and host, not job
	// and instance. The targets keep them for relabeling and the page.
	OmitTags []string
	// TLS and authentication towards targets. Secrets are the resolved
	// values (read from files by the caller).
	TLS               TLSConfig
	BearerToken       string
	BasicAuthUser     string
	BasicAuthPassword string
}

// TLSConfig says how to verify targets and present a client certificate.
type TLSConfig struct {
	CAFile             string `yaml:"ca_file"`
	CertFile           string `yaml:"cert_file"`
	KeyFile            string `yaml:"key_file"`
	ServerName         string `yaml:"server_name"`
	InsecureSkipVerify bool   `yaml:"insecure_skip_verify"`
}

// build makes the crypto/tls config; nil when nothing is set.
func (c TLSConfig) build() (*tls.Config, error) {
	if c == (TLSConfig{}) {
		return nil, nil
	}
	if (c.CertFile == "") != (c.KeyFile == "") {
		return nil, errors.New("cert_file and key_file go together")
	}
	// Prometheus's own loader: the CA checked at start, the client
	// certificate read again for every new connection.
	tc, err := promconfig.NewTLSConfig(&promconfig.TLSConfig{
		CAFile: c.CAFile, CertFile: c.CertFile, KeyFile: c.KeyFile,
		ServerName: c.ServerName, InsecureSkipVerify: c.InsecureSkipVerify,
		MinVersion: promconfig.TLSVersion(tls.VersionTLS12),
	})
	if err != nil {
		return nil, err
	}
	return tc, nil
}

// Default values of Config.
const (
	DefaultInterval  = 15 * time.Second
	DefaultTimeout   = 10 * time.Second
	DefaultBodyLimit = 50 << 20
	// DefaultLabelValueLengthLimit: InfluxDB refuses a series key past
	// 64 KiB on every write, so a longer label value fails its scrape
	// with a message naming the label instead.
	DefaultLabelValueLengthLimit = 64 << 10
)

// FieldError is a problem with one field of Config, named as in Go
// (Interval, Timeout, BodyLimit, SampleLimit, LabelLimit, RelabelConfigs,
// MetricRelabelConfigs, TLS, BearerToken); callers map it to their own
// names (a flag, a YAML key).
type FieldError struct {
	Field string
	// Line in the config file, when known better than the field's (a
	// relabel rule's).
	Line int
	Err  error
}

func (e *FieldError) Error() string { return e.Err.Error() }
func (e *FieldError) Unwrap() error { return e.Err }

// DefaultTimeoutFor is the timeout of a scrape every interval when none is
// given: DefaultTimeout, or the interval when that is shorter.
func DefaultTimeoutFor(interval time.Duration) time.Duration {
	return min(DefaultTimeout, interval)
}

// Validate rejects a config the pool cannot run. Every problem is a
// *FieldError, joined.
func (c *Config) Validate() error {
	var errs []error
	bad := func(field, format string, a ...any) {
		errs = append(errs, &FieldError{Field: field, Err: fmt.Errorf(format, a...)})
	}
	if c.Interval <= 0 {
		bad("Interval", "interval must be positive, got %s", c.Interval)
	}
	if c.Timeout <= 0 {
		bad("Timeout", "timeout must be positive, got %s", c.Timeout)
	} else if c.Interval > 0 && c.Timeout > c.Interval {
		bad("Timeout", "timeout %s must not exceed interval %s", c.Timeout, c.Interval)
	}
	if c.BodyLimit <= 0 {
		bad("BodyLimit", "body limit must be positive, got %d", c.BodyLimit)
	}
	if c.SampleLimit < 0 {
		bad("SampleLimit", "sample limit must not be negative, got %d", c.SampleLimit)
	}
	if c.LabelLimit < 0 {
		bad("LabelLimit", "label limit must not be negative, got %d", c.LabelLimit)
	}
	for _, p := range c.ScrapeProtocols {
		if _, ok := scrapeProtocols[p]; !ok {
			bad("ScrapeProtocols", "unknown scrape protocol %q: use PrometheusProto, OpenMetricsText1.0.0, OpenMetricsText0.0.1, PrometheusText1.0.0 or PrometheusText0.0.4", p)
		}
	}
	if c.LintInterval < 0 {
		bad("LintInterval", "lint interval must not be negative, got %s (0 turns lints off)", c.LintInterval)
	}
	if c.SeriesLimit < 0 {
		bad("SeriesLimit", "series limit must not be negative, got %d", c.SeriesLimit)
	}
	if c.MaxHourlySeries < 0 {
		bad("MaxHourlySeries", "a series budget must not be negative, got %d", c.MaxHourlySeries)
	}
	if c.MaxDailySeries < 0 {
		bad("MaxDailySeries", "a series budget must not be negative, got %d", c.MaxDailySeries)
	}
	if c.LabelNameLengthLimit < 0 {
		bad("LabelNameLengthLimit", "label name length limit must not be negative, got %d", c.LabelNameLengthLimit)
	}
	if c.LabelValueLengthLimit < 0 {
		bad("LabelValueLengthLimit", "label value length limit must not be negative, got %d", c.LabelValueLengthLimit)
	}
	for i, rc := range c.RelabelConfigs {
		if err := rc.Validate(model.UTF8Validation); err != nil {
			bad("RelabelConfigs", "rule %d: %w", i, err)
		}
	}
	for i, rc := range c.MetricRelabelConfigs {
		if err := rc.Validate(model.UTF8Validation); err != nil {
			bad("MetricRelabelConfigs", "rule %d: %w", i, err)
		}
	}
	if _, err := c.TLS.build(); err != nil {
		bad("TLS", "%w", err)
	}
	if c.BearerToken != "" && c.BasicAuthUser != "" {
		bad("BearerToken", "a bearer token and basic auth cannot both be set")
	}
	return errors.Join(errs...)
}
