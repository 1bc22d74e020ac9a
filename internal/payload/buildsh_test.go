package payload

import (
	"context"
	"errors"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/nixos-sd/packer-plugin-nixos-sd/internal/remotecmd/remotecmdtest"
)

// scriptEnv is a directory of tools for build.sh with no real nix: the
// commands it needs are linked in, fakes are written next to them.
type scriptEnv struct {
	t      *testing.T
	bin    string
	script string
	log    string
}

func newScriptEnv(t *testing.T) *scriptEnv {
	t.Helper()
	dir := t.TempDir()
	e := &scriptEnv{t: t, bin: filepath.Join(dir, "bin"), script: filepath.Join(dir, "build.sh"), log: filepath.Join(dir, "calls.log")}
	os.MkdirAll(e.bin, 0o755)
	b, err := hostFiles.ReadFile("hostfiles/build.sh")
	if err != nil {
		t.Fatal(err)
	}
	os.WriteFile(e.script, b, 0o755)
	e.link("bash", "id", "rm", "readlink", "timeout", "env", "cat", "sleep", "printf", "grep", "mkdir", "ln", "touch", "chmod", "true", "kill", "mktemp", "mkfifo", "tee", "sed", "head", "sh")
	// The host is AArch64, as the instances are.
	e.fake("uname", `echo aarch64`)
	// sudo runs its command directly: the tests need no root.
	e.fake("sudo", `while [ "${1#-}" != "$1" ]; do shift; done; echo "sudo $*" >>`+e.log+`; exec "$@"`)
	return e
}

// link puts this machine's tools on build.sh's PATH.
func (e *scriptEnv) link(tools ...string) {
	e.t.Helper()
	for _, tool := range tools {
		p, err := exec.LookPath(tool)
		if err != nil {
			e.t.Fatalf("%s not found: %v", tool, err)
		}
		os.Symlink(p, filepath.Join(e.bin, tool))
	}
}

func (e *scriptEnv) fake(name, body string) {
	e.t.Helper()
	// A fake nix that does not answer `nix config show` itself knows no
	// settings but its system.
	if name == "nix" && !strings.Contains(body, "config show") {
		body = `case "$*" in *"config show"*) echo "system = aarch64-linux"; exit 0 ;; esac` + "\n" + body
	}
	if err := os.WriteFile(filepath.Join(e.bin, name), []byte("#!/bin/bash\n"+body+"\n"), 0o755); err != nil {
		e.t.Fatal(err)
	}
}

func (e *scriptEnv) calls() string {
	b, _ := os.ReadFile(e.log)
	return string(b)
}

func (e *scriptEnv) run(ctx context.Context, args ...string) (string, int) {
	e.t.Helper()
	cmd := exec.CommandContext(ctx, "/bin/bash", append([]string{e.script}, args...)...)
	cmd.Env = []string{"PATH=" + e.bin, "HOME=" + e.t.TempDir()}
	out, err := cmd.CombinedOutput()
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		return string(out), ee.ExitCode()
	}
	if err != nil {
		e.t.Fatal(err)
	}
	return string(out), 0
}

func TestBuildScriptUsesInstalledNix(t *testing.T) {
	e := newScriptEnv(t)
	e.fake("nix", `echo "nix (Nix) 2.99.1"`)
	e.fake("apt-get", `echo "apt-get $*" >>`+e.log+`; exit 1`)
	out, code := e.run(context.Background(), "ensure-nix")
	if code != 0 || !strings.Contains(out, "Nix is already installed: nix (Nix) 2.99.1") {
		t.Fatalf("exit %d:\n%s", code, out)
	}
	if strings.Contains(e.calls(), "apt-get") {
		t.Fatalf("apt-get ran although nix was installed: %s", e.calls())
	}
}

func TestBuildScriptWithoutAptFails(t *testing.T) {
	e := newScriptEnv(t)
	out, code := e.run(context.Background(), "ensure-nix")
	if code != 3 || !strings.Contains(out, "Nix could not be installed") || !strings.Contains(out, "Debian 13 AMI") || !strings.Contains(out, "preinstalled") {
		t.Fatalf("exit %d:\n%s", code, out)
	}
}

