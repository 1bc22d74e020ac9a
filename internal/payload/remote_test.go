package payload

import (
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/nixos-sd/packer-plugin-nixos-sd/internal/remote"
)

// prepared returns a Config prepared as Packer would, with the given changes.
func prepared(t *testing.T, edit func(c *Config)) *Config {
	t.Helper()
	c := &Config{OutputDirectory: filepath.Join(t.TempDir(), "out")}
	if edit != nil {
		edit(c)
	}
	if errs := c.Prepare("test", false); len(errs) > 0 {
		t.Fatalf("Prepare: %v", errs)
	}
	return c
}

// shellWords has a real bash split a command line into its words.
func shellWords(t *testing.T, line string) []string {
	t.Helper()
	out, err := exec.Command("bash", "-c", `f() { for a in "$@"; do printf '%s\0' "$a"; done; }; f `+line).Output()
	if err != nil {
		t.Fatalf("bash could not parse %q: %v", line, err)
	}
	s := strings.TrimSuffix(string(out), "\x00")
	return strings.Split(s, "\x00")
}

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
	if got := shellWords(t, buildCommand(c)); !reflect.DeepEqual(got, want) {
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
	got := shellWords(t, buildCommand(c))
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
		got := shellWords(t, buildCommand(c))
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
	got := shellWords(t, remoteBuildCommand(c))
	want := append([]string{"bash", "/tmp/nixos-sd/build.sh", "build", "/tmp/nixos-sd", "5400"}, shellWords(t, buildCommand(c))...)
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("remoteBuildCommand:\n got %q\nwant %q", got, want)
	}
	if c.BuildTimeoutDuration() != 90*time.Minute {
		t.Fatalf("BuildTimeoutDuration = %s", c.BuildTimeoutDuration())
	}
}

