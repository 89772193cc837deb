package main

import (
	"context"
	"fmt"
	"io"
	"os"
	"strings"
	"time"

	"github.com/prometheus/common/model"
	"github.com/prometheus/prometheus/model/labels"
	"github.com/spf13/cobra"

	"github.com/scrapeflux/scrapeflux/discovery"
	"github.com/scrapeflux/scrapeflux/scrape"
)

type relabelOptions struct {
	*globalOptions
	config, job, target, metrics string
	labels                       []string
	show                         int
}

func newCmdRelabel(g *globalOptions) *cobra.Command {
	o := &relabelOptions{globalOptions: g}
	cmd := &cobra.Command{
		Use:   "relabel --config FILE --job NAME",
		Short: "Run a job's relabel rules rule by rule, without the daemon",
		Long: `relabel runs the rules of one job of a --config file the way run applies
them, and prints what each rule did.

Target rules (relabel_configs) run on the labels a target would start
from: those given with --label, and with --target URL its __address__,
__scheme__, __metrics_path__ and __param_* (the job's job_name is set
first, as run does). Each rule is printed with its line in the file and
the labels it set, changed or removed; the trace stops at the rule that
drops the target.

Metric rules (metric_relabel_configs) run with --metrics on every series
of an exposition: a FILE, - for standard input, or a URL fetched once with
the job's TLS and credentials. It prints, per rule, the series it changed
and dropped, then the series before and after as a diff (- dropped,
~ rewritten: old -> new; at most --show of each) and the counts of series
kept, dropped and rewritten. scrapeflux's own series (up,
scrape_duration_seconds, scrape_samples_scraped) are never relabeled.`,
		Example: `  scrapeflux relabel --config scrapeflux.yml --job nodes --target http://10.0.0.5:9323/metrics --label __meta_consul_service=docker-engine
  scrapeflux relabel --config scrapeflux.yml --job nodes --metrics http://10.0.0.5:9323/metrics
  curl -s http://10.0.0.5:9323/metrics | scrapeflux relabel --config scrapeflux.yml --job nodes --metrics -`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			ctx := cmd.Context()
			if ctx == nil {
				ctx = context.Background()
			}
			return runRelabel(ctx, o, cmd.InOrStdin())
		},
	}
	f := cmd.Flags()
	f.StringVar(&o.config, "config", "", "the configuration file (as run --config)")
	f.StringVar(&o.job, "job", "", "the job whose rules to run (its job_name)")
	f.StringVar(&o.target, "target", "", "target relabeling: the target's URL (gives __address__, __scheme__, __metrics_path__, __param_*)")
	f.StringArrayVar(&o.labels, "label", nil, "target relabeling: a label to start from, name=value (repeatable; e.g. __meta_consul_service=web)")
	f.StringVar(&o.metrics, "metrics", "", "metric relabeling: an exposition to run the rules on (FILE, - for standard input, or a URL)")
	f.IntVar(&o.show, "show", 20, "metric relabeling: most dropped and most rewritten series to print (0: counts only)")
	return cmd
}

func runRelabel(ctx context.Context, o *relabelOptions, stdin io.Reader) error {
	if o.config == "" || o.job == "" {
		return fmt.Errorf("give --config FILE and --job NAME (the job whose rules to run)")
	}
	specs, err := loadConfig(o.config, discovery.DefaultConsulConfig(), nil)
	if err != nil {
		return fmt.Errorf("%s is not valid:\n%w", o.config, err)
	}
	var job *scrape.JobSpec
	var names []string
	for i := range specs {
		names = append(names, specs[i].Name)
		if specs[i].Name == o.job {
			job = &specs[i]
		}
	}
	if job == nil {
		return fmt.Errorf("%s has no job %q; its jobs: %s", o.config, o.job, strings.Join(names, ", "))
	}
	if o.metrics != "" {
		return relabelMetrics(ctx, o, job.Scrape, stdin)
	}
	if o.target == "" && len(o.labels) == 0 {
		return fmt.Errorf("give --target URL and/or --label name=value to run the target rules on, or --metrics to run the metric rules")
	}
	return relabelTargetLabels(o, job.Scrape)
}

