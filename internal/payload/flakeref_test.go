package payload

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestFlakeReferences: which references are local (uploaded) and which are
// remote, read from a directory other than the template's, as Packer runs
// `packer build example/flake` from the repository root; ${path.root} is then
// the relative "example/flake", or absolute.
func TestFlakeReferences(t *testing.T) {
	root := t.TempDir()
	tmpl := filepath.Join(root, "example", "flake")
	for _, d := range []string{filepath.Join(tmpl, "pi-flake"), filepath.Join(root, "noflake"), filepath.Join(root, "nixpkgs")} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.WriteFile(filepath.Join(tmpl, "pi-flake", "flake.nix"), []byte("{ outputs = _: { }; }\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(root, "nixpkgs", "flake.nix"), []byte("{ outputs = _: { }; }\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	t.Chdir(root) // packer runs here, not in the template's directory
	abs := filepath.Join(tmpl, "pi-flake")
	cases := []struct {
		flake   string
		dir     string // the local directory; "" for a remote flake
		refused string // part of the refusal, "" when accepted
	}{
		{"example/flake/pi-flake#rpi5", "example/flake/pi-flake", ""}, // ${path.root} relative
		{abs + "#rpi5", abs, ""}, // ${path.root} absolute
		{"./example/flake/pi-flake#rpi5", "./example/flake/pi-flake", ""},
		{"path:example/flake/pi-flake#rpi5", "example/flake/pi-flake", ""},
		{"nixpkgs#rpi5", "nixpkgs", ""}, // a directory of that name here wins over the registry
		{"github:me/nixos-pi#rpi4", "", ""},
		{"git+https://example.org/pi.git#rpi4", "", ""},
		{"pi-flake#rpi5", "", ""}, // no such directory here: an indirect (registry) reference
		{"nixos-hardware/master#rpi5", "", ""},
		{"./pi-flake#rpi5", "", "does not exist"},
		{"../missing#rpi5", "", "does not exist"},
		{"path:missing#rpi5", "", "does not exist"},
		{"./noflake#rpi5", "", "has no flake.nix"},
		{"noflake#rpi5", "", "has no flake.nix"},
		{"git+file:///srv/pi#rpi5", "", "cannot read"},
		{"-L#rpi5", "", "command-line option"},
		{"--impure#rpi5", "", "command-line option"},
		{"github:me/pi #rpi5", "", "white space"},
		{"github:me/pi", "", "nixosConfigurations attribute"},
		{"#rpi5", "", "nixosConfigurations attribute"},
	}
	for _, tc := range cases {
		f, err := parseFlake(tc.flake)
		switch {
		case tc.refused != "" && (err == nil || !strings.Contains(err.Error(), tc.refused)):
			t.Errorf("parseFlake(%q): error %v, want one saying %q", tc.flake, err, tc.refused)
		case tc.refused == "" && err != nil:
			t.Errorf("parseFlake(%q): %v", tc.flake, err)
		case tc.refused == "" && f.dir != tc.dir:
			t.Errorf("parseFlake(%q): local directory %q, want %q", tc.flake, f.dir, tc.dir)
		}
		if tc.refused != "" && err != nil && !strings.HasPrefix(err.Error(), "flake: ") {
			t.Errorf("parseFlake(%q): %q does not name the option", tc.flake, err)
		}
	}
}