func TestSettingsJSON(t *testing.T) {
	keys := []string{"ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIEXAMPLE me@laptop", "ecdsa-sha2-nistp256 AAAAE2VjZHNh other"}
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

func TestShellQuoteSurvivesBash(t *testing.T) {
	for _, s := range []string{"", "plain", "a b", "it's", `"dq"`, "$HOME", "`id`", "a\nb", "'''", `\`, "*", "x;rm -rf /"} {
		got := shellWords(t, "X "+remote.Quote(s))
		if len(got) != 2 || got[1] != s {
			t.Errorf("remote.Quote(%q) = %s, bash read %q", s, remote.Quote(s), got)
		}
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

func TestEmbeddedFilesLint(t *testing.T) {
	if p, err := exec.LookPath("shellcheck"); err == nil {
		if out, err := exec.Command(p, "remote/build.sh").CombinedOutput(); err != nil {
			t.Errorf("shellcheck remote/build.sh:\n%s", out)
		}
	} else {
		t.Log("shellcheck not installed; make lint checks build.sh")
	}
	if p, err := exec.LookPath("nix-instantiate"); err == nil {
		for _, f := range []string{"remote/default.nix", "remote/entry.nix"} {
			if out, err := exec.Command(p, "--store", "dummy://", "--parse", f).CombinedOutput(); err != nil {
				t.Errorf("nix-instantiate --parse %s:\n%s", f, out)
			}
		}
	} else {
		t.Log("nix-instantiate not installed; make lint parses the .nix files")
	}
	for _, name := range []string{"build.sh", "default.nix", "entry.nix"} {
		b, err := remoteFiles.ReadFile("remote/" + name)
		if err != nil || len(b) == 0 {
			t.Fatalf("embedded %s: %v", name, err)
		}
	}
	def, _ := remoteFiles.ReadFile("remote/default.nix")
	entry, _ := remoteFiles.ReadFile("remote/entry.nix")
	for _, want := range []string{sdImageModule, "services.openssh", "settings.json", "builtins.fromJSON", "sdImage.compressImage = true", "system.stateVersion", "users.users.nixos", "users.users.root.openssh.authorizedKeys.keys"} {
		if !strings.Contains(string(def), want) {
			t.Errorf("default.nix lacks %q", want)
		}
	}
	for _, want := range []string{sdImageModule, "./config/configuration.nix"} {
		if !strings.Contains(string(entry), want) {
			t.Errorf("entry.nix lacks %q", want)
		}
	}
}

func TestParseProbeAndChannels(t *testing.T) {
	info, err := parseProbe("size=123456\nzstd=yes\nmaxsessions=20\n")
	if err != nil || info.size != 123456 || !info.zstd || info.maxSessions != 20 {
		t.Fatalf("parseProbe = %+v, %v", info, err)
	}
	if _, err := parseProbe("zstd=no\n"); err == nil {
		t.Fatal("parseProbe accepted output without a size")
	}
	for _, tc := range []struct{ want, max, got int }{{4, 0, 4}, {32, 0, 7}, {8, 10, 7}, {7, 10, 7}, {32, 20, 17}, {32, 64, 32}, {4, 3, 1}, {4, 1, 1}, {1, 10, 1}} {
		if got := channelsFor(tc.want, tc.max); got != tc.got {
			t.Errorf("channelsFor(%d, %d) = %d, want %d", tc.want, tc.max, got, tc.got)
		}
	}
	for _, tc := range []struct {
		size     int64
		channels int
		compress bool
		want     int64
	}{{10 << 20, 4, false, 1 << 20}, {1 << 30, 4, false, 32 << 20}, {256 << 20, 4, false, 16 << 20},
		// Compressed in transit: up to 96 MiB of file per range, still about
		// four ranges per channel.
		{10 << 20, 4, true, 1 << 20}, {256 << 20, 4, true, 16 << 20}, {1 << 30, 4, true, 64 << 20},
		{4 << 30, 4, true, 96 << 20}, {4 << 30, 1, true, 96 << 20}, {512 << 20, 1, false, 32 << 20}} {
		if got := chooseChunk(tc.size, tc.channels, tc.compress); got != tc.want {
			t.Errorf("chooseChunk(%d, %d, %v) = %d, want %d", tc.size, tc.channels, tc.compress, got, tc.want)
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
	def, _ := remoteFiles.ReadFile("remote/default.nix")
	os.WriteFile(filepath.Join(builtIn, "default.nix"), def, 0o644)
	key := `ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIEXAMPLE "quoted" me@laptop`
	c := prepared(t, func(c *Config) { c.Hostname = "pi-kitchen"; c.SSHAuthorizedKeys = []string{key} })
	js, _ := settingsJSON(c)
	os.WriteFile(filepath.Join(builtIn, "settings.json"), js, 0o644)
	got := eval(`let m = import ` + builtIn + ` { }; in { host = m.networking.hostName; root = m.users.users.root.openssh.authorizedKeys.keys; nixos = m.users.users.nixos.openssh.authorizedKeys.keys; normal = m.users.users.nixos.isNormalUser; ssh = m.services.openssh.enable; compress = m.sdImage.compressImage; state = m.system.stateVersion; imports = map toString m.imports; }`)
	keyJSON, _ := json.Marshal(key)
	want := `{"compress":true,"host":"pi-kitchen","imports":["` + module + `"],"nixos":[` + string(keyJSON) + `],"normal":true,"root":[` + string(keyJSON) + `],"ssh":true,"state":"26.05"}`
	if got != want {
		t.Fatalf("built-in configuration evaluates to\n%s\nwant\n%s", got, want)
	}

	// A user's configuration wrapped by entry.nix.
	user := filepath.Join(dir, "user")
	os.MkdirAll(filepath.Join(user, "config"), 0o755)
	entry, _ := remoteFiles.ReadFile("remote/entry.nix")
	os.WriteFile(filepath.Join(user, "default.nix"), entry, 0o644)
	os.WriteFile(filepath.Join(user, "config", "configuration.nix"), []byte("{ }\n"), 0o644)
	got = eval(`map toString (import ` + user + ` { }).imports`)
	want = `["` + module + `","` + filepath.Join(user, "config", "configuration.nix") + `"]`
	if got != want {
		t.Fatalf("entry.nix imports %s, want %s", got, want)
	}
}
