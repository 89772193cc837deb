package sink

import (
	"bytes"
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"time"

	influxdb2 "github.com/influxdata/influxdb-client-go/v2"
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
	// API is the write API to speak; APIAuto asks the server's /ping.
	API API
}

// API is an InfluxDB write API: where writes go and how answers read.
type API int

const (
	// APIAuto: read /ping's version headers at the first write and after
	// the server was unreachable.
	APIAuto API = iota
	// APIv1: InfluxDB 1.x; /api/v2/write from 1.8 on (/write before),
	// text errors, "partial write: ... dropped=N".
	APIv1
	// APIv2: InfluxDB 2.x OSS and Cloud: /api/v2/write, JSON code and
	// message, a parse error refuses the whole request and names one line.
	APIv2
	// APIv3: InfluxDB 3 Core and Enterprise: /api/v3/write_lp with
	// accept_partial, JSON errors naming every refused line by number.
	APIv3
)

var apiNames = [...]string{"auto", "v1", "v2", "v3"}

func (a API) String() string { return apiNames[a] }

// ParseAPI reads auto, v1, v2 or v3.
func ParseAPI(s string) (API, error) {
	for i, n := range apiNames {
		if strings.EqualFold(s, n) {
			return API(i), nil
		}
	}
	return 0, fmt.Errorf("unknown InfluxDB API %q: use auto, v1, v2 or v3", s)
}

// ServerInfo is what /ping said of the server.
type ServerInfo struct {
	// Version and Build as the server names them ("1.8.10"/"OSS",
	// "v2.7.12"/"OSS", "3.11.0"/"Core"); empty when it did not say.
	Version, Build string
	// API is the write API used with it.
	API API
}

// redactedURL is u with any password replaced, for messages; a URL that
// does not parse is cut at its last '@'.
func redactedURL(u string) string {
	if p, err := url.Parse(u); err == nil {
		return p.Redacted()
	}
	if i := strings.LastIndex(u, "@"); i >= 0 {
		return "xxxxx" + u[i:]
	}
	return u
}

// RedactURL is u fit for a log line or a page: its password replaced.
func RedactURL(u string) string { return redactedURL(u) }

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
	} else if u, err := url.Parse(c.URL); err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		errs = append(errs, fmt.Errorf("influx URL %q must be http:// or https:// and a host", redactedURL(c.URL)))
	} else if u.User != nil {
		errs = append(errs, fmt.Errorf("influx URL %q carries credentials, which would reach logs and process listings: put user:password (1.x) or the token in --influx-token-file and leave them out of the URL", u.Redacted()))
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

	mu     sync.RWMutex // guards client, swapped when the token changes
	client influxdb2.Client

	smu      sync.Mutex // guards the fields below
	server   ServerInfo
	known    bool   // server was read (or API set by configuration)
	writeURL string // the write endpoint of server.API

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
	if _, err := url.Parse(cfg.URL); err != nil {
		return nil, fmt.Errorf("cannot build the write URL from %q: %w", cfg.URL, err)
	}
	w.connect(cfg.Token)
	api := cfg.API
	if api == APIAuto {
		api = APIv2 // until /ping says otherwise: 1.8+, 2.x and 3.x all serve it
	}
	w.setServer(ServerInfo{API: api}, cfg.API != APIAuto)
	return w, nil
}

func (w *InfluxWriter) connect(token string) {
	w.client = influxdb2.NewClientWithOptions(strings.TrimRight(w.cfg.URL, "/"), token, w.opts)
	w.cfg.Token = token
}

// setServer picks the write endpoint for si.API.
func (w *InfluxWriter) setServer(si ServerInfo, known bool) {
	base := strings.TrimRight(w.cfg.URL, "/")
	var u string
	switch {
	case si.API == APIv3:
		u = base + "/api/v3/write_lp?" + url.Values{"db": {w.cfg.database()}, "precision": {"millisecond"}, "accept_partial": {"true"}}.Encode()
	case si.API == APIv1 && olderThan18(si.Version):
		db, rp, _ := strings.Cut(w.cfg.Bucket, "/")
		u = base + "/write?" + url.Values{"db": {db}, "rp": {rp}, "precision": {"ms"}}.Encode()
	default:
		u = base + "/api/v2/write?" + url.Values{"org": {w.cfg.Org}, "bucket": {w.cfg.Bucket}, "precision": {"ms"}}.Encode()
	}
	w.smu.Lock()
	w.server, w.known, w.writeURL = si, known, u
	w.smu.Unlock()
}

