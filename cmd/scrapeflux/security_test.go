package main

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/big"
	"net"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"golang.org/x/crypto/bcrypt"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/scrapeflux/scrapeflux/internal/servertest"
	"github.com/scrapeflux/scrapeflux/scrape"
	"github.com/scrapeflux/scrapeflux/scrape/simulator"
)

// testCA issues certificates for loopback servers and clients.
type testCA struct {
	t    *testing.T
	dir  string
	cert *x509.Certificate
	key  *ecdsa.PrivateKey
	pool *x509.CertPool
	file string // CA certificate, PEM
}

func newTestCA(t *testing.T) *testCA {
	t.Helper()
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "scrapeflux test CA"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	cert, _ := x509.ParseCertificate(der)
	ca := &testCA{t: t, dir: t.TempDir(), cert: cert, key: key, pool: x509.NewCertPool()}
	ca.pool.AddCert(cert)
	ca.file = filepath.Join(ca.dir, "ca.pem")
	os.WriteFile(ca.file, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o600)
	return ca
}

// issue writes a certificate and key for name (server: 127.0.0.1) and
// returns their files.
func (ca *testCA) issue(name string, server bool) (certFile, keyFile string) {
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(time.Now().UnixNano()), Subject: pkix.Name{CommonName: name},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
	}
	if server {
		tmpl.ExtKeyUsage = []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}
		tmpl.IPAddresses = []net.IP{net.ParseIP("127.0.0.1")}
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.cert, &key.PublicKey, ca.key)
	if err != nil {
		ca.t.Fatal(err)
	}
	kder, _ := x509.MarshalECPrivateKey(key)
	certFile, keyFile = filepath.Join(ca.dir, name+".pem"), filepath.Join(ca.dir, name+"-key.pem")
	os.WriteFile(certFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o600)
	os.WriteFile(keyFile, pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: kder}), 0o600)
	return certFile, keyFile
}

func (ca *testCA) client(certFile, keyFile string) *http.Client {
	tc := &tls.Config{RootCAs: ca.pool}
	if certFile != "" {
		c, err := tls.LoadX509KeyPair(certFile, keyFile)
		if err != nil {
			ca.t.Fatal(err)
		}
		tc.Certificates = []tls.Certificate{c}
	}
	return &http.Client{Transport: &http.Transport{TLSClientConfig: tc}, Timeout: 5 * time.Second}
}

