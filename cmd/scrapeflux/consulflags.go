package main

import (
	"fmt"
	"os"
	"strconv"
	"strings"

	"github.com/spf13/pflag"

	"github.com/scrapeflux/scrapeflux/discovery"
)

// consulFlags are the flags that reach a Consul agent, shared by run and
// register.
type consulFlags struct {
	addr       string
	datacenter string
	tokenFile  string
	caFile     string
	certFile   string
	keyFile    string
	ssl        bool
}

func (c *consulFlags) register(f *pflag.FlagSet) {
	addr := os.Getenv("CONSUL_HTTP_ADDR")
	if addr == "" {
		addr = "127.0.0.1:8500"
	}
	ssl, _ := strconv.ParseBool(os.Getenv("CONSUL_HTTP_SSL"))
	f.StringVar(&c.addr, "consul-addr", addr, "Consul HTTP address, host:port or URL (env CONSUL_HTTP_ADDR)")
	f.StringVar(&c.datacenter, "consul-datacenter", "", "Consul datacenter (default: the agent's)")
	f.StringVar(&c.tokenFile, "consul-token-file", "", "file holding the Consul ACL token (default: env CONSUL_HTTP_TOKEN)")
	f.StringVar(&c.caFile, "consul-ca-file", os.Getenv("CONSUL_CACERT"), "CA file to verify Consul's certificate")
	f.StringVar(&c.certFile, "consul-cert-file", os.Getenv("CONSUL_CLIENT_CERT"), "client certificate file for Consul")
	f.StringVar(&c.keyFile, "consul-key-file", os.Getenv("CONSUL_CLIENT_KEY"), "client key file for Consul")
	f.BoolVar(&c.ssl, "consul-ssl", ssl, "talk HTTPS to Consul (env CONSUL_HTTP_SSL)")
}

// apply copies the flags into cfg, reading the token.
func (c *consulFlags) apply(cfg *discovery.ConsulConfig) error {
	cfg.Addr = c.addr
	cfg.Datacenter = c.datacenter
	cfg.CAFile, cfg.CertFile, cfg.KeyFile = c.caFile, c.certFile, c.keyFile
	cfg.Scheme = "http"
	if c.ssl {
		cfg.Scheme = "https"
	}
	tok, err := readSecret(c.tokenFile, "CONSUL_HTTP_TOKEN")
	if err != nil {
		return fmt.Errorf("--consul-token-file: %w", err)
	}
	cfg.Token = tok
	return nil
}

// parseKV reads k=v pairs.
func parseKV(flag string, pairs []string) (map[string]string, error) {
	if len(pairs) == 0 {
		return nil, nil
	}
	out := map[string]string{}
	for _, p := range pairs {
		k, v, ok := strings.Cut(p, "=")
		if !ok || k == "" {
			return nil, fmt.Errorf("%s %q: want key=value", flag, p)
		}
		out[k] = v
	}
	return out, nil
}