func TestBuildScriptWithoutNixBinPackageFails(t *testing.T) {
	e := newScriptEnv(t)
	e.fake("apt-get", `echo "apt-get $*" >>`+e.log)
	e.fake("apt-cache", `echo "E: No packages found" >&2; exit 100`)
	out, code := e.run(context.Background(), "ensure-nix")
	if code != 3 || !strings.Contains(out, "no nix-bin package") || !strings.Contains(out, "Debian 13 AMI") {
		t.Fatalf("exit %d:\n%s", code, out)
	}
	if !strings.Contains(e.calls(), "apt-get -q -o DPkg::Lock::Timeout=600 update") {
		t.Fatalf("the package lists were not refreshed first: %q", e.calls())
	}
	if strings.Contains(e.calls(), "install") {
		t.Fatalf("apt-get install ran without a nix-bin package: %q", e.calls())
	}
}

func TestBuildScriptInstallsNixBin(t *testing.T) {
	e := newScriptEnv(t)
	nix := filepath.Join(e.bin, "nix")
	e.fake("apt-get", `echo "apt-get $*" >>`+e.log+`
if [[ " $* " == *" install "* ]]; then printf '#!/bin/bash\ncase "$*" in *"config show"*) echo "system = aarch64-linux"; exit 0 ;; esac\necho "nix (Nix) 2.26.3"\n' >`+nix+`; chmod +x `+nix+`; fi`)
	e.fake("apt-cache", `exit 0`)
	out, code := e.run(context.Background(), "ensure-nix")
	if code != 0 || !strings.Contains(out, "installed nix (Nix) 2.26.3") {
		t.Fatalf("exit %d:\n%s", code, out)
	}
	// It waits for the dpkg lock a first boot's unattended-upgrades holds,
	// and installs exactly nix-bin and the build users of nix-setup-systemd,
	// whatever apt's Install-Recommends says.
	if !strings.Contains(e.calls(), "apt-get -q -o DPkg::Lock::Timeout=600 install -y --no-install-recommends nix-bin nix-setup-systemd") {
		t.Fatalf("calls: %q", e.calls())
	}
	if os.Getuid() != 0 && !strings.Contains(e.calls(), "sudo env DEBIAN_FRONTEND=noninteractive apt-get install") {
		t.Fatalf("not root, but apt-get did not run through sudo: %q", e.calls())
	}
}

func TestBuildScriptRunsNixWithTheGivenArguments(t *testing.T) {
	e := newScriptEnv(t)
	rd := t.TempDir()
	argsFile := filepath.Join(rd, "args")
	e.fake("nix", `case "$*" in *"config show"*) echo "max-jobs = 1"; exit 0 ;; esac
for a in "$@"; do printf '%s\n' "$a"; done >`+argsFile+`
echo "building '/nix/store/abc-sd-image.drv'..." >&2
while [ "$1" != --out-link ]; do shift; done
mkdir -p "`+rd+`/store/sd-image" && ln -sfn "`+rd+`/store" "$2"`)
	c := prepared(t, func(c *Config) { c.RemoteDirectory = rd; c.NixOptions = map[string]string{"max-jobs": "auto"} })
	words := remotecmdtest.ShellWords(t, buildCommand(c))
	out, code := e.run(context.Background(), append([]string{"build", rd, "60"}, words...)...)
	if code != 0 {
		t.Fatalf("exit %d:\n%s", code, out)
	}
	b, _ := os.ReadFile(argsFile)
	got := strings.Split(strings.TrimSuffix(string(b), "\n"), "\n")
	if !reflect.DeepEqual(got, nixArgs(c)) {
		t.Fatalf("nix got\n %q\nwant\n %q", got, nixArgs(c))
	}
	if !strings.Contains(out, "building '/nix/store/abc-sd-image.drv'") || !strings.Contains(out, "build finished") {
		t.Fatalf("output:\n%s", out)
	}
	if _, err := os.Stat(filepath.Join(rd, "build.pid")); !os.IsNotExist(err) {
		t.Fatalf("build.pid left behind: %v", err)
	}
}

func TestBuildScriptReportsNixFailure(t *testing.T) {
	e := newScriptEnv(t)
	e.fake("nix", `echo "error: builder for '/nix/store/x.drv' failed with exit code 1" >&2; exit 1`)
	out, code := e.run(context.Background(), "build", t.TempDir(), "60", "nix", "build", "x")
	if code != 1 || !strings.Contains(out, "error: builder for") || !strings.Contains(out, "nix build failed with exit status 1") {
		t.Fatalf("exit %d:\n%s", code, out)
	}
}

