package sink

import (
	"bytes"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"time"
	"unsafe"

	influxdb2 "github.com/influxdata/influxdb-client-go/v2"
	"github.com/influxdata/influxdb-client-go/v2/api"
	ihttp "github.com/influxdata/influxdb-client-go/v2/api/http"
	"github.com/klauspost/compress/gzip"
	promconfig "github.com/prometheus/common/config"
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
	// CertFile and KeyFile are a client certificate for InfluxDB (or a
	// proxy in front of it) that verifies clients; read again for every
	// new connection, so a renewed certificate is used without a restart.
	CertFile, KeyFile string
}

// database is the 1.x database named by the bucket (database or
// database/retention-policy).
func (c *InfluxConfig) database() string {
	db, _, _ := strings.Cut(c.Bucket, "/")
	return db
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
	if (c.CertFile == "") != (c.KeyFile == "") {
		errs = append(errs, errors.New("influx cert file and key file go together"))
	} else if c.CertFile != "" {
		if _, err := tls.LoadX509KeyPair(c.CertFile, c.KeyFile); err != nil {
			errs = append(errs, fmt.Errorf("influx client certificate: %w", err))
		}
	}
	return errors.Join(errs...)
}

// InfluxWriter writes batches with influxdb-client-go's blocking write API
// at millisecond precision. The client's own retries are off: the sink
// classifies answers and retries itself.
type InfluxWriter struct {
	cfg  InfluxConfig
	opts *influxdb2.Options

	mu       sync.RWMutex // guards client and api, swapped when the token changes
	client   influxdb2.Client
	api      api.WriteAPIBlocking
	writeURL string // the write endpoint, for compressed writes

	zmu  sync.Mutex // guards the compressor and its buffer
	zw   *gzip.Writer
	zbuf bytes.Buffer
}

// NewInfluxWriter makes a writer for cfg.
func NewInfluxWriter(cfg InfluxConfig) (*InfluxWriter, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	// Prometheus's own loader: the CA checked at start, the client
	// certificate read again for every new connection.
	tc, err := promconfig.NewTLSConfig(&promconfig.TLSConfig{
		CAFile: cfg.CAFile, CertFile: cfg.CertFile, KeyFile: cfg.KeyFile,
		InsecureSkipVerify: cfg.InsecureSkipVerify, MinVersion: promconfig.TLSVersion(tls.VersionTLS12),
	})
	if err != nil {
		return nil, fmt.Errorf("influx TLS: %w", err)
	}
	hc := &http.Client{
		Timeout: cfg.Timeout,
		Transport: &http.Transport{
			Proxy:               http.ProxyFromEnvironment,
			TLSClientConfig:     tc,
			MaxIdleConnsPerHost: 4,
			IdleConnTimeout:     90 * time.Second,
			// A write body goes to the socket through this buffer: with
			// the default 4 KiB a batch took one system call per 4 KiB.
			// There are a few connections at most, so a large one is cheap.
			WriteBufferSize: 256 << 10,
		},
	}
	opts := influxdb2.DefaultOptions().
		SetPrecision(time.Millisecond).
		SetUseGZip(false). // compressed here, faster and without a goroutine per write
		SetMaxRetries(0).
		SetHTTPClient(hc).
		SetApplicationName("scrapeflux")
	w := &InfluxWriter{cfg: cfg, opts: opts}
	w.connect(cfg.Token)
	// The write endpoint as the client builds it for its own writes.
	u, err := url.Parse(w.client.HTTPService().ServerAPIURL())
	if err == nil {
		u, err = u.Parse("write")
	}
	if err != nil {
		w.client.Close()
		return nil, fmt.Errorf("cannot build the write URL from %q: %w", cfg.URL, err)
	}
	u.RawQuery = url.Values{"org": {cfg.Org}, "bucket": {cfg.Bucket}, "precision": {"ms"}}.Encode()
	w.writeURL = u.String()
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

// Compresses reports whether writes are gzip'd (InfluxConfig.Gzip).
func (w *InfluxWriter) Compresses() bool { return w.cfg.Gzip }

// Write sends body, a run of lines ending in a newline, compressed when
// the configuration says so. The client reads the body only during the
// call, so it is passed without a copy.
func (w *InfluxWriter) Write(ctx context.Context, body []byte) error {
	if len(body) == 0 {
		return nil
	}
	if w.cfg.Gzip {
		w.zmu.Lock()
		defer w.zmu.Unlock()
		w.zbuf.Reset()
		if w.zw == nil {
			w.zw, _ = gzip.NewWriterLevel(&w.zbuf, gzip.BestSpeed)
		} else {
			w.zw.Reset(&w.zbuf)
		}
		// Writes to a bytes.Buffer do not fail.
		_, _ = w.zw.Write(body)
		_ = w.zw.Close()
		return w.WriteCompressed(ctx, w.zbuf.Bytes())
	}
	w.mu.RLock()
	defer w.mu.RUnlock()
	return writeError(w.api.WriteRecord(ctx, unsafe.String(&body[0], len(body))))
}

// WriteCompressed sends body, gzip'd lines (one gzip member or several
// concatenated: InfluxDB reads them as one stream), through the client's
// HTTP service, which adds the credentials and reads error answers as for
// any write.
func (w *InfluxWriter) WriteCompressed(ctx context.Context, body []byte) error {
	if len(body) == 0 {
		return nil
	}
	w.mu.RLock()
	defer w.mu.RUnlock()
	hs := w.client.HTTPService()
	herr := hs.DoPostRequest(ctx, w.writeURL, bytes.NewReader(body),
		func(req *http.Request) { req.Header.Set("Content-Encoding", "gzip") },
		func(resp *http.Response) error {
			_, _ = io.Copy(io.Discard, resp.Body)
			return resp.Body.Close()
		})
	if herr == nil { // a typed nil otherwise
		return nil
	}
	return writeError(herr)
}

// writeError turns the client's error into a *WriteError for an answer
// from the server.
func writeError(err error) error {
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

// CreateDatabase creates the bucket's database, for InfluxDB 1.x, which
// answers 404 "database not found" to writes into a missing one (as
// Telegraf does unless skip_database_creation is set). InfluxDB 2.x has
// no such statement; its buckets are made by an operator.
func (w *InfluxWriter) CreateDatabase(ctx context.Context) error {
	w.mu.RLock()
	token := w.cfg.Token
	w.mu.RUnlock()
	u := strings.TrimRight(w.cfg.URL, "/") + "/query"
	form := url.Values{"q": {"CREATE DATABASE " + strconv.Quote(w.cfg.database())}}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, u, strings.NewReader(form.Encode()))
	if err != nil {
		return err
	}
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	if token != "" {
		req.Header.Set("Authorization", "Token "+token)
	}
	resp, err := w.opts.HTTPClient().Do(req)
	if err != nil {
		return fmt.Errorf("cannot create database %q: %w", w.cfg.database(), err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(io.LimitReader(resp.Body, 4096))
	if resp.StatusCode != http.StatusOK || bytes.Contains(body, []byte(`"error"`)) {
		return fmt.Errorf("cannot create database %q: InfluxDB answered %d: %s", w.cfg.database(), resp.StatusCode, bytes.TrimSpace(body))
	}
	return nil
}

// Database is the database CreateDatabase makes.
func (w *InfluxWriter) Database() string { return w.cfg.database() }

// Close releases the client's connections.
func (w *InfluxWriter) Close() {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.client.Close()
}
