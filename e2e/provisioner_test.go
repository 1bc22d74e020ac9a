//go:build e2e

package e2e

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/nixos-sd/packer-plugin-nixos-sd/internal/testbed"
)

// The nixos-sd provisioner through the real Packer: the null builder connects
// over SSH (as admin, with a key made here) to a test bed host, a network
// namespace with a real sshd and the stand-in nix, and the provisioner builds
// and downloads the image from it. No EC2 is involved, so there is no moto.

const standInImage = "nixos-image-sd-card-26.05.20260601.0000000-aarch64-linux.img"

type provHost struct {
	host    *testbed.Host
	keyFile string
	pubKey  string
}

// startProvHost starts a test bed host that accepts a new key.
func startProvHost(t *testing.T, opts testbed.HostPoolOptions) *provHost {
	t.Helper()
	dir := t.TempDir()
	keyFile := filepath.Join(dir, "id_ed25519")
	if out, err := exec.Command("ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "nixos-sd-e2e", "-f", keyFile).CombinedOutput(); err != nil {
		t.Fatalf("ssh-keygen: %v\n%s", err, out)
	}
	pub, err := os.ReadFile(keyFile + ".pub")
	if err != nil {
		t.Fatal(err)
	}
	if opts.WorkDir == "" {
		opts.WorkDir = filepath.Join(dir, "hosts")
	}
	// Kept after Stop so a failure can be looked into (sshd.log, state/).
	opts.KeepDirs = true
	var progress syncLog
	progress.start = time.Now()
	opts.Logf = progress.logf
	pool, err := testbed.NewHostPool(opts)
	if err != nil {
		t.Fatalf("host pool: %v", err)
	}
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("host pool progress:\n%s", progress.String())
		}
		if err := pool.Close(); err != nil {
			t.Errorf("closing the host pool: %v", err)
		}
	})
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	h, err := pool.Start(ctx, "i-provisioner", []string{strings.TrimSpace(string(pub))})
	if err != nil {
		t.Fatalf("starting the host: %v", err)
	}
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("sshd log of the host:\n%s", h.SSHDLog())
			calls, _ := h.StandInCalls()
			t.Logf("stand-in nix calls:\n%s", strings.Join(calls, "\n"))
		}
	})
	return &provHost{host: h, keyFile: keyFile, pubKey: strings.TrimSpace(string(pub))}
}

// provTemplate is a null source reaching the host and the nixos-sd
// provisioner with the given body.
func (p *provHost) template(body string) string {
	return fmt.Sprintf(`packer {
  required_plugins {
    nixos-sd = {
      source  = "github.com/nixos-sd/nixos-sd"
      version = ">= 0.1.0"
    }
  }
}

source "null" "host" {
  communicator         = "ssh"
  ssh_host             = %q
  ssh_port             = %d
  ssh_username         = "admin"
  ssh_private_key_file = %q
  ssh_timeout          = "1m"
}

build {
  sources = ["source.null.host"]

  provisioner "nixos-sd" {
%s
  }
}
`, p.host.Addr, p.host.Port, p.keyFile, body)
}

// remoteDirs are the builds' working directories in the host's /tmp
// (mktemp -d nixos-sd.XXXXXXXXXX), seen from outside its namespace.
func (p *provHost) remoteDirs() []string {
	m, _ := filepath.Glob(filepath.Join(p.host.Dir, "tmp", "nixos-sd.??????????"))
	return m
}

// remoteDir is the one working directory a build kept in the host's /tmp.
func (p *provHost) remoteDir(t *testing.T) string {
	t.Helper()
	dirs := p.remoteDirs()
	if len(dirs) != 1 {
		t.Fatalf("want one working directory in the host's /tmp, found %q", dirs)
	}
	return dirs[0]
}

// workDirPath matches a build's working directory as the host sees it.
var workDirPath = regexp.MustCompile(`/tmp/nixos-sd\.[A-Za-z0-9]{10}`)

