package testbed

import (
	"bufio"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"math/big"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"
)

// The hosts Packer's plugin getters reach for a plugin whose source is
// github.com/<owner>/<name>: releases.hashicorp.com first (official plugins
// only; any error there makes Packer try the next getter), then the GitHub
// API for the tags and github.com for the assets, which redirects to the
// asset host.
const (
	hashicorpReleasesHost = "releases.hashicorp.com"
	githubAPIHost         = "api.github.com"
	githubHost            = "github.com"
	githubAssetsHost      = "release-assets.githubusercontent.com"
)

// ReleaseHost stands in for GitHub's release hosts (and answers 404 for
// releases.hashicorp.com, as it does for a plugin HashiCorp does not ship):
// an HTTPS proxy on loopback that accepts CONNECT only to those hosts and
// answers itself with certificates of a CA made at start. Nothing leaves the
// machine: CONNECT to any other host is refused (and recorded).
type ReleaseHost struct {
	// Repo is the GitHub repository, "owner/packer-plugin-name".
	Repo string
	// Releases are the release assets by tag ("v0.1.0") and file name.
	Releases map[string]map[string][]byte

	caFile string
	certs  map[string]*tls.Certificate
	ln     net.Listener
	srv    *http.Server
	inner  *http.Server
	conns  chan net.Conn
	done   chan struct{}

	mu    sync.Mutex
	calls []ReleaseCall
}

// ReleaseCall is one request the stand-in saw.
type ReleaseCall struct {
	Method, Host, Path string
	Status             int
}

func (c ReleaseCall) String() string {
	if c.Method == http.MethodConnect {
		return fmt.Sprintf("CONNECT %s -> %d", c.Host, c.Status)
	}
	return fmt.Sprintf("%s https://%s%s -> %d", c.Method, c.Host, c.Path, c.Status)
}

