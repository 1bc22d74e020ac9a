package payload

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestFlakeNixpkgsRevision(t *testing.T) {
	for _, tc := range []struct{ name, json, want, err string }{
		{"direct", `{"locks":{"nodes":{"root":{"inputs":{"nixpkgs":"nixpkgs"}},"nixpkgs":{"locked":{"rev":"aaaa"}}},"root":"root","version":7}}`, "aaaa", ""},
		{"renamed node", `{"locks":{"nodes":{"root":{"inputs":{"nixpkgs":"nixpkgs_3"}},"nixpkgs_3":{"locked":{"rev":"bbbb"}}},"root":"root"}}`, "bbbb", ""},
		{"follows", `{"locks":{"nodes":{"root":{"inputs":{"hw":"hw","nixpkgs":["hw","nixpkgs"]}},"hw":{"inputs":{"nixpkgs":"np"}},"np":{"locked":{"rev":"cccc"}}},"root":"root"}}`, "cccc", ""},
		{"warning line first", "warning: Git tree is dirty\n" + `{"locks":{"nodes":{"root":{"inputs":{"nixpkgs":"n"}},"n":{"locked":{"rev":"dddd"}}},"root":"root"}}`, "dddd", ""},
		{"no nixpkgs", `{"locks":{"nodes":{"root":{"inputs":{}}},"root":"root"}}`, "", "no input named nixpkgs"},
		{"not json", `error: cannot find flake`, "", "no JSON"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := flakeNixpkgsRevision([]byte(tc.json))
			if got != tc.want || (tc.err == "") != (err == nil) || (err != nil && !strings.Contains(err.Error(), tc.err)) {
				t.Errorf("= %q, %v; want %q, error containing %q", got, err, tc.want, tc.err)
			}
		})
	}
}

func TestNixpkgsCommand(t *testing.T) {
	c := prepared(t, nil)
	cmd := nixpkgsCommand(c)
	for _, want := range []string{"bash /tmp/nixos-sd/build.sh build /tmp/nixos-sd 300 nix eval", "--impure --json -I nixpkgs=channel:nixos-26.05 --expr", "lib.trivial.revisionWithDefault"} {
		if !strings.Contains(cmd, want) {
			t.Errorf("command %q lacks %q", cmd, want)
		}
	}
	c = prepared(t, func(c *Config) { c.Flake = "github:me/pi#rpi4" })
	if cmd := nixpkgsCommand(c); !strings.HasSuffix(cmd, "nix flake metadata --extra-experimental-features 'nix-command flakes' --json github:me/pi") {
		t.Errorf("flake command = %q", cmd)
	}
}

// TestResolveNixpkgsRevisionOption: a revision given as `nixpkgs` is a GitHub
// tarball without .git-revision; the option is the revision.
func TestResolveNixpkgsRevisionOption(t *testing.T) {
	const rev = "0123456789abcdef0123456789abcdef01234567"
	e := newRunEnv(t)
	// No build.sh in remote_directory: the lookup on the host fails.
	none := filepath.Join(e.dir, "none", "remote")
	cfg := prepared(t, func(c *Config) { c.Nixpkgs = rev; c.RemoteDirectory = none })
	r := &run{ui: e.ui, comm: e.comm, cfg: cfg}
	n := r.resolveNixpkgs(t.Context())
	if n.Revision != rev || n.Source != "nixpkgs option" || n.Requested != rev {
		t.Errorf("nixpkgs = %+v", n)
	}
	// A channel whose lookup fails: unresolved, said, never fatal.
	r.cfg = prepared(t, func(c *Config) { c.RemoteDirectory = none })
	n = r.resolveNixpkgs(t.Context())
	if n.Revision != "" || !strings.HasPrefix(n.Source, "unresolved: ") || !strings.Contains(strings.Join(e.ui.errors, "\n"), "could not find the nixpkgs revision") {
		t.Errorf("nixpkgs = %+v; ui errors: %q", n, e.ui.errors)
	}
}

func TestConfigHash(t *testing.T) {
	dir := t.TempDir()
	conf := filepath.Join(dir, "configuration.nix")
	os.WriteFile(conf, []byte("{ }\n"), 0o644)
	os.MkdirAll(filepath.Join(dir, "modules"), 0o755)
	os.WriteFile(filepath.Join(dir, "modules", "a.nix"), []byte("{ }\n"), 0o644)

	hash := func(edit func(c *Config)) string {
		t.Helper()
		h, err := configHash(prepared(t, edit))
		if err != nil || len(h) != 64 {
			t.Fatalf("configHash = %q, %v", h, err)
		}
		return h
	}
	builtIn := hash(nil)
	if hash(nil) != builtIn {
		t.Error("the built-in configuration's hash is not stable")
	}
	if hash(func(c *Config) { c.Hostname = "other" }) == builtIn {
		t.Error("the hostname does not change the built-in configuration's hash")
	}
	d := hash(func(c *Config) { c.NixOSConfig = dir })
	os.WriteFile(filepath.Join(dir, "modules", "a.nix"), []byte("{ networking.hostName = \"x\"; }\n"), 0o644)
	if hash(func(c *Config) { c.NixOSConfig = dir }) == d {
		t.Error("an imported file's change does not change the hash")
	}
	if hash(func(c *Config) { c.Flake = "github:me/pi#a" }) == hash(func(c *Config) { c.Flake = "github:me/pi#b" }) {
		t.Error("the flake attribute does not change the hash")
	}
}