// nixpkgs' own check (default.nix against lib/minver.nix) aborts evaluation
// on a Nix that is too old, as Debian 12's 2.8 is for current nixpkgs.
func TestBuildScriptExplainsTooOldNix(t *testing.T) {
	e := newScriptEnv(t)
	e.fake("nix", `if [ "$1" = --version ]; then echo "nix (Nix) 2.8.0"; exit 0; fi
printf '%s\n' "error: evaluation aborted with the following error message: '" "This version of Nixpkgs requires Nix >= 2.18.0, please upgrade:" "'" >&2
exit 1`)
	out, code := e.run(context.Background(), "build", t.TempDir(), "60", "nix", "build", "x")
	for _, want := range []string{"this host's Nix (nix (Nix) 2.8.0) is older than the requested nixpkgs needs (Nix >= 2.18.0)",
		"Debian 13 AMI", "older nixpkgs"} {
		if code != 1 || !strings.Contains(out, want) {
			t.Errorf("exit %d, want 1 and %q:\n%s", code, want, out)
		}
	}
}

// Nix only warns about an unknown --option and builds without it: build.sh
// refuses a name the host's Nix does not list.
func TestBuildScriptRefusesUnknownSettings(t *testing.T) {
	e := newScriptEnv(t)
	e.fake("nix", `case "$*" in
*"config show"*) printf '%s\n' "max-jobs = 1" "substituters = https://cache.nixos.org/" ;;
--version) echo "nix (Nix) 2.26.3" ;;
*) echo "nix $*" >>`+e.log+` ;;
esac`)
	out, code := e.run(context.Background(), "build", t.TempDir(), "60", "nix", "build", "--option", "max-job", "8", "x")
	if code != 2 || !strings.Contains(out, `nix_options: "max-job" is not a setting of this host's Nix (nix (Nix) 2.26.3)`) {
		t.Errorf("exit %d, want 2 and the unknown setting named:\n%s", code, out)
	}
	if log, _ := os.ReadFile(e.log); strings.Contains(string(log), "nix build") {
		t.Errorf("the build ran with an unknown setting:\n%s", log)
	}
	out, code = e.run(context.Background(), "build", t.TempDir(), "60", "nix", "build", "--option", "max-jobs", "8", "--option", "extra-substituters", "https://c.example.org", "x")
	if code != 0 {
		t.Errorf("known settings refused: exit %d:\n%s", code, out)
	}
}

func TestBuildScriptEnforcesTimeout(t *testing.T) {
	e := newScriptEnv(t)
	e.fake("nix", `exec sleep 30`)
	start := time.Now()
	out, code := e.run(context.Background(), "build", t.TempDir(), "1", "nix", "build", "x")
	if code != 124 || !strings.Contains(out, "longer than build_timeout (1s)") {
		t.Fatalf("exit %d:\n%s", code, out)
	}
	if el := time.Since(start); el > 20*time.Second {
		t.Fatalf("the timeout took %s", el)
	}
}

// stoppableNix installs a fake nix that records a SIGTERM in marker; it
// creates ready once its trap is set, so a test signals it only then (a TERM
// before that would end it without a trace). Both files are made by the
// shell itself, not by touch: timeout passes TERM on to its whole process
// group, which would also kill a touch started by the trap. Like Nix, it
// does not die of SIGPIPE: once the session's output is gone, bash's report
// of its sleep's end would otherwise kill it before its trap runs. It sleeps
// in the foreground: bash's wait builtin may drop a trapped signal that
// comes with the end of the job it waits for.
func (e *scriptEnv) stoppableNix(dir string) (marker, ready string) {
	marker, ready = filepath.Join(dir, "nix-got-term"), filepath.Join(dir, "nix-ready")
	e.fake("nix", `trap '' PIPE; trap ': >`+marker+`; exit 143' TERM; : >`+ready+`; for ((i = 0; i < 600; i++)); do sleep 0.1; done`)
	return marker, ready
}

