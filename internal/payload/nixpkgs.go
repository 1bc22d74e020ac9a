package payload

import (
	"cmp"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/nixos-sd/packer-plugin-nixos-sd/internal/remotecmd"
)

// PhaseNixpkgs resolves the exact nixpkgs revision the build used.
const PhaseNixpkgs = "nixpkgs revision"

// Nixpkgs is the nixpkgs a build used, as the manifest records it.
type Nixpkgs struct {
	// Requested is what the configuration asked for: a channel, a revision,
	// or the flake reference.
	Requested string `json:"requested"`
	// Revision is the full git revision, empty when it could not be found.
	Revision string `json:"revision"`
	// Version is nixpkgs' lib.version (for a channel: release, date and
	// short revision), empty for a flake.
	Version string `json:"version,omitempty"`
	// Source says how Revision was found: "channel git-revision before the
	// build", "release git-revision before the build" (a release URL),
	// "channel .git-revision" (asked of Nix after the build), "nixpkgs
	// option", "flake.lock", or why it was not.
	Source string `json:"source"`
	// URL is the nixpkgs the build used, when the plugin chose it: the
	// release a channel was pinned to, or a revision's tarball; for a
	// flake, its nixpkgs input's locked reference.
	URL string `json:"url,omitempty"`
	// Flake is the flake as locked, nil without a flake or when Nix could
	// not say.
	Flake *FlakeLock `json:"flake,omitempty"`
	// FlakeLockFile is a local flake's flake.lock on the host after the
	// build, nil when there was none.
	FlakeLockFile []byte `json:"-"`
}

// nixpkgsExpr reads, in the nixpkgs `-I nixpkgs=` names, what a channel
// tarball records about itself: lib.version (from .version and
// .version-suffix) and the revision in .git-revision
// (lib.trivial.revisionWithDefault, as NixOS' system.nixos.revision does).
const nixpkgsExpr = `let lib = import <nixpkgs/lib>; in { version = lib.version; revision = lib.trivial.revisionWithDefault ""; }`

// nixpkgsTimeout bounds the lookup: the channel is in Nix's cache after the
// build, so it takes seconds.
const nixpkgsTimeout = 5 * time.Minute

// nixpkgsCommand asks Nix on the host, through build.sh (as the build's own
// user), for the nixpkgs the build used: `nix eval` of nixpkgsExpr with the
// build's `-I nixpkgs=`, or `nix flake metadata --json` of the flake.
func nixpkgsCommand(cfg *Config) string {
	args := []string{"nix"}
	if cfg.Flake != "" {
		ref, _, _ := strings.Cut(flakeTarget(cfg), "#")
		args = append(args, "flake", "metadata", "--extra-experimental-features", "nix-command flakes", "--json", ref)
	} else {
		args = append(args, "eval", "--extra-experimental-features", "nix-command flakes", "--impure", "--json",
			"-I", "nixpkgs="+nixpkgsURL(cfg), "--expr", nixpkgsExpr)
	}
	return scriptCommand(cfg, append([]string{"build", cfg.RemoteDirectory, fmt.Sprint(int(nixpkgsTimeout / time.Second))}, args...)...)
}

// resolveNixpkgs finds the exact nixpkgs revision the build used. It never
// fails the build: what it cannot find, the manifest says.
func (r *run) resolveNixpkgs(ctx context.Context) Nixpkgs {
	defer r.timer.track(PhaseNixpkgs)()
	cfg := r.cfg
	n := Nixpkgs{Requested: cfg.Nixpkgs}
	if cfg.Flake != "" {
		n.Requested = cfg.Flake
	} else {
		n.URL = nixpkgsURL(cfg)
	}
	if p := cfg.pin; p != nil {
		n.Revision, n.Version, n.Source = p.Revision, p.Version, "channel git-revision before the build"
		if p.Channel == "" {
			n.Source = "release git-revision before the build"
		}
		r.ui.Say(fmt.Sprintf("The build used nixpkgs revision %s (%s)", n.Revision, p.URL))
		return n
	}
	if cfg.Flake != "" {
		return r.resolveFlakeNixpkgs(ctx, n)
	}
	out, err := remotecmd.Output(ctx, r.comm, nixpkgsCommand(cfg))
	if err == nil {
		n.Revision, n.Version, err = parseNixpkgsEval([]byte(out))
		n.Source = "channel .git-revision"
	}
	// A revision given as the nixpkgs option is a GitHub tarball, which
	// carries no .git-revision: the option itself is the revision.
	if revisionPattern.MatchString(cfg.Nixpkgs) && (err != nil || n.Revision == "") {
		n.Revision, n.Source, err = cfg.Nixpkgs, "nixpkgs option", nil
	}
	if err == nil && n.Revision == "" {
		err = errors.New("nixpkgs records no revision")
	}
	if err != nil {
		n.Source = "unresolved: " + firstLine(err.Error())
		r.ui.Error(fmt.Sprintf("Warning: could not find the nixpkgs revision the build used (%v); the manifest leaves it empty", err))
		return n
	}
	r.ui.Say(fmt.Sprintf("The build used nixpkgs revision %s", n.Revision))
	return n
}

