package main

import (
	"fmt"
	"strings"

	"github.com/spf13/cobra"

	"github.com/scrapeflux/scrapeflux/discovery"
)

func newCmdCheck(g *globalOptions) *cobra.Command {
	check := &cobra.Command{
		Use:   "check",
		Short: "Check configuration",
	}
	var cf consulFlags
	cfg := &cobra.Command{
		Use:   "config FILE",
		Short: "Validate a --config file and print what is wrong, with line numbers",
		Long: `check config reads FILE as run --config would (strict YAML: unknown fields
are errors), validates every job, and prints each problem with the file,
line and field. It exits 1 when the file is not valid. Secret files it names
must be readable.`,
		Example: "  scrapeflux check config /etc/scrapeflux/scrapeflux.yml",
		Args:    cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			consul := discovery.DefaultConsulConfig()
			if err := cf.apply(&consul); err != nil {
				return err
			}
			specs, err := loadConfig(args[0], consul, nil)
			if err != nil {
				return fmt.Errorf("%s is not valid:\n%w", args[0], err)
			}
			fmt.Fprintf(g.stdout, "%s: OK, %d jobs\n", args[0], len(specs))
			for _, s := range specs {
				var kinds []string
				for _, c := range s.Sources {
					if st, ok := c.(*discovery.StaticConfig); ok {
						kinds = append(kinds, fmt.Sprintf("%d static targets", len(*st)))
						continue
					}
					kinds = append(kinds, c.Name())
				}
				src := strings.Join(kinds, ", ")
				fmt.Fprintf(g.stdout, "  %s: every %s (timeout %s), %s\n", s.Name, s.Scrape.Interval, s.Scrape.Timeout, src)
			}
			return nil
		},
	}
	cf.register(cfg.Flags())
	check.AddCommand(cfg)
	return check
}
