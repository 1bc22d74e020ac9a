package payload

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"
)

const testImageName = "nixos-image-sd-card-26.05.20260601.0000000-aarch64-linux.img"

// runEnv is a host for Run on this machine: the local communicator, a fake
// nix on PATH that publishes a prepared result, remote and output
// directories.
type runEnv struct {
	t      *testing.T
	dir    string
	store  string // what the out link points at; holds sd-image/
	remote string
	out    string
	args   string // where the fake nix writes its arguments
	term   string // created when the fake nix gets SIGTERM
	comm   *localComm
	ui     *testUi
	image  string // the uncompressed test image
}

const fakeNix = `#!/bin/bash
if [ "$1" = --version ]; then echo "nix (Nix) 2.28.3"; exit 0; fi
printf '%s\n' "$@" >"$FAKE_ARGS"
echo "these 2 derivations will be built:" >&2
echo "building '/nix/store/0000-nixos-sd-image.drv'..." >&2
echo "nixos-sd-image> Running phase: buildPhase" >&2
if [ -n "${FAKE_FAIL:-}" ]; then
	echo "error: builder for '/nix/store/0000-nixos-sd-image.drv' failed with exit code 1" >&2
	exit 1
fi
if [ -n "${FAKE_SLEEP:-}" ]; then
	# The shell writes the marker itself: timeout passes TERM on to its
	# process group, which would also kill a touch started here.
	trap ': >"$FAKE_TERM"; exit 143' TERM
	sleep "$FAKE_SLEEP" &
	wait
fi
out=
while [ $# -gt 0 ]; do
	if [ "$1" = --out-link ]; then out=$2; fi
	shift
done
ln -sfn "$FAKE_STORE" "$out"
`

func newRunEnv(t *testing.T, env ...string) *runEnv {
	t.Helper()
	dir := t.TempDir()
	e := &runEnv{t: t, dir: dir,
		store:  filepath.Join(dir, "store"),
		remote: filepath.Join(dir, "remote"),
		out:    filepath.Join(dir, "out"),
		args:   filepath.Join(dir, "nix-args"),
		term:   filepath.Join(dir, "nix-got-term"),
		ui:     &testUi{},
		image:  filepath.Join(dir, "original.img"),
	}
	bin := filepath.Join(dir, "bin")
	os.MkdirAll(filepath.Join(e.store, "sd-image"), 0o755)
	os.MkdirAll(bin, 0o755)
	os.WriteFile(filepath.Join(bin, "nix"), []byte(fakeNix), 0o755)
	os.WriteFile(filepath.Join(bin, "sudo"), []byte("#!/bin/bash\nwhile [ \"${1#-}\" != \"$1\" ]; do shift; done\nexec \"$@\"\n"), 0o755)
	e.comm = &localComm{Env: append([]string{
		"PATH=" + bin + ":" + os.Getenv("PATH"),
		"FAKE_ARGS=" + e.args, "FAKE_STORE=" + e.store, "FAKE_TERM=" + e.term,
	}, env...)}
	return e
}

// publish puts the test image into the fake build result, compressed or not.
func (e *runEnv) publish(compressed bool) string {
	e.t.Helper()
	if _, err := os.Stat(e.image); err != nil {
		makeSDImage(e.t, e.image, 64, 6)
	}
	if compressed {
		dst := filepath.Join(e.store, "sd-image", testImageName+".zst")
		zstdFile(e.t, e.image, dst)
		return dst
	}
	dst := filepath.Join(e.store, "sd-image", testImageName)
	b, _ := os.ReadFile(e.image)
	os.WriteFile(dst, b, 0o644)
	return dst
}

func (e *runEnv) config(edit func(c *Config)) *Config {
	e.t.Helper()
	return e.configForce(false, edit)
}

func (e *runEnv) configForce(force bool, edit func(c *Config)) *Config {
	e.t.Helper()
	c := &Config{RemoteDirectory: e.remote, OutputDirectory: e.out, DownloadChannels: 4}
	if edit != nil {
		edit(c)
	}
	if errs := c.Prepare("test", force); len(errs) > 0 {
		e.t.Fatalf("Prepare: %v", errs)
	}
	return c
}

func (e *runEnv) run(ctx context.Context, c *Config) (*Result, error) {
	return Run(ctx, e.ui, e.comm, c, RunOptions{ManifestExtra: map[string]string{"instance_type": "c7g.2xlarge", "sha256": "must not win"}})
}

func sha256Of(t *testing.T, path string) string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	s := sha256.Sum256(b)
	return hex.EncodeToString(s[:])
}

