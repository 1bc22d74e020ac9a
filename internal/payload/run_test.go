package payload

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
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

// fakeRevision is the nixpkgs revision the fake nix reports.
const fakeRevision = "5e0ca22929f3342b19569b21b2f3462f053e497b"

// fakeFlakeRevision is the revision a remote flake's branch points at.
const fakeFlakeRevision = "0f1e2d3c4b5a69788796a5b4c3d2e1f00f1e2d3c"

var fakeNix = `#!/bin/bash
echo "$*" >>"$FAKE_ARGS.calls"
if [ "$1" = --version ]; then echo "nix (Nix) ${FAKE_NIX_VERSION:-2.28.3}"; exit 0; fi
# Its settings: an AArch64 Nix.
case "$*" in *"config show"*) printf '%s\n' "max-jobs = 1" "system = aarch64-linux"; exit 0 ;; esac
# A flake configuration's platform (platform.go): aarch64-linux, or the
# error FAKE_EVAL_ERROR holds.
if [ "$1" = eval ] && [[ " $* " == *" --apply "* ]]; then
	if [ -n "${FAKE_EVAL_ERROR:-}" ]; then printf '%s\n' "$FAKE_EVAL_ERROR" >&2; exit 1; fi
	echo '{"build":"aarch64-linux","host":"aarch64-linux"}'
	exit 0
fi
# What the build used: nix eval of lib.version and .git-revision, or the
# flake's lock (nixpkgs.go).
if [ "$1" = eval ]; then
	printf '%s\n' "$@" >"$FAKE_ARGS.eval"
	echo '{"revision":"` + fakeRevision + `","version":"26.05.20260601.` + fakeRevision[:7] + `"}'
	exit 0
fi
# nix flake metadata --json REF as Nix 2.26 prints it: "url" is the locked
# reference; a path's lock file is its flake.lock.
if [ "$1 $2" = "flake metadata" ]; then
	printf '%s\n' "$@" >"$FAKE_ARGS.eval"
	ref=${!#}
	locks='{"nodes":{"root":{"inputs":{"nixpkgs":"nixpkgs_2","utils":"utils"}},"nixpkgs_2":{"locked":{"lastModified":1780000000,"narHash":"sha256-47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU=","owner":"NixOS","repo":"nixpkgs","rev":"` + fakeRevision + `","type":"github"}},"utils":{"inputs":{"nixpkgs":["nixpkgs"]},"locked":{"rev":"ffff","type":"git","url":"https://example.org/utils.git","ref":"main"}}},"root":"root","version":7}'
	case "$ref" in
	path:*)
		dir=${ref#path:}
		if [ -f "$dir/flake.lock" ]; then locks=$(tr -d '\n' <"$dir/flake.lock"); fi
		printf '{"lastModified":1780000000,"locks":%s,"path":"/nix/store/0000-source","url":"path:%s?lastModified=1780000000&narHash=sha256-AAAA"}\n' "$locks" "$dir"
		;;
	*)
		printf '{"lastModified":1780000000,"locks":%s,"path":"/nix/store/0000-source","revision":"` + fakeFlakeRevision + `","url":"github:me/pi/` + fakeFlakeRevision + `?narHash=sha256-BBBB"}\n' "$locks"
		;;
	esac
	exit 0
fi
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
	# The lock file the build reads, for the tests to compare.
	if [ "$1" = --reference-lock-file ]; then cp "$2" "$FAKE_ARGS.reflock"; fi
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
	os.WriteFile(filepath.Join(bin, "uname"), []byte("#!/bin/sh\necho aarch64\n"), 0o755)
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

// outputHolds fails unless the output directory holds exactly want and the
// build log, which every run that started writes (a failed run leaves only
// the log).
func (e *runEnv) outputHolds(want ...string) {
	e.t.Helper()
	entries, err := os.ReadDir(e.out)
	if err != nil {
		e.t.Fatal(err)
	}
	want = append(want, BuildLogName)
	slices.Sort(want)
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
		c.SSHAuthorizedKeys = []string{"ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIJw/GPlkoQlfZlY6+D0mbGc0WTg41HU4EtEyCHOx3VX4 me@laptop"}
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
	if m["nixpkgs_revision"] != fakeRevision || m["nixpkgs_version"] != "26.05.20260601.5e0ca22" || m["nixpkgs_source"] != "channel .git-revision" {
		t.Errorf("manifest nixpkgs = %v %v %v, want the revision nix eval reported", m["nixpkgs_revision"], m["nixpkgs_version"], m["nixpkgs_source"])
	}
	if opts, ok := m["nix_options"].(map[string]any); !ok || opts["max-jobs"] != "8" && len(opts) != 0 {
		t.Errorf("manifest nix_options = %#v, want an object", m["nix_options"])
	}
	if m["schema_version"] != float64(ManifestSchemaVersion) || m["plugin_version"] == "" || len(fmt.Sprint(m["config_sha256"])) != 64 || m["compressed_size"] == nil {
		t.Errorf("manifest lacks schema_version, plugin_version, config_sha256 or compressed_size:\n%s", b)
	}
	if tm, ok := m["timings_seconds"].(map[string]any); !ok || tm["build"] == nil || tm["download"] == nil || tm["total"] == nil {
		t.Errorf("manifest timings: %v", m["timings_seconds"])
	}
	if want := []string{final, final + ".sha256", final + ".json", filepath.Join(e.out, BuildLogName)}; strings.Join(res.Files, ",") != strings.Join(want, ",") {
		t.Errorf("Files = %q", res.Files)
	}
	// The remote directory is gone, the output summarised the build (the
	// builders' lines only in the build log, which the manifest names), and
	// the progress bar saw the whole file.
	if _, err := os.Stat(e.remote); !os.IsNotExist(err) {
		t.Errorf("the remote directory is still there: %v", err)
	}
	all := e.ui.all()
	for _, want := range []string{"nix: building nixos-sd-image\n", "SHA-256 verified", "Everything the build host prints goes to " + filepath.Join(e.out, BuildLogName)} {
		if !strings.Contains(all, want) {
			t.Errorf("the output lacks %q:\n%s", want, all)
		}
	}
	if strings.Contains(all, "Running phase") {
		t.Errorf("the output shows the builder's lines:\n%s", all)
	}
	log, _ := os.ReadFile(filepath.Join(e.out, BuildLogName))
	for _, want := range []string{"building '/nix/store/0000-nixos-sd-image.drv'...", "nixos-sd-image> Running phase: buildPhase", "build.sh ensure-nix", "nixos-sd: Nix is already installed"} {
		if !strings.Contains(string(log), want) {
			t.Errorf("the build log lacks %q:\n%s", want, log)
		}
	}
	if m["build_log"] != BuildLogName {
		t.Errorf("manifest build_log = %v, want %s", m["build_log"], BuildLogName)
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
