package discovery

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"time"

	promconfig "github.com/prometheus/common/config"
)

// dockerAPI reads a Docker engine's API over its unix socket, plain HTTP
// or TLS.
type dockerAPI struct {
	base   string // URL the API paths are appended to
	client *http.Client
}

func newDockerAPI(host string, tlsCfg promconfig.TLSConfig) (*dockerAPI, error) {
	u, err := url.Parse(host)
	if err != nil || host == "" {
		return nil, fmt.Errorf("host %q: want unix:///var/run/docker.sock, http://host:2375 or https://host:2376", host)
	}
	tr := &http.Transport{MaxIdleConnsPerHost: 1, IdleConnTimeout: 90 * time.Second}
	a := &dockerAPI{}
	switch u.Scheme {
	case "unix":
		path := u.Path
		tr.DialContext = func(ctx context.Context, _, _ string) (net.Conn, error) {
			return (&net.Dialer{}).DialContext(ctx, "unix", path)
		}
		a.base = "http://docker"
	case "tcp", "http":
		a.base = "http://" + u.Host
	case "https":
		a.base = "https://" + u.Host
	default:
		return nil, fmt.Errorf("host %q: scheme must be unix, tcp, http or https", host)
	}
	if tlsCfg != (promconfig.TLSConfig{}) {
		if u.Scheme != "https" {
			return nil, fmt.Errorf("host %q: tls_config needs an https:// host", host)
		}
		tc, err := promconfig.NewTLSConfig(&tlsCfg)
		if err != nil {
			return nil, fmt.Errorf("tls_config: %w", err)
		}
		tr.TLSClientConfig = tc
	}
	a.client = &http.Client{Transport: tr, Timeout: 30 * time.Second}
	return a, nil
}

// get decodes the answer to GET path (with the filters query parameter
// when not empty) into v.
func (a *dockerAPI) get(ctx context.Context, path, filters string, v any) error {
	u := a.base + path
	if filters != "" {
		u += "?filters=" + url.QueryEscape(filters)
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
	if err != nil {
		return err
	}
	resp, err := a.client.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, 64<<20))
	if err != nil {
		return fmt.Errorf("cannot read GET %s: %w", path, err)
	}
	if resp.StatusCode != http.StatusOK {
		// Docker answers {"message": "..."}; a worker says "This node is
		// not a swarm manager".
		var m struct {
			Message string `json:"message"`
		}
		_ = json.Unmarshal(body, &m)
		return fmt.Errorf("GET %s answered %s: %s", path, resp.Status, m.Message)
	}
	if err := json.Unmarshal(body, v); err != nil {
		return fmt.Errorf("GET %s: unexpected answer: %w", path, err)
	}
	return nil
}

// DockerEngine is what a Docker engine says of itself (GET /info).
type DockerEngine struct {
	// Name is the engine's host name.
	Name string
	// NodeAddr is the address the node advertises to its swarm: where
	// the other nodes (and a scraper on any of them) reach it. Empty when
	// the engine is in no swarm.
	NodeAddr string
	NodeID   string
}

// ReadDockerEngine asks the engine at host (unix:///var/run/docker.sock,
// http://host:2375) who it is.
func ReadDockerEngine(ctx context.Context, host string) (DockerEngine, error) {
	a, err := newDockerAPI(host, promconfig.TLSConfig{})
	if err != nil {
		return DockerEngine{}, err
	}
	var info struct {
		Name  string
		Swarm struct{ NodeID, NodeAddr string }
	}
	if err := a.get(ctx, "/info", "", &info); err != nil {
		return DockerEngine{}, fmt.Errorf("cannot ask the Docker engine at %s who it is: %w", redactedURL(host), err)
	}
	return DockerEngine{Name: info.Name, NodeAddr: info.Swarm.NodeAddr, NodeID: info.Swarm.NodeID}, nil
}
