package payload

import (
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"
)

const testKey = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIGJ3kvYFzKtg5JY0oMz6GJ8wV3lpJxzm8E0Q6VZ3f0gD me@laptop"

// testTree makes a directory holding a configuration.nix, a flake directory
// with flake.nix, a directory without either, and a non-.nix file.
type testTree struct {
	root, configFile, configDir, flakeDir, emptyDir, textFile string
}

func newTestTree(t *testing.T) testTree {
	t.Helper()
	root := t.TempDir()
	tr := testTree{
		root:       root,
		configDir:  filepath.Join(root, "cfg"),
		configFile: filepath.Join(root, "cfg", "configuration.nix"),
		flakeDir:   filepath.Join(root, "flake"),
		emptyDir:   filepath.Join(root, "empty"),
		textFile:   filepath.Join(root, "configuration.txt"),
	}
	for _, d := range []string{tr.configDir, tr.flakeDir, tr.emptyDir} {
		if err := os.Mkdir(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	for _, f := range []string{tr.configFile, filepath.Join(tr.flakeDir, "flake.nix"), tr.textFile} {
		if err := os.WriteFile(f, []byte("{ }\n"), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	return tr
}

func joinErrors(errs []error) string {
	var b strings.Builder
	for _, e := range errs {
		b.WriteString(e.Error())
		b.WriteString("\n")
	}
	return b.String()
}

func TestPrepareDefaults(t *testing.T) {
	t.Chdir(t.TempDir())
	var c Config
	if errs := c.Prepare("rpi", false); len(errs) != 0 {
		t.Fatalf("Prepare of an empty configuration failed:\n%s", joinErrors(errs))
	}
	checks := []struct {
		name      string
		got, want interface{}
	}{
		{"nixpkgs", c.Nixpkgs, DefaultNixpkgs},
		{"hostname", c.Hostname, "nixos"},
		{"output_directory", c.OutputDirectory, "output-rpi"},
		{"download_channels", c.DownloadChannels, 0},
		{"download_connections", c.DownloadConnections, 0},
		{"build_timeout", c.BuildTimeoutDuration(), 2 * time.Hour},
		{"remote_directory", c.RemoteDirectory, ""},
		{"keep_remote_files", c.KeepRemoteFiles, false},
		{"image_name", c.ImageName, ""},
		{"force", c.Force(), false},
	}
	for _, ch := range checks {
		if !reflect.DeepEqual(ch.got, ch.want) {
			t.Errorf("default %s = %#v, want %#v", ch.name, ch.got, ch.want)
		}
	}
	if c.Decompress == nil || !*c.Decompress {
		t.Errorf("default decompress = %v, want true", c.Decompress)
	}
	if DefaultNixpkgs != "nixos-26.05" {
		t.Errorf("DefaultNixpkgs = %q; the docs promise nixos-26.05", DefaultNixpkgs)
	}
}

func TestPrepareDefaultOutputDirectoryWithoutBuildName(t *testing.T) {
	t.Chdir(t.TempDir())
	var c Config
	if errs := c.Prepare("", false); len(errs) != 0 {
		t.Fatalf("Prepare failed:\n%s", joinErrors(errs))
	}
	if c.OutputDirectory != "output-nixos-sd" {
		t.Errorf("output_directory = %q, want output-nixos-sd", c.OutputDirectory)
	}
}

func TestPrepareKeepsExplicitValues(t *testing.T) {
	t.Chdir(t.TempDir())
	tr := newTestTree(t)
	f := false
	c := Config{
		NixOSConfig:       tr.configFile,
		Nixpkgs:           "0123456789abcdef0123456789abcdef01234567",
		SSHAuthorizedKeys: []string{testKey},
		Hostname:          "pi-kitchen",
		NixOptions:        map[string]string{"max-jobs": "8"},
		ImageName:         "pi.img",
		OutputDirectory:   filepath.Join(tr.root, "out"),
		Decompress:        &f,
		DownloadChannels:  16,
		BuildTimeout:      "90m",
		RemoteDirectory:   "/var/tmp/build-here",
	}
	if errs := c.Prepare("rpi", false); len(errs) != 0 {
		t.Fatalf("Prepare failed:\n%s", joinErrors(errs))
	}
	if c.Nixpkgs != "0123456789abcdef0123456789abcdef01234567" || c.Hostname != "pi-kitchen" ||
		c.OutputDirectory != filepath.Join(tr.root, "out") || *c.Decompress || c.DownloadChannels != 16 ||
		c.BuildTimeoutDuration() != 90*time.Minute || c.RemoteDirectory != "/var/tmp/build-here" {
		t.Errorf("Prepare changed explicit values: %+v", c)
	}
}

func TestPrepareAccepts(t *testing.T) {
	tr := newTestTree(t)
	cases := []struct {
		name string
		c    Config
	}{
		{"config file", Config{NixOSConfig: tr.configFile}},
		{"config directory", Config{NixOSConfig: tr.configDir}},
		{"remote flake", Config{Flake: "github:me/nixos-pi#rpi4"}},
		{"local flake", Config{Flake: tr.flakeDir + "#rpi4"}},
		{"nixos channel", Config{Nixpkgs: "nixos-unstable"}},
		{"small channel", Config{Nixpkgs: "nixos-26.05-small"}},
		{"nixpkgs channel", Config{Nixpkgs: "nixpkgs-unstable"}},
		{"revision", Config{Nixpkgs: "0123456789abcdef0123456789abcdef01234567"}},
		{"keys", Config{SSHAuthorizedKeys: []string{testKey, "ecdsa-sha2-nistp256 AAAAE2VjZHNhLXNoYTItbmlzdHAyNTYAAAAIbmlzdHAyNTYAAABBBD23k/HYV84InkjDnp6pwBBXEbs4611G9ok2dQINqa4v8k/+pEwqKqx5kzL592J49J7yJS0fxFE1i0ocQuzerjI=", "sk-ssh-ed25519@openssh.com AAAAGnNrLXNzaC1lZDI1NTE5QG9wZW5zc2guY29tAAAAIFxLmr084fpcDoWpZVkoYNYUxVfEh4u0qlZz8Vo59y8DAAAABHNzaDo="}}},
		{"hostname single letter", Config{Hostname: "p"}},
		{"hostname 63", Config{Hostname: strings.Repeat("a", 63)}},
		{"nix options", Config{NixOptions: map[string]string{"extra-substituters": "https://cache.example.org", "max-jobs": "8"}}},
		{"image name", Config{ImageName: "pi.img"}},
		{"download channels 1", Config{DownloadChannels: 1}},
		{"download channels 32", Config{DownloadChannels: 32}},
		{"build timeout", Config{BuildTimeout: "3h"}},
		{"remote directory", Config{RemoteDirectory: "/var/tmp/nixos-sd"}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Chdir(t.TempDir())
			c := tc.c
			if errs := c.Prepare("rpi", false); len(errs) != 0 {
				t.Errorf("Prepare(%+v) failed:\n%s", tc.c, joinErrors(errs))
			}
		})
	}
}

func TestPrepareRejects(t *testing.T) {
	tr := newTestTree(t)
	existing := filepath.Join(tr.root, "existing-output")
	if err := os.Mkdir(existing, 0o755); err != nil {
		t.Fatal(err)
	}
	cases := []struct {
		name  string
		c     Config
		force bool
		// want are substrings one error must contain: the option's name and
		// what to do about it.
		want []string
	}{
		{"missing nixos_config", Config{NixOSConfig: filepath.Join(tr.root, "nope.nix")}, false,
			[]string{"nixos_config", "does not exist", "configuration.nix"}},
		{"directory without configuration.nix", Config{NixOSConfig: tr.emptyDir}, false,
			[]string{"nixos_config", "has no configuration.nix", "add one"}},
		{"not a .nix file", Config{NixOSConfig: tr.textFile}, false,
			[]string{"nixos_config", "not a .nix file"}},
		{"nixos_config and flake", Config{NixOSConfig: tr.configFile, Flake: "github:me/pi#rpi"}, false,
			[]string{"nixos_config and flake", "one or the other"}},
		{"flake without attribute", Config{Flake: "github:me/nixos-pi"}, false,
			[]string{"flake", "nixosConfigurations attribute", "#rpi4"}},
		{"flake empty attribute", Config{Flake: "github:me/nixos-pi#"}, false,
			[]string{"flake", "nixosConfigurations attribute"}},
		{"flake without reference", Config{Flake: "#rpi4"}, false,
			[]string{"flake", "flake reference"}},
		{"local flake without flake.nix", Config{Flake: tr.emptyDir + "#rpi4"}, false,
			[]string{"flake", "no flake.nix", "before the '#'"}},
		{"bad nixpkgs", Config{Nixpkgs: "unstable"}, false,
			[]string{"nixpkgs", `"unstable"`, "nixos-26.05", "40-hex-digit"}},
		{"short revision", Config{Nixpkgs: "0123456789abcdef"}, false,
			[]string{"nixpkgs", "40-hex-digit"}},
		{"release branch", Config{Nixpkgs: "nixos-release-x"}, false,
			[]string{"nixpkgs", `"nixos-release-x"`, "not a channel", "nixos-26.05"}},
		{"bare release branch", Config{Nixpkgs: "release-26.05"}, false,
			[]string{"nixpkgs", `"release-26.05"`}},
		{"key without type", Config{SSHAuthorizedKeys: []string{"AAAAC3NzaC1lZDI1NTE5AAAAI"}}, false,
			[]string{"ssh_authorized_keys[0]", "not an OpenSSH public key", ".pub"}},
		{"key path instead of key", Config{SSHAuthorizedKeys: []string{testKey, "~/.ssh/id_ed25519.pub"}}, false,
			[]string{"ssh_authorized_keys[1]", "not an OpenSSH public key"}},
		{"key type only", Config{SSHAuthorizedKeys: []string{"ssh-ed25519"}}, false,
			[]string{"ssh_authorized_keys[0]"}},
		{"two keys in one line", Config{SSHAuthorizedKeys: []string{testKey + "\n" + testKey}}, false,
			[]string{"ssh_authorized_keys[0]", "one key per list entry"}},
		{"private key", Config{SSHAuthorizedKeys: []string{"-----BEGIN OPENSSH PRIVATE KEY-----\nb3BlbnNzaC1rZXktdjEAAAAA\n-----END OPENSSH PRIVATE KEY-----"}}, false,
			[]string{"ssh_authorized_keys[0]"}},
		{"hostname with dot", Config{Hostname: "pi.example.org"}, false,
			[]string{"hostname", `"pi.example.org"`, "letters, digits and '-'"}},
		{"hostname underscore", Config{Hostname: "my_pi"}, false,
			[]string{"hostname", "not a valid host name"}},
		{"hostname leading dash", Config{Hostname: "-pi"}, false,
			[]string{"hostname", "not a valid host name"}},
		{"hostname too long", Config{Hostname: strings.Repeat("a", 64)}, false,
			[]string{"hostname", "at most 63"}},
		{"nix option with space", Config{NixOptions: map[string]string{"max jobs": "8"}}, false,
			[]string{"nix_options", `"max jobs"`, "max-jobs"}},
		{"nix option with equals", Config{NixOptions: map[string]string{"max-jobs=8": ""}}, false,
			[]string{"nix_options", "not a Nix setting name"}},
		{"nix option empty", Config{NixOptions: map[string]string{"": "x"}}, false,
			[]string{"nix_options", "not a Nix setting name"}},
		{"image name with slash", Config{ImageName: "images/pi.img"}, false,
			[]string{"image_name", "plain file name", "output_directory"}},
		{"image name dotdot", Config{ImageName: ".."}, false,
			[]string{"image_name", "plain file name"}},
		{"existing output directory", Config{OutputDirectory: existing}, false,
			[]string{"output_directory", "already exists", "-force"}},
		{"download channels negative", Config{DownloadChannels: -1}, false,
			[]string{"download_channels", "out of range", "1 to 32"}},
		{"download channels too many", Config{DownloadChannels: 33}, false,
			[]string{"download_channels", "1 to 32"}},
		{"download connections negative", Config{DownloadConnections: -1}, false,
			[]string{"download_connections", "out of range", "1 to 16"}},
		{"download connections too many", Config{DownloadConnections: 17}, false,
			[]string{"download_connections", "1 to 16"}},
		{"bad build timeout", Config{BuildTimeout: "2 hours"}, false,
			[]string{"build_timeout", `"2 hours"`, "positive duration", "90m"}},
		{"negative build timeout", Config{BuildTimeout: "-1h"}, false,
			[]string{"build_timeout", "positive duration"}},
		{"zero build timeout", Config{BuildTimeout: "0s"}, false,
			[]string{"build_timeout", "positive duration"}},
		{"relative remote directory", Config{RemoteDirectory: "nixos-sd"}, false,
			[]string{"remote_directory", "absolute path"}},
		{"remote directory with space", Config{RemoteDirectory: "/tmp/nixos sd"}, false,
			[]string{"remote_directory", "without spaces or shell characters"}},
		{"remote directory with shell", Config{RemoteDirectory: "/tmp/$(reboot)"}, false,
			[]string{"remote_directory", "shell characters"}},
		{"remote directory root", Config{RemoteDirectory: "/"}, false,
			[]string{"remote_directory", "directory of its own"}},
		{"remote directory top level", Config{RemoteDirectory: "/tmp"}, false,
			[]string{"remote_directory", "directory of its own"}},
		{"remote directory dotdot", Config{RemoteDirectory: "/tmp/../etc"}, false,
			[]string{"remote_directory", "directory of its own"}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Chdir(t.TempDir())
			c := tc.c
			errs := c.Prepare("rpi", tc.force)
			if len(errs) == 0 {
				t.Fatalf("Prepare(%+v) succeeded; want an error mentioning %q", tc.c, tc.want)
			}
			for _, err := range errs {
				msg := err.Error()
				ok := true
				for _, w := range tc.want {
					ok = ok && strings.Contains(msg, w)
				}
				if ok {
					return
				}
			}
			t.Errorf("no error mentions all of %q:\n%s", tc.want, joinErrors(errs))
		})
	}
}

func TestPrepareReportsEveryError(t *testing.T) {
	t.Chdir(t.TempDir())
	c := Config{Hostname: "a b", DownloadChannels: 99, BuildTimeout: "soon", Nixpkgs: "latest"}
	errs := c.Prepare("rpi", false)
	msg := joinErrors(errs)
	for _, w := range []string{"hostname", "download_channels", "build_timeout", "nixpkgs"} {
		if !strings.Contains(msg, w) {
			t.Errorf("errors do not mention %q; every error must be reported at once:\n%s", w, msg)
		}
	}
	if len(errs) != 4 {
		t.Errorf("got %d errors, want 4:\n%s", len(errs), msg)
	}
}

func TestPrepareOutputDirectoryForce(t *testing.T) {
	t.Chdir(t.TempDir())
	if err := os.Mkdir("output-rpi", 0o755); err != nil {
		t.Fatal(err)
	}
	var c Config
	errs := c.Prepare("rpi", false)
	if len(errs) != 1 || !strings.Contains(errs[0].Error(), "output_directory") {
		t.Fatalf("Prepare without -force and an existing output-rpi: errs = %q, want one about output_directory", joinErrors(errs))
	}
	var forced Config
	if errs := forced.Prepare("rpi", true); len(errs) != 0 {
		t.Fatalf("Prepare with -force and an existing output directory failed:\n%s", joinErrors(errs))
	}
	if !forced.Force() {
		t.Error("Force() = false after Prepare with force")
	}
}

func TestBuildTimeoutDurationBeforePrepare(t *testing.T) {
	var c Config
	if d := c.BuildTimeoutDuration(); d != 2*time.Hour {
		t.Errorf("BuildTimeoutDuration of an unprepared config = %s, want 2h", d)
	}
}

func TestPathFlakeIsUploadedAndBuiltFromItsCopy(t *testing.T) {
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "flake.nix"), []byte("{ outputs = _: { }; }\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	c := Config{Flake: "path:" + dir + "#rpi", OutputDirectory: filepath.Join(t.TempDir(), "out")}
	if errs := c.Prepare("rpi", false); len(errs) > 0 {
		t.Fatalf("Prepare: %v", errs)
	}
	c.RemoteDirectory = "/tmp/nixos-sd" // the run's working directory
	if got, want := flakeTarget(&c), "path:/tmp/nixos-sd/"+remoteFlake+"#nixosConfigurations.rpi.config.system.build.sdImage"; got != want {
		t.Errorf("flakeTarget = %q, want %q", got, want)
	}
	c = Config{Flake: "path:" + filepath.Join(dir, "missing") + "#rpi"}
	if errs := c.Prepare("rpi", true); len(errs) == 0 || !strings.Contains(errs[0].Error(), "does not exist") {
		t.Errorf("a path: flake without flake.nix: errors %v", errs)
	}
}

func TestPrepareRejectsCompressedNameForDecompressedImage(t *testing.T) {
	c := &Config{OutputDirectory: filepath.Join(t.TempDir(), "out"), ImageName: "pi.img.zst"}
	errs := c.Prepare("x", false)
	if len(errs) != 1 || !strings.Contains(errs[0].Error(), `name it "pi.img"`) {
		t.Fatalf("errors %v", errs)
	}
	f := false
	c = &Config{OutputDirectory: filepath.Join(t.TempDir(), "out"), ImageName: "pi.img.zst", Decompress: &f}
	if errs := c.Prepare("x", false); len(errs) != 0 {
		t.Fatalf("a .zst name with decompress = false was rejected: %v", errs)
	}
}
