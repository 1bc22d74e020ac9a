package payload

import (
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/nixos-sd/packer-plugin-nixos-sd/internal/remotecmd/remotecmdtest"
)

func TestBuildCommandDefaultConfiguration(t *testing.T) {
	c := prepared(t, nil)
	want := []string{"nix", "build",
		"--extra-experimental-features", "nix-command flakes",
		"--print-build-logs",
		"--out-link", "/tmp/nixos-sd/result",
		"--file", "<nixpkgs/nixos>",
		"-I", "nixos-config=/tmp/nixos-sd/nixos",
		"-I", "nixpkgs=channel:nixos-26.05",
		"config.system.build.sdImage",
	}
	if got := remotecmdtest.ShellWords(t, buildCommand(c)); !reflect.DeepEqual(got, want) {
		t.Fatalf("buildCommand words:\n got %q\nwant %q", got, want)
	}
	if !strings.Contains(buildCommand(c), "'<nixpkgs/nixos>'") || !strings.Contains(buildCommand(c), "'nix-command flakes'") {
		t.Fatalf("buildCommand does not quote its arguments: %s", buildCommand(c))
	}
}

func TestBuildCommandRevisionAndOptions(t *testing.T) {
	rev := "0123456789abcdef0123456789abcdef01234567"
	c := prepared(t, func(c *Config) {
		c.Nixpkgs = rev
		c.RemoteDirectory = "/var/tmp/build"
		c.NixOptions = map[string]string{
			"max-jobs":            "8",
			"extra-substituters":  "https://cache.example.org https://other.example.org",
			"trusted-public-keys": "it's 'quoted' $HOME `x`",
		}
	})
	got := remotecmdtest.ShellWords(t, buildCommand(c))
	want := []string{"nix", "build",
		"--extra-experimental-features", "nix-command flakes",
		"--print-build-logs",
		"--out-link", "/var/tmp/build/result",
		"--option", "extra-substituters", "https://cache.example.org https://other.example.org",
		"--option", "max-jobs", "8",
		"--option", "trusted-public-keys", "it's 'quoted' $HOME `x`",
		"--file", "<nixpkgs/nixos>",
		"-I", "nixos-config=/var/tmp/build/nixos",
		"-I", "nixpkgs=https://github.com/NixOS/nixpkgs/archive/" + rev + ".tar.gz",
		"config.system.build.sdImage",
	}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("buildCommand words:\n got %q\nwant %q", got, want)
	}
}

func TestBuildCommandFlakes(t *testing.T) {
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "flake.nix"), []byte("{ outputs = _: { }; }\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	wd, _ := os.Getwd()
	rel, err := filepath.Rel(wd, dir)
	if err != nil {
		t.Fatal(err)
	}
	cases := []struct{ flake, target string }{
		{"github:me/nixos-pi#rpi4", "github:me/nixos-pi#nixosConfigurations.rpi4.config.system.build.sdImage"},
		{"git+https://example.org/pi.git?ref=main#pi", "git+https://example.org/pi.git?ref=main#nixosConfigurations.pi.config.system.build.sdImage"},
		{dir + "#rpi3", "path:/tmp/nixos-sd/flake#nixosConfigurations.rpi3.config.system.build.sdImage"},
		{"./" + rel + "#rpi3", "path:/tmp/nixos-sd/flake#nixosConfigurations.rpi3.config.system.build.sdImage"},
	}
	for _, tc := range cases {
		c := prepared(t, func(c *Config) { c.Flake = tc.flake })
		got := remotecmdtest.ShellWords(t, buildCommand(c))
		if got[len(got)-1] != tc.target {
			t.Errorf("flake %q: target %q, want %q", tc.flake, got[len(got)-1], tc.target)
		}
		for _, w := range got {
			if w == "--file" || strings.HasPrefix(w, "nixpkgs=") {
				t.Errorf("flake %q: a flake build must not use %q: %q", tc.flake, w, got)
			}
		}
	}
}

func TestRemoteBuildCommandCarriesTimeout(t *testing.T) {
	c := prepared(t, func(c *Config) { c.BuildTimeout = "90m" })
	got := remotecmdtest.ShellWords(t, remoteBuildCommand(c))
	want := append([]string{"bash", "/tmp/nixos-sd/build.sh", "build", "/tmp/nixos-sd", "5400", "--sums=image"}, remotecmdtest.ShellWords(t, buildCommand(c))...)
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("remoteBuildCommand:\n got %q\nwant %q", got, want)
	}
	if c.BuildTimeoutDuration() != 90*time.Minute {
		t.Fatalf("BuildTimeoutDuration = %s", c.BuildTimeoutDuration())
	}
}

func TestRangeCommand(t *testing.T) {
	got := rangeCommand("/nix/store/x-sd/sd-image/a b.img", 33554432, 1048576, false)
	want := "dd if='/nix/store/x-sd/sd-image/a b.img' bs=1M iflag=skip_bytes,count_bytes skip=33554432 count=1048576 status=none"
	if got != want {
		t.Fatalf("rangeCommand = %s", got)
	}
	if got := rangeCommand("/f.img", 0, 10, true); !strings.HasSuffix(got, " | zstd -1 -q -c") {
		t.Fatalf("compressed rangeCommand = %s", got)
	}
}

func TestCleanupTouchesOnlyOwnEntries(t *testing.T) {
	rd := t.TempDir()
	c := prepared(t, func(c *Config) { c.RemoteDirectory = rd })
	for _, n := range []string{"build.sh", "nixos/default.nix", "flake/flake.nix", "users-file.txt"} {
		p := filepath.Join(rd, n)
		os.MkdirAll(filepath.Dir(p), 0o755)
		os.WriteFile(p, []byte("x"), 0o644)
	}
	os.Symlink("/nonexistent", filepath.Join(rd, "result"))
	if out, err := exec.Command("bash", "-c", cleanupCommand(c)).CombinedOutput(); err != nil {
		t.Fatalf("cleanup: %v %s", err, out)
	}
	entries, _ := os.ReadDir(rd)
	if len(entries) != 1 || entries[0].Name() != "users-file.txt" {
		t.Fatalf("after cleanup %s holds %v; want only the user's file", rd, entries)
	}
	os.Remove(filepath.Join(rd, "users-file.txt"))
	if out, err := exec.Command("bash", "-c", cleanupCommand(c)).CombinedOutput(); err != nil {
		t.Fatalf("cleanup: %v %s", err, out)
	}
	if _, err := os.Stat(rd); !os.IsNotExist(err) {
		t.Fatalf("an empty remote directory was not removed: %v", err)
	}
}
