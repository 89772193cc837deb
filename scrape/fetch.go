package scrape

import (
	"bytes"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"sync"

	"github.com/klauspost/compress/gzip"
)

// ErrBodyTooLarge is returned when a body exceeds the limit after
// decompression.
var ErrBodyTooLarge = errors.New("body exceeds the size limit")

// Read buffers and gzip readers are pooled: only the scrapes running at
// one moment hold one, so idle targets hold no large buffers whatever
// their number.
var (
	bodyPool sync.Pool // *bytes.Buffer
	gzipPool sync.Pool // *gzip.Reader
)

// maxPooledBody: buffers that grew beyond this for one huge body are left
// to the garbage collector.
const maxPooledBody = 16 << 20

// fetcher gets one target's body. One per loop; it reuses its request
// across scrapes and remembers the size of the last body to size the
// next read buffer up front.
type fetcher struct {
	client *http.Client
	// direct, when set, carries the scrapes on the loop's own connection
	// (see directConn); nil: the shared client does.
	direct   *directConn
	req      *http.Request
	limit    int64
	lastSize int
	// lastZSize: the last compressed body's size, to size its read.
	lastZSize int
	zr        bytes.Reader  // over the compressed body, for the inflater
	buf       *bytes.Buffer // held from fetch to release
}

func newFetcher(client *http.Client, url string, cfg Config) (*fetcher, error) {
	req, err := http.NewRequest(http.MethodGet, url, nil)
	if err != nil {
		return nil, fmt.Errorf("cannot build request for %s: %w", url, err)
	}
	req.Header.Set("Accept", acceptHeader(cfg.ScrapeProtocols))
	req.Header.Set("Accept-Encoding", "gzip")
	req.Header.Set("User-Agent", "scrapeflux")
	switch {
	case cfg.BearerToken != "":
		req.Header.Set("Authorization", "Bearer "+cfg.BearerToken)
	case cfg.BasicAuthUser != "":
		req.SetBasicAuth(cfg.BasicAuthUser, cfg.BasicAuthPassword)
	}
	if u := req.URL.User; u != nil && req.Header.Get("Authorization") == "" {
		// Credentials in the URL, as the client would send them.
		pw, _ := u.Password()
		req.SetBasicAuth(u.Username(), pw)
	}
	return &fetcher{client: client, direct: newDirectConn(client, req), req: req, limit: cfg.BodyLimit}, nil
}

// newDirectConn returns the loop's own connection to the target of req, or
// nil when the shared client must carry its scrapes: a proxy applies, or
// the client's transport is not one whose dialer and TLS settings can be
// shared.
func newDirectConn(client *http.Client, req *http.Request) *directConn {
	tr, ok := client.Transport.(*http.Transport)
	if !ok || tr.DialContext == nil || tr.DialTLSContext != nil {
		return nil
	}
	if tr.Proxy != nil {
		if p, err := tr.Proxy(req); err != nil || p != nil {
			return nil
		}
	}
	host, port := req.URL.Hostname(), req.URL.Port()
	d := &directConn{dial: tr.DialContext}
	switch req.URL.Scheme {
	case "http":
		if port == "" {
			port = "80"
		}
	case "https":
		if port == "" {
			port = "443"
		}
		d.tls = &tls.Config{}
		if tr.TLSClientConfig != nil {
			d.tls = tr.TLSClientConfig.Clone()
		}
		if d.tls.ServerName == "" {
			d.tls.ServerName = host
		}
		// HTTP/1.1 only, as the shared transport speaks to targets.
		d.tls.NextProtos = nil
	default:
		return nil
	}
	d.addr = net.JoinHostPort(host, port)
	return d
}

// roundTrip sends the scrape's request. A target that answers the direct
// connection with a redirect is scraped through the client from then on:
// it follows redirects under the client's policy.
func (f *fetcher) roundTrip(ctx context.Context) (*http.Response, error) {
	if f.direct != nil {
		resp, err := f.direct.roundTrip(ctx, f.req)
		if err != nil {
			return nil, &url.Error{Op: "Get", URL: f.req.URL.Redacted(), Err: err}
		}
		switch resp.StatusCode {
		case http.StatusMovedPermanently, http.StatusFound, http.StatusSeeOther,
			http.StatusTemporaryRedirect, http.StatusPermanentRedirect:
			f.direct.close()
			f.direct = nil
		default:
			return resp, nil
		}
	}
	return f.client.Do(f.req.WithContext(ctx))
}

