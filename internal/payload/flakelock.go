package payload

import (
	"cmp"
	"context"
	"encoding/json"
	"fmt"
	"net/url"
	"path"
	"regexp"
	"slices"
	"strconv"
	"strings"

	"github.com/nixos-sd/packer-plugin-nixos-sd/internal/remotecmd"
)

// FlakeLock is a flake as Nix locked it (`nix flake metadata --json`): the
// locked reference and revision, and every input of its lock file.
type FlakeLock struct {
	// URL is the locked reference (Nix's "url"), such as
	// github:me/pi/<rev>?narHash=...; for a remote flake the build uses it.
	URL string `json:"url"`
	// Revision is the flake's own revision, empty for a path.
	Revision string `json:"revision,omitempty"`
	// Inputs are the lock file's nodes but the root, by node name.
	Inputs map[string]LockedInput `json:"inputs"`
	// nixpkgs is the node of the flake's nixpkgs input, or why there is
	// none.
	nixpkgs    string
	nixpkgsErr error
}

// LockedInput is one input of a flake's lock file.
type LockedInput struct {
	URL      string `json:"url"`
	Revision string `json:"revision,omitempty"`
}

// flakeMetadataCommand is `nix flake metadata --json ref`, run on the host
// through build.sh as the build's own user.
func flakeMetadataCommand(cfg *Config, ref string) string {
	args := []string{"nix", "flake", "metadata", "--extra-experimental-features", "nix-command flakes", "--json", ref}
	return scriptCommand(cfg, append([]string{"build", cfg.RemoteDirectory, fmt.Sprint(int(nixpkgsTimeout.Seconds()))}, args...)...)
}

// lockFlake locks a remote flake on the host before the build: the build
// then uses the locked reference, so a branch that moves during the build
// does not change what is built. A local flake is uploaded as it is and
// needs nothing.
func (r *run) lockFlake(ctx context.Context) error {
	cfg := r.cfg
	if cfg.Flake == "" || cfg.flakeLock != nil {
		return nil
	}
	if _, local := LocalFlakeDir(cfg.Flake); local {
		return nil
	}
	ref, _, _ := strings.Cut(cfg.Flake, "#")
	out, err := remotecmd.Output(ctx, r.comm, flakeMetadataCommand(cfg, ref))
	if err != nil {
		return fmt.Errorf("could not lock the flake %s on the host; check that the reference exists and the host can fetch it. nix flake metadata: %w", ref, err)
	}
	lock, err := parseFlakeMetadata([]byte(out))
	if err != nil {
		return fmt.Errorf("could not lock the flake %s on the host: %w", ref, err)
	}
	cfg.flakeLock = lock
	r.ui.Say(fmt.Sprintf("The flake %s is locked to %s; the build uses it", ref, lock.URL))
	return r.keepFlakeLock(ctx, ref, []byte(out))
}

// referenceLockNix is the first Nix with --reference-lock-file.
const referenceLockNix = "2.15"

// keepFlakeLock puts the lock file `nix flake metadata` made on the host
// for the build to read (--reference-lock-file): a flake without a
// flake.lock of its own would otherwise have its inputs locked again by the
// build, and they could differ from the manifest's. A Nix older than 2.15
// (Debian 12's 2.8) cannot read one: the build then locks them again, with
// a warning.
func (r *run) keepFlakeLock(ctx context.Context, ref string, metadata []byte) error {
	var m struct {
		Locks json.RawMessage `json:"locks"`
	}
	if err := json.Unmarshal(lastJSON(metadata), &m); err != nil || len(m.Locks) == 0 || string(m.Locks) == "null" {
		return fmt.Errorf("could not lock the flake %s on the host: nix flake metadata printed no lock file (\"locks\"); check the host's Nix with nix flake metadata --json %s", ref, ref)
	}
	out, err := remotecmd.Output(ctx, r.comm, scriptCommand(r.cfg, "nix-version"))
	if err != nil {
		return fmt.Errorf("could not read the version of the host's Nix (nix --version: %w); check the host's Nix installation", err)
	}
	version := nixVersionPattern.FindString(out)
	if version == "" || VersionLess(version, referenceLockNix) {
		r.ui.Error(fmt.Sprintf("Warning: the host's Nix (%s) cannot build with a given lock file (--reference-lock-file needs Nix %s or newer): "+
			"if the flake %s has no flake.lock of its own, the build locks its inputs again and the manifest's flake_inputs may not be what was built. "+
			"Commit a flake.lock to the flake, or use a Debian 13 AMI (its Nix is 2.26)", cmp.Or(strings.TrimSpace(out), "unknown"), referenceLockNix, ref))
		return nil
	}
	dst := path.Join(r.cfg.RemoteDirectory, remoteFlakeLock)
	if err := r.uploadBytes(ctx, "the flake's lock file", append(m.Locks, '\n'), dst); err != nil {
		return fmt.Errorf("could not keep the flake's lock on the host: %w", err)
	}
	r.cfg.referenceLock = dst
	return nil
}

var nixVersionPattern = regexp.MustCompile(`[0-9]+\.[0-9]+(\.[0-9]+)?`)

// referenceLockArgs make a remote flake's build and evaluation read the lock
// file kept on the host.
func referenceLockArgs(cfg *Config) []string {
	if cfg.Flake == "" || cfg.referenceLock == "" {
		return nil
	}
	return []string{"--reference-lock-file", cfg.referenceLock}
}

