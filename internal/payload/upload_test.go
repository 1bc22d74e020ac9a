package payload

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
)

func TestRunUploadsBuiltInConfiguration(t *testing.T) {
	e := newRunEnv(t)
	e.publish(true)
	key := "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIJw/GPlkoQlfZlY6+D0mbGc0WTg41HU4EtEyCHOx3VX4 me@laptop"
	c := e.config(func(c *Config) {
		c.KeepRemoteFiles = true
		c.SSHAuthorizedKeys = []string{key}
		c.NixOptions = map[string]string{"max-jobs": "8"}
	})
	if _, err := e.run(context.Background(), c); err != nil {
		t.Fatalf("Run: %v\n%s", err, e.ui.all())
	}
	def, _ := os.ReadFile(filepath.Join(e.remote, "nixos", "default.nix"))
	want, _ := hostFiles.ReadFile("hostfiles/default.nix")
	if !bytes.Equal(def, want) {
		t.Fatalf("nixos/default.nix is not the built-in configuration:\n%s", def)
	}
	settings, _ := os.ReadFile(filepath.Join(e.remote, "nixos", "settings.json"))
	if !strings.Contains(string(settings), key) {
		t.Fatalf("settings.json lacks the key:\n%s", settings)
	}
	args, _ := os.ReadFile(e.args)
	if got, want := strings.TrimSuffix(string(args), "\n"), strings.Join(nixArgs(c), "\n"); got != want {
		t.Fatalf("nix ran with\n%s\nwant\n%s", got, want)
	}
	if _, err := os.Stat(filepath.Join(e.remote, "result")); err != nil {
		t.Fatalf("keep_remote_files: the result link is gone: %v", err)
	}
}

func TestRunUploadsUserConfiguration(t *testing.T) {
	for _, asDir := range []bool{true, false} {
		t.Run("dir="+strconv.FormatBool(asDir), func(t *testing.T) {
			e := newRunEnv(t)
			e.publish(true)
			src := filepath.Join(e.dir, "my-config")
			os.MkdirAll(filepath.Join(src, "modules"), 0o755)
			os.WriteFile(filepath.Join(src, "configuration.nix"), []byte("{ imports = [ ./modules/wifi.nix ]; }\n"), 0o644)
			os.WriteFile(filepath.Join(src, "modules", "wifi.nix"), []byte("{ }\n"), 0o644)
			os.WriteFile(filepath.Join(src, "pi.nix"), []byte("{ networking.hostName = \"pi\"; }\n"), 0o644)
			c := e.config(func(c *Config) {
				c.KeepRemoteFiles = true
				if asDir {
					c.NixOSConfig = src
				} else {
					c.NixOSConfig = filepath.Join(src, "pi.nix")
				}
			})
			if _, err := e.run(context.Background(), c); err != nil {
				t.Fatalf("Run: %v\n%s", err, e.ui.all())
			}
			entry, _ := os.ReadFile(filepath.Join(e.remote, "nixos", "default.nix"))
			want, _ := hostFiles.ReadFile("hostfiles/entry.nix")
			if !bytes.Equal(entry, want) {
				t.Fatalf("nixos/default.nix is not entry.nix:\n%s", entry)
			}
			got, _ := os.ReadFile(filepath.Join(e.remote, "nixos", "config", "configuration.nix"))
			if asDir {
				if string(got) != "{ imports = [ ./modules/wifi.nix ]; }\n" {
					t.Fatalf("config/configuration.nix = %q", got)
				}
				if _, err := os.Stat(filepath.Join(e.remote, "nixos", "config", "modules", "wifi.nix")); err != nil {
					t.Fatalf("the directory's other files were not uploaded: %v", err)
				}
			} else if string(got) != "{ networking.hostName = \"pi\"; }\n" {
				t.Fatalf("the file was not uploaded as config/configuration.nix: %q", got)
			}
			if _, err := os.Stat(filepath.Join(e.remote, "nixos", "settings.json")); !os.IsNotExist(err) {
				t.Fatalf("settings.json uploaded for a user configuration")
			}
		})
	}
}

// TestRunUploadsLocalFlake: a flake beside the template is uploaded, named
// absolutely or (as ${path.root} is when packer runs elsewhere) relative to
// where packer runs.
func TestRunUploadsLocalFlake(t *testing.T) {
	for _, relative := range []bool{false, true} {
		t.Run("relative="+strconv.FormatBool(relative), func(t *testing.T) { testRunUploadsLocalFlake(t, relative) })
	}
}

func testRunUploadsLocalFlake(t *testing.T, relative bool) {
	e := newRunEnv(t)
	e.publish(true)
	flake := filepath.Join(e.dir, "tmpl", "pi-flake")
	os.MkdirAll(flake, 0o755)
	os.WriteFile(filepath.Join(flake, "flake.nix"), []byte("{ outputs = _: { }; }\n"), 0o644)
	os.WriteFile(filepath.Join(flake, "flake.lock"), []byte("{}\n"), 0o644)
	ref := flake
	if relative {
		t.Chdir(e.dir)
		ref = "tmpl/pi-flake"
	}
	c := e.config(func(c *Config) { c.KeepRemoteFiles = true; c.Flake = ref + "#rpi4" })
	if _, err := e.run(context.Background(), c); err != nil {
		t.Fatalf("Run: %v\n%s", err, e.ui.all())
	}
	for _, f := range []string{"flake.nix", "flake.lock"} {
		if _, err := os.Stat(filepath.Join(e.remote, "flake", f)); err != nil {
			t.Fatalf("flake/%s not uploaded: %v", f, err)
		}
	}
	args, _ := os.ReadFile(e.args)
	if want := "path:" + e.remote + "/flake#nixosConfigurations.rpi4.config.system.build.sdImage\n"; !strings.HasSuffix(string(args), want) {
		t.Fatalf("nix args:\n%s\nwant the last to be %s", args, want)
	}
	if _, err := os.Stat(filepath.Join(e.remote, "nixos")); !os.IsNotExist(err) {
		t.Fatalf("a flake build uploaded a NixOS configuration directory")
	}
}
