package payload

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestCombinations: each option a configuration kind would ignore is
// applied (nixos_config: through plugin.nix) or refused (flake), one case per
// option and kind.
func TestCombinations(t *testing.T) {
	tr := newTestTree(t)
	yes, no := true, false
	type want struct {
		refused string // part of the refusal; "" when accepted
		module  []string
	}
	cases := []struct {
		name string
		c    Config
		want want
	}{
		{"hostname/built-in", Config{Hostname: "pi"}, want{}},
		{"hostname/nixos_config", Config{NixOSConfig: tr.configFile, Hostname: "pi"}, want{module: []string{`networking.hostName = lib.mkForce "pi";`}}},
		{"hostname/flake", Config{Flake: tr.flakeDir + "#rpi", Hostname: "pi"}, want{refused: "hostname: \"pi\" is set with flake; a flake is built as written"}},
		{"ssh_authorized_keys/built-in", Config{SSHAuthorizedKeys: []string{testKey}}, want{}},
		{"ssh_authorized_keys/nixos_config", Config{NixOSConfig: tr.configFile, SSHAuthorizedKeys: []string{testKey}}, want{module: []string{"services.openssh.enable = true;", `"` + testKey + `"`}}},
		{"ssh_authorized_keys/flake", Config{Flake: tr.flakeDir + "#rpi", SSHAuthorizedKeys: []string{testKey}}, want{refused: "ssh_authorized_keys: set with flake; a flake is built as written"}},
		{"use_local_ssh_keys=true/nixos_config", Config{NixOSConfig: tr.configFile, UseLocalSSHKeys: &yes}, want{module: []string{`"` + testKey + `"`}}},
		{"use_local_ssh_keys=false/nixos_config", Config{NixOSConfig: tr.configFile, UseLocalSSHKeys: &no}, want{}},
		{"use_local_ssh_keys=unset/nixos_config", Config{NixOSConfig: tr.configFile}, want{}},
		{"use_local_ssh_keys=true/flake", Config{Flake: tr.flakeDir + "#rpi", UseLocalSSHKeys: &yes}, want{refused: "use_local_ssh_keys: true with flake"}},
		{"use_local_ssh_keys=false/flake", Config{Flake: tr.flakeDir + "#rpi", UseLocalSSHKeys: &no}, want{}},
		{"nixpkgs/flake", Config{Flake: tr.flakeDir + "#rpi", Nixpkgs: "nixos-26.05"}, want{refused: "nixpkgs: \"nixos-26.05\" is set with flake, which pins its own nixpkgs"}},
		{"nixpkgs/nixos_config", Config{NixOSConfig: tr.configFile, Nixpkgs: "nixos-25.11"}, want{}},
	}
	// use_local_ssh_keys reads ~/.ssh/*.pub.
	home := t.TempDir()
	os.MkdirAll(filepath.Join(home, ".ssh"), 0o700)
	os.WriteFile(filepath.Join(home, ".ssh", "id_ed25519.pub"), []byte(testKey+"\n"), 0o644)
	t.Setenv("HOME", home)
	t.Setenv("SSH_AUTH_SOCK", "")
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			c := tc.c
			c.OutputDirectory = filepath.Join(t.TempDir(), "out")
			errs := c.Prepare("rpi", false)
			got := joinErrors(errs)
			if tc.want.refused != "" {
				if !strings.Contains(got, tc.want.refused) {
					t.Fatalf("errors:\n%s\nwant one saying %q", got, tc.want.refused)
				}
				return
			}
			if len(errs) > 0 {
				t.Fatalf("refused:\n%s", got)
			}
			mod := pluginModule(&c)
			if len(tc.want.module) == 0 && mod != "" {
				t.Fatalf("plugin module added:\n%s", mod)
			}
			for _, w := range tc.want.module {
				if !strings.Contains(mod, w) {
					t.Errorf("plugin module lacks %q:\n%s", w, mod)
				}
			}
		})
	}
}

// TestPlaceholderKeyRefused: a nixos_config still holding the example's
// placeholder key (or any string that looks like a key and is not one) is
// refused, naming the file and line; real keys pass.
func TestPlaceholderKeyRefused(t *testing.T) {
	dir := t.TempDir()
	write := func(name, body string) string {
		p := filepath.Join(dir, name)
		os.MkdirAll(filepath.Dir(p), 0o755)
		os.WriteFile(p, []byte(body), 0o644)
		return p
	}
	good := write("good/configuration.nix", "{ users.users.root.openssh.authorizedKeys.keys = [ \""+testKey+"\" ]; }\n")
	placeholder := write("ph.nix", "{\n  users.users.root.openssh.authorizedKeys.keys = [\n    \"ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIPLACEHOLDERreplaceWithYourOwnKeyXXXXXXXXXXXX you@example\"\n  ];\n}\n")
	dots := write("dots/configuration.nix", "{ }\n")
	write("dots/users.nix", "{ keys = [ \"ssh-ed25519 AAAA... you@laptop\" ]; }\n")
	for _, tc := range []struct {
		path, refused string
	}{
		{good, ""},
		{placeholder, "ph.nix:3 holds"},
		{filepath.Dir(dots), "users.nix:1 holds"},
	} {
		c := Config{NixOSConfig: tc.path, OutputDirectory: filepath.Join(t.TempDir(), "out")}
		got := joinErrors(c.Prepare("rpi", false))
		if tc.refused == "" && got != "" || tc.refused != "" && !strings.Contains(got, tc.refused) {
			t.Errorf("nixos_config %s: errors %q, want %q", tc.path, got, tc.refused)
		}
		if tc.refused != "" && !strings.Contains(got, "use_local_ssh_keys = true") {
			t.Errorf("nixos_config %s: the refusal %q does not say what to do", tc.path, got)
		}
	}
}