// StartReleaseHost serves releases of repo ("owner/packer-plugin-name") from
// dir, where it writes the CA certificate too.
func StartReleaseHost(dir, repo string, releases map[string]map[string][]byte) (*ReleaseHost, error) {
	h := &ReleaseHost{Repo: repo, Releases: releases, conns: make(chan net.Conn), done: make(chan struct{})}
	if err := h.makeCerts(dir); err != nil {
		return nil, err
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	h.ln = ln
	h.inner = &http.Server{Handler: http.HandlerFunc(h.serveRelease), ReadHeaderTimeout: 10 * time.Second}
	h.srv = &http.Server{Handler: http.HandlerFunc(h.serveProxy), ReadHeaderTimeout: 10 * time.Second}
	go func() { _ = h.inner.Serve(&chanListener{conns: h.conns, done: h.done, addr: ln.Addr()}) }()
	go func() { _ = h.srv.Serve(ln) }()
	return h, nil
}

// Env routes HTTPS through the stand-in and makes Go programs trust its CA
// (SSL_CERT_FILE replaces the system's roots: nothing else is trusted).
func (h *ReleaseHost) Env() []string {
	return []string{
		"HTTPS_PROXY=http://" + h.ln.Addr().String(),
		"SSL_CERT_FILE=" + h.caFile,
	}
}

// CAFile is the PEM file of the CA the stand-in's certificates chain to.
func (h *ReleaseHost) CAFile() string { return h.caFile }

// ProxyURL is the proxy's URL.
func (h *ReleaseHost) ProxyURL() string { return "http://" + h.ln.Addr().String() }

// Calls are the requests seen so far, in order.
func (h *ReleaseHost) Calls() []ReleaseCall {
	h.mu.Lock()
	defer h.mu.Unlock()
	return append([]ReleaseCall(nil), h.calls...)
}

// Close stops the stand-in.
func (h *ReleaseHost) Close() error {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	close(h.done)
	return errors.Join(h.srv.Shutdown(ctx), h.inner.Shutdown(ctx))
}

func (h *ReleaseHost) record(r *http.Request, status int) {
	h.mu.Lock()
	defer h.mu.Unlock()
	call := ReleaseCall{Method: r.Method, Host: hostOnly(r.Host), Path: r.URL.RequestURI(), Status: status}
	if r.Method == http.MethodConnect {
		call.Host, call.Path = r.Host, ""
	}
	h.calls = append(h.calls, call)
}

// serveProxy accepts CONNECT to the stand-in's hosts and hands the tunnel,
// TLS-terminated with the host's certificate, to the inner server.
func (h *ReleaseHost) serveProxy(w http.ResponseWriter, r *http.Request) {
	host := hostOnly(r.Host)
	cert, ok := h.certs[host]
	if r.Method != http.MethodConnect || !ok || !strings.HasSuffix(r.Host, ":443") {
		h.record(r, http.StatusForbidden)
		http.Error(w, "the release stand-in only tunnels to "+strings.Join(releaseHosts(), ", "), http.StatusForbidden)
		return
	}
	hj, ok := w.(http.Hijacker)
	if !ok {
		http.Error(w, "no hijacking", http.StatusInternalServerError)
		return
	}
	conn, buf, err := hj.Hijack()
	if err != nil {
		return
	}
	if _, err := conn.Write([]byte("HTTP/1.1 200 Connection established\r\n\r\n")); err != nil {
		conn.Close()
		return
	}
	raw := net.Conn(conn)
	if buf.Reader.Buffered() > 0 {
		raw = &bufferedConn{Conn: conn, r: buf.Reader}
	}
	tlsConn := tls.Server(raw, &tls.Config{Certificates: []tls.Certificate{*cert}, MinVersion: tls.VersionTLS12, NextProtos: []string{"http/1.1"}})
	select {
	case h.conns <- tlsConn:
	case <-h.done:
		conn.Close()
	}
}

// serveRelease answers as the hosts do: the GitHub API's matching-refs for
// the tags, github.com's release download as a redirect to the asset host,
// the asset host's bytes, releases.hashicorp.com's 404.
func (h *ReleaseHost) serveRelease(w http.ResponseWriter, r *http.Request) {
	status := h.answer(w, r)
	h.record(r, status)
}

func (h *ReleaseHost) answer(w http.ResponseWriter, r *http.Request) int {
	host := hostOnly(r.Host)
	if r.Method != http.MethodGet {
		http.Error(w, "method not allowed", http.StatusMethodNotAllowed)
		return http.StatusMethodNotAllowed
	}
	switch host {
	case githubAPIHost:
		if r.URL.Path != "/repos/"+h.Repo+"/git/matching-refs/tags" {
			break
		}
		type ref struct {
			Ref string `json:"ref"`
			URL string `json:"url"`
		}
		refs := []ref{}
		for tag := range h.Releases {
			refs = append(refs, ref{Ref: "refs/tags/" + tag, URL: "https://api.github.com/repos/" + h.Repo + "/git/refs/tags/" + tag})
		}
		w.Header().Set("Content-Type", "application/json; charset=utf-8")
		_ = json.NewEncoder(w).Encode(refs)
		return http.StatusOK
	case githubHost:
		if tag, file, ok := h.download(r.URL.Path, "/"+h.Repo+"/releases/download/"); ok {
			if _, ok := h.Releases[tag][file]; ok {
				http.Redirect(w, r, "https://"+githubAssetsHost+"/"+h.Repo+"/"+tag+"/"+file, http.StatusFound)
				return http.StatusFound
			}
		}
	case githubAssetsHost:
		if tag, file, ok := h.download(r.URL.Path, "/"+h.Repo+"/"); ok {
			if data, ok := h.Releases[tag][file]; ok {
				w.Header().Set("Content-Type", "application/octet-stream")
				_, _ = w.Write(data)
				return http.StatusOK
			}
		}
	}
	http.NotFound(w, r)
	return http.StatusNotFound
}

func (h *ReleaseHost) download(path, prefix string) (tag, file string, ok bool) {
	rest, ok := strings.CutPrefix(path, prefix)
	if !ok {
		return "", "", false
	}
	tag, file, ok = strings.Cut(rest, "/")
	return tag, file, ok && file != "" && !strings.Contains(file, "/")
}

// makeCerts makes the CA (written to dir/release-ca.pem) and one
// certificate per host.
func (h *ReleaseHost) makeCerts(dir string) error {
	caKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return err
	}
	now := time.Now()
	caTmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(1),
		Subject:               pkix.Name{CommonName: "nixos-sd test bed release CA"},
		NotBefore:             now.Add(-time.Hour),
		NotAfter:              now.Add(24 * time.Hour),
		IsCA:                  true,
		BasicConstraintsValid: true,
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageDigitalSignature,
	}
	caDER, err := x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, &caKey.PublicKey, caKey)
	if err != nil {
		return err
	}
	ca, err := x509.ParseCertificate(caDER)
	if err != nil {
		return err
	}
	h.caFile = filepath.Join(dir, "release-ca.pem")
	if err := os.WriteFile(h.caFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: caDER}), 0o644); err != nil {
		return err
	}
	h.certs = map[string]*tls.Certificate{}
	for i, host := range releaseHosts() {
		key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		if err != nil {
			return err
		}
		tmpl := &x509.Certificate{
			SerialNumber: big.NewInt(int64(i + 2)),
			Subject:      pkix.Name{CommonName: host},
			DNSNames:     []string{host},
			NotBefore:    now.Add(-time.Hour),
			NotAfter:     now.Add(24 * time.Hour),
			KeyUsage:     x509.KeyUsageDigitalSignature,
			ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		}
		der, err := x509.CreateCertificate(rand.Reader, tmpl, ca, &key.PublicKey, caKey)
		if err != nil {
			return err
		}
		h.certs[host] = &tls.Certificate{Certificate: [][]byte{der, caDER}, PrivateKey: key}
	}
	return nil
}

func releaseHosts() []string {
	return []string{hashicorpReleasesHost, githubAPIHost, githubHost, githubAssetsHost}
}

func hostOnly(hostport string) string {
	if h, _, err := net.SplitHostPort(hostport); err == nil {
		return h
	}
	return hostport
}

// chanListener hands the proxy's TLS tunnels to an http.Server.
type chanListener struct {
	conns chan net.Conn
	done  chan struct{}
	addr  net.Addr
}

func (l *chanListener) Accept() (net.Conn, error) {
	select {
	case c := <-l.conns:
		return c, nil
	case <-l.done:
		return nil, net.ErrClosed
	}
}

func (l *chanListener) Close() error   { return nil }
func (l *chanListener) Addr() net.Addr { return l.addr }

// bufferedConn reads what the proxy's reader already buffered first.
type bufferedConn struct {
	net.Conn
	r *bufio.Reader
}

func (c *bufferedConn) Read(p []byte) (int, error) { return c.r.Read(p) }
