package testbed

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"net"
	"net/http"
	"strings"
	"sync"
)

// ChannelServer stands in for the NixOS channel server as it answers: a
// channel's URL (channels.nixos.org/nixos-26.05) redirects (301) to the
// release it points at now (releases.nixos.org/nixos/26.05/nixos-26.05.
// 806273.650e572363c0, named after lib.version and the short revision); a
// channel's file (/nixos-26.05/git-revision, /nixexprs.tar.xz) redirects
// (302) to the release's; a release's git-revision holds the full revision;
// a channel it does not have is 404. Advance moves a channel to a new
// release, as a channel update does while a build runs. Both names are
// served here, on 127.0.0.1: releases under /releases/. The hosts never ask
// it (they have no route to it): the stand-in nix takes a release's
// nixexprs.tar.xz for the stand-in nixpkgs, and it serves no tarball.
type ChannelServer struct {
	srv *http.Server
	ln  net.Listener
	mu  sync.Mutex
	// gen is each channel's release, counting from 0.
	gen map[string]int
}

// testbedChannels are the channels the server has: every stable release
// since 24.11 (those past their end of life stay, as on the real server)
// and the rolling ones.
var testbedChannels = []string{
	"nixos-24.11", "nixos-25.05", "nixos-25.11", "nixos-26.05", "nixos-26.05-small",
	"nixos-unstable", "nixos-unstable-small", "nixpkgs-unstable",
}

func startChannelServer() (*ChannelServer, error) {
	ln, err := net.Listen("tcp4", "127.0.0.1:0")
	if err != nil {
		return nil, fmt.Errorf("testbed: channel server: %w", err)
	}
	c := &ChannelServer{ln: ln, gen: map[string]int{}}
	for _, ch := range testbedChannels {
		c.gen[ch] = 0
	}
	c.srv = &http.Server{Handler: http.HandlerFunc(c.serve)}
	go c.srv.Serve(ln)
	return c, nil
}

// URL is the server's base URL, the plugin's nixpkgs_channels_url.
func (c *ChannelServer) URL() string { return "http://" + c.ln.Addr().String() }

// Close stops the server.
func (c *ChannelServer) Close() error { return c.srv.Close() }

// Revision is the full revision channel points at now.
func (c *ChannelServer) Revision(channel string) string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return channelRevision(channel, c.gen[channel])
}

// ReleaseURL is the URL of the release channel points at now.
func (c *ChannelServer) ReleaseURL(channel string) string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.URL() + "/releases/" + releasePath(channel, c.gen[channel])
}

// Advance moves channel to its next release and returns its revision.
func (c *ChannelServer) Advance(channel string) string {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.gen[channel]++
	return channelRevision(channel, c.gen[channel])
}

func channelRevision(channel string, gen int) string {
	sum := sha256.Sum256(fmt.Appendf(nil, "channel %s release %d", channel, gen))
	return hex.EncodeToString(sum[:])[:40]
}

// releasePath is where a release lies under releases.nixos.org:
// nixos/26.05/nixos-26.05.806273.650e572363c0,
// nixos/unstable/nixos-26.11pre806273.650e572363c0,
// nixpkgs/nixpkgs-26.11pre806273.650e572363c0.
func releasePath(channel string, gen int) string {
	short := channelRevision(channel, gen)[:12]
	count := 806273 + 97*gen
	prefix, rel, _ := strings.Cut(channel, "-")
	switch {
	case channel == "nixpkgs-unstable":
		return fmt.Sprintf("nixpkgs/nixpkgs-26.11pre%d.%s", count, short)
	case strings.HasPrefix(rel, "unstable"):
		return fmt.Sprintf("%s/%s/%s-26.11pre%d.%s", prefix, rel, prefix, count, short)
	default:
		version, _, _ := strings.Cut(rel, "-")
		return fmt.Sprintf("%s/%s/%s-%s.%d.%s", prefix, rel, prefix, version, count, short)
	}
}

func (c *ChannelServer) serve(w http.ResponseWriter, r *http.Request) {
	p := strings.TrimPrefix(r.URL.Path, "/")
	if rel, ok := strings.CutPrefix(p, "releases/"); ok {
		c.serveRelease(w, r, rel)
		return
	}
	channel, file, _ := strings.Cut(p, "/")
	c.mu.Lock()
	gen, ok := c.gen[channel]
	c.mu.Unlock()
	if !ok {
		http.Error(w, "404 Not Found", http.StatusNotFound)
		return
	}
	target := c.URL() + "/releases/" + releasePath(channel, gen)
	if file == "" {
		http.Redirect(w, r, target, http.StatusMovedPermanently)
		return
	}
	http.Redirect(w, r, target+"/"+file, http.StatusFound)
}

// serveRelease answers a release's files: git-revision, binary-cache-url.
func (c *ChannelServer) serveRelease(w http.ResponseWriter, r *http.Request, rel string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	for ch, last := range c.gen {
		for g := 0; g <= last; g++ {
			dir := releasePath(ch, g)
			switch strings.TrimPrefix(rel, dir) {
			case "/git-revision":
				fmt.Fprintln(w, channelRevision(ch, g))
				return
			case "/binary-cache-url":
				fmt.Fprintln(w, "https://cache.nixos.org")
				return
			case "", "/":
				fmt.Fprintf(w, "<html><body><h1>%s release %s</h1></body></html>\n", ch, dir)
				return
			}
		}
	}
	http.Error(w, "404 Not Found", http.StatusNotFound)
}
