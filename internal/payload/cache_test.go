package payload

import (
	"strings"
	"testing"
)

// TestCacheTarget: the push starts from the derivation `nix build --json`
// names (else its output), whatever else the build printed.
func TestCacheTarget(t *testing.T) {
	for _, tc := range []struct{ out, want string }{
		{"building...\n[{\"drvPath\":\"/nix/store/abc-image.drv\",\"outputs\":{\"out\":\"/nix/store/def-image\"},\"startTime\":1}]\n", "/nix/store/abc-image.drv"},
		{"[{\"outputs\":{\"out\":\"/nix/store/def-image\"}}]", "/nix/store/def-image"},
		{"[not json\n", ""},
		{"", ""},
	} {
		c := &cacheRun{}
		for _, chunk := range strings.SplitAfter(tc.out, "\"") {
			c.Write([]byte(chunk))
		}
		if got := c.target(); got != tc.want {
			t.Errorf("target of %q = %q, want %q", tc.out, got, tc.want)
		}
	}
}

// TestCacheArgsInBuildCommand: the cache's settings come after nix_options
// and before the installable.
func TestCacheArgsInBuildCommand(t *testing.T) {
	cfg := &Config{RemoteDirectory: "/tmp/x", Nixpkgs: "nixos-26.05", NixOptions: map[string]string{"max-jobs": "8"},
		extraArgs: []string{"--json", "--option", "extra-substituters", "http://127.0.0.1:1/t"}}
	got := buildCommand(cfg)
	i, j, k := strings.Index(got, "max-jobs"), strings.Index(got, "--json --option extra-substituters http://127.0.0.1:1/t"), strings.Index(got, "config.system.build.sdImage")
	if i < 0 || j < i || k < j {
		t.Errorf("build command %q", got)
	}
}