// olderThan18 reports whether a 1.x version predates /api/v2/write.
func olderThan18(v string) bool {
	var major, minor int
	if _, err := fmt.Sscanf(strings.TrimPrefix(v, "v"), "%d.%d", &major, &minor); err != nil {
		return false
	}
	return major == 1 && minor < 8
}

// Server returns what is known of the server.
func (w *InfluxWriter) Server() ServerInfo {
	w.smu.Lock()
	defer w.smu.Unlock()
	return w.server
}

// Detect reads the server's /ping (with the credentials: InfluxDB 3 asks
// for them) and, with APIAuto, picks the write API from its version
// headers: 1.x X-Influxdb-Version "1.8.10", 2.x "v2.7.12" (Cloud sends
// none, and build "Cloud"), 3.x "3.11.0" with build "Core" or
// "Enterprise".
func (w *InfluxWriter) Detect(ctx context.Context) (ServerInfo, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, strings.TrimRight(w.cfg.URL, "/")+"/ping", nil)
	if err != nil {
		return ServerInfo{}, err
	}
	w.mu.RLock()
	resp, err := w.client.HTTPService().DoHTTPRequestWithResponse(req, nil)
	w.mu.RUnlock()
	if err != nil {
		return w.Server(), fmt.Errorf("cannot read InfluxDB's /ping: %w", err)
	}
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10))
	resp.Body.Close()
	si := ServerInfo{Version: resp.Header.Get("X-Influxdb-Version"), Build: resp.Header.Get("X-Influxdb-Build")}
	si.API = apiOf(si)
	if w.cfg.API != APIAuto {
		si.API = w.cfg.API
	} else if si.API == APIAuto {
		si.API = w.Server().API
	}
	w.setServer(si, true)
	if (resp.StatusCode == http.StatusUnauthorized || resp.StatusCode == http.StatusForbidden) && si.Version == "" {
		return si, fmt.Errorf("InfluxDB's /ping answered %d: the token is refused (InfluxDB 3 asks for it on /ping too); check --influx-token-file; writing with the %s API until then (--influx-api chooses)", resp.StatusCode, si.API)
	}
	if resp.StatusCode >= 300 && si.Version == "" {
		return si, fmt.Errorf("InfluxDB's /ping answered %d without a version; writing with the %s API (set --influx-api to choose)", resp.StatusCode, si.API)
	}
	return si, nil
}

// apiOf maps /ping's headers to an API; APIAuto when they do not tell.
func apiOf(si ServerInfo) API {
	v := strings.TrimPrefix(si.Version, "v")
	switch {
	case strings.HasPrefix(v, "1."):
		return APIv1
	case strings.HasPrefix(v, "2."):
		return APIv2
	case strings.HasPrefix(v, "3."):
		return APIv3
	case strings.EqualFold(si.Build, "Cloud"):
		return APIv2
	case strings.EqualFold(si.Build, "OSS"):
		// 2.x releases always carry their version; a 1.x built from source
		// says "unknown".
		return APIv1
	case strings.EqualFold(si.Build, "Core"), strings.EqualFold(si.Build, "Enterprise"):
		return APIv3
	}
	return APIAuto
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
// the configuration says so.
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
		return w.post(ctx, w.zbuf.Bytes(), true)
	}
	return w.post(ctx, body, false)
}

// WriteCompressed sends body, gzip'd lines (one gzip member or several
// concatenated: InfluxDB reads them as one stream).
func (w *InfluxWriter) WriteCompressed(ctx context.Context, body []byte) error {
	if len(body) == 0 {
		return nil
	}
	return w.post(ctx, body, true)
}

