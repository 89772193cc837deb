package main

import (
	"context"
	"fmt"
	"os"
	"os/signal"
	"slices"
	"strings"
	"syscall"
	"time"

	"github.com/spf13/cobra"

	"github.com/scrapeflux/scrapeflux/scrape/simulator"
)

type simulateOptions struct {
	*globalOptions
	targets  int
	basePort int
	host     string
	captures []string
	listFile string
	duration time.Duration
}

func newCmdSimulate(g *globalOptions) *cobra.Command {
	o := &simulateOptions{globalOptions: g}
	cmd := &cobra.Command{
		Use:   "simulate",
		Short: "Serve simulated Docker engines (real /metrics captures) on loopback",
		Long: `simulate serves --targets simulated targets on --host (127.0.0.1), one port each from
--base-port, each answering /metrics with a real capture (Docker engines by
default) whose counters grow and gauges move from one scrape to the next.
It prints the target URLs and runs until interrupted or --duration ends.

Captures: ` + strings.Join(simulator.CaptureNames(), ", "),
		Example: "  scrapeflux simulate --targets 3 --base-port 19323",
		Args:    cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			return runSimulate(cmd.Context(), o)
		},
	}
	f := cmd.Flags()
	f.IntVar(&o.targets, "targets", 3, "number of simulated targets")
	f.StringVar(&o.host, "host", "127.0.0.1", "address the targets listen on (0.0.0.0: every interface, as in a container)")
	f.IntVar(&o.basePort, "base-port", 19323, "port of the first target; the others follow (0: any free ports)")
	f.StringSliceVar(&o.captures, "capture", simulator.EngineCaptures, "captures served in turn")
	f.StringVar(&o.listFile, "list", "", "also write the target URLs, one a line, to this file")
	f.DurationVar(&o.duration, "duration", 0, "stop after this long (0: run until interrupted)")
	return cmd
}

func runSimulate(ctx context.Context, o *simulateOptions) error {
	if o.targets <= 0 {
		return fmt.Errorf("--targets must be positive, got %d", o.targets)
	}
	for _, c := range o.captures {
		if !slices.Contains(simulator.CaptureNames(), c) {
			return fmt.Errorf("--capture %q is not a capture: choose from %s", c, strings.Join(simulator.CaptureNames(), ", "))
		}
	}
	fleet, err := simulator.StartFleetOn(o.host, o.targets, o.basePort, o.captures...)
	if err != nil {
		return err
	}
	defer fleet.Close()
	list := strings.Join(fleet.URLs, "\n") + "\n"
	if o.listFile != "" {
		if err := os.WriteFile(o.listFile, []byte(list), 0o644); err != nil {
			return fmt.Errorf("cannot write --list file: %w", err)
		}
	}
	fmt.Fprint(o.stdout, list)
	if ctx == nil {
		ctx = context.Background()
	}
	ctx, stop := signal.NotifyContext(ctx, syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	if o.duration > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, o.duration)
		defer cancel()
	}
	<-ctx.Done()
	return nil
}
