package payload

import (
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strings"
)

// flakeRef is a parsed `flake` option: the reference before '#' and the
// nixosConfigurations attribute after it; dir is the local directory the
// reference names ("" for a remote flake).
type flakeRef struct {
	ref, attr, dir string
}

var (
	flakeAttr = regexp.MustCompile(`^[A-Za-z_][A-Za-z0-9_'\-]*$`)
	// flakeScheme is a URL-like flake reference's scheme (github:, git+https:).
	flakeScheme = regexp.MustCompile(`^[a-z][a-z0-9+.\-]*:`)
)

// parseFlake reads the flake option. A reference is local, and uploaded,
// when it is a path: it starts with "path:", "/", "./" or "../", is ".", or
// (relative to the current directory, as ${path.root} is) names a directory
// that exists here. "git+file:" and "file:" name files on this machine the
// build host cannot see and are refused; other references (github:...,
// indirect ones such as nixpkgs) are remote.
func parseFlake(s string) (flakeRef, error) {
	if strings.HasPrefix(s, "-") {
		return flakeRef{}, fmt.Errorf("flake: %q starts with '-', which Nix would read as a command-line option; use a form such as \"github:me/nixos-pi#rpi4\" or \"./pi-flake#rpi4\"", s)
	}
	if strings.ContainsAny(s, " \t\r\n") {
		return flakeRef{}, fmt.Errorf("flake: %q holds white space, which no flake reference does; remove it", s)
	}
	ref, attr, ok := strings.Cut(s, "#")
	if !ok || ref == "" || !flakeAttr.MatchString(attr) {
		return flakeRef{}, fmt.Errorf("flake: %q must be a flake reference and a nixosConfigurations attribute; use a form such as \"github:me/nixos-pi#rpi4\" or \"./pi-flake#rpi4\"", s)
	}
	f := flakeRef{ref: ref, attr: attr}
	if strings.HasPrefix(ref, "git+file:") || strings.HasPrefix(ref, "file:") {
		return f, fmt.Errorf("flake: %q names a path on this machine, which the build host cannot read; use \"path:DIR#%s\" or \"./DIR#%s\" to upload the directory", s, attr, attr)
	}
	dir, explicit := pathPart(ref)
	if !explicit {
		// An existing directory wins over Nix's reading as a registry entry:
		// the build host has neither, and the user meant the directory.
		if flakeScheme.MatchString(ref) {
			return f, nil
		}
		if st, err := os.Stat(dir); err != nil || !st.IsDir() {
			return f, nil
		}
	}
	if strings.Contains(dir, "?") {
		return f, fmt.Errorf("flake: %q has a query (?...) on a local directory; name the directory holding flake.nix itself, before the '#'", s)
	}
	st, err := os.Stat(dir)
	switch {
	case err != nil:
		return f, fmt.Errorf("flake: the local directory %q does not exist (relative paths are from where packer runs: use \"${path.root}/DIR#%s\" for a flake beside the template); fix the path before the '#'", dir, attr)
	case !st.IsDir():
		return f, fmt.Errorf("flake: %q is a file, not a directory; point the path before the '#' at the directory holding flake.nix", dir)
	}
	if _, err := os.Stat(filepath.Join(dir, "flake.nix")); err != nil {
		return f, fmt.Errorf("flake: local directory %q has no flake.nix; fix the path before the '#'", dir)
	}
	f.dir = dir
	return f, nil
}

// pathPart is the directory a reference names and whether its form alone
// makes it a path (path:, /, ./, ../, .); otherwise the reference itself,
// which is a path only if such a directory exists.
func pathPart(ref string) (string, bool) {
	if dir, ok := strings.CutPrefix(ref, "path:"); ok {
		return dir, true
	}
	if strings.HasPrefix(ref, "./") || strings.HasPrefix(ref, "../") || strings.HasPrefix(ref, "/") || ref == "." || ref == ".." {
		return ref, true
	}
	return ref, false
}

// LocalFlakeDir returns the local directory the flake option names, which is
// uploaded to the host, and whether it names one (see parseFlake).
func LocalFlakeDir(flake string) (string, bool) {
	f, err := parseFlake(flake)
	return f.dir, err == nil && f.dir != ""
}