func get(t *testing.T, c *http.Client, u, user, pass string) (int, string) {
	t.Helper()
	req, _ := http.NewRequest(http.MethodGet, u, nil)
	if user != "" {
		req.SetBasicAuth(user, pass)
	}
	resp, err := c.Do(req)
	if err != nil {
		return 0, err.Error()
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

// TestSecuredListenerAndSecrets runs scrapeflux with every secret in use
// (basic auth on an HTTPS listener, a bearer token towards the target, a
// Consul ACL token, an InfluxDB password) and mutual TLS to InfluxDB
// through a proxy that verifies client certificates. It checks who gets
// in, that the health probe works with credentials, and that no secret
// shows in the logs, /targets or /metrics.
func TestSecuredListenerAndSecrets(t *testing.T) {
	ca := newTestCA(t)
	dir := t.TempDir()
	const (
		webPassword = "web-pass-9f3a"
		bearerToken = "bearer-7c1e-token"
		influxPass  = "influx-pass-55d2"
	)
	agent := servertest.StartConsul(t, servertest.ConsulOptions{ACL: true})
	srv := servertest.StartInfluxDBWithAuth(t, "admin", influxPass)
	srv.CreateDB(t, "sec")

	// InfluxDB behind a TLS proxy that requires a client certificate
	// issued by the test CA.
	proxyCert, proxyKey := ca.issue("influx-proxy", true)
	pc, _ := tls.LoadX509KeyPair(proxyCert, proxyKey)
	upstream, _ := url.Parse(srv.URL)
	proxy := httptest.NewUnstartedServer(httputil.NewSingleHostReverseProxy(upstream))
	proxy.TLS = &tls.Config{Certificates: []tls.Certificate{pc}, ClientCAs: ca.pool, ClientAuth: tls.RequireAndVerifyClientCert}
	proxy.StartTLS()
	defer proxy.Close()
	clientCert, clientKey := ca.issue("scrapeflux-client", false)

	// A target that wants the bearer token.
	fleet, err := simulator.StartFleet(1, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer fleet.Close()
	engine := fleet.Targets[0]
	target := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Header.Get("Authorization") != "Bearer "+bearerToken {
			http.Error(w, "unauthorized", http.StatusUnauthorized)
			return
		}
		engine.ServeHTTP(w, r)
	}))
	defer target.Close()

	webCert, webKey := ca.issue("scrapeflux-web", true)
	hash, _ := bcrypt.GenerateFromPassword([]byte(webPassword), bcrypt.MinCost)
	webConfig := filepath.Join(dir, "web.yml")
	os.WriteFile(webConfig, []byte(fmt.Sprintf("tls_server_config:\n  cert_file: %s\n  key_file: %s\nbasic_auth_users:\n  operator: %s\n", webCert, webKey, hash)), 0o600)
	files := map[string]string{"bearer": bearerToken, "influx": "admin:" + influxPass, "consul": agent.Token, "webpass": webPassword}
	for name, v := range files {
		os.WriteFile(filepath.Join(dir, name), []byte(v+"\n"), 0o600)
	}
	listen := fmt.Sprintf("127.0.0.1:%d", servertest.FreePort(t))
	d := startDaemon(t, "run", "--target", target.URL+"/metrics", "--bearer-token-file", filepath.Join(dir, "bearer"),
		"--consul", "--consul-addr", agent.Addr, "--consul-token-file", filepath.Join(dir, "consul"), "--consul-wait", "2s",
		"--interval", "300ms", "--flush-interval", "50ms",
		"--influx-url", proxy.URL, "--influx-bucket", "sec", "--influx-token-file", filepath.Join(dir, "influx"),
		"--influx-ca-file", ca.file, "--influx-cert-file", clientCert, "--influx-key-file", clientKey,
		"--web-config", webConfig, "--web-enable-reload", "--pprof", "--listen", listen, "--queue-dir", t.TempDir())

	servertest.WaitFor(t, "points through mutual TLS", 15*time.Second, func() bool { return srv.Count(t, "sec", "up", "gauge") >= 2 })

	base := "https://" + listen
	c := ca.client("", "")
	for _, path := range []string{"/healthz", "/metrics", "/targets", "/debug/pprof/"} {
		if code, _ := get(t, c, base+path, "", ""); code != http.StatusUnauthorized {
			t.Errorf("%s without credentials: %d, want 401", path, code)
		}
		if code, _ := get(t, c, base+path, "operator", "wrong"); code != http.StatusUnauthorized {
			t.Errorf("%s with a wrong password: %d, want 401", path, code)
		}
		if code, _ := get(t, c, base+path, "operator", webPassword); code != http.StatusOK {
			t.Errorf("%s with the right password: %d, want 200", path, code)
		}
	}
	if code, _ := get(t, &http.Client{Timeout: 5 * time.Second}, "http://"+listen+"/metrics", "operator", webPassword); code == http.StatusOK {
		t.Error("plain HTTP answered on a TLS listener")
	}
	_, targets := get(t, c, base+"/targets?format=json", "operator", webPassword)
	_, metrics := get(t, c, base+"/metrics", "operator", webPassword)
	if !strings.Contains(targets, `"health":"up"`) {
		t.Errorf("the bearer-protected target is not up: %s", targets)
	}

	// The web config is read again on every request: a user added to it
	// gets in without a restart.
	hash2, _ := bcrypt.GenerateFromPassword([]byte("second-pass"), bcrypt.MinCost)
	os.WriteFile(webConfig, []byte(fmt.Sprintf("tls_server_config:\n  cert_file: %s\n  key_file: %s\nbasic_auth_users:\n  operator: %s\n  second: %s\n", webCert, webKey, hash, hash2)), 0o600)
	if code, _ := get(t, c, base+"/metrics", "second", "second-pass"); code != http.StatusOK {
		t.Errorf("a user added to --web-config: %d, want 200 without a restart", code)
	}

	// The container health probe, with credentials.
	if _, _, err := execute(context.Background(), "health", "--url", base+"/healthz", "--ca-file", ca.file,
		"--basic-auth-user", "operator", "--basic-auth-password-file", filepath.Join(dir, "webpass")); err != nil {
		t.Errorf("health with credentials: %v", err)
	}
	if _, _, err := execute(context.Background(), "health", "--url", base+"/healthz", "--ca-file", ca.file); err == nil {
		t.Error("health without credentials passed")
	}
	d.stop(t)
	for name, secret := range map[string]string{"web password": webPassword, "bearer token": bearerToken, "InfluxDB password": influxPass, "Consul token": agent.Token} {
		for where, text := range map[string]string{"logs": d.stderr, "/targets": targets, "/metrics": metrics} {
			if strings.Contains(text, secret) {
				t.Errorf("%s shows in %s", name, where)
			}
		}
	}
}

