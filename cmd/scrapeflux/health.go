package main

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"time"

	promconfig "github.com/prometheus/common/config"
	"github.com/spf13/cobra"
)

// Defaults that follow where scrapeflux runs: a container or a systemd
// unit sets them through the environment.
const (
	envListen   = "SCRAPEFLUX_LISTEN"
	envQueueDir = "SCRAPEFLUX_QUEUE_DIR"
)

func defaultListen() string {
	if v := os.Getenv(envListen); v != "" {
		return v
	}
	return "127.0.0.1:9274"
}

// defaultQueueDir never depends on the working directory: the
// environment's choice, else systemd's StateDirectory=, else the user's
// cache directory.
func defaultQueueDir() string {
	if v := os.Getenv(envQueueDir); v != "" {
		return v
	}
	if v := os.Getenv("STATE_DIRECTORY"); v != "" {
		return filepath.Join(strings.Split(v, ":")[0], "queue")
	}
	if d, err := os.UserCacheDir(); err == nil {
		return filepath.Join(d, "scrapeflux", "queue")
	}
	return filepath.Join(os.TempDir(), "scrapeflux-queue")
}

type healthOptions struct {
	*globalOptions
	url      string
	timeout  time.Duration
	user     string
	passFile string
	caFile   string
	insecure bool
}

// newCmdHealth probes a running scrapeflux, for container health checks
// that have no shell or curl.
func newCmdHealth(g *globalOptions) *cobra.Command {
	o := &healthOptions{globalOptions: g}
	cmd := &cobra.Command{
		Use:   "health",
		Short: "Probe a running scrapeflux's /healthz (for container health checks)",
		Long: `health asks a running scrapeflux whether it is alive and exits 0 if it
answers 200, 1 otherwise. It needs no shell, so a scratch image's
HEALTHCHECK can run it. The default URL follows --listen's default
(env ` + envListen + `), with a wildcard address replaced by 127.0.0.1.`,
		Example: `  scrapeflux health
  scrapeflux health --url http://127.0.0.1:9274/readyz`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			return runHealth(cmd.Context(), o)
		},
	}
	cmd.Flags().StringVar(&o.url, "url", probeURL(defaultListen()), "URL to probe")
	cmd.Flags().DurationVar(&o.timeout, "timeout", 3*time.Second, "how long to wait for the answer")
	cmd.Flags().StringVar(&o.user, "basic-auth-user", "", "user, when --web-config asks for basic auth")
	cmd.Flags().StringVar(&o.passFile, "basic-auth-password-file", "", "file holding that user's password")
	cmd.Flags().StringVar(&o.caFile, "ca-file", "", "CA file to verify an https --url")
	cmd.Flags().BoolVar(&o.insecure, "insecure-skip-verify", false, "do not verify an https --url's certificate")
	return cmd
}

// probeURL turns a listen address into a URL this host can reach.
func probeURL(listen string) string {
	host, port, err := net.SplitHostPort(listen)
	if err != nil {
		return "http://127.0.0.1:9274/healthz"
	}
	if host == "" || host == "0.0.0.0" || host == "::" {
		host = "127.0.0.1"
	}
	return "http://" + net.JoinHostPort(host, port) + "/healthz"
}

func runHealth(ctx context.Context, o *healthOptions) error {
	if ctx == nil {
		ctx = context.Background()
	}
	ctx, cancel := context.WithTimeout(ctx, o.timeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, o.url, nil)
	if err != nil {
		return fmt.Errorf("--url %q: %w", o.url, err)
	}
	if o.user != "" {
		pass, err := readSecret(o.passFile, "")
		if err != nil {
			return fmt.Errorf("--basic-auth-password-file: %w", err)
		}
		req.SetBasicAuth(o.user, pass)
	}
	tc, err := promconfig.NewTLSConfig(&promconfig.TLSConfig{CAFile: o.caFile, InsecureSkipVerify: o.insecure})
	if err != nil {
		return fmt.Errorf("--ca-file: %w", err)
	}
	client := &http.Client{Transport: &http.Transport{TLSClientConfig: tc}}
	resp, err := client.Do(req)
	if err != nil {
		return fmt.Errorf("scrapeflux at %s is not answering: %w", o.url, err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(io.LimitReader(resp.Body, 1024))
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("scrapeflux at %s answered %d: %s", o.url, resp.StatusCode, strings.TrimSpace(string(body)))
	}
	fmt.Fprintf(o.stdout, "%s: %s\n", o.url, strings.TrimSpace(string(body)))
	return nil
}
