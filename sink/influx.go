package sink

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net/http"
	"os"
	"strings"
	"sync"
	"time"
	"unsafe"

	influxdb2 "github.com/influxdata/influxdb-client-go/v2"
	"github.com/influxdata/influxdb-client-go/v2/api"
	ihttp "github.com/influxdata/influxdb-client-go/v2/api/http"
)

// InfluxConfig says where and how to write.
type InfluxConfig struct {
	URL, Org, Bucket string
	// Token is an InfluxDB 2.x token, or "user:password" for 1.x with
	// authentication; empty for 1.x without.
	Token string
	Gzip  bool
	// Timeout of one write request.
	Timeout time.Duration
	// CAFile verifies InfluxDB's certificate; InsecureSkipVerify skips
	// verification (explicitly, for tests and emergencies).
	CAFile             string
	InsecureSkipVerify bool
}

// Validate rejects a config that cannot work, naming the field.
func (c *InfluxConfig) Validate() error {
	var errs []error
	if c.URL == "" {
		errs = append(errs, errors.New("influx URL must be set"))
	} else if !strings.HasPrefix(c.URL, "http://") && !strings.HasPrefix(c.URL, "https://") {
		errs = append(errs, fmt.Errorf("influx URL %q must start with http:// or https://", c.URL))
	}
	if c.Bucket == "" {
		errs = append(errs, errors.New("influx bucket must be set (for InfluxDB 1.x: database or database/retention-policy)"))
	}
	if c.Timeout <= 0 {
		errs = append(errs, fmt.Errorf("influx timeout must be positive, got %s", c.Timeout))
	}
	return errors.Join(errs...)
}

// InfluxWriter writes batches with influxdb-client-go's blocking write API
// at millisecond precision. The client's own retries are off: the sink
// classifies answers and retries itself.
type InfluxWriter struct {
	cfg  InfluxConfig
	opts *influxdb2.Options

	mu     sync.RWMutex // guards client and api, swapped when the token changes
	client influxdb2.Client
	api    api.WriteAPIBlocking
}

// NewInfluxWriter makes a writer for cfg.
func NewInfluxWriter(cfg InfluxConfig) (*InfluxWriter, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	tc := &tls.Config{MinVersion: tls.VersionTLS12, InsecureSkipVerify: cfg.InsecureSkipVerify}
	if cfg.CAFile != "" {
		pem, err := os.ReadFile(cfg.CAFile)
		if err != nil {
			return nil, fmt.Errorf("cannot read influx CA file: %w", err)
		}
		tc.RootCAs = x509.NewCertPool()
		if !tc.RootCAs.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("influx CA file %s holds no PEM certificate", cfg.CAFile)
		}
	}
	hc := &http.Client{
		Timeout: cfg.Timeout,
		Transport: &http.Transport{
			Proxy:               http.ProxyFromEnvironment,
			TLSClientConfig:     tc,
			MaxIdleConnsPerHost: 4,
			IdleConnTimeout:     90 * time.Second,
		},
	}
	opts := influxdb2.DefaultOptions().
		SetPrecision(time.Millisecond).
		SetUseGZip(cfg.Gzip).
		SetMaxRetries(0).
		SetHTTPClient(hc).
		SetApplicationName("scrapeflux")
	w := &InfluxWriter{cfg: cfg, opts: opts}
	w.connect(cfg.Token)
	return w, nil
}

func (w *InfluxWriter) connect(token string) {
	c := influxdb2.NewClientWithOptions(strings.TrimRight(w.cfg.URL, "/"), token, w.opts)
	w.client, w.api = c, c.WriteAPIBlocking(w.cfg.Org, w.cfg.Bucket)
	w.cfg.Token = token
}

// SetToken makes later writes use token (a configuration reload re-reads
// the token file). A write in flight finishes with the old one.
func (w *InfluxWriter) SetToken(token string) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if token == w.cfg.Token {
		return
	}
	old := w.client
	w.connect(token)
	old.Close()
}

// Write sends body, a run of lines ending in a newline. The client reads
// the body only during the call, so it is passed without a copy.
func (w *InfluxWriter) Write(ctx context.Context, body []byte) error {
	if len(body) == 0 {
		return nil
	}
	w.mu.RLock()
	defer w.mu.RUnlock()
	err := w.api.WriteRecord(ctx, unsafe.String(&body[0], len(body)))
	if err == nil {
		return nil
	}
	var he *ihttp.Error
	if errors.As(err, &he) && he.StatusCode != 0 {
		msg := he.Message
		if msg == "" {
			msg = he.Error()
		}
		return &WriteError{
			StatusCode: he.StatusCode,
			Message:    msg,
			RetryAfter: parseRetryAfter(he.Header.Get("Retry-After"), time.Now()),
		}
	}
	return err
}

// Close releases the client's connections.
func (w *InfluxWriter) Close() {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.client.Close()
}
