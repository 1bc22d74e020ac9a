package nixcache

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	"net/http"
	"regexp"
	"strings"
	"sync"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
)

// cacheInfo is the nix-cache-info the pull serves: after cache.nixos.org
// (priority 40), so that only what it lacks is asked for here.
const cacheInfo = "StoreDir: /nix/store\nWantMassQuery: 1\nPriority: 50\n"

var narinfoPath = regexp.MustCompile(`^([0-9a-df-np-sv-z]{32})\.narinfo$`)

// Pull answers the Nix binary cache protocol for the instance's Nix on a
// listener the SSH connection forwards from the instance: nix-cache-info
// itself, narinfos read from S3 whose signature verifies with a trusted key,
// and NARs as redirects to presigned S3 URLs, so that their bytes go from S3
// to the instance directly.
type Pull struct {
	cfg   *Config
	b     *bucket
	ln    net.Listener
	srv   *http.Server
	token string
	warn  func(string)

	mu      sync.Mutex
	served  map[string]int64 // NAR URL -> compressed size, of verified narinfos
	paths   int
	bytes   int64
	refused []string
	failed  bool
}

// PullStats is what the build took from the cache.
type PullStats struct {
	// Paths and Bytes count the NARs the instance was sent to fetch.
	Paths int
	Bytes int64
	// Refused are the store paths whose narinfo did not verify, with why.
	Refused []string
}

// CheckBucket reads the cache's nix-cache-info (a missing one is an empty
// cache): it fails when the bucket cannot be read with these credentials.
func CheckBucket(ctx context.Context, cfg *Config, base *aws.Config) error {
	b, err := openBucket(ctx, cfg, base)
	if err != nil {
		return err
	}
	return b.check(ctx)
}

func (b *bucket) check(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	if _, err := b.get(ctx, "nix-cache-info"); err != nil && !errors.Is(err, errNotFound) {
		return fmt.Errorf("the cache's bucket %s cannot be read: %w; check cache.s3_bucket, cache.region, cache.endpoint and the credentials' S3 permissions (docs/iam-policy-cache.json)", b.cfg.URL(), err)
	}
	return nil
}

// StartPull checks that the bucket can be read and serves the cache on ln
// (which it closes on Close). warn reports what the build should know: a
// refused path, a failed read.
func StartPull(ctx context.Context, cfg *Config, base *aws.Config, ln net.Listener, warn func(string)) (*Pull, error) {
	b, err := openBucket(ctx, cfg, base)
	if err != nil {
		return nil, err
	}
	if err := b.check(ctx); err != nil {
		return nil, err
	}
	tok := make([]byte, 16)
	if _, err := rand.Read(tok); err != nil {
		return nil, err
	}
	p := &Pull{cfg: cfg, b: b, ln: ln, token: hex.EncodeToString(tok), warn: warn, served: map[string]int64{}}
	p.srv = &http.Server{Handler: p, ReadHeaderTimeout: time.Minute, BaseContext: func(net.Listener) context.Context { return context.WithoutCancel(ctx) }}
	go p.srv.Serve(ln)
	return p, nil
}

// URL is the substituter's URL on the instance: the forwarded port and a
// random path, so that other users of the instance cannot guess it.
func (p *Pull) URL() string {
	return "http://" + p.ln.Addr().String() + "/" + p.token
}

// NixOptions are the settings that make the build use the cache: as an
// extra substituter, its keys trusted for this build only, and building
// what it cannot fetch after all (fallback).
func (p *Pull) NixOptions() [][2]string {
	keys := make([]string, len(p.cfg.trusted))
	for i, k := range p.cfg.trusted {
		keys[i] = k.String()
	}
	return [][2]string{
		{"extra-substituters", p.URL()},
		{"extra-trusted-public-keys", strings.Join(keys, " ")},
		{"fallback", "true"},
	}
}

// Close stops serving.
func (p *Pull) Close() {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	p.srv.Shutdown(ctx)
	p.ln.Close()
}

// Stats is what was served so far.
func (p *Pull) Stats() PullStats {
	p.mu.Lock()
	defer p.mu.Unlock()
	return PullStats{Paths: p.paths, Bytes: p.bytes, Refused: append([]string(nil), p.refused...)}
}

func (p *Pull) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	rest, ok := strings.CutPrefix(r.URL.Path, "/"+p.token+"/")
	if !ok || (r.Method != http.MethodGet && r.Method != http.MethodHead) {
		http.NotFound(w, r)
		return
	}
	switch {
	case rest == "nix-cache-info":
		w.Header().Set("Content-Type", "text/x-nix-cache-info")
		fmt.Fprint(w, cacheInfo)
	case narinfoPath.MatchString(rest):
		p.narinfo(w, r, narinfoPath.FindStringSubmatch(rest)[1])
	case strings.HasPrefix(rest, "nar/") && !strings.Contains(rest[4:], "/"):
		p.nar(w, r, rest)
	default:
		http.NotFound(w, r)
	}
}

func (p *Pull) narinfo(w http.ResponseWriter, r *http.Request, hash string) {
	data, err := p.b.get(r.Context(), hash+".narinfo")
	if err != nil {
		if !errors.Is(err, errNotFound) {
			p.readFailed(err)
		}
		http.NotFound(w, r)
		return
	}
	ni, err := ParseNarInfo(string(data))
	if err == nil && hashPart(ni.StorePath) != hash {
		err = fmt.Errorf("it describes %s", ni.StorePath)
	}
	if err == nil {
		_, err = ni.Verify(p.cfg.trusted)
	}
	if err != nil {
		what := hash
		if ni != nil {
			what = ni.StorePath
		}
		p.mu.Lock()
		p.refused = append(p.refused, what+": "+err.Error())
		p.mu.Unlock()
		p.warn(fmt.Sprintf("cache: refusing %s from %s: %v; the build makes it itself. Check cache.signing_key_file and cache.trusted_public_keys", what, p.cfg.URL(), err))
		http.NotFound(w, r)
		return
	}
	p.mu.Lock()
	p.served[ni.URL] = ni.FileSize
	p.mu.Unlock()
	w.Header().Set("Content-Type", "text/x-nix-narinfo")
	w.Write(data)
}

func (p *Pull) nar(w http.ResponseWriter, r *http.Request, name string) {
	p.mu.Lock()
	size, ok := p.served[name]
	p.mu.Unlock()
	if !ok {
		// Only the NARs of narinfos that verified.
		http.NotFound(w, r)
		return
	}
	u, err := p.b.getURL(r.Context(), name)
	if err != nil {
		p.readFailed(err)
		http.Error(w, "presigning failed", http.StatusInternalServerError)
		return
	}
	if r.Method == http.MethodGet {
		p.mu.Lock()
		p.paths++
		p.bytes += size
		p.mu.Unlock()
	}
	http.Redirect(w, r, u, http.StatusFound)
}

// readFailed warns once that S3 could not be read.
func (p *Pull) readFailed(err error) {
	p.mu.Lock()
	first := !p.failed
	p.failed = true
	p.mu.Unlock()
	if first {
		p.warn(fmt.Sprintf("cache: reading %s failed: %v; the build makes what it cannot fetch", p.cfg.URL(), err))
	}
}