func parseNixpkgsEval(out []byte) (revision, version string, err error) {
	var v struct{ Revision, Version string }
	if err := json.Unmarshal(lastJSON(out), &v); err != nil {
		return "", "", fmt.Errorf("nix eval printed no JSON: %w", err)
	}
	return v.Revision, v.Version, nil
}

// flakeNixpkgsRevision is the locked revision of the flake's nixpkgs input,
// from `nix flake metadata --json`: locks.nodes.<root>.inputs.nixpkgs names
// the node (or, as a list, the path of a `follows`).
func flakeNixpkgsRevision(out []byte) (string, error) {
	_, rev, err := flakeNixpkgsInput(out)
	return rev, err
}

// flakeNixpkgsInput is the lock file's node of the flake's nixpkgs input
// and its locked revision.
func flakeNixpkgsInput(out []byte) (node, rev string, err error) {
	var m struct {
		Locks struct {
			Root  string `json:"root"`
			Nodes map[string]struct {
				Inputs map[string]json.RawMessage `json:"inputs"`
				Locked struct {
					Rev string `json:"rev"`
				} `json:"locked"`
			} `json:"nodes"`
		} `json:"locks"`
	}
	if err := json.Unmarshal(lastJSON(out), &m); err != nil {
		return "", "", fmt.Errorf("nix flake metadata printed no JSON: %w", err)
	}
	nodes := m.Locks.Nodes
	root := cmp.Or(m.Locks.Root, "root")
	input := func(node, name string) (string, bool) {
		raw, ok := nodes[node].Inputs[name]
		if !ok {
			return "", false
		}
		var direct string
		if json.Unmarshal(raw, &direct) == nil {
			return direct, true
		}
		var follows []string
		if json.Unmarshal(raw, &follows) != nil || len(follows) == 0 {
			return "", false
		}
		n := root
		for _, f := range follows {
			next, ok := nodes[n].Inputs[f]
			if !ok {
				return "", false
			}
			if json.Unmarshal(next, &n) != nil {
				return "", false
			}
		}
		return n, true
	}
	node, ok := input(root, "nixpkgs")
	if !ok {
		return "", "", errors.New("the flake has no input named nixpkgs")
	}
	return node, nodes[node].Locked.Rev, nil
}

// lastJSON is the last line of out that starts a JSON value: Nix prints
// its warnings on standard error, but a wrapper may add lines.
func lastJSON(out []byte) []byte {
	lines := strings.Split(strings.TrimSpace(string(out)), "\n")
	for i := len(lines) - 1; i >= 0; i-- {
		if strings.HasPrefix(strings.TrimSpace(lines[i]), "{") {
			return []byte(strings.Join(lines[i:], "\n"))
		}
	}
	return out
}

func firstLine(s string) string {
	l, _, _ := strings.Cut(s, "\n")
	return l
}

// configHash is the SHA-256 of the NixOS configuration as uploaded: each
// file's path (relative to the configuration) and content, in path order,
// with the configuration source first. A remote flake is its reference.
func configHash(cfg *Config) (string, error) {
	h := sha256.New()
	fmt.Fprintf(h, "nixos-sd configuration v1\x00%s\x00", configSource(cfg))
	add := func(name string, b []byte) {
		fmt.Fprintf(h, "%s\x00%d\x00", name, len(b))
		h.Write(b)
	}
	embedded := func(name string) error {
		b, err := hostFiles.ReadFile("hostfiles/" + name)
		if err == nil {
			add(name, b)
		}
		return err
	}
	switch {
	case cfg.Flake != "":
		ref, attr, _ := strings.Cut(cfg.Flake, "#")
		add("attribute", []byte(attr))
		dir, local := LocalFlakeDir(cfg.Flake)
		if !local {
			add("flake", []byte(ref))
			break
		}
		if err := hashDir(dir, add); err != nil {
			return "", err
		}
	case cfg.NixOSConfig != "":
		if err := embedded("entry.nix"); err != nil {
			return "", err
		}
		add("plugin.nix", []byte(pluginModuleFile(cfg)))
		st, err := os.Stat(cfg.NixOSConfig)
		if err != nil {
			return "", err
		}
		if !st.IsDir() {
			b, err := os.ReadFile(cfg.NixOSConfig)
			if err != nil {
				return "", err
			}
			add("configuration.nix", b)
			break
		}
		if err := hashDir(cfg.NixOSConfig, add); err != nil {
			return "", err
		}
	default:
		if err := embedded("default.nix"); err != nil {
			return "", err
		}
		js, err := settingsJSON(cfg)
		if err != nil {
			return "", err
		}
		add("settings.json", js)
	}
	return hex.EncodeToString(h.Sum(nil)), nil
}

// hashDir adds every regular file under dir, in path order.
func hashDir(dir string, add func(string, []byte)) error {
	var files []string
	err := filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.Type().IsRegular() {
			files = append(files, p)
		}
		return nil
	})
	if err != nil {
		return err
	}
	slices.Sort(files)
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(dir, f)
		add(filepath.ToSlash(rel), b)
	}
	return nil
}