// noPartials fails when the output directory holds any .partial file, or
// anything at all when want is empty.
func (e *runEnv) outputHolds(want ...string) {
	e.t.Helper()
	entries, err := os.ReadDir(e.out)
	if errors.Is(err, os.ErrNotExist) && len(want) == 0 {
		return
	}
	if err != nil {
		e.t.Fatal(err)
	}
	var got []string
	for _, en := range entries {
		got = append(got, en.Name())
	}
	if strings.Join(got, ",") != strings.Join(want, ",") {
		e.t.Fatalf("output directory holds %q, want %q", got, want)
	}
}

func TestRunDefaultConfigurationDecompressesSparse(t *testing.T) {
	e := newRunEnv(t)
	remoteImage := e.publish(true)
	c := e.config(func(c *Config) {
		c.Hostname = "kitchen-pi"
		c.SSHAuthorizedKeys = []string{"ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIEXAMPLE me@laptop"}
	})
	res, err := e.run(context.Background(), c)
	if err != nil {
		t.Fatalf("Run: %v\n%s", err, e.ui.all())
	}
	final := filepath.Join(e.out, testImageName)
	if res.ImagePath != final || res.Compressed || res.RemoteImage != remoteImage {
		t.Fatalf("result %+v", res)
	}
	e.outputHolds(testImageName, testImageName+".json", testImageName+".sha256")
	if got, want := sha256Of(t, final), sha256Of(t, e.image); got != want || res.SHA256 != want {
		t.Fatalf("image sha256 %s, result says %s, original %s", got, res.SHA256, want)
	}
	st, _ := os.Stat(final)
	if st.Size() != 64<<20 || res.Size != st.Size() {
		t.Fatalf("size %d, result %d", st.Size(), res.Size)
	}
	if a := allocated(t, final); a > st.Size()/3 {
		t.Fatalf("the image is not sparse: %d of %d bytes allocated", a, st.Size())
	}
	b, _ := os.ReadFile(final + ".sha256")
	if string(b) != res.SHA256+"  "+testImageName+"\n" {
		t.Fatalf(".sha256 = %q", b)
	}
	var m map[string]any
	b, _ = os.ReadFile(final + ".json")
	if err := json.Unmarshal(b, &m); err != nil {
		t.Fatalf("manifest: %v\n%s", err, b)
	}
	zsum := sha256Of(t, remoteImage)
	for k, want := range map[string]any{"image": testImageName, "sha256": res.SHA256, "compressed_sha256": zsum, "size": float64(64 << 20),
		"nixpkgs": "nixos-26.05", "config_source": "built-in", "hostname": "kitchen-pi", "instance_type": "c7g.2xlarge", "remote_image": remoteImage} {
		if m[k] != want {
			t.Errorf("manifest %s = %v, want %v", k, m[k], want)
		}
	}
	if tm, ok := m["timings_seconds"].(map[string]any); !ok || tm["build"] == nil || tm["download"] == nil || tm["total"] == nil {
		t.Errorf("manifest timings: %v", m["timings_seconds"])
	}
	if want := []string{final, final + ".sha256", final + ".json"}; strings.Join(res.Files, ",") != strings.Join(want, ",") {
		t.Errorf("Files = %q", res.Files)
	}
	// The remote directory is gone, the build log was shown line by line,
	// and the progress bar saw the whole file.
	if _, err := os.Stat(e.remote); !os.IsNotExist(err) {
		t.Errorf("the remote directory is still there: %v", err)
	}
	all := e.ui.all()
	for _, want := range []string{"nix: building '/nix/store/0000-nixos-sd-image.drv'...", "nix: nixos-sd-image> Running phase: buildPhase", "SHA-256 verified"} {
		if !strings.Contains(all, want) {
			t.Errorf("the output lacks %q:\n%s", want, all)
		}
	}
	zst, _ := os.Stat(remoteImage)
	if got := e.ui.tracked.Load(); got != zst.Size() || e.ui.bars.Load() != 1 {
		t.Errorf("progress: %d bars reported %d bytes, want 1 bar of %d", e.ui.bars.Load(), got, zst.Size())
	}
	// A .zst is sent as is: no range is compressed again.
	for _, cmd := range e.comm.Commands() {
		if strings.Contains(cmd, "zstd -1") {
			t.Errorf("an already compressed image was compressed again: %s", cmd)
		}
	}
}