// waitForFile fails t with msg unless path appears within 10 seconds.
func waitForFile(t *testing.T, path, msg string) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		if _, err := os.Stat(path); err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatal(msg)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func TestBuildScriptStopsOnRequest(t *testing.T) {
	e := newScriptEnv(t)
	rd := t.TempDir()
	marker, ready := e.stoppableNix(rd)
	c := prepared(t, func(c *Config) { c.RemoteDirectory = rd })
	type result struct {
		out  string
		code int
	}
	done := make(chan result, 1)
	go func() {
		out, code := e.run(context.Background(), "build", rd, "120", "nix", "build", "x")
		done <- result{out, code}
	}()
	waitForFile(t, filepath.Join(rd, "build.pid"), "build.sh wrote no build.pid")
	waitForFile(t, ready, "the build never started nix")
	if out, err := exec.Command("bash", "-c", stopCommand(c)).CombinedOutput(); err != nil {
		t.Fatalf("stop command: %v %s", err, out)
	}
	select {
	case r := <-done:
		if r.code != 143 || !strings.Contains(r.out, "stopping the build") {
			t.Fatalf("exit %d:\n%s", r.code, r.out)
		}
	case <-time.After(20 * time.Second):
		t.Fatal("build.sh did not stop")
	}
	if _, err := os.Stat(marker); err != nil {
		t.Fatal("nix did not receive SIGTERM")
	}
}

