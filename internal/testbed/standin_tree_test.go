package testbed

import (
	"io/fs"
	"os"
	"path"
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