// maxAnswer caps the error body read: a 3.x answer lists every refused
// line, each cut to a few hundred bytes by the server.
const maxAnswer = 4 << 20

// post sends a body through the client's HTTP service (its credentials,
// TLS and user agent) and reads the answer itself: the client's own error
// parsing keeps only 2.x's code and message and loses 3.x's list of
// refused lines.
func (w *InfluxWriter) post(ctx context.Context, body []byte, gz bool) error {
	w.smu.Lock()
	known, wurl, api := w.known, w.writeURL, w.server.API
	w.smu.Unlock()
	if !known {
		dctx, cancel := context.WithTimeout(ctx, min(w.cfg.Timeout, 5*time.Second))
		si, err := w.Detect(dctx)
		cancel()
		if err == nil || si.Version != "" {
			w.smu.Lock()
			wurl, api = w.writeURL, w.server.API
			w.smu.Unlock()
		}
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, wurl, bytes.NewReader(body))
	if err != nil {
		return err
	}
	req.Header.Set("Content-Type", "text/plain; charset=utf-8")
	if gz {
		req.Header.Set("Content-Encoding", "gzip")
	}
	w.mu.RLock()
	token := w.cfg.Token
	resp, err := w.client.HTTPService().DoHTTPRequestWithResponse(req, func(r *http.Request) {
		if api == APIv3 && token != "" && !strings.Contains(token, ":") {
			r.Header.Set("Authorization", "Bearer "+token)
		}
	})
	w.mu.RUnlock()
	if err != nil {
		if w.cfg.API == APIAuto {
			// Unreachable: the server may come back as another version.
			w.smu.Lock()
			w.known = false
			w.smu.Unlock()
		}
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode >= 200 && resp.StatusCode < 300 {
		_, _ = io.Copy(io.Discard, resp.Body)
		return nil
	}
	answer, _ := io.ReadAll(io.LimitReader(resp.Body, maxAnswer))
	_, _ = io.Copy(io.Discard, resp.Body)
	return parseAnswer(resp.StatusCode, resp.Header, answer, time.Now())
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

// ListSchema asks InfluxDB 3 for the tables and columns of the database
// (information_schema.columns, through /api/v3/query_sql): what the
// schema guard starts from. A token that may only write is refused
// (401/403): the guard then learns from writes.
func (w *InfluxWriter) ListSchema(ctx context.Context) (map[string][]string, error) {
	q := url.Values{"db": {w.cfg.database()}, "format": {"json"},
		"q": {"SELECT table_name, column_name FROM information_schema.columns WHERE table_schema = 'iox'"}}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, strings.TrimRight(w.cfg.URL, "/")+"/api/v3/query_sql?"+q.Encode(), nil)
	if err != nil {
		return nil, err
	}
	w.mu.RLock()
	token := w.cfg.Token
	w.mu.RUnlock()
	if token != "" && !strings.Contains(token, ":") {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	resp, err := w.opts.HTTPClient().Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, 64<<20))
	if err != nil {
		return nil, err
	}
	if resp.StatusCode == http.StatusNotFound && bytes.Contains(body, []byte("not found")) {
		return map[string][]string{}, nil // no database yet: nothing in it
	}
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("InfluxDB answered %d: %s", resp.StatusCode, cut(string(bytes.TrimSpace(body)), 200))
	}
	var rows []struct {
		Table  string `json:"table_name"`
		Column string `json:"column_name"`
	}
	if err := json.Unmarshal(body, &rows); err != nil {
		return nil, fmt.Errorf("cannot read the listing: %w", err)
	}
	out := map[string][]string{}
	for _, r := range rows {
		if r.Table != "" && r.Column != "" {
			out[r.Table] = append(out[r.Table], r.Column)
		}
	}
	return out, nil
}

// Database is the database CreateDatabase makes.
func (w *InfluxWriter) Database() string { return w.cfg.database() }

// Close releases the client's connections.
func (w *InfluxWriter) Close() {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.client.Close()
}