// builtImage is the uncompressed image the stand-in made, decompressed here.
func (p *provHost) builtImage(t *testing.T) []byte {
	t.Helper()
	matches, _ := filepath.Glob(filepath.Join(p.host.Dir, "state", "store", "*-nixos-sd-image", "sd-image", standInImage+"*"))
	if len(matches) != 1 {
		t.Fatalf("want one image in the stand-in's store, found %q", matches)
	}
	if !strings.HasSuffix(matches[0], ".zst") {
		b, err := os.ReadFile(matches[0])
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	out, err := exec.Command("zstd", "-dc", matches[0]).Output()
	if err != nil {
		t.Fatalf("zstd -dc %s: %v", matches[0], err)
	}
	return out
}

func (p *provHost) standInCalls(t *testing.T) string {
	t.Helper()
	calls, err := p.host.StandInCalls()
	if err != nil {
		t.Fatal(err)
	}
	return strings.Join(calls, "\n")
}

// packerBuild runs init and build in dir.
func packerBuild(t *testing.T, dir string) (string, int) {
	t.Helper()
	if out, code := packerRun(t, dir, nil, "init", "."); code != 0 {
		t.Fatalf("packer init exited %d:\n%s", code, out)
	}
	return packerRun(t, dir, nil, "build", ".")
}

// checkSDImage checks the file is the image the stand-in built: same bytes,
// an MBR with a FAT32 and a Linux partition, stored sparse, with a matching
// .sha256 and manifest.
func checkSDImage(t *testing.T, path string, want []byte) {
	t.Helper()
	got, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("the image: %v", err)
	}
	if !bytes.Equal(got, want) {
		t.Fatalf("%s (%d bytes) differs from the image built on the host (%d bytes)", path, len(got), len(want))
	}
	if got[510] != 0x55 || got[511] != 0xaa {
		t.Fatalf("%s has no MBR signature", path)
	}
	types := []byte{got[446+4], got[462+4]}
	if types[0] != 0x0b || types[1] != 0x83 {
		t.Fatalf("partition types %x, want 0b (FAT32) and 83 (Linux)", types)
	}
	if n := binary.LittleEndian.Uint32(got[446+8:]); n != 8*2048 {
		t.Errorf("the firmware partition starts at sector %d, want %d", n, 8*2048)
	}
	var st syscall.Stat_t
	if err := syscall.Stat(path, &st); err != nil {
		t.Fatal(err)
	}
	if st.Blocks*512 >= st.Size {
		t.Errorf("%s is not sparse: %d of %d bytes allocated", path, st.Blocks*512, st.Size)
	}
	sum := fmt.Sprintf("%x", sha256.Sum256(got))
	line, err := os.ReadFile(path + ".sha256")
	if err != nil {
		t.Fatal(err)
	}
	if string(line) != sum+"  "+filepath.Base(path)+"\n" {
		t.Errorf("%s.sha256 = %q, want %q", path, line, sum+"  "+filepath.Base(path)+"\n")
	}
	var m map[string]any
	b, err := os.ReadFile(path + ".json")
	if err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(b, &m); err != nil {
		t.Fatalf("manifest: %v\n%s", err, b)
	}
	if m["sha256"] != sum || m["image"] != filepath.Base(path) || m["size"] != float64(len(want)) {
		t.Errorf("manifest does not describe the image:\n%s", b)
	}
}

// dirEntries lists a directory's names, nil when it does not exist.
func dirEntries(t *testing.T, dir string) []string {
	t.Helper()
	entries, err := os.ReadDir(dir)
	if os.IsNotExist(err) {
		return nil
	}
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, e := range entries {
		names = append(names, e.Name())
	}
	return names
}

