package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/scrapeflux/scrapeflux/discovery"
	"github.com/scrapeflux/scrapeflux/scrape"
)

type lintOptions struct {
	*globalOptions
	cfg       scrape.Config
	bodyLimit byteSize
	auth      targetAuthFlags
	again     time.Duration
	format    string
	job       string
	stdin     io.Reader
}

// errLintFindings makes the command exit non-zero after printing.
var errLintFindings = errors.New("the exposition breaks lint rules")

func newCmdLint(g *globalOptions) *cobra.Command {
	o := &lintOptions{globalOptions: g, bodyLimit: byteSize(scrape.DefaultBodyLimit)}
	cmd := &cobra.Command{
		Use:   "lint URL|FILE|-",
		Short: "Lint one target's exposition, as run lints every target",
		Long: `lint fetches URL once (or reads FILE, or standard input for -) and checks
it with the rules run applies to every target (--lint-interval):

  counter_without_total    a counter sample whose name does not end in _total
  no_help, no_type         a family without HELP, samples without TYPE
  metadata_conflict        TYPE or HELP given twice, a family's samples split
  duplicate_series         one series twice in a scrape (InfluxDB keeps one)
  histogram_without_inf    a classic histogram without its le="+Inf" bucket
  histogram_not_monotonic  bucket counts going down as le goes up
  counter_went_down        a counter lower than before without a restart
                           (needs --again)
  influxdb_renamed         labels written under another name (time, _x,
                           a target tag such as job: exported_<name>),
                           metrics named time, _field, _measurement (v2)
  influxdb_refused         values InfluxDB refuses (not UTF-8, NUL, over
                           64 KiB), a label named like its line's field
  unbounded_label_value    UUIDs, hex IDs, timestamps, IP:port with an
                           ephemeral port; with --again, a label none of
                           whose values repeat
  influxdb3_schema_limit   a family of more than 500 columns in layout v1
                           (labels, bounds, fields, tags, time), more than
                           2,000 families: past InfluxDB 3's limits

It prints each rule broken, how many families, series or labels break it
and the first of them, and exits 1 when any rule is broken.`,
		Example: `  scrapeflux lint http://127.0.0.1:9323/metrics
  scrapeflux lint --again 30s http://127.0.0.1:8080/metrics
  curl -s http://127.0.0.1:9100/metrics | scrapeflux lint -`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			ctx := cmd.Context()
			if ctx == nil {
				ctx = context.Background()
			}
			o.stdin = cmd.InOrStdin()
			return runLint(ctx, o, args[0])
		},
	}
	f := cmd.Flags()
	f.DurationVar(&o.cfg.Timeout, "timeout", scrape.DefaultTimeout, "timeout of a fetch")
	f.Var(&o.bodyLimit, "body-limit", "largest body accepted, after decompression")
	f.StringSliceVar(&o.cfg.ScrapeProtocols, "scrape-protocols", scrape.DefaultScrapeProtocols, "exposition formats asked for, best first")
	f.DurationVar(&o.again, "again", 0, "fetch a second time after this long and compare (counters going down, labels whose values never repeat); URLs only")
	f.StringVar(&o.format, "format", "text", "output: text or json")
	f.StringVar(&o.job, "job", "static", "job tag of the target (labels of target tags' names are renamed)")
	o.auth.register(f, &o.cfg, "the target")
	return cmd
}

func runLint(ctx context.Context, o *lintOptions, src string) error {
	if o.format != "text" && o.format != "json" {
		return fmt.Errorf("--format %q: want text or json", o.format)
	}
	if o.again < 0 {
		return fmt.Errorf("--again must not be negative, got %s", o.again)
	}
	isURL := strings.HasPrefix(src, "http://") || strings.HasPrefix(src, "https://")
	if o.again > 0 && !isURL {
		return fmt.Errorf("--again needs a URL: a file or standard input is read once")
	}
	var fetch func() ([]byte, string, error)
	identity := []string{"instance", "job"}
	switch {
	case isURL:
		if o.cfg.Timeout <= 0 {
			return fmt.Errorf("--timeout must be positive, got %s", o.cfg.Timeout)
		}
		o.cfg.Interval = o.cfg.Timeout
		o.cfg.BodyLimit = int64(o.bodyLimit)
		if errs := o.auth.read(&o.cfg); len(errs) > 0 {
			return errors.Join(errs...)
		}
		t, err := discovery.NewTarget(src, o.job)
		if err != nil {
			return err
		}
		identity = identity[:0]
		for _, tg := range t.Tags {
			identity = append(identity, tg.Key)
		}
		fetch = func() ([]byte, string, error) {
			b, ct, err := scrape.FetchOnce(ctx, o.cfg, t)
			if err != nil {
				return nil, "", fmt.Errorf("cannot fetch %s: %w", t.Redacted(), err)
			}
			return b, ct, nil
		}
	default:
		fetch = func() ([]byte, string, error) {
			r := o.stdin
			if src != "-" {
				fh, err := os.Open(src)
				if err != nil {
					return nil, "", err
				}
				defer fh.Close()
				r = fh
			}
			b, err := io.ReadAll(io.LimitReader(r, int64(o.bodyLimit)+1))
			if err != nil {
				return nil, "", err
			}
			if int64(len(b)) > int64(o.bodyLimit) {
				return nil, "", fmt.Errorf("%s is larger than --body-limit %s", src, formatBytes(int64(o.bodyLimit)))
			}
			return b, contentTypeOf(b), nil
		}
	}
	l := scrape.NewLinter(identity)
	var rep *scrape.LintReport
	for i := 0; i < 2; i++ {
		body, ct, err := fetch()
		if err != nil {
			return err
		}
		if rep, err = l.Lint(body, ct, time.Now()); err != nil {
			return fmt.Errorf("cannot parse %s: %w", src, err)
		}
		if o.again == 0 {
			break
		}
		if i == 0 {
			select {
			case <-time.After(o.again):
			case <-ctx.Done():
				return ctx.Err()
			}
		}
	}
	if o.format == "json" {
		enc := json.NewEncoder(o.stdout)
		enc.SetIndent("", "  ")
		if err := enc.Encode(rep); err != nil {
			return err
		}
	} else {
		fmt.Fprintf(o.stdout, "%d series\n", rep.Series)
		for _, f := range rep.Findings {
			fmt.Fprintf(o.stdout, "%-24s %5d  %s\n", f.Rule, f.Count, f.Example)
		}
		if len(rep.Findings) == 0 {
			fmt.Fprintln(o.stdout, "no rule broken")
		}
	}
	if len(rep.Findings) > 0 {
		return fmt.Errorf("%w: %d of %d rules", errLintFindings, len(rep.Findings), len(scrape.LintRules))
	}
	return nil
}

// contentTypeOf guesses a file's exposition format: OpenMetrics ends
// with # EOF, anything else is read as the text format.
func contentTypeOf(b []byte) string {
	if s := strings.TrimRight(string(b[max(0, len(b)-16):]), "\n\r\t "); strings.HasSuffix(s, "# EOF") {
		return "application/openmetrics-text; version=1.0.0"
	}
	return "text/plain; version=0.0.4"
}
