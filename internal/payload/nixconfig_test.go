package payload

import (
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
)

func TestSettingsJSON(t *testing.T) {
	keys := []string{"ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIJw/GPlkoQlfZlY6+D0mbGc0WTg41HU4EtEyCHOx3VX4 me@laptop", "ecdsa-sha2-nistp256 AAAAE2VjZHNhLXNoYTItbmlzdHAyNTYAAAAIbmlzdHAyNTYAAABBBD23k/HYV84InkjDnp6pwBBXEbs4611G9ok2dQINqa4v8k/+pEwqKqx5kzL592J49J7yJS0fxFE1i0ocQuzerjI= other"}
	c := prepared(t, func(c *Config) { c.Hostname = "pi-kitchen"; c.SSHAuthorizedKeys = keys; c.Nixpkgs = "nixos-25.11" })
	b, err := settingsJSON(c)
	if err != nil {
		t.Fatal(err)
	}
	var got struct {
		Hostname     string   `json:"hostname"`
		Keys         []string `json:"ssh_authorized_keys"`
		StateVersion string   `json:"state_version"`
	}
	if err := json.Unmarshal(b, &got); err != nil {
		t.Fatal(err)
	}
	if got.Hostname != "pi-kitchen" || !reflect.DeepEqual(got.Keys, keys) || got.StateVersion != "25.11" {
		t.Fatalf("settings.json = %s", b)
	}

	// Defaults: host name nixos, an empty key list (not null: default.nix
	// assigns it to a list option), the default release.
	c = prepared(t, nil)
	b, _ = settingsJSON(c)
	if !strings.Contains(string(b), `"ssh_authorized_keys": []`) || !strings.Contains(string(b), `"hostname": "nixos"`) || !strings.Contains(string(b), `"state_version": "26.05"`) {
		t.Fatalf("default settings.json = %s", b)
	}
}

func TestStateVersion(t *testing.T) {
	for in, want := range map[string]string{
		"nixos-26.05":       "26.05",
		"nixos-25.11-small": "25.11",
		"nixos-unstable":    "26.05",
		"nixpkgs-unstable":  "26.05",
		"0123456789abcdef0123456789abcdef01234567": "26.05",
	} {
		if got := stateVersion(in); got != want {
			t.Errorf("stateVersion(%q) = %q, want %q", in, got, want)
		}
	}
}