// TestReloadRefusedOffLoopbackWithoutAuth: reload and profiles on an
// address others can reach need authentication; the start fails and says
// why and what to do.
func TestReloadRefusedOffLoopbackWithoutAuth(t *testing.T) {
	for _, flag := range []string{"--web-enable-reload", "--pprof"} {
		_, _, err := execute(context.Background(), "run", "--target", "http://127.0.0.1:1/metrics", "--influx-bucket", "b",
			flag, "--listen", "0.0.0.0:0", "--queue-dir", t.TempDir())
		if err == nil || !strings.Contains(err.Error(), "not a loopback address, without authentication") ||
			!strings.Contains(err.Error(), "basic_auth_users") {
			t.Errorf("%s on 0.0.0.0: %v", flag, err)
		}
	}
	// Without the flag the HTTP reload is off.
	listen := fmt.Sprintf("127.0.0.1:%d", servertest.FreePort(t))
	d := startDaemon(t, "run", "--target", "http://127.0.0.1:1/metrics", "--influx-bucket", "b", "--influx-url", "http://127.0.0.1:1",
		"--listen", listen, "--queue-dir", t.TempDir(), "--shutdown-timeout", "100ms")
	servertest.WaitFor(t, "listener up", 10*time.Second, func() bool { code, _ := httpGet(t, "http://"+listen+"/healthz"); return code == 200 })
	resp, err := http.Post("http://"+listen+"/-/reload", "", nil)
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusForbidden || !strings.Contains(string(body), "--web-enable-reload") {
		t.Errorf("reload without the flag: %d %s", resp.StatusCode, body)
	}
	if code, _ := httpGet(t, "http://"+listen+"/debug/pprof/"); code == http.StatusOK {
		t.Error("profiles served without --pprof")
	}
	d.stop(t)
}

// TestClientCertificateAuth: a listener that requires client certificates
// lets in a client with one from its CA and nobody else.
func TestClientCertificateAuth(t *testing.T) {
	ca := newTestCA(t)
	webCert, webKey := ca.issue("web", true)
	clientCert, clientKey := ca.issue("operator", false)
	webConfig := filepath.Join(t.TempDir(), "web.yml")
	os.WriteFile(webConfig, []byte(fmt.Sprintf("tls_server_config:\n  cert_file: %s\n  key_file: %s\n  client_ca_file: %s\n  client_auth_type: RequireAndVerifyClientCert\n", webCert, webKey, ca.file)), 0o600)
	listen := fmt.Sprintf("127.0.0.1:%d", servertest.FreePort(t))
	d := startDaemon(t, "run", "--target", "http://127.0.0.1:1/metrics", "--influx-bucket", "b", "--influx-url", "http://127.0.0.1:1",
		"--web-config", webConfig, "--listen", listen, "--queue-dir", t.TempDir(), "--shutdown-timeout", "100ms")
	defer d.stop(t)
	with := ca.client(clientCert, clientKey)
	servertest.WaitFor(t, "listener up", 10*time.Second, func() bool { code, _ := get(t, with, "https://"+listen+"/healthz", "", ""); return code == 200 })
	if code, body := get(t, ca.client("", ""), "https://"+listen+"/metrics", "", ""); code == http.StatusOK {
		t.Errorf("a client without a certificate got in: %d %.100s", code, body)
	}
	other := newTestCA(t)
	oc, ok := other.issue("intruder", false)
	if code, _ := get(t, ca.client(oc, ok), "https://"+listen+"/metrics", "", ""); code == http.StatusOK {
		t.Error("a certificate from another CA got in")
	}
}

// A listener reachable from other hosts without authentication is said
// at start, with what to do; on loopback nothing is said.
func TestOpenListenerWarned(t *testing.T) {
	for _, host := range []string{"0.0.0.0", "127.0.0.1"} {
		listen := fmt.Sprintf("%s:%d", host, servertest.FreePort(t))
		d := startDaemon(t, "run", "--target", "http://127.0.0.1:1/metrics", "--influx-bucket", "b", "--influx-url", "http://127.0.0.1:1",
			"--listen", listen, "--queue-dir", t.TempDir(), "--shutdown-timeout", "100ms")
		servertest.WaitFor(t, "listener up", 10*time.Second, func() bool {
			code, _ := httpGet(t, "http://127.0.0.1"+listen[strings.LastIndex(listen, ":"):]+"/healthz")
			return code == 200
		})
		d.stop(t)
		warned := strings.Contains(d.stderr, "reachable from other hosts without authentication")
		if warned != (host == "0.0.0.0") {
			t.Errorf("--listen %s: warned %t\n%s", listen, warned, d.stderr)
		}
	}
}

// /metrics answers while a reload runs: the reload's own lock is not the
// one its metrics are read under (a slow reload stalled /metrics before).
func TestMetricsDuringSlowReload(t *testing.T) {
	release := make(chan struct{})
	entered := make(chan struct{})
	r := &reloader{log: slog.New(slog.DiscardHandler), load: func() ([]scrape.JobSpec, error) {
		close(entered)
		<-release
		return nil, errors.New("bad config")
	}}
	r.ok()
	done := make(chan error, 1)
	go func() { done <- r.reload() }()
	<-entered
	got := make(chan int, 1)
	go func() {
		reg := prometheus.NewRegistry()
		reg.MustRegister(r.collectors()...)
		mfs, _ := reg.Gather()
		got <- len(mfs)
	}()
	select {
	case n := <-got:
		if n != 2 {
			t.Errorf("%d metric families, want 2", n)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("metrics waited on the reload")
	}
	close(release)
	if err := <-done; err == nil {
		t.Fatal("the bad reload succeeded")
	}
	if st := r.status(); st.OK || st.Err != "bad config" {
		t.Fatalf("status after a failed reload: %+v", st)
	}
}