func TestRunUploadsBuiltInConfiguration(t *testing.T) {
	e := newRunEnv(t)
	e.publish(true)
	key := "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIEXAMPLE me@laptop"
	c := e.config(func(c *Config) {
		c.KeepRemoteFiles = true
		c.SSHAuthorizedKeys = []string{key}
		c.NixOptions = map[string]string{"max-jobs": "8"}
	})
	if _, err := e.run(context.Background(), c); err != nil {
		t.Fatalf("Run: %v\n%s", err, e.ui.all())
	}
	def, _ := os.ReadFile(filepath.Join(e.remote, "nixos", "default.nix"))
	want, _ := remoteFiles.ReadFile("remote/default.nix")
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
			want, _ := remoteFiles.ReadFile("remote/entry.nix")
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

func TestRunUploadsLocalFlake(t *testing.T) {
	e := newRunEnv(t)
	e.publish(true)
	flake := filepath.Join(e.dir, "pi-flake")
	os.MkdirAll(flake, 0o755)
	os.WriteFile(filepath.Join(flake, "flake.nix"), []byte("{ outputs = _: { }; }\n"), 0o644)
	os.WriteFile(filepath.Join(flake, "flake.lock"), []byte("{}\n"), 0o644)
	c := e.config(func(c *Config) { c.KeepRemoteFiles = true; c.Flake = flake + "#rpi4" })
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

func TestRunCompressesUncompressedImageInTransit(t *testing.T) {
	e := newRunEnv(t)
	e.publish(false)
	c := e.config(nil)
	res, err := e.run(context.Background(), c)
	if err != nil {
		t.Fatalf("Run: %v\n%s", err, e.ui.all())
	}
	var compressed int
	for _, cmd := range e.comm.Commands() {
		if strings.HasPrefix(cmd, "dd ") && strings.HasSuffix(cmd, "| zstd -1 -q -c") {
			compressed++
		}
	}
	if compressed == 0 {
		t.Fatalf("no range was compressed in transit: %q", e.comm.Commands())
	}
	final := filepath.Join(e.out, testImageName)
	if res.ImagePath != final || sha256Of(t, final) != sha256Of(t, e.image) || res.Compressed {
		t.Fatalf("result %+v", res)
	}
	st, _ := os.Stat(final)
	if a := allocated(t, final); a > st.Size()/3 {
		t.Fatalf("the downloaded image is not sparse: %d of %d bytes allocated", a, st.Size())
	}
	if got := e.ui.tracked.Load(); got != 64<<20 {
		t.Fatalf("progress reported %d bytes, want %d", got, 64<<20)
	}
	e.outputHolds(testImageName, testImageName+".json", testImageName+".sha256")
}

func TestRunKeepsCompressedImageUnderImageName(t *testing.T) {
	e := newRunEnv(t)
	remote := e.publish(true)
	f := false
	c := e.config(func(c *Config) { c.Decompress = &f; c.ImageName = "pi.img.zst"; c.DownloadChannels = 1 })
	res, err := e.run(context.Background(), c)
	if err != nil {
		t.Fatalf("Run: %v\n%s", err, e.ui.all())
	}
	if !res.Compressed || res.SHA256 != sha256Of(t, remote) || res.ImagePath != filepath.Join(e.out, "pi.img.zst") {
		t.Fatalf("result %+v", res)
	}
	e.outputHolds("pi.img.zst", "pi.img.zst.json", "pi.img.zst.sha256")
	b, _ := os.ReadFile(res.ImagePath + ".sha256")
	if string(b) != res.SHA256+"  pi.img.zst\n" {
		t.Fatalf(".sha256 = %q", b)
	}
}

// corruptRange flips one byte of the range starting at offset.
func corruptRange(offset int64) func(string, io.Writer) io.Writer {
	marker := " skip=" + strconv.FormatInt(offset, 10) + " "
	return func(cmd string, w io.Writer) io.Writer {
		if !strings.HasPrefix(cmd, "dd ") || !strings.Contains(cmd, marker) {
			return w
		}
		return &flipper{w: w, at: 100}
	}
}

type flipper struct {
	w    io.Writer
	at   int
	seen int
}

func (f *flipper) Write(p []byte) (int, error) {
	if f.at >= f.seen && f.at < f.seen+len(p) {
		q := append([]byte(nil), p...)
		q[f.at-f.seen] ^= 0xff
		p = q
	}
	f.seen += len(p)
	return f.w.Write(p)
}

func TestRunCatchesCorruptedRange(t *testing.T) {
	e := newRunEnv(t)
	e.publish(true)
	e.comm.Stdout = corruptRange(1 << 20)
	c := e.config(nil)
	_, err := e.run(context.Background(), c)
	var pe *PhaseError
	if !errors.As(err, &pe) || pe.Phase != PhaseVerify || !strings.Contains(err.Error(), "SHA-256") {
		t.Fatalf("want a verify error about the SHA-256, got %v", err)
	}
	e.outputHolds()
	if _, err := os.Stat(e.remote); !os.IsNotExist(err) {
		t.Errorf("the remote directory was left after a failure: %v", err)
	}
}

func TestRunCatchesImageChangedAfterChecksum(t *testing.T) {
	// The host's sha256sum describes another file than the one sent: as if
	// the image changed between its checksum and its download.
	e := newRunEnv(t)
	e.publish(true)
	other := filepath.Join(e.dir, "other")
	os.WriteFile(other, []byte("something else"), 0o644)
	os.WriteFile(filepath.Join(e.dir, "bin", "sha256sum"), []byte("#!/bin/bash\nsum=$(/usr/bin/sha256sum "+other+")\necho \"${sum%% *}  $1\"\n"), 0o755)
	c := e.config(nil)
	_, err := e.run(context.Background(), c)
	var pe *PhaseError
	if !errors.As(err, &pe) || pe.Phase != PhaseVerify || !strings.Contains(err.Error(), "the image changed") {
		t.Fatalf("want a verify error, got %v", err)
	}
	e.outputHolds()
}

func TestRunReportsBuildFailure(t *testing.T) {
	e := newRunEnv(t, "FAKE_FAIL=1")
	c := e.config(nil)
	_, err := e.run(context.Background(), c)
	var pe *PhaseError
	if !errors.As(err, &pe) || pe.Phase != PhaseBuild {
		t.Fatalf("want a build error, got %v", err)
	}
	msg := err.Error()
	for _, want := range []string{"nixos-sd build failed", "exit status 1", "error: builder for '/nix/store/0000-nixos-sd-image.drv' failed with exit code 1"} {
		if !strings.Contains(msg, want) {
			t.Errorf("the error lacks %q:\n%s", want, msg)
		}
	}
	e.outputHolds()
	if _, err := os.Stat(e.remote); !os.IsNotExist(err) {
		t.Errorf("the remote directory was left after a failure: %v", err)
	}
}

func TestRunRejectsNonImage(t *testing.T) {
	e := newRunEnv(t)
	junk := filepath.Join(e.dir, "junk.img")
	b := make([]byte, 3<<20)
	for i := range b {
		b[i] = byte(i * 7)
	}
	os.WriteFile(junk, b, 0o644)
	zstdFile(t, junk, filepath.Join(e.store, "sd-image", testImageName+".zst"))
	_, err := e.run(context.Background(), e.config(nil))
	var pe *PhaseError
	if !errors.As(err, &pe) || pe.Phase != PhaseVerify || !strings.Contains(err.Error(), "not an SD card image") {
		t.Fatalf("want a verify error, got %v", err)
	}
	e.outputHolds()
}

func TestRunRequiresExactlyOneImage(t *testing.T) {
	e := newRunEnv(t)
	e.publish(true)
	e.publish(false)
	_, err := e.run(context.Background(), e.config(nil))
	var pe *PhaseError
	if !errors.As(err, &pe) || pe.Phase != PhaseLocate || !strings.Contains(err.Error(), "expected exactly one") {
		t.Fatalf("want a locate error, got %v", err)
	}
	e.outputHolds()
}

func TestRunStopsTheBuildOnCancel(t *testing.T) {
	e := newRunEnv(t, "FAKE_SLEEP=60")
	c := e.config(nil)
	ctx, cancel := context.WithCancel(context.Background())
	go func() {
		for i := 0; i < 200; i++ {
			if _, err := os.Stat(filepath.Join(e.remote, "build.pid")); err == nil {
				time.Sleep(300 * time.Millisecond)
				break
			}
			time.Sleep(50 * time.Millisecond)
		}
		cancel()
	}()
	start := time.Now()
	_, err := e.run(ctx, c)
	if !errors.Is(err, context.Canceled) {
		t.Fatalf("want the cancellation, got %v", err)
	}
	if el := time.Since(start); el > 20*time.Second {
		t.Fatalf("Run took %s to return after cancellation", el)
	}
	deadline := time.Now().Add(10 * time.Second)
	for {
		if _, err := os.Stat(e.term); err == nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the remote build was not stopped:\n%s", e.ui.all())
		}
		time.Sleep(50 * time.Millisecond)
	}
	e.outputHolds()
}

func TestRunForceEmptiesOutputDirectory(t *testing.T) {
	e := newRunEnv(t)
	e.publish(true)
	os.MkdirAll(e.out, 0o755)
	os.WriteFile(filepath.Join(e.out, "stale.img"), []byte("old"), 0o644)
	c := e.configForce(true, nil)
	if _, err := e.run(context.Background(), c); err != nil {
		t.Fatalf("Run: %v", err)
	}
	e.outputHolds(testImageName, testImageName+".json", testImageName+".sha256")
}