func TestProvisionerDefaultConfiguration(t *testing.T) {
	p := startProvHost(t, testbed.HostPoolOptions{})
	dir := t.TempDir()
	writeTemplate(t, dir, "build.pkr.hcl", p.template(fmt.Sprintf(`    output_directory    = "out"
    hostname            = "kitchen-pi"
    full_output         = true
    ssh_authorized_keys = [%q]`, p.pubKey)))
	out, code := packerBuild(t, dir)
	if code != 0 {
		t.Fatalf("packer build exited %d:\n%s", code, out)
	}
	final := filepath.Join(dir, "out", standInImage)
	checkSDImage(t, final, p.builtImage(t))
	if got := dirEntries(t, filepath.Join(dir, "out")); strings.Join(got, " ") != standInImage+" "+standInImage+".json "+standInImage+".sha256 nixos-sd-build.log" {
		t.Errorf("output directory holds %q", got)
	}
	for _, want := range []string{
		"nix: these 2 derivations will be built:", // full_output: every line
		"nix: nixos-sd-image> Running phase: buildPhase",
		"SHA-256 verified",
		"nixos-sd wrote:",
		filepath.Join("out", standInImage+".sha256"),
	} {
		if !strings.Contains(out, want) {
			t.Errorf("packer's output lacks %q", want)
		}
	}
	calls := workDirPath.ReplaceAllString(p.standInCalls(t), "/tmp/WORKDIR")
	for _, want := range []string{"nixos-config=/tmp/WORKDIR/nixos", "nixpkgs=channel:nixos-26.05", "--out-link /tmp/WORKDIR/result", "config.system.build.sdImage"} {
		if !strings.Contains(calls, want) {
			t.Errorf("nix was not run with %q:\n%s", want, calls)
		}
	}
	if left := p.remoteDirs(); len(left) != 0 {
		t.Errorf("the remote directory was left on the host: %q", left)
	}
	if t.Failed() {
		t.Logf("packer output:\n%s", out)
	}
}

func TestProvisionerUserConfiguration(t *testing.T) {
	// An x86_64 host whose Nix builds aarch64-linux through extra-platforms:
	// its builtins.currentSystem is x86_64-linux, so only the platform the
	// plugin pins makes the image aarch64-linux.
	p := startProvHost(t, testbed.HostPoolOptions{StandIn: testbed.StandInOptions{Arch: "x86_64-binfmt"}})
	dir := t.TempDir()
	// As the original project's config/sd-image.nix: nixpkgs' installer SD
	// card image, whose module tree the stand-in nixpkgs has.
	writeTemplate(t, dir, "pi/configuration.nix", `{ lib, ... }: {
  imports = [
    <nixpkgs/nixos/modules/installer/sd-card/sd-image-aarch64-installer.nix>
    ./wifi.nix
  ];
  networking.hostName = "pi";
}
`)
	writeTemplate(t, dir, "pi/wifi.nix", "{ ... }: { networking.wireless.enable = true; }\n")
	writeTemplate(t, dir, "build.pkr.hcl", p.template(`    nixos_config      = "pi"
    nixpkgs           = "nixos-25.11"
    output_directory  = "out"
    image_name        = "pi.img"
    keep_remote_files = true
    download_channels = 16`))
	out, code := packerBuild(t, dir)
	if code != 0 {
		t.Fatalf("packer build exited %d:\n%s", code, out)
	}
	checkSDImage(t, filepath.Join(dir, "out", "pi.img"), p.builtImage(t))
	// keep_remote_files: the uploaded configuration is still there.
	kept := p.remoteDir(t)
	for _, f := range []string{"nixos/config/configuration.nix", "nixos/config/wifi.nix", "nixos/default.nix"} {
		if _, err := os.Stat(filepath.Join(kept, f)); err != nil {
			t.Errorf("%s on the host: %v", f, err)
		}
	}
	entry, _ := os.ReadFile(filepath.Join(kept, "nixos/default.nix"))
	if !strings.Contains(string(entry), "sd-image-aarch64.nix") || !strings.Contains(string(entry), "./config/configuration.nix") {
		t.Errorf("the uploaded entry does not wrap the configuration:\n%s", entry)
	}
	if !strings.Contains(out, "this host is x86_64; its Nix builds aarch64-linux through extra-platforms") {
		t.Errorf("the build did not say it runs on an x86_64 host through extra-platforms:\n%s", out)
	}
	// The evaluated configuration's platform, read back from the image
	// derivation Nix evaluated (its name ends in the platform).
	drvs, _ := os.ReadFile(filepath.Join(p.host.Dir, "state", "standin-drvs.log"))
	if !strings.Contains(string(drvs), "-aarch64-linux.img.drv") || strings.Contains(string(drvs), "x86_64-linux.img.drv") {
		t.Errorf("the evaluated image is not aarch64-linux:\n%s", drvs)
	}
	calls := p.standInCalls(t)
	if !strings.Contains(calls, "nixpkgs=channel:nixos-25.11") {
		t.Errorf("nix was not run against nixos-25.11:\n%s", calls)
	}
	// sshd allows 10 sessions unless configured: 16 channels are capped.
	if !strings.Contains(out, "instead of 16") {
		t.Errorf("download_channels = 16 was not capped below sshd's MaxSessions:\n%s", out)
	}
}

