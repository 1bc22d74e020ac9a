package testbed

import (
	"encoding/json"
	"io/fs"
	"maps"
	"os"
	"os/exec"
	"path"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
)

// TestStandInNixpkgsModuleTree: the stand-in nixpkgs holds exactly the module
// files of the list captured from nixpkgs (standin/nixpkgs-module-tree.txt),
// each importing what the real file imports, so a configuration importing
// any of them evaluates as in nixpkgs.
func TestStandInNixpkgsModuleTree(t *testing.T) {
	want := moduleTreeList(t)
	modules, err := fs.Sub(standinNixpkgs, "standin/nixpkgs/nixos/modules")
	if err != nil {
		t.Fatal(err)
	}
	importsRE := regexp.MustCompile(`(?s)imports = \[(.*?)\];`)
	got := map[string][]string{}
	err = fs.WalkDir(modules, ".", func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		b, err := fs.ReadFile(modules, p)
		if err != nil {
			return err
		}
		var imports []string
		if m := importsRE.FindSubmatch(b); m != nil {
			imports = strings.Fields(string(m[1]))
		}
		got[p] = imports
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	for p, imps := range want {
		g, ok := got[p]
		if !ok {
			t.Errorf("the stand-in lacks nixos/modules/%s", p)
		} else if !slices.Equal(g, imps) {
			t.Errorf("nixos/modules/%s imports %q in the stand-in, %q in nixpkgs", p, g, imps)
		}
		for _, i := range imps {
			target := path.Join(path.Dir(p), i)
			if _, ok := want[target]; !ok {
				t.Errorf("nixos/modules/%s imports %s, which the list lacks", p, target)
			}
		}
	}
	for p := range got {
		if _, ok := want[p]; !ok {
			t.Errorf("the stand-in has nixos/modules/%s, which nixpkgs' list lacks", p)
		}
	}
}

// moduleTreeList reads standin/nixpkgs-module-tree.txt: each module path
// (under nixos/modules/) with the imports nixpkgs' file writes.
func moduleTreeList(t *testing.T) map[string][]string {
	t.Helper()
	data, err := os.ReadFile("standin/nixpkgs-module-tree.txt")
	if err != nil {
		t.Fatal(err)
	}
	want := map[string][]string{}
	for _, l := range strings.Split(string(data), "\n") {
		if l == "" || strings.HasPrefix(l, "#") {
			continue
		}
		f := strings.Split(l, "\t")
		if len(f) != 3 || !regexp.MustCompile(`^[0-9a-f]{40}$`).MatchString(f[1]) {
			t.Fatalf("malformed line %q: want path, commit and imports, tab-separated", l)
		}
		var imports []string
		if f[2] != "-" {
			imports = strings.Fields(f[2])
		}
		want[f[0]] = imports
	}
	return want
}

// standinNixpkgsDir copies the stand-in nixpkgs to a directory for the
// machine's real Nix to evaluate, and returns it and nix-instantiate.
func standinNixpkgsDir(t *testing.T) (dir, nix string) {
	t.Helper()
	nix, err := exec.LookPath("nix-instantiate")
	if err != nil {
		t.Fatalf("this test needs the real nix-instantiate (Debian's nix-bin): %v", err)
	}
	dir = t.TempDir()
	sub, err := fs.Sub(standinNixpkgs, "standin/nixpkgs")
	if err != nil {
		t.Fatal(err)
	}
	if err := os.CopyFS(dir, sub); err != nil {
		t.Fatal(err)
	}
	// This machine's Nix may be older than nixpkgs asks for (the hosts'
	// Nix 2.26 runs the version check; TestHostNixIsStrict).
	if err := os.WriteFile(filepath.Join(dir, "lib", "minver.nix"), []byte("builtins.nixVersion\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	return dir, nix
}

// TestStandInSdCardModulesEvaluate: a flake configuration importing any of
// the stand-in's sd-card modules evaluates on the machine's real Nix, and
// the image's evaluation loads exactly that module and what it imports,
// transitively, by the list captured from nixpkgs.
func TestStandInSdCardModulesEvaluate(t *testing.T) {
	want := moduleTreeList(t)
	dir, nix := standinNixpkgsDir(t)
	var closure func(p string, seen map[string]bool)
	closure = func(p string, seen map[string]bool) {
		if seen[p] {
			return
		}
		seen[p] = true
		for _, i := range want[p] {
			closure(path.Join(path.Dir(p), i), seen)
		}
	}
	n := 0
	for p := range want {
		if !strings.HasPrefix(p, "installer/sd-card/") {
			continue
		}
		n++
		expr := `let nixpkgs = (import ./flake.nix).outputs { self = nixpkgs; }; in builtins.fromJSON ` +
			`(nixpkgs.lib.nixosSystem { modules = [ { imports = [ ./nixos/modules/` + p +
			` ]; nixpkgs.hostPlatform = "aarch64-linux"; } ]; }).config.system.build.sdImage.modules`
		cmd := exec.Command(nix, "--eval", "--strict", "--json", "-E", expr)
		cmd.Dir = dir
		var stderr strings.Builder
		cmd.Stderr = &stderr
		out, err := cmd.Output()
		if err != nil {
			t.Errorf("a configuration importing nixos/modules/%s: %v\n%s", p, err, stderr.String())
			continue
		}
		var loaded []string
		if err := json.Unmarshal(out, &loaded); err != nil {
			t.Fatalf("%s: %v: %s", p, err, out)
		}
		got := map[string]bool{}
		for _, l := range loaded {
			if l == "<inline>" {
				continue
			}
			rel, ok := strings.CutPrefix(l, filepath.Join(dir, "nixos", "modules")+"/")
			if !ok {
				t.Errorf("%s: loaded %s, outside nixos/modules", p, l)
				continue
			}
			got[rel] = true
		}
		exp := map[string]bool{}
		closure(p, exp)
		if !maps.Equal(got, exp) {
			t.Errorf("importing nixos/modules/%s loads %v, want %v", p, slices.Sorted(maps.Keys(got)), slices.Sorted(maps.Keys(exp)))
		}
	}
	if n < 14 {
		t.Errorf("the list has %d sd-card modules; nixos-26.05 has 14", n)
	}
}

// TestStandInNixosSystemNeedsAPlatform: the stand-in's lib.nixosSystem, as
// nixpkgs' flake's, passes system = null, so a configuration that sets
// neither nixpkgs.hostPlatform nor the legacy nixpkgs.system (or system)
// fails with nixpkgs' words; <nixpkgs/nixos>'s evaluation keeps the legacy
// default, the evaluating machine's system. The machine's real Nix
// evaluates it.
func TestStandInNixosSystemNeedsAPlatform(t *testing.T) {
	dir, nix := standinNixpkgsDir(t)
	const sd = dirSD + "/sd-image-aarch64.nix"
	eval := func(expr string) (string, string, error) {
		cmd := exec.Command(nix, "--eval", "--strict", "--json", "-E",
			"let nixpkgs = (import ./flake.nix).outputs { self = nixpkgs; }; s = "+expr+
				"; in [ s.pkgs.stdenv.hostPlatform.system s.pkgs.stdenv.buildPlatform.system s.config.system.build.sdImage.name ]")
		cmd.Dir = dir
		var stderr strings.Builder
		cmd.Stderr = &stderr
		out, err := cmd.Output()
		return strings.TrimSpace(string(out)), stderr.String(), err
	}
	const aarch64 = `["aarch64-linux","aarch64-linux","nixos-image-sd-card-26.05.20260601.0000000-aarch64-linux.img"]`
	for _, tc := range []struct{ name, expr, want string }{
		{"nixpkgs.hostPlatform", `nixpkgs.lib.nixosSystem { modules = [ ` + sd + ` { nixpkgs.hostPlatform = "aarch64-linux"; } ]; }`, aarch64},
		{"nixpkgs.hostPlatform as attributes", `nixpkgs.lib.nixosSystem { modules = [ ` + sd + ` { nixpkgs.hostPlatform = { system = "aarch64-linux"; }; } ]; }`, aarch64},
		{"the legacy nixpkgs.system", `nixpkgs.lib.nixosSystem { modules = [ ` + sd + ` { nixpkgs.system = "aarch64-linux"; } ]; }`, aarch64},
		{"the legacy system argument", `nixpkgs.lib.nixosSystem { system = "aarch64-linux"; modules = [ ` + sd + ` ]; }`, aarch64},
		{"a cross-compiling configuration", `nixpkgs.lib.nixosSystem { modules = [ { nixpkgs.hostPlatform = "aarch64-linux"; nixpkgs.buildPlatform = "x86_64-linux"; } ]; }`,
			`["aarch64-linux","x86_64-linux","nixos-image-sd-card-26.05.20260601.0000000-aarch64-linux.img"]`},
		{"<nixpkgs/nixos>: the evaluating machine's system", `import ./nixos/lib/eval-config.nix { modules = [ ` + sd + ` ]; }`, ""},
	} {
		out, stderr, err := eval(tc.expr)
		if tc.want == "" {
			b, err := exec.Command(nix, "--eval", "--json", "-E", "builtins.currentSystem").Output()
			if err != nil {
				t.Fatal(err)
			}
			sys := strings.Trim(strings.TrimSpace(string(b)), `"`)
			tc.want = `["` + sys + `","` + sys + `","nixos-image-sd-card-26.05.20260601.0000000-` + sys + `.img"]`
		}
		if err != nil || out != tc.want {
			t.Errorf("%s: %v, %s\n%s\nwant %s", tc.name, err, out, stderr, tc.want)
		}
	}
	// nixos/modules/misc/nixpkgs.nix's error, when anything reads pkgs.
	out, stderr, err := eval(`nixpkgs.lib.nixosSystem { modules = [ ` + sd + ` ]; }`)
	if err == nil || !strings.Contains(stderr, "error: Neither nixpkgs.hostPlatform nor the legacy option nixpkgs.system has been set.") {
		t.Errorf("a flake configuration without a platform: %v, %s\n%s", err, out, stderr)
	}
}

// dirSD is the stand-in's sd-card modules, from its root.
const dirSD = "./nixos/modules/installer/sd-card"
