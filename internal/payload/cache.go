package payload

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"path"
	"strings"
	"sync"

	"github.com/nixos-sd/packer-plugin-nixos-sd/internal/nixcache"
	"github.com/nixos-sd/packer-plugin-nixos-sd/internal/remotecmd"
)

// Phases of Run that use the binary cache (the `cache` block).
const (
	PhaseCachePull = "cache pull"
	PhaseCachePush = "cache push"
)

// CacheReport is what the build took from and gave to the binary cache.
type CacheReport struct {
	// URL is the cache (s3://bucket/prefix); SigningKey the name of the key
	// pushes are signed with; TrustedKeys the names of the keys pulls accept.
	URL         string
	SigningKey  string
	TrustedKeys []string
	// Pulled and Pushed are what the build substituted and uploaded.
	Pulled nixcache.PullStats
	Pushed nixcache.PushStats
	// Warnings say why the cache was (partly) not used.
	Warnings []string
}

// cacheRun is the cache's part of one Run: the pull's server and its SSH
// connection, and what the build said about its derivation.
type cacheRun struct {
	report CacheReport
	pull   *nixcache.Pull
	conn   *sshConn
	// built collects the build's standard output, whose `nix build --json`
	// line names the derivation the push starts from.
	mu    sync.Mutex
	built bytes.Buffer
}

func (c *cacheRun) Write(p []byte) (int, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.built.Len() < 1<<20 {
		c.built.Write(p)
	}
	return len(p), nil
}

// target is the derivation (else the output) of the build's `--json` line.
func (c *cacheRun) target() string {
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, line := range strings.Split(c.built.String(), "\n") {
		line = strings.TrimSpace(line)
		if !strings.HasPrefix(line, "[") {
			continue
		}
		var built []struct {
			DrvPath string         `json:"drvPath"`
			Outputs map[string]any `json:"outputs"`
		}
		if json.Unmarshal([]byte(line), &built) != nil || len(built) == 0 {
			continue
		}
		if built[0].DrvPath != "" {
			return built[0].DrvPath
		}
		for _, o := range built[0].Outputs {
			if s, ok := o.(string); ok {
				return s
			}
		}
	}
	return ""
}

func (r *run) cacheWarn(msg string) {
	r.cache.mu.Lock()
	r.cache.report.Warnings = append(r.cache.report.Warnings, msg)
	r.cache.mu.Unlock()
	r.ui.Say("Warning: " + msg)
}

// startCache sets the cache up before the build: the pull's server on a
// port the instance reaches through an SSH remote forward, its settings
// added to the build's. A cache that cannot be used is a warning; the build
// goes on without it.
func (r *run) startCache(ctx context.Context) {
	cc := r.cfg.Cache
	if cc == nil {
		return
	}
	r.cache = &cacheRun{report: CacheReport{URL: cc.URL(), SigningKey: cc.SigningKeyName(), TrustedKeys: cc.KeyNames()}}
	if cc.PushEnabled() {
		r.cfg.extraArgs = append(r.cfg.extraArgs, "--json")
	}
	if !cc.PullEnabled() {
		return
	}
	defer r.timer.track(PhaseCachePull)()
	if r.opts.SSH == nil {
		r.cacheWarn("cache: pulling needs an SSH connection of the plugin's own to the host (not available behind a bastion or with another communicator); the build runs without the cache")
		return
	}
	r.cache.conn = &sshConn{target: r.opts.SSH, pin: &hostKeyPin{}}
	cl, _, err := r.cache.conn.connect(ctx)
	if err != nil {
		r.cacheWarn(fmt.Sprintf("cache: could not open the SSH connection the cache is served on: %v; the build runs without the cache", err))
		return
	}
	ln, err := cl.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		r.cacheWarn(fmt.Sprintf("cache: the host refused a forwarded port (sshd's AllowTcpForwarding): %v; the build runs without the cache", err))
		return
	}
	p, err := nixcache.StartPull(ctx, cc, r.opts.AWS, ln, r.cacheWarn)
	if err != nil {
		ln.Close()
		r.cacheWarn(fmt.Sprintf("cache: %v; the build runs without the cache", err))
		return
	}
	r.cache.pull = p
	for _, o := range p.NixOptions() {
		r.cfg.extraArgs = append(r.cfg.extraArgs, "--option", o[0], o[1])
	}
	r.ui.Say(fmt.Sprintf("cache: the build substitutes from %s (trusting %s), served on the host at %s", cc.URL(), strings.Join(cc.KeyNames(), ", "), strings.Split(p.URL(), "/")[2]))
}

// stopPull ends the pull's server after the build and counts what it served.
func (r *run) stopPull() {
	if r.cache == nil {
		return
	}
	if r.cache.pull != nil {
		r.cache.pull.Close()
		r.cache.report.Pulled = r.cache.pull.Stats()
		st := r.cache.report.Pulled
		r.ui.Say(fmt.Sprintf("cache: %d store paths (%s) came from %s; %d refused", st.Paths, humanBytes(st.Bytes), r.cache.report.URL, len(st.Refused)))
		r.cache.pull = nil
	}
	if r.cache.conn != nil {
		r.cache.conn.close()
		r.cache.conn = nil
	}
}

// pushCache uploads what the build made on the host. Every failure is a
// warning: the image is the build's result.
func (r *run) pushCache(ctx context.Context) {
	cc := r.cfg.Cache
	if r.cache == nil || !cc.PushEnabled() {
		return
	}
	defer r.timer.track(PhaseCachePush)()
	target := r.cache.target()
	if target == "" {
		target = r.resultPath(ctx)
	}
	if target == "" {
		r.cacheWarn("cache: the build did not say which derivation it built; nothing was pushed")
		return
	}
	p := &nixcache.Pusher{Cfg: cc, AWS: r.opts.AWS, Comm: r.comm, Dir: r.cfg.RemoteDirectory, Say: r.ui.Say, Warn: r.cacheWarn}
	st, err := p.Push(ctx, target)
	r.cache.report.Pushed = st
	if err != nil {
		r.cacheWarn(fmt.Sprintf("cache: pushing to %s failed: %v; the image is not affected", cc.URL(), err))
		return
	}
	r.ui.Say(fmt.Sprintf("cache: pushed %d store paths (%s) to %s; %d were there already, %d failed", st.Paths, humanBytes(st.Bytes), cc.URL(), st.Present, st.Failed))
}

// cacheManifest is the manifest's "cache" object: where the cache is and
// the names of the keys, never a key.
func (r *run) cacheManifest() map[string]any {
	if r.cache == nil {
		return nil
	}
	rep := r.cache.report
	return map[string]any{
		"url":          rep.URL,
		"signing_key":  rep.SigningKey,
		"trusted_keys": rep.TrustedKeys,
		"pulled_paths": rep.Pulled.Paths,
		"pulled_bytes": rep.Pulled.Bytes,
		"refused":      len(rep.Pulled.Refused),
		"pushed_paths": rep.Pushed.Paths,
		"pushed_bytes": rep.Pushed.Bytes,
		"warnings":     append([]string{}, rep.Warnings...),
	}
}

// resultPath is the store path the build's out link points at, or "".
func (r *run) resultPath(ctx context.Context) string {
	out, err := remotecmd.Output(ctx, r.comm, "readlink -f "+remotecmd.Quote(path.Join(r.cfg.RemoteDirectory, remoteResult)))
	if err != nil {
		return ""
	}
	return strings.TrimSpace(out)
}
