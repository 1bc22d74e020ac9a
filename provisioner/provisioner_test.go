package provisioner

import (
	"github.com/nixos-sd/packer-plugin-nixos-sd/internal/payload"

	"bytes"
	"context"
	"errors"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	packersdk "github.com/hashicorp/packer-plugin-sdk/packer"
)

// bashComm runs commands with a real local bash, with PATH starting at bin.
type bashComm struct{ bin string }

func (c *bashComm) Start(ctx context.Context, rc *packersdk.RemoteCmd) error {
	cmd := exec.Command("bash", "-c", rc.Command)
	cmd.Env = append(os.Environ(), "PATH="+c.bin+":"+os.Getenv("PATH"))
	cmd.Stdout, cmd.Stderr = rc.Stdout, rc.Stderr
	if cmd.Stdout == nil {
		cmd.Stdout = io.Discard
	}
	if cmd.Stderr == nil {
		cmd.Stderr = io.Discard
	}
	if err := cmd.Start(); err != nil {
		return err
	}
	go func() {
		err := cmd.Wait()
		code := 0
		var ee *exec.ExitError
		if errors.As(err, &ee) {
			code = ee.ExitCode()
		} else if err != nil {
			code = 1
		}
		rc.SetExited(code)
	}()
	return nil
}

func (c *bashComm) Upload(dst string, r io.Reader, _ *os.FileInfo) error {
	b, err := io.ReadAll(r)
	if err != nil {
		return err
	}
	return os.WriteFile(dst, b, 0o644)
}

func (c *bashComm) UploadDir(dst, src string, _ []string) error {
	return exec.Command("cp", "-a", strings.TrimSuffix(src, "/")+"/.", dst).Run()
}

func (c *bashComm) Download(string, io.Writer) error { return errors.New("not used") }
func (c *bashComm) DownloadDir(string, string, []string) error {
	return errors.New("not used")
}

// fakeNix publishes a tiny SD image (an MBR with a FAT32 and a Linux
// partition, zstd-compressed) as the build result.
const fakeNix = `#!/bin/bash
[ "$1" = --version ] && { echo "nix (Nix) 2.28.3"; exit 0; }
# An AArch64 Nix (build.sh checks the host's architecture).
case "$*" in *"config show"*) echo "system = aarch64-linux"; exit 0 ;; esac
# The nixpkgs revision lookup after the build (payload's nixpkgs.go).
[ "$1" = eval ] && { echo '{"revision":"5e0ca22929f3342b19569b21b2f3462f053e497b","version":"26.05.20260601.5e0ca22"}'; exit 0; }
echo "building '/nix/store/0000-sd-image.drv'..." >&2
out=; while [ $# -gt 0 ]; do [ "$1" = --out-link ] && out=$2; shift; done
# The result lives in the test's HOME (a temporary folder), never in the source tree.
store=${HOME:?}/fake-nix-store; mkdir -p "$store/sd-image"
img=$store/sd-image/test.img
truncate -s 4M "$img"
printf 'label: dos\nstart=2048, size=2048, type=c\nstart=4096, type=83\n' | /usr/sbin/sfdisk -q --no-reread --no-tell-kernel "$img" >/dev/null
zstd -q --rm "$img"
ln -sfn "$store" "$out"
`

type recordingUi struct {
	packersdk.BasicUi
	mu   sync.Mutex
	says []string
}

func (u *recordingUi) Say(s string)     { u.mu.Lock(); u.says = append(u.says, s); u.mu.Unlock() }
func (u *recordingUi) Message(s string) { u.Say(s) }
func (u *recordingUi) Error(s string)   { u.Say(s) }
func (u *recordingUi) TrackProgress(_ string, _, _ int64, s io.ReadCloser) io.ReadCloser {
	return s
}

