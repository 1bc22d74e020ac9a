package provisioner

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/nixos-sd/packer-plugin-nixos-sd/internal/payload"
)

func TestProvisionerPrepareDefaults(t *testing.T) {
	t.Chdir(t.TempDir())
	var p Provisioner
	if err := p.Prepare(map[string]interface{}{"packer_build_name": "aarch64"}); err != nil {
		t.Fatalf("Prepare of an empty configuration failed: %v", err)
	}
	c := p.config
	if c.Nixpkgs != payload.DefaultNixpkgs {
		t.Errorf("nixpkgs = %q, want %q", c.Nixpkgs, payload.DefaultNixpkgs)
	}
	if c.Hostname != "nixos" {
		t.Errorf("hostname = %q, want nixos", c.Hostname)
	}
	if c.OutputDirectory != "output-aarch64" {
		t.Errorf("output_directory = %q, want output-aarch64", c.OutputDirectory)
	}
	if c.Decompress == nil || !*c.Decompress {
		t.Errorf("decompress = %v, want true", c.Decompress)
	}
	if c.DownloadChannels != 0 {
		t.Errorf("download_channels = %d, want 0 (chosen from the link)", c.DownloadChannels)
	}
	if c.BuildTimeoutDuration() != 2*time.Hour {
		t.Errorf("build_timeout = %s, want 2h", c.BuildTimeoutDuration())
	}
	if c.RemoteDirectory != "" {
		t.Errorf("remote_directory = %q, want none (a new mktemp -d directory per build)", c.RemoteDirectory)
	}
}

func TestProvisionerPrepareDecodesOptions(t *testing.T) {
	t.Chdir(t.TempDir())
	if err := os.WriteFile("configuration.nix", []byte("{ }\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	var p Provisioner
	err := p.Prepare(map[string]interface{}{
		"nixos_config":      "configuration.nix",
		"hostname":          "pi",
		"decompress":        false,
		"download_channels": 8,
		"build_timeout":     "45m",
		"nix_options":       map[string]string{"max-jobs": "4"},
		"output_directory":  "images",
		"remote_directory":  "/var/tmp/pi-build",
		"keep_remote_files": true,
	})
	if err != nil {
		t.Fatalf("Prepare failed: %v", err)
	}
	c := p.config
	if c.NixOSConfig != "configuration.nix" || c.Hostname != "pi" || *c.Decompress || c.DownloadChannels != 8 ||
		c.BuildTimeoutDuration() != 45*time.Minute || c.NixOptions["max-jobs"] != "4" || c.OutputDirectory != "images" ||
		c.RemoteDirectory != "/var/tmp/pi-build" || !c.KeepRemoteFiles {
		t.Errorf("options not decoded as given: %+v", c.Config)
	}
}

func TestProvisionerPrepareRejects(t *testing.T) {
	dir := t.TempDir()
	cases := []struct {
		name string
		raw  map[string]interface{}
		want []string
	}{
		{"missing nixos_config", map[string]interface{}{"nixos_config": filepath.Join(dir, "nope.nix")},
			[]string{"nixos_config", "does not exist"}},
		{"nixos_config and flake", map[string]interface{}{"nixos_config": filepath.Join(dir, "nope.nix"), "flake": "github:me/pi#rpi"},
			[]string{"nixos_config and flake"}},
		{"flake without attribute", map[string]interface{}{"flake": "github:me/pi"},
			[]string{"flake", "nixosConfigurations attribute"}},
		{"release branch", map[string]interface{}{"nixpkgs": "nixos-release-x"},
			[]string{"nixpkgs", "not a channel"}},
		{"bad hostname", map[string]interface{}{"hostname": "pi_1"},
			[]string{"hostname", "not a valid host name"}},
		{"bad download_channels", map[string]interface{}{"download_channels": 64},
			[]string{"download_channels", "1 to 32"}},
		{"bad build_timeout", map[string]interface{}{"build_timeout": "tomorrow"},
			[]string{"build_timeout", "positive duration"}},
		{"relative remote_directory", map[string]interface{}{"remote_directory": "tmp/nixos-sd"},
			[]string{"remote_directory", "absolute path"}},
		{"bad key", map[string]interface{}{"ssh_authorized_keys": []string{"not a key"}},
			[]string{"ssh_authorized_keys[0]"}},
		{"unknown option", map[string]interface{}{"instance_types": []string{"c7g.large"}},
			[]string{"instance_types"}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Chdir(t.TempDir())
			var p Provisioner
			err := p.Prepare(tc.raw)
			if err == nil {
				t.Fatalf("Prepare(%v) succeeded; want an error mentioning %q", tc.raw, tc.want)
			}
			for _, w := range tc.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error does not mention %q:\n%s", w, err)
				}
			}
		})
	}
}

func TestProvisionerPrepareOutputDirectoryForce(t *testing.T) {
	t.Chdir(t.TempDir())
	if err := os.Mkdir("output-aarch64", 0o755); err != nil {
		t.Fatal(err)
	}
	var p Provisioner
	err := p.Prepare(map[string]interface{}{"packer_build_name": "aarch64"})
	if err == nil || !strings.Contains(err.Error(), "output_directory") || !strings.Contains(err.Error(), "-force") {
		t.Fatalf("Prepare with an existing output directory: err = %v, want one naming output_directory and -force", err)
	}
	var forced Provisioner
	if err := forced.Prepare(map[string]interface{}{"packer_build_name": "aarch64", "packer_force": true}); err != nil {
		t.Fatalf("Prepare with -force failed: %v", err)
	}
	if !forced.config.Force() {
		t.Error("Force() = false after packer_force")
	}
}
