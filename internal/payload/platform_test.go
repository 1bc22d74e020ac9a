package payload

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"

	"github.com/nixos-sd/packer-plugin-nixos-sd/internal/remotecmd/remotecmdtest"
)

// The refusal names the attribute, what it is built for and what to set.
func TestCheckPlatformMessages(t *testing.T) {
	c := prepared(t, func(c *Config) { c.Flake = "github:me/pis#pc" })
	for _, tc := range []struct {
		out  string
		want []string
	}{
		{`{"build":"aarch64-linux","host":"aarch64-linux"}`, nil},
		{"warning: Git tree is dirty\n" + `{"build":"aarch64-linux","host":"aarch64-linux"}`, nil},
		{`{"build":"x86_64-linux","host":"x86_64-linux"}`, []string{`flake: nixosConfigurations.pc of "github:me/pis" is built for x86_64-linux (its pkgs.stdenv.hostPlatform.system), not aarch64-linux`, `Set nixpkgs.hostPlatform = "aarch64-linux" in that configuration`}},
		{`{"build":"x86_64-linux","host":"aarch64-linux"}`, []string{`flake: nixosConfigurations.pc of "github:me/pis" cross-compiles from x86_64-linux`, "remove nixpkgs.buildPlatform"}},
		{`"aarch64-linux"`, []string{"flake: the platform of nixosConfigurations.pc could not be read", "lib.nixosSystem"}},
	} {
		err := checkPlatform(c, []byte(tc.out))
		if tc.want == nil {
			if err != nil {
				t.Errorf("%s: refused: %v", tc.out, err)
			}
			continue
		}
		if err == nil {
			t.Errorf("%s: accepted", tc.out)
			continue
		}
		for _, w := range tc.want {
			if !strings.Contains(err.Error(), w) {
				t.Errorf("%s: the message %q lacks %q", tc.out, err, w)
			}
		}
	}
}

// The evaluation runs on the uploaded flake's entry with the build's
// settings, but none of its output options.
func TestPlatformArgs(t *testing.T) {
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "flake.nix"), []byte("{ outputs = _: { }; }\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	c := prepared(t, func(c *Config) {
		c.Flake = dir + "#rpi4"
		c.NixOptions = map[string]string{"max-jobs": "4"}
	})
	c.extraArgs = []string{"--json", "--option", "extra-substituters", "http://127.0.0.1:1"}
	got := platformArgs(c)
	want := []string{"eval", "--extra-experimental-features", "nix-command flakes", "--json",
		"--option", "max-jobs", "4", "--option", "extra-substituters", "http://127.0.0.1:1",
		"path:/tmp/nixos-sd/flake#nixosConfigurations.rpi4", "--apply", platformExpr}
	if !slices.Equal(got, want) {
		t.Fatalf("platformArgs\n %q\nwant\n %q", got, want)
	}
}

// platformExpr is Nix that real Nix evaluates: on lib.nixosSystem's result
// (pkgs at the top), and on a configuration with only the module argument.
func TestPlatformExprEvaluates(t *testing.T) {
	nix, err := exec.LookPath("nix")
	if err != nil {
		t.Fatalf("this test needs the real nix (Debian's nix-bin): %v", err)
	}
	for conf, want := range map[string]string{
		`{ pkgs.stdenv = { hostPlatform.system = "x86_64-linux"; buildPlatform.system = "x86_64-linux"; }; }`:                `{"build":"x86_64-linux","host":"x86_64-linux"}`,
		`{ _module.args.pkgs.stdenv = { hostPlatform.system = "aarch64-linux"; buildPlatform.system = "aarch64-linux"; }; }`: `{"build":"aarch64-linux","host":"aarch64-linux"}`,
	} {
		out, err := exec.Command(nix, "--extra-experimental-features", "nix-command", "eval", "--json", "--expr", "("+platformExpr+") "+conf).Output()
		if err != nil || strings.TrimSpace(string(out)) != want {
			t.Errorf("nix eval of platformExpr on %s: %v\n%s\nwant %s", conf, err, out, want)
		}
	}
}

// build.sh runs the evaluation as it runs a build, prints Nix's answer on
// standard output, and says evaluation, not build, when it fails.
func TestBuildScriptEvaluates(t *testing.T) {
	e := newScriptEnv(t)
	e.fake("nix", `case "$1" in eval) echo '{"build":"x86_64-linux","host":"x86_64-linux"}' ;; *) exit 9 ;; esac`)
	rd := t.TempDir()
	c := prepared(t, func(c *Config) { c.RemoteDirectory = rd; c.Flake = "github:me/pis#pc" })
	words := remotecmdtest.ShellWords(t, platformCommand(c))
	out, code := e.run(context.Background(), words[2:]...)
	if code != 0 || strings.Contains(out, "build finished") {
		t.Fatalf("exit %d:\n%s", code, out)
	}
	if err := checkPlatform(c, []byte(out)); err == nil || !strings.Contains(err.Error(), "is built for x86_64-linux") {
		t.Fatalf("checkPlatform of %q: %v", out, err)
	}
	e.fake("nix", `echo "error: flake 'github:me/pis' does not provide attribute 'nixosConfigurations.pc'" >&2; exit 1`)
	out, code = e.run(context.Background(), words[2:]...)
	if code != 1 || !strings.Contains(out, "nix eval failed with exit status 1") {
		t.Fatalf("exit %d:\n%s", code, out)
	}
}

// A flake configuration that sets no platform fails to evaluate in nixpkgs
// (a flake's lib.nixosSystem passes system = null): the build stops before
// building, saying what to set; another evaluation error points at Nix's.
func TestRunFlakeWithoutPlatform(t *testing.T) {
	for _, tc := range []struct{ nixSays, want string }{
		// Nix 2.26's words, as the test bed's hosts print them.
		{"error:\n       … while evaluating the attribute 'pkgs'\n\n       error: Neither nixpkgs.hostPlatform nor the legacy option nixpkgs.system has been set.\n       You can set nixpkgs.hostPlatform in hardware-configuration.nix by re-running",
			`flake: nixosConfigurations.rpi4 of "github:me/pi" sets no platform (Nix: "Neither nixpkgs.hostPlatform nor the legacy option nixpkgs.system has been set"), and a flake's lib.nixosSystem does not default to the host's. Set nixpkgs.hostPlatform = "aarch64-linux" in that configuration`},
		{"error: attribute 'sdImage' missing",
			"flake: evaluating nixosConfigurations.rpi4 failed (nix eval exited 1); see the errors above and fix the flake"},
	} {
		e := newRunEnv(t, "FAKE_EVAL_ERROR="+tc.nixSays)
		e.publish(true)
		_, err := e.run(context.Background(), e.config(func(c *Config) { c.Flake = "github:me/pi#rpi4" }))
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("Run: %v\nwant %s", err, tc.want)
		}
		if calls, _ := os.ReadFile(e.args + ".calls"); regexp.MustCompile(`(?m)^build `).Match(calls) {
			t.Errorf("a build ran after the evaluation failed:\n%s", calls)
		}
	}
}
