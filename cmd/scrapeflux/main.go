// Command scrapeflux scrapes Prometheus endpoints found in Consul or given
// as flags and writes their samples to InfluxDB. This package is the only
// one that wires discovery, scrape and sink together.
package main

import (
	"fmt"
	"io"
	"log/slog"
	"os"
	"runtime/debug"
	"strings"

	"github.com/spf13/cobra"
)

// version is set at build time with -ldflags "-X main.version=...".
var version = "dev"

// fullVersion is the version set at build time, else the module version
// go install recorded, else the VCS revision go build recorded.
func fullVersion() string {
	if version != "dev" {
		return version
	}
	bi, ok := debug.ReadBuildInfo()
	if !ok {
		return version
	}
	if v := bi.Main.Version; v != "" && v != "(devel)" {
		return v
	}
	var rev, dirty string
	for _, s := range bi.Settings {
		switch s.Key {
		case "vcs.revision":
			rev = s.Value
		case "vcs.modified":
			if s.Value == "true" {
				dirty = "-dirty"
			}
		}
	}
	if len(rev) > 12 {
		rev = rev[:12]
	}
	if rev != "" {
		return "dev-" + rev + dirty
	}
	return version
}

func main() {
	if err := newCmdRoot(os.Stdout, os.Stderr).Execute(); err != nil {
		fmt.Fprintln(os.Stderr, "scrapeflux:", err)
		os.Exit(1)
	}
}

// globalOptions are flags every command shares.
type globalOptions struct {
	logLevel  string
	logFormat string
	stdout    io.Writer
	stderr    io.Writer
}

func (g *globalOptions) logger() (*slog.Logger, error) {
	var lvl slog.Level
	if err := lvl.UnmarshalText([]byte(g.logLevel)); err != nil {
		return nil, fmt.Errorf("--log-level %q: want debug, info, warn or error", g.logLevel)
	}
	o := &slog.HandlerOptions{Level: lvl}
	switch strings.ToLower(g.logFormat) {
	case "text":
		return slog.New(slog.NewTextHandler(g.stderr, o)), nil
	case "json":
		return slog.New(slog.NewJSONHandler(g.stderr, o)), nil
	}
	return nil, fmt.Errorf("--log-format %q: want text or json", g.logFormat)
}

func newCmdRoot(stdout, stderr io.Writer) *cobra.Command {
	g := &globalOptions{stdout: stdout, stderr: stderr}
	root := &cobra.Command{
		Use:   "scrapeflux",
		Short: "Scrape Prometheus endpoints found in Consul and write them to InfluxDB",
		Long: `scrapeflux is one central process that finds Prometheus /metrics endpoints
(Docker Swarm engines started with metrics-addr, and any other exporter),
scrapes them concurrently on a schedule, converts every sample to InfluxDB
line protocol and writes it in batches to InfluxDB 1.8+ or 2.x.`,
		SilenceUsage:  true,
		SilenceErrors: true,
	}
	root.SetOut(stdout)
	root.SetErr(stderr)
	root.PersistentFlags().StringVar(&g.logLevel, "log-level", "info", "log level: debug, info, warn, error")
	root.PersistentFlags().StringVar(&g.logFormat, "log-format", "text", "log format: text or json")
	root.AddCommand(
		newCmdRun(g),
		newCmdScrape(g),
		newCmdLint(g),
		newCmdRegister(g),
		newCmdCheck(g),
		newCmdRelabel(g),
		newCmdConvert(g),
		newCmdSimulate(g),
		newCmdHealth(g),
		newCmdVersion(g),
	)
	root.Version = fullVersion()
	root.SetVersionTemplate("scrapeflux {{.Version}}\n")
	return root
}

func newCmdVersion(g *globalOptions) *cobra.Command {
	return &cobra.Command{
		Use:   "version",
		Short: "Print the version",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			_, err := fmt.Fprintf(g.stdout, "scrapeflux %s\n", fullVersion())
			return err
		},
	}
}
