package payload

import (
	"context"
	"errors"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// Without sudo, a user who is not root builds through the nix-daemon: the
// daemon builds in its own TMPDIR (a tmpfs /tmp on Debian 13) and ignores
// restricted settings of a user not in trusted-users. build.sh says both,
// and leaves the daemon's build directory alone.
func TestBuildScriptWarnsThroughTheDaemon(t *testing.T) {
	e := newScriptEnv(t)
	// A user "pi" (uid 1000) whom sudo refuses.
	os.Remove(filepath.Join(e.bin, "id"))
	e.fake("id", `case "$*" in -u) echo 1000 ;; -un) echo pi ;; -Gn) echo "pi $GROUPS_OF_PI" ;; *) exit 1 ;; esac`)
	e.fake("sudo", `echo "sudo: a password is required" >&2; exit 1`)
	e.fake("nix", `case "$*" in *"config show"*) printf '%s\n' "max-jobs = 1" "substituters = https://cache.nixos.org/" "trusted-users = root @wheel"; exit 0 ;; esac
echo "TMPDIR=${TMPDIR:-} args=$*" >>`+e.log)
	sock := filepath.Join(t.TempDir(), "socket")
	ln, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	const tmpdirWarning = "warning: building as pi through the nix-daemon ('sudo -n' does not work): the daemon builds in its own TMPDIR"
	const ignoredWarning = "warning: nix_options extra-substituters: the nix-daemon ignores restricted settings"
	for _, tc := range []struct {
		groups  string
		ignored bool
	}{{"users", true}, {"wheel", false}} {
		os.Remove(e.log)
		out, code := runScriptEnv(t, e, []string{"NIX_DAEMON_SOCKET_PATH=" + sock, "GROUPS_OF_PI=" + tc.groups},
			"build", t.TempDir(), "60", "nix", "build", "--option", "extra-substituters", "http://cache.example.org", "x")
		if code != 0 {
			t.Fatalf("groups %s: exit %d:\n%s", tc.groups, code, out)
		}
		if !strings.Contains(out, tmpdirWarning) || strings.Contains(out, ignoredWarning) != tc.ignored {
			t.Errorf("groups %s: want the TMPDIR warning, the ignored-settings warning %v:\n%s", tc.groups, tc.ignored, out)
		}
		if !strings.Contains(e.calls(), "TMPDIR= args=build --option extra-substituters http://cache.example.org x") {
			t.Errorf("groups %s: nix did not run as the user, with the daemon's own build directory:\n%s", tc.groups, e.calls())
		}
	}
}

// runScriptEnv runs build.sh as e.run does, with env added to its
// environment.
func runScriptEnv(t *testing.T, e *scriptEnv, env []string, args ...string) (string, int) {
	t.Helper()
	cmd := exec.CommandContext(context.Background(), "/bin/bash", append([]string{e.script}, args...)...)
	cmd.Env = append([]string{"PATH=" + e.bin, "HOME=" + t.TempDir()}, env...)
	out, err := cmd.CombinedOutput()
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		return string(out), ee.ExitCode()
	}
	if err != nil {
		t.Fatal(err)
	}
	return string(out), 0
}
