package payload

import (
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestLockedURL(t *testing.T) {
	const nar = "sha256-47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU="
	const rev = "9f4128e00b0ae8ec65918efeba59db998750ead6"
	for _, tc := range []struct {
		attrs map[string]any
		want  string
	}{
		{map[string]any{"type": "github", "owner": "NixOS", "repo": "nixpkgs", "rev": rev, "narHash": nar, "lastModified": float64(1780000000)},
			"github:NixOS/nixpkgs/" + rev + "?narHash=sha256-47DEQpj8HBSa%2B/TImW%2B5JCeuQeRkm5NMpJWZG3hSuFU%3D"},
		{map[string]any{"type": "gitlab", "owner": "me", "repo": "pi", "rev": rev, "host": "git.example.org"},
			"gitlab:me/pi/" + rev + "?host=git.example.org"},
		{map[string]any{"type": "git", "url": "https://example.org/x.git", "ref": "main", "rev": rev, "revCount": float64(12), "lastModified": float64(1), "submodules": true},
			"git+https://example.org/x.git?ref=main&rev=" + rev + "&submodules=1"},
		{map[string]any{"type": "tarball", "url": "https://example.org/x.tar.gz", "narHash": nar},
			"https://example.org/x.tar.gz?narHash=sha256-47DEQpj8HBSa%2B/TImW%2B5JCeuQeRkm5NMpJWZG3hSuFU%3D"},
		{map[string]any{"type": "path", "path": "/src/hw", "lastModified": float64(1780000000), "narHash": "sha256-AAAA"},
			"path:/src/hw?lastModified=1780000000&narHash=sha256-AAAA"},
		{map[string]any{"type": "mercurial-ish", "x": "y"}, `{"type":"mercurial-ish","x":"y"}`},
	} {
		if got := lockedURL(tc.attrs); got != tc.want {
			t.Errorf("lockedURL(%v)\n = %s\nwant %s", tc.attrs, got, tc.want)
		}
	}
}

// TestParseFlakeMetadata reads nix flake metadata --json as Nix 2.26 prints
// it: the locked url and revision, and every node of the lock file.
func TestParseFlakeMetadata(t *testing.T) {
	out := `warning: unknown setting 'foo'
{"description":"pi","lastModified":1780000000,"locked":{"owner":"me","repo":"pi","rev":"` + fakeFlakeRevision + `","type":"github"},"locks":{"nodes":{"hw":{"inputs":{"nixpkgs":["nixpkgs"]},"locked":{"owner":"NixOS","repo":"nixos-hardware","rev":"aaaa","type":"github"},"original":{"id":"nixos-hardware","type":"indirect"}},"nixpkgs":{"locked":{"owner":"NixOS","repo":"nixpkgs","rev":"` + fakeRevision + `","type":"github"}},"root":{"inputs":{"hw":"hw","nixpkgs":"nixpkgs"}}},"root":"root","version":7},"original":{"owner":"me","repo":"pi","type":"github"},"originalUrl":"github:me/pi","path":"/nix/store/x-source","resolvedUrl":"github:me/pi","revision":"` + fakeFlakeRevision + `","url":"github:me/pi/` + fakeFlakeRevision + `"}`
	lock, err := parseFlakeMetadata([]byte(out))
	if err != nil {
		t.Fatal(err)
	}
	if lock.URL != "github:me/pi/"+fakeFlakeRevision || lock.Revision != fakeFlakeRevision || lock.nixpkgs != "nixpkgs" || lock.nixpkgsErr != nil {
		t.Errorf("lock = %+v", lock)
	}
	if len(lock.Inputs) != 2 || lock.Inputs["hw"] != (LockedInput{URL: "github:NixOS/nixos-hardware/aaaa", Revision: "aaaa"}) ||
		lock.Inputs["nixpkgs"].Revision != fakeRevision {
		t.Errorf("inputs = %+v", lock.Inputs)
	}
	if _, err := parseFlakeMetadata([]byte(`{"locks":{}}`)); err == nil || !strings.Contains(err.Error(), "no locked url") {
		t.Errorf("metadata without url: %v", err)
	}
}

// TestRunRemoteFlakeLockedBeforeBuild: a remote flake is locked on the host
// before the build, the build uses the locked reference, and the manifest
// records it and every input.
func TestRunRemoteFlakeLockedBeforeBuild(t *testing.T) {
	e := newRunEnv(t)
	e.publish(true)
	c := e.config(func(c *Config) { c.Flake = "github:me/pi#rpi4" })
	res, err := e.run(context.Background(), c)
	if err != nil {
		t.Fatalf("Run: %v\n%s", err, e.ui.all())
	}
	calls, _ := os.ReadFile(e.args + ".calls")
	lines := strings.Split(string(calls), "\n")
	lockAt, buildAt := -1, -1
	for i, l := range lines {
		if strings.HasPrefix(l, "flake metadata ") && strings.HasSuffix(l, " github:me/pi") && lockAt < 0 {
			lockAt = i
		}
		if strings.HasPrefix(l, "build ") {
			buildAt = i
		}
	}
	if lockAt < 0 || buildAt < lockAt {
		t.Fatalf("the flake was not locked before the build:\n%s", calls)
	}
	locked := "github:me/pi/" + fakeFlakeRevision + "?narHash=sha256-BBBB#nixosConfigurations.rpi4.config.system.build.sdImage"
	if !strings.Contains(lines[buildAt], locked) {
		t.Errorf("the build does not use the locked reference %s:\n%s", locked, lines[buildAt])
	}
	if strings.Count(string(calls), "flake metadata") != 1 {
		t.Errorf("the flake was locked more than once (it may have moved in between):\n%s", calls)
	}
	// The build and the platform's evaluation read the lock that metadata
	// made, so a flake without a flake.lock of its own is not locked again.
	ref := "--reference-lock-file " + filepath.Join(c.RemoteDirectory, remoteFlakeLock) + " "
	for _, l := range lines {
		if (strings.HasPrefix(l, "build ") || strings.HasPrefix(l, "eval ") && strings.Contains(l, "--apply")) && !strings.Contains(l, ref) {
			t.Errorf("%q does not read the lock file kept on the host (%s)", l, ref)
		}
	}
	kept, err := os.ReadFile(e.args + ".reflock")
	var lockFile struct {
		Nodes map[string]struct {
			Locked map[string]any `json:"locked"`
		} `json:"nodes"`
	}
	if err != nil || json.Unmarshal(kept, &lockFile) != nil || lockFile.Nodes["nixpkgs_2"].Locked["rev"] != fakeRevision {
		t.Errorf("the lock file the build read: %v, %s", err, kept)
	}
	m := readManifestFile(t, res.ImagePath+".json")
	if m["flake_locked_url"] != "github:me/pi/"+fakeFlakeRevision+"?narHash=sha256-BBBB" || m["flake_revision"] != fakeFlakeRevision ||
		m["nixpkgs_revision"] != fakeRevision || m["nixpkgs_source"] != "flake.lock" ||
		!strings.HasPrefix(m["nixpkgs_url"].(string), "github:NixOS/nixpkgs/"+fakeRevision+"?narHash=") {
		t.Errorf("manifest = %v", m)
	}
	inputs, _ := m["flake_inputs"].(map[string]any)
	utils, _ := inputs["utils"].(map[string]any)
	if len(inputs) != 2 || utils["url"] != "git+https://example.org/utils.git?ref=main&rev=ffff" || utils["revision"] != "ffff" {
		t.Errorf("flake_inputs = %v", m["flake_inputs"])
	}
	if _, ok := m["flake_lock"]; ok {
		t.Errorf("a remote flake's lock file was copied: %v", m["flake_lock"])
	}
}

// TestRunLocalFlakeCopiesLockBack: a local flake's flake.lock, as the build
// left it on the host, lands beside the image; the manifest names it and
// no host path.
func TestRunLocalFlakeCopiesLockBack(t *testing.T) {
	e := newRunEnv(t)
	e.publish(true)
	dir := filepath.Join(e.dir, "pi-flake")
	os.MkdirAll(dir, 0o755)
	os.WriteFile(filepath.Join(dir, "flake.nix"), []byte("{ outputs = _: { }; }\n"), 0o644)
	const lock = `{"nodes":{"nixpkgs":{"locked":{"owner":"NixOS","repo":"nixpkgs","rev":"1111111111111111111111111111111111111111","type":"github"}},"root":{"inputs":{"nixpkgs":"nixpkgs"}}},"root":"root","version":7}` + "\n"
	os.WriteFile(filepath.Join(dir, "flake.lock"), []byte(lock), 0o644)
	c := e.config(func(c *Config) { c.Flake = dir + "#rpi4" })
	res, err := e.run(context.Background(), c)
	if err != nil {
		t.Fatalf("Run: %v\n%s", err, e.ui.all())
	}
	e.outputHolds(testImageName, testImageName+".json", testImageName+".sha256", testImageName+".flake.lock")
	if b, _ := os.ReadFile(res.ImagePath + ".flake.lock"); string(b) != lock {
		t.Errorf("flake.lock beside the image = %q", b)
	}
	m := readManifestFile(t, res.ImagePath+".json")
	if m["flake_lock"] != testImageName+".flake.lock" || m["nixpkgs_revision"] != strings.Repeat("1", 40) {
		t.Errorf("manifest = %v", m)
	}
	if _, ok := m["flake_locked_url"]; ok {
		t.Errorf("the manifest names the host's path: %v", m["flake_locked_url"])
	}
	if calls, _ := os.ReadFile(e.args + ".calls"); strings.Count(string(calls), "flake metadata") != 1 {
		t.Errorf("a local flake is not locked before the build, only read after it:\n%s", calls)
	}
}

// TestRunRemoteFlakeOldNixWarns: a host Nix without --reference-lock-file
// (Debian 12's 2.8) builds the locked reference as before, and the run says
// that the flake's inputs are locked again.
func TestRunRemoteFlakeOldNixWarns(t *testing.T) {
	e := newRunEnv(t, "FAKE_NIX_VERSION=2.8.0")
	e.publish(true)
	c := e.config(func(c *Config) { c.Flake = "github:me/pi#rpi4" })
	if _, err := e.run(context.Background(), c); err != nil {
		t.Fatalf("Run: %v\n%s", err, e.ui.all())
	}
	calls, _ := os.ReadFile(e.args + ".calls")
	if strings.Contains(string(calls), "--reference-lock-file") {
		t.Errorf("Nix 2.8 was given --reference-lock-file:\n%s", calls)
	}
	if !strings.Contains(string(calls), "github:me/pi/"+fakeFlakeRevision) {
		t.Errorf("the build does not use the locked reference:\n%s", calls)
	}
	if w := e.ui.all(); !strings.Contains(w, "Warning: the host's Nix (nix (Nix) 2.8.0) cannot build with a given lock file (--reference-lock-file needs Nix 2.15 or newer)") {
		t.Errorf("no warning:\n%s", w)
	}
}

func readManifestFile(t *testing.T, name string) map[string]any {
	t.Helper()
	b, err := os.ReadFile(name)
	if err != nil {
		t.Fatal(err)
	}
	m := map[string]any{}
	if err := json.Unmarshal(b, &m); err != nil {
		t.Fatalf("%s: %v", name, err)
	}
	return m
}