// TestProvisionerLocalFlake: a flake beside the template is uploaded and
// built; then, on the same host, a remote flake is locked and built by its
// locked reference. Before, on the same host, its configuration that sets no platform
// is refused, saying what to set, once the real Nix failed to evaluate it
// (a flake's lib.nixosSystem has no default platform). (The refusal of a
// configuration for another platform is a row of the fault matrix.)
func TestProvisionerLocalFlake(t *testing.T) {
	p := startProvHost(t, testbed.HostPoolOptions{StandIn: testbed.StandInOptions{Uncompressed: true}})
	dir := t.TempDir()
	writeTemplate(t, dir, "pi-flake/flake.nix", `{
  inputs.nixpkgs.url = "github:NixOS/nixpkgs/nixos-26.05";
  outputs = { nixpkgs, ... }: {
    nixosConfigurations.rpi4 = nixpkgs.lib.nixosSystem {
      modules = [
        "${nixpkgs}/nixos/modules/installer/sd-card/sd-image-aarch64.nix"
        { nixpkgs.hostPlatform = "aarch64-linux"; }
      ];
    };
    nixosConfigurations.noplatform = nixpkgs.lib.nixosSystem {
      modules = [ "${nixpkgs}/nixos/modules/installer/sd-card/sd-image-aarch64.nix" ];
    };
  };
}
`)
	writeTemplate(t, dir, "build.pkr.hcl", p.template(`    flake            = "./pi-flake#noplatform"
    output_directory = "out"`))
	out, code := packerBuild(t, dir)
	if flat := normalizeSpace(out); code == 0 || !strings.Contains(flat, `flake: nixosConfigurations.noplatform of "./pi-flake" sets no platform`) ||
		!strings.Contains(flat, `Set nixpkgs.hostPlatform = "aarch64-linux" in that configuration`) {
		t.Errorf("a configuration without a platform was not refused as such (exit %d):\n%s", code, out)
	}
	if calls := p.standInCalls(t); strings.Contains(calls, "nix build") {
		t.Errorf("a build ran:\n%s", calls)
	}
	os.RemoveAll(filepath.Join(dir, "out"))
	// The lock the flake's nixpkgs revision is read from (nix flake metadata).
	const lockedRev = "9f4128e00b0ae8ec65918efeba59db998750ead6"
	const lockFile = `{"nodes":{"nixpkgs":{"locked":{"lastModified":1780000000,"narHash":"sha256-47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU=","owner":"NixOS","repo":"nixpkgs","rev":"` + lockedRev + `","type":"github"},"original":{"owner":"NixOS","ref":"nixos-26.05","repo":"nixpkgs","type":"github"}},"root":{"inputs":{"nixpkgs":"nixpkgs"}}},"root":"root","version":7}
`
	writeTemplate(t, dir, "pi-flake/flake.lock", lockFile)
	writeTemplate(t, dir, "build.pkr.hcl", p.template(`    flake            = "./pi-flake#rpi4"
    output_directory = "out"`))
	out, code = packerBuild(t, dir)
	if code != 0 {
		t.Fatalf("packer build exited %d:\n%s", code, out)
	}
	checkSDImage(t, filepath.Join(dir, "out", standInImage), p.builtImage(t))
	calls := workDirPath.ReplaceAllString(p.standInCalls(t), "/tmp/WORKDIR")
	if !strings.Contains(calls, "path:/tmp/WORKDIR/flake\\#nixosConfigurations.rpi4.config.system.build.sdImage") &&
		!strings.Contains(calls, "path:/tmp/WORKDIR/flake#nixosConfigurations.rpi4.config.system.build.sdImage") {
		t.Errorf("nix did not build the uploaded flake:\n%s", calls)
	}
	if m := readManifest(t, filepath.Join(dir, "out", standInImage)); m["nixpkgs_revision"] != lockedRev || m["nixpkgs_source"] != "flake.lock" {
		t.Errorf("the manifest's nixpkgs revision = %v (%v), want the flake.lock's %s", m["nixpkgs_revision"], m["nixpkgs_source"], lockedRev)
	} else if in, _ := m["flake_inputs"].(map[string]any); fmt.Sprint(in["nixpkgs"]) != "map[revision:"+lockedRev+" url:github:NixOS/nixpkgs/"+lockedRev+"?narHash=sha256-47DEQpj8HBSa%2B/TImW%2B5JCeuQeRkm5NMpJWZG3hSuFU%3D]" ||
		m["flake_lock"] != standInImage+".flake.lock" {
		t.Errorf("the manifest's flake_inputs = %v, flake_lock = %v", m["flake_inputs"], m["flake_lock"])
	}
	// The flake.lock the host had after the build, beside the image.
	if b, err := os.ReadFile(filepath.Join(dir, "out", standInImage+".flake.lock")); err != nil || string(b) != lockFile {
		t.Errorf("the flake.lock beside the image = %q (%v), want the uploaded one", b, err)
	}
	// An uncompressed image travels compressed.
	if !strings.Contains(out, "compressed in transit with zstd") {
		t.Errorf("the uncompressed image was not compressed in transit:\n%s", out)
	}

	// A remote flake is locked on the host before the build, which builds
	// the locked reference; the manifest records it (no lock file is copied).
	writeTemplate(t, dir, "build.pkr.hcl", p.template(`    flake            = "github:me/nixos-pi/main#rpi4"
    output_directory = "out-remote"`))
	out, code = packerBuild(t, dir)
	if code != 0 {
		t.Fatalf("packer build of a remote flake exited %d:\n%s", code, out)
	}
	m := readManifest(t, filepath.Join(dir, "out-remote", standInImage))
	locked, _ := m["flake_locked_url"].(string)
	rev, _ := m["flake_revision"].(string)
	if !regexp.MustCompile(`^github:me/nixos-pi/[0-9a-f]{40}\?narHash=sha256-`).MatchString(locked) || !strings.Contains(locked, "/"+rev+"?") ||
		m["nixpkgs_source"] != "flake.lock" || m["nixpkgs_revision"] == "" {
		t.Errorf("the manifest of a remote flake: flake_locked_url %v, flake_revision %v, nixpkgs %v (%v)", m["flake_locked_url"], m["flake_revision"], m["nixpkgs_revision"], m["nixpkgs_source"])
	}
	lockAt, buildAt := -1, -1
	for i, c := range strings.Split(strings.ReplaceAll(p.standInCalls(t), `\`, ""), "\n") {
		if strings.HasPrefix(c, "nix flake metadata ") && strings.Contains(c, " github:me/nixos-pi/main ") && lockAt < 0 {
			lockAt = i
		}
		if strings.HasPrefix(c, "nix build ") && strings.Contains(c, " "+locked+"#nixosConfigurations.rpi4.config.system.build.sdImage") {
			buildAt = i
		}
	}
	if lockAt < 0 || buildAt < lockAt {
		t.Errorf("the remote flake was not locked before a build of its locked reference %s (lock at call %d, build at %d):\n%s", locked, lockAt, buildAt, p.standInCalls(t))
	}
	if _, err := os.Stat(filepath.Join(dir, "out-remote", standInImage+".flake.lock")); err == nil {
		t.Error("a remote flake's lock file was copied beside the image")
	}
	// The flake has no flake.lock and its nixpkgs branch moves between two
	// lockings on the test bed: the build read the lock made before it
	// (--reference-lock-file), so it built the nixpkgs the manifest names.
	recs, err := p.host.FlakeInputRecords()
	if err != nil {
		t.Fatal(err)
	}
	built := ""
	for _, r := range recs {
		if after, ok := strings.CutPrefix(r, "build "+locked+" nixpkgs "); ok {
			built = after
		}
	}
	if built == "" || built != m["nixpkgs_revision"] {
		t.Errorf("the remote flake's build used nixpkgs %q, the manifest names %v (stand-in records %q)", built, m["nixpkgs_revision"], recs)
	}

	// The same host, whose Nix is installed now, builds example/provisioner.
	buildProvisionerExample(t, p)
}

// buildProvisionerExample builds example/provisioner as shipped on the
// host: its only variable given is host (the host's address; sshd answers on
// port 22 there), and the null builder logs in as admin through an SSH agent
// holding the host's key, as the example's ssh_agent_auth says.
func buildProvisionerExample(t *testing.T, p *provHost) {
	t.Helper()
	if p.host.Port != 22 {
		t.Fatalf("the host answers SSH on port %d; example/provisioner has no port variable", p.host.Port)
	}
	root := t.TempDir()
	copyTree(t, filepath.Join(repoRoot(t), "example"), root)
	dir := filepath.Join(root, "provisioner")
	sock := filepath.Join(t.TempDir(), "agent.sock")
	agent := exec.Command("ssh-agent", "-D", "-a", sock)
	if err := agent.Start(); err != nil {
		t.Fatalf("ssh-agent: %v", err)
	}
	t.Cleanup(func() { agent.Process.Kill(); agent.Wait() })
	if !waitForFile(t, sock, 10*time.Second) {
		t.Fatalf("ssh-agent did not open %s", sock)
	}
	if out, err := exec.Command("env", "SSH_AUTH_SOCK="+sock, "ssh-add", p.keyFile).CombinedOutput(); err != nil {
		t.Fatalf("ssh-add: %v\n%s", err, out)
	}
	env := []string{"SSH_AUTH_SOCK=" + sock}
	if out, code := packerRun(t, dir, env, "init", "."); code != 0 {
		t.Fatalf("packer init of example/provisioner exited %d:\n%s", code, out)
	}
	out, code := packerRun(t, dir, env, "build", "-var", "host="+p.host.Addr, ".")
	if code != 0 {
		t.Fatalf("packer build of example/provisioner exited %d:\n%s", code, out)
	}
	image := filepath.Join(dir, "output-aarch64", standInImage)
	checkBuiltImage(t, image)
	if m := readManifest(t, image); m["config_source"] != "nixos_config" {
		t.Errorf("example/provisioner's image was built from %v, want its nixos_config", m["config_source"])
	}
}

// waitForFile waits up to within for path to exist.
func waitForFile(t *testing.T, path string, within time.Duration) bool {
	t.Helper()
	deadline := time.Now().Add(within)
	for time.Now().Before(deadline) {
		if _, err := os.Stat(path); err == nil {
			return true
		}
		time.Sleep(100 * time.Millisecond)
	}
	return false
}
