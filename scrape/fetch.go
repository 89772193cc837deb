package scrape

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"

	"github.com/klauspost/compress/gzip"
)

// ErrBodyTooLarge is returned when a body exceeds the limit after
// decompression.
var ErrBodyTooLarge = errors.New("body exceeds the size limit")

// fetcher gets one target's body. One per loop; it reuses its request,
// read buffer and gzip reader across scrapes.
type fetcher struct {
	client *http.Client
	req    *http.Request
	limit  int64
	buf    bytes.Buffer
	gz     *gzip.Reader
}

func newFetcher(client *http.Client, url string, cfg Config) (*fetcher, error) {
	req, err := http.NewRequest(http.MethodGet, url, nil)
	if err != nil {
		return nil, fmt.Errorf("cannot build request for %s: %w", url, err)
	}
	req.Header.Set("Accept", acceptHeader)
	req.Header.Set("Accept-Encoding", "gzip")
	req.Header.Set("User-Agent", "scrapeflux")
	switch {
	case cfg.BearerToken != "":
		req.Header.Set("Authorization", "Bearer "+cfg.BearerToken)
	case cfg.BasicAuthUser != "":
		req.SetBasicAuth(cfg.BasicAuthUser, cfg.BasicAuthPassword)
	}
	return &fetcher{client: client, req: req, limit: cfg.BodyLimit}, nil
}

// fetch returns the decompressed body (valid until the next fetch) and its
// content type.
func (f *fetcher) fetch(ctx context.Context, timeoutHeader string) ([]byte, string, error) {
	f.req.Header.Set("X-Prometheus-Scrape-Timeout-Seconds", timeoutHeader)
	resp, err := f.client.Do(f.req.WithContext(ctx))
	if err != nil {
		return nil, "", err
	}
	defer func() {
		// Drain a little so the connection can be reused.
		_, _ = io.CopyN(io.Discard, resp.Body, 4096)
		resp.Body.Close()
	}()
	if resp.StatusCode != http.StatusOK {
		return nil, "", fmt.Errorf("server returned HTTP status %s", resp.Status)
	}
	var r io.Reader = resp.Body
	if resp.Header.Get("Content-Encoding") == "gzip" {
		if f.gz == nil {
			f.gz, err = gzip.NewReader(resp.Body)
		} else {
			err = f.gz.Reset(resp.Body)
		}
		if err != nil {
			return nil, "", fmt.Errorf("cannot read gzip body: %w", err)
		}
		r = f.gz
	}
	f.buf.Reset()
	n, err := f.buf.ReadFrom(io.LimitReader(r, f.limit+1))
	if err != nil {
		return nil, "", fmt.Errorf("cannot read body: %w", err)
	}
	if n > f.limit {
		return nil, "", fmt.Errorf("%w of %d bytes", ErrBodyTooLarge, f.limit)
	}
	// Give back a buffer that grew far beyond what this target sends, so
	// one huge scrape does not pin its memory for good.
	if f.buf.Cap() > 4*int(n)+64<<10 {
		body := bytes.Clone(f.buf.Bytes())
		f.buf = bytes.Buffer{}
		return body, resp.Header.Get("Content-Type"), nil
	}
	return f.buf.Bytes(), resp.Header.Get("Content-Type"), nil
}
