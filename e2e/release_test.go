//go:build e2e

package e2e

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/nixos-sd/packer-plugin-nixos-sd/internal/testbed"
)

// TestPackerInitFromRelease runs the real `packer init` on the README's
// plugins.pkr.hcl against a stand-in of GitHub's release hosts serving the
// snapshot release that .goreleaser.yml built: Packer finds the tag, fetches
// the checksum file and this platform's archive, and installs the binary. A
// checksum file that does not match the archive makes it refuse. The build
// with the installed plugin is TestAccMinimalExample (acceptance/).
func TestPackerInitFromRelease(t *testing.T) {
	snap := loadSnapshot(t)
	example := filepath.Join(repoRoot(t), "example", "minimal", "plugins.pkr.hcl")
	plugins, err := os.ReadFile(example)
	if err != nil {
		t.Fatal(err)
	}
	installed := filepath.Join("github.com", "nixos-sd", "nixos-sd", snap.BinaryName)

	t.Run("wrong checksum", func(t *testing.T) {
		zipSum := sha256.Sum256(snap.Zip)
		bad := sha256.Sum256([]byte("not the archive"))
		sums := bytes.Replace(snap.Sums, []byte(hex.EncodeToString(zipSum[:])), []byte(hex.EncodeToString(bad[:])), 1)
		if bytes.Equal(sums, snap.Sums) {
			t.Fatalf("%s does not list the archive's SHA-256 %x:\n%s", snap.SumsName, zipSum, snap.Sums)
		}
		host := startRelease(t, snap.Release(sums))
		dir, pluginDir := t.TempDir(), t.TempDir()
		writeTemplate(t, dir, "plugins.pkr.hcl", string(plugins))
		out, code := packerRun(t, dir, append(host.Env(), "PACKER_PLUGIN_PATH="+pluginDir), "init", ".")
		if code == 0 {
			t.Fatalf("packer init installed an archive whose checksum does not match:\n%s", out)
		}
		if !strings.Contains(out, "checksum") {
			t.Errorf("packer init failed, but not over the checksum:\n%s", out)
		}
		checkFetched(t, host, snap)
		if _, err := os.Stat(filepath.Join(pluginDir, installed)); err == nil {
			t.Errorf("the plugin was installed despite the wrong checksum")
		}
	})

	t.Run("release", func(t *testing.T) {
		host := startRelease(t, snap.Release(nil))
		dir, pluginDir := t.TempDir(), t.TempDir()
		writeTemplate(t, dir, "plugins.pkr.hcl", string(plugins))
		env := append(host.Env(), "PACKER_PLUGIN_PATH="+pluginDir)
		out, code := packerRun(t, dir, env, "init", ".")
		if code != 0 {
			t.Fatalf("packer init exited %d:\n%s\nrelease host calls:\n%v", code, out, host.Calls())
		}
		want := "Installed plugin github.com/nixos-sd/nixos-sd v" + snap.Version + " in \"" + filepath.Join(pluginDir, installed) + "\""
		if !strings.Contains(out, want) {
			t.Errorf("packer init's output lacks %q:\n%s", want, out)
		}
		checkFetched(t, host, snap)
		bin, err := os.ReadFile(filepath.Join(pluginDir, installed))
		if err != nil {
			t.Fatalf("the installed plugin: %v", err)
		}
		if !bytes.Equal(bin, snap.Binary) {
			t.Errorf("the installed binary is not the one in %s", snap.ZipName)
		}
		out, code = packerRun(t, dir, []string{"PACKER_PLUGIN_PATH=" + pluginDir}, "plugins", "installed")
		if code != 0 || !strings.Contains(out, filepath.Join(pluginDir, installed)) {
			t.Errorf("packer plugins installed (exit %d) does not list %s:\n%s", code, installed, out)
		}
		// Packer installs only a binary whose describe reports the tag's
		// version; check it too.
		desc, err := exec.Command(filepath.Join(pluginDir, installed), "describe").Output()
		if err != nil || !strings.Contains(string(desc), `"version":"`+snap.Version+`"`) {
			t.Errorf("the installed plugin's describe (%v): %s; want version %s", err, desc, snap.Version)
		}
	})
}

// loadSnapshot reads the snapshot release `make e2e` built.
func loadSnapshot(t *testing.T) *testbed.Snapshot {
	t.Helper()
	dist := os.Getenv(testbed.SnapshotDistEnv)
	if dist == "" {
		t.Fatalf("%s is not set; `make e2e` builds the snapshot (NIXOS_SD_SNAPSHOT_TARGET=host scripts/snapshot.sh) and sets it", testbed.SnapshotDistEnv)
	}
	snap, err := testbed.LoadSnapshot(dist)
	if err != nil {
		t.Fatal(err)
	}
	return snap
}

func startRelease(t *testing.T, assets map[string]map[string][]byte) *testbed.ReleaseHost {
	t.Helper()
	h, err := testbed.StartReleaseHost(t.TempDir(), testbed.PluginRepo, assets)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = h.Close() })
	return h
}

// checkFetched checks that Packer asked releases.hashicorp.com first, then
// found the tag and downloaded the checksum file and the archive from GitHub,
// and asked nothing else.
func checkFetched(t *testing.T, h *testbed.ReleaseHost, snap *testbed.Snapshot) {
	t.Helper()
	var got []string
	for _, c := range h.Calls() {
		got = append(got, c.String())
	}
	dl := "https://github.com/" + testbed.PluginRepo + "/releases/download/v" + snap.Version + "/"
	assets := "https://release-assets.githubusercontent.com/" + testbed.PluginRepo + "/v" + snap.Version + "/"
	want := []string{
		"GET https://releases.hashicorp.com/packer-plugin-nixos-sd/index.json -> 404",
		"GET https://api.github.com/repos/" + testbed.PluginRepo + "/git/matching-refs/tags -> 200",
		"GET " + dl + snap.SumsName + " -> 302",
		"GET " + assets + snap.SumsName + " -> 200",
		"GET " + dl + snap.ZipName + " -> 302",
		"GET " + assets + snap.ZipName + " -> 200",
	}
	if strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Errorf("release host calls:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
}