// finish lets go of a response. clean: its body was read to the end.
func (f *fetcher) finish(resp *http.Response, clean bool) {
	if f.direct != nil {
		f.direct.finish(resp, clean)
		return
	}
	if !clean {
		// Drain a little so the connection can be reused.
		_, _ = io.CopyN(io.Discard, resp.Body, 4096)
	}
	resp.Body.Close()
}

// close drops the target's connection, when the loop ends.
func (f *fetcher) close() {
	if f.direct != nil {
		f.direct.close()
	}
}

// fetch returns the decompressed body and its content type. The body is
// valid until release.
func (f *fetcher) fetch(ctx context.Context, timeoutHeader string) ([]byte, string, error) {
	f.req.Header.Set("X-Prometheus-Scrape-Timeout-Seconds", timeoutHeader)
	resp, err := f.roundTrip(ctx)
	if err != nil {
		return nil, "", err
	}
	clean := false
	defer func() { f.finish(resp, clean) }()
	if resp.StatusCode != http.StatusOK {
		return nil, "", &StatusError{Code: resp.StatusCode, Status: resp.Status}
	}
	var r io.Reader = resp.Body
	plain := true // the body is read straight from the response
	f.release()
	if resp.Header.Get("Content-Encoding") == "gzip" {
		plain = false
		// The compressed body is read whole first: the inflater is
		// fastest on bytes in memory, and large reads into a buffer
		// take fewer system calls than the inflater's small ones. Gzip
		// adds at most a few bytes per 64 KiB to data it cannot shrink.
		zbuf := getBody()
		defer func() {
			// Nothing may keep the buffer once it is back in the pool:
			// an idle target would hold its last body.
			f.zr.Reset(nil)
			putBody(zbuf)
		}()
		zbuf.Grow(f.lastZSize + bytes.MinRead + 1)
		zlimit := f.limit + f.limit>>8 + 1024
		n, err := zbuf.ReadFrom(io.LimitReader(resp.Body, zlimit+1))
		if err != nil {
			return nil, "", fmt.Errorf("cannot read body: %w", err)
		}
		if n > zlimit {
			return nil, "", fmt.Errorf("%w of %d bytes (compressed)", ErrBodyTooLarge, f.limit)
		}
		clean = true
		f.lastZSize = int(n)
		f.zr.Reset(zbuf.Bytes())
		gz, _ := gzipPool.Get().(*gzip.Reader)
		if gz == nil {
			gz, err = gzip.NewReader(&f.zr)
		} else {
			err = gz.Reset(&f.zr)
		}
		if err != nil {
			return nil, "", fmt.Errorf("cannot read gzip body: %w", err)
		}
		defer gzipPool.Put(gz)
		r = gz
	}
	f.buf = getBody()
	// Room for a body like the last one and the final read's margin.
	f.buf.Grow(int(min(int64(f.lastSize), f.limit)) + bytes.MinRead + 1)
	n, err := f.buf.ReadFrom(io.LimitReader(r, f.limit+1))
	if err != nil {
		return nil, "", fmt.Errorf("cannot read body: %w", err)
	}
	if n > f.limit {
		return nil, "", fmt.Errorf("%w of %d bytes", ErrBodyTooLarge, f.limit)
	}
	clean = clean || plain
	f.lastSize = int(n)
	return f.buf.Bytes(), resp.Header.Get("Content-Type"), nil
}

// release gives the read buffer back to the pool.
func (f *fetcher) release() {
	if f.buf != nil {
		putBody(f.buf)
		f.buf = nil
	}
}

func getBody() *bytes.Buffer {
	if b, ok := bodyPool.Get().(*bytes.Buffer); ok {
		return b
	}
	return &bytes.Buffer{}
}

func putBody(b *bytes.Buffer) {
	if b.Cap() <= maxPooledBody {
		b.Reset()
		bodyPool.Put(b)
	}
}