// relabelTargetLabels traces the job's target rules on the labels given.
func relabelTargetLabels(o *relabelOptions, cfg scrape.Config) error {
	t := discovery.Target{URL: "http://:0/metrics"}
	if o.target != "" {
		var err error
		if t, err = discovery.NewTarget(o.target, ""); err != nil {
			return err
		}
		t.Tags = nil
	}
	lb, err := scrape.TargetLabels(t)
	if err != nil {
		return err
	}
	if o.target == "" {
		lb.Del("__address__", "__scheme__", "__metrics_path__")
	}
	if cfg.JobName != "" {
		lb.Set("job", cfg.JobName)
	}
	for _, l := range o.labels {
		name, value, ok := strings.Cut(l, "=")
		if !ok || !model.UTF8Validation.IsValidLabelName(name) {
			return fmt.Errorf("--label %q: want name=value with a valid label name", l)
		}
		lb.Set(name, strings.Trim(value, `"`))
	}
	w := o.stdout
	fmt.Fprintf(w, "job %s: %d target relabel rules\nbefore: %s\n", cfg.JobName, len(cfg.RelabelConfigs), lb.Labels())
	steps, kept := scrape.TraceRelabel(lb, cfg.RelabelConfigs, cfg.RelabelLines)
	for _, st := range steps {
		fmt.Fprintf(w, "  %s: ", ruleName(st.Rule, st.Line, st.Action))
		switch {
		case st.Dropped:
			fmt.Fprintln(w, "dropped the target")
		case len(st.Changes) == 0:
			fmt.Fprintln(w, "no change")
		default:
			fmt.Fprintln(w, strings.Join(st.Changes, ", "))
		}
	}
	if !kept {
		fmt.Fprintln(w, "outcome: dropped by relabeling")
		return nil
	}
	after := lb.Labels()
	fmt.Fprintf(w, "after:  %s\n", after)
	if after.Get("__address__") == "" {
		fmt.Fprintln(w, "outcome: not scraped: no __address__ after relabeling")
		return nil
	}
	var tags []string
	after.Range(func(l labels.Label) {
		if !strings.HasPrefix(l.Name, "__") && l.Value != "" {
			tags = append(tags, l.Name+"="+l.Value)
		}
	})
	if after.Get("instance") == "" {
		tags = append(tags, "instance="+after.Get("__address__"))
	}
	fmt.Fprintf(w, "outcome: scraped at %s://%s%s with tags %s\n", after.Get("__scheme__"), after.Get("__address__"), after.Get("__metrics_path__"), strings.Join(tags, ", "))
	return nil
}

func ruleName(i, line int, action string) string {
	if line > 0 {
		return fmt.Sprintf("rule %d (line %d, %s)", i, line, action)
	}
	return fmt.Sprintf("rule %d (%s)", i, action)
}

// seriesCollector is an Appender that keeps each series' labels once.
type seriesCollector struct {
	seen   map[string]bool
	series []labels.Labels
}

func (c *seriesCollector) Append(s *scrape.Sample) error {
	if s.Synthetic || c.seen[string(s.Series)] {
		return nil
	}
	c.seen[string(s.Series)] = true
	var ls labels.Labels
	s.Labels(&ls)
	c.series = append(c.series, ls)
	return nil
}
func (c *seriesCollector) Commit() error { return nil }
func (c *seriesCollector) Rollback()     {}

// relabelMetrics runs the job's metric rules on every series of an
// exposition, as the sink does (each series through the rules in a row).
func relabelMetrics(ctx context.Context, o *relabelOptions, cfg scrape.Config, stdin io.Reader) error {
	var body []byte
	var ct string
	var err error
	switch {
	case strings.HasPrefix(o.metrics, "http://") || strings.HasPrefix(o.metrics, "https://"):
		t, terr := discovery.NewTarget(o.metrics, cfg.JobName)
		if terr != nil {
			return terr
		}
		if body, ct, err = scrape.FetchOnce(ctx, cfg, t); err != nil {
			return fmt.Errorf("cannot fetch %s: %w", t.Redacted(), err)
		}
	default:
		r := stdin
		if o.metrics != "-" {
			fh, ferr := os.Open(o.metrics)
			if ferr != nil {
				return ferr
			}
			defer fh.Close()
			r = fh
		}
		if body, err = io.ReadAll(io.LimitReader(r, cfg.BodyLimit+1)); err != nil {
			return err
		}
		if int64(len(body)) > cfg.BodyLimit {
			return fmt.Errorf("%s is larger than the job's body_size_limit", o.metrics)
		}
		ct = contentTypeOf(body)
	}
	col := &seriesCollector{seen: map[string]bool{}}
	if _, _, err := scrape.NewParser().Parse(body, ct, time.Now().UnixMilli(), false, col); err != nil {
		return fmt.Errorf("cannot parse %s: %w", o.metrics, err)
	}
	rules := cfg.MetricRelabelConfigs
	changed, dropped := make([]int, len(rules)), make([]int, len(rules))
	var gone, rewritten []string
	kept := 0
	for _, ls := range col.series {
		lb := labels.NewBuilder(ls)
		steps, keep := scrape.TraceRelabel(lb, rules, cfg.MetricRelabelLines)
		for _, st := range steps {
			if st.Dropped {
				dropped[st.Rule]++
			} else if len(st.Changes) > 0 {
				changed[st.Rule]++
			}
		}
		switch after := lb.Labels(); {
		case !keep:
			gone = append(gone, ls.String())
		case !labels.Equal(after, ls):
			kept++
			rewritten = append(rewritten, ls.String()+" -> "+after.String())
		default:
			kept++
		}
	}
	w := o.stdout
	fmt.Fprintf(w, "job %s: %d metric relabel rules on %d series of %s\n", cfg.JobName, len(rules), len(col.series), o.metrics)
	for i, rc := range rules {
		line := 0
		if i < len(cfg.MetricRelabelLines) {
			line = cfg.MetricRelabelLines[i]
		}
		fmt.Fprintf(w, "  %s: %d series changed, %d dropped\n", ruleName(i, line, string(rc.Action)), changed[i], dropped[i])
	}
	for _, d := range []struct {
		mark string
		list []string
	}{{"-", gone}, {"~", rewritten}} {
		for i, s := range d.list {
			if i == o.show {
				fmt.Fprintf(w, "%s ... and %d more\n", d.mark, len(d.list)-o.show)
				break
			}
			fmt.Fprintf(w, "%s %s\n", d.mark, s)
		}
	}
	fmt.Fprintf(w, "series kept %d (of them rewritten %d), dropped %d\n", kept, len(rewritten), len(gone))
	return nil
}