// parseFlakeMetadata reads `nix flake metadata --json`.
func parseFlakeMetadata(out []byte) (*FlakeLock, error) {
	var m struct {
		URL      string `json:"url"`
		Revision string `json:"revision"`
		Locks    struct {
			Root  string `json:"root"`
			Nodes map[string]struct {
				Locked map[string]any `json:"locked"`
			} `json:"nodes"`
		} `json:"locks"`
	}
	if err := json.Unmarshal(lastJSON(out), &m); err != nil {
		return nil, fmt.Errorf("nix flake metadata printed no JSON: %w", err)
	}
	if m.URL == "" {
		return nil, fmt.Errorf("nix flake metadata printed no locked url")
	}
	lock := &FlakeLock{URL: m.URL, Revision: m.Revision, Inputs: map[string]LockedInput{}}
	lock.nixpkgs, _, lock.nixpkgsErr = flakeNixpkgsInput(out)
	root := cmp.Or(m.Locks.Root, "root")
	for name, n := range m.Locks.Nodes {
		if name == root || n.Locked == nil {
			continue
		}
		rev, _ := n.Locked["rev"].(string)
		lock.Inputs[name] = LockedInput{URL: lockedURL(n.Locked), Revision: rev}
	}
	return lock, nil
}

// lockedURL writes a lock file's "locked" attributes as a flake reference,
// as Nix 2.26 writes a locked input: github:owner/repo/rev?narHash=...,
// git+URL?ref=...&rev=..., a tarball's URL?narHash=..., path:DIR with its
// other attributes as the query; an unknown type as its JSON.
func lockedURL(attrs map[string]any) string {
	str := func(k string) string {
		switch v := attrs[k].(type) {
		case string:
			return v
		case float64:
			return strconv.FormatInt(int64(v), 10)
		case bool:
			if v {
				return "1"
			}
		}
		return ""
	}
	var base string
	var query []string
	switch typ := str("type"); typ {
	case "github", "gitlab", "sourcehut":
		base = typ + ":" + str("owner") + "/" + str("repo") + "/" + cmp.Or(str("rev"), str("ref"))
		query = []string{"host", "narHash"}
	case "git", "hg":
		base = str("url")
		if !strings.HasPrefix(base, typ+":") {
			base = typ + "+" + base
		}
		query = []string{"ref", "rev", "shallow", "submodules"}
	case "tarball", "file":
		base = str("url")
		query = []string{"narHash"}
	case "path":
		base = "path:" + str("path")
		for k := range attrs {
			if k != "type" && k != "path" {
				query = append(query, k)
			}
		}
	default:
		b, _ := json.Marshal(attrs)
		return string(b)
	}
	slices.Sort(query)
	var q []string
	for _, k := range query {
		if v := str(k); v != "" {
			q = append(q, k+"="+queryEscape(v))
		}
	}
	if len(q) == 0 {
		return base
	}
	sep := "?"
	if strings.Contains(base, "?") {
		sep = "&"
	}
	return base + sep + strings.Join(q, "&")
}

// queryEscape percent-encodes a query value as Nix does, keeping / : @.
func queryEscape(v string) string {
	e := url.QueryEscape(v)
	return strings.NewReplacer("%2F", "/", "%3A", ":", "%40", "@").Replace(e)
}

// resolveFlakeNixpkgs fills in n from the flake as locked: a remote flake's
// lock from before the build, a local one's as Nix reads it on the host
// after the build (which may have written its flake.lock, copied back).
func (r *run) resolveFlakeNixpkgs(ctx context.Context, n Nixpkgs) Nixpkgs {
	cfg := r.cfg
	n.Source = "flake.lock"
	lock := cfg.flakeLock
	if lock == nil {
		out, err := remotecmd.Output(ctx, r.comm, nixpkgsCommand(cfg))
		if err == nil {
			lock, err = parseFlakeMetadata([]byte(out))
		}
		if err != nil {
			n.Source = "unresolved: " + firstLine(err.Error())
			r.ui.Error(fmt.Sprintf("Warning: could not find the nixpkgs revision the build used (%v); the manifest leaves it empty", err))
			return n
		}
		// The host's path of the upload names nothing the user has.
		lock.URL = ""
		lock.Revision = ""
		n.FlakeLockFile = r.hostFlakeLock(ctx)
	}
	n.Flake = lock
	if lock.nixpkgsErr != nil {
		n.Source = "unresolved: " + firstLine(lock.nixpkgsErr.Error())
		r.ui.Error(fmt.Sprintf("Warning: could not find the nixpkgs revision the build used (%v); the manifest leaves it empty", lock.nixpkgsErr))
		return n
	}
	in := lock.Inputs[lock.nixpkgs]
	n.Revision, n.URL = in.Revision, in.URL
	if n.Revision == "" {
		n.Source = "unresolved: the flake's nixpkgs input records no revision"
		r.ui.Error("Warning: could not find the nixpkgs revision the build used (the flake's nixpkgs input records no revision); the manifest leaves it empty. Run nix flake lock so that nixpkgs is locked to a revision")
		return n
	}
	r.ui.Say(fmt.Sprintf("The build used nixpkgs revision %s (%s)", n.Revision, n.URL))
	return n
}

// hostFlakeLock is the uploaded flake's flake.lock on the host, nil when it
// has none (or it cannot be read: the manifest still records the inputs).
func (r *run) hostFlakeLock(ctx context.Context) []byte {
	f := path.Join(r.cfg.RemoteDirectory, remoteFlake, "flake.lock")
	out, err := remotecmd.Output(ctx, r.comm, "if [ -f "+remotecmd.Quote(f)+" ]; then cat "+remotecmd.Quote(f)+"; fi")
	if err != nil {
		r.ui.Error(fmt.Sprintf("Warning: could not read the flake's flake.lock on the host (%v); it is not copied beside the image, but the manifest's flake_inputs record its inputs. Check the host's build log", err))
		return nil
	}
	if strings.TrimSpace(out) == "" {
		return nil
	}
	return []byte(out)
}