func TestProvisionWritesAndListsFiles(t *testing.T) {
	for _, tool := range []string{"zstd", "/usr/sbin/sfdisk"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Skipf("%s is not installed", tool)
		}
	}
	dir := t.TempDir()
	bin := filepath.Join(dir, "bin")
	os.MkdirAll(bin, 0o755)
	os.WriteFile(filepath.Join(bin, "nix"), []byte(fakeNix), 0o755)
	os.WriteFile(filepath.Join(bin, "uname"), []byte("#!/bin/sh\necho aarch64\n"), 0o755)
	os.WriteFile(filepath.Join(bin, "sudo"), []byte("#!/bin/bash\nwhile [ \"${1#-}\" != \"$1\" ]; do shift; done\nexec \"$@\"\n"), 0o755)
	out := filepath.Join(dir, "out")
	var p Provisioner
	if err := p.Prepare(map[string]interface{}{
		"packer_build_name": "pi",
		"output_directory":  out,
		"remote_directory":  filepath.Join(dir, "remote"),
	}); err != nil {
		t.Fatal(err)
	}
	ui := &recordingUi{}
	if err := p.Provision(context.Background(), ui, &bashComm{bin: bin}, nil); err != nil {
		t.Fatalf("Provision: %v\n%s", err, strings.Join(ui.says, "\n"))
	}
	said := strings.Join(ui.says, "\n")
	for _, f := range []string{"test.img", "test.img.sha256", "test.img.json"} {
		path := filepath.Join(out, f)
		if _, err := os.Stat(path); err != nil {
			t.Errorf("%s: %v", f, err)
		}
		if !strings.Contains(said, "  "+path) {
			t.Errorf("Provision did not list %s:\n%s", path, said)
		}
	}
	manifest, _ := os.ReadFile(filepath.Join(out, "test.img.json"))
	if !bytes.Contains(manifest, []byte(`"nixpkgs_revision": "5e0ca22929f3342b19569b21b2f3462f053e497b"`)) {
		t.Errorf("the manifest lacks the nixpkgs revision:\n%s", manifest)
	}
	if !bytes.Contains(manifest, []byte(`"packer_build_name": "pi"`)) {
		t.Errorf("the manifest lacks the build name:\n%s", manifest)
	}
}

func TestProvisionFailsClearlyWithoutCommunicator(t *testing.T) {
	t.Chdir(t.TempDir())
	var p Provisioner
	if err := p.Prepare(map[string]interface{}{}); err != nil {
		t.Fatal(err)
	}
	err := p.Provision(context.Background(), &recordingUi{}, nil, nil)
	if err == nil || !strings.Contains(err.Error(), "communicator") {
		t.Fatalf("want an error about the missing communicator, got %v", err)
	}
}

func TestProvisionReportsBuildFailure(t *testing.T) {
	dir := t.TempDir()
	bin := filepath.Join(dir, "bin")
	os.MkdirAll(bin, 0o755)
	os.WriteFile(filepath.Join(bin, "nix"), []byte("#!/bin/bash\n[ \"$1\" = --version ] && exit 0\ncase \"$*\" in *\"config show\"*) echo 'system = aarch64-linux'; exit 0 ;; esac\necho 'error: attribute sdImage missing' >&2\nexit 1\n"), 0o755)
	os.WriteFile(filepath.Join(bin, "uname"), []byte("#!/bin/sh\necho aarch64\n"), 0o755)
	os.WriteFile(filepath.Join(bin, "sudo"), []byte("#!/bin/bash\nwhile [ \"${1#-}\" != \"$1\" ]; do shift; done\nexec \"$@\"\n"), 0o755)
	var p Provisioner
	if err := p.Prepare(map[string]interface{}{"output_directory": filepath.Join(dir, "out"), "remote_directory": filepath.Join(dir, "remote")}); err != nil {
		t.Fatal(err)
	}
	err := p.Provision(context.Background(), &recordingUi{}, &bashComm{bin: bin}, nil)
	if err == nil || !strings.Contains(err.Error(), "nixos-sd build failed") || !strings.Contains(err.Error(), "error: attribute sdImage missing") {
		t.Fatalf("want the build failure with nix's message, got %v", err)
	}
	// A failed build leaves only its log, which the error names.
	entries, _ := os.ReadDir(filepath.Join(dir, "out"))
	if len(entries) != 1 || entries[0].Name() != payload.BuildLogName || !strings.Contains(err.Error(), payload.BuildLogName) {
		t.Fatalf("a failed build left %v in the output directory (want only %s, named in the error %q)", entries, payload.BuildLogName, err)
	}
}
