package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"time"

	"github.com/spf13/cobra"

	"github.com/scrapeflux/scrapeflux/discovery"
	"github.com/scrapeflux/scrapeflux/scrape"
	"github.com/scrapeflux/scrapeflux/sink"
)

type scrapeOptions struct {
	*globalOptions
	url       string
	job       string
	cfg       scrape.Config
	bodyLimit byteSize
	layout    string
	conv      sink.ConvertOptions
	auth      targetAuthFlags
}

func newCmdScrape(g *globalOptions) *cobra.Command {
	o := &scrapeOptions{globalOptions: g, bodyLimit: scrape.DefaultBodyLimit}
	cmd := &cobra.Command{
		Use:   "scrape URL",
		Short: "Scrape one endpoint once and print the line protocol",
		Long: `scrape fetches URL once, converts it exactly as run would, and prints the
line protocol on standard output. It exits non-zero, with the reason, when
the scrape fails. Use it to see what a target would write.`,
		Example: "  scrapeflux scrape http://127.0.0.1:9323/metrics --layout v2",
		Args:    cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			o.url = args[0]
			return runScrape(cmd.Context(), o)
		},
	}
	f := cmd.Flags()
	f.StringVar(&o.job, "job", "static", "job tag")
	f.DurationVar(&o.cfg.Timeout, "timeout", scrape.DefaultTimeout, "scrape timeout")
	f.Var(&o.bodyLimit, "body-limit", "largest body accepted, after decompression")
	f.BoolVar(&o.cfg.HonorTimestamps, "honor-timestamps", false, "keep timestamps the target exposes")
	f.StringSliceVar(&o.cfg.ScrapeProtocols, "scrape-protocols", scrape.DefaultScrapeProtocols, "exposition formats asked for, best first (PrometheusProto for native histograms)")
	f.StringVar(&o.layout, "layout", "v1", "InfluxDB layout: v1 or v2")
	f.StringVar(&o.conv.Measurement, "measurement", sink.DefaultMeasurement, "measurement of layout v2")
	o.auth.register(f, &o.cfg, "the target")
	return cmd
}

// writerTo is a sink.Writer printing batches.
type writerTo struct{ w io.Writer }

func (p writerTo) Write(_ context.Context, body []byte) error {
	_, err := p.w.Write(body)
	return err
}

func runScrape(ctx context.Context, o *scrapeOptions) error {
	log, err := o.logger()
	if err != nil {
		return err
	}
	if o.conv.Layout, err = sink.ParseLayout(o.layout); err != nil {
		return fmt.Errorf("--layout: %w", err)
	}
	if o.cfg.Timeout <= 0 {
		return fmt.Errorf("--timeout must be positive, got %s", o.cfg.Timeout)
	}
	o.cfg.Interval = o.cfg.Timeout // one scrape: no schedule
	o.cfg.BodyLimit = int64(o.bodyLimit)
	if errs := o.auth.read(&o.cfg); len(errs) > 0 {
		return errors.Join(errs...)
	}
	if err := o.cfg.Validate(); err != nil {
		return err
	}
	t, err := discovery.NewTarget(o.url, o.job)
	if err != nil {
		return err
	}
	if ctx == nil {
		ctx = context.Background()
	}
	serr := scrapeOnceTo(ctx, o.cfg, o.conv, t, o.stdout, log)
	if serr != nil {
		return fmt.Errorf("cannot scrape %s: %w", o.url, serr)
	}
	return nil
}

// scrapeOnceTo scrapes t once with cfg and writes the line protocol to w,
// through the same sink as run. It returns why the scrape failed, if it
// did (the synthetic series are written either way).
func scrapeOnceTo(ctx context.Context, cfg scrape.Config, conv sink.ConvertOptions, t discovery.Target, w io.Writer, log *slog.Logger) error {
	scfg := sink.DefaultConfig()
	scfg.Convert = conv
	scfg.FlushInterval = time.Hour
	scfg.QueueDir = ""
	snk, err := sink.New(scfg, writerTo{w}, log)
	if err != nil {
		return err
	}
	done := make(chan error, 1)
	go func() { done <- snk.Run(ctx) }()
	_, serr := scrape.ScrapeOnce(ctx, cfg, t, snk.Appender(scrape.IdentityTags(t), cfg.AppendOptions()), log)
	snk.Close()
	if err := <-done; err != nil {
		return err
	}
	if st := snk.Stats(); st.Dropped[sink.DropShutdown.String()] > 0 {
		return fmt.Errorf("could not print every line")
	}
	return serr
}