// TestNixConfigurationsEvaluate has the real Nix evaluate the uploaded
// configuration directory as nixpkgs/nixos would import it (nixos-config names
// the directory), against a stand-in nixpkgs holding the SD image module.
func TestNixConfigurationsEvaluate(t *testing.T) {
	nixInstantiate, err := exec.LookPath("nix-instantiate")
	if err != nil {
		t.Skip("nix-instantiate is not installed (make lint needs it too)")
	}
	dir := t.TempDir()
	np := filepath.Join(dir, "nixpkgs")
	module := filepath.Join(np, "nixos/modules/installer/sd-card/sd-image-aarch64.nix")
	os.MkdirAll(filepath.Dir(module), 0o755)
	os.WriteFile(module, []byte("{ }\n"), 0o644)
	eval := func(expr string) string {
		t.Helper()
		out, err := exec.Command(nixInstantiate, "--store", "dummy://", "-I", "nixpkgs="+np, "--eval", "--strict", "--json", "-E", expr).CombinedOutput()
		if err != nil {
			t.Fatalf("nix-instantiate: %v\n%s", err, out)
		}
		return strings.TrimSpace(string(out))
	}

	// The built-in configuration with a settings.json made by settingsJSON.
	builtIn := filepath.Join(dir, "builtin")
	os.MkdirAll(builtIn, 0o755)
	def, _ := hostFiles.ReadFile("hostfiles/default.nix")
	os.WriteFile(filepath.Join(builtIn, "default.nix"), def, 0o644)
	key := `ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIJw/GPlkoQlfZlY6+D0mbGc0WTg41HU4EtEyCHOx3VX4 "quoted" me@laptop`
	c := prepared(t, func(c *Config) { c.Hostname = "pi-kitchen"; c.SSHAuthorizedKeys = []string{key} })
	js, _ := settingsJSON(c)
	os.WriteFile(filepath.Join(builtIn, "settings.json"), js, 0o644)
	got := eval(`let m = import ` + builtIn + ` { }; in { host = m.networking.hostName; root = m.users.users.root.openssh.authorizedKeys.keys; nixos = m.users.users.nixos.openssh.authorizedKeys.keys; normal = m.users.users.nixos.isNormalUser; ssh = m.services.openssh.enable; compress = m.sdImage.compressImage; state = m.system.stateVersion; imports = map toString m.imports; platform = m.nixpkgs.hostPlatform; }`)
	keyJSON, _ := json.Marshal(key)
	want := `{"compress":true,"host":"pi-kitchen","imports":["` + module + `"],"nixos":[` + string(keyJSON) + `],"normal":true,"platform":"aarch64-linux","root":[` + string(keyJSON) + `],"ssh":true,"state":"26.05"}`
	if got != want {
		t.Fatalf("built-in configuration evaluates to\n%s\nwant\n%s", got, want)
	}

	// A user's configuration wrapped by entry.nix.
	user := filepath.Join(dir, "user")
	os.MkdirAll(filepath.Join(user, "config"), 0o755)
	entry, _ := hostFiles.ReadFile("hostfiles/entry.nix")
	os.WriteFile(filepath.Join(user, "default.nix"), entry, 0o644)
	os.WriteFile(filepath.Join(user, "config", "configuration.nix"), []byte("{ }\n"), 0o644)
	cfgFile := filepath.Join(user, "config", "configuration.nix")
	bare := prepared(t, func(c *Config) { c.NixOSConfig = cfgFile })
	os.WriteFile(filepath.Join(user, "plugin.nix"), []byte(pluginModuleFile(bare)), 0o644)
	// It pins the platform, as a default a configuration may set too.
	if got := eval(`(import ` + user + ` { lib.mkDefault = v: { _type = "override"; priority = 1000; content = v; }; }).nixpkgs.hostPlatform`); got != `{"_type":"override","content":"aarch64-linux","priority":1000}` {
		t.Fatalf("entry.nix's nixpkgs.hostPlatform is %s, want aarch64-linux as a default", got)
	}
	got = eval(`map toString (import ` + user + ` { lib = { }; }).imports`)
	want = `["` + module + `","` + cfgFile + `","` + filepath.Join(user, "plugin.nix") + `"]`
	if got != want {
		t.Fatalf("entry.nix imports %s, want %s", got, want)
	}
	if got := eval(`import ` + filepath.Join(user, "plugin.nix")); got != "{}" {
		t.Fatalf("plugin.nix without hostname and keys evaluates to %s, want {}", got)
	}

	// The template's hostname and keys reach a nixos_config through plugin.nix,
	// quoted as Nix strings (a comment may hold quotes and ${).
	odd := `ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIJw/GPlkoQlfZlY6+D0mbGc0WTg41HU4EtEyCHOx3VX4 "q" ${x} \n me`
	withKeys := prepared(t, func(c *Config) { c.NixOSConfig = cfgFile; c.Hostname = "pi-den"; c.SSHAuthorizedKeys = []string{odd} })
	os.WriteFile(filepath.Join(user, "plugin.nix"), []byte(pluginModuleFile(withKeys)), 0o644)
	got = eval(`let m = import ` + filepath.Join(user, "plugin.nix") + ` { lib.mkForce = x: x; }; in { host = m.networking.hostName; ssh = m.services.openssh.enable; root = m.users.users.root.openssh.authorizedKeys.keys; }`)
	oddJSON, _ := json.Marshal(odd)
	if want := `{"host":"pi-den","root":[` + string(oddJSON) + `],"ssh":true}`; got != want {
		t.Fatalf("plugin.nix evaluates to\n%s\nwant\n%s", got, want)
	}
}