// TestBuildScriptStopsWhenItsSessionEnds: when the process that started
// build.sh goes away (the SSH session ends: Packer interrupted a
// provisioner), the build is stopped.
func TestBuildScriptStopsWhenItsSessionEnds(t *testing.T) {
	e := newScriptEnv(t)
	rd := t.TempDir()
	marker, ready := e.stoppableNix(rd)
	// The "session": a shell that starts build.sh and leaves once nix runs.
	cmd := exec.Command("/bin/bash", "-c", "/bin/bash "+e.script+" build "+rd+" 120 nix build x >/dev/null 2>&1 & "+
		"for ((i = 0; i < 200; i++)); do [ -e "+ready+" ] && break; sleep 0.05; done")
	cmd.Env = []string{"PATH=" + e.bin}
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("%v %s", err, out)
	}
	deadline := time.Now().Add(15 * time.Second)
	for {
		if _, err := os.Stat(marker); err == nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the build went on after its session ended")
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// TestBuildScriptEndsPromptly: the session watcher does not hold the
// command's output open after the build.
func TestBuildScriptEndsPromptly(t *testing.T) {
	e := newScriptEnv(t)
	e.fake("nix", `exit 0`)
	start := time.Now()
	if out, code := e.run(context.Background(), "build", t.TempDir(), "60", "nix", "build", "x"); code != 0 {
		t.Fatalf("exit %d:\n%s", code, out)
	}
	if el := time.Since(start); el > 1500*time.Millisecond {
		t.Fatalf("build.sh took %s to end after a build that took no time", el)
	}
}

// TestBuildScriptStopsOnHangupWithClosedOutput: the session's end may hang
// up build.sh with its output already closed (a write then raises SIGPIPE):
// the build is stopped all the same.
func TestBuildScriptStopsOnHangupWithClosedOutput(t *testing.T) {
	e := newScriptEnv(t)
	rd := t.TempDir()
	marker, ready := e.stoppableNix(rd)
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command("/bin/bash", e.script, "build", rd, "120", "nix", "build", "x")
	cmd.Env = []string{"PATH=" + e.bin}
	cmd.Stdout, cmd.Stderr = w, w
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	w.Close()
	go io.Copy(io.Discard, r)
	waitForFile(t, filepath.Join(rd, "build.pid"), "build.sh wrote no build.pid")
	waitForFile(t, ready, "the build never started nix")
	r.Close() // the session's output is gone
	if err := cmd.Process.Signal(syscall.SIGHUP); err != nil {
		t.Fatal(err)
	}
	cmd.Wait()
	waitForFile(t, marker, "the build went on after build.sh was hung up")
}

// Derivations build in a directory of their own under /var/tmp, on the
// volume (Debian 13's /tmp is a tmpfs of half the RAM): Nix reads TMPDIR,
// and build-dir where it has the setting. The directory goes afterwards.
func TestBuildScriptBuildsOnTheVolume(t *testing.T) {
	e := newScriptEnv(t)
	e.fake("nix", `case "$*" in *"config show"*) printf '%s\n' "build-dir = " "max-jobs = 1"; exit 0 ;; esac
echo "TMPDIR=$TMPDIR args=$*" >>`+e.log+`
test -d "$TMPDIR" && test -w "$TMPDIR"`)
	out, code := e.run(context.Background(), "build", t.TempDir(), "60", "nix", "build", "x")
	if code != 0 {
		t.Fatalf("exit %d:\n%s", code, out)
	}
	var dir string
	for _, l := range strings.Split(e.calls(), "\n") {
		if rest, ok := strings.CutPrefix(l, "TMPDIR="); ok {
			dir, _, _ = strings.Cut(rest, " ")
			if !strings.HasSuffix(l, "args=build x --option build-dir "+dir) {
				t.Errorf("nix ran as %q, want build-dir set to TMPDIR", l)
			}
		}
	}
	if !strings.HasPrefix(dir, "/var/tmp/nixos-sd-build.") {
		t.Fatalf("the build's TMPDIR is %q, want a directory under /var/tmp; calls:\n%s\noutput:\n%s", dir, e.calls(), out)
	}
	if _, err := os.Stat(dir); !os.IsNotExist(err) {
		t.Errorf("the build directory %s is left behind: %v", dir, err)
	}
	// A Nix without build-dir (Debian 12's 2.8) reads TMPDIR alone.
	e.fake("nix", `case "$*" in *"config show"*) echo "max-jobs = 1"; exit 0 ;; esac
echo "TMPDIR=$TMPDIR args=$*" >>`+e.log)
	if out, code := e.run(context.Background(), "build", t.TempDir(), "60", "nix", "build", "y"); code != 0 || !strings.Contains(e.calls(), "args=build y\n") {
		t.Errorf("exit %d, calls:\n%s\noutput:\n%s", code, e.calls(), out)
	}
}

// Flake-only settings exist only with the flakes feature, which the build
// enables: nix_options are checked with it.
func TestBuildScriptKnowsFlakeSettings(t *testing.T) {
	e := newScriptEnv(t)
	e.fake("nix", `case "$*" in
*"config show"*) echo "max-jobs = 1"; case "$*" in *flakes*) echo "accept-flake-config = false" ;; esac; exit 0 ;;
--version) echo "nix (Nix) 2.26.3" ;;
esac`)
	out, code := e.run(context.Background(), "build", t.TempDir(), "60", "nix", "build", "--option", "accept-flake-config", "true", "x")
	if code != 0 {
		t.Errorf("a flake setting refused: exit %d:\n%s", code, out)
	}
}

// The image is aarch64-linux: on another host build.sh stops before it
// installs anything, saying what it found and what to do; a Nix that builds
// aarch64-linux through extra-platforms is used.
func TestBuildScriptChecksTheHostArchitecture(t *testing.T) {
	e := newScriptEnv(t)
	e.fake("uname", `echo x86_64`)
	e.fake("apt-get", `echo "apt-get $*" >>`+e.log)
	e.fake("apt-cache", `exit 0`)
	out, code := e.run(context.Background(), "ensure-nix")
	for _, want := range []string{"this host is x86_64 (uname -m), not AArch64", "arm64 instance type", "extra-platforms", "Nothing was installed"} {
		if code != 5 || !strings.Contains(out, want) {
			t.Errorf("exit %d, want 5 and %q:\n%s", code, want, out)
		}
	}
	if strings.Contains(e.calls(), "apt-get") {
		t.Errorf("apt-get ran on an x86_64 host: %s", e.calls())
	}
	// Nix installed, building for x86_64-linux only: refused; with
	// aarch64-linux among its extra-platforms: used.
	e.fake("nix", `case "$*" in *"config show"*) echo "system = x86_64-linux"; exit 0 ;; esac; echo "nix (Nix) 2.26.3"`)
	if out, code := e.run(context.Background(), "ensure-nix"); code != 5 {
		t.Errorf("x86_64 Nix without extra-platforms: exit %d, want 5:\n%s", code, out)
	}
	e.fake("nix", `case "$*" in *"config show"*) printf '%s\n' "extra-platforms = aarch64-linux i686-linux" "system = x86_64-linux"; exit 0 ;; esac; echo "nix (Nix) 2.26.3"`)
	if out, code := e.run(context.Background(), "ensure-nix"); code != 0 || !strings.Contains(out, "builds aarch64-linux through extra-platforms") {
		t.Errorf("x86_64 Nix with aarch64-linux in extra-platforms: exit %d, want 0:\n%s", code, out)
	}
	// An AArch64 host whose Nix builds for another system is refused too.
	e.fake("uname", `echo aarch64`)
	e.fake("nix", `case "$*" in *"config show"*) echo "system = armv7l-linux"; exit 0 ;; esac; echo "nix (Nix) 2.26.3"`)
	if out, code := e.run(context.Background(), "ensure-nix"); code != 5 || !strings.Contains(out, "builds for armv7l-linux, not aarch64-linux") {
		t.Errorf("aarch64 host, armv7l Nix: exit %d, want 5:\n%s", code, out)
	}
}
